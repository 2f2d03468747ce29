"""The two-stage real-world pipeline (after Real-ESRGAN), for a batch on any device.

    HR --(USM)--> blur_1 -> resize_1 -> noise_1 -> JPEG_1
               -> blur_2 -> resize_2 (to HR/scale x factor) -> noise_2
               -> [resize to HR/scale + final sinc] and JPEG_2, in random order -> 8 bits = LR

`draw` takes every random choice for a batch from a CPU generator (the same on any device);
`apply` runs them with torch ops, noise images from a generator on the batch's device. Kernels,
blur on/off, noise kind, sigma, grey/colour, JPEG quality, final filter and final order are
per sample; the three resize factors and modes are per batch (a batch keeps one size).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import FirstStage, RealWorldConfig, max_kernel_size
from .filters import filter2d, usm_sharpen
from .jpeg import jpeg
from .kernels import KernelParams, bernoulli, build, draw_blur, draw_final_sinc, uniform
from .noise import gaussian_noise, poisson_noise
from .resize import ResizeDraw, draw_mode, draw_resize, resize, scaled


@dataclass
class StageDraw:
    kernels: torch.Tensor      # (B, K, K) float64, the pulse where the blur is skipped
    kernel_params: KernelParams
    resize: ResizeDraw
    gaussian: torch.Tensor     # (B,) bool: Gaussian noise, else Poisson
    sigma: torch.Tensor        # (B,) Gaussian sigma, 0-255 scale
    poisson_scale: torch.Tensor
    grey: torch.Tensor         # (B,) bool
    quality: torch.Tensor      # (B,) int64 JPEG quality (stage 1: its JPEG; stage 2: the final one)


@dataclass
class Draw:
    first: StageDraw
    second: StageDraw
    final_kernels: torch.Tensor     # (B, K, K): sinc or pulse
    final_params: KernelParams
    final_mode: str
    jpeg_first: torch.Tensor        # (B,) bool: JPEG before [resize + sinc]

    @property
    def batch(self) -> int:
        return self.jpeg_first.shape[0]


def _draw_stage(gen: torch.Generator, n: int, stage: FirstStage, cfg: RealWorldConfig, canvas: int) -> StageDraw:
    params = draw_blur(gen, n, stage, cfg)
    kernels = build(params, canvas)
    size_draw = draw_resize(gen, stage)
    gaussian = bernoulli(gen, n, stage.gaussian_noise_prob)
    sigma = uniform(gen, n, *stage.noise_range)
    poisson_scale = uniform(gen, n, *stage.poisson_scale_range)
    grey = bernoulli(gen, n, stage.gray_noise_prob)
    # IJG qualities are integers: uniform over the range, rounded
    quality = torch.round(uniform(gen, n, *stage.jpeg_range)).long()
    return StageDraw(kernels, params, size_draw, gaussian, sigma, poisson_scale, grey, quality)


def draw(cfg: RealWorldConfig, batch: int, gen: torch.Generator) -> Draw:
    """Every random choice of the pipeline for `batch` samples, from the CPU generator `gen`."""
    canvas = max_kernel_size(cfg)
    first = _draw_stage(gen, batch, cfg.first, cfg, canvas)
    second = _draw_stage(gen, batch, cfg.second, cfg, canvas)
    final_params = draw_final_sinc(gen, batch, cfg)
    final_kernels = build(final_params, canvas)
    final_mode = draw_mode(gen, cfg.final_resize_modes)
    jpeg_first = bernoulli(gen, batch, cfg.jpeg_first_prob)
    return Draw(first, second, final_kernels, final_params, final_mode, jpeg_first)


def _noise(x: torch.Tensor, stage: StageDraw, gen: torch.Generator) -> torch.Tensor:
    """Gaussian or Poisson noise per sample, in colour or grey, added and clipped to [0, 1];
    each of the four kinds drawn for its own samples only."""
    noise = torch.zeros_like(x)
    for gaussian in (True, False):
        for grey in (False, True):
            idx = torch.nonzero((stage.gaussian == gaussian) & (stage.grey == grey)).flatten()
            if len(idx) == 0:
                continue
            on = idx.to(x.device)
            if gaussian:
                noise[on] = gaussian_noise((len(idx), *x.shape[1:]), stage.sigma[idx], grey, gen, x.device, x.dtype)
            else:
                noise[on] = poisson_noise(x[on], stage.poisson_scale[idx], grey, gen)
    return (x + noise).clamp(0, 1)


def _kernels(kernels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return kernels.to(device=x.device, dtype=x.dtype)


def apply(hr: torch.Tensor, d: Draw, scale: int, gen: torch.Generator) -> torch.Tensor:
    """The LR (B, 3, H/scale, W/scale) of hr (B, 3, H, W) in [0, 1] (already sharpened when
    the config says so) under the draws `d`; `gen` makes the noise images on hr's device."""
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"realworld degradation: expected an RGB batch (B, 3, H, W), got {tuple(hr.shape)}")
    if hr.shape[0] != d.batch:
        raise ValueError(f"realworld degradation: {hr.shape[0]} images for draws of {d.batch}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"realworld degradation: HR {h}x{w} is not a multiple of the scale {scale}")
    x = hr.float() if hr.dtype != torch.float64 else hr
    # ---- first stage
    s = d.first
    x = filter2d(x, _kernels(s.kernels, x))
    x = resize(x, (scaled(h, s.resize.factor), scaled(w, s.resize.factor)), s.resize.mode)
    x = _noise(x, s, gen)
    x = jpeg(x, s.quality)
    # ---- second stage
    s = d.second
    x = filter2d(x, _kernels(s.kernels, x))
    x = resize(x, (scaled(h // scale, s.resize.factor), scaled(w // scale, s.resize.factor)), s.resize.mode)
    x = _noise(x, s, gen)
    # ---- [resize to the LR size + final sinc] and JPEG, in random order per sample
    out = torch.empty(x.shape[0], 3, h // scale, w // scale, device=x.device, dtype=x.dtype)
    for jpeg_first in (True, False):
        idx = torch.nonzero(d.jpeg_first == jpeg_first).flatten()
        if len(idx) == 0:
            continue
        part, on = x[idx.to(x.device)], idx.to(x.device)
        if jpeg_first:
            part = jpeg(part, s.quality[idx])
        part = resize(part, (h // scale, w // scale), d.final_mode)
        part = filter2d(part, _kernels(d.final_kernels[idx], part))
        if not jpeg_first:
            part = jpeg(part, s.quality[idx])
        out[on] = part
    return torch.clamp(torch.round(out * 255), 0, 255) / 255


@dataclass
class DegradedBatch:
    lr: torch.Tensor       # the network input
    target: torch.Tensor   # HR for the content losses (unsharp-masked when cfg.sharpen)
    real: torch.Tensor     # HR for the discriminators' real samples


class RealWorldDegrader:
    """Makes training pairs from HR batches: draws from (seed, step, rank), sharpening, apply."""

    def __init__(self, cfg: RealWorldConfig, scale: int, seed: int):
        self.cfg, self.scale, self.seed = cfg, scale, seed

    def sharpen(self, hr: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return usm_sharpen(hr, c.usm_weight, c.usm_radius, c.usm_threshold) if c.sharpen else hr

    @torch.no_grad()
    def __call__(self, hr: torch.Tensor, step: int, rank: int = 0) -> DegradedBatch:
        from .seeding import training_generators

        params_gen, fields_gen = training_generators(hr.device, self.seed, step, rank)
        hr = hr.float()
        target = self.sharpen(hr)
        lr = apply(target, draw(self.cfg, hr.shape[0], params_gen), self.scale, fields_gen)
        real = target if self.cfg.sharpen_adversarial else hr
        return DegradedBatch(lr, target, real)
