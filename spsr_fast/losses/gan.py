"""Relativistic average GAN (RaGAN) on BCE-with-logits, as in ESRGAN and the SPSR authors' code.

Discriminator: real should look more real than the average fake and vice versa:
    L_D = [BCE(D(x_r) - mean D(x_f), 1) + BCE(D(x_f) - mean D(x_r), 0)] / 2
Generator: the symmetric objective, with the real logits treated as constants:
    L_G = [BCE(D(x_r) - mean D(x_f), 0) + BCE(D(x_f) - mean D(x_r), 1)] / 2
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def ragan_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """`real_logits` are detached here (the authors detach D(real) in the G step)."""
    real, fake = real_logits.detach().float(), fake_logits.float()
    return (_bce(real - fake.mean(), 0.0) + _bce(fake - real.mean(), 1.0)) / 2


def ragan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """`fake_logits` must come from a detached generator output (no gradient into G)."""
    real, fake = real_logits.float(), fake_logits.float()
    return (_bce(real - fake.mean(), 1.0) + _bce(fake - real.mean(), 0.0)) / 2
