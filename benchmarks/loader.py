"""Images/s of DeviceLoader against torchvision's DataLoader + PIL transforms, same data, one run.

Both make the CIFAR training batch: random crop 32 with padding 4, horizontal flip, to float,
normalise. Data: 50,000 synthetic 3x32x32 uint8 images (CIFAR-sized). The reference is what
most CIFAR code does: a Dataset that turns each uint8 HWC array into a PIL image (as
torchvision's CIFAR10.__getitem__ does) and applies RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize, in a DataLoader with num_workers=2 (pin_memory and
a copy to the device when the device is CUDA). Each side gets a warm-up, then a fixed number
of images is timed (worker start-up is outside the timing, the epoch's draw inside). The two
sides are timed in alternation for --rounds rounds and the median of each is reported: on a
small shared machine one timing can be off by several times when another process takes a core.
--threads sets torch's intra-op threads for the DeviceLoader side (default: torch's default,
one per core). With 2 threads on 2 cores, a third busy process makes every parallel op wait
for a descheduled thread and throughput collapses; 1 thread is the robust setting for a
shared CPU (a Ray trial's threads follow its CPU count).

    python benchmarks/loader.py [--device cpu|cuda] [--threads N] [--images 20000] [--ref-images 6000]

Prints both figures, the ratio and the machine, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfa_ray.data import DeviceLoader, load_dataset  # noqa: E402

from benchmarks.common import REFERENCE_WORKERS as NUM_WORKERS, PilArrayDataset, emit, machine, sync as _sync  # noqa: E402


def time_device_loader(train, info, batch_size, device, batches, warmup) -> float:
    ld = DeviceLoader(
        train, batch_size=batch_size, mean=info.mean, std=info.std, train=True,
        padding=4, flip=True, seed=0, device=device, drop_last=True,
    )
    for _ in zip(range(warmup), ld):
        pass
    _sync(device)
    done, start = 0, time.perf_counter()
    while done < batches:
        for x, y in ld:  # a new epoch (and its draw) whenever one runs out
            done += 1
            if done == batches:
                break
    _sync(device)
    return batches * batch_size / (time.perf_counter() - start)


def time_torchvision(train, info, batch_size, device, batches, warmup) -> float:
    import torchvision.transforms as T

    transform = T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(info.mean, info.std),
    ])
    data = train.images.permute(0, 2, 3, 1).contiguous().numpy()  # NHWC, as torchvision keeps CIFAR
    ds = PilArrayDataset(data, train.labels.tolist(), transform)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=NUM_WORKERS, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    it = iter(dl)
    for _ in range(warmup):  # includes starting the workers
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    _sync(device)
    elapsed = time.perf_counter() - start
    del it
    return batches * batch_size / elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=50_000, help="images (default: CIFAR's 50,000)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--images", type=int, default=20_000, help="timed DeviceLoader images")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--ref-images", type=int, default=6_000, help="timed torchvision images")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timings per side; median reported")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    ds = load_dataset("synthetic", n_train=args.n, n_test=10, image_size=32, channels=3)
    info = machine(device)
    print(f"machine: {info}")
    print(f"data: {args.n} x 3 x 32 x 32 uint8 synthetic, generated in {time.perf_counter() - t0:.1f} s")
    print(f"reference: torch DataLoader, PIL RandomCrop(32, padding=4) + RandomHorizontalFlip + "
          f"ToTensor + Normalize, num_workers={NUM_WORKERS}")
    results = []
    for bs in args.batch_sizes:
        ours_runs, ref_runs = [], []
        for _ in range(args.rounds):
            ours_runs.append(time_device_loader(ds.train, ds.info, bs, device, max(1, args.images // bs), args.warmup))
            ref_runs.append(time_torchvision(ds.train, ds.info, bs, device, max(1, args.ref_images // bs), args.warmup))
        ours, ref = statistics.median(ours_runs), statistics.median(ref_runs)
        results.append({"batch_size": bs, "device_loader_img_s": round(ours), "torchvision_img_s": round(ref),
                        "ratio": round(ours / ref, 2), "device_loader_runs": [round(v) for v in ours_runs],
                        "torchvision_runs": [round(v) for v in ref_runs]})
        print(f"batch {bs:4d}: DeviceLoader {ours:12,.0f} img/s | torchvision DataLoader {ref:10,.0f} img/s "
              f"| ratio {ours / ref:6.1f}x (median of {args.rounds})")
    report = {"benchmark": "loader", "machine": info, "num_workers": NUM_WORKERS, "n_images": args.n,
              "timed_images": {"device_loader": args.images, "torchvision": args.ref_images}, "rounds": args.rounds,
              "results": results, "wall_s": round(time.perf_counter() - t0, 1)}
    emit(report, device)
    return report


if __name__ == "__main__":
    main()
