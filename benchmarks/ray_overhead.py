"""Ray's overhead: one trial through Tune against the same epochs through the engine alone.

The trial is a teacher (resnet20 on synthetic 32 px data, 10 classes), sized so that its
epochs take about `--seconds` (60 s) on this machine: one epoch is timed first and the
training set is scaled to fit. Every side runs with one torch thread (a 1-CPU trial's
setting) and checkpoints every epoch. Measured, in this order:
- the engine alone as one runs it: a fresh Python process doing what `dfa-ray teacher` does
  (import torch and the engine, build the run, every epoch checkpointed into its folder, the
  finished teacher written at the end); its data generation is timed inside it and left out;
- the engine alone inside this already-warm process (`train_teacher`'s path), before and
  after the Tune runs (their mean, so a drift in machine load hits both alike);
- one trial through Tune, the sweep's own path: `dfa_ray.sweep.fit_experiment` with
  `TeacherTrainable` (dataset through `tune.with_parameters`, checkpoint every epoch, keep 2,
  the results and progress callbacks writing Parquet rows in the driver, the sweep's
  TuneConfig) on a local Ray started here with its own temp dir;
- two such trials, one after the other in one slot: the sweep reuses actors, so the second
  runs in the first one's process (the steady state of a sweep).
Figures: one trial against the fresh engine process (the target's figure: both sides start a
Python process that imports torch); one trial against the warm engine (adds the trial
process's start-up: Ray worker, torch, Ray Tune); each further trial of a slot, i.e. the
two-trial run minus the one-trial run minus one engine run, against the warm engine.
Starting Ray is a once-per-sweep cost and is printed separately, not counted per trial.

Ray must bind only 127.0.0.1: when this runs outside a loopback-only network namespace it
re-executes itself through `scripts/loopback-ns` (as `make bench` does for every benchmark).

    python -m benchmarks.ray_overhead [--seconds 60] [--epochs 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch  # noqa: F401  (torch before ray: see docs/design.md, import order)

from benchmarks.common import emit, machine
from dfa_ray.localray import private_ray

ROOT = Path(__file__).resolve().parent.parent
TARGET_PERCENT = 5.0
MODEL = "resnet20"


# -- Ray on loopback, started and stopped here -------------------------------------------------------
def ensure_loopback_namespace(module: str) -> None:
    """Re-execute `python -m module argv...` inside scripts/loopback-ns unless already there."""
    names = [name for _, name in socket.if_nameindex()]
    if names == ["lo"]:
        return
    if os.environ.get("DFA_RAY_IN_LOOPBACK_NS") == "1":
        raise RuntimeError(f"network interfaces {names} inside scripts/loopback-ns: cannot isolate Ray")
    script = ROOT / "scripts" / "loopback-ns"
    print(f"[{module}] re-running inside {script.relative_to(ROOT)} (Ray must bind 127.0.0.1 only)", flush=True)
    os.chdir(ROOT)
    os.execv(str(script), [str(script), sys.executable, "-m", module, *sys.argv[1:]])


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[float]:
    """A local Ray with its own temp dir, quiet; yields the seconds it took to start."""
    with private_ray("dfa-ray-bench-", num_cpus=num_cpus, log_level="ERROR", log_to_driver=False) as seconds:
        yield seconds


def sweep_spec(name: str, storage: Path, data_options: dict, recipe: dict, gpu: float = 0.0, **sections):
    """A validated one-pair spec for the benchmark's own Tune experiments."""
    from dfa_ray.spec import parse_spec

    spec = {"name": name, "storage": str(storage), "data": {"name": "synthetic", "options": data_options},
            "protocol": "quick", "recipe": recipe, "pairs": [{"teacher": MODEL, "student": "resnet8"}],
            "search": {"enabled": False}, "distill": {"methods": ["vanilla"]},
            "resources": {"cpu": 1, "gpu": gpu, "max_failures": 0}}
    spec.update(sections)
    return parse_spec(spec)


