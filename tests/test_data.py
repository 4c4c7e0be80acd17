"""The dataset sources read their real on-disk formats exactly, and fail with clear DataErrors.

No downloads: every test writes small files in the exact format (CIFAR pickles, CINIC PNG
folders, Fashion-MNIST IDX) and checks the pixels and labels it wrote come back.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from dfa_ray.data import (
    DATASETS,
    ImageSet,
    dataset_table,
    holdout_split,
    load_dataset,
    stratified_split,
)
from dfa_ray.data import cinic, digits, fashion_mnist
from dfa_ray.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------- CIFAR


def _write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar_batch(rng, n, num_classes, label_key, name):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    batch = {b"batch_label": name.encode(), label_key: labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in labels]
    return batch, data, np.array(labels, dtype=np.int64)


def write_cifar10(root, n=20, seed=0, protocol=2):
    """torchvision's cifar-10-batches-py with n images per batch file; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch, data, labels = _cifar_batch(rng, n, 10, b"labels", name)
        _write_pickle(os.path.join(folder, name), batch, protocol)
        written[name] = (data, labels)
    _write_pickle(os.path.join(folder, "batches.meta"),
                  {b"num_cases_per_batch": n, b"label_names": [b"airplane"] * 10, b"num_vis": 3072})
    return written


def write_cifar100(root, n=20, seed=1):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    written = {}
    for name in ("train", "test"):
        batch, data, labels = _cifar_batch(rng, n, 100, b"fine_labels", name)
        _write_pickle(os.path.join(folder, name), batch)
        written[name] = (data, labels)
    _write_pickle(os.path.join(folder, "meta"), {b"fine_label_names": [b"x"] * 100})
    return written


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_reads_exact_pixels_and_labels(tmp_path, protocol):
    written = write_cifar10(str(tmp_path), n=20, protocol=protocol)
    ds = load_dataset("cifar10", root=str(tmp_path))
    train_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (20, 3, 32, 32)
    assert torch.equal(ds.train.labels, torch.from_numpy(train_labels))
    assert torch.equal(ds.test.labels, torch.from_numpy(written["test_batch"][1]))
    # CHW layout: row-major 3072 = 1024 red, 1024 green, 1024 blue, each plane 32 rows of 32.
    for i, c, y, x in [(0, 0, 0, 0), (1, 1, 2, 3), (57, 2, 31, 30), (99, 0, 17, 5)]:
        assert int(ds.train.images[i, c, y, x]) == int(train_data[i, c * 1024 + y * 32 + x])
    assert torch.equal(ds.train.images, torch.from_numpy(train_data).view(100, 3, 32, 32))
    assert torch.equal(ds.test.images.reshape(20, -1), torch.from_numpy(written["test_batch"][0]))
    assert ds.info.num_classes == 10 and ds.info.mean == (0.4914, 0.4822, 0.4465)
    assert ds.info.std == (0.2470, 0.2435, 0.2616) and ds.info.crop_padding == 4


def test_cifar100_reads_fine_labels_and_normalisations(tmp_path):
    written = write_cifar100(str(tmp_path))
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert torch.equal(ds.train.images.reshape(20, -1), torch.from_numpy(written["train"][0]))
    assert torch.equal(ds.train.labels, torch.from_numpy(written["train"][1]))
    assert torch.equal(ds.test.labels, torch.from_numpy(written["test"][1]))
    assert ds.info.num_classes == 100
    assert ds.info.mean == (0.5071, 0.4867, 0.4408) and ds.info.std == (0.2675, 0.2565, 0.2761)
    over = load_dataset("cifar100", root=str(tmp_path), normalization="overhaul")
    assert over.info.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert over.info.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))
    with pytest.raises(ConfigError, match="overhaul"):
        load_dataset("cifar100", root=str(tmp_path), normalization="imagenet")
    with pytest.raises(ConfigError, match="normalization"):
        load_dataset("cifar100", root=str(tmp_path), colour="yes")


