"""Figures of a sweep, for a report, a paper or a notebook: titles, axis labels with units, legends.

Every plot function draws with matplotlib's object API (no pyplot state, no display needed,
the backend of a notebook that imports this is left alone) and returns its `Figure`. Given
`ax=`, it draws one panel (one metric, one pair...) into that Axes, so figures can be composed
or styled by the caller; without it, it makes a figure with every panel. `save(fig, stem)`
writes the figure as PNG (at `DPI`) and PDF (vector, for papers), or any `formats`.
Error bars are confidence intervals (see `dfa_ray_analysis.stats`), never a fixed band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from dfa_ray_analysis.loading import METRIC_LABELS, method_label, sort_methods
from dfa_ray_analysis.robustness import METRICS, spearman

DPI = 150
FORMATS = ("png", "pdf")
_BASE_COLORS = colormaps["tab10"].colors


@dataclass(frozen=True)
class PlotFile:
    """A saved figure: its files by format, the PNG's size in pixels, its title."""

    paths: dict[str, Path]
    width: int  # pixels of the PNG
    height: int
    title: str

    @property
    def path(self) -> Path:
        """The PNG (the report embeds it), else the first format written."""
        return self.paths.get("png", next(iter(self.paths.values())))


def save(fig: Figure, stem: str | Path, formats: Sequence[str] = FORMATS, dpi: int = DPI) -> PlotFile:
    """Write `fig` as `<stem>.<format>` for each format (png, pdf, svg); returns the files.

    Saved without a tight bounding box, so the PNG's pixel size is the figure's size in inches
    x `dpi` (layout is done by the figure's constrained layout instead)."""
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".pdf", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, dpi=dpi, format=fmt, facecolor="white")
        paths[fmt] = path
    w, h = fig.get_size_inches()
    return PlotFile(paths, int(round(w * dpi)), int(round(h * dpi)), fig.get_suptitle() or stem.name)


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(round(width_in, 2), round(height_in, 2)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pretty_pair(pair: str) -> str:
    return str(pair).replace("->", " → ")


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return math.ceil(max(n, 1) / cols), cols


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _one(kind: str, value, choices: list, ax: Axes | None):
    """The panel to draw into a caller's `ax`: `value`, or the only choice; ValueError otherwise."""
    if value is not None:
        if value not in choices and choices:
            raise ValueError(f"{kind} {value!r} is not in the data; choose one of {', '.join(map(str, choices))}")
        return value
    if len(choices) == 1 or ax is None:
        return choices[0] if choices else None
    raise ValueError(f"drawing into one ax needs one {kind}: pass {kind}= one of {', '.join(map(str, choices))}")


# --- robustness ---------------------------------------------------------------------------------
def _draw_gains(ax: Axes, m: pd.DataFrame, pairs: list[str], baselines: list[str], metric: str,
                legend: bool) -> None:
    """Bars: DFA − baseline per pair (the mean paired difference); error bars: its 95 % interval;
    hatched: no interval (fewer than 2 seeds in common), the bar is then the difference of means."""
    ax.set_ylabel("DFA − baseline (accuracy points)")
    ax.set_xlabel("teacher → student pair")
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.grid(axis="y", alpha=0.3)
    if m.empty:
        _empty(ax, "no pair has both DFA and a baseline for this metric")
        return
    x = np.arange(len(pairs))
    bar_w = 0.8 / max(1, len(baselines))
    for i, base in enumerate(baselines):
        b = m[m["baseline"] == base].set_index("pair").reindex(pairs)
        pos = x - 0.4 + bar_w * (i + 0.5)
        color = _BASE_COLORS[i % len(_BASE_COLORS)]
        value = b["paired_mean"].where(b["paired_n"] >= 1, b["gain"])
        no_ci = b["ci_low"].isna()
        bars = ax.bar(pos, value.fillna(0.0), bar_w * 0.92, color=color, label=method_label(base),
                      edgecolor="black", linewidth=0.5)
        for bar, missing in zip(bars, no_ci):
            bar.set_hatch("//" if missing else "")
        lower, upper = (value - b["ci_low"]).clip(lower=0), (b["ci_high"] - value).clip(lower=0)
        ax.errorbar(pos, value, yerr=np.vstack([lower.to_numpy(float), upper.to_numpy(float)]), fmt="none",
                    ecolor="black", elinewidth=1.0, capsize=3)
        if len(pairs) * len(baselines) <= 30:  # the value beyond the end of its interval
            for px, v, lo, hi in zip(pos, value, b["ci_low"], b["ci_high"]):
                if pd.isna(v):
                    continue
                end = (hi if v >= 0 else lo) if not pd.isna(hi) else v
                ax.annotate(f"{v:+.2f}", (px, end), xytext=(0, 3 if v >= 0 else -3), textcoords="offset points",
                            ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
    lo = pd.concat([m["ci_low"], m["gain"]]).min()
    hi = pd.concat([m["ci_high"], m["gain"]]).max()
    pad = 0.2 * max(hi - lo, 0.5)
    ax.set_ylim(min(lo, 0) - pad, max(hi, 0) + pad)
    ax.set_xticks(x, [pretty_pair(p) for p in pairs], rotation=20 if len(pairs) > 3 else 0,
                  ha="right" if len(pairs) > 3 else "center")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="black", marker="|", linestyle="none", markersize=12),
                    Patch(facecolor="white", edgecolor="black", hatch="//")]
        labels += ["error bar: 95 % t interval of the paired difference", "hatched: < 2 seeds in common, no interval"]
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, title="baseline")


