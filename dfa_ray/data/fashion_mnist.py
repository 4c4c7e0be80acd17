"""Fashion-MNIST from its IDX files (raw or gzipped), e.g. the Debian package's copy.

`apt-get install dataset-fashion-mnist` installs /usr/share/datasets/fashion-mnist/
{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz; torchvision's download leaves the same files
under <root>/FashionMNIST/raw/. Both places are searched.

IDX format: a 4-byte magic (0, 0, type code, number of dimensions), one big-endian uint32 per
dimension, then the values in row-major order, big-endian. We parse it ourselves so a
truncated or corrupt file gives a DataError that names it.

Options `train_size` / `test_size` (0: all) take a stratified, seeded subset (`subset_seed`)
of each split, for studies on a CPU budget: every class keeps its share, and the subset is a
function of (size, seed) only, so every trial of a study sees the same images.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import torch

from dfa_ray.data.base import DATASETS, Dataset, DatasetInfo, ImageSet, check_options
from dfa_ray.data.split import stratified_split
from dfa_ray.errors import ConfigError, DataError

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MEAN = (0.2860,)  # of the 60,000 training images
STD = (0.3530,)
# IDX type code -> numpy dtype (big-endian)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Parse one IDX file (gzipped when the name ends in .gz) into a numpy array."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} is not a readable gzip file ({exc}): the download is corrupt or truncated") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
            "expected 0000 08 NN for uint8 data"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} is {'truncated' if len(raw) < expected else 'longer than its header says'}: "
            f"dimensions {dims} need {expected} bytes, the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


class FashionMnistSource:
    name = "fashion_mnist"

    def default_root(self) -> str | None:
        return DEBIAN_ROOT

    @staticmethod
    def _find(root: str, base: str) -> str | None:
        for folder in (root, os.path.join(root, "FashionMNIST", "raw")):
            for name in (base, base + ".gz"):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    return path
        return None

    def is_present(self, root: str | None) -> bool:
        root = root or self.default_root()
        return all(self._find(root, base) for base in FILES.values())

    def describe(self) -> str:
        return (
            "Fashion-MNIST: 10 classes, 60,000 train / 10,000 test 28x28 grey "
            f"images; reads the IDX files (raw or .gz) in <root> (default {DEBIAN_ROOT}); "
            "get them with `apt-get install dataset-fashion-mnist` or --download"
        )

    def load(self, root: str | None = None, download: bool = False, **options) -> Dataset:
        opts = check_options(self.name, options, {"train_size": 0, "test_size": 0, "subset_seed": 0})
        sizes = {k: _whole(k, opts[k]) for k in ("train_size", "test_size", "subset_seed")}
        root = os.path.abspath(os.path.expanduser(root or self.default_root()))
        if download and not self.is_present(root):
            import torchvision.datasets

            torchvision.datasets.FashionMNIST(root, train=True, download=True)
            torchvision.datasets.FashionMNIST(root, train=False, download=True)
        paths = {key: self._find(root, base) for key, base in FILES.items()}
        missing = [FILES[k] for k, p in paths.items() if p is None]
        if missing:
            raise DataError(
                f"Fashion-MNIST files not found in {root}: {', '.join(missing)} (raw or .gz). "
                f"Install them with `apt-get install dataset-fashion-mnist` (puts them in "
                f"{DEBIAN_ROOT}), pass --download, or copy the four IDX files into {root}"
            )
        train = _subset(self._read_split(paths["train_images"], paths["train_labels"]), sizes["train_size"],
                        sizes["subset_seed"], "train_size")
        test = _subset(self._read_split(paths["test_images"], paths["test_labels"]), sizes["test_size"],
                       sizes["subset_seed"], "test_size")
        info = DatasetInfo(self.name, 10, 1, 28, MEAN, STD, crop_padding=4)
        return Dataset(info=info, train=train, test=test)

    @staticmethod
    def _read_split(images_path: str, labels_path: str) -> ImageSet:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{images_path}: expected uint8 images [N, 28, 28], found {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{labels_path}: expected {images.shape[0]} labels (one per image in "
                f"{images_path}), found shape {labels.shape}"
            )
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
            raise DataError(f"{labels_path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
        return ImageSet(
            torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)),
        )


def _whole(key: str, value) -> int:
    try:
        number = int(value)
        if isinstance(value, bool) or number != float(value) or number < 0 or number > 10**9:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"fashion_mnist option {key}={value!r} is invalid; give a whole number >= 0") from None
    return number


def _subset(split: ImageSet, size: int, seed: int, key: str) -> ImageSet:
    """A stratified subset of about `size` images (each class rounded to its share); 0: all."""
    n = len(split)
    if size == 0 or size >= n:
        return split
    _, chosen = stratified_split(split.labels, size / n, seed)
    if chosen.numel() == 0:
        raise ConfigError(f"fashion_mnist option {key}={size} leaves no image; give a larger size")
    return split.subset(chosen)


DATASETS.register("fashion_mnist")(FashionMnistSource())
