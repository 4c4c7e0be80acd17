"""The model registry and the one builder every other part of dfa-ray calls.

Each family module registers short factories `f(num_classes, in_channels) -> GroupedModel`
under the CRD benchmark's names (`MODELS.register("resnet56")`); `create_model` validates the
arguments once so the factories need not, and `model_summary` describes a model for the CLI
and the spec validator without allocating its weights.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from dfa_ray.errors import ConfigError
from dfa_ray.models.base import GroupedModel
from dfa_ray.registry import Registry

ModelFactory = Callable[..., GroupedModel]

MODELS: Registry[ModelFactory] = Registry("model")


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; `num_classes=True` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def create_model(name: str, num_classes: int = 100, in_channels: int = 3) -> GroupedModel:
    """Build the registered model `name` for `num_classes` classes and `in_channels` channels.

    Raises ConfigError for an unknown name (listing the valid ones), `num_classes` < 2 or
    `in_channels` < 1.
    """
    factory = MODELS.get(name)
    _check_int("num_classes", num_classes, 2)
    _check_int("in_channels", in_channels, 1)
    return factory(num_classes=num_classes, in_channels=in_channels)


def model_summary(name: str) -> dict[str, Any]:
    """Name, parameter count (100 classes, 3 channels), layer groups and min input size.

    The model is built on the meta device: no memory is allocated and no weights are
    initialised, so summarising the whole zoo is instant.
    """
    factory = MODELS.get(name)
    with torch.device("meta"):
        model = factory(num_classes=100, in_channels=3)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "groups": [
            {"channels": info.channels, "blocks": info.num_blocks, "stride": info.stride}
            for info in model.group_info
        ],
        "min_size": model.min_size,
    }
