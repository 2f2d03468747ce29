"""Per-sample blur of a batch (one grouped convolution) and the unsharp mask.

Borders are mirrored without repeating the edge pixel (`d c b | a b c d | c b a`, OpenCV's
BORDER_REFLECT_101, torch's 'reflect'), folded as often as needed: stage-one downscaling can
leave images smaller than the kernel's half-width, where F.pad(mode='reflect') refuses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import gaussian_1d


def reflect_indices(n: int, pad: int, device=None) -> torch.Tensor:
    """Indices into a length-n axis of its reflect-101 extension by `pad` on both sides."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i < n, i, period - i)


def pad_reflect(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if pad_h < h and pad_w < w:   # one reflection: torch's own padding
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    x = x.index_select(-2, reflect_indices(h, pad_h, x.device))
    return x.index_select(-1, reflect_indices(w, pad_w, x.device))


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate sample i of x (B, C, H, W) with kernels[i] (B, k, k), every channel alike:
    one grouped convolution over the B*C planes. The kernels here are point-symmetric, so this
    is also their convolution."""
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    padded = pad_reflect(x, k // 2, k // 2).reshape(1, b * c, h + k - 1, w + k - 1)
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)   # (B*C, 1, k, k)
    return F.conv2d(padded, weight, groups=b * c).view(b, c, h, w)


def gaussian_blur_separable(x: torch.Tensor, taps: int) -> torch.Tensor:
    """OpenCV-style Gaussian blur (getGaussianKernel(taps, 0)) of every plane, reflect-101
    borders: two 1-D grouped convolutions over the B*C planes."""
    b, c, h, w = x.shape
    planes = b * c
    g = gaussian_1d(taps).to(device=x.device, dtype=x.dtype)
    padded = pad_reflect(x, taps // 2, taps // 2).reshape(1, planes, h + taps - 1, w + taps - 1)
    out = F.conv2d(padded, g.view(1, 1, taps, 1).expand(planes, 1, taps, 1), groups=planes)
    out = F.conv2d(out, g.view(1, 1, 1, taps).expand(planes, 1, 1, taps), groups=planes)
    return out.view(b, c, h, w)


def usm_sharpen(x: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> torch.Tensor:
    """Unsharp mask (Real-ESRGAN's USMSharp): x + weight * (x - blur), clipped to [0, 1], blended
    in by a blurred mask of where |x - blur| exceeds threshold / 255 (flat areas stay as they
    are, so noise is not amplified)."""
    taps = radius + 1 if radius % 2 == 0 else radius
    blur = gaussian_blur_separable(x, taps)
    residual = x - blur
    mask = ((residual.abs() * 255) > threshold).to(x.dtype)
    soft = gaussian_blur_separable(mask, taps)
    sharp = (x + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * x
