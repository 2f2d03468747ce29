"""Evaluation metrics (DESIGN.md 6): PSNR and SSIM on Y of YCbCr with `shave` border pixels
removed, and LPIPS (AlexNet, v0.1) when the `lpips` package and its weights are present.

PSNR/SSIM follow the usual SR benchmark code: Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in
[0, 1] (so Y is in [16, 235]); SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, L = 255, valid-region filtering. Inputs: torch tensors (B or no batch) x 3 x H x W in [0, 1].
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os

import torch
import torch.nn.functional as F

log = logging.getLogger("spsr_fast.metrics")


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (..., 3, H, W) -> Y in [16, 235] (..., 1, H, W), float64."""
    img = img.double()
    w = img.new_tensor([65.481, 128.553, 24.966]).view(3, 1, 1)
    return 16.0 + (img * w).sum(dim=-3, keepdim=True)


def _prepare(sr: torch.Tensor, hr: torch.Tensor, shave: int):
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    # Quantise to 8 bits first, like metrics computed on saved PNGs.
    sr = torch.round(sr.clamp(0, 1) * 255) / 255
    hr = torch.round(hr.clamp(0, 1) * 255) / 255
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    if shave:
        y_sr, y_hr = y_sr[..., shave:-shave, shave:-shave], y_hr[..., shave:-shave, shave:-shave]
    return y_sr, y_hr


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, shave: int = 4) -> float:
    y_sr, y_hr = _prepare(sr, hr, shave)
    mse = torch.mean((y_sr - y_hr) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, shave: int = 4) -> float:
    y_sr, y_hr = _prepare(sr, hr, shave)
    a, b = y_sr.reshape(-1, 1, *y_sr.shape[-2:]), y_hr.reshape(-1, 1, *y_hr.shape[-2:])
    win = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, win), F.conv2d(b, win)
    var_a = F.conv2d(a * a, win) - mu_a ** 2
    var_b = F.conv2d(b * b, win) - mu_b ** 2
    cov = F.conv2d(a * b, win) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean().item()


def _alexnet_cache_file() -> str:
    from torchvision.models import AlexNet_Weights

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url))


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS can run offline, else why not."""
    spec = importlib.util.find_spec("lpips")
    if spec is None:
        return "the `lpips` package is not installed (pip install lpips)"
    linear = os.path.join(os.path.dirname(spec.origin), "weights", "v0.1", "alex.pth")
    if not os.path.isfile(linear):
        return f"the lpips v0.1 AlexNet linear weights are missing ({linear})"
    if not os.path.isfile(_alexnet_cache_file()):
        return f"torchvision's AlexNet ImageNet weights are not in the cache ({_alexnet_cache_file()})"
    return None


class LPIPS:
    """LPIPS (AlexNet, v0.1) on [0, 1] RGB; inputs are mapped to [-1, 1]. Never downloads."""

    def __init__(self, device="cpu"):
        reason = lpips_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"LPIPS unavailable: {reason}")
        import lpips

        self.net = lpips.LPIPS(net="alex", version="0.1", verbose=False).to(device).eval()

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        if sr.dim() == 3:
            sr, hr = sr[None], hr[None]
        return self.net(sr.float() * 2 - 1, hr.float() * 2 - 1).mean().item()


def make_lpips(device="cpu") -> LPIPS | None:
    """An LPIPS metric, or None after one logged note saying why it is unavailable."""
    reason = lpips_unavailable_reason()
    if reason is not None:
        log.warning("LPIPS is skipped: %s", reason)
        return None
    return LPIPS(device)
