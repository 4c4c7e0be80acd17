"""Read a sweep's results folder into frames the analysis can use directly.

`load_results(path)` wraps `dfa_ray.results.load` (which also names the folder problem in one
`DfaRayError`) and adds what every analysis needs: the decoded config of each row, the
training protocol (the recipe name: `crd`, `overhaul`, `quick`), the study a distillation
trial belongs to, and the sweep's spec.json when it sits next to the results (it says what the
sweep *meant* to run, so the report can say what is missing).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dfa_ray.results import load, results_dir

# Display order of the distillation methods; anything else follows alphabetically.
METHOD_ORDER = ("vanilla", "kd", "fitnet", "at", "dfa:last", "dfa:average", "dfa:random", "dfa")
METHOD_LABELS = {
    "teacher": "Teacher",
    "vanilla": "Student (vanilla)",
    "kd": "KD",
    "fitnet": "FitNet",
    "at": "AT",
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


@dataclass
class Results:
    """The two tables of one sweep, decoded, with where they came from."""

    root: Path  # the results/ folder
    epochs: pd.DataFrame
    trials: pd.DataFrame
    spec: dict | None = None  # the sweep's spec.json, when present
    notes: list[str] = field(default_factory=list)  # problems met while reading (e.g. a bad spec.json)

    @property
    def sweep_dir(self) -> Path:
        return self.root.parent if self.root.name == "results" else self.root

    @property
    def sweep_name(self) -> str:
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
    return result


def config_value(cfg: Any, key: str) -> Any:
    """A dotted key of a decoded config (None when absent)."""
    return cfg.get(key) if isinstance(cfg, dict) else None


__all__ = [
    "METHOD_LABELS",
    "METHOD_ORDER",
    "METRIC_LABELS",
    "Results",
    "config_value",
    "decode_json",
    "load_results",
    "method_label",
    "method_sort_key",
    "sort_methods",
    "study_label",
]
