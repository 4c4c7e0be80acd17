"""DeviceLoader: coverage per epoch, determinism per (seed, epoch), and augmentation that equals
an obvious per-image reference (zero-pad, slice the crop, flip)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.transforms.functional as TF

from dfa_ray.data import DeviceLoader, ImageSet
from dfa_ray.errors import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def make_set(n=50, c=3, h=8, w=8, seed=0) -> ImageSet:
    """Random pixels; labels are the sample ids so batches can be traced back."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)  # no zeros: padding shows
    return ImageSet(images, torch.arange(n))


def loader(data, **kw):
    args = dict(batch_size=8, mean=MEAN[: data.shape[0]], std=STD[: data.shape[0]], train=True, padding=2)
    args.update(kw)
    return DeviceLoader(data, **args)


def reference_augment(image: torch.Tensor, dy: int, dx: int, flip: bool, p: int) -> torch.Tensor:
    """The slow, obvious version: zero-pad by p, take the HxW window at (dy, dx), flip."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=image.dtype)
    padded[:, p : p + h, p : p + w] = image
    crop = padded[:, dy : dy + h, dx : dx + w]
    return crop.flip(-1) if flip else crop


def reference_normalize(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images_uint8.float() / 255 - m) / s


def collect(ld):
    xs, ys = zip(*[(x.cpu(), y.cpu()) for x, y in ld])
    return list(xs), list(ys)


@pytest.mark.parametrize("device", DEVICES)
def test_every_sample_exactly_once_per_epoch(device):
    data = make_set(n=50)
    ld = loader(data, device=device)
    assert len(ld) == 7 and ld.num_samples == 50
    for epoch in range(3):
        ld.set_epoch(epoch)
        xs, ys = collect(ld)
        assert [len(y) for y in ys] == [8] * 6 + [2]
        assert torch.equal(torch.sort(torch.cat(ys)).values, torch.arange(50))
        assert all(x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8) for x in xs)
    dropped = loader(data, drop_last=True, device=device)
    _, ys = collect(dropped)
    assert len(dropped) == 6 and dropped.num_samples == 48 and [len(y) for y in ys] == [8] * 6
    assert len(set(torch.cat(ys).tolist())) == 48


@pytest.mark.parametrize("device", DEVICES)
def test_batches_are_a_pure_function_of_seed_and_epoch(device):
    data = make_set()
    fresh = loader(data, seed=7, device=device)
    fresh.set_epoch(3)
    xs_a, ys_a = collect(fresh)

    used = loader(data, seed=7, device=device)
    for _ in range(3):  # epochs 0, 1, 2 iterated first: iterating advances the epoch
        collect(used)
    assert used.epoch == 3
    xs_b, ys_b = collect(used)
    assert all(torch.equal(a, b) for a, b in zip(xs_a, xs_b)) and all(torch.equal(a, b) for a, b in zip(ys_a, ys_b))

    used.set_epoch(3)  # pinning again, after epoch 3 and a partial epoch 4
    next(iter(loader(data, seed=7, device=device)))
    xs_c, _ = collect(used)
    assert all(torch.equal(a, b) for a, b in zip(xs_a, xs_c))

    used.set_epoch(4)
    xs_d, ys_d = collect(used)
    assert not torch.equal(torch.cat(ys_a), torch.cat(ys_d))
    assert not torch.equal(torch.cat(xs_a), torch.cat(xs_d))
    other_seed = loader(data, seed=8, device=device)
    other_seed.set_epoch(3)
    assert not torch.equal(torch.cat(collect(other_seed)[1]), torch.cat(ys_a))


def test_draw_is_seeded_in_range_and_independent_of_augmentation_settings():
    data = make_set(n=200)
    ld = loader(data, padding=3, seed=1)
    d = ld.draw(5)
    assert torch.equal(torch.sort(d.order).values, torch.arange(200))
    assert int(d.offsets.min()) == 0 and int(d.offsets.max()) == 6  # 0..2p both reached
    assert 60 < int(d.flips.sum()) < 140
    again = loader(data, padding=3, seed=1).draw(5)
    assert torch.equal(d.order, again.order) and torch.equal(d.offsets, again.offsets) and torch.equal(d.flips, again.flips)
    plain = loader(data, padding=0, flip=False, seed=1).draw(5)
    assert torch.equal(plain.order, d.order)
    assert int(plain.offsets.abs().sum()) == 0 and not bool(plain.flips.any())


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_augment_equals_reference_for_every_offset_and_flip(device, channels_last):
    p = 2
    data = make_set(n=2 * (2 * p + 1) ** 2, c=3, h=6, w=7)
    ld = loader(data, padding=p, device=device, channels_last=channels_last)
    combos = list(itertools.product(range(2 * p + 1), range(2 * p + 1), (False, True)))
    offsets = torch.tensor([[dy, dx] for dy, dx, _ in combos])
    flips = torch.tensor([f for _, _, f in combos])
    images = data.images[: len(combos)]
    got = ld._augment(images.to(device), offsets.to(device), flips.to(device)).cpu()
    assert got.dtype == torch.uint8 and got.shape == images.shape
    for i, (dy, dx, flip) in enumerate(combos):
        expected = reference_augment(images[i], dy, dx, flip, p)
        assert torch.equal(got[i], expected), (dy, dx, flip)
        # And torchvision's own ops on the uint8 tensor: RandomCrop(padding=p, fill 0), then flip.
        tv = TF.crop(TF.pad(images[i], [p], fill=0), dy, dx, 6, 7)
        assert torch.equal(got[i], TF.hflip(tv) if flip else tv)


@pytest.mark.parametrize("device", DEVICES)
def test_train_batches_are_reference_crops_normalised(device):
    p = 2
    data = make_set(n=30)
    ld = loader(data, padding=p, batch_size=8, seed=3, device=device)
    ld.set_epoch(2)
    draw = ld.draw(2)
    xs, ys = collect(ld)
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, draw.order)  # labels are ids: the permutation of the draw
    expected = torch.stack([
        reference_augment(data.images[int(k)], int(o[0]), int(o[1]), bool(f), p)
        for k, o, f in zip(draw.order, draw.offsets, draw.flips)
    ])
    torch.testing.assert_close(x, reference_normalize(expected, MEAN, STD), atol=1e-5, rtol=0)
    # Padding is zero in uint8 space: somewhere an output pixel is exactly -mean/std.
    zero_value = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    assert bool(((x - zero_value).abs() < 1e-5).any())


@pytest.mark.parametrize("device", DEVICES)
def test_eval_mode_is_plain_ordered_and_complete(device):
    data = make_set(n=21)
    ld = loader(data, train=False, batch_size=8, drop_last=True, device=device)
    assert len(ld) == 3 and ld.num_samples == 21
    for _ in range(2):
        xs, ys = collect(ld)
        assert [len(y) for y in ys] == [8, 8, 5]
        assert torch.equal(torch.cat(ys), torch.arange(21))
        torch.testing.assert_close(torch.cat(xs), reference_normalize(data.images, MEAN, STD), atol=1e-5, rtol=0)


def test_no_augmentation_gives_the_permuted_images():
    data = make_set(n=20)
    ld = loader(data, padding=0, flip=False)
    x, y = map(torch.cat, collect(ld))
    torch.testing.assert_close(x, reference_normalize(data.images[y], MEAN, STD), atol=1e-5, rtol=0)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_memory_format_same_values(device, train):
    data = make_set(n=20)
    plain = loader(data, train=train, device=device)
    cl = loader(data, train=train, device=device, channels_last=True)
    for (a, ya), (b, yb) in zip(plain, cl):
        assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_dtype_and_grey_images():
    data = make_set(n=10, c=1, h=5, w=5)
    ld = DeviceLoader(data, batch_size=4, mean=(0.5,), std=(0.25,), train=True, padding=1, dtype=torch.bfloat16)
    x, y = next(iter(ld))
    assert x.dtype == torch.bfloat16 and x.shape == (4, 1, 5, 5) and y.dtype == torch.int64


def test_bad_arguments_are_config_errors():
    data = make_set(n=4)
    with pytest.raises(ConfigError, match="one value per channel"):
        DeviceLoader(data, batch_size=2, mean=(0.5,), std=(0.5,), train=True)
    with pytest.raises(ConfigError, match="batch_size"):
        DeviceLoader(data, batch_size=0, mean=MEAN, std=STD, train=True)
    with pytest.raises(ConfigError, match="std must be positive"):
        DeviceLoader(data, batch_size=2, mean=MEAN, std=(0.1, 0.0, 0.1), train=True)


# -- RandomResizedCrop (the dfa_author_cinic recipe) ----------------------------------------
def reference_resized(image: torch.Tensor, box, flip: bool) -> torch.Tensor:
    """Bilinear resampling written out pixel by pixel: output pixel (i, j) samples the box at
    the same relative position of its centre, edge pixels clamped; mirrored when `flip`."""
    import numpy as np

    c, h, w = image.shape
    top, left, bh, bw = box
    img = image.double().numpy()
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            jj = (w - 1 - j) if flip else j
            y = (top + (i + 0.5) / h * bh) * h - 0.5  # source coordinates in pixels
            x = (left + (jj + 0.5) / w * bw) * w - 0.5
            y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[:, i, j] = ((1 - fy) * (1 - fx) * img[:, y0, x0] + (1 - fy) * fx * img[:, y0, x1]
                            + fy * (1 - fx) * img[:, y1, x0] + fy * fx * img[:, y1, x1])
    return torch.from_numpy(out)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resized_crop_equals_the_pixelwise_reference(channels_last):
    data = make_set(n=12)
    ld = loader(data, resized_crop=(0.3, 1.0), flip=True, channels_last=channels_last, batch_size=12)
    d = ld.draw(0)
    assert d.boxes is not None and d.boxes.shape == (12, 4)
    top, left, bh, bw = d.boxes.unbind(1)
    area = bh * bw
    assert bool(((area >= 0.3 - 1e-9) | (bh == 1) | (bw == 1)).all()) and bool((area <= 1 + 1e-9).all())
    assert bool((top >= 0).all() and (left >= 0).all() and (top + bh <= 1 + 1e-9).all() and (left + bw <= 1 + 1e-9).all())
    (x, y), = list(ld)
    for k in range(12):
        idx = int(d.order[k])
        m = torch.tensor(MEAN).view(-1, 1, 1)
        s = torch.tensor(STD).view(-1, 1, 1)
        want = (reference_resized(data.images[idx], d.boxes[k].tolist(), bool(d.flips[k])).float() / 255 - m) / s
        torch.testing.assert_close(x[k], want, atol=1e-4, rtol=0)
        assert int(y[k]) == idx


def test_resized_crop_draws_are_seeded_and_leave_the_other_draws_alone():
    data = make_set(n=20)
    a, b = loader(data, resized_crop=(0.08, 1.0)), loader(data, resized_crop=(0.08, 1.0))
    plain = loader(data)
    da, db, dp = a.draw(3), b.draw(3), plain.draw(3)
    assert torch.equal(da.boxes, db.boxes) and not torch.equal(da.boxes, a.draw(4).boxes)
    assert torch.equal(da.order, dp.order) and torch.equal(da.flips, dp.flips)
    assert dp.boxes is None
    with pytest.raises(ConfigError, match="resized_crop scale range"):
        loader(data, resized_crop=(0.0, 1.0))


def test_dfa_author_recipes_have_the_authors_numbers():
    from dfa_ray.engine.recipes import get_recipe

    r = get_recipe("dfa_author")
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.nesterov, r.weight_decay, r.gamma) == \
        (200, 128, 0.1, 0.9, True, 5e-4, 0.2)
    assert r.milestone_epochs() == [60, 120, 160] and r.crop == "pad" and r.resized_crop is None
    c = get_recipe("dfa_author_cinic")
    assert (c.epochs, c.batch_size, c.lr, c.gamma, c.nesterov) == (140, 96, 0.01, 0.1, True)
    assert c.milestone_epochs() == [100, 120] and c.resized_crop == (0.08, 1.0)
