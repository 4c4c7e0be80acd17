"""Results folders with known values for the analysis tests (written with ResultsWriter).

`write_known_sweep(sweep_dir)` writes a cifar100 / crd study of four pairs whose numbers are
chosen so that gains, standard deviations, win/tie/loss counts, ranks and Spearman
correlations can be worked out by hand (see the comments and tests/test_analysis.py), a
digits / quick pair (no published numbers), the search trials of one pair, and one errored
trial; `labelled_axes(fig)` checks a figure's axis labels. Importing this module imports
neither torch nor Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfa_ray.results import ResultsWriter

SWEEP = "known"
CRD_CONFIG = {"recipe.name": "crd", "recipe.epochs": 240, "recipe.batch_size": 64, "recipe.lr": 0.05,
              "recipe.weight_decay": 5e-4}
QUICK_CONFIG = {"recipe.name": "quick", "recipe.epochs": 12}

P1, P2, P3, P4 = ("wrn_40_2", "wrn_16_2"), ("resnet56", "resnet20"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8")
DIGITS = ("resnet20", "resnet8")

# test_acc_last per pair -> method -> seeds (seed 0, seed 1); test_acc_best = last - 1.0
#   P1: DFA beats both (gain +2.0 vs vanilla, +1.1 vs KD: pooled sigma 0.2828 / 0.2236)
#   P2: DFA - KD = -0.1 within sigma 0.1414: a tie; +1.5 vs vanilla
#   P3: DFA - KD = -0.6 beyond sigma 0.1414: a loss; +0.3 vs vanilla: a win
#   P4: one seed each; DFA == KD (tie, equal ranks 1.5); +2.8 vs vanilla
ACCURACY: dict[tuple[str, str], dict[str, list[float]]] = {
    P1: {"vanilla": [73.0, 73.4], "kd": [74.0, 74.2], "dfa": [75.0, 75.4]},
    P2: {"vanilla": [69.0, 69.2], "kd": [70.6, 70.8], "dfa": [70.5, 70.7]},
    P3: {"vanilla": [72.5, 72.7], "kd": [73.4, 73.6], "dfa": [72.8, 73.0]},
    P4: {"vanilla": [70.4], "kd": [73.2], "dfa": [73.2]},
}
TEACHER_ACC = {"wrn_40_2": 75.6, "resnet56": 72.3, "resnet32x4": 79.4, "vgg13": 74.6}
DIGITS_ACC = {"vanilla": [98.0], "kd": [98.5], "dfa": [99.0]}

# search of P1: (trial, status, val_acc per epoch, lam, gamma_ts); 4 epochs planned
SEARCH = [
    ("s0", "completed", [10.0, 20.0, 30.0, 40.0], 1.0, 0.5),
    ("s1", "completed", [15.0, 25.0, 35.0, 45.0], 3.0, 1.0),
    ("s2", "pruned", [20.0, 26.0], 1.0, 2.0),
    ("s3", "pruned", [5.0], 3.0, 4.0),
]
SEARCH_ALPHAS = {  # alphas of s1 after each epoch: group 1 has 2 candidates, group 2 has 3
    1: [[0.5, 0.5], [0.34, 0.33, 0.33]],
    2: [[0.55, 0.45], [0.3, 0.3, 0.4]],
    3: [[0.6, 0.4], [0.2, 0.3, 0.5]],
    4: [[0.7, 0.3], [0.1, 0.3, 0.6]],
}
ERROR_REASON = "NonFiniteLossError: non-finite loss at epoch 3 (train_loss=nan); lower the lr or w_feat"


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


def distill_trial(w: ResultsWriter, pair: tuple[str, str], method: str, seed: int, acc: float | None,
                  dataset: str = "cifar100", config: dict | None = None, status: str = "completed",
                  reason: str | None = None, epochs: int = 2, planned: int = 2, genotype: Any = None) -> None:
    tid = f"d-{pair[0]}-{pair[1]}-{method}-{seed}-{dataset}"  # one student may have two teachers
    ident = dict(stage="distill", trial_id=tid, pair=pair_name(pair), teacher=pair[0], student=pair[1],
                 dataset=dataset, method=method, seed=seed,
                 config={**(config or CRD_CONFIG), "method": method, "teacher": pair[0], "student": pair[1]})
    for e in range(1, epochs + 1):
        w.write_epoch({**ident, "epoch": e, "val_acc": 50.0 + e, "train_loss": 1.0 / e})
    w.write_trial({**ident, "status": status, "reason": reason, "epochs_run": epochs, "epochs_planned": planned,
                   "last_val_acc": 50.0 + epochs, "best_val_acc": 50.0 + epochs, "best_epoch": float(epochs),
                   "test_acc_last": acc, "test_acc_best": None if acc is None else acc - 1.0,
                   "genotype": genotype})


def teacher_trial(w: ResultsWriter, model: str, acc: float, dataset: str = "cifar100",
                  config: dict | None = None) -> None:
    ident = dict(stage="teacher", trial_id=f"t-{model}-{dataset}", pair=model, teacher=None, student=model,
                 dataset=dataset, method="teacher", seed=0, config={**(config or CRD_CONFIG), "model": model})
    w.write_epoch({**ident, "epoch": 1, "val_acc": acc})
    w.write_trial({**ident, "status": "completed", "epochs_run": 1, "epochs_planned": 1, "last_val_acc": acc,
                   "best_val_acc": acc, "best_epoch": 1.0, "test_acc_last": acc, "test_acc_best": acc - 1.0})


def search_trials(w: ResultsWriter, pair: tuple[str, str] = P1) -> None:
    for tid, status, accs, lam, gamma in SEARCH:
        ident = dict(stage="search", trial_id=tid, pair=pair_name(pair), teacher=pair[0], student=pair[1],
                     dataset="cifar100", method="search", seed=0,
                     config={"options.lam": lam, "options.gamma_ts": gamma, "options.batch_size": 64, "epochs": 4})
        for e, acc in enumerate(accs, start=1):
            alphas = SEARCH_ALPHAS[e] if tid == "s1" else [[0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]
            w.write_epoch({**ident, "epoch": e, "val_acc": acc, "alphas": alphas, "seconds": 2.0})
        genotype = None
        if tid == "s1":
            final = SEARCH_ALPHAS[4]
            genotype = {"kind": "search", "trial_id": "s1", "groups": [
                {"student_group": 0, "teacher_group": 0, "candidates": ["groups.0.0", "groups.0.1"],
                 "weights": final[0]},
                {"student_group": 1, "teacher_group": 1, "candidates": ["groups.1.0", "groups.1.1", "groups.1.2"],
                 "weights": final[1]}]}
        w.write_trial({**ident, "status": status, "epochs_run": len(accs), "epochs_planned": 4,
                       "reason": "stopped by the scheduler" if status == "pruned" else None,
                       "last_val_acc": accs[-1], "best_val_acc": max(accs),
                       "best_epoch": float(accs.index(max(accs)) + 1),
                       "genotype": genotype})


def write_known_sweep(sweep_dir: Path) -> Path:
    """The full known-values sweep; returns its folder."""
    w = ResultsWriter(sweep_dir, {"sweep": SWEEP})
    for pair, methods in ACCURACY.items():
        teacher_trial(w, pair[0], TEACHER_ACC[pair[0]])
        for method, values in methods.items():
            for seed, acc in enumerate(values):
                distill_trial(w, pair, method, seed, acc)
    teacher_trial(w, DIGITS[0], 97.0, dataset="digits", config=QUICK_CONFIG)
    for method, values in DIGITS_ACC.items():
        distill_trial(w, DIGITS, method, 0, values[0], dataset="digits", config=QUICK_CONFIG)
    search_trials(w)
    # an errored trial: counted nowhere, listed with its reason
    distill_trial(w, P1, "fitnet", 0, None, status="errored", reason=ERROR_REASON, epochs=3, planned=240)
    return Path(sweep_dir)


def write_spec(sweep_dir: Path, pairs: list[tuple[str, str]], methods: list[str], seeds: list[int],
               search: bool = True) -> None:
    spec = {"name": SWEEP, "pairs": [{"teacher": t, "student": s} for t, s in pairs],
            "distill": {"enabled": True, "methods": methods, "seeds": seeds},
            "search": {"enabled": search, "num_samples": 2}, "data": {"name": "cifar100"}}
    (Path(sweep_dir) / "spec.json").write_text(json.dumps(spec))


def labelled_axes(fig) -> list:
    """The Axes of a matplotlib Figure that show data (on, not a colour bar), each checked to have
    an x and a y label (a "no data" panel, without ticks, needs none); returns them."""
    axes = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    assert axes, "no axes drawn"
    for ax in axes:
        if ax.get_xticks().size or ax.get_yticks().size:
            assert ax.get_xlabel().strip(), f"no x label on {ax.get_title()!r}"
            assert ax.get_ylabel().strip(), f"no y label on {ax.get_title()!r}"
    return axes
