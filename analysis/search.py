"""The search stage: which options matter, where alpha ends up, and what ASHA saved.

All accuracies here are the student's held-out accuracy on the architecture split (`val_acc`,
%), never the test set. Search trials of different pairs are never compared with each other.

**The chosen trial** of a pair is the one whose genotype the `dfa` distillation used (its
genotype records the search trial id); without distillation rows, the sweep's own rule is
applied: the best `last_val_acc` among the trials that ran every epoch, else among all.

**Comparing trials under ASHA.** A pruned trial's final accuracy is unknown, so trials are
compared at the *last common epoch* e* of a pair: the deepest epoch that every non-errored
trial of the pair reached (ASHA's grace period at least). Option effects are measured on that
accuracy (every trial counts, on equal training), and again on the final accuracy of the
completed trials only (more training, fewer trials). ASHA's saving is epochs run against the
epochs every trial would have run to the end; "would the best trial have been the same" is
answered by comparing the chosen trial with the best trial at e*, and by listing pruned
trials that were at least as good as the chosen trial at the epoch they were stopped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dfa_ray_analysis.loading import Results, decode_json
from dfa_ray_analysis.robustness import spearman

OPTION_PREFIX = "options."
MAX_LEVELS = 6  # an option with at most this many distinct values also gets a per-level table


def search_trials(results: Results) -> pd.DataFrame:
    """Search-stage trial rows, one `options.<name>` column per option found in their configs."""
    t = results.stage("search")
    options = sorted({k for cfg in t["cfg"] for k in cfg if k.startswith(OPTION_PREFIX)})
    for key in options:
        t[key] = pd.Series([_hashable(cfg.get(key)) for cfg in t["cfg"]], index=t.index, dtype=object)
    return t


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def searched_options(trials: pd.DataFrame) -> list[str]:
    """Option columns that take more than one value within some pair (what the search sampled)."""
    out = []
    for col in [c for c in trials.columns if c.startswith(OPTION_PREFIX)]:
        if any(g[col].dropna().astype(str).nunique() > 1 for _, g in trials.groupby("pair")):
            out.append(col)
    return out


def chosen_trials(results: Results, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chosen search trial per pair (columns: pair, trial_id, chosen_by)."""
    trials = search_trials(results) if trials is None else trials
    used: dict[str, str] = {}
    d = results.trials
    for _, r in d[(d["stage"] == "distill") & (d["method"] == "dfa")].iterrows():
        geno = decode_json(r["genotype"])
        if isinstance(geno, dict) and geno.get("trial_id"):
            used.setdefault(r["pair"], str(geno["trial_id"]))
    rows = []
    for pair, g in trials.groupby("pair", sort=True):
        if pair in used and used[pair] in set(g["trial_id"]):
            rows.append(dict(pair=pair, trial_id=used[pair], chosen_by="genotype used by the dfa distillation"))
            continue
        ok = g[(g["status"] != "errored") & g["last_val_acc"].notna()]
        if ok.empty:
            continue
        full = ok[ok["epochs_run"] >= ok["epochs_planned"]]
        pool = full if len(full) else ok
        best = pool.loc[pool["last_val_acc"].idxmax()]
        rows.append(dict(pair=pair, trial_id=best["trial_id"],
                         chosen_by="best final val_acc among completed trials" if len(full)
                         else "best val_acc so far (no trial finished yet)"))
    return pd.DataFrame(rows, columns=["pair", "trial_id", "chosen_by"])


def search_epochs(results: Results) -> pd.DataFrame:
    return results.stage("search", "epochs")


def common_epoch(trials: pd.DataFrame) -> int:
    """The deepest epoch every non-errored trial of these trials reached (0 if none)."""
    ok = trials[(trials["status"] != "errored") & (trials["epochs_run"] > 0)]
    return int(ok["epochs_run"].min()) if len(ok) else 0


def accuracy_at(epochs: pd.DataFrame, trial_ids, epoch: int) -> dict[str, float]:
    e = epochs[epochs["trial_id"].isin(set(trial_ids)) & (epochs["epoch"] == epoch)]
    return dict(zip(e["trial_id"], e["val_acc"]))


def _is_numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)


