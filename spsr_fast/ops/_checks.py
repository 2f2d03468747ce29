"""Argument checks shared by the op modules: clear errors naming the op and the argument."""
from __future__ import annotations

import torch


def check_image_batch(x, op: str) -> None:
    """x must be a 4-D (B, C, H, W) floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: x must be a floating-point tensor, got {x.dtype}")
