"""ASHA's saving on a DFA search sweep: epochs run and the best held-out accuracy found,
against the same trials all run to the end (FIFO).

One pair (resnet14 -> resnet8) on digits, a random search (the usual companion of ASHA) over
the weight learning rate and the feature-loss weight lambda (log-uniform in `--lr-range` and
`--lam-range`), `--trials` trials of `--epochs` search epochs each. Both experiments draw their
trials with the same searcher seed, so they run exactly the same settings in the same order,
and every trial is seeded, so a trial reaches the same accuracy at the same epoch in both; the
only difference is the scheduler (checked: every ASHA trial's accuracies are the first epochs
of the same setting's FIFO run). ASHA runs with a grace period of 2 epochs and a reduction
factor of 4, so its rungs are at 2 and 8 epochs of 18. Why these, measured on this machine
(`make bench` history, README): after 1 epoch a search's held-out accuracy is anti-correlated
with its final one (low learning rates lead early), so grace 1 pruned the best settings (12
trials x 9 epochs, reduction 3: 26 % of the epochs, 0.55 points behind); and Tune's
asynchronous ASHA promotes the first trials to reach a rung on few comparisons, so with 12-24
trials a reduction factor of 3 ran 43-50 % of the epochs. Both go through the sweep's own code
(`search_tune_config`, `fit_experiment`, `SearchTrainable`) on a local Ray started here (its
own temp dir, 1 CPU per trial). The teacher is trained once, without Ray, into the shared
teacher store.

Figures: epochs run by each (sum over trials of the epochs each trial ran), ASHA's share of
FIFO's; the best held-out accuracy (the search's `val_acc` on the architecture split at the
last epoch, among trials that ran every epoch: what the sweep uses to pick the genotype) and
the setting that reached it. Targets (issue 6): ASHA runs <= 40 % of the epochs and finds the
same setting or one within 0.5 points.

    python -m benchmarks.asha_saving [--trials 24] [--epochs 18] [--grace 2] [--reduction 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch  # noqa: F401  (torch before ray)

from benchmarks.common import emit, machine
from benchmarks.ray_overhead import ensure_loopback_namespace, local_ray

TARGET_EPOCH_SHARE = 0.40
TARGET_POINTS = 0.5
TEACHER, STUDENT = "resnet14", "resnet8"


def spec_for(name: str, storage: Path, args, scheduler: str):
    from dfa_ray.spec import parse_spec

    return parse_spec({
        "name": name, "storage": str(storage), "data": {"name": "digits"}, "protocol": "quick",
        "recipe": {"epochs": args.teacher_epochs, "batch_size": 64},
        "pairs": [{"teacher": TEACHER, "student": STUDENT}],
        "search": {"epochs": args.epochs,
                   "space": {"lr": {"loguniform": args.lr_range}, "lam": {"loguniform": args.lam_range}},
                   "options": {"batch_size": args.batch_size}, "num_samples": args.trials, "seed": args.seed,
                   "searcher": "random",
                   "scheduler": {"type": scheduler, "grace_period": args.grace, "reduction_factor": args.reduction}},
        "distill": {"enabled": False},
        "resources": {"cpu": 1, "gpu": 0, "max_failures": 0},
    })


def train_teacher_once(spec, data) -> Path:
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import train_teacher
    from dfa_ray.sweep import teacher_jobs

    folders, jobs = teacher_jobs(spec, data)
    for job in jobs:
        train_teacher(job.model, data, get_recipe(spec.protocol, spec.teacher_recipe_overrides()), job.seed,
                      job.store_dir, device="cpu")
    return folders[TEACHER]


def run_search(spec, data, teacher_dir: Path) -> tuple[list[dict], float]:
    """One search experiment as `dfa_ray.sweep.run_search` builds it; one summary per trial."""
    from dfa_ray.sweep import fit_experiment, search_config, search_tune_config, with_data
    from dfa_ray.tune.trainables import SearchTrainable

    pair = spec.pairs[0]
    param_space = search_config(spec, pair, teacher_dir)
    lines: list[str] = []
    start = time.perf_counter()
    grid = fit_experiment(spec, f"search-{pair.dir_name}", with_data(SearchTrainable, data, spec), param_space,
                          search_tune_config(spec), lines.append)
    wall = time.perf_counter() - start
    trials = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"search trial failed: {result.error}")
        history = result.metrics_dataframe
        options = result.config["options"]
        trials.append({"lr": options["lr"], "lam": options["lam"], "epochs": int(result.metrics["training_iteration"]),
                       "val_acc": float(result.metrics["val_acc"]),
                       "val_acc_by_epoch": [round(float(v), 2) for v in history["val_acc"]]})
    return trials, wall


def check_same_trajectories(asha: list[dict], fifo: list[dict]) -> None:
    """The comparison holds only if a setting learns the same under both schedulers (seeded
    trials): every ASHA trial's accuracies must be the start of its FIFO twin's."""
    fifo_by_setting = {(t["lr"], t["lam"]): t["val_acc_by_epoch"] for t in fifo}
    for t in asha:
        twin = fifo_by_setting[(t["lr"], t["lam"])]
        if t["val_acc_by_epoch"] != twin[: len(t["val_acc_by_epoch"])]:
            raise RuntimeError(f"setting lr {t['lr']:.4g}, lam {t['lam']:.4g} learned differently under ASHA "
                               f"({t['val_acc_by_epoch']}) and FIFO ({twin}): trials are not reproducible")


def best(trials: list[dict], epochs: int) -> dict:
    full = [t for t in trials if t["epochs"] >= epochs] or trials
    return max(full, key=lambda t: t["val_acc"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="settings drawn by the random searcher")
    parser.add_argument("--epochs", type=int, default=18, help="search epochs per trial (ASHA's max_t)")
    parser.add_argument("--grace", type=int, default=2, help="ASHA grace period (epochs)")
    parser.add_argument("--reduction", type=float, default=4.0, help="ASHA reduction factor")
    parser.add_argument("--lr-range", type=float, nargs=2, default=[0.005, 0.2])
    parser.add_argument("--lam-range", type=float, nargs=2, default=[0.1, 100.0])
    parser.add_argument("--seed", type=int, default=0, help="the random searcher's seed (same for both)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="search batch size (digits' weight split is ~720 images: 32 gives ~22 steps an epoch)")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    args = parser.parse_args(argv)
    ensure_loopback_namespace("benchmarks.asha_saving")
    from dfa_ray.data import load_dataset

    device = torch.device("cpu")
    info = machine(device)
    print(f"machine: {info}")
    n_trials = args.trials
    print(f"search sweep: {TEACHER} -> {STUDENT} on digits, {n_trials} random trials (seed {args.seed}) over lr "
          f"{args.lr_range} x lam {args.lam_range} (log-uniform), {args.epochs} epochs, batch {args.batch_size}; "
          f"ASHA grace {args.grace}, reduction {args.reduction:g}; 1 CPU per trial, 2 at a time")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dfa-ray-asha-") as tmp:
        storage = Path(tmp)
        asha_spec, fifo_spec = spec_for("asha", storage, args, "asha"), spec_for("fifo", storage, args, "fifo")
        data = load_dataset("digits")
        teacher_dir = train_teacher_once(asha_spec, data)
        with local_ray():
            asha, asha_wall = run_search(asha_spec, data, teacher_dir)
            fifo, fifo_wall = run_search(fifo_spec, data, teacher_dir)
    if sorted((t["lr"], t["lam"]) for t in asha) != sorted((t["lr"], t["lam"]) for t in fifo):
        raise RuntimeError("ASHA and FIFO drew different settings; the comparison needs the same trials")
    check_same_trajectories(asha, fifo)
    asha_epochs, fifo_epochs = sum(t["epochs"] for t in asha), sum(t["epochs"] for t in fifo)
    share = asha_epochs / fifo_epochs
    asha_best, fifo_best = best(asha, args.epochs), best(fifo, args.epochs)
    same = (asha_best["lr"], asha_best["lam"]) == (fifo_best["lr"], fifo_best["lam"])
    gap = fifo_best["val_acc"] - asha_best["val_acc"]
    epochs_met, best_met = share <= TARGET_EPOCH_SHARE, same or gap <= TARGET_POINTS

    def setting(t: dict) -> str:
        return f"lr {t['lr']:.4g}, lam {t['lam']:.4g}: val_acc {t['val_acc']:.2f} %"

    print(f"epochs run: ASHA {asha_epochs} | FIFO (every trial to the end) {fifo_epochs} | ASHA/FIFO {100 * share:.1f} % "
          f"(target <= {100 * TARGET_EPOCH_SHARE:.0f} %: {'met' if epochs_met else 'NOT MET'})")
    print(f"wall time: ASHA {asha_wall:.0f} s | FIFO {fifo_wall:.0f} s | ratio {asha_wall / fifo_wall:.2f}")
    print(f"best found: ASHA {setting(asha_best)} | FIFO {setting(fifo_best)} | "
          f"{'same setting' if same else f'{gap:+.2f} points behind'} (target: same or within {TARGET_POINTS} points: "
          f"{'met' if best_met else 'NOT MET'})")
    print("per trial (lr, lam): epochs ASHA/FIFO, final val_acc ASHA/FIFO")
    fifo_by_setting = {(t["lr"], t["lam"]): t for t in fifo}
    for a in sorted(asha, key=lambda t: (t["lr"], t["lam"])):
        f = fifo_by_setting[(a["lr"], a["lam"])]
        print(f"  ({a['lr']:.4g}, {a['lam']:.4g}): {a['epochs']}/{f['epochs']}, {a['val_acc']:.2f}/{f['val_acc']:.2f}")
    report = {"benchmark": "asha_saving", "machine": info, "trials": n_trials, "epochs_per_trial": args.epochs,
              "grace": args.grace, "reduction": args.reduction, "asha_epochs": asha_epochs, "fifo_epochs": fifo_epochs,
              "epoch_share": round(share, 3), "asha_wall_s": round(asha_wall, 1), "fifo_wall_s": round(fifo_wall, 1),
              "asha_best": {k: asha_best[k] for k in ("lr", "lam", "val_acc")},
              "fifo_best": {k: fifo_best[k] for k in ("lr", "lam", "val_acc")}, "same_setting": same,
              "points_behind": round(gap, 2), "targets": {"epoch_share": TARGET_EPOCH_SHARE, "points": TARGET_POINTS},
              "met": {"epochs": epochs_met, "best": best_met}, "asha_trials": asha, "fifo_trials": fifo,
              "wall_s": round(time.perf_counter() - start, 1)}
    emit(report, device)
    return report


if __name__ == "__main__":
    main()