def option_effects(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per pair x searched option: how the option relates to the held-out accuracy.

    Columns: pair, option, kind (numeric | categorical), n, common_epoch, rho_common (Spearman of
    the option value with val_acc at the common epoch; numeric options), n_completed,
    rho_completed (the same with the final val_acc of the completed trials), best_value (the
    value of the trial best at the common epoch), best_completed_value.
    """
    cols = ["pair", "option", "kind", "n", "common_epoch", "rho_common", "n_completed", "rho_completed",
            "best_value", "best_completed_value"]
    rows = []
    for pair, g in trials.groupby("pair", sort=True):
        g = g[g["status"] != "errored"]
        e_star = common_epoch(g)
        acc = accuracy_at(epochs, g["trial_id"], e_star)
        g = g.assign(acc_common=g["trial_id"].map(acc).astype(float))
        done = g[g["status"] == "completed"]
        for option in searched_options(g):
            values = g[option]
            numeric = _is_numeric(values.dropna())
            ok = g.dropna(subset=["acc_common"])
            best = ok.loc[ok["acc_common"].idxmax(), option] if len(ok) else None
            best_done = done.loc[done["last_val_acc"].idxmax(), option] if done["last_val_acc"].notna().any() else None
            rows.append(dict(
                pair=pair, option=option[len(OPTION_PREFIX):], kind="numeric" if numeric else "categorical",
                n=int(len(ok)), common_epoch=e_star,
                rho_common=spearman(ok[option].astype(float), ok["acc_common"]) if numeric else float("nan"),
                n_completed=int(done["last_val_acc"].notna().sum()),
                rho_completed=spearman(done[option].astype(float), done["last_val_acc"]) if numeric else float("nan"),
                best_value=best, best_completed_value=best_done))
    return pd.DataFrame(rows, columns=cols)


def option_levels(trials: pd.DataFrame, epochs: pd.DataFrame, max_levels: int = MAX_LEVELS) -> pd.DataFrame:
    """Mean held-out accuracy per value of each searched option with few values, per pair
    (options whose values repeat across trials: a choice, or a non-numeric option).

    Columns: pair, option, value, n, mean_common (val_acc at the common epoch), n_completed,
    mean_completed (final val_acc of the completed trials).
    """
    cols = ["pair", "option", "value", "n", "mean_common", "n_completed", "mean_completed"]
    rows = []
    for pair, g in trials.groupby("pair", sort=True):
        g = g[g["status"] != "errored"]
        acc = accuracy_at(epochs, g["trial_id"], common_epoch(g))
        g = g.assign(acc_common=g["trial_id"].map(acc).astype(float))
        for option in searched_options(g):
            distinct = g[option].astype(str).nunique()
            # a continuous option (every trial its own value) has no levels worth averaging over
            if distinct > max_levels or (_is_numeric(g[option].dropna()) and distinct >= len(g)):
                continue
            for value, lv in g.groupby(g[option].astype(str), sort=True):
                done = lv[lv["status"] == "completed"]["last_val_acc"].dropna()
                rows.append(dict(pair=pair, option=option[len(OPTION_PREFIX):], value=value,
                                 n=int(lv["acc_common"].notna().sum()), mean_common=float(lv["acc_common"].mean()),
                                 n_completed=int(done.size),
                                 mean_completed=float(done.mean()) if done.size else float("nan")))
    return pd.DataFrame(rows, columns=cols)


# --- alpha ------------------------------------------------------------------------------------
def final_alphas(results: Results, chosen: pd.DataFrame) -> pd.DataFrame:
    """Alpha at the end of search of each pair's chosen trial, one row per candidate.

    From the trial's genotype (candidate names, student/teacher group); falls back to the
    alphas of its last epoch row (candidates then named by position). Columns: pair, trial_id,
    group, student_group, teacher_group, candidate, position, n_candidates, weight.
    """
    cols = ["pair", "trial_id", "group", "student_group", "teacher_group", "candidate", "position",
            "n_candidates", "weight"]
    rows = []
    t = results.trials
    e = results.epochs
    for _, c in chosen.iterrows():
        row = t[(t["stage"] == "search") & (t["trial_id"] == c["trial_id"])]
        geno = decode_json(row["genotype"].iloc[0]) if len(row) else None
        if isinstance(geno, dict) and isinstance(geno.get("groups"), list):
            for gi, group in enumerate(geno["groups"]):
                names, weights = group.get("candidates", []), group.get("weights", [])
                for j, (name, w) in enumerate(zip(names, weights)):
                    rows.append(dict(pair=c["pair"], trial_id=c["trial_id"], group=gi,
                                     student_group=group.get("student_group", gi),
                                     teacher_group=group.get("teacher_group", gi), candidate=str(name), position=j + 1,
                                     n_candidates=len(weights), weight=float(w)))
            continue
        ep = e[(e["stage"] == "search") & (e["trial_id"] == c["trial_id"]) & e["alphas"].notna()]
        if ep.empty:
            continue
        alphas = decode_json(ep.sort_values("epoch")["alphas"].iloc[-1]) or []
        for gi, weights in enumerate(alphas):
            for j, w in enumerate(weights):
                rows.append(dict(pair=c["pair"], trial_id=c["trial_id"], group=gi, student_group=gi, teacher_group=gi,
                                 candidate=f"block {j + 1}", position=j + 1, n_candidates=len(weights),
                                 weight=float(w)))
    return pd.DataFrame(rows, columns=cols)


def alpha_trajectories(results: Results, chosen: pd.DataFrame) -> pd.DataFrame:
    """Alpha after every search epoch of each pair's chosen trial (columns: pair, trial_id, epoch,
    group, position, n_candidates, weight)."""
    cols = ["pair", "trial_id", "epoch", "group", "position", "n_candidates", "weight"]
    e = results.epochs
    rows = []
    for _, c in chosen.iterrows():
        ep = e[(e["stage"] == "search") & (e["trial_id"] == c["trial_id"]) & e["alphas"].notna()]
        for _, r in ep.sort_values("epoch").iterrows():
            for gi, weights in enumerate(decode_json(r["alphas"]) or []):
                for j, w in enumerate(weights):
                    rows.append(dict(pair=c["pair"], trial_id=c["trial_id"], epoch=int(r["epoch"]), group=gi,
                                     position=j + 1, n_candidates=len(weights), weight=float(w)))
    return pd.DataFrame(rows, columns=cols)


def alpha_entropy(weights) -> float:
    """Normalised entropy of one group's alpha: 1 = uniform, 0 = one-hot."""
    w = np.asarray(list(weights), dtype=float)
    if w.size < 2:
        return float("nan")
    p = w[w > 0] / w.sum()
    return float(-(p * np.log(p)).sum() / math.log(w.size))


