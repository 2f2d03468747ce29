"""Gradient-space losses of SPSR-G, computed with the fused `gradient_map` op.

- gradient pixel loss: MSE between gradient maps (padding 2, (H+2) x (W+2)) of SR and HR,
  the maps the gradient discriminator also sees;
- gradient-branch loss: L1 between the gradient branch's output and the HR gradient map
  with padding 1 (H x W), like the authors' Get_gradient_nopadding target.
"""
from __future__ import annotations

import torch

from ..ops import gradient_map
from .pixel import pixel_loss


def gradient_pixel_loss(sr: torch.Tensor, hr: torch.Tensor,
                        sr_grad: torch.Tensor | None = None, hr_grad: torch.Tensor | None = None) -> torch.Tensor:
    """MSE(gradient_map(sr, 2), gradient_map(hr, 2)); pass precomputed maps to reuse them."""
    sr_grad = gradient_map(sr, padding=2) if sr_grad is None else sr_grad
    hr_grad = gradient_map(hr, padding=2) if hr_grad is None else hr_grad
    return pixel_loss(sr_grad, hr_grad, "l2")


def gradient_branch_loss(branch_out: torch.Tensor, hr: torch.Tensor, criterion: str = "l1") -> torch.Tensor:
    with torch.no_grad():
        target = gradient_map(hr, padding=1)
    return pixel_loss(branch_out, target, criterion)
