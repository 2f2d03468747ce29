"""The fields of the real-world degradation pipeline (`data.degradation: realworld`), with
Real-ESRGAN's published defaults (its train_realesrgan_x4plus.yml and the dataset/model code
that reads it): every range and probability is a field, checked by name.

The YAML section is `realworld:`, with `first:` and `second:` for the two stages:

    realworld:
      first:  {blur_sigma: [0.2, 3.0], resize_prob: [0.2, 0.7, 0.1], jpeg_range: [30, 95], ...}
      second: {blur_prob: 0.8, blur_sigma: [0.2, 1.5], ...}
      final_sinc_prob: 0.8

This module has no dependency on the trainer: `check_realworld` raises ValueError with the
dotted field name first, which spsr_fast.train.config turns into its ConfigError.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
RESIZE_DIRECTIONS = ("up", "down", "keep")   # the order of resize_prob


@dataclass
class FirstStage:
    """One degradation stage: blur, random resize, noise, JPEG (Real-ESRGAN's first order)."""
    blur_prob: float = 1.0                       # the first stage always blurs
    kernel_size: list[int] = field(default_factory=lambda: [7, 21])   # odd sizes in this range, uniform
    kernel_list: list[str] = field(default_factory=lambda: list(KERNEL_TYPES))
    kernel_prob: list[float] = field(default_factory=lambda: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03])
    sinc_prob: float = 0.1                       # a sinc kernel instead of one of kernel_list
    blur_sigma: list[float] = field(default_factory=lambda: [0.2, 3.0])
    betag_range: list[float] = field(default_factory=lambda: [0.5, 4.0])   # generalised Gaussian shape
    betap_range: list[float] = field(default_factory=lambda: [1.0, 2.0])   # plateau shape
    resize_prob: list[float] = field(default_factory=lambda: [0.2, 0.7, 0.1])   # up, down, keep
    resize_range: list[float] = field(default_factory=lambda: [0.15, 1.5])
    resize_modes: list[str] = field(default_factory=lambda: list(RESIZE_MODES))  # drawn uniformly
    gaussian_noise_prob: float = 0.5             # Gaussian noise, else Poisson
    noise_range: list[float] = field(default_factory=lambda: [1.0, 30.0])     # sigma on the 0-255 scale
    poisson_scale_range: list[float] = field(default_factory=lambda: [0.05, 3.0])
    gray_noise_prob: float = 0.4                 # the same noise in R, G and B
    jpeg_range: list[float] = field(default_factory=lambda: [30.0, 95.0])    # IJG quality


@dataclass
class SecondStage(FirstStage):
    """The second order: its own probabilities and ranges; its JPEG is the final one."""
    blur_prob: float = 0.8
    blur_sigma: list[float] = field(default_factory=lambda: [0.2, 1.5])
    resize_prob: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.3])
    resize_range: list[float] = field(default_factory=lambda: [0.3, 1.2])
    noise_range: list[float] = field(default_factory=lambda: [1.0, 25.0])
    poisson_scale_range: list[float] = field(default_factory=lambda: [0.05, 2.5])


@dataclass
class RealWorldConfig:
    first: FirstStage = field(default_factory=FirstStage)
    second: SecondStage = field(default_factory=SecondStage)
    # sinc blur kernels of the stages: cut-off (radians per pixel) for kernels smaller than
    # sinc_large_kernel, and for those at least that large
    sinc_cutoff: list[float] = field(default_factory=lambda: [math.pi / 3, math.pi])
    sinc_cutoff_large: list[float] = field(default_factory=lambda: [math.pi / 5, math.pi])
    sinc_large_kernel: int = 13
    # the last step: resize to HR/scale + a sinc filter (with final_sinc_prob), and the second
    # stage's JPEG, in random order (JPEG first with jpeg_first_prob)
    final_sinc_prob: float = 0.8
    final_kernel_size: list[int] = field(default_factory=lambda: [7, 21])
    final_sinc_cutoff: list[float] = field(default_factory=lambda: [math.pi / 3, math.pi])
    final_resize_modes: list[str] = field(default_factory=lambda: list(RESIZE_MODES))
    jpeg_first_prob: float = 0.5
    # unsharp-masked HR (Real-ESRGAN's USMSharp): the LR is made from it and the content losses
    # (pixel, perceptual, gradient, branch) train towards it; the discriminators' real samples
    # stay the plain HR unless sharpen_adversarial (l1_gt_usm/percep_gt_usm true, gan_gt_usm false)
    sharpen: bool = True
    sharpen_adversarial: bool = False
    usm_weight: float = 0.5
    usm_radius: int = 50                          # Gaussian of 51 taps (an even radius gets +1), sigma 8
    usm_threshold: float = 10.0                   # on the 0-255 scale

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----- checks ----------------------------------------------------------------------------------

def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be a probability in [0, 1], got {value}")


