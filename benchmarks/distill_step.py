"""Training images/s of the teacher step, the KD step and the DFA distillation step: the
dfa-ray engine against the classic loop, for resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2
at 32 px, batch 64 (the CRD protocol), 100 classes (synthetic data of CIFAR-100's shape).

Ours: the real engine, `TrainingRun.step()` built by `build_teacher_run` / `build_distill_run`
(device-resident uint8 data with batched crop/flip/normalise, no per-step host sync, the
teacher once per batch in eval/no-grad, the fast path as `FastPath()` resolves it on the
device); its `images_per_s` covers the training epoch, the epoch's draw and its one host sync.
Reference: the loop most KD code runs (CRD/RepDistiller style): torchvision DataLoader with
PIL RandomCrop/Flip/ToTensor/Normalize in 2 worker processes, fp32, NCHW, the teacher's
forward under `torch.no_grad()` in eval mode, `loss.item()` and the accuracy count every step.
The KD reference is written out (0.1 CE + 0.9 KL at T = 4); the DFA reference calls the same
`DFA.forward_train` as the engine (so the loss code is identical and only the loop differs).

Both sides run in this process with the same torch threads, alternating round by round (one
round = `--batches` batches per side; the first round of each side is a warm-up), and the
median of the rounds is reported: on a small shared machine one timing can be off by a lot
when another process takes a core. The DFA search step (first and second order) is measured
by `benchmarks/search_step.py` against this distillation step; `--search` adds it here too.

    python -m benchmarks.distill_step [--pairs resnet32x4->resnet8x4] [--steps kd dfa]
                                      [--batches 1] [--rounds 5] [--threads 1] [--device cpu]
                                      [--channels-last auto|on|off] [--bf16 auto|on|off] [--search]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import (REFERENCE_WORKERS, add_step_arguments, emit, machine, reference_loader,
                               resolve_step_arguments, sync)
from dfa_ray.data import Dataset, load_dataset
from dfa_ray.dfa.genotype import reference_genotype
from dfa_ray.dfa.pairing import pair_groups
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.methods import build_distiller
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.runtime import FastPath
from dfa_ray.engine.teacher import build_teacher_run, freeze
from dfa_ray.engine.training import TrainingRun
from dfa_ray.losses import kd_loss
from dfa_ray.models import create_model

PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2")]
STEPS = ("teacher", "kd", "dfa")
NUM_CLASSES = 100
# Issue 6: on the 2-core CPU the KD and DFA steps >= 1.5x the reference; on an H100/H200 the
# resnet32x4 -> resnet8x4 KD step >= 8x.
CPU_TARGETS = {"kd": 1.5, "dfa": 1.5}
GPU_TARGETS = {("resnet32x4->resnet8x4", "kd"): 8.0}


def target_for(pair: str, step: str, device: torch.device) -> float | None:
    if device.type == "cuda":
        return GPU_TARGETS.get((pair, step))
    return CPU_TARGETS.get(step)


def synthetic(n_train: int) -> Dataset:
    return load_dataset("synthetic", num_classes=NUM_CLASSES, n_train=n_train, n_test=8, image_size=32, channels=3)


# -- ours: the engine --------------------------------------------------------------------------
def engine_run(step: str, tname: str, sname: str, data: Dataset, batch_size: int, device: torch.device,
               fast: FastPath = FastPath()) -> TrainingRun:
    """A run whose every epoch is exactly the dataset's batches (no held-out split, no final test)."""
    recipe = get_recipe("crd", {"epochs": 100_000, "batch_size": batch_size, "holdout_fraction": 0.0})
    if step == "teacher":
        return build_teacher_run(tname, data, recipe, seed=0, device=device, fast=fast)
    teacher = freeze(create_model(tname, num_classes=NUM_CLASSES)).to(device)
    genotype = "average" if step == "dfa" else None  # every candidate weighted: the costliest aggregate
    return build_distill_run(teacher, tname, sname, data, recipe, step, seed=0, genotype=genotype, device=device,
                             fast=fast)


