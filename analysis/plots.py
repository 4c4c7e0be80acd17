"""PNG figures of a sweep, readable at a glance: titles, axis labels with units, legends.

matplotlib is used through `Figure` objects and the Agg canvas only (no pyplot state, no
display needed), so the module works in a headless job and does not change the backend of a
notebook that imports it. Figures are saved at `DPI` without tight bounding boxes, so a
figure's pixel size is its size in inches x DPI, as returned in `PlotFile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from analysis.loading import METRIC_LABELS, method_label, sort_methods
from analysis.robustness import METRICS, TIE_TOLERANCE, spearman

DPI = 100
_BASE_COLORS = colormaps["tab10"].colors


@dataclass(frozen=True)
class PlotFile:
    path: Path
    width: int  # pixels
    height: int  # pixels
    title: str


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(round(width_in, 2), round(height_in, 2)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, title: str) -> PlotFile:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    w, h = fig.get_size_inches()
    return PlotFile(path, int(round(w * DPI)), int(round(h * DPI)), title)


def pretty_pair(pair: str) -> str:
    return str(pair).replace("->", " → ")


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return math.ceil(max(n, 1) / cols), cols


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# --- robustness ---------------------------------------------------------------------------------
def plot_dfa_gains(gains: pd.DataFrame, study: str, path: str | Path) -> PlotFile:
    """Grouped bars: DFA - baseline (points) per pair, one panel per metric.

    Error bars are +-sigma, the tie threshold of `analysis.robustness` (pooled seed std; the
    fixed 0.3-point tolerance, hatched, where both methods have one seed): a bar whose error
    bar crosses zero is a tie.
    """
    g = gains[gains["study"] == study]
    pairs = sorted(g["pair"].unique())
    baselines = sort_methods(g["baseline"])
    width = min(24.0, max(10.0, 3.0 + 0.5 * max(1, len(pairs)) * max(1, len(baselines))))
    fig = _figure(width, 8.0)
    axes = fig.subplots(2, 1, sharex=True)
    title = f"Gain of DFA over each baseline, per pair ({study})"
    fig.suptitle(title, fontsize=14, fontweight="bold")
    x = np.arange(len(pairs))
    bar_w = 0.8 / max(1, len(baselines))
    for ax, metric in zip(axes, METRICS):
        m = g[g["metric"] == metric]
        ax.set_title(METRIC_LABELS[metric], fontsize=12)
        ax.set_ylabel("DFA − baseline (accuracy points)")
        ax.axhline(0.0, color="black", linewidth=1.0)
        ax.grid(axis="y", alpha=0.3)
        if m.empty:
            _empty(ax, "no pair has both DFA and a baseline for this metric")
            continue
        for i, base in enumerate(baselines):
            b = m[m["baseline"] == base].set_index("pair").reindex(pairs)
            pos = x - 0.4 + bar_w * (i + 0.5)
            color = _BASE_COLORS[i % len(_BASE_COLORS)]
            hatch = ["//" if isinstance(s, str) and s.startswith("fixed") else "" for s in b["sigma_source"]]
            bars = ax.bar(pos, b["gain"].fillna(0.0), bar_w * 0.92, color=color, label=method_label(base),
                          edgecolor="black", linewidth=0.5)
            for bar, h in zip(bars, hatch):
                bar.set_hatch(h)
            ax.errorbar(pos, b["gain"], yerr=b["sigma"], fmt="none", ecolor="black", elinewidth=1.0, capsize=3)
            if len(pairs) * len(baselines) <= 30:  # the value beyond the end of its error bar
                for p, v, sg in zip(pos, b["gain"], b["sigma"]):
                    if not pd.isna(v):
                        end = v + (sg if v >= 0 else -sg) if not pd.isna(sg) else v
                        ax.annotate(f"{v:+.2f}", (p, end), xytext=(0, 3 if v >= 0 else -3), textcoords="offset points",
                                    ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
        lo, hi = (m["gain"] - m["sigma"]).min(), (m["gain"] + m["sigma"]).max()
        pad = 0.2 * max(hi - lo, 0.5)
        ax.set_ylim(min(lo, 0) - pad, max(hi, 0) + pad)
    axes[-1].set_xticks(x, [pretty_pair(p) for p in pairs], rotation=20 if len(pairs) > 3 else 0,
                        ha="right" if len(pairs) > 3 else "center")
    axes[-1].set_xlabel("teacher → student pair")
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    handles += [Line2D([], [], color="black", marker="|", linestyle="none", markersize=12),
                Patch(facecolor="white", edgecolor="black", hatch="//")]
    labels += ["error bar: ± tie threshold σ (crosses 0 = tie)",
               f"hatched: one seed each, σ = fixed {TIE_TOLERANCE:g} points"]
    axes[0].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, title="baseline")
    return _save(fig, path, title)


def plot_gap(gap: pd.DataFrame, summary: pd.DataFrame, study: str, metric: str, path: str | Path) -> PlotFile:
    """Each method's gain over the vanilla student against the teacher-student gap.

    Left: the accuracy gap (teacher - vanilla student, points); right: the parameter ratio
    (teacher / student, log scale). DFA is drawn large, its points labelled with the pair; the
    panel titles give Spearman's rho of DFA's gain with the gap measure.
    """
    gp = gap[(gap["study"] == study) & (gap["metric"] == metric)].set_index("pair")
    s = summary[(summary["study"] == study) & (summary["metric"] == metric)]
    vanilla = s[s["method"] == "vanilla"].set_index("pair")["mean"]
    fig = _figure(13.0, 5.5)
    axes = fig.subplots(1, 2)
    title = f"Accuracy gain over the vanilla student vs. the teacher-student gap ({study}, {METRIC_LABELS[metric]})"
    fig.suptitle(title, fontsize=13, fontweight="bold")
    methods = [m for m in sort_methods(s["method"]) if m != "vanilla"]
    measures = (("acc_gap", "teacher − vanilla student accuracy (points)"),
                ("param_ratio", "teacher / student parameters (×, log scale)"))
    for ax, (measure, xlabel) in zip(axes, measures):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("method − vanilla student (accuracy points)")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.grid(alpha=0.3)
        xs = gp[measure] if measure in gp else pd.Series(dtype=float)
        if vanilla.empty or xs.dropna().empty:
            _empty(ax, "needs the vanilla student and " + ("the teacher's accuracy" if measure == "acc_gap"
                                                            else "known parameter counts"))
            continue
        plotted = False
        for i, method in enumerate(methods):
            ms = s[s["method"] == method].set_index("pair")["mean"]
            pairs = [p for p in ms.index if p in vanilla.index and p in xs.index and not pd.isna(xs[p])]
            if not pairs:
                continue
            ys = [ms[p] - vanilla[p] for p in pairs]
            is_dfa = method == "dfa"
            ax.scatter([xs[p] for p in pairs], ys, s=110 if is_dfa else 45, marker="*" if is_dfa else "o",
                       color="crimson" if is_dfa else _BASE_COLORS[(i + 1) % len(_BASE_COLORS)],
                       edgecolor="black", linewidth=0.5, label=method_label(method), zorder=3 if is_dfa else 2)
            plotted = True
            if is_dfa:
                for p, y in zip(pairs, ys):
                    ax.annotate(pretty_pair(p), (xs[p], y), xytext=(5, 5), textcoords="offset points", fontsize=8)
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
    return _save(fig, path, title)


# --- search -------------------------------------------------------------------------------------
def plot_alpha_heatmaps(alphas: pd.DataFrame, path: str | Path) -> PlotFile:
    """Final alpha of each pair's chosen search trial: rows groups, columns candidates.

    Colour is alpha x N (N candidates in the group: 1 = uniform, above 1 = favoured), on a
    diverging scale centred at 1 and at least 0.5..1.5 wide so near-uniform weights look
    near-uniform; each cell is annotated with alpha itself.
    """
    pairs = sorted(alphas["pair"].unique()) if len(alphas) else []
    rows, cols = _grid(len(pairs))
    max_groups = int(alphas["group"].max()) + 1 if len(alphas) else 1
    max_cand = int(alphas["n_candidates"].max()) if len(alphas) else 1
    cell_w = max(4.5, 0.55 * max_cand + 2.0)
    fig = _figure(max(9.0, cell_w * cols + 1.5), 1.0 + (0.7 * max_groups + 1.6) * rows)
    title = "Aggregation weights α at the end of search (chosen trial of each pair)"
    fig.suptitle(title, fontsize=13, fontweight="bold")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    rel = alphas["weight"] * alphas["n_candidates"] if len(alphas) else pd.Series([1.0])
    norm = TwoSlopeNorm(vmin=min(0.5, float(rel.min()) - 1e-6), vcenter=1.0, vmax=max(1.5, float(rel.max()) + 1e-6))
    cmap = colormaps["RdBu_r"]
    image = None
    for ax, pair in zip(axes, pairs):
        a = alphas[alphas["pair"] == pair]
        n_groups = int(a["group"].max()) + 1
        n_cand = int(a["n_candidates"].max())
        grid = np.full((n_groups, n_cand), np.nan)
        raw = np.full((n_groups, n_cand), np.nan)
        for r in a.itertuples():
            grid[r.group, r.position - 1] = r.weight * r.n_candidates
            raw[r.group, r.position - 1] = r.weight
        ax.set_facecolor("0.85")  # a group with fewer candidates than the widest: grey cells
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        if n_cand <= 12:
            for gi in range(n_groups):
                for j in range(n_cand):
                    if not np.isnan(raw[gi, j]):
                        r, g, b, _ = cmap(norm(grid[gi, j]))
                        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                        ax.text(j, gi, f"{raw[gi, j]:.3f}", ha="center", va="center", fontsize=9,
                                color="white" if dark else "black")
        labels = []
        for gi in range(n_groups):
            row = a[a["group"] == gi].iloc[0]
            labels.append(f"S group {int(row['student_group']) + 1} ← T group {int(row['teacher_group']) + 1}")
        ax.set_yticks(range(n_groups), labels, fontsize=9)
        ax.set_xticks(range(n_cand), [str(j + 1) for j in range(n_cand)])
        ax.set_xlabel("teacher candidate: block within the group (1 = shallowest)")
        ax.set_title(f"{pretty_pair(pair)} (trial {a['trial_id'].iloc[0]})", fontsize=11)
    for ax in axes[len(pairs):]:
        ax.axis("off")
    if not pairs:
        axes[0].axis("on")
        _empty(axes[0], "no search trial with aggregation weights")
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes[: len(pairs)]), shrink=0.9)
        bar.set_label("α × N  (1 = uniform, >1 = favoured)")
    return _save(fig, path, title)


def plot_alpha_trajectories(traj: pd.DataFrame, path: str | Path) -> PlotFile:
    """Alpha of every candidate over the search epochs of each pair's chosen trial; one panel
    per pair x group, colour from shallow (purple) to deep (yellow), dashed line = uniform."""
    pairs = sorted(traj["pair"].unique()) if len(traj) else []
    max_groups = int(traj["group"].max()) + 1 if len(traj) else 1
    fig = _figure(4.3 * max_groups + 0.4, 3.2 * max(1, len(pairs)) + 0.8)
    title = "Aggregation weights α over the search epochs (chosen trial of each pair)"
    fig.suptitle(title, fontsize=13, fontweight="bold")
    axes = fig.subplots(max(1, len(pairs)), max_groups, squeeze=False)
    cmap = colormaps["viridis"]
    if not pairs:
        for ax in axes.ravel()[1:]:
            ax.axis("off")
        _empty(axes[0, 0], "no alpha recorded by any search trial")
    for i, pair in enumerate(pairs):
        t = traj[traj["pair"] == pair]
        for gi in range(max_groups):
            ax = axes[i, gi]
            tg = t[t["group"] == gi]
            if tg.empty:
                ax.axis("off")
                continue
            n = int(tg["n_candidates"].max())
            for pos, line in tg.groupby("position"):
                color = cmap(0.0 if n == 1 else 0.9 * (pos - 1) / (n - 1))
                ax.plot(line["epoch"], line["weight"], color=color, marker="o", markersize=3, linewidth=1.6,
                        label=f"block {pos}" + (" (shallowest)" if pos == 1 else " (deepest)" if pos == n else ""))
            ax.axhline(1.0 / n, color="0.4", linestyle="--", linewidth=1.0, label=f"uniform 1/{n}")
            ax.set_title(f"{pretty_pair(pair)}: student group {gi + 1}", fontsize=10)
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
    return _save(fig, path, title)


def plot_search_curves(trials: pd.DataFrame, epochs: pd.DataFrame, chosen: pd.DataFrame, path: str | Path) -> PlotFile:
    """Held-out accuracy over search epochs of every search trial, one panel per pair; trials
    stopped by ASHA end in an x, errored ones in a red X, the chosen trial is drawn thick."""
    pairs = sorted(trials["pair"].unique()) if len(trials) else []
    rows, cols = _grid(len(pairs))
    fig = _figure(max(10.0, 5.5 * cols), 4.0 * rows + 1.2)
    title = "Search learning curves (held-out accuracy on the architecture split)"
    fig.suptitle(title, fontsize=13, fontweight="bold")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    chosen_of = dict(zip(chosen["pair"], chosen["trial_id"]))
    style = {"completed": dict(color="tab:blue", linestyle="-", alpha=0.8),
             "pruned": dict(color="tab:orange", linestyle="--", alpha=0.8),
             "errored": dict(color="tab:red", linestyle=":", alpha=0.9),
             "running": dict(color="tab:gray", linestyle="-.", alpha=0.8)}
    for ax, pair in zip(axes, pairs):
        g = trials[trials["pair"] == pair]
        for _, t in g.iterrows():
            e = epochs[(epochs["trial_id"] == t["trial_id"]) & (epochs["stage"] == "search")].sort_values("epoch")
            if e.empty:
                continue
            st = style.get(t["status"], style["running"])
            is_chosen = chosen_of.get(pair) == t["trial_id"]
            ax.plot(e["epoch"], e["val_acc"], linewidth=3.0 if is_chosen else 1.4,
                    **({**st, "color": "black", "alpha": 1.0} if is_chosen else st))
            last = e.iloc[-1]
            if t["status"] == "pruned":
                ax.plot(last["epoch"], last["val_acc"], marker="x", color="tab:orange", markersize=9, mew=2)
            elif t["status"] == "errored":
                ax.plot(last["epoch"], last["val_acc"], marker="X", color="tab:red", markersize=10)
            elif t["status"] == "running":
                ax.plot(last["epoch"], last["val_acc"], marker=">", color="tab:gray", markersize=7)
        counts = g["status"].value_counts()
        ax.set_title(f"{pretty_pair(pair)}: {len(g)} trials, {counts.get('pruned', 0)} stopped by ASHA", fontsize=11)
        ax.set_xlabel("search epoch")
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
        planned = int(g["epochs_planned"].max()) if len(g) else 1
        if planned <= 15:
            ax.set_xticks(range(1, planned + 1))
        ax.set_xlim(0.8, planned + 0.2)
    for ax in axes[len(pairs):]:
        ax.axis("off")
    if not pairs:
        axes[0].axis("on")
        _empty(axes[0], "no search trials")
    handles = [Line2D([], [], color="black", linewidth=3, label="chosen trial (its genotype is used by DFA)"),
               Line2D([], [], **style["completed"], label="completed"),
               Line2D([], [], **style["pruned"], marker="x", markersize=8, mew=2,
                      label="stopped by ASHA (x = last epoch)"),
               Line2D([], [], **style["errored"], marker="X", markersize=8, label="errored"),
               Line2D([], [], **style["running"], marker=">", label="still running")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)
    return _save(fig, path, title)


__all__ = [
    "DPI",
    "PlotFile",
    "plot_alpha_heatmaps",
    "plot_alpha_trajectories",
    "plot_dfa_gains",
    "plot_gap",
    "plot_search_curves",
    "pretty_pair",
]
