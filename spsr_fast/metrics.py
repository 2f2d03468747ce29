"""Evaluation metrics (docs/ARCHITECTURE.md 6): PSNR and SSIM on Y of YCbCr with `shave` border
pixels removed, and LPIPS (AlexNet, v0.1) when the `lpips` package is installed: its linear
layers ship with the package, its AlexNet trunk is torchvision's ImageNet file, fetched on first
use into the torch hub cache (spsr_fast/losses/pretrained.py).

PSNR/SSIM follow the usual SR benchmark code: Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in
[0, 1] (so Y is in [16, 235]); SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, L = 255, valid-region filtering. Inputs: torch tensors (B or no batch) x 3 x H x W in [0, 1].
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import warnings

import torch
import torch.nn.functional as F

from .losses.pretrained import PretrainedWeightsUnavailable, torchvision_state_dict

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


class LPIPSUnavailable(PretrainedWeightsUnavailable):
    """LPIPS cannot run here; the message (one line) says why and how to fix it."""


def _alexnet_weights():
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1


def _linear_weights_file(package_dir: str) -> str:
    return os.path.join(package_dir, "weights", "v0.1", "alex.pth")


def _load_alexnet_trunk(trunk: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision AlexNet weights ("features.N.weight") into lpips' trunk, whose slices
    hold the modules of alexnet().features under their original indices."""
    params = {f"features.{index}.{name}": p
              for part in trunk.children() for index, module in part.named_children()
              for name, p in module.named_parameters(recurse=False)}
    missing = [k for k in params if k not in state or state[k].shape != params[k].shape]
    if missing:
        raise LPIPSUnavailable(f"LPIPS: the AlexNet weights lack {', '.join(missing[:4])}")
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(state[key])


class LPIPS:
    """LPIPS (AlexNet, v0.1) on [0, 1] RGB; inputs are mapped to [-1, 1]. `backbone="random"`
    (tests of the plumbing only) leaves the AlexNet trunk random instead of fetching it."""

    def __init__(self, device="cpu", backbone: str = "torchvision"):
        spec = importlib.util.find_spec("lpips")
        if spec is None:
            raise LPIPSUnavailable("LPIPS: the `lpips` package is not installed (pip install lpips)")
        linear = _linear_weights_file(os.path.dirname(spec.origin))
        if not os.path.isfile(linear):
            raise LPIPSUnavailable(f"LPIPS: the lpips package lacks its v0.1 AlexNet linear weights "
                                   f"({linear}); reinstall it (pip install --force-reinstall lpips)")
        if backbone not in ("torchvision", "random"):
            raise ValueError(f"LPIPS: backbone must be 'torchvision' or 'random', got {backbone!r}")
        state = None
        if backbone == "torchvision":
            state = torchvision_state_dict(_alexnet_weights(), "LPIPS", None, LPIPSUnavailable)
        import lpips

        with warnings.catch_warnings():
            # lpips builds its trunk with torchvision's deprecated `pretrained=False`; we load it.
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        if state is not None:
            _load_alexnet_trunk(net.net, state)
        self.net = net.to(device).eval()

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        if sr.dim() == 3:
            sr, hr = sr[None], hr[None]
        return self.net(sr.float() * 2 - 1, hr.float() * 2 - 1).mean().item()


def make_lpips(device="cpu") -> LPIPS | None:
    """An LPIPS metric, or None after one logged line saying why it is unavailable (LPIPS is
    an optional metric: validation and `spsr-fast eval` go on without it)."""
    try:
        return LPIPS(device)
    except LPIPSUnavailable as exc:
        log.warning("%s; LPIPS is skipped", exc)
        return None
