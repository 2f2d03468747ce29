"""Helpers shared by the tests: kernel comparisons, synthetic training images."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

LAYOUTS = ("contiguous", "channels_last", "strided")


def make_input(shape, dtype, layout, device="cpu", seed=0, requires_grad=False):
    """A tensor of `shape` in the given memory layout ("strided": a non-contiguous view)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":
        B, C, H, W = shape
        big = torch.randn((B, C + 1, H + 2, 2 * W), generator=g, dtype=torch.float64)
        x = big.to(device=device, dtype=dtype)[:, 1:, 1:H + 1, ::2]
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(device=device, dtype=dtype)
    if layout == "strided" and min(shape[2:]) > 1:  # size-1 dims make any view contiguous
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def assert_close_to_truth(actual, reference_same_dtype, truth, dtype, what="output"):
    """fp32/fp64: ~1e-5 relative to the float64 truth. Half precision: the largest error vs
    the float64 truth is no more than 2x the largest error of the reference computed in
    the same dtype (with a floor of one ulp of the largest value, for inputs where the
    reference happens to be exact)."""
    truth = truth.double()
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(actual.double(), truth, rtol=1e-5, atol=1e-5 if dtype == torch.float32 else 1e-10,
                                   msg=lambda m: f"{what}: {m}")
        return
    if truth.numel() == 0:
        return
    err = (actual.double() - truth).abs().max().item()
    ref_err = (reference_same_dtype.double() - truth).abs().max().item()
    floor = torch.finfo(dtype).eps * truth.abs().max().item()
    assert err <= 2 * ref_err + floor, (
        f"{what}: {dtype} max error {err:.3g} exceeds 2x the same-dtype reference's {ref_err:.3g}")


def write_wave_images(folder, count, size, seed):
    """`count` size x size RGB PNGs of smooth 2-D waves (different per image and seed) in a new
    `folder`: training images with structure at every scale, made in milliseconds."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for k in range(count):
        f1, f2, ph = rng.uniform(2, 6, 3)
        base = 0.5 + 0.35 * np.sin(2 * np.pi * (f1 * x + ph)) * np.cos(2 * np.pi * f2 * y)
        img = np.stack([base, np.roll(base, k + 3, axis=1), 1 - base], axis=2)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"img{k:02d}.png")
