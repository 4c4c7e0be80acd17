"""The device-resident batch loader: the whole split on the device as uint8, batches made there.

Why not torch's DataLoader: a CIFAR batch is a few hundred kilobytes of uint8; per-image PIL
transforms in worker processes cost far more than the network's step on a GPU (the airbench
observation). Here the split is moved to the device once, and each batch is a handful of
batched tensor operations on the device:

1. index-slice the epoch's permutation and gather those images (uint8);
2. random crop with zero padding and random horizontal flip as ONE gather: the source pixel of
   every output pixel is computed from the sample's (dy, dx) offset and flip bit, and pixels
   that fall into the padding are zeroed by a mask. Padding is never materialised (neither per
   epoch nor per batch): that keeps device memory at 1x the uint8 split (a 32 px set padded
   by 4 would be 1.56x, per trial, with several trials sharing a GPU) and saves a copy. The
   result equals torchvision's RandomCrop(size, padding=p) (fill 0 on the uint8 image)
   followed by RandomHorizontalFlip; tests check it against a per-image reference;
3. convert to float and normalise, (x/255 - mean)/std, as one multiply-add.

Instead of step 2, `resized_crop=(lo, hi)` gives torchvision's RandomResizedCrop(size,
scale=(lo, hi), ratio=(3/4, 4/3)) followed by the flip (the CINIC-10 recipe of the DFA
author's code): a box of area share U(lo, hi) and log-uniform aspect ratio at a uniform
position, resampled bilinearly to the full size by one `grid_sample` over the batch.
Departure from torchvision: it retries up to 10 draws when a box does not fit and then falls
back to a centre crop; here a box that does not fit is shrunk to fit (same support, a
slightly different distribution of extreme aspect ratios), so one draw per sample keeps the
epoch a pure function of (seed, epoch).

Reproducibility: the permutation, crop offsets and flips of an epoch are drawn at the start of
the epoch from a CPU `torch.Generator` seeded from (seed, epoch) only, then moved to the device.
So epoch e's batches are the same whatever ran before (bit-for-bit resume), on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from dfa_ray.data.base import ImageSet
from dfa_ray.errors import ConfigError


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit generator seed from (seed, epoch); SeedSequence mixing keeps nearby pairs
    such as (0, 1) and (1, 0) unrelated."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class EpochDraw:
    """The random choices of one epoch, on the CPU, indexed by position in the epoch."""

    order: torch.Tensor  # int64 [N]: sample index at each position
    offsets: torch.Tensor  # int64 [N, 2]: crop offset (dy, dx) in the padded image, 0..2*padding
    flips: torch.Tensor  # bool [N]: flip the crop horizontally
    boxes: torch.Tensor | None = None  # float64 [N, 4] (top, left, height, width) as fractions, resized crops


class DeviceLoader:
    """Yields (x float [B, C, H, W] normalised, y int64 [B]) on `device`.

    train=True: a fresh permutation, crop and flip per epoch; `drop_last` drops the last
    partial batch. train=False: dataset order, no augmentation, every sample (drop_last is
    ignored). Each `iter()` uses the current epoch and then advances it by one, so a plain
    `for epoch ...: for x, y in loader` gets new draws every epoch; `set_epoch(e)` pins the
    epoch of the next iteration (call it every epoch when resuming from a checkpoint).

    with_index=True: yields (x, y, index) instead, `index` int64 [B] on `device` being each
    sample's position in this loader's split (`labels[index] == y`), which methods with
    per-sample state (memory banks) key on.
    """

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        padding: int = 4,
        flip: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        with_index: bool = False,
        resized_crop: tuple[float, float] | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if int(padding) < 0:
            raise ConfigError(f"crop padding must be >= 0 pixels, got {padding}")
        channels = data.images.shape[1]
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
        if mean_t.numel() != channels or std_t.numel() != channels:
            raise ConfigError(
                f"mean and std need one value per channel ({channels}), got {mean_t.numel()} and {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ConfigError(f"std must be positive, got {tuple(std_t.tolist())}")
        self.device = torch.device(device)
        # Moved once; on CUDA the split stays resident for the loader's lifetime.
        self.images = data.images.to(self.device).contiguous()
        self.labels = data.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.padding = int(padding) if self.train else 0
        self.flip = bool(flip) and self.train
        self.seed = int(seed)
        self.drop_last = bool(drop_last) and self.train
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.with_index = bool(with_index)
        if resized_crop is not None:
            lo, hi = (float(v) for v in resized_crop)
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"resized_crop scale range must satisfy 0 < lo <= hi <= 1, got {resized_crop}")
            resized_crop = (lo, hi)
        self.resized_crop = resized_crop if self.train else None
        self.epoch = 0
        # (x/255 - mean)/std == x * scale + bias, computed in float64 then stored as float32.
        shape = (1, channels, 1, 1)
        self._scale = (1.0 / (255.0 * std_t)).to(torch.float32).view(shape).to(self.device)
        self._bias = (-mean_t / std_t).to(torch.float32).view(shape).to(self.device)
        n = len(data)
        self.num_samples = (n // self.batch_size) * self.batch_size if self.drop_last else n

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draw(self, epoch: int) -> EpochDraw:
        """The permutation, crop offsets and flips of `epoch`: a pure function of (seed, epoch).

        Drawn in a fixed order (permutation, offsets, flips) from one CPU generator, so the
        permutation does not depend on the augmentation settings.
        """
        n = self.images.shape[0]
        if not self.train:
            return EpochDraw(
                torch.arange(n), torch.zeros(n, 2, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
            )
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g)
        if self.padding > 0:
            offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        else:
            offsets = torch.zeros(n, 2, dtype=torch.int64)
        if self.flip:
            flips = torch.randint(0, 2, (n,), generator=g).bool()
        else:
            flips = torch.zeros(n, dtype=torch.bool)
        boxes = self._draw_boxes(n, g) if self.resized_crop is not None else None
        return EpochDraw(order, offsets, flips, boxes)

    def _draw_boxes(self, n: int, g: torch.Generator) -> torch.Tensor:
        """RandomResizedCrop boxes as fractions of the image: (top, left, height, width)."""
        lo, hi = self.resized_crop
        h, w = self.images.shape[-2:]
        u = torch.rand(n, 4, generator=g, dtype=torch.float64)
        area = lo + (hi - lo) * u[:, 0]
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
        ratio = torch.exp(log_ratio)  # width / height
        bw = torch.sqrt(area * ratio * (h / w)).clamp(max=1.0)  # fractions of the side
        bh = torch.sqrt(area / ratio * (w / h)).clamp(max=1.0)
        top = (1 - bh) * u[:, 2]
        left = (1 - bw) * u[:, 3]
        return torch.stack([top, left, bh, bw], dim=1)

    def _resized(self, images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Bilinear resampling of each sample's box to the full size (float out, flipped where
        `flips`), as one grid_sample. align_corners=False: pixel centres at (i + 0.5) / size."""
        b, _, h, w = images.shape
        boxes = boxes.to(images.device, torch.float32)
        top, left, bh, bw = boxes.unbind(1)
        sign = torch.where(flips.to(images.device), -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=images.device)
        theta[:, 0, 0] = bw * sign  # x: [-1, 1] of the output maps into the box (mirrored on flip)
        theta[:, 0, 2] = 2 * left + bw - 1
        theta[:, 1, 1] = bh
        theta[:, 1, 2] = 2 * top + bh - 1
        grid = torch.nn.functional.affine_grid(theta, (b, images.shape[1], h, w), align_corners=False)
        out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                                              align_corners=False)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def _augment(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop with zero padding at (dy, dx) = offsets[i], then flip where flips[i]: uint8 in,
        uint8 out, one gather for the whole batch. Output is channels_last when the loader is."""
        b, c, h, w = images.shape
        p, dev = self.padding, images.device
        offsets = offsets.to(dev)
        rows = offsets[:, 0:1] - p + torch.arange(h, device=dev)  # [B, H] source row per output row
        ar_w = torch.arange(w, device=dev)
        dx = offsets[:, 1:2] - p
        # Flipping the crop: output column j reads crop column w-1-j.
        cols = torch.where(flips.to(dev)[:, None], dx + (w - 1) - ar_w, dx + ar_w)  # [B, W]
        pixel = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # [B, H, W]
        sample = torch.arange(b, device=dev).mul_(c * h * w)
        channel = torch.arange(c, device=dev).mul_(h * w)
        if self.channels_last:  # gather straight into NHWC order: no layout copy later
            index = (sample[:, None, None, None] + pixel[..., None]) + channel
            out = images.reshape(-1).take(index)  # [B, H, W, C]
        else:
            index = (sample[:, None, None, None] + channel[None, :, None, None]) + pixel[:, None]
            out = images.reshape(-1).take(index)  # [B, C, H, W]
        if p > 0:
            inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
            out = out * (inside[..., None] if self.channels_last else inside[:, None])
        return out.permute(0, 3, 1, 2) if self.channels_last else out

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> (x/255 - mean)/std in `dtype`; keeps the memory format of `images`."""
        x = images.to(torch.float32).mul_(self._scale).add_(self._bias)
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def _batch(self, index: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
               boxes: torch.Tensor | None = None) -> torch.Tensor:
        images = self.images[index]
        if boxes is not None:
            images = self._resized(images, boxes, flips)
        elif self.padding > 0 or self.flip:
            images = self._augment(images, offsets, flips)
        elif self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._normalize(images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch
        self.epoch += 1
        if not self.train:
            return self._eval_batches()
        d = self.draw(epoch)
        boxes = d.boxes.to(self.device) if d.boxes is not None else None
        return self._train_batches(d.order.to(self.device), d.offsets.to(self.device), d.flips.to(self.device), boxes)

    def _train_batches(self, order, offsets, flips, boxes=None) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, self.num_samples, self.batch_size):
            end = min(start + self.batch_size, self.num_samples)
            index = order[start:end]
            x = self._batch(index, offsets[start:end], flips[start:end],
                            None if boxes is None else boxes[start:end])
            yield (x, self.labels[index], index) if self.with_index else (x, self.labels[index])

    def _eval_batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, self.num_samples, self.batch_size):
            images = self.images[start : start + self.batch_size]  # a view: no gather needed
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            x, y = self._normalize(images), self.labels[start : start + self.batch_size]
            if self.with_index:
                yield x, y, torch.arange(start, start + y.shape[0], device=self.device)
            else:
                yield x, y