def plot_dfa_gains(gains: pd.DataFrame, study: str, metric: str | None = None, ax: Axes | None = None) -> Figure:
    """DFA − each baseline per pair, with the 95 % interval of the paired difference as error bar:
    a bar whose interval crosses zero is a tie by the interval rule. Without `ax`, one panel per
    metric (or only `metric`); with `ax`, the panel of `metric` (default: the last epoch)."""
    g = gains[gains["study"] == study]
    pairs = sorted(g["pair"].unique())
    baselines = sort_methods(g["baseline"])
    if ax is not None:
        metric = metric or METRICS[0]
        ax.set_title(f"{study}: {METRIC_LABELS.get(metric, metric)}", fontsize=11)
        _draw_gains(ax, g[g["metric"] == metric], pairs, baselines, metric, legend=True)
        return ax.figure
    metrics = [metric] if metric else list(METRICS)
    width = min(24.0, max(10.0, 3.0 + 0.5 * max(1, len(pairs)) * max(1, len(baselines))))
    fig = _figure(width, 4.5 * len(metrics))
    axes = np.atleast_1d(fig.subplots(len(metrics), 1, squeeze=False)).ravel()
    fig.suptitle(f"Gain of DFA over each baseline, per pair ({study})", fontsize=14, fontweight="bold")
    for k, (a, mt) in enumerate(zip(axes, metrics)):
        a.set_title(METRIC_LABELS.get(mt, mt), fontsize=12)
        _draw_gains(a, g[g["metric"] == mt], pairs, baselines, mt, legend=k == 0)
    return fig


