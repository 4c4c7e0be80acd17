"""Paper-style tables: one per study (dataset x protocol) and metric; rows methods, columns pairs.

A cell is `mean ± std` over seeds (std omitted for a single seed; `(n=k)` added where a cell
has fewer seeds than the rest of its table); the best method of each pair is in bold. Where
a pair has published numbers (same teacher, student, dataset and protocol: see
`analysis.published`) a `<pair> [published]` column stands beside ours, and the papers'
methods we do not run (CRD, Overhaul) appear as `[published]` rows. Written as Markdown,
LaTeX (booktabs) and CSV (numbers only: mean, std, n, published per pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.loading import METRIC_LABELS, method_label, sort_methods
from analysis.published import PUBLISHED_ONLY, Published, protocol_deviations, published_for

TEACHER = "teacher"


@dataclass
class PaperTable:
    """The numbers of one table; `cells` is long: row, pair, kind (ours | published), mean, std, n."""

    study: str
    metric: str
    rows: list[str]  # method names (plus "teacher" and "published:<column>" rows)
    pairs: list[str]
    published_pairs: list[str]
    cells: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.study}: {METRIC_LABELS.get(self.metric, self.metric)} (%)"

    def cell(self, row: str, pair: str, kind: str = "ours") -> dict | None:
        c = self.cells[(self.cells["row"] == row) & (self.cells["pair"] == pair) & (self.cells["kind"] == kind)]
        return None if c.empty else c.iloc[0].to_dict()


def row_label(row: str) -> str:
    if row.startswith("published:"):
        return f"{row.split(':', 1)[1]} [published]"
    return method_label(row)


def paper_table(summary: pd.DataFrame, teachers: pd.DataFrame, study: str, metric: str,
                configs: dict[str, dict] | None = None) -> PaperTable:
    """Build the table of `study` x `metric` from `robustness.method_summary` rows and
    `robustness.teacher_accuracy`; `configs` maps a pair to one of its distillation configs
    (to check the recipe against the published protocol)."""
    s = summary[(summary["study"] == study) & (summary["metric"] == metric)]
    pairs = sorted(s["pair"].unique())
    methods = sort_methods(s["method"])
    cells: list[dict] = []
    published: dict[str, Published] = {}
    notes: list[str] = []
    pair_info = s.drop_duplicates("pair").set_index("pair")
    for pair in pairs:
        info = pair_info.loc[pair]
        for _, r in s[s["pair"] == pair].iterrows():
            cells.append(dict(row=r["method"], pair=pair, kind="ours", mean=r["mean"], std=r["std"], n=int(r["n"])))
        t = teachers[(teachers["dataset"] == info["dataset"]) & (teachers["teacher"] == info["teacher"])
                     & (teachers["metric"] == metric)]
        if len(t):
            cells.append(dict(row=TEACHER, pair=pair, kind="ours", mean=float(t["mean"].iloc[0]), std=float("nan"),
                              n=int(t["n"].iloc[0])))
        pub = published_for(info["teacher"], info["student"], info["dataset"], info["protocol"])
        if pub is None:
            continue
        published[pair] = pub
        for method in [TEACHER, *methods]:
            value = pub.for_method(method)
            if value is not None:
                cells.append(dict(row=method, pair=pair, kind="published", mean=value, std=float("nan"), n=0))
        for column in PUBLISHED_ONLY.get(pub.protocol, ()):
            if column in pub.values:
                cells.append(dict(row=f"published:{column}", pair=pair, kind="published", mean=pub.values[column],
                                  std=float("nan"), n=0))
        for column, note in pub.notes.items():
            notes.append(f"{pair} [published] {column}: {note}.")
        deviations = protocol_deviations((configs or {}).get(pair, {}), pub.protocol)
        if deviations:
            notes.append(f"{pair}: our recipe departs from the {pub.protocol} protocol ({', '.join(deviations)}); "
                         "the published numbers are indicative only.")
    for source in sorted({p.source for p in published.values()}):
        notes.insert(0, f"[published]: {source}; shown only for pairs with the same teacher, student, dataset "
                        "(cifar100) and protocol.")
    frame = pd.DataFrame(cells, columns=["row", "pair", "kind", "mean", "std", "n"])
    present = set(frame["row"])
    rows = [r for r in [TEACHER, *methods] if r in present]
    rows += sorted(r for r in present if r.startswith("published:"))
    if metric == "test_acc_best" and published:
        notes.append("The published numbers are last-epoch accuracies; this table selects the epoch on the "
                     "held-out split, so compare with care.")
    return PaperTable(study, metric, rows, pairs, [p for p in pairs if p in published], frame, notes)


# --- formatting -------------------------------------------------------------------------------
def _modal_n(table: PaperTable) -> int:
    ours = table.cells[(table.cells["kind"] == "ours") & (table.cells["row"] != TEACHER)]
    return int(ours["n"].mode().max()) if len(ours) else 0


def _columns(table: PaperTable) -> list[tuple[str, str]]:
    out = []
    for pair in table.pairs:
        out.append((pair, "ours"))
        if pair in table.published_pairs:
            out.append((pair, "published"))
    return out


def _best(table: PaperTable, pair: str) -> float | None:
    c = table.cells
    ours = c[(c["pair"] == pair) & (c["kind"] == "ours") & (c["row"] != TEACHER)]
    return float(ours["mean"].max()) if len(ours) else None


def _text(cell: dict | None, modal_n: int) -> str:
    if cell is None or cell["mean"] is None or (isinstance(cell["mean"], float) and math.isnan(cell["mean"])):
        return "–"
    text = f"{cell['mean']:.2f}"
    if cell["kind"] == "ours":
        if cell["n"] > 1 and not math.isnan(cell["std"]):
            text += f" ± {cell['std']:.2f}"
        if cell["row"] != TEACHER and cell["n"] != modal_n:
            text += f" (n={cell['n']})"
    return text


def _grid(table: PaperTable) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of (text, bold) cells."""
    modal = _modal_n(table)
    columns = _columns(table)
    header = ["method"] + [pair if kind == "ours" else f"{pair} [published]" for pair, kind in columns]
    body = []
    for row in table.rows:
        line = [(row_label(row), False)]
        for pair, kind in columns:
            cell = table.cell(row, pair, kind)
            best = _best(table, pair) if kind == "ours" and row != TEACHER else None
            bold = cell is not None and best is not None and math.isclose(cell["mean"], best, abs_tol=1e-9)
            line.append((_text(cell, modal), bold))
        body.append(line)
    return header, body


