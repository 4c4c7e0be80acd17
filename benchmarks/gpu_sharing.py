"""Several trials per GPU, and a full CIFAR-100-sized distillation on one GPU (GPU only).

1. Aggregate training images/s with 1, 2, 4 and 8 trials sharing one GPU: k KD trials
   (resnet32x4 -> resnet8x4, batch 64, synthetic data of CIFAR-100's shape) started together
   through Tune with `gpu: 1/k` each, so Ray packs them onto the one card, and each trial caps
   its allocator at 1/k of the card (`dfa_ray.tune.device.trial_device`). Each trial reports
   images/s per epoch; the aggregate is the sum over trials of their median epoch figure (the
   first epoch, with start-up and cudnn.benchmark's search, is left out). Reference: one
   trial alone on the GPU (k = 1). Target: 4 trials >= 2.5x the aggregate of one.
2. A full 240-epoch distillation of CIFAR-100's size (50,000 training images, 32 px, 100
   classes, synthetic, the CRD recipe at batch 64; the 10 % held-out split is evaluated every
   epoch), by the engine alone with its fast path, timed end to end. Target: < 10 minutes.

Without CUDA every figure prints "skipped: no CUDA device" and the skip is recorded.
`--cpu-smoke` runs the same code on the CPU at toy sizes (tiny models and data, gpu 0 per
trial): it checks the plumbing on a machine without a GPU and records nothing.

    python -m benchmarks.gpu_sharing [--trials 1 2 4 8] [--epochs 3] [--full-epochs 240]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch  # noqa: F401  (torch before ray)

from benchmarks.common import emit, machine, record
from benchmarks.ray_overhead import ensure_loopback_namespace, local_ray

SKIPPED = "skipped: no CUDA device"
TARGET_SPEEDUP_4 = 2.5
TARGET_FULL_S = 600.0


def sizes(args) -> dict:
    if args.cpu_smoke:
        return {"teacher": "resnet14", "student": "resnet8", "classes": 10, "n_train": 512, "full_n_train": 256,
                "full_epochs": 1, "epochs": 2, "trials": [1, 2]}
    return {"teacher": args.teacher, "student": args.student, "classes": 100, "n_train": args.n_train,
            "full_n_train": 50_000, "full_epochs": args.full_epochs, "epochs": args.epochs, "trials": args.trials}


def synthetic(n_train: int, classes: int):
    from dfa_ray.data import load_dataset

    return load_dataset("synthetic", num_classes=classes, n_train=n_train, n_test=10_000 if n_train >= 50_000 else 256,
                        image_size=32, channels=3)


def store_teacher(name: str, data, out_dir: Path, device: str) -> Path:
    """A finished teacher checkpoint (one short epoch: its weights do not matter for speed)."""
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import train_teacher

    train_teacher(name, data, get_recipe("crd", {"epochs": 1, "holdout_fraction": 0.0}), 0, out_dir, device=device)
    return out_dir


def shared_gpu(k: int, s: dict, data, teacher_dir: Path, storage: Path, gpu: bool, epochs: int) -> dict:
    """k KD trials at once on one GPU through Tune; their aggregate images/s."""
    from ray import tune

    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.tune.trainables import DistillTrainable

    recipe = get_recipe("crd", {"epochs": epochs, "batch_size": 64}).model_dump(mode="json")
    jobs = [{"teacher": s["teacher"], "student": s["student"], "teacher_path": str(teacher_dir), "method": "kd",
             "method_options": {}, "genotype": None, "seed": seed, "recipe": recipe} for seed in range(k)]
    fraction = 1.0 / k if gpu else 0.0
    config = {"sweep": f"gpu-sharing-{k}", "stage": "distill", "dataset": "synthetic",
              "data_spec": {"name": "synthetic", "root": None, "options": {}}, "cpu": 1.0, "gpu": fraction,
              "fast": {}, "job": tune.grid_search(jobs)}
    resources = {"cpu": 1, "gpu": fraction} if gpu else {"cpu": 1}
    trainable = tune.with_resources(tune.with_parameters(DistillTrainable, data=data), resources)
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(max_concurrent_trials=k),
                       run_config=tune.RunConfig(name=f"share-{k}", storage_path=str(storage), verbose=0,
                                                 checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    per_trial = []
    devices = set()
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"trial failed with {k} trials per GPU: {result.error}")
        history = result.metrics_dataframe
        rates = list(history["images_per_s"])
        steady = rates[1:] or rates
        per_trial.append(statistics.median(steady))
        devices.update(history["device"])
    return {"trials": k, "gpu_per_trial": fraction, "aggregate_img_s": round(sum(per_trial), 1),
            "per_trial_img_s": [round(v, 1) for v in per_trial], "devices": sorted(devices), "wall_s": round(wall, 1)}


def full_distillation(s: dict, teacher_dir: Path, device: str) -> dict:
    """The engine alone: 240 epochs of KD at CIFAR-100's size, timed end to end."""
    from dfa_ray.engine.distill import build_distill_run
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import load_teacher

    data = synthetic(s["full_n_train"], s["classes"])
    teacher, meta = load_teacher(teacher_dir, data)
    recipe = get_recipe("crd", {"epochs": s["full_epochs"]})
    start = time.perf_counter()
    run = build_distill_run(teacher.to(device), meta["model"], s["student"], data, recipe, "kd", seed=0, device=device)
    final = run.run()
    wall = time.perf_counter() - start
    rates = [h["images_per_s"] for h in run.history]
    return {"pair": f"{s['teacher']}->{s['student']}", "method": "kd", "epochs": s["full_epochs"],
            "n_train": s["full_n_train"], "wall_s": round(wall, 1), "median_epoch_img_s": round(statistics.median(rates), 1),
            "test_acc_last": final["test_acc_last"], "fast_path": run.fast.to_dict()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per sharing trial (the first is not counted)")
    parser.add_argument("--n-train", type=int, default=10_000, help="training images per sharing trial")
    parser.add_argument("--full-epochs", type=int, default=240)
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--skip-full", action="store_true", help="leave out the 240-epoch distillation")
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU, to check the plumbing")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda" if gpu else "cpu")
    info = machine(device)
    print(f"machine: {info}")
    s = sizes(args)
    names = [f"aggregate images/s, {k} trial(s) per GPU" for k in s["trials"]] + \
            [f"full {s['full_epochs']}-epoch distillation, CIFAR-100 size"]
    if not gpu and not args.cpu_smoke:
        for name in names:
            print(f"{name}: {SKIPPED}")
        report = {"benchmark": "gpu_sharing", "machine": info, "skipped": SKIPPED, "figures": names}
        emit(report, device)
        return report
    ensure_loopback_namespace("benchmarks.gpu_sharing")
    if args.cpu_smoke:
        print("CPU smoke run: toy sizes, gpu 0 per trial; these are not GPU figures and are not recorded")
    card = torch.cuda.get_device_name(device) if gpu else "cpu (smoke)"
    start = time.perf_counter()
    sharing: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dfa-ray-gpu-") as tmp:
        root = Path(tmp)
        teacher_dir = store_teacher(s["teacher"], synthetic(512, s["classes"]), root / "teacher", str(device))
        data = synthetic(s["n_train"], s["classes"])
        with local_ray(num_cpus=os.cpu_count()):
            for k in s["trials"]:
                r = shared_gpu(k, s, data, teacher_dir, root / "tune", gpu, s["epochs"])
                sharing.append(r)
                base = sharing[0]["aggregate_img_s"]
                print(f"{k} trial(s) per GPU ({card}): aggregate {r['aggregate_img_s']:.0f} img/s | one trial alone "
                      f"{base:.0f} img/s | ratio {r['aggregate_img_s'] / base:.2f}x "
                      f"(per trial {r['per_trial_img_s']}; devices {r['devices']})", flush=True)
        full = None
        if not args.skip_full:
            full = full_distillation(s, teacher_dir, str(device))
            met = full["wall_s"] < TARGET_FULL_S
            print(f"full {full['epochs']}-epoch KD {full['pair']} on {full['n_train']:,} images ({card}): {full['wall_s']:.0f} s "
                  f"= {full['wall_s'] / 60:.1f} min ({full['median_epoch_img_s']:.0f} img/s per epoch; target < "
                  f"{TARGET_FULL_S / 60:.0f} min: {'met' if met else 'NOT MET'})")
    four = next((r for r in sharing if r["trials"] == 4), None)
    speedup4 = four["aggregate_img_s"] / sharing[0]["aggregate_img_s"] if four and sharing[0]["trials"] == 1 else None
    if speedup4 is not None:
        print(f"4 trials per GPU vs 1: {speedup4:.2f}x (target >= {TARGET_SPEEDUP_4}x: "
              f"{'met' if speedup4 >= TARGET_SPEEDUP_4 else 'NOT MET'})")
    report = {"benchmark": "gpu_sharing", "machine": info, "card": card, "sharing": sharing,
              "speedup_4_vs_1": None if speedup4 is None else round(speedup4, 2), "full_distillation": full,
              "targets": {"speedup_4_vs_1": TARGET_SPEEDUP_4, "full_s": TARGET_FULL_S},
              "wall_s": round(time.perf_counter() - start, 1)}
    print(json.dumps(report))
    if args.cpu_smoke:
        print("not recorded (CPU smoke run)")
    else:
        print(f"recorded in {record(report, device)}")
    return report


if __name__ == "__main__":
    main()