def _draw_gap(ax: Axes, gp: pd.DataFrame, s: pd.DataFrame, measure: str) -> None:
    xlabel = {"acc_gap": "teacher − vanilla student accuracy (points)",
              "param_ratio": "teacher / student parameters (×, log scale)"}[measure]
    vanilla = s[s["method"] == "vanilla"].set_index("pair")["mean"]
    methods = [m for m in sort_methods(s["method"]) if m != "vanilla"]
    ax.set_xlabel(xlabel)
    ax.set_ylabel("method − vanilla student (accuracy points)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.grid(alpha=0.3)
    xs = gp[measure] if measure in gp else pd.Series(dtype=float)
    if vanilla.empty or xs.dropna().empty:
        _empty(ax, "needs the vanilla student and " + ("the teacher's accuracy" if measure == "acc_gap"
                                                        else "known parameter counts"))
        return
    plotted = False
    span = float(xs.max() - xs.min()) or 1.0
    k = max(1, len(methods))
    for i, method in enumerate(methods):
        ms = s[s["method"] == method].set_index("pair")["mean"]
        pairs = [p for p in ms.index if p in vanilla.index and p in xs.index and not pd.isna(xs[p])]
        if not pairs:
            continue
        ys = [ms[p] - vanilla[p] for p in pairs]
        # methods of one pair share its x: dodge them a little so that no marker hides another
        shift = (i - (k - 1) / 2) / k
        px = [xs[p] * (1 + 0.04 * shift) if measure == "param_ratio" else xs[p] + 0.04 * span * shift for p in pairs]
        is_dfa = method == "dfa"
        ax.scatter(px, ys, s=110 if is_dfa else 45, marker="*" if is_dfa else "o", alpha=0.85,
                   color="crimson" if is_dfa else _BASE_COLORS[(i + 1) % len(_BASE_COLORS)],
                   edgecolor="black", linewidth=0.5, label=method_label(method), zorder=3 if is_dfa else 2)
        plotted = True
        if is_dfa:
            for p, x0, y in zip(pairs, px, ys):
                ax.annotate(pretty_pair(p), (x0, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    if measure == "param_ratio":
        ax.set_xscale("log")
        ratio_format = FuncFormatter(lambda v, _: f"{v:g}×")
        ax.xaxis.set_major_formatter(ratio_format)
        ax.xaxis.set_minor_formatter(ratio_format)
    ax.margins(x=0.15, y=0.12)
    dfa = gp["gain_vs_vanilla"] if "gain_vs_vanilla" in gp else pd.Series(dtype=float)
    rho = spearman(dfa, xs)
    n = int(pd.concat([dfa, xs], axis=1).dropna().shape[0])
    ax.set_title(f"Spearman ρ(DFA gain, gap) = {rho:+.2f} (n = {n} pairs)" if not math.isnan(rho)
                 else f"Spearman ρ: needs ≥ 3 pairs (n = {n})", fontsize=11)
    if plotted:
        ax.legend(fontsize=9, loc="best", title="method")


def plot_gap(gap: pd.DataFrame, summary: pd.DataFrame, study: str, metric: str, measure: str | None = None,
             ax: Axes | None = None) -> Figure:
    """Each method's gain over the vanilla student against the teacher-student gap.

    Panels: the accuracy gap (teacher − vanilla student, points) and the parameter ratio
    (teacher / student, log scale); with `ax`, the panel of `measure` (default the accuracy
    gap). DFA is drawn large, its points labelled with the pair; methods of one pair are
    dodged sideways; the panel titles give Spearman's rho of DFA's gain with the gap measure.
    """
    gp = gap[(gap["study"] == study) & (gap["metric"] == metric)].set_index("pair")
    s = summary[(summary["study"] == study) & (summary["metric"] == metric)]
    measures = ["acc_gap", "param_ratio"]
    if measure is not None and measure not in measures:
        raise ValueError(f"measure must be one of {', '.join(measures)}, not {measure!r}")
    if ax is not None:
        _draw_gap(ax, gp, s, measure or "acc_gap")
        return ax.figure
    chosen = [measure] if measure else measures
    fig = _figure(6.5 * len(chosen), 5.5)
    axes = np.atleast_1d(fig.subplots(1, len(chosen), squeeze=False)).ravel()
    fig.suptitle(f"Accuracy gain over the vanilla student vs. the teacher-student gap ({study}, "
                 f"{METRIC_LABELS.get(metric, metric)})", fontsize=13, fontweight="bold")
    for a, ms in zip(axes, chosen):
        _draw_gap(a, gp, s, ms)
    return fig


# --- search -------------------------------------------------------------------------------------
def _draw_heatmap(ax: Axes, a: pd.DataFrame, norm, cmap, annotate: bool = True):
    n_groups = int(a["group"].max()) + 1
    n_cand = int(a["n_candidates"].max())
    grid = np.full((n_groups, n_cand), np.nan)
    for r in a.itertuples():
        grid[r.group, r.position - 1] = r.weight
    ax.set_facecolor("0.85")  # a group with fewer candidates than the widest: grey cells
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
    if annotate and n_cand <= 12:
        for gi in range(n_groups):
            for j in range(n_cand):
                if not np.isnan(grid[gi, j]):
                    r, g, b, _ = cmap(norm(grid[gi, j]))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                    ax.text(j, gi, f"{grid[gi, j]:.3f}", ha="center", va="center", fontsize=9,
                            color="white" if dark else "black")
    labels = []
    for gi in range(n_groups):
        row = a[a["group"] == gi].iloc[0]
        labels.append(f"S group {int(row['student_group']) + 1} ← T group {int(row['teacher_group']) + 1} "
                      f"(uniform {1 / int(row['n_candidates']):.2f})")
    ax.set_yticks(range(n_groups), labels, fontsize=9)
    ax.set_ylabel("student group ← teacher group")
    ax.set_xticks(range(n_cand), [str(j + 1) for j in range(n_cand)])
    ax.set_xlabel("teacher candidate: block within the group (1 = shallowest)")
    ax.set_title(f"{pretty_pair(a['pair'].iloc[0])} (trial {a['trial_id'].iloc[0]})", fontsize=11)
    return image


def plot_alpha_heatmaps(alphas: pd.DataFrame, pair: str | None = None, ax: Axes | None = None) -> Figure:
    """Final α of each pair's chosen search trial: rows groups, columns candidates.

    The colour is α itself on a fixed 0..1 scale, the number that each cell is annotated with
    (each row label gives the uniform weight 1/N of its group for reference)."""
    pairs = sorted(alphas["pair"].unique()) if len(alphas) else []
    norm, cmap = Normalize(vmin=0.0, vmax=1.0), colormaps["viridis"]
    title = "Aggregation weights α at the end of search (chosen trial of each pair)"
    if ax is not None:
        chosen = _one("pair", pair, pairs, ax)
        if chosen is None:
            _empty(ax, "no search trial with aggregation weights")
            return ax.figure
        image = _draw_heatmap(ax, alphas[alphas["pair"] == chosen], norm, cmap)
        ax.figure.colorbar(image, ax=ax, shrink=0.9).set_label("α (weight of the candidate, sums to 1 per group)")
        return ax.figure
    if pair is not None:
        pairs = [_one("pair", pair, pairs, None)]
    rows, cols = _grid(len(pairs))
    max_groups = int(alphas["group"].max()) + 1 if len(alphas) else 1
    max_cand = int(alphas["n_candidates"].max()) if len(alphas) else 1
    cell_w = max(4.5, 0.55 * max_cand + 2.0)
    fig = _figure(max(9.0, cell_w * cols + 1.5), 1.0 + (0.7 * max_groups + 1.6) * rows)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for a, p in zip(axes, pairs):
        image = _draw_heatmap(a, alphas[alphas["pair"] == p], norm, cmap)
    for a in axes[len(pairs):]:
        a.axis("off")
    if not pairs:
        axes[0].axis("on")
        _empty(axes[0], "no search trial with aggregation weights")
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(pairs)]), shrink=0.9).set_label(
            "α (weight of the candidate, sums to 1 per group)")
    return fig


