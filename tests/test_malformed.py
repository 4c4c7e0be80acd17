"""Hostile and malformed input, without Ray: every corrupt dataset, checkpoint or genotype file
ends in the project's own error (`DfaRayError`) with a message that names the file (or in a
valid object, where the damage happened to be harmless), never in another exception; a pickle
that would run code is refused and never runs; no spec or trial name writes outside storage.

Each property counts its examples by outcome (`reliability.Tally`); the counts are recorded for
the reliability table when the module ends (see tests/reliability.py, docs/reliability.md).
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dfa_ray.errors import CheckpointError, ConfigError, DataError, DfaRayError
from reliability import Tally, tries

REPO = Path(__file__).resolve().parent.parent
TALLIES: dict[str, Tally] = {}
# No shrinking: a failing property reports its (unshrunk) draws at once instead of spending
# minutes on a 2-core machine minimising them; the example database replays a failure first.
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


class Files(tuple):
    """A fixture's values with a short repr (hypothesis prints the arguments of every example;
    the repr of megabytes of checkpoint bytes would cost more than the example)."""

    def __repr__(self) -> str:
        return f"<{len(self)} fixture values>"


def tally(name: str) -> Tally:
    if name not in TALLIES:
        TALLIES[name] = Tally(name)
    return TALLIES[name]


@pytest.fixture(scope="module", autouse=True)
def _record_tallies():
    yield
    for t in TALLIES.values():
        t.flush()


def expect_named_error(exc: BaseException, path: Path | str, kind: type = DfaRayError) -> None:
    """The property's verdict on an exception: the project's error type, naming the file."""
    assert isinstance(exc, kind), f"{type(exc).__name__} escaped: {exc}"
    assert str(path) in str(exc), f"the message does not name {path}: {exc}"


# --- byte-level damage -------------------------------------------------------------------------
@st.composite
def damaged(draw, original: bytes) -> bytes:
    """Truncation, flipped bytes, random bytes, inserted/deleted bytes, an empty file."""
    kind = draw(st.sampled_from(["truncate", "flip", "random", "insert", "delete", "empty", "overwrite_head"]))
    n = len(original)
    if kind == "truncate":
        return original[: draw(st.integers(0, max(0, n - 1)))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=512))
    if kind == "insert":
        i = draw(st.integers(0, n))
        return original[:i] + draw(st.binary(min_size=1, max_size=64)) + original[i:]
    if kind == "delete":
        i = draw(st.integers(0, max(0, n - 1)))
        return original[:i] + original[i + draw(st.integers(1, 64)):]
    if kind == "overwrite_head":
        head = draw(st.binary(min_size=1, max_size=32))
        return head + original[len(head):]
    return b""


JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2, 10, 255, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10), st.sampled_from(["resnet8", "resnet20", "../x", "/etc/passwd", "", "digits"]),
    st.binary(max_size=8),
    st.lists(st.integers(-3, 12), max_size=4), st.lists(st.floats(allow_nan=True), max_size=3),
    st.builds(list), st.builds(dict),  # fresh objects: a shared one would carry edits between examples
    st.dictionaries(st.text(max_size=5), st.integers(-2, 2), max_size=2),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


@st.composite
def mutated(draw, original: Any, junk=JUNK, max_mutations: int = 3) -> Any:
    """A copy of a JSON-like structure with 1..3 random edits: replace a value, delete a key or
    list item, add a key, empty a container, lengthen or shorten a list."""
    data = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        kind = draw(st.sampled_from(["replace", "replace", "delete", "add_key", "empty", "grow", "shrink"]))
        if kind == "replace":
            parent[last] = draw(junk)
        elif kind == "delete":
            del parent[last]
        elif kind == "add_key":
            target = parent[last] if isinstance(parent[last], dict) else parent
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(junk)
        elif kind == "empty":
            value = parent[last]
            parent[last] = type(value)() if isinstance(value, (dict, list, str)) else None
        elif kind == "grow" and isinstance(parent[last], list):
            items = parent[last]
            items.append(copy.deepcopy(items[-1]) if items else draw(junk))
        elif kind == "shrink" and isinstance(parent[last], list) and parent[last]:
            parent[last].pop(draw(st.integers(0, len(parent[last]) - 1)))
    return data


# ==================================================================================================
# CIFAR pickle batches
# ==================================================================================================
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def cifar_batch(seed: int, n: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch %d" % seed, b"labels": [int(x) for x in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    originals = {}
    for i, name in enumerate(CIFAR10_FILES):
        # protocol 2, like the real (Python 2) files: bytes go through _codecs.encode
        originals[name] = pickle.dumps(cifar_batch(i), protocol=2)
        (folder / name).write_bytes(originals[name])
    from dfa_ray.data import load_dataset

    reference = load_dataset("cifar10", root=str(root))
    assert len(reference.train) == 20 and len(reference.test) == 4
    return Files((root, folder, originals, reference))


def _restore(folder: Path, originals: dict[str, bytes]) -> None:
    for name, data in originals.items():
        (folder / name).write_bytes(data)


def _check_cifar(root: Path, target: Path, name: str) -> None:
    from dfa_ray.data import load_dataset

    try:
        data = load_dataset("cifar10", root=str(root))
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        expect_named_error(exc, target, DataError)
        tally(name).add("DataError naming the file")
    else:
        assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
        assert int(data.train.labels.min()) >= 0 and int(data.train.labels.max()) <= 9
        tally(name).add("valid data (harmless damage)")


CIFAR_BYTES = "CIFAR-10 batch file corrupted (truncated, flipped, random, inserted bytes)"


@settings(max_examples=tries(CIFAR_BYTES), **SETTINGS)
@given(st.data())
def test_corrupt_cifar_batch_files(cifar_root, data):
    root, folder, originals, _ = cifar_root
    _restore(folder, originals)
    name = data.draw(st.sampled_from(CIFAR10_FILES))
    target = folder / name
    target.write_bytes(data.draw(damaged(originals[name])))
    _check_cifar(root, target, CIFAR_BYTES)


CIFAR_STRUCT = "CIFAR batch pickle of the wrong structure (types, keys, shapes, labels)"

ARRAYS = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill, dtype=dtype) if dtype != "O" else np.array([fill], dtype=object),
    st.sampled_from(["uint8", "int64", "float32", "int8", "uint16", "bool"]),
    st.sampled_from([(4, 3072), (0, 3072), (4, 3071), (3072,), (4, 3, 32, 32), (2, 2), (), (5, 3072)]),
    st.integers(0, 1),
)
LABELS = st.one_of(
    st.lists(st.integers(0, 9), min_size=4, max_size=4),
    st.lists(st.integers(-(2**70), 2**70), min_size=0, max_size=5),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4),
    st.lists(st.sampled_from(["1", "x", None, b"3"]), min_size=4, max_size=4),
    st.lists(st.lists(st.integers(0, 9), max_size=2), min_size=4, max_size=4),
    ARRAYS, JUNK,
)


@st.composite
def cifar_structures(draw) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(JUNK, st.lists(st.integers(), max_size=3), st.tuples(st.integers())))
    batch = {b"data": draw(st.one_of(ARRAYS, ARRAYS, JUNK)), b"labels": draw(LABELS)}
    if draw(st.booleans()):
        batch[b"data"] = cifar_batch(0)[b"data"]  # only the labels are wrong
    if draw(st.integers(0, 4)) == 0:
        key = draw(st.sampled_from([b"data", b"labels"]))
        batch[draw(st.sampled_from([b"fine_labels", b"Data", "data", key + b"_"]))] = batch.pop(key)
    if draw(st.booleans()):
        batch[draw(st.binary(max_size=6))] = draw(JUNK)
    return batch


@settings(max_examples=tries(CIFAR_STRUCT), **SETTINGS)
@given(st.data())
def test_cifar_batches_of_the_wrong_structure(cifar_root, data):
    root, folder, originals, _ = cifar_root
    _restore(folder, originals)
    name = data.draw(st.sampled_from(CIFAR10_FILES))
    target = folder / name
    target.write_bytes(pickle.dumps(data.draw(cifar_structures()), protocol=data.draw(st.sampled_from([2, 4]))))
    _check_cifar(root, target, CIFAR_STRUCT)


# ==================================================================================================
# Fashion-MNIST IDX files
# ==================================================================================================
IDX_FILES = {"train-images-idx3-ubyte": (5, 28, 28), "train-labels-idx1-ubyte": (5,),
             "t10k-images-idx3-ubyte": (3, 28, 28), "t10k-labels-idx1-ubyte": (3,)}
IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(IDX_CODES.get(code, ">u1")).tobytes()


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    originals = {}
    for name, shape in IDX_FILES.items():
        high = 10 if "labels" in name else 256
        originals[name] = idx_bytes(rng.integers(0, high, shape).astype(np.uint8))
        (root / name).write_bytes(originals[name])
    from dfa_ray.data import load_dataset

    assert len(load_dataset("fashion_mnist", root=str(root)).train) == 5
    return Files((root, originals))


@st.composite
def idx_damage(draw, original: bytes, shape: tuple) -> bytes:
    """Bytes damage, or a well-formed header of another type / rank / size over random values."""
    if draw(st.booleans()):
        return draw(damaged(original))
    code = draw(st.sampled_from(sorted(IDX_CODES) + [0x00, 0x07, 0xFF]))
    ndim = draw(st.sampled_from([len(shape), 0, 1, 2, 3, 4]))
    dims = draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim)) if draw(st.booleans()) else list(
        shape[:ndim]) + [1] * max(0, ndim - len(shape))
    header = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    size = int(np.prod(dims, dtype=np.int64)) * np.dtype(IDX_CODES.get(code, ">u1")).itemsize
    if code in (0x0D, 0x0E) and draw(st.booleans()):
        values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=4))
        body = np.resize(np.array(values, dtype=IDX_CODES[code]), max(size // np.dtype(IDX_CODES[code]).itemsize, 0))
        body = body.tobytes()
    else:
        body = draw(st.binary(min_size=min(size, 64), max_size=min(size, 64))) * (size // 64 + 1)
        body = body[:size]
    extra = draw(st.sampled_from([0, 0, 0, -1, 1]))
    return header + (body[:extra] if extra < 0 else body + b"\0" * extra)


IDX_CASE = "Fashion-MNIST IDX file corrupted (bytes, header, type code, gzip)"


@settings(max_examples=tries(IDX_CASE), **SETTINGS)
@given(st.data())
def test_corrupt_idx_files(idx_root, data):
    from dfa_ray.data import load_dataset

    root, originals = idx_root
    for name, raw in originals.items():
        (root / (name + ".gz")).unlink(missing_ok=True)
        (root / name).write_bytes(raw)
    name = data.draw(st.sampled_from(sorted(IDX_FILES)))
    damaged_raw = data.draw(idx_damage(originals[name], IDX_FILES[name]))
    (root / name).unlink()
    fmt = data.draw(st.sampled_from(["raw", "gzip", "gzip-damaged"]))
    if fmt == "raw":
        target = root / name
        target.write_bytes(damaged_raw)
    else:
        target = root / (name + ".gz")
        packed = gzip.compress(damaged_raw if fmt == "gzip" else originals[name])
        target.write_bytes(packed if fmt == "gzip" else data.draw(damaged(packed)))
    try:
        dataset = load_dataset("fashion_mnist", root=str(root))
    except Exception as exc:  # noqa: BLE001
        expect_named_error(exc, target, DataError)
        tally(IDX_CASE).add("DataError naming the file")
    else:
        assert dataset.train.images.dtype == torch.uint8 and dataset.train.images.shape[1:] == (1, 28, 28)
        for split in (dataset.train, dataset.test):
            assert len(split.labels) == len(split.images)
            assert len(split.labels) == 0 or 0 <= int(split.labels.min()) <= int(split.labels.max()) <= 9
        tally(IDX_CASE).add("valid data (harmless damage)")


# ==================================================================================================
# CINIC-10 image folders and their cache
# ==================================================================================================
@pytest.fixture(scope="module")
def cinic_root(tmp_path_factory):
    from PIL import Image

    from dfa_ray.data import load_dataset
    from dfa_ray.data.cinic import CACHE_NAME, CLASSES, SPLITS

    root = tmp_path_factory.mktemp("cinic")
    rng = np.random.default_rng(0)
    pngs = {}
    for split in SPLITS:
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
            (folder / "img_0.png").write_bytes(buffer.getvalue())
            pngs[folder / "img_0.png"] = buffer.getvalue()
    reference = load_dataset("cinic10", root=str(root))
    cache = root / CACHE_NAME
    assert cache.exists()
    with np.load(cache, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Files((root, cache, cache.read_bytes(), pngs, reference, arrays))


def _cinic_restore(cache: Path, cache_bytes: bytes, pngs: dict) -> None:
    for path, raw in pngs.items():
        path.write_bytes(raw)
    cache.write_bytes(cache_bytes)


def _same_data(a, b) -> bool:
    return all(torch.equal(getattr(a, s).images, getattr(b, s).images)
               and torch.equal(getattr(a, s).labels, getattr(b, s).labels) for s in ("train", "valid", "test"))


CINIC_BYTES = "CINIC-10 cache corrupted (bytes) or an image file corrupted"


@settings(max_examples=tries(CINIC_BYTES), **SETTINGS)
@given(st.data())
def test_corrupt_cinic_cache_or_images(cinic_root, data):
    from dfa_ray.data import load_dataset

    root, cache, cache_bytes, pngs, reference, _ = cinic_root
    _cinic_restore(cache, cache_bytes, pngs)
    if data.draw(st.integers(0, 3)) > 0:
        target = cache
        cache.write_bytes(data.draw(damaged(cache_bytes)))
    else:
        target = data.draw(st.sampled_from(sorted(pngs)))
        target.write_bytes(data.draw(damaged(pngs[target])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = load_dataset("cinic10", root=str(root))
        except Exception as exc:  # noqa: BLE001
            expect_named_error(exc, target, DataError)
            assert target != cache, "a damaged cache must be rebuilt, not fatal"
            tally(CINIC_BYTES).add("DataError naming the image")
            return
    if target == cache:
        assert _same_data(dataset, reference), "a damaged cache must be rebuilt from the images"
        warned = any(str(cache) in str(w.message) for w in caught)
        tally(CINIC_BYTES).add("cache rebuilt with a warning" if warned else "cache rebuilt (meta changed)")
    else:
        assert dataset.train.images.shape == (10, 3, 32, 32)
        tally(CINIC_BYTES).add("valid data (image still decodes)")


CINIC_CONTENT = "CINIC-10 cache of the wrong content (arrays of other shapes, types, labels)"
CINIC_ARRAYS = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill).astype(dtype),
    st.sampled_from(["uint8", "int64", "float32", "int32", "uint16", "bool", "float64"]),
    st.sampled_from([(10, 3, 32, 32), (10, 32, 32, 3), (9, 3, 32, 32), (10,), (9,), (0,), (10, 1), (), (10, 3, 8, 8)]),
    st.sampled_from([0, 1, 9, 10, -1, 255, 1000]),
)


@settings(max_examples=tries(CINIC_CONTENT), **SETTINGS)
@given(st.data())
def test_cinic_cache_of_the_wrong_content(cinic_root, data):
    """A cache whose meta matches the folder but whose arrays are not what the loader wrote."""
    from dfa_ray.data import load_dataset

    root, cache, cache_bytes, pngs, reference, arrays = cinic_root
    _cinic_restore(cache, cache_bytes, pngs)
    bad = dict(arrays)
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(k for k in arrays if k != "meta")))
        action = data.draw(st.sampled_from(["replace", "replace", "drop", "labels_out_of_range"]))
        if action == "drop":
            bad.pop(key, None)
        elif action == "labels_out_of_range" and key.endswith("_labels"):
            bad[key] = np.full_like(arrays[key], data.draw(st.sampled_from([-1, 10, 2**40])))
        else:
            bad[key] = data.draw(CINIC_ARRAYS)
    if data.draw(st.booleans()):
        bad[data.draw(st.sampled_from(["extra", "train_images_", "x"]))] = np.zeros(3)
    with open(cache, "wb") as fh:
        np.savez(fh, **bad)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            dataset = load_dataset("cinic10", root=str(root))
        except Exception as exc:  # noqa: BLE001
            expect_named_error(exc, cache, DataError)
            tally(CINIC_CONTENT).add("DataError naming the cache")
            return
    # Accepted: the rebuilt data, or arrays of exactly the shape, type and label range the loader
    # writes (a cache whose pixels were replaced by other valid pixels cannot be told apart
    # without a content digest; a cache never holds labels outside 0..9 or ill-shaped arrays).
    if _same_data(dataset, reference):
        tally(CINIC_CONTENT).add("cache rebuilt")
        return
    for split in ("train", "valid", "test"):
        part = getattr(dataset, split)
        assert part.images.dtype == torch.uint8 and part.images.shape == (10, 3, 32, 32), split
        assert part.labels.dtype == torch.int64 and part.labels.shape == (10,), split
        assert 0 <= int(part.labels.min()) and int(part.labels.max()) <= 9, f"{split} labels out of range"
    tally(CINIC_CONTENT).add("well-formed arrays used (other pixel values)")


# ==================================================================================================
# Teacher checkpoints
# ==================================================================================================
@pytest.fixture(scope="module")
def digits_data():
    from dfa_ray.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def tiny_teacher(digits_data, tmp_path_factory):
    """A finished resnet14 teacher (one epoch) in a teacher folder: (folder, raw bytes, state)."""
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import CHECKPOINT_NAME, train_teacher

    folder = tmp_path_factory.mktemp("teacher")
    train_teacher("resnet14", digits_data, get_recipe("quick", {"epochs": 1, "batch_size": 256}), seed=0,
                  out_dir=folder, device="cpu")
    path = folder / CHECKPOINT_NAME
    raw = path.read_bytes()
    state = torch.load(path, weights_only=True)
    return Files((folder, path, raw, state))


def _check_teacher(folder: Path, path: Path, data, name: str) -> None:
    from dfa_ray.engine.teacher import load_teacher

    try:
        model, meta = load_teacher(folder, data, expect_model="resnet14")
    except Exception as exc:  # noqa: BLE001
        expect_named_error(exc, path, CheckpointError)
        tally(name).add("CheckpointError naming the file")
    else:
        assert meta["model"] == "resnet14"
        with torch.no_grad():
            out = model(torch.zeros(1, 1, 8, 8))
        assert out.shape == (1, 10)
        tally(name).add("valid teacher (harmless damage)")


TEACHER_BYTES = "teacher checkpoint.pt corrupted (truncated, flipped, random bytes)"


@settings(max_examples=tries(TEACHER_BYTES), **SETTINGS)
@given(st.data())
def test_corrupt_teacher_checkpoints(tiny_teacher, digits_data, data):
    folder, path, raw, _ = tiny_teacher
    path.write_bytes(data.draw(damaged(raw)))
    try:
        _check_teacher(folder, path, digits_data, TEACHER_BYTES)
    finally:
        path.write_bytes(raw)


TEACHER_STRUCT = "teacher checkpoint.pt: a valid torch file of the wrong structure"
TENSORS = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                    st.sampled_from([(), (1,), (3, 3), (16, 1, 3, 3), (10, 64), (0,)]),
                    st.sampled_from([torch.float32, torch.int64, torch.float16, torch.bool]))
TORCH_JUNK = st.one_of(JUNK, TENSORS, st.lists(TENSORS, max_size=2), st.dictionaries(st.text(max_size=4), TENSORS, max_size=2))


def _shallow_state(state: dict) -> dict:
    """The checkpoint as nested dicts/lists whose leaves are tensors or plain values."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}


