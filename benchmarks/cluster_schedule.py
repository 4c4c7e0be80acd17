"""How full the sweep keeps a cluster: the real sweep driver on a simulated cluster of N GPUs,
the dependency graph against the earlier barrier order, side by side in one run.

A local Ray declares N logical GPUs (and N CPUs); every trial asks for one GPU. The trials are
the test double of benchmarks/sleep_trainable.py, handed in through the sweep's own seam
(`run_sweep(trainables=...)`): each epoch sleeps for its seconds in the cost model that
`dfa-ray plan` uses (dfa_ray/cost_model.json), times one scale factor per cluster size chosen
so that the lower bound of the whole study is `--target-s` wall seconds. Everything else is
the real sweep: its graph (or, with `order="barriers"`, the old order: every teacher, then one
pair's search after another, then every distillation), Tune experiments, the SHA scheduler with
its rungs and pauses, checkpoints, the Parquet results.

The spec is experiments/cifar100_crd13.yaml (13 pairs, 8 search trials each, 16 methods x 3
seeds), with one GPU per trial rather than the spec's 0.25 (on 64 GPUs that would be 256
trial processes, more than this 2-core, 24 GB machine holds; the scheduling question is the
same with 64 slots), CIFAR-100's sizes for the costs, and a small synthetic stand-in for the
data the driver loads; the distillations run in shared-teacher groups of the size `dfa-ray
plan --gpus N` marks fastest for the cluster (`--group-size plan`, the default; `null` is one
group per pair, seed and node, the spec's own setting). By default the teachers are already in the store (`--teachers
store`: the usual case, a study's teachers are trained once and shared): trained inside the
sweep, ResNet50's 240 teacher epochs alone are most of the critical path, and no order can keep
64 GPUs busy behind it (`--teachers train` measures that case).

Figures per (order, N): the makespan (first trial start to last trial end), the mean GPU
utilisation (device-seconds spent in epochs / (N x makespan)), and the lower bound max(total
device-seconds / N, critical path) of the study's real dependency graph, from dfa_ray.plan.
Targets (issue 14): on 64 GPUs the graph keeps the GPUs >= 85 % busy with a makespan <= 1.15x
the lower bound.

    python -m benchmarks.cluster_schedule [--gpus 16 64] [--target-s 90] [--teachers store|train]
        [--group-size plan|null|K] [--orders graph barriers]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch  # noqa: F401  (torch before ray)
from ray import tune

from benchmarks.common import emit, machine

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "cifar100_crd13.yaml"
TARGET_UTILISATION = 0.85
TARGET_RATIO = 1.15
SYNTHETIC = {"num_classes": 100, "image_size": 32, "channels": 3, "n_train": 200, "n_test": 100}


class Timeline(tune.Callback):
    """A driver-side Tune callback: when each trial started and ended, and the seconds its
    epochs slept (the device time it used)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.busy = 0.0
        self.node_spans: dict[str, list[float]] = {}  # node -> [first trial start, last trial end]

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment; a lock does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def on_trial_start(self, iteration, trials, trial, **info):
        now = time.time()
        with self.lock:
            self.starts.append(now)
            span = self.node_spans.setdefault(_node(trial), [now, now])
            span[0] = min(span[0], now)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        with self.lock:
            self.busy += float(result.get("seconds") or 0.0)

    def on_trial_complete(self, iteration, trials, trial, **info):
        now = time.time()
        with self.lock:
            self.ends.append(now)
            span = self.node_spans.setdefault(_node(trial), [now, now])
            span[1] = max(span[1], now)

    on_trial_error = on_trial_complete


def _node(trial: Any) -> str:
    from benchmarks.sleep_trainable import node_of
    from dfa_ray.tune.configs import flat_config

    return node_of(flat_config(trial.config))


def critical_chain(plan: Any, schedule: Any, spans: dict[str, list[float]], t0: float, scale: float) -> list[dict]:
    """The chain of nodes that ended last, from its first node: when each started and ended in
    the run and in the plan's list `schedule` (seconds from the first trial start), i.e. where
    the run fell behind its plan."""
    nodes = {n.id: n for n in plan.nodes}
    planned_start: dict[str, float] = {}
    for t in schedule.trials:
        planned_start[t.node] = min(planned_start.get(t.node, t.start), t.start)
    ran = [n for n in spans if n in nodes]
    if not ran:
        return []
    chain = [max(ran, key=lambda n: spans[n][1])]
    while True:  # back through the dependency that ended last
        deps = [d for d in nodes[chain[-1]].depends_on if d in spans]
        if not deps:
            break
        chain.append(max(deps, key=lambda d: spans[d][1]))
    return [{"node": n, "start_s": round(spans[n][0] - t0, 1), "end_s": round(spans[n][1] - t0, 1),
             "planned_start_s": round(planned_start.get(n, 0.0) * scale, 1),
             "planned_end_s": round(schedule.node_end.get(n, 0.0) * scale, 1)} for n in reversed(chain)]