def _draw_trajectory(ax: Axes, tg: pd.DataFrame, pair: str, group: int) -> None:
    cmap = colormaps["viridis"]
    n = int(tg["n_candidates"].max())
    for pos, line in tg.groupby("position"):
        color = cmap(0.0 if n == 1 else 0.9 * (pos - 1) / (n - 1))
        ax.plot(line["epoch"], line["weight"], color=color, marker="o", markersize=3, linewidth=1.6, alpha=0.9,
                label=f"block {pos}" + (" (shallowest)" if pos == 1 else " (deepest)" if pos == n else ""))
    ax.axhline(1.0 / n, color="0.4", linestyle="--", linewidth=1.0, label=f"uniform 1/{n}")
    ax.set_title(f"{pretty_pair(pair)}: student group {group + 1}", fontsize=10)
    ax.set_xlabel("search epoch")
    ax.set_ylabel("α (weight, sums to 1)")
    ax.grid(alpha=0.3)
    epochs = sorted(tg["epoch"].unique())
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
    if n <= 6:
        ax.legend(fontsize=7, loc="best")
    else:
        handles = [Line2D([], [], color=cmap(0.0)), Line2D([], [], color=cmap(0.9)),
                   Line2D([], [], color="0.4", linestyle="--")]
        ax.legend(handles, ["block 1 (shallowest)", f"block {n} (deepest)", f"uniform 1/{n}"], fontsize=7)