@st.composite
def teacher_structures(draw, state: dict) -> Any:
    if draw(st.integers(0, 12)) == 0:
        return draw(TORCH_JUNK)
    out = _shallow_state(state)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["top", "meta", "meta", "model", "run", "recipe"]))
        if section == "top":
            target = out
        elif section == "recipe" and isinstance(out.get("meta"), dict) and isinstance(out["meta"].get("recipe"), dict):
            out["meta"]["recipe"] = target = dict(out["meta"]["recipe"])
        elif isinstance(out.get(section), dict):
            target = out[section]
        else:
            continue
        if not target:
            continue
        key = draw(st.sampled_from(sorted(target, key=str)))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del target[key]
        elif action == "add":
            target[draw(st.text(max_size=6))] = draw(TORCH_JUNK)
        else:
            target[key] = draw(TORCH_JUNK)
    return out


@settings(max_examples=tries(TEACHER_STRUCT), **SETTINGS)
@given(st.data())
def test_teacher_checkpoints_of_the_wrong_structure(tiny_teacher, digits_data, data):
    folder, path, raw, state = tiny_teacher
    buffer = io.BytesIO()
    torch.save(data.draw(teacher_structures(state)), buffer)
    path.write_bytes(buffer.getvalue())
    try:
        _check_teacher(folder, path, digits_data, TEACHER_STRUCT)
    finally:
        path.write_bytes(raw)


