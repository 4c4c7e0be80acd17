"""Device choice, seeding and the CUDA fast-path switches, in one place.

Why here: every loop (teacher, search, distil) needs the same three decisions, and a trial
must record what it actually ran on (device name, precision) next to its numbers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch

from dfa_ray.errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks CUDA when there is one; `cuda` without a GPU is a user error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but no CUDA GPU is visible; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Devices whose convolution libraries run NHWC natively: cuDNN on CUDA, oneDNN on the CPU.
# On this project's 2-core AVX2 CPU (1 thread), channels_last made the KD and DFA steps of
# resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2 1.14-1.21x faster than NCHW
# (benchmarks/distill_step.py --channels-last on|off), single training steps of the zoo's
# CIFAR nets 1.13-1.46x; convolutions are ~90 % of a CPU step, so this is the lever there.
CHANNELS_LAST_DEVICES = ("cuda", "cpu")


@dataclass(frozen=True)
class FastPath:
    """Speed switches; `None` means "on where the hardware supports it": channels_last on
    CUDA and the CPU, bf16 autocast and cudnn.benchmark on CUDA (bf16 where the GPU has it;
    CPUs without native bf16 run it several times slower, so the CPU needs an explicit True)."""

    channels_last: bool | None = None
    bf16: bool | None = None
    compile: bool = False
    cudnn_benchmark: bool | None = None

    def resolved(self, device: torch.device) -> "FastPath":
        on_cuda = device.type == "cuda"
        nhwc = device.type in CHANNELS_LAST_DEVICES
        return FastPath(
            channels_last=nhwc if self.channels_last is None else self.channels_last,
            bf16=(on_cuda and torch.cuda.is_bf16_supported()) if self.bf16 is None else self.bf16,
            compile=self.compile,
            cudnn_benchmark=on_cuda if self.cudnn_benchmark is None else self.cudnn_benchmark,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast where asked; a no-op context otherwise."""
    if enabled:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def machine_info(device: torch.device) -> dict:
    """What a result row records about where it ran."""
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
    }
    return info
