"""Read a sweep's results folder into frames the analysis can use directly.

`load_results(path)` wraps `dfa_ray.results.load` (which also names the folder problem in one
`DfaRayError`) and adds what every analysis needs: the decoded config of each row, the
training protocol (the recipe name: `crd`, `overhaul`, `quick`), the study a distillation
trial belongs to, and the sweep's spec.json when it sits next to the results (it says what the
sweep *meant* to run, so the report can say what is missing).

`load_many(paths)` reads several sweeps (a CRD-13 sweep, its ablations, a transfer study) into
one `Results`: rows are joined on (study = dataset x protocol, pair, method, seed); every row
keeps the sweep it came from in `source`. Where two sweeps have a finished trial for the same
(stage, study, pair, method, seed), the sweep named first wins and the others' rows are
dropped with a note (two numbers for one seed would count that seed twice). Trial ids that
two sweeps share are prefixed with the sweep's name so that each stays one trial.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from dfa_ray.errors import DfaRayError
from dfa_ray.results import load, results_dir

# Display order of the distillation methods (the CRD benchmark's order, then the later methods,
# then DFA's reference aggregations and DFA); a method not listed follows alphabetically, so a
# new method is shown without being added here.
METHOD_ORDER = ("vanilla", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd",
                "crd+kd", "ofd", "dkd", "reviewkd", "dfa:last", "dfa:average", "dfa:random", "dfa")
METHOD_LABELS = {
    "teacher": "Teacher",
    "vanilla": "Student (vanilla)",
    "kd": "KD",
    "fitnet": "FitNet",
    "at": "AT",
    "sp": "SP",
    "cc": "CC",
    "vid": "VID",
    "rkd": "RKD",
    "pkt": "PKT",
    "ab": "AB",
    "ft": "FT",
    "fsp": "FSP",
    "nst": "NST",
    "crd": "CRD",
    "crd+kd": "CRD+KD",
    "ofd": "OFD (Overhaul)",
    "dkd": "DKD",
    "reviewkd": "ReviewKD",
    "dfa": "DFA",
    "dfa:last": "DFA genotype: last",
    "dfa:average": "DFA genotype: average",
    "dfa:random": "DFA genotype: random",
}
METRIC_LABELS = {
    "test_acc_last": "test accuracy, last epoch",
    "test_acc_best": "test accuracy, best-validation epoch",
}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def sort_methods(methods) -> list[str]:
    return sorted(set(methods), key=method_sort_key)


def decode_json(text: Any) -> Any:
    """JSON text -> value; None/NaN/undecodable -> None."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def study_label(dataset: str, protocol: str | None) -> str:
    return f"{dataset} / {protocol or 'unknown protocol'}"


@dataclass(frozen=True)
class SweepSource:
    """One sweep that rows came from: its label in `source`, results folder and spec.json."""

    name: str
    root: Path
    spec: dict | None = None


def _sweep_dir(root: Path) -> Path:
    return root.parent if root.name == "results" else root


@dataclass
class Results:
    """The two tables of one sweep (or several, joined), decoded, with where they came from."""

    root: Path  # the results/ folder (of the first sweep when several)
    epochs: pd.DataFrame
    trials: pd.DataFrame
    spec: dict | None = None  # the sweep's spec.json, when present (one sweep only)
    notes: list[str] = field(default_factory=list)  # problems met while reading (e.g. a bad spec.json)
    sources: list[SweepSource] = field(default_factory=list)

    @property
    def sweep_dir(self) -> Path:
        return _sweep_dir(self.root)

    @property
    def sweep_name(self) -> str:
        if len(self.sources) > 1:
            return " + ".join(s.name for s in self.sources)
        for frame in (self.trials, self.epochs):
            if len(frame):
                return str(frame["sweep"].iloc[0])
        if self.spec and self.spec.get("name"):
            return str(self.spec["name"])
        return self.sweep_dir.name

    def stage(self, stage: str, table: str = "trials") -> pd.DataFrame:
        frame = self.trials if table == "trials" else self.epochs
        return frame[frame["stage"] == stage].reset_index(drop=True)


