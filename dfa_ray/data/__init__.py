"""Datasets as uint8 tensors plus labels, and the device-resident batch loader.

Importing this package registers every dataset source in `DATASETS`.
"""

from dfa_ray.data.base import (
    DATASETS,
    Dataset,
    DatasetInfo,
    DatasetSource,
    ImageSet,
    dataset_table,
    default_data_root,
    load_dataset,
)
from dfa_ray.data import cifar, cinic, digits, fashion_mnist, synthetic  # noqa: F401  (registration)
from dfa_ray.data.loader import DeviceLoader
from dfa_ray.data.split import holdout_split, stratified_split

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetSource",
    "DeviceLoader",
    "ImageSet",
    "dataset_table",
    "default_data_root",
    "holdout_split",
    "load_dataset",
    "stratified_split",
]
