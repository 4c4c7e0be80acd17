"""What each distillation baseline costs: the training images/s of its distil step, and that
step's cost relative to KD's on the same pair (KD's images/s / the method's), measured with the
real engine (`TrainingRun.step()` built by `build_distill_run`) on synthetic data of
CIFAR-100's shape, batch 64 (the CRD protocol), resnet32x4 -> resnet8x4 by default.

Methods with an init stage (AB, FT, FSP) get two lines: their main-phase step (AB's and FSP's is
cross-entropy alone, as the CRD code trains after the init stage) and their init-stage step.
CRD's step depends on its negatives (`--nce-k`, 16384 by default, the paper's), not on the size
of the training split.

Every run takes one step per round, round-robin, so a drift in the machine's load hits every
method alike; round 0 warms up and is dropped; the median of the rounds is reported.

    python -m benchmarks.method_costs [--pairs resnet32x4->resnet8x4] [--methods kd crd ab ...]
                                      [--batches 1] [--rounds 3] [--threads 1] [--nce-k 16384]
                                      [--device cpu] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import add_step_arguments, emit, machine, resolve_step_arguments
from dfa_ray.data import load_dataset
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.teacher import freeze
from dfa_ray.engine.training import TrainingRun
from dfa_ray.models import create_model

NUM_CLASSES = 100
METHODS = ("kd", "crd", "crd+kd", "vid", "ofd", "ab", "ft", "fsp", "reviewkd")
WITH_INIT = ("ab", "ft", "fsp")
TINY_LR = 1e-6


def method_run(method: str, tname: str, sname: str, args, device: torch.device, init_epochs: int) -> TrainingRun:
    """A run whose every epoch is exactly the synthetic set's batches (no held-out split)."""
    data = load_dataset("synthetic", num_classes=NUM_CLASSES, n_train=args.batches * args.batch_size, n_test=8,
                        image_size=32, channels=3)
    # a step's cost does not depend on the learning rate, but an untrained teacher's features on
    # random images are large enough for FT's paraphraser to diverge in 4 steps at lr 0.01: a
    # tiny lr keeps every method finite for as many rounds as asked
    recipe = get_recipe("crd", {"epochs": 100_000, "batch_size": args.batch_size, "holdout_fraction": 0.0,
                                "lr": TINY_LR, "small_model_lr": TINY_LR})
    teacher = freeze(create_model(tname, num_classes=NUM_CLASSES)).to(device)
    options: dict = {}
    if method.startswith("crd"):
        options["nce_k"] = args.nce_k
    if method in WITH_INIT:
        options.update(init_epochs=init_epochs, init_lr=TINY_LR)
    return build_distill_run(teacher, tname, sname, data, recipe, method, seed=0, options=options, device=device)


def round_robin(runs: dict[str, TrainingRun], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Images/s per run and phase over `rounds` kept rounds (after one warm-up round)."""
    kept: dict[str, dict[str, list[float]]] = {name: {} for name in runs}
    for r in range(rounds + 1):
        for name, run in runs.items():
            m = run.step()
            if r > 0:
                kept[name].setdefault(m.get("phase", "train"), []).append(m["images_per_s"])
    return kept


def bench_pair(tname: str, sname: str, args, device: torch.device) -> list[dict]:
    pair = f"{tname}->{sname}"
    methods = ["kd"] + [m for m in args.methods if m != "kd"]
    runs = {m: method_run(m, tname, sname, args, device, init_epochs=args.rounds + 1) for m in methods}
    speeds = round_robin(runs, args.rounds)  # the init methods are in their init stage here
    later = round_robin({m: runs[m] for m in methods if m == "kd" or m in WITH_INIT}, args.rounds)
    for m, phases in later.items():
        for phase, values in phases.items():
            speeds[m].setdefault(phase, []).extend(values)
    kd = statistics.median(speeds["kd"]["train"])
    out = []
    for m in methods:
        for phase in ("train", "init"):
            if phase not in speeds[m]:
                continue
            ips = statistics.median(speeds[m][phase])
            out.append({"pair": pair, "method": m, "phase": phase, "batch_size": args.batch_size,
                        "img_s": round(ips, 1), "kd_img_s": round(kd, 1), "cost_vs_kd": round(kd / ips, 2),
                        "runs": [round(v, 1) for v in speeds[m][phase]]})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["resnet32x4->resnet8x4"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    add_step_arguments(parser, rounds=3, cuda_batches=20)
    parser.add_argument("--nce-k", type=int, default=16384, help="CRD's negatives per sample (the paper's 16384)")
    args = parser.parse_args(argv)
    device = resolve_step_arguments(args, cuda_batches=20)
    start = time.perf_counter()
    info = machine(device)
    print(f"machine: {info}")
    print(f"{args.rounds} rounds x {args.batches} batch(es) of {args.batch_size}, median; cost = KD's img/s / the "
          f"method's, on the same pair; CRD with {args.nce_k} negatives")
    results = []
    for pair in args.pairs:
        tname, sname = pair.split("->")
        for r in bench_pair(tname, sname, args, device):
            results.append(r)
            what = f"{r['method']}{' (init stage)' if r['phase'] == 'init' else ''} {pair}"
            print(f"{what:<40} {r['img_s']:9.1f} img/s  {r['cost_vs_kd']:5.2f}x KD's step  "
                  f"({info['device_name']}, {info['torch_threads']} thr)", flush=True)
    report = {"benchmark": "method_costs", "machine": info, "device": str(device), "rounds": args.rounds,
              "batches_per_round": args.batches, "nce_k": args.nce_k, "results": results,
              "wall_s": round(time.perf_counter() - start, 1)}
    emit(report, device, args.no_record)
    return report


if __name__ == "__main__":
    main()
