"""Training images/s of the dfa-ray engine against the classic reference loop, one run.

Ours: `TrainingRun.step()` (the real engine: device-resident uint8 data, batched crop/flip/
normalise on the device, no per-step host sync, the fast path where the device has one),
timed over its second epoch. Reference: the loop most CIFAR code runs (torchvision DataLoader
with PIL RandomCrop/Flip/ToTensor/Normalize in worker processes, fp32, NCHW, `loss.item()`
every step for the running average). Same model, batch size, optimiser and number of images.
Also timed: the reference's compute alone (its loop on one batch drawn before the clock
starts), which bounds what any data path can give at the reference's layout and precision.
The three sides alternate round by round; medians are reported.

    python -m benchmarks.train_step [--models resnet20 resnet8x4] [--batches 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import REFERENCE_WORKERS, emit, machine
from benchmarks.distill_step import ReferenceLoop, alternate_rounds, ceiling_figures
from dfa_ray.data import load_dataset
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.teacher import build_teacher_run

HOLDOUT = 0.02  # keep the engine's per-epoch validation pass small; it is not timed anyway


def time_engine(model_name: str, data, batch_size: int, device: str) -> float:
    recipe = get_recipe("crd", {"epochs": 2, "batch_size": batch_size, "holdout_fraction": HOLDOUT})
    run = build_teacher_run(model_name, data, recipe, seed=0, device=device)
    run.step()  # warm-up epoch (allocator, kernels)
    return run.step()["images_per_s"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet8x4"])
    parser.add_argument("--batch-size", type=int, default=64, help="the CRD protocol's batch size")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timings per side; median reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    n_train = int(round((args.batches + 4) * args.batch_size / (1 - HOLDOUT)))
    data = load_dataset("synthetic", num_classes=100, n_train=n_train, n_test=64, image_size=32, channels=3)
    info = machine(device)
    print(f"machine: {info}")
    print(f"reference: DataLoader + PIL transforms, num_workers={REFERENCE_WORKERS}, fp32, NCHW, loss.item() per step")
    results = []
    for name in args.models:
        ref = ReferenceLoop("teacher", name, "", data, args.batch_size, device)
        try:
            ours_runs, ref_runs, compute_runs = alternate_rounds(
                lambda: time_engine(name, data, args.batch_size, args.device), ref, args.batches, args.rounds)
        finally:
            ref.close()
        ours, reference = statistics.median(ours_runs), statistics.median(ref_runs)
        row = {"model": name, "batch_size": args.batch_size, "engine_img_s": round(ours, 1),
               "reference_img_s": round(reference, 1), "ratio": round(ours / reference, 2),
               "engine_runs": [round(v, 1) for v in ours_runs], "reference_runs": [round(v, 1) for v in ref_runs],
               **ceiling_figures(ours, reference, compute_runs)}
        results.append(row)
        print(f"{name:<10} batch {args.batch_size}: engine {ours:9.1f} img/s | reference {reference:9.1f} img/s | "
              f"ratio {ours / reference:5.2f}x (target >= 1.3x on the 2-core CPU)")
        print(f"{'':<10} the reference's compute alone (no data path) {row['reference_compute_img_s']:9.1f} img/s: its "
              f"data path is {100 * row['reference_data_share']:.1f} % of its step, so a loader alone could give at most "
              f"{row['loader_ceiling_ratio']:.2f}x; ours / that ceiling {row['engine_vs_reference_compute']:.2f}x",
              flush=True)
    report = {"benchmark": "train_step", "machine": info, "results": results, "target_ratio_cpu": 1.3}
    emit(report, device)
    return report


if __name__ == "__main__":
    main()
