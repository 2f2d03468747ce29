"""Random resizing: F.interpolate to an explicit size (area = adaptive average pooling;
bilinear / bicubic with align_corners=False and no antialiasing, as Real-ESRGAN)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import RESIZE_DIRECTIONS, FirstStage
from .kernels import categorical, uniform


@dataclass
class ResizeDraw:
    factor: float     # relative to the stage's reference size
    mode: str


def draw_resize(gen: torch.Generator, stage: FirstStage) -> ResizeDraw:
    """Up, down or keep with stage.resize_prob, the factor uniform within the direction's part
    of resize_range, the mode uniform over stage.resize_modes. One draw per batch (every sample
    of a batch keeps one size, as in Real-ESRGAN)."""
    direction = RESIZE_DIRECTIONS[int(categorical(gen, 1, stage.resize_prob))]
    lo, hi = stage.resize_range
    up, down = float(uniform(gen, 1, 1.0, hi)), float(uniform(gen, 1, lo, 1.0))
    factor = {"up": up, "down": down, "keep": 1.0}[direction]
    mode = stage.resize_modes[int(torch.randint(len(stage.resize_modes), (1,), generator=gen))]
    return ResizeDraw(factor, mode)


def draw_mode(gen: torch.Generator, modes: list[str]) -> str:
    return modes[int(torch.randint(len(modes), (1,), generator=gen))]


def scaled(length: int, factor: float) -> int:
    return max(1, int(length * factor))


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)
