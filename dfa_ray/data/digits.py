"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no files, no download).

1,797 grey images of 10 classes, pixel values 0..16. They are stored as uint8 by
round(v * 255 / 16) (0 -> 0, 16 -> 255), so the loader's x/255 gives v/16. The test split is
fixed: a stratified 20% chosen with seed 0, identical on every machine.
"""

from __future__ import annotations

import numpy as np
import torch

from dfa_ray.data.base import DATASETS, Dataset, DatasetInfo, ImageSet, channel_stats, check_options
from dfa_ray.data.split import stratified_split

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map digit intensities 0..16 onto 0..255: round(v * 255 / 16)."""
    return np.rint(np.asarray(values, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)


class DigitsSource:
    name = "digits"

    def default_root(self) -> str | None:
        return None  # bundled with scikit-learn

    def is_present(self, root: str | None) -> bool:
        return True

    def describe(self) -> str:
        return (
            "scikit-learn's 8x8 grey digits (1,797 images, 10 classes), bundled with "
            "scikit-learn: nothing to download; fixed stratified 80/20 train/test split (seed 0)"
        )

    def load(self, root: str | None = None, download: bool = False, **options) -> Dataset:
        check_options(self.name, options, {})
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.from_numpy(digits_to_uint8(bunch.images)).unsqueeze(1)  # [N, 1, 8, 8]
        labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        full = ImageSet(images, labels)
        train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
        train, test = full.subset(train_idx), full.subset(test_idx)
        mean, std = channel_stats(train.images)
        info = DatasetInfo(
            name=self.name,
            num_classes=10,
            in_channels=1,
            image_size=8,
            mean=mean,
            std=std,
            crop_padding=1,
            flip=False,
        )
        return Dataset(info=info, train=train, test=test)


DATASETS.register("digits")(DigitsSource())
