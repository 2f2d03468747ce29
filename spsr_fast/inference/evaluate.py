"""Benchmark-protocol evaluation (docs/ARCHITECTURE.md 6) of an Upscaler against MATLAB-style bicubic.

Per HR image: modcrop to the scale, LR = MATLAB bicubic x1/scale (8-bit quantised, like
a stored LR PNG) or the image's partner in a given LR folder (e.g. a degraded set written by
`spsr-fast degrade`), SR by the network, and the bicubic upscaling of the same LR beside it;
PSNR/SSIM on Y with `scale` pixels shaved, LPIPS (AlexNet v0.1) when available, and the
mean absolute error of the gradient maps (docs/ARCHITECTURE.md 2.1, padding 1, same shave), which
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


class LRSizeError(ValueError):
    """A given LR image that does not fit its HR image at the model's scale."""


def paired_hr(hr: np.ndarray, lr: np.ndarray, scale: int, name: str) -> np.ndarray:
    """The part of `hr` that `lr` (x scale) covers: HR modcropped, then cropped to LR x scale;
    LRSizeError naming the image when the LR is larger than HR / scale."""
    if lr.shape[0] * scale > hr.shape[0] or lr.shape[1] * scale > hr.shape[1]:
        raise LRSizeError(f"{name}: LR {lr.shape[1]}x{lr.shape[0]} x{scale} is larger than its HR "
                         f"{hr.shape[1]}x{hr.shape[0]} (another scale?)")
    return hr[: lr.shape[0] * scale, : lr.shape[1] * scale]


def evaluate_image(upscaler: Upscaler, hr_rgb: np.ndarray, name: str, lpips=None,
                   keep_images: bool = False, lr_rgb: np.ndarray | None = None) -> ImageScores:
    """Scores of bicubic and of the model on one HR image (H x W x 3 float in [0, 1]), from its
    given LR `lr_rgb` (H/scale x W/scale x 3) or, without one, its MATLAB bicubic downscaling;
    `keep_images` also returns the three images (3 x H x W) for side-by-side views."""
    from spsr_fast.data.datasets import make_lr, modcrop
    from spsr_fast.data.imresize import imresize

    scale = upscaler.scale
    hr = modcrop(hr_rgb, scale)
    if lr_rgb is None:
        lr = make_lr(hr, scale, quantize_lr=True)
    else:
        lr, hr = lr_rgb, paired_hr(hr, lr_rgb, scale, name)
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


def lr_partners(hr_paths: list[str], hr_root: str, lr_dir: str, scale: int) -> list[str]:
    """The LR image of each HR image in `lr_dir`: the same path inside the folder (any image
    extension), else the same file name up to an x{scale} / _LR suffix. FileNotFoundError
    naming the first HR image without one."""
    from spsr_fast.data.datasets import _lr_key
    from spsr_fast.data.images import list_images

    if not os.path.isdir(lr_dir):
        raise FileNotFoundError(f"--lr-dir: folder does not exist: {lr_dir}")
    by_path, by_name = {}, {}
    for p in list_images(lr_dir):
        by_path[os.path.splitext(os.path.relpath(p, lr_dir))[0]] = p
        by_name.setdefault(_lr_key(p, scale), p)
    partners, missing = [], []
    for path in hr_paths:
        key = os.path.splitext(image_name(path, hr_root))[0]
        found = by_path.get(key) or by_name.get(_lr_key(path, scale))
        partners.append(found)
        if found is None:
            missing.append(path)
    if missing:
        raise FileNotFoundError(f"--lr-dir: no LR image in {lr_dir} for {len(missing)} of {len(hr_paths)} HR "
                                f"images, e.g. {missing[0]}")
    return partners