# ==================================================================================================
# Genotype files
# ==================================================================================================
@pytest.fixture(scope="module")
def genotype_doc():
    from dfa_ray.dfa.genotype import reference_genotype
    from dfa_ray.dfa.pairing import pair_groups
    from dfa_ray.models import create_model

    teacher, student = create_model("resnet14", num_classes=10), create_model("resnet8", num_classes=10)
    geno = reference_genotype("random", pair_groups(teacher, student, 32), "resnet14", "resnet8", "cifar10", seed=1)
    doc = geno.to_dict()
    doc["options"] = {"lam": 10.0, "gamma_ts": 1.0}
    return doc


GENO_JUNK = st.one_of(JUNK, st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.5, 1.5, 0, 2, 99, -1]))
GENO_MUTATION = "genotype JSON mutated (types, missing/extra keys, NaN/negative weights, lengths, version)"


def _check_genotype(path: Path, name: str) -> None:
    from dfa_ray.dfa.genotype import Genotype

    try:
        geno = Genotype.load(path)
    except Exception as exc:  # noqa: BLE001
        expect_named_error(exc, path, CheckpointError)
        tally(name).add("CheckpointError naming the file")
    else:
        for group in geno.groups:
            assert len(group.weights) == len(group.candidates) > 0
            assert all(math.isfinite(w) and w >= 0 for w in group.weights)
            assert abs(sum(group.weights) - 1) <= 1e-4
        tally(name).add("valid genotype (harmless change)")