def study_spec(gpus: int, storage: Path, order: str, group_size: str, teachers: str) -> Any:
    """The CRD-13 spec as the benchmark runs it; `group_size` "plan" takes the size `dfa-ray
    plan --gpus N` marks fastest for this cluster, "null" one group per (pair, seed)."""
    from dfa_ray.cost_model import CostModel
    from dfa_ray.plan import group_size_advice
    from dfa_ray.spec import load_spec

    overrides = {"name": f"crd13-{order}-{gpus}", "resources.gpu": 1.0, "resources.cpu": 1.0,
                 "resources.max_failures": 0}
    spec = load_spec(SPEC, storage=str(storage), overrides=overrides)
    if group_size == "plan":
        advice = group_size_advice(spec, CostModel.load(), gpus, teachers_ready=teachers == "store")
        size = advice.best if advice is not None else None
    else:
        size = None if group_size == "null" else int(group_size)
    return load_spec(SPEC, storage=str(storage), overrides={**overrides, "distill.group_size": size})


def costs_and_bound(spec: Any, gpus: int, teachers: str,
                    target_s: float) -> tuple[dict, dict, Any, Any, float, Any]:
    """(seconds per epoch of every node and seconds of every distillation trial at the chosen
    scale, the plan, the lower bound, the scale, the plan's list schedule in unscaled
    seconds); teachers in the store cost nothing."""
    from dfa_ray.cost_model import CostModel
    from dfa_ray.plan import build_plan, lower_bound, simulate

    plan = build_plan(spec, CostModel.load(), gpus, advise=False, teachers_ready=teachers == "store")
    nodes = []
    per_epoch: dict[str, float] = {}
    per_trial: dict[str, float] = {}
    for n in plan.nodes:
        # seconds per epoch of one of the node's trials (a group trial: the whole group's epoch)
        epochs = sum(n.epochs_per_trial)
        per_epoch[n.id] = sum(n.trial_seconds or ()) / epochs if epochs else 0.0
        if n.stage.startswith("distill"):
            # each trial's own seconds, in the plan's order: per seed, the groups of the methods
            groups = spec.distill.groups_of(n.methods)
            for group, seconds in zip(groups * len(n.seeds), n.trial_seconds or ()):
                per_trial[f"{n.id}|{','.join(group)}"] = seconds
        nodes.append(n.sim_node())
    bound = lower_bound(nodes, gpus)
    scale = target_s / bound.value
    return ({k: v * scale for k, v in per_epoch.items()}, {k: v * scale for k, v in per_trial.items()}, plan, bound,
            scale, simulate(nodes, gpus))


def store_teachers(spec: Any, data: Any) -> None:
    """Put every teacher of the spec into its store (a checkpoint the finished check accepts)."""
    from benchmarks.sleep_trainable import teacher_state
    from dfa_ray.engine.checkpoint import save_checkpoint
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.teacher_store import TeacherStore

    recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
    store = TeacherStore(spec.teacher_store)
    for model in spec.teacher_names:
        folder = store.folder_for(model, data, recipe, spec.teachers.seed)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / "checkpoint.pt", teacher_state({
            "model": model, "dataset": data.info.name, "recipe": recipe.model_dump(mode="json"),
            "seed": spec.teachers.seed}))