def _pair(name: str, values: list, low: float | None = None, high: float | None = None) -> None:
    if len(values) != 2:
        raise ValueError(f"{name}: expected [low, high], got {values}")
    lo, hi = values
    if lo > hi:
        raise ValueError(f"{name}: low {lo} is above high {hi}")
    if low is not None and lo < low:
        raise ValueError(f"{name}: must be >= {low}, got {values}")
    if high is not None and hi > high:
        raise ValueError(f"{name}: must be <= {high}, got {values}")


def _distribution(name: str, probs: list[float], count: int) -> None:
    if len(probs) != count:
        raise ValueError(f"{name}: expected {count} probabilities, got {len(probs)}")
    if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"{name}: must be non-negative and sum to 1, got {probs} (sum {sum(probs):g})")


def _names(name: str, values: list[str], allowed: tuple[str, ...]) -> None:
    if not values:
        raise ValueError(f"{name}: must not be empty (choose from {', '.join(allowed)})")
    for i, v in enumerate(values):
        if v not in allowed:
            raise ValueError(f"{name}[{i}]: must be one of {', '.join(allowed)}, got {v!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: names must not repeat, got {values}")


def _kernel_sizes(name: str, sizes: list[int]) -> None:
    _pair(name, sizes, low=1)
    if any(s % 2 == 0 for s in sizes):
        raise ValueError(f"{name}: kernel sizes must be odd, got {sizes}")


def _check_stage(prefix: str, s: FirstStage) -> None:
    for key in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
        _probability(f"{prefix}.{key}", getattr(s, key))
    _kernel_sizes(f"{prefix}.kernel_size", s.kernel_size)
    _names(f"{prefix}.kernel_list", s.kernel_list, KERNEL_TYPES)
    _distribution(f"{prefix}.kernel_prob", s.kernel_prob, len(s.kernel_list))
    _pair(f"{prefix}.blur_sigma", s.blur_sigma)
    if s.blur_sigma[0] <= 0:
        raise ValueError(f"{prefix}.blur_sigma: must be > 0, got {s.blur_sigma}")
    # a shape beta is drawn below 1 or above 1 with even odds (Real-ESRGAN), so 1 must be inside
    for key in ("betag_range", "betap_range"):
        _pair(f"{prefix}.{key}", getattr(s, key))
        lo, hi = getattr(s, key)
        if not (0 < lo <= 1 <= hi):
            raise ValueError(f"{prefix}.{key}: must satisfy 0 < low <= 1 <= high, got {[lo, hi]}")
    _distribution(f"{prefix}.resize_prob", s.resize_prob, len(RESIZE_DIRECTIONS))
    _pair(f"{prefix}.resize_range", s.resize_range)
    if not (0 < s.resize_range[0] <= 1 <= s.resize_range[1]):
        raise ValueError(f"{prefix}.resize_range: must satisfy 0 < down <= 1 <= up, got {s.resize_range}")
    _names(f"{prefix}.resize_modes", s.resize_modes, RESIZE_MODES)
    _pair(f"{prefix}.noise_range", s.noise_range, low=0)
    _pair(f"{prefix}.poisson_scale_range", s.poisson_scale_range, low=0)
    _pair(f"{prefix}.jpeg_range", s.jpeg_range, low=1, high=100)


def check_realworld(cfg: RealWorldConfig, prefix: str = "realworld") -> RealWorldConfig:
    """Range, probability and name checks; ValueError('<prefix>.<field>: ...') on the first problem."""
    _check_stage(f"{prefix}.first", cfg.first)
    _check_stage(f"{prefix}.second", cfg.second)
    for key in ("sinc_cutoff", "sinc_cutoff_large", "final_sinc_cutoff"):
        _pair(f"{prefix}.{key}", getattr(cfg, key))
        if getattr(cfg, key)[0] <= 0:
            raise ValueError(f"{prefix}.{key}: cut-offs must be > 0 radians, got {getattr(cfg, key)}")
    if cfg.sinc_large_kernel < 1:
        raise ValueError(f"{prefix}.sinc_large_kernel: must be >= 1, got {cfg.sinc_large_kernel}")
    for key in ("final_sinc_prob", "jpeg_first_prob"):
        _probability(f"{prefix}.{key}", getattr(cfg, key))
    _kernel_sizes(f"{prefix}.final_kernel_size", cfg.final_kernel_size)
    _names(f"{prefix}.final_resize_modes", cfg.final_resize_modes, RESIZE_MODES)
    if cfg.usm_weight < 0:
        raise ValueError(f"{prefix}.usm_weight: must be >= 0, got {cfg.usm_weight}")
    if cfg.usm_radius < 1:
        raise ValueError(f"{prefix}.usm_radius: must be >= 1, got {cfg.usm_radius}")
    if cfg.usm_threshold < 0:
        raise ValueError(f"{prefix}.usm_threshold: must be >= 0, got {cfg.usm_threshold}")
    return cfg


def max_kernel_size(cfg: RealWorldConfig) -> int:
    """Every kernel of a batch is zero-padded to this size (one grouped convolution per step)."""
    return max(cfg.first.kernel_size[1], cfg.second.kernel_size[1], cfg.final_kernel_size[1])
