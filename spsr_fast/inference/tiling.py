"""Tiled upscaling of images of any size, with seams blended away.

The low-resolution image is cut into a grid of equal, overlapping tiles (an axis shorter
than the tile is one tile of its full length), so every tile has the same shape and
tiles are batched. Each upscaled tile is weighted by a separable window that is 1 in its
middle and, on every side that has a neighbour, rises from 0 to 1 across the overlap
with a raised-cosine ramp, starting a quarter of the overlap in from the edge: the
pixels nearest a tile border, where the network saw zero padding instead of image,
count least or not at all. The windows of each axis are normalised to sum to 1 at every
position, so the blend needs no weight buffer: outputs accumulate directly into the
result, which stays on the CPU (only a batch of tiles is ever on the device).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size min(tile, length) covering [0, length), neighbours
    overlapping by at least `overlap`; the last tile ends exactly at `length`."""
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile={tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(count)]
    return sorted(set(starts))


def _ramp(overlap: int) -> np.ndarray:
    """Weights of the `overlap` pixels nearest a shared edge, edge first: 0 for the
    first quarter, then a raised cosine up to 1."""
    if overlap <= 0:
        return np.ones(0)
    distance = np.arange(overlap) + 0.5
    t = np.clip((distance - overlap / 4) / (overlap / 2), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def axis_windows(length: int, starts: Sequence[int], size: int, overlap: int) -> list[np.ndarray]:
    """Per tile along one axis: its weights (length `size`), normalised so that the
    windows of all tiles sum to exactly 1 at every position of [0, length)."""
    raw = []
    for index, start in enumerate(starts):
        w = np.ones(size)
        ramp = _ramp(min(overlap, size))
        if index > 0:
            w[:len(ramp)] = np.minimum(w[:len(ramp)], ramp)
        if index < len(starts) - 1:
            w[size - len(ramp):] = np.minimum(w[size - len(ramp):], ramp[::-1])
        raw.append(w)
    total = np.zeros(length)
    for start, w in zip(starts, raw):
        total[start:start + size] += w
    if (total <= 0).any():  # cannot happen for overlap >= 2 or 0; a safety net for odd choices
        raise ValueError(f"tile_overlap={overlap} leaves pixels without weight; use 0 or >= 2")
    return [w / total[start:start + size] for start, w in zip(starts, raw)]


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an H x W low-resolution image lie, for upscaling factor `scale`."""

    height: int
    width: int
    tile: int
    overlap: int
    scale: int

    @property
    def tile_h(self) -> int:
        return min(self.tile, self.height)

    @property
    def tile_w(self) -> int:
        return min(self.tile, self.width)

    @property
    def rows(self) -> list[int]:
        return tile_starts(self.height, self.tile, self.overlap)

    @property
    def cols(self) -> list[int]:
        return tile_starts(self.width, self.tile, self.overlap)

    @property
    def boxes(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.rows for x in self.cols]

    def hr_windows(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        s = self.scale
        wy = axis_windows(self.height * s, [y * s for y in self.rows], self.tile_h * s, self.overlap * s)
        wx = axis_windows(self.width * s, [x * s for x in self.cols], self.tile_w * s, self.overlap * s)
        return wy, wx


def tiled_forward(forward: Callable[[torch.Tensor], Sequence[torch.Tensor]], image: torch.Tensor,
                  scale: int, tile: int, overlap: int, batch: int = 1,
                  progress: Callable[[int, int], None] | None = None,
                  pad_batch: bool = False) -> list[torch.Tensor]:
    """Upscales `image` (C x H x W, on the CPU) tile by tile.

    `forward(batch B x C x th x tw)` runs on the CPU tensors it is given (it moves them to
    its device) and returns a sequence of B x C_k x (scale*th) x (scale*tw) outputs; the
    blended outputs come back as float32 C_k x (scale*H) x (scale*W) CPU tensors, in the
    same order. `pad_batch` fills the last batch up to `batch` tiles so that every call
    has the same shape (for CUDA graphs / torch.compile). `progress(done, total)` is called
    after each batch."""
    if image.dim() != 3:
        raise ValueError(f"image must be C x H x W, got shape {tuple(image.shape)}")
    _, height, width = image.shape
    grid = TileGrid(height, width, tile, overlap, scale)
    wy, wx = grid.hr_windows()
    rows, cols = grid.rows, grid.cols
    th, tw = grid.tile_h, grid.tile_w
    boxes = grid.boxes
    outputs: list[torch.Tensor] | None = None
    for first in range(0, len(boxes), batch):
        chunk = boxes[first:first + batch]
        tiles = torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk])
        if pad_batch and len(chunk) < batch:
            tiles = torch.cat((tiles, tiles.new_zeros((batch - len(chunk), *tiles.shape[1:]))))
        results = [r.float().cpu() for r in forward(tiles)]
        if len(boxes) == 1 and (th, tw) == (height, width):
            # one tile is the whole image: its window is all ones, so the blend would be a copy
            # (a normal tensor, not the forward's inference tensor; strides kept: channels_last is the HWC
            # the image writer wants)
            return [r[0].clone() for r in results]
        if outputs is None:
            outputs = [torch.zeros((r.shape[1], height * scale, width * scale)) for r in results]
        for k, (y, x) in enumerate(chunk):
            i, j = rows.index(y), cols.index(x)
            weight = torch.from_numpy(np.outer(wy[i], wx[j])).float()
            for out, res in zip(outputs, results):
                hy, hx = y * scale, x * scale
                out[:, hy:hy + th * scale, hx:hx + tw * scale].addcmul_(res[k], weight)
        if progress is not None:
            progress(min(first + batch, len(boxes)), len(boxes))
    return outputs