def run_order(order: str, gpus: int, storage: Path, args: argparse.Namespace) -> dict:
    from benchmarks.sleep_trainable import COSTS_ENV, SleepTrainable  # noqa: F811
    from dfa_ray.data import load_dataset
    from dfa_ray.sweep import Trainables, run_sweep

    spec = study_spec(gpus, storage, order, args.group_size, args.teachers)
    epoch_s, trial_s, plan, bound, scale, schedule = costs_and_bound(spec, gpus, args.teachers, args.target_s)
    planned_s = schedule.makespan * scale
    bound_s = bound.value * scale
    # the workers read the file named in their environment (set before Ray started) at setup
    Path(os.environ[COSTS_ENV]).write_text(json.dumps({"chunk": args.chunk, "epoch_seconds": epoch_s,
                                                       "trial_seconds": trial_s}))
    run = spec.model_copy(update={"data": spec.data.model_copy(update={"name": "synthetic", "options": SYNTHETIC})})
    if args.teachers == "store":
        store_teachers(run, load_dataset("synthetic", **SYNTHETIC))
    timeline = Timeline()
    double = Trainables(SleepTrainable, SleepTrainable, SleepTrainable, SleepTrainable)
    start = time.time()
    stop = threading.Event()

    def progress() -> None:  # a line every 30 s: this runs for minutes
        while not stop.wait(30):
            print(f"    {order} {gpus} GPUs: {len(timeline.ends)} trials done after {time.time() - start:.0f} s",
                  flush=True)

    threading.Thread(target=progress, daemon=True).start()
    try:
        # the sweep's own lines are left out (hundreds), but not a node's failure and its traceback
        outcome = run_sweep(run, log=lambda line: print(line, flush=True) if line.startswith("[graph]") else None,
                            callbacks=[timeline], trainables=double, order=order)
    finally:
        stop.set()
    wall = time.time() - start
    if outcome.failed or outcome.skipped:
        raise RuntimeError(f"{order} on {gpus} GPUs: failed {outcome.failed}, skipped {outcome.skipped}")
    makespan = max(timeline.ends) - min(timeline.starts)
    t0 = min(timeline.starts)
    # when the last of the first N trials started: how long it took to fill the cluster once
    filled = sorted(timeline.starts)[min(gpus, len(timeline.starts)) - 1] - t0
    chain = critical_chain(plan, schedule, timeline.node_spans, t0, scale) if order == "graph" else []
    utilisation = timeline.busy / (gpus * makespan)
    row = {"order": order, "gpus": gpus, "group_size": spec.distill.group_size, "trials": len(timeline.ends), "makespan_s": round(makespan, 1),
           "lower_bound_s": round(bound_s, 1), "device_bound_s": round(bound.device_bound * scale, 1),
           "critical_path_s": round(bound.critical_path * scale, 1), "ratio": round(makespan / bound_s, 3),
           "best_utilisation": round(bound.device_bound / bound.value, 3),
           "utilisation": round(utilisation, 3), "planned_s": round(planned_s, 1), "wall_s": round(wall, 1),
           "first_fill_s": round(filled, 1), "critical_chain": chain}
    print(f"  {order:8s} {gpus:3d} GPUs, group_size {spec.distill.group_size}: makespan {makespan:7.1f} s, lower bound {bound_s:6.1f} s "
          f"({makespan / bound_s:.2f}x; device-time / N {row['device_bound_s']} s, critical path "
          f"{row['critical_path_s']} s), GPUs busy {100 * utilisation:5.1f} % (at most "
          f"{100 * row['best_utilisation']:.0f} % at the bound), {row['trials']} trials "
          f"(list-scheduling plan: {planned_s:.1f} s); the first {gpus} trials had started after {filled:.1f} s",
          flush=True)
    for step in chain:
        print(f"    {step['node']:40s} ran {step['start_s']:7.1f} - {step['end_s']:7.1f} s, planned "
              f"{step['planned_start_s']:7.1f} - {step['planned_end_s']:7.1f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[16, 64], help="simulated cluster sizes")
    parser.add_argument("--target-s", type=float, default=90.0,
                        help="wall seconds the study's lower bound is scaled to, per cluster size")
    parser.add_argument("--teachers", choices=("store", "train"), default="store",
                        help="teachers already in the store (default) or trained inside the sweep")
    parser.add_argument("--chunk", type=int, default=40, help="epochs per reported result of teachers and "
                        "distillations (searches report every epoch)")
    parser.add_argument("--group-size", default="plan",
                        help="distill.group_size: 'plan' (default: the size `dfa-ray plan --gpus N` marks fastest "
                             "for each cluster size), 'null' (one group per pair and seed) or a number")
    parser.add_argument("--orders", nargs="+", choices=("graph", "barriers"), default=["graph", "barriers"])
    args = parser.parse_args(argv)
    from benchmarks.ray_overhead import ensure_loopback_namespace

    ensure_loopback_namespace("benchmarks.cluster_schedule")
    from benchmarks.sleep_trainable import COSTS_ENV
    from dfa_ray.localray import private_ray

    # the workers import benchmarks.sleep_trainable by name: they must find this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    info = machine(torch.device("cpu"))
    print(f"machine: {info}")
    print(f"spec {SPEC.relative_to(ROOT)}, 1 GPU per trial, teachers: {args.teachers}, lower bound scaled to "
          f"{args.target_s:g} s", flush=True)
    rows = []
    start = time.perf_counter()
    costs_dir = Path(tempfile.mkdtemp(prefix="dfa-ray-cluster-costs-"))
    os.environ[COSTS_ENV] = str(costs_dir / "costs.json")
    for gpus in args.gpus:
        with private_ray("dfa-ray-cluster-", num_cpus=gpus, num_gpus=gpus, log_level="ERROR", log_to_driver=False):
            for order in args.orders:
                with tempfile.TemporaryDirectory(prefix="dfa-ray-cluster-") as tmp:
                    rows.append(run_order(order, gpus, Path(tmp), args))
    graph_64 = [r for r in rows if r["order"] == "graph" and r["gpus"] == max(args.gpus)]
    met = None
    if graph_64 and max(args.gpus) >= 64:
        r = graph_64[0]
        met = r["utilisation"] >= TARGET_UTILISATION and r["ratio"] <= TARGET_RATIO
        print(f"target on {r['gpus']} GPUs (graph): >= {100 * TARGET_UTILISATION:.0f} % busy and <= "
              f"{TARGET_RATIO}x the lower bound: {'met' if met else 'NOT MET'}")
    report = {"benchmark": "cluster_schedule", "machine": info, "spec": str(SPEC.relative_to(ROOT)),
              "teachers": args.teachers, "target_s": args.target_s, "chunk": args.chunk, "results": rows,
              "targets": {"utilisation": TARGET_UTILISATION, "ratio": TARGET_RATIO}, "met": met,
              "wall_s": round(time.perf_counter() - start, 1)}
    emit(report, torch.device("cpu"))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
