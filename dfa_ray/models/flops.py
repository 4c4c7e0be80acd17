"""Multiply-accumulates of a model's forward pass, counted by forward hooks on its Conv2d and
Linear layers (what dominates every network of the zoo; BN, activations and pooling are
left out, a few percent at most).

A Conv2d's output element costs (in_channels / groups) x kernel_h x kernel_w MACs; a Linear's
costs in_features. The count is per image: the forward runs on one input of the given shape
(C, H, W), in eval mode and without gradients, and the model's training mode is restored.
Why a hook count rather than a formula per family: the layers that actually run are counted,
strides, groups and down-sampling shortcuts included, for any model a plug-in registers.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: Sequence[int],
               forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> int:
    """MACs of one forward of `model` on one image of shape `input_shape` = (C, H, W).

    `forward(model, x)`: what to run instead of `model(x)` (e.g. `forward_groups`); the count
    is of the Conv2d / Linear calls it makes.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape is (channels, height, width), got {tuple(input_shape)}")
    total = 0

    def conv_hook(m: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += output.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
        model.eval()
        with torch.no_grad():
            if forward is None:
                model(x)
            else:
                forward(model, x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)
