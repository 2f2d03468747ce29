"""Additive noise for a batch, per sample: Gaussian (sigma on the 0-255 scale) or Poisson
(shot noise of an image quantised to 2^ceil(log2(levels)) photon counts, Real-ESRGAN's model),
in colour or grey (one noise image for R, G and B)."""
from __future__ import annotations

import torch

# torchvision's rgb_to_grayscale weights (Real-ESRGAN's grey Poisson noise uses them)
GREY_WEIGHTS = (0.2989, 0.587, 0.114)


def gaussian_noise(shape, sigma: torch.Tensor, grey: bool, gen: torch.Generator, device,
                   dtype=torch.float32) -> torch.Tensor:
    """Noise of `shape` (B, C, H, W): N(0, (sigma_i / 255)^2) per sample; grey: one plane for all
    channels."""
    b, c, h, w = shape
    scale = (sigma.to(device=device, dtype=dtype) / 255.0).view(b, 1, 1, 1)
    if grey:
        return torch.randn((b, 1, h, w), generator=gen, device=device, dtype=dtype).expand(b, c, h, w) * scale
    return torch.randn((b, c, h, w), generator=gen, device=device, dtype=dtype) * scale


def _levels(x8: torch.Tensor) -> torch.Tensor:
    """2^ceil(log2(number of distinct 8-bit values)) of each sample of x8 (B, C, H, W), integers 0-255."""
    b = x8.shape[0]
    present = torch.zeros(b, 256, device=x8.device, dtype=torch.bool)
    present.scatter_(1, x8.reshape(b, -1).long(), True)
    count = present.sum(1).clamp_min(1).double()
    return torch.exp2(torch.ceil(torch.log2(count)))


def _shot(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Poisson noise of an image in [0, 1] taken to 8 bits: Poisson(image * L) / L - image."""
    x8 = torch.round(image.clamp(0, 1) * 255)
    img = x8 / 255
    levels = _levels(x8).to(image.dtype).view(-1, 1, 1, 1)
    return torch.poisson(img * levels, generator=gen) / levels - img


def poisson_noise(x: torch.Tensor, scale: torch.Tensor, grey: bool, gen: torch.Generator) -> torch.Tensor:
    """Real-ESRGAN's Poisson noise of x (B, 3, H, W), times scale[i]; grey: the noise of the luma
    image (torchvision's weights) for all channels."""
    b, c, h, w = x.shape
    if grey:
        weights = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        noise = _shot((x * weights).sum(1, keepdim=True), gen).expand(b, c, h, w)
    else:
        noise = _shot(x, gen)
    return noise * scale.to(device=x.device, dtype=x.dtype).view(b, 1, 1, 1)
