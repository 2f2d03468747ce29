"""Benchmark-protocol evaluation (DESIGN.md 6) of an Upscaler against MATLAB-style bicubic.

Per HR image: modcrop to the scale, LR = MATLAB bicubic x1/scale (8-bit quantised, like
a stored LR PNG), SR by the network, and the bicubic upscaling of the same LR beside it;
PSNR/SSIM on Y with `scale` pixels shaved, LPIPS (AlexNet v0.1) when available, and the
mean absolute error of the gradient maps (DESIGN.md 2.1, padding 1, same shave), which
is the structure SPSR is about.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .runner import Upscaler

METHODS = ("bicubic", "model")


@dataclass
class Scores:
    psnr_y: float
    ssim_y: float
    grad_mae: float
    lpips: float | None = None


@dataclass
class ImageScores:
    name: str
    size: tuple[int, int]
    scores: dict[str, Scores] = field(default_factory=dict)
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # when asked for: bicubic, model, hr


def gradient_map_error(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> float:
    from spsr_fast.ops import gradient_map

    g_sr, g_hr = gradient_map(sr[None].float(), padding=1), gradient_map(hr[None].float(), padding=1)
    if shave:
        g_sr, g_hr = g_sr[..., shave:-shave, shave:-shave], g_hr[..., shave:-shave, shave:-shave]
    return (g_sr - g_hr).abs().mean().item()


def _score(sr: torch.Tensor, hr: torch.Tensor, scale: int, lpips) -> Scores:
    from spsr_fast.metrics import psnr_y, ssim_y

    sr = torch.round(sr.clamp(0, 1) * 255) / 255  # what a saved 8-bit result holds
    return Scores(psnr_y(sr, hr, shave=scale), ssim_y(sr, hr, shave=scale), gradient_map_error(sr, hr, scale),
                  None if lpips is None else lpips(sr, hr))


def evaluate_image(upscaler: Upscaler, hr_rgb: np.ndarray, name: str, lpips=None,
                   keep_images: bool = False) -> ImageScores:
    """Scores of bicubic and of the model on one HR image (H x W x 3 float in [0, 1]);
    `keep_images` also returns the three images (3 x H x W) for side-by-side views."""
    from spsr_fast.data.datasets import make_lr, modcrop
    from spsr_fast.data.imresize import imresize

    scale = upscaler.scale
    hr = modcrop(hr_rgb, scale)
    lr = make_lr(hr, scale, quantize_lr=True)
    hr_t = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).float()
    lr_t = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1).float()
    bicubic = imresize(lr_t, float(scale)).clamp(0, 1)
    sr = upscaler.upscale_tensor(lr_t)[0][0]
    result = ImageScores(name, hr.shape[:2])
    result.scores["bicubic"] = _score(bicubic, hr_t, scale, lpips)
    result.scores["model"] = _score(sr, hr_t, scale, lpips)
    if keep_images:
        result.images = {"bicubic": bicubic, "model": sr, "hr": hr_t}
    return result


def side_by_side(images: dict[str, torch.Tensor], gap: int = 4) -> np.ndarray:
    """bicubic | model | HR as one H x (3W + 2 gap) x 3 float image (white gaps)."""
    parts = [images[k].clamp(0, 1).permute(1, 2, 0).numpy() for k in ("bicubic", "model", "hr")]
    spacer = np.ones((parts[0].shape[0], gap, 3), np.float32)
    return np.concatenate([parts[0], spacer, parts[1], spacer, parts[2]], axis=1)


def mean_scores(results: list[ImageScores]) -> dict[str, Scores]:
    means = {}
    for method in METHODS:
        rows = [r.scores[method] for r in results]
        lp = [s.lpips for s in rows]
        means[method] = Scores(*(float(np.mean([getattr(s, k) for s in rows])) for k in ("psnr_y", "ssim_y", "grad_mae")),
                               None if any(v is None for v in lp) else float(np.mean(lp)))
    return means


def as_json(results: list[ImageScores], extra: dict) -> dict:
    return {**extra,
            "images": [{"name": r.name, "size": list(r.size), **{m: asdict(s) for m, s in r.scores.items()}}
                       for r in results],
            "mean": {m: asdict(s) for m, s in mean_scores(results).items()} if results else {}}


def image_name(path: str, root: str) -> str:
    return os.path.relpath(path, root) if os.path.isdir(root) else os.path.basename(path)
