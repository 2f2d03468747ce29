"""MATLAB-compatible bicubic `imresize` (the way SR benchmarks make LR images).

How it matches MATLAB's `imresize(img, scale, 'bicubic')`:
- kernel: Keys cubic with a = -0.5;
- antialiasing when downscaling: the kernel is stretched by 1/scale (h(x) = scale * cubic(scale * x))
  and its support widened from 4 to 4 / scale input pixels;
- output pixel i (1-based) samples input coordinate u = i / scale + 0.5 * (1 - 1 / scale);
- weights of each output pixel are normalised to sum to 1; taps with zero weight everywhere are dropped;
- borders: symmetric padding (index sequence 1..n, n..1 repeated), exactly MATLAB's `symmetric`;
- separable: one 1-D pass per axis, the axis with the smaller scale first (rows first on ties).
Results are float (no uint8 rounding); callers that want 8-bit LR round themselves.
The 1-D pass is a dense (out x in) matrix built once per (in_len, out_len, scale) and cached,
so resizing a crop is two small matrix products.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

CUBIC_A = -0.5
CUBIC_SUPPORT = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    a = CUBIC_A
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return near + far


def _symmetric_index(idx: np.ndarray, length: int) -> np.ndarray:
    """0-based MATLAB `symmetric` padding: ... 1 0 | 0 1 .. n-1 | n-1 n-2 ..."""
    period = np.concatenate([np.arange(length), np.arange(length - 1, -1, -1)])
    return period[np.mod(idx, 2 * length)]


@functools.lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix of the 1-D MATLAB bicubic resize."""
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize_matrix: lengths must be >= 1, got in_len={in_len}, out_len={out_len}")
    widen = antialias and scale < 1
    width = CUBIC_SUPPORT / scale if widen else CUBIC_SUPPORT
    out_pos = np.arange(1, out_len + 1, dtype=np.float64)
    u = out_pos / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    weights = scale * cubic(dist * scale) if widen else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    keep = np.any(weights != 0, axis=0)  # MATLAB drops taps that are zero for every output
    weights, idx = weights[:, keep], idx[:, keep]
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    cols = _symmetric_index(idx.astype(np.int64) - 1, in_len)
    rows = np.broadcast_to(np.arange(out_len)[:, None], cols.shape)
    np.add.at(matrix, (rows, cols), weights)
    return matrix


def output_size(in_len: int, scale: float) -> int:
    return int(math.ceil(in_len * scale))


def imresize(img, scale: float, antialias: bool = True):
    """Resize by `scale` like MATLAB. `img`: float numpy array H x W (x C) or torch tensor
    (..., H, W); returns the same kind, float, same dtype (float64 math inside for numpy,
    the tensor's dtype for torch)."""
    if not scale > 0:
        raise ValueError(f"imresize: scale must be > 0, got {scale!r}")
    if isinstance(img, torch.Tensor):
        return _imresize_torch(img, scale, antialias)
    if not isinstance(img, np.ndarray):
        raise TypeError(f"imresize: img must be a numpy array or torch tensor, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: img must be H x W or H x W x C, got shape {img.shape}")
    h, w = img.shape[:2]
    mh = resize_matrix(h, output_size(h, scale), scale, antialias)
    mw = resize_matrix(w, output_size(w, scale), scale, antialias)
    x = img.astype(np.float64)
    # Both axes share the scale, so MATLAB's order is rows first (the tie rule).
    x = np.tensordot(mh, x, axes=([1], [0]))  # (H', W, C)
    x = np.tensordot(mw, x, axes=([1], [1])).swapaxes(0, 1)  # (H', W', C)
    return x.astype(img.dtype if img.dtype.kind == "f" else np.float64)


def _imresize_torch(img: torch.Tensor, scale: float, antialias: bool) -> torch.Tensor:
    if img.dim() < 2 or not img.dtype.is_floating_point:
        raise ValueError(f"imresize: tensor must be floating point with >= 2 dims, got {img.dtype} {tuple(img.shape)}")
    h, w = img.shape[-2:]
    mh = torch.from_numpy(resize_matrix(h, output_size(h, scale), scale, antialias)).to(img)
    mw = torch.from_numpy(resize_matrix(w, output_size(w, scale), scale, antialias)).to(img)
    return mh @ img @ mw.t()
