"""Distil the genotype of *every* search trial of a finished sweep, not only the best one's,
to measure whether the selection of the best search trial picks the aggregation that distils
best (README, real-data study).

For each pair and each completed search trial, the trial's genotype is distilled with `dfa`
under the sweep's own distillation recipe (every field its rows record), data options,
teacher, seeds and `distill.options.dfa`, through `dfa-ray distill`, so the best trial's rows
reproduce the sweep's `dfa` rows (within float rounding: `dfa-ray distill` uses torch's
default thread count, a sweep trial its CPU count). Prints one line per run and a table: per search trial its search settings, held-out
accuracy at the end of the search, alpha, and the distilled test accuracy (last epoch) as
mean +- std over the seeds.

    python -m experiments.distill_search_trials SWEEP_DIR [--pairs resnet20->resnet8 ...]
                                                [--seeds 0 1 2] [--out DIR] [--recipe-from SWEEP]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from dfa_ray.cli import main as cli
from dfa_ray.results import load


def _recipe_flags(config: dict) -> list[str]:
    """--recipe / --epochs / --set for every recipe field a distill trial's config records
    (values as JSON, which the command line reads as YAML)."""
    flags = ["--recipe", config["recipe.name"], "--epochs", str(config["recipe.epochs"])]
    for key, value in sorted(config.items()):
        field = key.split(".", 1)[1] if key.startswith("recipe.") else None
        if field is not None and field not in ("name", "epochs"):
            flags += ["--set", f"{field}={json.dumps(value)}"]
    return flags


def _dfa_option_flags(sweep: Path) -> list[str]:
    """--opt for the spec's `distill.options.dfa` (not the rows' resolved options: those hold the
    chosen trial's lambda, and each genotype brings its own)."""
    spec_path = sweep / "spec.json"
    if not spec_path.exists():
        return []
    options = ((json.loads(spec_path.read_text()).get("distill") or {}).get("options") or {}).get("dfa") or {}
    return [flag for key, value in sorted(options.items()) for flag in ("--opt", f"{key}={json.dumps(value)}")]


def _data_flags(config: dict) -> list[str]:
    flags = ["--data", config["data_spec.name"]]
    if config.get("data_spec.root"):
        flags += ["--data-root", config["data_spec.root"]]
    for key, value in config.items():
        if key.startswith("data_spec.options."):
            flags += ["--data-opt", f"{key.split('.', 2)[2]}={value}"]
    return flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--pairs", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the sweep's distill seeds")
    parser.add_argument("--out", type=Path, default=None, help="default: SWEEP/search_trials_distilled")
    parser.add_argument("--recipe-from", type=Path, default=None,
                        help="a sweep whose dfa rows give the recipe, data, teacher and seeds (default: SWEEP)")
    args = parser.parse_args(argv)
    epochs, trials = load(args.sweep)
    out = args.out or args.sweep / "search_trials_distilled"
    search = trials[(trials.stage == "search") & (trials.status == "completed")]
    source_dir = args.recipe_from or args.sweep
    source = load(source_dir)[1]
    dfa_flags = _dfa_option_flags(source_dir)
    distill = source[(source.stage == "distill") & (source.method == "dfa")]
    table = []
    for pair, group in search.groupby("pair"):
        if args.pairs and pair not in args.pairs:
            continue
        reference = distill[distill.pair == pair]
        if reference.empty:
            print(f"{pair}: no dfa distillation in the sweep to take the recipe from; skipped", file=sys.stderr)
            continue
        config = json.loads(reference.config.iloc[0])
        seeds = args.seeds or sorted(int(s) for s in reference.seed)
        for _, trial in group.sort_values("trial_id").iterrows():
            genotype = json.loads(trial.genotype)
            folder = out / pair.replace("->", "-to-") / trial.trial_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "genotype.json").write_text(json.dumps(genotype, indent=2))
            accs = []
            for seed in seeds:
                run = folder / f"seed{seed}"
                done = (run / "metrics.json").exists() and json.loads((run / "metrics.json").read_text())["finished"]
                if not done:
                    code = cli(["distill", "--teacher", config["teacher_path"], "--student", config["student"],
                                "--method", "dfa", "--genotype", str(folder / "genotype.json"),
                                *dfa_flags, *_data_flags(config), *_recipe_flags(config), "--seed", str(seed),
                                "--quiet",
                                "--out", str(run)])
                    if code != 0:
                        return code
                metrics = json.loads((run / "metrics.json").read_text())
                accs.append(metrics["final"]["test_acc_last"])
                print(f"{pair} {trial.trial_id} seed {seed}: test {accs[-1]:.2f}", flush=True)
            last = epochs[(epochs.trial_id == trial.trial_id) & (epochs.stage == "search")].sort_values("epoch").iloc[-1]
            options = genotype["options"]
            table.append((pair, trial.trial_id, options["lam"], options["gamma_ts"], last.val_acc,
                          " | ".join(" ".join(f"{w:.2f}" for w in g["weights"]) for g in genotype["groups"]),
                          statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else float("nan")))
    print(f"\n{'pair':20} {'trial':12} {'lam':>5} {'gamma_ts':>8} {'search val':>10}  {'dfa test (last)':>15}  alpha")
    for pair, tid, lam, gts, val, alpha, mean, sd in table:
        print(f"{pair:20} {tid:12} {lam:5g} {gts:8.2f} {val:9.2f}%  {mean:7.2f} +- {sd:4.2f}  {alpha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
