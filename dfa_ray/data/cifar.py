"""CIFAR-10 and CIFAR-100 from torchvision's on-disk format (the "python version" pickles).

Layout under the data root (what torchvision's CIFAR10/CIFAR100(root, download=True) leaves):
    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta
Each batch is a pickled dict with b"data" (uint8 [N, 3072]: 1024 red, 1024 green, 1024 blue
values, each plane row-major 32x32, so a reshape to [N, 3, 32, 32] is already CHW) and
b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100), a list of ints.

Why a restricted unpickler: these are data pickles from the dataset's authors (the format
torchvision trusts and reads with plain pickle), but a pickle can call any importable
function. We only let through what the real files contain (dicts, lists, bytes, numpy arrays),
so a tampered or wrong file is refused with a DataError instead of running code.
"""

from __future__ import annotations

import importlib
import os
import pickle

import numpy as np
import torch

from dfa_ray.data.base import (
    DATASETS,
    Dataset,
    DatasetInfo,
    ImageSet,
    check_options,
    default_data_root,
)
from dfa_ray.errors import ConfigError, DataError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)  # CRD protocol
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
OVERHAUL_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)  # Overhaul/DFA protocol (WRN-28-4)
OVERHAUL_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def _numpy_attr(submodule: str, name: str):
    """numpy.core was renamed numpy._core in numpy 2; old pickles name the old path."""
    for module in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


# (module, name) a CIFAR pickle may reference -> how to resolve it.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_attr("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_attr("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # Python 3 writes bytes as _codecs.encode(str, "latin1") at pickle protocol <= 2.
    ("_codecs", "encode"): lambda: importlib.import_module("_codecs").encode,
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction; any other global is refused."""

    def find_class(self, module: str, name: str):
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed (a CIFAR batch holds only dicts, "
                "lists, bytes and numpy arrays)"
            )
        return resolve()


def read_data_pickle(path: str) -> dict:
    """Unpickle one CIFAR batch file (encoding="bytes") into a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _DataOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except Exception as exc:  # truncated, corrupt or not a pickle at all: all mean "bad file"
        raise DataError(
            f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); the file is "
            "truncated, corrupt or not in torchvision's CIFAR format: delete it and download "
            "again (--download) or copy a good one"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: str, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_data_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(
                f"{path}: no {key!r} entry (found {sorted(batch)}); is this the right CIFAR "
                "variant (CIFAR-10 uses 'labels', CIFAR-100 'fine_labels')?"
            )
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array [N, 3072], found {type(data).__name__} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: {label_key!r} is not a list of integers in the int64 range") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must be in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return data, labels


class _CifarSource:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    torchvision_class: str
    url: str

    def default_root(self) -> str | None:
        return default_data_root()

    def _folder(self, root: str | None) -> str:
        root = os.path.abspath(os.path.expanduser(root or default_data_root()))
        if os.path.basename(os.path.normpath(root)) == self.folder:
            return root  # the user named the batches folder itself
        return os.path.join(root, self.folder)

    def _missing(self, root: str | None) -> list[str]:
        folder = self._folder(root)
        names = self.train_files + self.test_files
        return [os.path.join(folder, n) for n in names if not os.path.isfile(os.path.join(folder, n))]

    def is_present(self, root: str | None) -> bool:
        return not self._missing(root)

    def describe(self) -> str:
        return (
            f"CIFAR-{self.num_classes}: {self.num_classes} classes, 50,000 train / 10,000 test 32x32 colour "
            f"images; reads <root>/{self.folder}/ (torchvision's python pickles); "
            f"get it with --download or from {self.url}"
        )

    def _info(self, normalization: str) -> DatasetInfo:
        raise NotImplementedError

    def load(self, root: str | None = None, download: bool = False, **options) -> Dataset:
        opts = check_options(self.name, options, {"normalization": "default"})
        info = self._info(opts["normalization"])
        data_root = os.path.abspath(os.path.expanduser(root or default_data_root()))
        if download and self._missing(root):
            import torchvision.datasets

            cls = getattr(torchvision.datasets, self.torchvision_class)
            cls(data_root, train=True, download=True)
            cls(data_root, train=False, download=True)
        missing = self._missing(root)
        if missing:
            raise DataError(
                f"{self.name} files not found: {', '.join(missing)}. Pass --download (needs "
                f"internet) or put torchvision's extracted {self.folder}/ folder under "
                f"{data_root} (or point the data root / $DFA_RAY_DATA at the folder that holds it)"
            )
        folder = self._folder(root)
        train = self._read_split(folder, self.train_files)
        test = self._read_split(folder, self.test_files)
        return Dataset(info=info, train=train, test=test)

    def _read_split(self, folder: str, files: tuple[str, ...]) -> ImageSet:
        parts = [_read_batch(os.path.join(folder, f), self.label_key, self.num_classes) for f in files]
        data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts])
        images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
        return ImageSet(images, torch.from_numpy(labels))


class Cifar10Source(_CifarSource):
    name = "cifar10"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    num_classes = 10
    torchvision_class = "CIFAR10"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

    def _info(self, normalization: str) -> DatasetInfo:
        if normalization != "default":
            raise ConfigError(
                f"dataset 'cifar10' option normalization={normalization!r} is unknown; valid: default"
            )
        return DatasetInfo(self.name, 10, 3, 32, CIFAR10_MEAN, CIFAR10_STD, crop_padding=4)


class Cifar100Source(_CifarSource):
    name = "cifar100"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    num_classes = 100
    torchvision_class = "CIFAR100"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

    def _info(self, normalization: str) -> DatasetInfo:
        stats = {"default": (CIFAR100_MEAN, CIFAR100_STD), "overhaul": (OVERHAUL_MEAN, OVERHAUL_STD)}
        if normalization not in stats:
            raise ConfigError(
                f"dataset 'cifar100' option normalization={normalization!r} is unknown; valid: "
                "default (CRD protocol), overhaul (Overhaul/DFA protocol)"
            )
        mean, std = stats[normalization]
        return DatasetInfo(self.name, 100, 3, 32, mean, std, crop_padding=4)


DATASETS.register("cifar10")(Cifar10Source())
DATASETS.register("cifar100")(Cifar100Source())
