"""The CRD benchmark's weight initialisation, shared by the zoo's families.

Every family initialises convolutions He-normal over fan-out (N(0, 2 / (k*k*out)); CRD writes
it as `normal_(0, sqrt(2/n))` in some files and `kaiming_normal_(mode="fan_out")` in others,
which draw the same distribution) and BatchNorm to the identity; they differ only in the
classifier, hence `linear`.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import nn


def init_crd(model: nn.Module, linear: Literal["default", "zero_bias", "normal"] = "default") -> None:
    """`linear`: keep PyTorch's default (ResNets), zero the bias (WRN), or N(0, 0.01) weights
    with zero bias (VGG, MobileNetV2). Conv biases, where a model has them, start at zero."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear != "default":
            if linear == "normal":
                nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
