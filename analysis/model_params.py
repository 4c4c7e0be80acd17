"""Parameter counts of the model zoo, as a torch-free table for the analysis.

Generated once from `dfa-ray models --json` (counts at 100 classes and 3 input channels, the
CIFAR-100 setting of the CRD benchmark); tests/test_model_params.py checks every entry against
`dfa_ray.models.model_summary`, so a change in the zoo fails a test instead of silently
skewing the teacher/student parameter ratios of the robustness analysis.

Why a copy: `analysis/` must run where only the Parquet files and pandas are (no torch).
For another number of classes C the count changes by (C - 100) x (feature dim + 1) in the
classifier only, which moves a teacher/student ratio by well under 1% for these models.
"""

from __future__ import annotations

PARAMS_AT_100_CLASSES: dict[str, int] = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "ResNet50": 23_705_252,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_16_4": 2_772_020,
    "wrn_28_2": 1_479_220,
    "wrn_28_4": 5_872_180,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "MobileNetV2": 812_836,
    "ShuffleV1": 949_258,
    "ShuffleV2": 1_355_528,
}


def param_count(model: str) -> int | None:
    """Parameters of `model` at 100 classes, or None for a model this table does not know."""
    return PARAMS_AT_100_CLASSES.get(model)


def param_ratio(teacher: str, student: str) -> float | None:
    """teacher params / student params (None if either is unknown)."""
    t, s = param_count(teacher), param_count(student)
    if t is None or s is None:
        return None
    return t / s


__all__ = ["PARAMS_AT_100_CLASSES", "param_count", "param_ratio"]