def plot_alpha_trajectories(traj: pd.DataFrame, pair: str | None = None, group: int | None = None,
                            ax: Axes | None = None) -> Figure:
    """α of every candidate over the search epochs of each pair's chosen trial; one panel per
    pair x group (with `ax`: the one of `pair` and `group`), colour from shallow (purple) to
    deep (yellow), dashed line = uniform."""
    pairs = sorted(traj["pair"].unique()) if len(traj) else []
    if ax is not None:
        chosen = _one("pair", pair, pairs, ax)
        if chosen is None:
            _empty(ax, "no alpha recorded by any search trial")
            return ax.figure
        t = traj[traj["pair"] == chosen]
        g = _one("group", group, sorted(int(x) for x in t["group"].unique()), ax)
        _draw_trajectory(ax, t[t["group"] == g], chosen, g)
        return ax.figure
    if pair is not None:
        pairs = [_one("pair", pair, pairs, None)]
    max_groups = int(traj["group"].max()) + 1 if len(traj) else 1
    fig = _figure(4.3 * max_groups + 0.4, 3.2 * max(1, len(pairs)) + 0.8)
    fig.suptitle("Aggregation weights α over the search epochs (chosen trial of each pair)", fontsize=13,
                 fontweight="bold")
    axes = fig.subplots(max(1, len(pairs)), max_groups, squeeze=False)
    if not pairs:
        for a in axes.ravel()[1:]:
            a.axis("off")
        _empty(axes[0, 0], "no alpha recorded by any search trial")
    for i, p in enumerate(pairs):
        t = traj[traj["pair"] == p]
        for gi in range(max_groups):
            tg = t[t["group"] == gi]
            if tg.empty:
                axes[i, gi].axis("off")
                continue
            _draw_trajectory(axes[i, gi], tg, p, gi)
    return fig


_CURVE_STYLE = {"completed": dict(color="tab:blue", linestyle="-", alpha=0.8),
                "pruned": dict(color="tab:orange", linestyle="--", alpha=0.8),
                "errored": dict(color="tab:red", linestyle=":", alpha=0.9),
                "running": dict(color="tab:gray", linestyle="-.", alpha=0.8)}


