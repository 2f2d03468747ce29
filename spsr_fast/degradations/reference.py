"""A second, independent implementation of the pipeline: one image at a time, numpy, SciPy
and Pillow (no torch op), used by the tests as a reference and by bench/degradations.py as the
per-image baseline. It takes the same draws (spsr_fast.degradations.pipeline.draw) and follows
the same semantics; only the noise images come from numpy's generator, and JPEG is Pillow's
(libjpeg) encoder and decoder.

Images are H x W x 3 float64 arrays in [0, 1].
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage, special

from .kernels import GAUSSIAN, PLATEAU, SINC

# ----- kernels: BasicSR's formulation (covariance matrix, its inverse, the quadratic form) ---


def kernel(shape: int, size: int, sigma_x: float, sigma_y: float, theta: float, beta: float,
           cutoff: float, canvas: int) -> np.ndarray:
    """One kernel of `size` taps zero-padded to `canvas`, normalised to sum 1."""
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)                      # xx: column offset, yy: row offset
    if shape == SINC:
        r = np.hypot(xx, yy)
        with np.errstate(invalid="ignore", divide="ignore"):
            k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
        k[size // 2, size // 2] = cutoff ** 2 / (4 * np.pi)
    elif shape in (GAUSSIAN, PLATEAU):
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        cov = rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T
        grid = np.stack([xx, yy], axis=-1)
        q = np.einsum("...i,ij,...j->...", grid, np.linalg.inv(cov), grid)
        k = np.exp(-0.5 * q ** beta) if shape == GAUSSIAN else 1.0 / (q ** beta + 1.0)
    else:
        k = np.zeros((size, size))
        k[size // 2, size // 2] = 1.0
    k = k / k.sum()
    pad = (canvas - size) // 2
    return np.pad(k, pad)


def kernels_of(params, canvas: int) -> list[np.ndarray]:
    """The kernels of a KernelParams (one per sample)."""
    return [_kernel_of(params, i, canvas) for i in range(len(params.shape))]


# ----- filtering -----------------------------------------------------------------------------


def filter2d(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Correlation per channel, whole-sample mirrored borders (SciPy 'mirror')."""
    return np.stack([ndimage.correlate(img[..., c], k, mode="mirror") for c in range(img.shape[2])], axis=2)


def gaussian_taps(taps: int) -> np.ndarray:
    sigma = 0.3 * ((taps - 1) * 0.5 - 1) + 0.8
    ax = np.arange(taps) - (taps - 1) / 2
    w = np.exp(-ax ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def usm_sharpen(img: np.ndarray, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> np.ndarray:
    taps = radius + 1 if radius % 2 == 0 else radius
    g = gaussian_taps(taps)

    def blur(a):
        a = ndimage.correlate1d(a, g, axis=0, mode="mirror")
        return ndimage.correlate1d(a, g, axis=1, mode="mirror")

    residual = img - blur(img)
    soft = blur((np.abs(residual) * 255 > threshold).astype(np.float64))
    sharp = np.clip(img + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * img


# ----- resizing (PyTorch's F.interpolate semantics, align_corners=False, no antialias) -------


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max(scale * (i + 0.5) - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = src - i0
        m[i, i0] += 1 - t
        m[i, i1] += t
    return m


def _cubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    def near(x):   # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):    # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = scale * (i + 0.5) - 0.5
        i0 = math.floor(src)
        t = src - i0
        for tap, w in zip(range(i0 - 1, i0 + 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            m[i, min(max(tap, 0), n_in - 1)] += w
    return m


RESIZE_MATRICES = {"area": _area_matrix, "bilinear": _linear_matrix, "bicubic": _cubic_matrix}


def resize(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == tuple(size):
        return img
    rows, cols = RESIZE_MATRICES[mode](h, size[0]), RESIZE_MATRICES[mode](w, size[1])
    out = np.tensordot(rows, img, axes=(1, 0))                  # (size[0], w, c)
    return np.tensordot(cols, out, axes=(1, 1)).transpose(1, 0, 2)


# ----- noise ----------------------------------------------------------------------------------


def gaussian_noise(img: np.ndarray, sigma: float, grey: bool, rng: np.random.Generator) -> np.ndarray:
    shape = img.shape[:2] + (1,) if grey else img.shape
    return np.broadcast_to(rng.standard_normal(shape) * sigma / 255.0, img.shape)


def _shot(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = np.round(np.clip(img, 0, 1) * 255) / 255
    levels = 2.0 ** np.ceil(np.log2(max(len(np.unique(x)), 1)))
    return rng.poisson(x * levels) / levels - x


def poisson_noise(img: np.ndarray, scale: float, grey: bool, rng: np.random.Generator) -> np.ndarray:
    if grey:
        luma = img @ np.array([0.2989, 0.587, 0.114])
        return np.broadcast_to(_shot(luma, rng)[..., None] * scale, img.shape)
    return _shot(img, rng) * scale


# ----- JPEG (Pillow / libjpeg) ----------------------------------------------------------------


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode with Pillow at `quality` (4:2:0, its default) and decode."""
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255


# ----- the pipeline, one image ----------------------------------------------------------------


def _stage_noise(img, stage, i, rng):
    if bool(stage.gaussian[i]):
        noise = gaussian_noise(img, float(stage.sigma[i]), bool(stage.grey[i]), rng)
    else:
        noise = poisson_noise(img, float(stage.poisson_scale[i]), bool(stage.grey[i]), rng)
    return np.clip(img + noise, 0, 1)


def _kernel_of(params, i: int, canvas: int) -> np.ndarray:
    return kernel(int(params.shape[i]), int(params.size[i]), float(params.sigma_x[i]), float(params.sigma_y[i]),
                  float(params.theta[i]), float(params.beta[i]), float(params.cutoff[i]), canvas)


def degrade(hr: np.ndarray, d, i: int, scale: int, rng: np.random.Generator) -> np.ndarray:
    """The LR of `hr` (already sharpened when configured) under sample i of the draws `d`."""
    canvas = d.first.kernels.shape[-1]
    h, w = hr.shape[:2]
    s = d.first
    x = filter2d(hr, _kernel_of(s.kernel_params, i, canvas))
    x = resize(x, (max(1, int(h * s.resize.factor)), max(1, int(w * s.resize.factor))), s.resize.mode)
    x = _stage_noise(x, s, i, rng)
    x = jpeg(x, int(s.quality[i]))
    s = d.second
    x = filter2d(x, _kernel_of(s.kernel_params, i, canvas))
    x = resize(x, (max(1, int(h // scale * s.resize.factor)), max(1, int(w // scale * s.resize.factor))),
               s.resize.mode)
    x = _stage_noise(x, s, i, rng)
    final = _kernel_of(d.final_params, i, canvas)
    if bool(d.jpeg_first[i]):
        x = jpeg(x, int(s.quality[i]))
    x = filter2d(resize(x, (h // scale, w // scale), d.final_mode), final)
    if not bool(d.jpeg_first[i]):
        x = jpeg(x, int(s.quality[i]))
    return np.clip(np.round(x * 255), 0, 255) / 255
