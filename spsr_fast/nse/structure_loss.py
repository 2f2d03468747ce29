"""Structure loss of SPSR-P / SPSR-J (paper section 4.3, eqs. 14-16).

    L_S = pixel_weight * L1(NSE(SR), NSE(HR)) + gan_weight * RaGAN_G(D_S(NSE(HR)), D_S(NSE(SR)))

The NSE is frozen (no parameter gradients, always in eval mode): gradients reach the
generator through NSE(SR) only. The feature discriminator D_S is trained separately on
(NSE(HR), NSE(SR).detach()) by the stage.

Defaults. The paper's numbers for the two weights did not survive our copy of its text; we
use the weights of the gradient-space losses the structure loss replaces (1e-2 pixelwise,
5e-3 adversarial; the paper sets the gradient weights equal to the image-space ones), and
its Table IV reports little sensitivity to either. L1 rather than L2: NSE features are
unbounded, and L1 keeps rare large feature errors (strong edges) from dominating the
gradient, like the L1 pixel and perceptual losses of the same objective.
"""
from __future__ import annotations

import torch
from torch import nn

from ..losses import pixel_loss, ragan_generator_loss


class StructureLoss(nn.Module):
    def __init__(self, nse: nn.Module, pixel_weight: float = 1e-2, gan_weight: float = 5e-3,
                 criterion: str = "l1"):
        super().__init__()
        if pixel_weight < 0 or gan_weight < 0:
            raise ValueError(f"StructureLoss: weights must be >= 0, got pixel_weight={pixel_weight}, "
                             f"gan_weight={gan_weight}")
        pixel_loss(torch.zeros(1), torch.zeros(1), criterion)  # validates the criterion name
        self.nse = nse.eval().requires_grad_(False)
        self.pixel_weight, self.gan_weight, self.criterion = pixel_weight, gan_weight, criterion

    def train(self, mode: bool = True):
        return super().train(False)  # the NSE is a fixed measuring instrument

    def features(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NSE(SR), NSE(HR)); only the first carries a graph (into SR)."""
        with torch.no_grad():
            hr_features = self.nse(hr)
        return self.nse(sr), hr_features

    def generator_terms(self, sr_features: torch.Tensor, hr_features: torch.Tensor,
                        discriminator: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Weighted terms for the generator; `discriminator` (frozen by the caller) is needed
        when gan_weight > 0."""
        terms = {}
        if self.pixel_weight > 0:
            terms["l_g_struct_pix"] = self.pixel_weight * pixel_loss(sr_features, hr_features, self.criterion)
        if self.gan_weight > 0:
            if discriminator is None:
                raise ValueError("StructureLoss: gan_weight > 0 needs a feature discriminator")
            terms["l_g_struct_gan"] = self.gan_weight * ragan_generator_loss(discriminator(hr_features),
                                                                             discriminator(sr_features))
        return terms

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, discriminator: nn.Module | None = None) -> torch.Tensor:
        return sum(self.generator_terms(*self.features(sr, hr), discriminator).values(), torch.zeros((), device=sr.device))