def to_markdown(table: PaperTable) -> str:
    header, body = _grid(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for line in body:
        lines.append("| " + " | ".join(f"**{t}**" if b else t for t, b in line) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    text = text.replace("\\", r"\textbackslash{}")
    for ch in "&%$#_{}":
        text = text.replace(ch, "\\" + ch)
    return text.replace("->", r"$\to$").replace("±", r"$\pm$").replace("–", "--")


def to_latex(table: PaperTable) -> str:
    header, body = _grid(table)
    lines = [
        "% " + table.title,
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _tex(table.title) + r" Mean $\pm$ std over seeds; best per pair in bold.}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for line in body:
        lines.append(" & ".join(r"\textbf{" + _tex(t) + "}" if b else _tex(t) for t, b in line) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    if table.notes:
        lines += ["% " + note for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv_frame(table: PaperTable) -> pd.DataFrame:
    """One row per table row; per pair the numeric columns `<pair> mean|std|n|published`."""
    records = []
    for row in table.rows:
        rec: dict = {"method": row, "label": row_label(row)}
        for pair in table.pairs:
            ours = table.cell(row, pair, "ours")
            rec[f"{pair} mean"] = ours["mean"] if ours else float("nan")
            rec[f"{pair} std"] = ours["std"] if ours else float("nan")
            rec[f"{pair} n"] = ours["n"] if ours else 0
            if pair in table.published_pairs:
                pub = table.cell(row, pair, "published")
                rec[f"{pair} published"] = pub["mean"] if pub else float("nan")
        records.append(rec)
    return pd.DataFrame(records)


def write_table(table: PaperTable, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Write `<stem>.md`, `<stem>.tex` and `<stem>.csv` into `out_dir`; returns them by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "tex": out / f"{stem}.tex", "csv": out / f"{stem}.csv"}
    notes = "".join(f"\n- {n}" for n in table.notes)
    paths["md"].write_text(f"**{table.title}**\n\n{to_markdown(table)}" + (f"\nNotes:{notes}\n" if notes else ""))
    paths["tex"].write_text(to_latex(table))
    to_csv_frame(table).to_csv(paths["csv"], index=False)
    return paths


__all__ = ["PaperTable", "paper_table", "row_label", "to_csv_frame", "to_latex", "to_markdown", "write_table"]
