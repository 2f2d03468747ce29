"""Blur kernels of the pipeline, drawn per sample and built for a whole batch at once.

Families (Real-ESRGAN's, after BasicSR's degradations): with Q = [x y] S^-1 [x y]^T, S the
rotated covariance R(theta) diag(sx^2, sy^2) R(theta)^T (sy = sx, theta = 0 for *_iso),

    iso / aniso                     exp(-Q / 2)
    generalized_iso / _aniso        exp(-Q^beta / 2)      beta from betag_range
    plateau_iso / _aniso            1 / (1 + Q^beta)      beta from betap_range
    sinc (circular low-pass)        wc J1(wc r) / (2 pi r), wc^2 / (4 pi) at r = 0

each on an odd k x k grid (x: column, y: row, 0 at the centre), normalised to sum 1 and
zero-padded to the batch's common size. A skipped blur is the unit pulse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import KERNEL_TYPES, FirstStage, RealWorldConfig

GAUSSIAN, PLATEAU, SINC, PULSE = 0, 1, 2, 3   # kernel shapes


# ----- random draws (a CPU generator; a fixed number of draws per sample) -----------------------

def uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def bernoulli(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) < p


def categorical(gen: torch.Generator, n: int, probs) -> torch.Tensor:
    """n indices drawn with the given probabilities (inverse CDF of one uniform each)."""
    cdf = torch.tensor(probs, dtype=torch.float64).cumsum(0)
    cdf = cdf / cdf[-1]
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.searchsorted(cdf, u, right=True).clamp_(max=len(probs) - 1)


def odd_sizes(gen: torch.Generator, n: int, size_range) -> torch.Tensor:
    sizes = torch.arange(size_range[0], size_range[1] + 1, 2)
    return sizes[torch.randint(len(sizes), (n,), generator=gen)]


def shape_beta(gen: torch.Generator, n: int, beta_range) -> torch.Tensor:
    """Below 1 or above 1 with even odds, uniform within (Real-ESRGAN's draw of a shape beta)."""
    below = bernoulli(gen, n, 0.5)
    return torch.where(below, uniform(gen, n, beta_range[0], 1.0), uniform(gen, n, 1.0, beta_range[1]))


@dataclass
class KernelParams:
    """Per-sample parameters of a batch of kernels (float64 / int64 tensors of length n)."""
    shape: torch.Tensor        # GAUSSIAN | PLATEAU | SINC | PULSE
    size: torch.Tensor         # odd support k
    sigma_x: torch.Tensor
    sigma_y: torch.Tensor
    theta: torch.Tensor
    beta: torch.Tensor         # 1 for plain Gaussians
    cutoff: torch.Tensor       # sinc cut-off wc (radians per pixel)


def draw_blur(gen: torch.Generator, n: int, stage: FirstStage, cfg: RealWorldConfig) -> KernelParams:
    """The kernels of one stage: sinc with sinc_prob, else a family of stage.kernel_list; a
    pulse where the stage's blur is skipped (1 - blur_prob)."""
    size = odd_sizes(gen, n, stage.kernel_size)
    is_sinc = bernoulli(gen, n, stage.sinc_prob)
    small = uniform(gen, n, *cfg.sinc_cutoff)
    large = uniform(gen, n, *cfg.sinc_cutoff_large)
    cutoff = torch.where(size < cfg.sinc_large_kernel, small, large)
    family = torch.tensor([KERNEL_TYPES.index(k) for k in stage.kernel_list])[categorical(gen, n, stage.kernel_prob)]
    sigma_x = uniform(gen, n, *stage.blur_sigma)
    sigma_y = uniform(gen, n, *stage.blur_sigma)
    theta = uniform(gen, n, -math.pi, math.pi)
    beta_g = shape_beta(gen, n, stage.betag_range)
    beta_p = shape_beta(gen, n, stage.betap_range)
    applied = bernoulli(gen, n, stage.blur_prob)

    names = [KERNEL_TYPES[i] for i in family.tolist()]
    isotropic = torch.tensor([k.endswith("iso") and not k.endswith("aniso") for k in names])
    sigma_y = torch.where(isotropic, sigma_x, sigma_y)
    theta = torch.where(isotropic, torch.zeros_like(theta), theta)
    plateau = torch.tensor([k.startswith("plateau") for k in names])
    generalized = torch.tensor([k.startswith("generalized") for k in names])
    beta = torch.where(plateau, beta_p, torch.where(generalized, beta_g, torch.ones_like(beta_g)))
    shape = torch.where(plateau, PLATEAU, GAUSSIAN)
    shape = torch.where(is_sinc, SINC, shape)
    shape = torch.where(applied, shape, PULSE)
    return KernelParams(shape, size, sigma_x, sigma_y, theta, beta, cutoff)


def draw_final_sinc(gen: torch.Generator, n: int, cfg: RealWorldConfig) -> KernelParams:
    """The final filter: a sinc with final_sinc_prob, else the pulse."""
    size = odd_sizes(gen, n, cfg.final_kernel_size)
    cutoff = uniform(gen, n, *cfg.final_sinc_cutoff)
    applied = bernoulli(gen, n, cfg.final_sinc_prob)
    ones = torch.ones(n, dtype=torch.float64)
    shape = torch.where(applied, SINC, PULSE)
    return KernelParams(shape, size, ones, ones, torch.zeros(n, dtype=torch.float64), ones, cutoff)


# ----- synthesis ------------------------------------------------------------------------------

def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x, y


def build(params: KernelParams, size: int) -> torch.Tensor:
    """(n, size, size) float64 kernels, each normalised to sum 1 (size odd, >= every params.size)."""
    if size % 2 == 0 or int(params.size.max()) > size:
        raise ValueError(f"kernel canvas {size} must be odd and hold kernels up to {int(params.size.max())}")
    x, y = _grid(size)                                   # (size, size)
    col = lambda t: t.view(-1, 1, 1)                     # noqa: E731  per-sample broadcast
    c, s = torch.cos(params.theta), torch.sin(params.theta)
    ix, iy = 1.0 / params.sigma_x ** 2, 1.0 / params.sigma_y ** 2
    # S^-1 = R diag(1/sx^2, 1/sy^2) R^T
    a, b, d = c * c * ix + s * s * iy, c * s * (ix - iy), s * s * ix + c * c * iy
    q = col(a) * x * x + 2 * col(b) * x * y + col(d) * y * y
    qb = q.clamp_min(0).pow(col(params.beta))
    gaussian = torch.exp(-0.5 * qb)
    plateau = 1.0 / (qb + 1.0)
    r = torch.sqrt(x * x + y * y)
    wc = col(params.cutoff)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    ring = wc * torch.special.bessel_j1(wc * safe_r) / (2 * math.pi * safe_r)
    sinc = torch.where(r == 0, wc * wc / (4 * math.pi), ring)
    pulse = ((x == 0) & (y == 0)).to(torch.float64).expand_as(gaussian)
    shape = col(params.shape)
    k = torch.where(shape == GAUSSIAN, gaussian, torch.where(shape == PLATEAU, plateau,
                                                             torch.where(shape == SINC, sinc, pulse)))
    half = col(params.size // 2)
    inside = (x.abs() <= half) & (y.abs() <= half)
    k = torch.where(inside, k, torch.zeros_like(k))
    return k / k.sum(dim=(1, 2), keepdim=True)


def gaussian_1d(taps: int, sigma: float = 0.0) -> torch.Tensor:
    """OpenCV's getGaussianKernel: sigma <= 0 means 0.3 * ((taps - 1) / 2 - 1) + 0.8 (float64)."""
    if sigma <= 0:
        sigma = 0.3 * ((taps - 1) * 0.5 - 1) + 0.8
    ax = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    w = torch.exp(-(ax * ax) / (2 * sigma * sigma))
    return w / w.sum()