@settings(max_examples=tries(GENO_MUTATION), **SETTINGS)
@given(st.data())
def test_mutated_genotype_json(genotype_doc, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("geno", numbered=True) / "genotype.json"
    doc = data.draw(mutated(genotype_doc, junk=GENO_JUNK))
    path.write_text(json.dumps(doc, allow_nan=True, default=repr))
    _check_genotype(path, GENO_MUTATION)


GENO_BYTES = "genotype file corrupted (truncated, flipped, random bytes)"


@settings(max_examples=tries(GENO_BYTES), **SETTINGS)
@given(st.data())
def test_corrupt_genotype_files(genotype_doc, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("geno", numbered=True) / "genotype.json"
    path.write_bytes(data.draw(damaged(json.dumps(genotype_doc, indent=2).encode())))
    _check_genotype(path, GENO_BYTES)


# ==================================================================================================
# Sweep specs: extreme numbers (test_spec.py covers types, keys, lists, ranges, YAML)
# ==================================================================================================
def quickstart() -> dict:
    doc = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    # every numeric field a spec can hold, so that each can receive an extreme value
    doc["recipe"].update({"lr": 0.05, "weight_decay": 5e-4, "batch_size": 64, "momentum": 0.9})
    doc["teachers"]["recipe"] = {"epochs": 3}
    doc["search"]["options"].update({"rho": 0.0, "arch_lr": 3e-4})
    doc["search"]["space"]["order"] = {"randint": [1, 2]}
    doc["distill"]["epochs"] = 4
    doc["distill"]["options"] = {"at": {"w_feat": 50}, "kd": {"w_kl": 0.9, "temperature": 4}}
    return doc


EXTREME = st.sampled_from([0, -1, -0.0, 1e-320, 0.5, 1e12, 1e39, 1e308, -1e308, float("inf"), -float("inf"),
                           float("nan"), 2**31, 2**53 + 1, 2**63, 2**64, 10**100, -(10**100)])
SPEC_EXTREME = "extreme numbers in every numeric field of a spec"


def _numeric_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    return [p for p in _paths(node, prefix) if p and isinstance(_get(node, p), (int, float))
            and not isinstance(_get(node, p), bool)]


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


@settings(max_examples=tries(SPEC_EXTREME), **SETTINGS)
@given(st.data())
def test_extreme_numbers_in_a_spec(tmp_path_factory, data):
    from dfa_ray.engine.methods import resolve_options
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.spec import MAX_EPOCHS, MAX_SAMPLES, MAX_SEED, parse_spec, tune_space

    doc = quickstart()
    doc["storage"] = str(tmp_path_factory.getbasetemp() / "extreme-storage")
    paths = _numeric_paths(doc)
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
        parent = _get(doc, path[:-1])
        parent[path[-1]] = data.draw(EXTREME)
    try:
        spec = parse_spec(doc)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, ConfigError), f"{type(exc).__name__} escaped: {exc}"
        assert str(exc).startswith("invalid sweep spec") and len(str(exc).splitlines()) >= 2
        tally(SPEC_EXTREME).add("ConfigError naming the field")
        return
    # Accepted: then everything the sweep derives from it must build too.
    assert spec.search.epochs <= MAX_EPOCHS and spec.search.num_samples <= MAX_SAMPLES
    assert all(0 <= s <= MAX_SEED for s in spec.distill.seeds) and 0 <= spec.teachers.seed <= MAX_SEED
    teacher_recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
    distill_recipe = get_recipe(spec.protocol, spec.distill_recipe_overrides())
    assert 1 <= teacher_recipe.epochs <= MAX_EPOCHS and 1 <= distill_recipe.epochs <= MAX_EPOCHS
    assert math.isfinite(distill_recipe.lr) and math.isfinite(teacher_recipe.lr)
    spec.search.search_options()
    tune_space(spec.search.space)
    for method in spec.distill.methods:
        resolve_options(method.split(":")[0], spec.distill.options.get(method, {}))
    assert parse_spec(spec.to_dict()) == spec
    tally(SPEC_EXTREME).add("valid spec (recipes, options and Tune space build)")


# ==================================================================================================
# Safety
# ==================================================================================================
class _RunsCode:
    """Unpickling this runs `touch <marker>`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


SAFETY_PICKLE = ("pickle that runs code (reduce -> os.system) as checkpoint, teacher, trial state, "
                 "CIFAR batch, CINIC cache")


def test_code_executing_pickles_are_refused(tmp_path, tiny_teacher, digits_data, cinic_root, monkeypatch):
    from dfa_ray.data import load_dataset
    from dfa_ray.engine.checkpoint import load_checkpoint
    from dfa_ray.engine.teacher import CHECKPOINT_KIND, load_teacher

    marker = tmp_path / "code-ran"
    # the payload really runs when unpickled without protection: the test can see it
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()
    marker.unlink()
    outcomes = []

    # 1. a checkpoint (every training state is read by engine.checkpoint.load_checkpoint)
    state_file = tmp_path / "state.pt"
    torch.save({"epoch": 3, "task": _RunsCode(marker)}, state_file)
    with pytest.raises(CheckpointError, match=str(state_file)):
        load_checkpoint(state_file)
    outcomes.append("checkpoint: CheckpointError")

    # 2. a teacher folder
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    torch.save({"kind": CHECKPOINT_KIND, "version": 1, "meta": _RunsCode(marker)}, teacher_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=str(teacher_dir / "checkpoint.pt")):
        load_teacher(teacher_dir, digits_data)
    outcomes.append("teacher: CheckpointError")

    # 3. a trial's newest state.pt, restored by the trainable: refused with a warning, starts over
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.tune.trainables import STATE_FILE, DistillTrainable

    # No Ray here: outside a Ray process ray.get_gpu_ids() (in trial_device) would start one.
    monkeypatch.setattr("dfa_ray.tune.trainables.trial_device", lambda gpu: torch.device("cpu"))
    trial = DistillTrainable.__new__(DistillTrainable)
    trial.setup({"sweep": "s", "stage": "distill", "dataset": "digits",
                 "data_spec": {"name": "digits", "root": None, "options": {}}, "fast": {}, "plugins": [], "seed": 0,
                 "cpu": 1, "gpu": 0, "teacher": "resnet14", "student": "resnet8",
                 "teacher_path": str(tiny_teacher[0]), "method": "vanilla", "genotype": None, "method_options": {},
                 "recipe": get_recipe("quick", {"epochs": 2, "batch_size": 256}).model_dump(mode="json")}, data=digits_data)
    checkpoint = tmp_path / "trial" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    torch.save({"epoch": 1, "task": _RunsCode(marker)}, checkpoint / STATE_FILE)
    with pytest.warns(UserWarning, match="starts over"):
        trial.load_checkpoint(str(checkpoint))
    assert trial.run.epoch == 0
    outcomes.append("trial state: warning, starts over")

    # 4. a CIFAR batch
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for i, name in enumerate(CIFAR10_FILES):
        (cifar / name).write_bytes(pickle.dumps(cifar_batch(i), protocol=2))
    (cifar / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3.*not allowed"):
        load_dataset("cifar10", root=str(tmp_path))
    outcomes.append("CIFAR batch: DataError")

    # 5. the CINIC-10 cache (np.load with allow_pickle=False): ignored with a warning, rebuilt
    root, cache, cache_bytes, pngs, reference, arrays = cinic_root
    _cinic_restore(cache, cache_bytes, pngs)
    with open(cache, "wb") as fh:
        np.savez(fh, **{**arrays, "train_labels": np.array([_RunsCode(marker)], dtype=object)})
    with pytest.warns(UserWarning, match="CINIC-10 cache"):
        dataset = load_dataset("cinic10", root=str(root))
    assert _same_data(dataset, reference)
    outcomes.append("CINIC cache: warning, rebuilt")

    assert not marker.exists(), "a pickle ran code"
    import ray

    assert not ray.is_initialized(), "this test must not start Ray"
    from reliability import record

    record(SAFETY_PICKLE, len(outcomes), "; ".join(outcomes) + "; marker never created")


SAFETY_NAMES = "names with '..', '/', absolute paths (sweep, pair, trial, stage)"
HOSTILE = st.one_of(
    st.lists(st.sampled_from(["..", "/", ".", "a", "etc", "passwd", "~", "\\", "%2e%2e", "\x00", " ", "-", "_",
                              "C:", "//", "resnet8", "->", "\n"]), min_size=1, max_size=6).map("".join),
    st.text(max_size=20),
    st.sampled_from(["..", "../..", "/", "/tmp", "/etc/cron.d", "~root", ".hidden", "a/../../b", "..\\..", "", "."]),
)


@settings(max_examples=tries(SAFETY_NAMES), **SETTINGS)
@given(st.data())
def test_no_spec_or_trial_name_writes_outside_storage(tmp_path_factory, digits_data, data):
    from dfa_ray.results import STAGES, ResultsWriter
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import teacher_jobs

    sandbox = tmp_path_factory.mktemp("sandbox", numbered=True)
    storage = sandbox / "storage"
    doc = {"name": "ok", "storage": str(storage), "data": {"name": "digits"},
           "pairs": [{"teacher": "resnet14", "student": "resnet8"}], "search": {"enabled": False},
           "distill": {"methods": ["vanilla"]}}
    where = data.draw(st.sampled_from(["name", "teacher", "student", "trial", "stage"]))
    hostile = data.draw(HOSTILE)
    if where == "name":
        doc["name"] = hostile
    elif where in ("teacher", "student"):
        doc["pairs"][0][where] = hostile
    outcome = "ConfigError"
    try:
        spec = parse_spec(doc)
    except ConfigError:
        spec = None
    if spec is not None:
        inside = storage.resolve()
        folders, _ = teacher_jobs(spec, digits_data)
        paths = [spec.sweep_dir, spec.teacher_store, *folders.values()]
        for pair in spec.pairs:
            paths += [spec.sweep_dir / "tune" / f"search-{pair.dir_name}", spec.sweep_dir / "genotypes" / f"{pair.dir_name}.json"]
        writer = ResultsWriter(spec.sweep_dir)
        stage = hostile if where == "stage" else data.draw(st.sampled_from(STAGES))
        trial_id = hostile if where == "trial" else "t_00000"
        row = {"sweep": spec.name, "stage": stage, "trial_id": trial_id, "pair": "resnet14->resnet8",
               "student": "resnet8", "dataset": "digits", "method": "vanilla", "seed": 0, "config": {}}
        try:
            paths.append(writer.write_epoch({**row, "epoch": 1}))
            paths.append(writer.write_trial({**row, "status": "completed", "epochs_run": 1, "epochs_planned": 1}))
            outcome = "paths inside storage"
        except ValueError as exc:  # a stage outside STAGES is refused before any path is made
            assert where == "stage" and "stage" in str(exc)
            outcome = "stage refused"
        for path in paths:
            resolved = Path(path).resolve()
            assert resolved == inside or inside in resolved.parents, f"{path} leaves {storage}"
    written = [p for p in sandbox.rglob("*") if p != storage and storage not in p.parents]
    assert not written, f"written outside storage: {written}"
    tally(SAFETY_NAMES).add(outcome)


# ==================================================================================================
# Regressions: inputs the properties above found to escape as other exceptions
# ==================================================================================================
REGRESSIONS = "inputs the properties found escaping as other exceptions (regression cases)"


def _regression_cases(tmp: Path, tiny_teacher, digits_data, cinic_root, genotype_doc) -> dict:
    """name -> (callable that loads the bad input, the path its message must name, error type or
    None when a warning and a rebuild are expected)."""
    from dfa_ray.data import load_dataset
    from dfa_ray.dfa.genotype import Genotype
    from dfa_ray.engine.checkpoint import load_checkpoint
    from dfa_ray.engine.teacher import load_teacher
    from dfa_ray.spec import parse_spec

    folder, path, raw, state = tiny_teacher

    def teacher_with(**changes):
        def load():
            bad = _shallow_state(state)
            for key, value in changes.items():
                if key.startswith("meta."):
                    bad["meta"] = {**bad["meta"]}
                    if value is _DROP:
                        bad["meta"].pop(key[5:])
                    else:
                        bad["meta"][key[5:]] = value
                else:
                    bad[key] = value
            torch.save(bad, path)
            try:
                load_teacher(folder, digits_data, expect_model="resnet14")
            finally:
                path.write_bytes(raw)
        return load

    def genotype_file(name, content):
        target = tmp / name
        target.write_bytes(content)
        return lambda: Genotype.load(target), target

    empty = tmp / "state.pt"
    empty.write_bytes(b"")
    doc = copy.deepcopy(genotype_doc)
    doc["groups"][0]["student_group"] = float("inf")
    geno_inf = genotype_file("inf.json", json.dumps(doc).encode())
    geno_bytes = genotype_file("latin1.json", json.dumps(genotype_doc).encode() + b"\xff\xfe")

    cifar = tmp / "cifar-10-batches-py"
    cifar.mkdir()
    for i, name in enumerate(CIFAR10_FILES):
        (cifar / name).write_bytes(pickle.dumps(cifar_batch(i), protocol=2))
    huge = cifar_batch(9)
    huge[b"labels"] = [2**70] * 4
    (cifar / "test_batch").write_bytes(pickle.dumps(huge, protocol=2))

    root, cache, cache_bytes, pngs, reference, arrays = cinic_root

    def cinic_with(**changes):
        def load():
            _cinic_restore(cache, cache_bytes, pngs)
            bad = {k: v for k, v in {**arrays, **changes}.items() if v is not _DROP}
            with open(cache, "wb") as fh:
                np.savez(fh, **bad)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dataset = load_dataset("cinic10", root=str(root))
            assert any(str(cache) in str(w.message) for w in caught), "no warning names the cache"
            assert _same_data(dataset, reference), "the damaged cache was used"
        return load

    spec = quickstart()
    spec["storage"] = str(tmp / "storage")

    def spec_with(field, value):
        def load():
            doc = copy.deepcopy(spec)
            doc["recipe"][field] = value
            parse_spec(doc)
        return load

    return {
        "empty checkpoint file": (lambda: load_checkpoint(empty), empty, CheckpointError),
        "teacher meta without num_classes": (teacher_with(**{"meta.num_classes": _DROP}), path, CheckpointError),
        "teacher version is a tensor": (teacher_with(version=torch.zeros(0)), path, CheckpointError),
        "teacher weights are None": (teacher_with(model=None), path, CheckpointError),
        "genotype student_group Infinity": (geno_inf[0], geno_inf[1], CheckpointError),
        "genotype file not UTF-8": (geno_bytes[0], geno_bytes[1], CheckpointError),
        "CIFAR labels beyond int64": (lambda: load_dataset("cifar10", root=str(tmp)), cifar / "test_batch", DataError),
        "CINIC cache without test_images": (cinic_with(test_images=_DROP), cache, None),
        "CINIC cache with labels -1": (cinic_with(test_labels=np.full(10, -1, dtype=np.int64)), cache, None),
        "spec recipe lr inf": (spec_with("lr", float("inf")), "recipe.lr", ConfigError),
        "spec recipe weight_decay NaN": (spec_with("weight_decay", float("nan")), "recipe.weight_decay", ConfigError),
    }


_DROP = object()


def test_known_bad_inputs(tmp_path, tiny_teacher, digits_data, cinic_root, genotype_doc):
    cases = _regression_cases(tmp_path, tiny_teacher, digits_data, cinic_root, genotype_doc)
    failures = []
    for name, (load, named, kind) in cases.items():
        try:
            load()
        except Exception as exc:  # noqa: BLE001
            if kind is None or not isinstance(exc, kind) or str(named) not in str(exc):
                failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            if kind is not None:
                failures.append(f"{name}: accepted, expected {kind.__name__}")
    assert not failures, "\n".join(failures)
    from reliability import record

    record(REGRESSIONS, len(cases), f"{len(cases)} cases, each an error naming the file or field "
           "(or, for the CINIC cache, a warning and a rebuild)")