# -- the two sides -----------------------------------------------------------------------------------
def engine_alone(spec, data, out_dir: Path) -> tuple[float, float]:
    """(wall seconds, seconds inside the epochs) of `train_teacher`'s path: build the run,
    then every epoch checkpointed into `out_dir`, the finished teacher written at the end."""
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import CHECKPOINT_KIND, build_teacher_run, teacher_meta, train_in_folder

    recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
    device = "cuda" if spec.resources.gpu else "cpu"
    start = time.perf_counter()
    run = build_teacher_run(MODEL, data, recipe, spec.teachers.seed, device=device)
    train_in_folder(run, teacher_meta(MODEL, data, recipe, spec.teachers.seed), out_dir, CHECKPOINT_KIND)
    return time.perf_counter() - start, sum(h["seconds"] for h in run.history)


def through_tune(spec, data, trials: int = 1) -> tuple[float, float, dict]:
    """(wall seconds of Tuner.fit(), seconds inside the trials' epochs, last result) for
    `trials` teacher trials (seeds 0, 1, ...) run one at a time with the sweep's TuneConfig."""
    from ray import tune

    from dfa_ray.sweep import fit_experiment, grid_tune_config, teacher_jobs, with_data
    from dfa_ray.tune.configs import param_space as tune_param_space
    from dfa_ray.tune.trainables import TeacherTrainable

    _, jobs = teacher_jobs(spec, data)
    jobs = [jobs[0].model_copy(update={"seed": seed, "store_dir": f"{jobs[0].store_dir}-seed{seed}"})
            for seed in range(trials)]
    param_space = tune_param_space(jobs, tune.grid_search)
    lines: list[str] = []
    start = time.perf_counter()
    grid = fit_experiment(spec, f"teachers-{trials}", with_data(TeacherTrainable, data, spec), param_space,
                          grid_tune_config(spec), lines.append)
    wall = time.perf_counter() - start
    errors = [r.error for r in grid if r.error is not None]
    if errors or len(grid) != trials:
        raise RuntimeError(f"the Tune trials failed: {errors}")
    return wall, float(sum(r.metrics_dataframe["seconds"].sum() for r in grid)), grid[0].metrics or {}


