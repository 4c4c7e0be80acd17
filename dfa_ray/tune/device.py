"""Which device a trial runs on, from what Ray assigned it, and its GPU memory cap.

Ray sets CUDA_VISIBLE_DEVICES for a trial to the GPUs it was given, so a trial with a GPU
(or a fraction of one) sees exactly one device, `cuda:0`. A CPU-only trial must never touch
a GPU, even on a GPU node (Ray 2.60 shows a 0-GPU trial every GPU unless
RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1), so the choice is made from the assignment, not from
`torch.cuda.is_available()`. Fractions only schedule, they do not isolate memory: a trial
with gpu=0.25 caps its PyTorch allocator at 25 % of the card so four trials fit side by side.
"""

from __future__ import annotations

from typing import Sequence

import torch


def choose_device(gpu_ids: Sequence[object], gpu_fraction: float, cuda_available: bool | None = None) -> torch.device:
    """`cuda:0` when Ray assigned a GPU and CUDA works, else the CPU."""
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if gpu_fraction > 0 and len(gpu_ids) > 0 and cuda_available:
        return torch.device("cuda", 0)
    return torch.device("cpu")


def memory_fraction(gpu_fraction: float) -> float | None:
    """The allocator cap for a fractional GPU (None: a whole GPU or more, no cap)."""
    if 0 < gpu_fraction < 1:
        return float(gpu_fraction)
    return None


def trial_device(gpu_fraction: float) -> torch.device:
    """The device of the calling Ray trial, with the memory cap applied on CUDA."""
    import ray

    # outside a Ray process get_gpu_ids() would start a local Ray of its own
    device = choose_device(ray.get_gpu_ids() if ray.is_initialized() else [], gpu_fraction)
    cap = memory_fraction(gpu_fraction)
    if device.type == "cuda" and cap is not None:
        torch.cuda.set_per_process_memory_fraction(cap, device)
    return device