def test_cifar_missing_file_names_the_path(tmp_path):
    write_cifar10(str(tmp_path))
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    assert not DATASETS.get("cifar10").is_present(str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(missing) in str(err.value) and "--download" in str(err.value)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", root=str(tmp_path / "empty"))


def test_cifar_truncated_pickle_names_the_file(tmp_path):
    write_cifar10(str(tmp_path))
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(path) in str(err.value) and "truncated" in str(err.value)


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_pickle_with_code_is_refused(tmp_path):
    write_cifar10(str(tmp_path))
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch, _, _ = _cifar_batch(np.random.default_rng(0), 20, 10, b"labels", "x")
    batch[b"labels"] = _Sneaky()
    _write_pickle(path, batch)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(path) in str(err.value) and "getcwd is not allowed" in str(err.value)


def test_cifar_wrong_shape_and_label_range(tmp_path):
    write_cifar10(str(tmp_path))
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch, _, _ = _cifar_batch(np.random.default_rng(0), 20, 10, b"labels", "x")
    batch[b"labels"][3] = 10
    _write_pickle(path, batch)
    with pytest.raises(DataError, match="labels must be in 0..9"):
        load_dataset("cifar10", root=str(tmp_path))
    batch[b"labels"][3] = 0
    batch[b"data"] = batch[b"data"][:, :1000]
    _write_pickle(path, batch)
    with pytest.raises(DataError, match=r"uint8 array \[N, 3072\]"):
        load_dataset("cifar10", root=str(tmp_path))


# ---------------------------------------------------------------------------------- CINIC-10


def write_cinic(root, per_class=2, seed=0):
    """root/{train,valid,test}/<class>/*.png; returns {split: (images NCHW, labels)} in load order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for split in cinic.SPLITS:
        images, labels = [], []
        for label, cls in enumerate(cinic.CLASSES):
            os.makedirs(os.path.join(root, split, cls))
            for j in range(per_class):
                if split == "valid" and label == 3 and j == 0:  # CINIC has a few grey PNGs
                    grey = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
                    Image.fromarray(grey, mode="L").save(os.path.join(root, split, cls, f"img{j}.png"))
                    pixels = np.repeat(grey[None], 3, axis=0)
                else:
                    hwc = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                    Image.fromarray(hwc).save(os.path.join(root, split, cls, f"img{j}.png"))
                    pixels = hwc.transpose(2, 0, 1)
                images.append(pixels)
                labels.append(label)
        written[split] = (np.stack(images), np.array(labels, dtype=np.int64))
    return written


def _fail_decoding(path):
    raise AssertionError(f"PNG decoder called for {path}: the cache was not used")


def test_cinic_reads_pngs_exactly_then_uses_the_cache(tmp_path, monkeypatch):
    root = str(tmp_path)
    written = write_cinic(root)
    ds = load_dataset("cinic10", root=root)
    for split in cinic.SPLITS:
        got = getattr(ds, split)
        assert torch.equal(got.images, torch.from_numpy(written[split][0])), split
        assert torch.equal(got.labels, torch.from_numpy(written[split][1])), split
    assert ds.info.mean == (0.47889522, 0.47227842, 0.43047404)
    assert ds.info.std == (0.24205776, 0.23828046, 0.25874835)
    cache = tmp_path / cinic.CACHE_NAME
    assert cache.is_file()
    assert not [p for p in os.listdir(root) if p.endswith(".tmp")]  # the temporary was renamed
    mtime = cache.stat().st_mtime_ns

    monkeypatch.setattr(cinic, "_read_png", _fail_decoding)
    again = load_dataset("cinic10", root=root)  # from the cache: the decoder would fail
    for split in cinic.SPLITS:
        assert torch.equal(getattr(again, split).images, getattr(ds, split).images)
        assert torch.equal(getattr(again, split).labels, getattr(ds, split).labels)
    assert cache.stat().st_mtime_ns == mtime

    # A changed folder (one more file) is converted again.
    from PIL import Image

    extra = np.full((32, 32, 3), 9, dtype=np.uint8)
    Image.fromarray(extra).save(tmp_path / "test" / "truck" / "zzz.png")
    with pytest.raises(DataError, match="PNG decoder called"):  # re-conversion was attempted
        load_dataset("cinic10", root=root)
    monkeypatch.undo()
    grown = load_dataset("cinic10", root=root)
    assert len(grown.test) == len(ds.test) + 1
    assert torch.equal(grown.test.images[-1], torch.full((3, 32, 32), 9, dtype=torch.uint8))
    assert int(grown.test.labels[-1]) == 9


def test_cinic_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cinic10", root=str(tmp_path))
    assert f"{tmp_path}/train" in str(err.value) and "extract" in str(err.value)
    write_cinic(str(tmp_path), per_class=1)
    bad = tmp_path / "train" / "cat" / "img0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError) as err:
        load_dataset("cinic10", root=str(tmp_path))
    assert str(bad) in str(err.value)
    os.rename(tmp_path / "valid" / "dog", tmp_path / "valid" / "doggo")
    with pytest.raises(DataError, match="doggo"):
        load_dataset("cinic10", root=str(tmp_path))


# ---------------------------------------------------------------------------------- Fashion-MNIST


def _idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion(root, gz: bool, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    os.makedirs(root, exist_ok=True)
    for key, array in arrays.items():
        path = os.path.join(root, fashion_mnist.FILES[key] + (".gz" if gz else ""))
        opener = gzip.open if gz else open
        with opener(path, "wb") as f:
            f.write(_idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx_exact(tmp_path, gz):
    arrays = write_fashion(str(tmp_path), gz)
    ds = load_dataset("fashion_mnist", root=str(tmp_path))
    assert ds.train.images.shape == (12, 1, 28, 28) and ds.test.images.shape == (5, 1, 28, 28)
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["test_images"]))
    assert torch.equal(ds.train.labels, torch.from_numpy(arrays["train_labels"].astype(np.int64)))
    assert torch.equal(ds.test.labels, torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    assert ds.info.in_channels == 1 and ds.info.image_size == 28 and ds.info.num_classes == 10


def test_fashion_mnist_corrupt_files(tmp_path):
    write_fashion(str(tmp_path), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x00\x00\x07\x03" + good[4:])  # unknown type code
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", root=str(tmp_path))
    assert str(path) in str(err.value) and "magic" in str(err.value)
    path.write_bytes(good[:-100])
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", root=str(tmp_path))
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    path.write_bytes(good)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(np.arange(4, dtype=np.uint8)))  # 4 labels for 5 images
    with pytest.raises(DataError, match="expected 5 labels"):
        load_dataset("fashion_mnist", root=str(tmp_path))

    gz_dir = tmp_path / "gz"
    write_fashion(str(gz_dir), gz=True)
    gz_path = gz_dir / "train-images-idx3-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:300])  # truncated gzip stream
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", root=str(gz_dir))
    assert str(gz_path) in str(err.value)


def test_fashion_mnist_missing_says_apt_get(tmp_path):
    source = DATASETS.get("fashion_mnist")
    assert source.is_present(str(tmp_path)) is False
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", root=str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "train-images-idx3-ubyte" in str(err.value)


def test_fashion_mnist_debian_package():
    """The real files when the Debian package is installed; otherwise the missing-file path."""
    source = DATASETS.get("fashion_mnist")
    root = fashion_mnist.DEBIAN_ROOT
    assert source.default_root() == root
    if os.path.isdir(root):
        assert source.is_present(None) is True
        ds = load_dataset("fashion_mnist")
        assert ds.train.images.shape == (60000, 1, 28, 28) and ds.test.images.shape == (10000, 1, 28, 28)
        assert torch.equal(torch.bincount(ds.train.labels), torch.full((10,), 6000))
        assert torch.equal(torch.bincount(ds.test.labels), torch.full((10,), 1000))
        assert ds.train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # published order
        assert ds.test.labels[:5].tolist() == [9, 2, 1, 1, 6]
        assert ds.train.images.float().mean().item() / 255 == pytest.approx(ds.info.mean[0], abs=1e-4)
    else:
        assert source.is_present(None) is False
        with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
            load_dataset("fashion_mnist")


# ---------------------------------------------------------------------------------- digits, synthetic


def test_digits_shapes_range_split_and_determinism():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.train.images.shape[1:] == (1, 8, 8) and ds.test.images.shape[1:] == (1, 8, 8)
    assert ds.train.images.dtype == torch.uint8
    assert int(ds.train.images.min()) == 0 and int(ds.train.images.max()) == 255
    counts = np.bincount(load_digits().target)
    expected_test = int(sum(np.floor(c * 0.2 + 0.5) for c in counts))
    assert len(ds.train) + len(ds.test) == 1797 and len(ds.test) == expected_test == 359
    # Every class keeps its share in both parts.
    assert torch.equal(torch.bincount(ds.test.labels), torch.from_numpy(np.floor(counts * 0.2 + 0.5).astype(np.int64)))
    # Scaling rule: round(v * 255 / 16); v = 16 -> 255, v = 8 -> 128.
    assert digits.digits_to_uint8(np.array([0, 1, 8, 15, 16])).tolist() == [0, 16, 128, 239, 255]
    allowed = set(digits.digits_to_uint8(np.arange(17)).tolist())
    assert set(torch.unique(ds.train.images).tolist()) <= allowed
    again = load_dataset("digits")
    assert torch.equal(again.train.images, ds.train.images) and torch.equal(again.test.labels, ds.test.labels)
    assert ds.info.in_channels == 1 and ds.info.image_size == 8 and ds.info.crop_padding == 1
    x = ds.train.images.double() / 255
    assert ds.info.mean[0] == pytest.approx(x.mean().item()) and ds.info.std[0] == pytest.approx(x.std(unbiased=False).item())


def test_synthetic_is_deterministic_and_learnable():
    ds = load_dataset("synthetic", n_train=400, n_test=200, image_size=16, seed=3)
    assert ds.train.images.shape == (400, 3, 16, 16) and ds.train.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(ds.train.labels), torch.full((10,), 40))
    same = load_dataset("synthetic", n_train=400, n_test=200, image_size=16, seed=3)
    other = load_dataset("synthetic", n_train=400, n_test=200, image_size=16, seed=4)
    assert torch.equal(same.train.images, ds.train.images)
    assert not torch.equal(other.train.images, ds.train.images)
    # Nearest class mean separates the classes well above chance (10%) but not trivially.
    x_train = ds.train.images.flatten(1).float()
    centroids = torch.stack([x_train[ds.train.labels == k].mean(0) for k in range(10)])
    pred = torch.cdist(ds.test.images.flatten(1).float(), centroids).argmin(1)
    accuracy = (pred == ds.test.labels).float().mean().item()
    assert accuracy > 0.8
    with pytest.raises(ConfigError, match="n_train"):
        load_dataset("synthetic", n_train=0)


# ---------------------------------------------------------------------------------- splits, registry


def test_stratified_split_properties():
    labels = torch.tensor([0] * 50 + [1] * 33 + [2] * 7 + [3] * 1)[torch.randperm(91, generator=torch.Generator().manual_seed(0))]
    kept, held = stratified_split(labels, 0.2, seed=5)
    assert len(set(kept.tolist()) & set(held.tolist())) == 0
    assert sorted(kept.tolist() + held.tolist()) == list(range(91))
    for cls, n in [(0, 50), (1, 33), (2, 7), (3, 1)]:
        assert abs(int((labels[held] == cls).sum()) - 0.2 * n) <= 1
    kept2, held2 = stratified_split(labels, 0.2, seed=5)
    assert torch.equal(kept, kept2) and torch.equal(held, held2)
    _, held3 = stratified_split(labels, 0.2, seed=6)
    assert not torch.equal(held, held3)
    _, none = stratified_split(labels, 0.0, seed=5)
    assert none.numel() == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="holdout_fraction"):
            stratified_split(labels, bad, seed=0)


def test_holdout_split_imageset():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2)
    ds = ImageSet(images, torch.arange(40) % 4)
    kept, held = holdout_split(ds, 0.2, seed=0)
    assert len(kept) == 32 and len(held) == 8  # 2 of the 10 per class
    assert torch.equal(torch.bincount(held.labels), torch.full((4,), 2))
    _, tie = holdout_split(ds, 0.25, seed=0)
    assert len(tie) == 12  # 2.5 per class rounds half up to 3
    ids = sorted(kept.images[:, 0, 0, 0].tolist() + held.images[:, 0, 0, 0].tolist())
    assert ids == list(range(40))
    assert torch.equal(held.labels, held.images[:, 0, 0, 0].long() % 4)  # labels follow images
    assert kept.images.is_contiguous()


def test_imageset_rejects_wrong_types():
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError, match="one label per image"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_unknown_dataset_lists_names():
    with pytest.raises(ConfigError) as err:
        load_dataset("nope")
    message = str(err.value)
    assert "'nope'" in message
    for name in ("cifar10", "cifar100", "cinic10", "digits", "fashion_mnist", "synthetic"):
        assert name in message


def test_dataset_table_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("DFA_RAY_DATA", str(tmp_path))
    write_cifar10(str(tmp_path), n=2)
    rows = {row["name"]: row for row in dataset_table()}
    assert set(rows) == {"cifar10", "cifar100", "cinic10", "digits", "fashion_mnist", "synthetic"}
    assert rows["cifar10"]["root"] == str(tmp_path) and rows["cifar10"]["present"] is True
    assert rows["cifar100"]["present"] is False
    assert rows["digits"]["present"] is True and rows["digits"]["root"] is None
    assert all(row["description"] and "\n" not in row["description"] for row in rows.values())


def test_fashion_mnist_stratified_subsets(tmp_path):
    arrays = write_fashion(str(tmp_path), gz=False, n_train=40, n_test=20)
    full = load_dataset("fashion_mnist", root=str(tmp_path))
    a = load_dataset("fashion_mnist", root=str(tmp_path), train_size=20, test_size="10")
    b = load_dataset("fashion_mnist", root=str(tmp_path), train_size=20, test_size=10)
    other = load_dataset("fashion_mnist", root=str(tmp_path), train_size=20, subset_seed=1)
    # about the size asked for: each of the 10 classes is rounded to its share on its own
    assert abs(len(a.train) - 20) <= 5 and abs(len(a.test) - 10) <= 5 and len(full.train) == 40
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, other.train.images)
    # every class keeps its share (rounded per class)
    for c in torch.unique(full.train.labels).tolist():
        share = (full.train.labels == c).sum().item() / 2
        assert abs((a.train.labels == c).sum().item() - share) <= 0.5
    # the subset's images are the full set's images with their own labels
    rows = {bytes(img.numpy().tobytes()): int(lab) for img, lab in zip(full.train.images, full.train.labels)}
    assert all(rows[bytes(img.numpy().tobytes())] == int(lab) for img, lab in zip(a.train.images, a.train.labels))
    with pytest.raises(ConfigError, match="fashion_mnist option train_size=-3 is invalid"):
        load_dataset("fashion_mnist", root=str(tmp_path), train_size=-3)