def _draw_curves(ax: Axes, g: pd.DataFrame, epochs: pd.DataFrame, chosen_id, pair: str) -> None:
    style = _CURVE_STYLE
    for _, t in g.iterrows():
        e = epochs[(epochs["trial_id"] == t["trial_id"]) & (epochs["stage"] == "search")].sort_values("epoch")
        if e.empty:
            continue
        st = style.get(t["status"], style["running"])
        is_chosen = chosen_id == t["trial_id"]
        ax.plot(e["epoch"], e["val_acc"], linewidth=3.0 if is_chosen else 1.4,
                **({**st, "color": "black", "alpha": 1.0} if is_chosen else st), zorder=3 if is_chosen else 2)
        last = e.iloc[-1]
        if t["status"] == "pruned":
            ax.plot(last["epoch"], last["val_acc"], marker="x", color="tab:orange", markersize=9, mew=2, alpha=0.8)
        elif t["status"] == "errored":
            ax.plot(last["epoch"], last["val_acc"], marker="X", color="tab:red", markersize=10, alpha=0.8)
        elif t["status"] == "running":
            ax.plot(last["epoch"], last["val_acc"], marker=">", color="tab:gray", markersize=7, alpha=0.8)
    counts = g["status"].value_counts()
    ax.set_title(f"{pretty_pair(pair)}: {len(g)} trials, {counts.get('pruned', 0)} stopped by the scheduler", fontsize=11)
    ax.set_xlabel("search epoch")
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.3)
    planned = int(g["epochs_planned"].max()) if len(g) else 1
    if planned <= 15:
        ax.set_xticks(range(1, planned + 1))
    ax.set_xlim(0.8, planned + 0.2)


def _curve_legend() -> list[Line2D]:
    style = _CURVE_STYLE
    return [Line2D([], [], color="black", linewidth=3, label="chosen trial (its genotype is used by DFA)"),
            Line2D([], [], **style["completed"], label="completed"),
            Line2D([], [], **style["pruned"], marker="x", markersize=8, mew=2, label="stopped by the scheduler (x = last epoch)"),
            Line2D([], [], **style["errored"], marker="X", markersize=8, label="errored"),
            Line2D([], [], **style["running"], marker=">", label="still running")]


def plot_search_curves(trials: pd.DataFrame, epochs: pd.DataFrame, chosen: pd.DataFrame, pair: str | None = None,
                       ax: Axes | None = None) -> Figure:
    """Held-out accuracy over search epochs of every search trial, one panel per pair (with `ax`:
    the one of `pair`); trials stopped by the scheduler end in an x, errored ones in a red X, the chosen
    trial is drawn thick."""
    pairs = sorted(trials["pair"].unique()) if len(trials) else []
    chosen_of = dict(zip(chosen["pair"], chosen["trial_id"]))
    if ax is not None:
        p = _one("pair", pair, pairs, ax)
        if p is None:
            _empty(ax, "no search trials")
            return ax.figure
        _draw_curves(ax, trials[trials["pair"] == p], epochs, chosen_of.get(p), p)
        ax.legend(handles=_curve_legend(), fontsize=8, loc="lower right")
        return ax.figure
    if pair is not None:
        pairs = [_one("pair", pair, pairs, None)]
    rows, cols = _grid(len(pairs))
    fig = _figure(max(10.0, 5.5 * cols), 4.0 * rows + 1.2)
    fig.suptitle("Search learning curves (held-out accuracy on the architecture split)", fontsize=13,
                 fontweight="bold")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for a, p in zip(axes, pairs):
        _draw_curves(a, trials[trials["pair"] == p], epochs, chosen_of.get(p), p)
    for a in axes[len(pairs):]:
        a.axis("off")
    if not pairs:
        axes[0].axis("on")
        _empty(axes[0], "no search trials")
    handles = _curve_legend()
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)
    return fig


PLOTS = ("plot_alpha_heatmaps", "plot_alpha_trajectories", "plot_dfa_gains", "plot_gap", "plot_search_curves")

__all__ = [
    "DPI",
    "FORMATS",
    "PLOTS",
    "PlotFile",
    "plot_alpha_heatmaps",
    "plot_alpha_trajectories",
    "plot_dfa_gains",
    "plot_gap",
    "plot_search_curves",
    "pretty_pair",
    "save",
]
