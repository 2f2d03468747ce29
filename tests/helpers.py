"""Comparison helpers shared by the kernel tests."""
from __future__ import annotations

import torch

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
