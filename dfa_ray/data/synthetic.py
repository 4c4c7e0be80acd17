"""A generated, learnable image set for tests and benchmarks (no files).

Each class has a smooth random colour pattern (a 4x4 grid of values upsampled bilinearly to
the image size); an image is its class pattern, scaled by a per-image contrast, plus
per-pixel noise, as uint8. Low-frequency patterns survive random crops and flips, so a small
network learns the classes quickly but not instantly. Everything is drawn from one CPU
generator seeded with `seed`: the same options give the same bytes on every machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dfa_ray.data.base import DATASETS, Dataset, DatasetInfo, ImageSet, channel_stats, check_options
from dfa_ray.errors import ConfigError

DEFAULTS = {"num_classes": 10, "image_size": 32, "channels": 3, "n_train": 2000, "n_test": 500, "seed": 0}
_CHUNK = 4096  # images generated per step, bounding the float working memory


def _make_split(prototypes: torch.Tensor, n: int, generator: torch.Generator) -> ImageSet:
    num_classes = prototypes.shape[0]
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    images = torch.empty((n, *prototypes.shape[1:]), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        y = labels[start : start + _CHUNK]
        contrast = 0.6 + 0.8 * torch.rand(len(y), 1, 1, 1, generator=generator)
        noise = torch.randn((len(y), *prototypes.shape[1:]), generator=generator)
        x = 128.0 + 70.0 * contrast * prototypes[y] + 25.0 * noise
        images[start : start + _CHUNK] = x.round_().clamp_(0, 255).to(torch.uint8)
    return ImageSet(images, labels)


class SyntheticSource:
    name = "synthetic"

    def default_root(self) -> str | None:
        return None

    def is_present(self, root: str | None) -> bool:
        return True

    def describe(self) -> str:
        return (
            "generated class patterns plus noise (options num_classes, image_size, "
            "channels, n_train, n_test, seed); for tests and benchmarks, nothing to download"
        )

    def load(self, root: str | None = None, download: bool = False, **options) -> Dataset:
        opts = check_options(self.name, options, DEFAULTS)
        for key, minimum in (("num_classes", 2), ("image_size", 4), ("channels", 1), ("n_train", 1), ("n_test", 1)):
            if int(opts[key]) < minimum:
                raise ConfigError(f"dataset 'synthetic' option {key}={opts[key]} must be >= {minimum}")
        k, size, c = int(opts["num_classes"]), int(opts["image_size"]), int(opts["channels"])
        generator = torch.Generator().manual_seed(int(opts["seed"]))
        grid = torch.randn((k, c, 4, 4), generator=generator)
        prototypes = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
        prototypes = prototypes / prototypes.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None, None]
        train = _make_split(prototypes, int(opts["n_train"]), generator)
        test = _make_split(prototypes, int(opts["n_test"]), generator)
        mean, std = channel_stats(train.images)
        info = DatasetInfo(
            self.name, k, c, size, mean, std, crop_padding=max(1, size // 8)
        )
        return Dataset(info=info, train=train, test=test)


DATASETS.register("synthetic")(SyntheticSource())
