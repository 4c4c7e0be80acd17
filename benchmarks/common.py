"""What every benchmark shares: the reference data pipeline (torchvision DataLoader + PIL
transforms, the classic CIFAR loop) and the description of the machine a figure came from."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

REFERENCE_WORKERS = 2  # one per core of the 2-core CI machine; CIFAR code commonly uses 2-8


class PilArrayDataset(torch.utils.data.Dataset):
    """uint8 NHWC arrays served as PIL images through a transform (torchvision CIFAR10 style)."""

    def __init__(self, data: np.ndarray, targets: list[int], transform) -> None:
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index].squeeze())), self.targets[index]


def reference_loader(images: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int, padding: int = 4,
                     num_workers: int = REFERENCE_WORKERS, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """torchvision's classic training pipeline over uint8 NCHW images."""
    import torchvision.transforms as T

    size = images.shape[-1]
    transform = T.Compose([T.RandomCrop(size, padding=padding), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    data = images.permute(0, 2, 3, 1).contiguous().numpy()  # NHWC, as torchvision keeps CIFAR
    return torch.utils.data.DataLoader(PilArrayDataset(data, labels.tolist(), transform), batch_size=batch_size,
                                       shuffle=True, num_workers=num_workers, drop_last=True, pin_memory=pin_memory,
                                       persistent_workers=num_workers > 0)


def apply_threads(threads: int, device: torch.device) -> int:
    """The `--threads` rule of the step benchmarks: -1 means 1 on the CPU (as a 1-CPU Ray trial
    runs) and torch's default (0) elsewhere; a positive count is set. Returns the count used."""
    if threads < 0:
        threads = 1 if device.type == "cpu" else 0
    if threads > 0:
        torch.set_num_threads(threads)
    return threads


def add_step_arguments(parser: argparse.ArgumentParser, rounds: int, cuda_batches: int, record: bool = True,
                       threads_help: str = "") -> None:
    """The arguments every per-step benchmark takes: batch size, batches per round, rounds,
    torch threads, device and (where it records) `--no-record`."""
    parser.add_argument("--batch-size", type=int, default=64, help="the CRD protocol's batch size")
    parser.add_argument("--batches", type=int, default=0,
                        help=f"batches per round (0: 1 on the CPU, {cuda_batches} on CUDA)")
    parser.add_argument("--rounds", type=int, default=rounds, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=-1,
                        help=threads_help or "torch threads (default: 1 on the CPU, as a 1-CPU Ray trial runs; "
                                             "0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    if record:
        parser.add_argument("--no-record", action="store_true",
                            help="print the report only (a trial run) instead of merging it into benchmarks/results/")


def resolve_step_arguments(args: argparse.Namespace, cuda_batches: int) -> torch.device:
    """Applies the thread rule and the default batch count to parsed step arguments; returns
    the device. A GPU step is short, so it wants more batches per round than the CPU."""
    device = torch.device(args.device)
    args.threads = apply_threads(args.threads, device)
    if args.batches <= 0:
        args.batches = cuda_batches if device.type == "cuda" else 1
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict:
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": name,
    }


def machine_tag(device: torch.device) -> str:
    """File-name-safe name of the machine for benchmarks/results/<machine>.json."""
    if device.type == "cuda":
        base = torch.cuda.get_device_name(device)
    else:
        base = f"cpu{os.cpu_count()}-{platform.machine()}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-").lower()


def record(report: dict, device: torch.device) -> Path:
    """Merge one benchmark's report into benchmarks/results/<machine>.json (atomically)."""
    from dfa_ray.engine.checkpoint import atomic_write_json

    path = Path(__file__).resolve().parent / "results" / f"{machine_tag(device)}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[report["benchmark"]] = report
    atomic_write_json(path, data)
    return path


def emit(report: dict, device: torch.device, no_record: bool = False) -> None:
    """A benchmark's last words: its report as one JSON line (what `run_all` reads) and where
    it was recorded; with `no_record` (a trial run) the line only."""
    print(json.dumps(report))
    if not no_record:
        print(f"recorded in {record(report, device)}")
