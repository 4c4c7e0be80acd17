"""CINIC-10 from its official image-folder layout, converted once into a uint8 cache.

Layout (the extracted CINIC-10.tar.gz): root/{train,valid,test}/<class>/*.png, 10 classes,
90,000 32x32 images per split. Decoding 270,000 PNGs takes minutes, so the first load writes
`root/.dfa_ray_cache.npz` (uint8 images and int64 labels per split, plus the file count and a
digest of the file names per split) and later loads read that instead. The cache is written
to a temporary file and renamed into place (dfa_ray.atomic), so an interrupted conversion never
leaves a half-written cache; a folder whose files changed is converted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np
import torch

from dfa_ray.data.base import DATASETS, Dataset, DatasetInfo, ImageSet, check_options, default_data_root
from dfa_ray.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "valid", "test")
CACHE_NAME = ".dfa_ray_cache.npz"
CACHE_VERSION = 1
MEAN = (0.47889522, 0.47227842, 0.43047404)
STD = (0.24205776, 0.23828046, 0.25874835)
URL = "https://datashare.ed.ac.uk/handle/10283/3192"


def _read_png(path: str) -> np.ndarray:
    """Decode one image to uint8 HWC RGB (a few CINIC images are stored grey: converted)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _list_split(root: str, split: str) -> list[tuple[str, int]]:
    """(relative path, label) of every PNG of one split, in class order then name order."""
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DataError(f"CINIC-10 split folder {split_dir} not found")
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if tuple(found) != CLASSES:
        raise DataError(
            f"{split_dir} must hold exactly the 10 CINIC-10 class folders {', '.join(CLASSES)}; "
            f"found {', '.join(found) or 'none'}"
        )
    files = []
    for label, cls in enumerate(CLASSES):
        names = sorted(
            e.name for e in os.scandir(os.path.join(split_dir, cls))
            if e.is_file() and e.name.lower().endswith(".png")
        )
        files.extend((os.path.join(split, cls, n), label) for n in names)
    return files


def _fingerprint(files: list[tuple[str, int]]) -> dict:
    digest = hashlib.sha1("\n".join(p for p, _ in files).encode("utf-8")).hexdigest()
    return {"count": len(files), "names_sha1": digest}


def _cache_problem(arrays: dict, meta: dict) -> str | None:
    """What is wrong with cached arrays whose meta matched (None: they are what we write)."""
    for split in SPLITS:
        count = meta["splits"][split]["count"]
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != (count, 3, 32, 32):
            return f"{split}_images is not uint8 [{count}, 3, 32, 32]"
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.shape != (count,):
            return f"{split}_labels is not int64 [{count}]"
        if count and (int(labels.min()) < 0 or int(labels.max()) >= len(CLASSES)):
            return f"{split}_labels outside 0..{len(CLASSES) - 1}"
    return None


class Cinic10Source:
    name = "cinic10"

    def default_root(self) -> str | None:
        return os.path.join(default_data_root(), "cinic-10")

    def is_present(self, root: str | None) -> bool:
        root = root or self.default_root()
        return all(os.path.isdir(os.path.join(root, s)) for s in SPLITS)

    def describe(self) -> str:
        return (
            "CINIC-10: 10 classes, 90,000 32x32 images each in train/valid/test; reads "
            f"<root>/{{train,valid,test}}/<class>/*.png (cached once as {CACHE_NAME}); "
            f"download CINIC-10.tar.gz from {URL} and extract it into the root"
        )

    def load(self, root: str | None = None, download: bool = False, **options) -> Dataset:
        check_options(self.name, options, {})
        root = os.path.abspath(os.path.expanduser(root or self.default_root()))
        if not self.is_present(root):
            hint = "automatic download is not supported for CINIC-10; " if download else ""
            raise DataError(
                f"CINIC-10 not found: expected {root}/train, {root}/valid and {root}/test with one "
                f"folder per class; {hint}download CINIC-10.tar.gz from {URL} and extract it "
                f"there (or pass the folder that holds train/valid/test as the root)"
            )
        listing = {s: _list_split(root, s) for s in SPLITS}
        meta = {
            "version": CACHE_VERSION,
            "splits": {s: _fingerprint(files) for s, files in listing.items()},
        }
        cache_path = os.path.join(root, CACHE_NAME)
        arrays = self._read_cache(cache_path, meta)
        if arrays is None:
            arrays = {}
            for split, files in listing.items():
                arrays[f"{split}_images"], arrays[f"{split}_labels"] = self._convert(root, files)
            self._write_cache(cache_path, arrays, meta)
        sets = {
            s: ImageSet(torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_labels"]))
            for s in SPLITS
        }
        info = DatasetInfo(self.name, 10, 3, 32, MEAN, STD, crop_padding=4)
        return Dataset(info=info, train=sets["train"], test=sets["test"], valid=sets["valid"])

    @staticmethod
    def _convert(root: str, files: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        images = np.empty((len(files), 3, 32, 32), dtype=np.uint8)
        for i, (rel, _) in enumerate(files):
            path = os.path.join(root, rel)
            try:
                pixels = _read_png(path)
            except Exception as exc:  # PIL raises several types for bad files
                raise DataError(
                    f"{path} could not be decoded as an image ({type(exc).__name__}: {exc}); "
                    "replace it with the file from the CINIC-10 archive or delete it"
                ) from None
            if pixels.shape != (32, 32, 3):
                raise DataError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}; CINIC-10 images are 32x32")
            images[i] = pixels.transpose(2, 0, 1)
        labels = np.fromiter((label for _, label in files), dtype=np.int64, count=len(files))
        return images, labels

    @staticmethod
    def _read_cache(path: str, meta: dict) -> dict | None:
        """The cached arrays when the cache exists and matches the folder, else None."""
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                if json.loads(str(npz["meta"])) != meta:
                    return None  # files added, removed or renamed since the cache was written
                arrays = {k: npz[k] for k in npz.files if k != "meta"}
        except Exception as exc:  # our own file: a bad one is rebuilt, not fatal
            warnings.warn(f"ignoring unreadable CINIC-10 cache {path} ({exc}); converting again")
            return None
        problem = _cache_problem(arrays, meta)
        if problem:
            warnings.warn(f"ignoring damaged CINIC-10 cache {path} ({problem}); converting again")
            return None
        return arrays

    @staticmethod
    def _write_cache(path: str, arrays: dict, meta: dict) -> None:
        from dfa_ray.atomic import atomic_write

        try:
            atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays))
        except OSError as exc:
            # Not fatal: the data is in memory already; only the next load is slower.
            warnings.warn(
                f"cannot write the CINIC-10 cache {path} ({exc}): every load will decode the "
                "PNGs again; make the folder writable or copy the dataset to a writable place"
            )


DATASETS.register("cinic10")(Cinic10Source())