def _add_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Decoded config (`cfg`, a dict per row), `protocol` and `study` columns."""
    frame = frame.copy()
    configs = [decode_json(c) or {} for c in frame["config"]] if len(frame) else []
    frame["cfg"] = pd.Series(configs, index=frame.index, dtype=object)
    frame["protocol"] = pd.Series([c.get("recipe.name") for c in configs], index=frame.index, dtype=object)
    frame["study"] = pd.Series(
        [study_label(d, p) for d, p in zip(frame["dataset"], frame["protocol"])], index=frame.index, dtype=object
    )
    return frame


def load_results(path: str | os.PathLike[str]) -> Results:
    """Results of the sweep at `path` (`<storage>/<name>` or its `results/` folder).

    A folder that is not a results folder raises `dfa_ray.errors.DfaRayError` (from
    `dfa_ray.results.results_dir`); an empty one gives empty frames with every column.
    """
    root = results_dir(path)
    epochs, trials = load(root)
    result = Results(root=root, epochs=_add_derived(epochs), trials=_add_derived(trials))
    spec_path = result.sweep_dir / "spec.json"
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text())
            result.spec = spec if isinstance(spec, dict) else None
        except (OSError, ValueError) as exc:
            result.notes.append(f"{spec_path} could not be read ({exc}); the planned grid is unknown")
    name = result.sweep_name
    result.sources = [SweepSource(name, root, result.spec)]
    for frame in (result.trials, result.epochs):
        frame["source"] = pd.Series(name, index=frame.index, dtype=object)
    return result


# finished rows that must not be counted twice: one number per (stage, study, pair, method, seed)
_CELL = ["stage", "study", "pair", "method", "seed"]


def load_many(paths: Sequence[str | os.PathLike[str]]) -> Results:
    """The results of several sweeps as one `Results` (see the module docstring); one path is
    the same as `load_results`. A folder given twice raises DfaRayError."""
    if not paths:
        raise DfaRayError("no sweep folder given: name at least one <storage>/<name> folder")
    loaded = [load_results(p) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    roots = [r.root.resolve() for r in loaded]
    for i, root in enumerate(roots):
        if root in roots[:i]:
            raise DfaRayError(f"{paths[i]} is given twice (as {root}); name each sweep folder once")
    names: list[str] = []
    for r in loaded:  # two sweeps of the same name (other storages) get the folder as their label
        name = r.sweep_name if r.sweep_name not in names else f"{r.sweep_name} ({r.sweep_dir})"
        names.append(name)
        for frame in (r.trials, r.epochs):
            frame["source"] = pd.Series(name, index=frame.index, dtype=object)
    notes = [n for r in loaded for n in r.notes]
    seen_ids: set[str] = set()
    trials, epochs = [], []
    for r, name in zip(loaded, names):
        t, e = r.trials.copy(), r.epochs.copy()
        clash = set(t["trial_id"]) & seen_ids
        if clash:  # the same trial id in two sweeps: two different trials
            rename = {tid: f"{name}/{tid}" for tid in clash}
            t["trial_id"] = t["trial_id"].replace(rename)
            e["trial_id"] = e["trial_id"].replace(rename)
        seen_ids |= set(t["trial_id"])
        trials.append(t)
        epochs.append(e)
    trials_all = pd.concat(trials, ignore_index=True)
    done = trials_all["status"] == "completed"
    dup = done & trials_all[done].duplicated(_CELL, keep="first").reindex(trials_all.index, fill_value=False)
    for _, row in trials_all[dup].iterrows():
        first = trials_all[done & ~dup & (trials_all[_CELL] == row[_CELL]).all(axis=1)]["source"].iloc[0]
        notes.append(f"{row['study']}: {row['pair']} {row['method']} seed {row['seed']} ({row['stage']}) is in "
                     f"both {first} and {row['source']}; the report uses {first}'s (named first).")
    dropped = set(trials_all.loc[dup, "trial_id"])
    trials_all = trials_all[~dup].reset_index(drop=True)
    epochs_all = pd.concat(epochs, ignore_index=True)
    epochs_all = epochs_all[~epochs_all["trial_id"].isin(dropped)].reset_index(drop=True)
    sources = [SweepSource(name, r.root, r.spec) for r, name in zip(loaded, names)]
    return Results(root=loaded[0].root, epochs=epochs_all, trials=trials_all, spec=None, notes=notes,
                   sources=sources)


def provenance(trials: pd.DataFrame) -> pd.DataFrame:
    """Which sweep each number came from: per study x pair x method x source of the finished
    distillation trials, the seeds (columns: study, pair, method, source, seeds, n)."""
    d = trials[(trials["stage"] == "distill") & (trials["status"] == "completed")]
    rows = [dict(study=k[0], pair=k[1], method=k[2], source=k[3], seeds=",".join(map(str, sorted(g["seed"]))),
                 n=len(g)) for k, g in d.groupby(["study", "pair", "method", "source"], sort=True)]
    out = pd.DataFrame(rows, columns=["study", "pair", "method", "source", "seeds", "n"])
    if len(out):
        out["_m"] = out["method"].map(method_sort_key)
        out = out.sort_values(["study", "pair", "_m", "source"], kind="stable").drop(columns="_m")
    return out.reset_index(drop=True)


def config_value(cfg: Any, key: str) -> Any:
    """A dotted key of a decoded config (None when absent)."""
    return cfg.get(key) if isinstance(cfg, dict) else None


__all__ = [
    "METHOD_LABELS",
    "METHOD_ORDER",
    "METRIC_LABELS",
    "Results",
    "SweepSource",
    "config_value",
    "decode_json",
    "load_many",
    "load_results",
    "provenance",
    "method_label",
    "method_sort_key",
    "sort_methods",
    "study_label",
]