# --- ASHA -------------------------------------------------------------------------------------
def asha_savings(trials: pd.DataFrame, epochs: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Per pair: what early stopping saved, and whether it could have changed the winner.

    Columns: pair, trials, completed, pruned, errored, running, epochs_run, epochs_full
    (sum of planned epochs: every trial to the end), saved_epochs, saved_fraction, seconds_run,
    seconds_full_est (seconds_run + the skipped epochs at the pair's mean seconds per epoch),
    chosen_trial, common_epoch, best_at_common (trial best at the common epoch), same_best
    (chosen == best_at_common), pruned_contenders (pruned trials whose val_acc at their last
    epoch was >= the chosen trial's at that same epoch).
    """
    cols = ["pair", "trials", "completed", "pruned", "errored", "running", "epochs_run", "epochs_full", "saved_epochs",
            "saved_fraction", "seconds_run", "seconds_full_est", "chosen_trial", "common_epoch", "best_at_common",
            "same_best", "pruned_contenders"]
    chosen_of = dict(zip(chosen["pair"], chosen["trial_id"]))
    rows = []
    for pair, g in trials.groupby("pair", sort=True):
        status = g["status"].value_counts()
        ep = epochs[epochs["trial_id"].isin(set(g["trial_id"])) & (epochs["stage"] == "search")]
        run, full = int(g["epochs_run"].sum()), int(g["epochs_planned"].sum())
        seconds = float(ep["seconds"].sum()) if ep["seconds"].notna().any() else float("nan")
        per_epoch = seconds / len(ep) if len(ep) else float("nan")
        ok = g[g["status"] != "errored"]
        e_star = common_epoch(ok)
        acc = accuracy_at(ep, ok["trial_id"], e_star)
        best_common = max(acc, key=acc.get) if acc else None
        winner = chosen_of.get(pair)
        contenders = []
        if winner is not None:
            mine = ep[ep["trial_id"] == winner].set_index("epoch")["val_acc"]
            for _, p in g[g["status"] == "pruned"].iterrows():
                stop = int(p["epochs_run"])
                theirs = ep[(ep["trial_id"] == p["trial_id"]) & (ep["epoch"] == stop)]["val_acc"]
                if len(theirs) and stop in mine.index and float(theirs.iloc[0]) >= float(mine[stop]):
                    contenders.append(p["trial_id"])
        rows.append(dict(
            pair=pair, trials=len(g), completed=int(status.get("completed", 0)), pruned=int(status.get("pruned", 0)),
            errored=int(status.get("errored", 0)), running=int(status.get("running", 0)), epochs_run=run,
            epochs_full=full, saved_epochs=full - run, saved_fraction=(full - run) / full if full else float("nan"),
            seconds_run=seconds, seconds_full_est=seconds + (full - run) * per_epoch,
            chosen_trial=winner, common_epoch=e_star, best_at_common=best_common,
            same_best=bool(winner == best_common) if winner and best_common else None,
            pruned_contenders=",".join(contenders)))
    return pd.DataFrame(rows, columns=cols)


__all__ = [
    "accuracy_at",
    "alpha_entropy",
    "alpha_trajectories",
    "asha_savings",
    "chosen_trials",
    "common_epoch",
    "final_alphas",
    "option_effects",
    "option_levels",
    "search_epochs",
    "search_trials",
    "searched_options",
]
