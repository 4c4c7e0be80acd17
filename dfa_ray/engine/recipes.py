"""Named training recipes: the CRD and Overhaul protocols, the DFA first author's
(`dfa_author` for CIFAR, `dfa_author_cinic` for CINIC-10) and `quick` for the demo. The
protocols and where each comes from are described in docs/protocols.md.

Learning-rate milestones are stored as fractions of the epoch budget, so that overriding
`epochs` (a 10-epoch smoke run, a 60-epoch sweep) keeps the shape of the schedule; at the
protocol's own epoch count the fractions give exactly the published milestones
(crd: 150/180/210 of 240; overhaul: 100/150 of 200).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, field_validator

from dfa_ray.errors import ConfigError
from dfa_ray.option_models import OptionModel, option, type_word
from dfa_ray.registry import Registry

RECIPES: Registry["Recipe"] = Registry("recipe")

# CRD uses lr 0.01 instead of 0.05 for these light-weight students.
SMALL_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")

_Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
_NONE_WORDS = ("none", "None", "")  # `--set padding=none` on the command line


class Recipe(OptionModel):
    """A training recipe: one protocol's optimiser, schedule, split and augmentation.

    Lax about types, unlike the search options: CLI `--set lr=0.2` and recipe overrides given as
    strings are converted (`"0.2"` -> 0.2, `"true"` -> True, `"0.5,0.75"` -> milestones), but a
    bool is never a number. `Recipe(**d)`, `model_validate(d)` and `with_overrides` raise a
    ConfigError naming the field; the spec validates with `context=FIELD_ERRORS`
    (`dfa_ray.option_models`) to report `recipe.<field>` itself.
    """

    what = "recipe field"

    name: str = Field(description="the protocol (registry name) the recipe comes from; not overridable",
                      json_schema_extra={"allowed": "a protocol name"})
    epochs: int = option(..., "epoch budget", "an integer >= 1", ge=1)
    batch_size: int = option(..., "training images per batch", "an integer >= 1", ge=1)
    lr: float = option(..., "SGD learning rate at the start", "a number > 0", gt=0, allow_inf_nan=False)
    momentum: float = option(0.9, "SGD momentum", "a number in [0, 1)", ge=0, lt=1)
    nesterov: bool = option(False, "Nesterov momentum", "true | false")
    weight_decay: float = option(5e-4, "SGD weight decay", "a number >= 0", ge=0)
    schedule: Literal["multistep", "cosine"] = option("multistep", "lr schedule: multistep | cosine",
                                                      "multistep | cosine")
    milestones: tuple[_Fraction, ...] = option(
        (), "fractions of `epochs` where lr is multiplied by gamma",
        "a list of fractions of the epochs, each in (0, 1), e.g. [0.5, 0.75]")
    gamma: float = option(0.1, "multistep: factor of the lr at each milestone", "a finite number")
    lr_min: float = option(0.0, "floor of the cosine schedule", "a number >= 0", ge=0)
    small_model_lr: float | None = option(None, "lr for SMALL_LR_MODELS, when the protocol has one",
                                          "a number > 0, or null (the same lr as the others)", gt=0,
                                          allow_inf_nan=False)
    holdout_fraction: float = option(0.1, "part of the training set held out for model selection",
                                     "a number in [0, 1)", ge=0, lt=1)
    split_seed: int = option(0, "seed of the held-out split, shared by every trial whatever its seed",
                             "an integer >= 0", ge=0)
    eval_batch_size: int = option(256, "images per evaluation batch", "an integer >= 1", ge=1)
    padding: int | None = option(None, "random-crop padding; null: the dataset's default",
                                 "an integer >= 0, or null (the dataset's default)", ge=0)
    flip: bool = option(True, "random horizontal flip", "true | false")
    crop: Literal["pad", "resized"] = option(
        "pad", "pad (random crop of the zero-padded image) | resized (RandomResizedCrop)", "pad | resized")
    crop_scale_min: float = option(0.08, "resized: smallest area share of the box (torchvision's default)",
                                   "a number in (0, 1]", gt=0, le=1)

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones_from_text(cls, v: Any) -> Any:
        # `--set milestones=0.5,0.75` reaches us as one string
        if isinstance(v, str):
            return [p.strip() for p in v.replace("[", "").replace("]", "").split(",") if p.strip()]
        return v

    @field_validator("small_model_lr", "padding", mode="before")
    @classmethod
    def _none_from_text(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.strip() in _NONE_WORDS else v

    def milestone_epochs(self) -> list[int]:
        return sorted({max(1, round(f * self.epochs)) for f in self.milestones})

    def lr_for(self, model_name: str) -> float:
        if self.small_model_lr is not None and model_name in SMALL_LR_MODELS:
            return self.small_model_lr
        return self.lr

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "Recipe":
        """A copy with fields replaced; unknown or invalid fields are a ConfigError."""
        if not overrides:
            return self
        if "name" in overrides:
            raise self._unknown_error(["name"])
        return Recipe.model_validate({**self.model_dump(), **overrides})

    @property
    def resized_crop(self) -> tuple[float, float] | None:
        """The loader's RandomResizedCrop scale range, or None for the padded crop."""
        return (self.crop_scale_min, 1.0) if self.crop == "resized" else None

    # --- the ConfigError of a caller outside the spec --------------------------------------
    @classmethod
    def _unknown_error(cls, unknown: list[str]) -> ConfigError:
        valid = ", ".join(k for k in cls.model_fields if k != "name")
        return ConfigError(f"recipe field {unknown[0]!r} does not exist; valid fields: {valid}")

    @classmethod
    def _invalid_error(cls, name: str, value: Any, allowed: str, cause: str, data: Any) -> ConfigError:
        if cause.endswith(("_parsing", "_type")) and name in cls.model_fields:
            kind = type_word(cls.model_fields[name].annotation)
            return ConfigError(f"recipe field {name!r}: {value!r} is not a valid {kind}; allowed: {allowed}")
        recipe = data.get("name", "?") if isinstance(data, Mapping) else "?"
        return ConfigError(f"recipe {recipe!r}: {name} = {value!r} is invalid; allowed: {allowed}")


def get_recipe(name: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    return RECIPES.get(name).with_overrides(overrides)


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