def engine_fresh_process(options: dict, recipe: dict, out_dir: Path) -> tuple[float, float]:
    """(wall seconds, seconds inside the epochs) of the engine in a new Python process, as
    `dfa-ray teacher` runs it; the child's data generation is left out (Tune gets the data
    from the driver)."""
    child = {"options": options, "recipe": recipe, "out": str(out_dir)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.ray_overhead", "--engine-child", json.dumps(child)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the engine process failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return wall - report["data_s"], report["epochs_s"]


def engine_child(arguments: str) -> None:
    """The child of `engine_fresh_process`: prints {data_s, epochs_s} as its last line."""
    from dfa_ray.data import load_dataset

    child = json.loads(arguments)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = load_dataset("synthetic", **child["options"])
    data_s = time.perf_counter() - start
    spec = sweep_spec("fresh", Path(child["out"]) / "spec", child["options"], child["recipe"])
    _, epochs_s = engine_alone(spec, data, Path(child["out"]))
    print(json.dumps({"data_s": data_s, "epochs_s": epochs_s}))


def percent_of(extra: float, base: float) -> float:
    return round(100.0 * extra / base, 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="the trial's length to aim for")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the trial (Tune iterations)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine_child:
        engine_child(args.engine_child)
        return {}
    ensure_loopback_namespace("benchmarks.ray_overhead")
    from dfa_ray.data import load_dataset

    torch.set_num_threads(1)  # the trial's setting (cpu: 1)
    gpu = 1.0 if torch.cuda.is_available() else 0.0
    device = torch.device("cuda" if gpu else "cpu")
    info = machine(device)
    print(f"machine: {info}")
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dfa-ray-overhead-") as tmp:
        root = Path(tmp)
        recipe = {"epochs": args.epochs, "batch_size": args.batch_size}
        # size the training set so that the trial's epochs take about --seconds
        probe_n = 20 * args.batch_size
        options = {"num_classes": 10, "n_train": probe_n, "n_test": 256}
        probe = sweep_spec("probe", root / "probe", options, {**recipe, "epochs": 1}, gpu)
        per_image = engine_alone(probe, load_dataset("synthetic", **options), root / "probe-teacher")[0] / probe_n
        n_train = int(min(200_000, max(4 * args.batch_size, args.seconds / args.epochs / per_image)))
        options["n_train"] = n_train
        data = load_dataset("synthetic", **options)
        print(f"trial: {MODEL} teacher on synthetic 32 px x {n_train} images, {args.epochs} epochs, batch "
              f"{args.batch_size}, 1 torch thread, checkpoint every epoch; load average before "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        spec = sweep_spec("overhead", root / "tune", options, recipe, gpu,
                          resources={"cpu": 1, "gpu": gpu, "max_failures": 0, "max_concurrent": 1})
        fresh, fresh_epochs = engine_fresh_process(options, recipe, root / "engine-fresh")
        engine_runs = [engine_alone(spec, data, root / "engine-1")]
        with local_ray() as ray_start_s:
            one_wall, one_epochs, metrics = through_tune(spec, data, trials=1)
            two_wall, two_epochs, _ = through_tune(spec, data, trials=2)
        engine_runs.append(engine_alone(spec, data, root / "engine-2"))
    load_after = os.getloadavg()[0]
    engine = statistics.mean(w for w, _ in engine_runs)
    engine_epochs = statistics.mean(e for _, e in engine_runs)
    vs_fresh = one_wall - fresh          # the target's figure: both sides start a process
    vs_warm = one_wall - engine          # adds the trial process's start-up (Ray worker, torch, Tune)
    further = two_wall - one_wall - engine  # each further trial of a slot (a reused actor)
    # Ray's machinery alone: the time outside the epochs, Tune's minus the engine's own; the
    # epochs' compute cancels, and with it other processes' load on a shared machine
    machinery = (one_wall - one_epochs) - (fresh - fresh_epochs)
    figures = {"vs_fresh_percent": percent_of(vs_fresh, fresh), "vs_warm_percent": percent_of(vs_warm, engine),
               "further_trial_percent": percent_of(further, engine),
               "machinery_percent": percent_of(machinery, fresh)}
    met = figures["vs_fresh_percent"] <= TARGET_PERCENT and figures["further_trial_percent"] <= TARGET_PERCENT
    print(f"engine alone, fresh process (as `dfa-ray teacher`): {fresh:.1f} s (inside the epochs {fresh_epochs:.1f} s)")
    print(f"engine alone, warm process: {engine:.1f} s (runs {', '.join(f'{w:.1f}' for w, _ in engine_runs)} s; "
          f"inside the epochs {engine_epochs:.1f} s)")
    print(f"through Tune: one trial {one_wall:.1f} s (inside its epochs {one_epochs:.1f} s); two trials in one slot "
          f"{two_wall:.1f} s; starting Ray once per sweep: {ray_start_s:.1f} s (not counted)")
    verdict = "met" if met else "NOT MET"
    print(f"Ray overhead, one trial vs the fresh engine process: {vs_fresh:+.1f} s = {figures['vs_fresh_percent']} %; "
          f"each further trial of a slot (reused actor) vs the warm engine: {further:+.1f} s = "
          f"{figures['further_trial_percent']} % (target <= {TARGET_PERCENT} % of a 60-second trial: {verdict})")
    print(f"  one trial vs the warm engine (adds the new process's start-up): {vs_warm:+.1f} s = "
          f"{figures['vs_warm_percent']} %; Ray's machinery outside the epochs: {machinery:+.1f} s = "
          f"{figures['machinery_percent']} % (load average after {load_after:.2f})")
    report = {"benchmark": "ray_overhead", "machine": info, "model": MODEL, "epochs": args.epochs,
              "n_train": n_train, "engine_fresh_s": round(fresh, 2), "engine_s": round(engine, 2),
              "engine_runs_s": [round(w, 2) for w, _ in engine_runs], "engine_epochs_s": round(engine_epochs, 2),
              "tune_fit_s": round(one_wall, 2), "tune_epochs_s": round(one_epochs, 2),
              "tune_two_trials_s": round(two_wall, 2), "trial_steps_s": metrics.get("time_total_s"),
              "ray_start_s": round(ray_start_s, 2), "overhead_s": round(vs_fresh, 2),
              "overhead_warm_s": round(vs_warm, 2), "further_trial_s": round(further, 2),
              "machinery_s": round(machinery, 2), **figures, "overhead_percent": figures["vs_fresh_percent"],
              "target_percent": TARGET_PERCENT, "met": met, "load_average_after": round(load_after, 2),
              "wall_s": round(time.perf_counter() - wall_start, 1)}
    emit(report, device)
    return report


if __name__ == "__main__":
    main()