# -- reference: the classic loop ----------------------------------------------------------------
class ReferenceLoop:
    """`batches` steps of the classic loop per call; returns images/s of those steps."""

    def __init__(self, step: str, tname: str, sname: str, data: Dataset, batch_size: int, device: torch.device):
        torch.manual_seed(0)
        self.step, self.device, self.batch_size = step, device, batch_size
        if step == "teacher":
            self.teacher = None
            self.model = create_model(tname, num_classes=NUM_CLASSES).to(device)
            self.forward_train: Callable = self._plain
        elif step == "kd":
            self.teacher = freeze(create_model(tname, num_classes=NUM_CLASSES)).to(device)
            self.model = create_model(sname, num_classes=NUM_CLASSES).to(device)
            self.forward_train = self._kd
        else:
            self.teacher = freeze(create_model(tname, num_classes=NUM_CLASSES)).to(device)
            student = create_model(sname, num_classes=NUM_CLASSES)
            pairing = pair_groups(self.teacher, student, 32, tname, sname)
            genotype = reference_genotype("average", pairing, tname, sname, "synthetic")
            self.model = build_distiller("dfa", self.teacher, student, genotype=genotype).to(device)
            self.forward_train = self._dfa
        params = self.model.trainable_parameters() if step == "dfa" else self.model.parameters()
        self.optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.loader = reference_loader(data.train.images, data.train.labels, data.info.mean, data.info.std,
                                       batch_size, pin_memory=device.type == "cuda")
        self.iterator = iter(self.loader)
        self.losses: list[float] = []
        self.correct = 0

    def _plain(self, x, y):
        out = self.model(x)
        return out, F.cross_entropy(out, y)

    def _kd(self, x, y):
        with torch.no_grad():
            t_out = self.teacher(x)
        out = self.model(x)
        return out, 0.1 * F.cross_entropy(out, y) + 0.9 * kd_loss(out, t_out, 4.0)

    def _next(self):
        try:
            return next(self.iterator)
        except StopIteration:  # a new epoch, as the classic loop's `for epoch ...` does
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def __call__(self, batches: int, compute_only: bool = False) -> float:
        """Images/s of `batches` steps. `compute_only`: the same steps on one batch drawn
        before the clock starts, i.e. the reference with an infinitely fast data path: the
        most any loader could give at its layout and precision."""
        self.model.train()
        if self.teacher is not None:
            self.teacher.eval()
        fixed = self._next() if compute_only else None
        sync(self.device)
        start = time.perf_counter()
        for _ in range(batches):
            x, y = fixed if fixed is not None else self._next()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            out, loss = self.forward_train(x, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.losses.append(loss.item())  # the running-average meter of the classic loop
            self.correct += (out.argmax(1) == y).sum().item()
        sync(self.device)
        return batches * self.batch_size / (time.perf_counter() - start)

    def _dfa(self, x, y):
        out, losses = self.model.forward_train(x, y)
        return out, sum(losses.values())

    def close(self) -> None:
        del self.iterator  # stops the persistent workers
        self.loader = None


# -- one (pair, step) -----------------------------------------------------------------------------
def bench_step(step: str, tname: str, sname: str, args, device: torch.device) -> dict:
    ours_data = synthetic(args.batches * args.batch_size)
    ref_data = synthetic((args.rounds + 1) * args.batches * args.batch_size)
    run = engine_run(step, tname, sname, ours_data, args.batch_size, device, args.fast)
    ref = ReferenceLoop(step, tname, sname, ref_data, args.batch_size, device)
    try:
        ours_runs, ref_runs, compute_runs = alternate_rounds(lambda: run.step()["images_per_s"], ref, args.batches,
                                                             args.rounds)
    finally:
        ref.close()
    ours, reference = statistics.median(ours_runs), statistics.median(ref_runs)
    pair = f"{tname}->{sname}"
    target = target_for(pair, step, device)
    return {
        "pair": pair, "step": step, "batch_size": args.batch_size, "batches_per_round": args.batches,
        "engine_img_s": round(ours, 1), "reference_img_s": round(reference, 1), "ratio": round(ours / reference, 2),
        "target_ratio": target, "met": None if target is None else ours / reference >= target,
        "engine_runs": [round(v, 1) for v in ours_runs], "reference_runs": [round(v, 1) for v in ref_runs],
        **ceiling_figures(ours, reference, compute_runs), "fast_path": run.fast.to_dict(),
    }


def alternate_rounds(ours: Callable[[], float], ref: ReferenceLoop, batches: int,
                     rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Images/s of ours, of the reference loop and of the reference's compute alone, round by
    round, alternating who goes first so that a drift in load hits every side alike; round 0
    warms up (allocator, kernels, the reference's workers) and is not kept."""
    kept: dict[str, list[float]] = {"ours": [], "ref": [], "compute": []}
    for r in range(rounds + 1):
        sides = [("ours", ours), ("ref", lambda: ref(batches)), ("compute", lambda: ref(batches, compute_only=True))]
        if r % 2:
            sides.reverse()
        for side, fn in sides:
            value = fn()
            if r > 0:
                kept[side].append(value)
    return kept["ours"], kept["ref"], kept["compute"]


def ceiling_figures(ours: float, reference: float, compute_runs: list[float]) -> dict:
    """How much of the reference's step its data path takes, and so the most a faster loader
    alone could give (at the reference's layout and precision)."""
    compute = statistics.median(compute_runs)
    return {"reference_compute_img_s": round(compute, 1),
            "reference_data_share": round(max(0.0, 1.0 - reference / compute), 3),
            "loader_ceiling_ratio": round(compute / reference, 2),
            "engine_vs_reference_compute": round(ours / compute, 2)}


def bench_search(tname: str, sname: str, batch_size: int, device: torch.device) -> dict:
    """Ours only: the search step (first and second order, joint schedule) against the DFA
    distillation step, by `benchmarks.search_step.bench_pair`."""
    from benchmarks.search_step import bench_pair

    ns = argparse.Namespace(batch=batch_size, schedules=["joint"], repeats=2, warmup=1)
    r = bench_pair(tname, sname, ns, device)
    return {"pair": r["pair"], "distill_img_s": round(batch_size / r["distill_s"], 1),
            **{f"order{o}_img_s": round(batch_size / r[f"order{o}_joint_s"], 1) for o in (1, 2)},
            **{f"order{o}_cost_vs_distill": round(r[f"order{o}_joint_ratio"], 2) for o in (1, 2)}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=[f"{t}->{s}" for t, s in PAIRS])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    add_step_arguments(parser, rounds=5, cuda_batches=50, record=False,
                       threads_help="torch threads for both sides (default: 1 on the CPU, as a 1-CPU Ray trial runs "
                                    "and robust on a shared machine; 0: torch's default)")
    for switch in ("channels_last", "bf16"):
        parser.add_argument(f"--{switch.replace('_', '-')}", choices=("auto", "on", "off"), default="auto",
                            help=f"the engine's FastPath.{switch} (auto: what the device resolves it to)")
    parser.add_argument("--search", action="store_true", help="also time the DFA search step (ours only)")
    args = parser.parse_args(argv)
    device = resolve_step_arguments(args, cuda_batches=50)
    switch = {"auto": None, "on": True, "off": False}
    args.fast = FastPath(channels_last=switch[args.channels_last], bf16=switch[args.bf16])
    start = time.perf_counter()
    info = machine(device)
    print(f"machine: {info}")
    print(f"reference: DataLoader + PIL transforms, num_workers={REFERENCE_WORKERS}, fp32, NCHW, teacher in "
          f"no_grad, loss.item() per step; {args.rounds} rounds x {args.batches} batch(es) of {args.batch_size} "
          "per side, median")
    results, searches = [], []
    for pair in args.pairs:
        tname, sname = pair.split("->")
        for step in args.steps:
            r = bench_step(step, tname, sname, args, device)
            results.append(r)
            goal = "no target" if r["target_ratio"] is None else \
                f"target >= {r['target_ratio']}x: {'met' if r['met'] else 'NOT MET'}"
            what = f"teacher {tname}" if step == "teacher" else f"{step} {pair}"
            print(f"{what:<32} ours {r['engine_img_s']:8.1f} img/s | reference {r['reference_img_s']:8.1f} img/s | "
                  f"ratio {r['ratio']:5.2f}x ({goal})", flush=True)
            print(f"{'':<32} the reference's compute alone (no data path) {r['reference_compute_img_s']:8.1f} img/s: "
                  f"its data path is {100 * r['reference_data_share']:.1f} % of its step, so a loader alone could give "
                  f"at most {r['loader_ceiling_ratio']:.2f}x; ours / that ceiling {r['engine_vs_reference_compute']:.2f}x",
                  flush=True)
        if args.search:
            s = bench_search(tname, sname, args.batch_size, device)
            searches.append(s)
            print(f"search {pair}: order 1 {s['order1_img_s']:.1f} img/s ({s['order1_cost_vs_distill']:.2f}x the "
                  f"distil step), order 2 {s['order2_img_s']:.1f} img/s ({s['order2_cost_vs_distill']:.2f}x)", flush=True)
    report = {"benchmark": "distill_step", "machine": info, "device": str(device), "rounds": args.rounds,
              "batches_per_round": args.batches, "reference_workers": REFERENCE_WORKERS,
              "targets": {"cpu": CPU_TARGETS, "gpu": {f"{p} {s}": v for (p, s), v in GPU_TARGETS.items()}},
              "results": results, "search": searches, "wall_s": round(time.perf_counter() - start, 1)}
    emit(report, device)
    return report


if __name__ == "__main__":
    main()
