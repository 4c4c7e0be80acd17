"""Named training recipes: the CRD and Overhaul protocols, the DFA first author's
(`dfa_author` for CIFAR, `dfa_author_cinic` for CINIC-10) and `quick` for the demo. The
protocols and where each comes from are described in docs/protocols.md.

Learning-rate milestones are stored as fractions of the epoch budget, so that overriding
`epochs` (a 10-epoch smoke run, a 60-epoch sweep) keeps the shape of the schedule; at the
protocol's own epoch count the fractions give exactly the published milestones
(crd: 150/180/210 of 240; overhaul: 100/150 of 200).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from dfa_ray.errors import ConfigError
from dfa_ray.registry import Registry

RECIPES: Registry["Recipe"] = Registry("recipe")

# CRD uses lr 0.01 instead of 0.05 for these light-weight students.
SMALL_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine
    milestones: tuple[float, ...] = ()  # fractions of `epochs` where lr is multiplied by gamma
    gamma: float = 0.1
    lr_min: float = 0.0  # floor of the cosine schedule
    small_model_lr: float | None = None  # lr for SMALL_LR_MODELS, when the protocol has one
    holdout_fraction: float = 0.1  # part of the training set held out for model selection
    split_seed: int = 0  # the held-out split is shared by every trial, whatever its seed
    eval_batch_size: int = 256
    padding: int | None = None  # random-crop padding; None: the dataset's default
    flip: bool = True
    crop: str = "pad"  # pad (random crop of the zero-padded image) | resized (RandomResizedCrop)
    crop_scale_min: float = 0.08  # resized: smallest area share of the box (torchvision's default)

    def milestone_epochs(self) -> list[int]:
        return sorted({max(1, round(f * self.epochs)) for f in self.milestones})

    def lr_for(self, model_name: str) -> float:
        if self.small_model_lr is not None and model_name in SMALL_LR_MODELS:
            return self.small_model_lr
        return self.lr

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "Recipe":
        """A copy with fields replaced; unknown or ill-typed fields are a ConfigError."""
        if not overrides:
            return self
        fields = {f.name: f for f in dataclasses.fields(self)}
        clean: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in fields or key == "name":
                valid = ", ".join(k for k in fields if k != "name")
                raise ConfigError(f"recipe field {key!r} does not exist; valid fields: {valid}")
            clean[key] = _coerce(key, value, getattr(self, key))
        recipe = dataclasses.replace(self, **clean)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        def bad(field: str, rule: str) -> ConfigError:
            return ConfigError(f"recipe {self.name!r}: {field} = {getattr(self, field)!r} is invalid; {rule}")

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f.name, "it must be a finite number")
        if self.epochs < 1:
            raise bad("epochs", "it must be at least 1")
        if self.batch_size < 1:
            raise bad("batch_size", "it must be at least 1")
        if not self.lr > 0:
            raise bad("lr", "it must be positive")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "it must be in [0, 1)")
        if self.weight_decay < 0:
            raise bad("weight_decay", "it must be >= 0")
        if self.schedule not in ("multistep", "cosine"):
            raise bad("schedule", "allowed: multistep, cosine")
        if any(not 0 < f < 1 for f in self.milestones):
            raise bad("milestones", "they are fractions of the epochs, each in (0, 1)")
        if not 0 <= self.holdout_fraction < 1:
            raise bad("holdout_fraction", "it must be in [0, 1)")
        if self.padding is not None and self.padding < 0:
            raise bad("padding", "it must be >= 0")
        if self.crop not in ("pad", "resized"):
            raise bad("crop", "allowed: pad, resized")
        if not 0 < self.crop_scale_min <= 1:
            raise bad("crop_scale_min", "it must be in (0, 1]")

    @property
    def resized_crop(self) -> tuple[float, float] | None:
        """The loader's RandomResizedCrop scale range, or None for the padded crop."""
        return (self.crop_scale_min, 1.0) if self.crop == "resized" else None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out


def _coerce(key: str, value: Any, current: Any) -> Any:
    """Turn CLI/YAML values into the field's type, with an error that names the field."""
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(current, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            return tuple(float(v) for v in value)
        if isinstance(current, int) and not isinstance(current, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(current, float):
            return float(value)
        if current is None:
            if value in (None, "none", "None", ""):
                return None
            return float(value) if key == "small_model_lr" else int(value)
        return type(current)(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"recipe field {key!r}: {value!r} is not a valid {type(current).__name__ if current is not None else 'number'}"
        ) from None


def get_recipe(name: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    recipe = RECIPES.get(name)
    recipe.validate()
    return recipe.with_overrides(overrides)


RECIPES.register("crd")(
    Recipe(name="crd", epochs=240, batch_size=64, lr=0.05, weight_decay=5e-4,
           milestones=(150 / 240, 180 / 240, 210 / 240), gamma=0.1, small_model_lr=0.01)
)
RECIPES.register("overhaul")(
    Recipe(name="overhaul", epochs=200, batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4,
           milestones=(100 / 200, 150 / 200), gamma=0.1)
)
# The DFA first author's public baseline code (PkuDavidGuan/Distillation, commit c2c0316):
# CIFAR-100 200 epochs, batch 128, SGD lr 0.1 Nesterov, momentum 0.9, wd 5e-4, lr x0.2 at
# 60/120/160; CINIC-10 140 epochs, batch 96, lr 0.01, x0.1 at 100/120, RandomResizedCrop(32)
# (the same SGD otherwise). It may be the paper's schedule; the paper's text does not say.
RECIPES.register("dfa_author")(
    Recipe(name="dfa_author", epochs=200, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
           milestones=(60 / 200, 120 / 200, 160 / 200), gamma=0.2)
)
RECIPES.register("dfa_author_cinic")(
    Recipe(name="dfa_author_cinic", epochs=140, batch_size=96, lr=0.01, momentum=0.9, nesterov=True,
           weight_decay=5e-4, milestones=(100 / 140, 120 / 140), gamma=0.1, crop="resized")
)
# The embedded default: minutes on a laptop CPU, >= 90 % on digits.
RECIPES.register("quick")(
    Recipe(name="quick", epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine")
)
