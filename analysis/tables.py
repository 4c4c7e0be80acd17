"""Paper-style tables: one per study (dataset x protocol) and metric; rows methods, columns pairs.

A cell is `mean ± std` over seeds (std omitted for a single seed; `(n=k)` added where a cell
has another number of seeds than most cells of its table); the best method of each pair is in bold. Every
method in the results is a row (no fixed list). Where a pair has published numbers (same
teacher, student, dataset and protocol: see `dfa_ray_analysis.published`) a `<pair> [published]`
column stands beside ours, each number tagged with its source, whose reporting rule the
table's notes give (the last epoch, the best test epoch, a median of runs...); published
methods we did not run appear as `[published]` rows. The notes also state our own rule.
Written as Markdown, LaTeX (booktabs) and CSV (numbers only: mean, std, n, CI, published and
its source per pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfa_ray_analysis.loading import METRIC_LABELS, method_label, sort_methods
from dfa_ray_analysis.published import SOURCES, Published, protocol_deviations, published_for

TEACHER = "teacher"
# How our numbers are chosen, per metric: said beside every table that shows them.
OUR_RULES = {
    "test_acc_last": "test accuracy of the weights of the last epoch",
    "test_acc_best": "test accuracy of the weights of the epoch that was best on the held-out validation split "
                     "(part of the training set; the test set is never used to choose)",
}


def our_rule(metric: str) -> str:
    return (f"Ours: {OUR_RULES.get(metric, metric)}; mean ± sample std over seeds (n seeds per cell; "
            "`(n=k)` marks a cell whose number of seeds differs from the rest of its table).")


@dataclass
class PaperTable:
    """The numbers of one table; `cells` is long: row, pair, kind (ours | published), mean, std, n,
    ci_low, ci_high, source (the published number's source key, else "")."""

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


_COLUMNS = ["row", "pair", "kind", "mean", "std", "n", "ci_low", "ci_high", "source"]
_NAN = float("nan")


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
            cells.append(dict(row=r["method"], pair=pair, kind="ours", mean=r["mean"], std=r["std"], n=int(r["n"]),
                              ci_low=r.get("ci_low", _NAN), ci_high=r.get("ci_high", _NAN), source=""))
        t = teachers[(teachers["dataset"] == info["dataset"]) & (teachers["teacher"] == info["teacher"])
                     & (teachers["metric"] == metric)]
        if len(t):
            cells.append(dict(row=TEACHER, pair=pair, kind="ours", mean=float(t["mean"].iloc[0]), std=_NAN,
                              n=int(t["n"].iloc[0]), ci_low=_NAN, ci_high=_NAN, source=""))
        pub = published_for(info["teacher"], info["student"], info["dataset"], info["protocol"])
        if pub is None:
            continue
        published[pair] = pub
        for method in [TEACHER, *methods]:
            number = pub.for_method(method)
            if number is not None:
                cells.append(dict(row=method, pair=pair, kind="published", mean=number.value, std=_NAN, n=0,
                                  ci_low=_NAN, ci_high=_NAN, source=number.source.key))
        for number in pub.unmatched(methods):  # a method of the table is its row
            cells.append(dict(row=f"published:{number.column}", pair=pair, kind="published", mean=number.value,
                              std=_NAN, n=0, ci_low=_NAN, ci_high=_NAN, source=number.source.key))
        for column, note in pub.notes.items():
            notes.append(f"{pair} [published] {column}: {note}.")
        deviations = protocol_deviations((configs or {}).get(pair, {}), pub.protocol, pub.dataset)
        if deviations:
            notes.append(f"{pair}: our recipe departs from the {pub.protocol} protocol ({', '.join(deviations)}); "
                         "the published numbers are indicative only.")
    frame = pd.DataFrame(cells, columns=_COLUMNS)
    used = sorted({SOURCES[k] for k in frame.loc[frame["kind"] == "published", "source"]}, key=lambda x: x.mark)
    head = [our_rule(metric)]
    for source in used:
        head.append(f"[{source.mark}] published: {source.text}.")
    if used:
        head.append("Published numbers are shown only for pairs with the same teacher, student, dataset and protocol; "
                    "they were chosen by their source's rule, ours by ours, so compare with care.")
    present_rows = set(frame["row"])
    rows = [r for r in [TEACHER, *methods] if r in present_rows]
    rows += list(dict.fromkeys(frame.loc[frame["row"].str.startswith("published:"), "row"]))
    return PaperTable(study, metric, rows, pairs, [p for p in pairs if p in published], frame, head + notes)


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
    if cell["kind"] == "published" and cell.get("source"):
        text += f" [{SOURCES[cell['source']].mark}]"
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
    text = text.replace("`", "")  # Markdown code marks; in LaTeX a backtick is an opening quote
    return text.replace("->", r"$\to$").replace("±", r"$\pm$").replace("–", "--")


def to_latex(table: PaperTable) -> str:
    header, body = _grid(table)
    lines = [
        "% " + table.title,
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _tex(table.title) + r". Mean $\pm$ std over seeds; best per pair in bold. "
        + " ".join(_tex(n) for n in table.notes if n.startswith(("Ours:", "["))) + "}",
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
            rec[f"{pair} ci_low"] = ours["ci_low"] if ours else float("nan")
            rec[f"{pair} ci_high"] = ours["ci_high"] if ours else float("nan")
            if pair in table.published_pairs:
                pub = table.cell(row, pair, "published")
                rec[f"{pair} published"] = pub["mean"] if pub else float("nan")
                rec[f"{pair} published source"] = pub["source"] if pub else ""
                rec[f"{pair} published rule"] = SOURCES[pub["source"]].rule if pub else ""
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
