"""The in-memory dataset types, the dataset registry and the two lookups the CLI uses.

Why uint8 tensors: a CIFAR-sized split is 150 MiB as uint8 and four times that as float, and
the device loader (loader.py) converts each batch to float on the device anyway. Every source
module (digits, cifar, cinic, fashion_mnist, synthetic) reads its own on-disk format into
these types and registers one `DatasetSource` in `DATASETS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from dfa_ray.errors import ConfigError, DataError
from dfa_ray.registry import Registry

DATA_ENV = "DFA_RAY_DATA"  # environment variable naming the default data root


def default_data_root() -> str:
    """`$DFA_RAY_DATA` when set, else `~/data` (absolute: Ray trials change directory)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(DATA_ENV) or "~/data"))


@dataclass
class ImageSet:
    """One split in memory: uint8 images [N, C, H, W] (contiguous) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"ImageSet.images must be a uint8 tensor [N, C, H, W], got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"ImageSet.labels must be 1-D with one label per image: "
                f"{tuple(self.labels.shape)} labels for {self.images.shape[0]} images"
            )
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64).contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor) -> "ImageSet":
        """The samples at `indices` (a copy), in that order."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(
            self.images[indices.to(self.images.device)],
            self.labels[indices.to(self.labels.device)],
        )

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the loader need to know about a dataset.

    mean and std are per channel in [0, 1] units (the loader computes (x/255 - mean)/std).
    `crop_padding` is the default random-crop padding in pixels; `flip` whether a horizontal
    flip keeps the label meaning (False for digits, where a mirrored 2 is not a 2).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool = True


@dataclass
class Dataset:
    """A dataset's splits. `valid` is the official validation split where one exists
    (CINIC-10); the held-out split for model selection comes from `split.holdout_split`."""

    info: DatasetInfo
    train: ImageSet
    test: ImageSet
    valid: ImageSet | None = None


@runtime_checkable
class DatasetSource(Protocol):
    """One per dataset: knows where the files live, whether they are there, and how to read them."""

    name: str

    def default_root(self) -> str | None: ...

    def is_present(self, root: str | None) -> bool: ...

    def load(self, root: str | None = None, download: bool = False, **options) -> Dataset: ...

    def describe(self) -> str: ...


DATASETS: Registry[DatasetSource] = Registry("dataset")


def load_dataset(name: str, root: str | None = None, download: bool = False, **options) -> Dataset:
    """Load dataset `name` (ConfigError listing the valid names when unknown)."""
    return DATASETS.get(name).load(root, download=download, **options)


def dataset_table() -> list[dict]:
    """One row per registered dataset for `dfa-ray datasets`: name, root, present, description."""
    rows = []
    for name in DATASETS:
        source = DATASETS.get(name)
        root = source.default_root()
        rows.append(
            {
                "name": name,
                "root": root,
                "present": bool(source.is_present(root)),
                "description": source.describe(),
            }
        )
    return rows


def check_options(dataset: str, options: dict, allowed: dict) -> dict:
    """Merge `options` into the defaults `allowed`; an unknown key is a ConfigError."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"dataset {dataset!r} has no option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    return {**allowed, **options}


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (population) of uint8 images [N, C, H, W], in [0, 1] units.

    Accumulated in float64 over chunks so a 50,000-image split needs no float copy of itself.
    """
    n, c = images.shape[0], images.shape[1]
    if n == 0:
        raise DataError("cannot compute mean/std of an empty split")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)
        total += x.sum(dim=1)
        total_sq += (x * x).sum(dim=1)
    count = images[:, 0].numel()
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


__all__ = [
    "DATASETS",
    "DATA_ENV",
    "Dataset",
    "DatasetInfo",
    "DatasetSource",
    "ImageSet",
    "channel_stats",
    "check_options",
    "dataset_table",
    "default_data_root",
    "load_dataset",
]
