"""Networks with real outputs for the inference tests, and the reference they are checked against.

A freshly initialised generator (kaiming x 0.1) outputs ~1e-5: every picture it writes is
black, and any comparison of two of them passes. The tests here use instead
- the bundled model (trained weights), or
- an SPSRNet that starts as a closed form (`interpolating_spsrnet`): the SR output is the
  LR image upscaled by nearest + [1 2 1] blur per x2 step (the interpolating init of
  spsr_fast/weights/identity_init.py), and the gradient branch is routed the same way, so the
  gradient map is the LR gradient map upscaled the same way; a seeded perturbation of every
  weight then makes every layer (the RRDB trunk, the branch, the fusion) change the outputs,
  so a fault anywhere shows.
The reference is the same network in float32 on the CPU, run whole (untiled), with the ops'
pure-PyTorch reference backend.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import spsr_fast
from spsr_fast.models import SPSRNet
from spsr_fast.weights import resolve_model
from spsr_fast.weights.identity_init import _BLUR, _CENTRE, _route_rgb, interpolating_init_


def bundled_model():
    return spsr_fast.load_model(resolve_model("default")).eval()


def interpolate(x: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """What the interpolating init computes: per x2 step, nearest then a [1 2 1] x [1 2 1] / 16 blur."""
    blur = _BLUR.expand(x.shape[1], 1, 3, 3)
    for _ in range(steps):
        x = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), blur, padding=1, groups=x.shape[1])
    return x


@torch.no_grad()
def route_gradient_branch_(net: SPSRNet) -> SPSRNet:
    """The gradient branch's RGB route: channels 0..2 carry the LR gradient map through
    grad_conv_first and the skip around the branch's RRDBs (grad_conv_body adds nothing on
    them), are upsampled like the SR branch, and grad_conv_out (1x1) copies them out."""
    _route_rgb(net.grad_conv_first, _CENTRE)
    net.grad_conv_body.weight[:3].zero_()
    net.grad_conv_body.bias[:3].zero_()
    for step in range(1, net.steps + 1):
        _route_rgb(getattr(net, f"grad_conv_up{step}"), _BLUR)
    _route_rgb(net.grad_conv_hr, _CENTRE)
    _route_rgb(net.grad_conv_hr_out, _CENTRE)
    net.grad_conv_out.weight.zero_()
    net.grad_conv_out.bias.zero_()
    for c in range(3):
        net.grad_conv_out.weight[c, c] = 1.0
    return net


@torch.no_grad()
def perturb_(net: torch.nn.Module, amount: float, seed: int) -> torch.nn.Module:
    """Adds seeded noise of std `amount` / sqrt(fan_in) to every weight."""
    generator = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        if p.dim() > 1:
            p.add_(torch.randn(p.shape, generator=generator) * amount / p[0].numel() ** 0.5)
    return net


def interpolating_spsrnet(nf: int = 16, nb: int = 2, gc: int = 8, perturbation: float = 0.01,
                          seed: int = 0) -> SPSRNet:
    torch.manual_seed(seed)
    net = route_gradient_branch_(interpolating_init_(SPSRNet(nf=nf, nb=nb, gc=gc, scale=4)))
    return perturb_(net, perturbation, seed + 1).eval() if perturbation else net.eval()


@torch.no_grad()
def reference_outputs(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(sr clamped to [0, 1],) or (sr, gradient map) of `model` on C x H x W `image`:
    float32, CPU, whole image, reference ops (PyTorch convolutions, channels_last: faster on the CPU)."""
    model = model.float().cpu().to(memory_format=torch.channels_last)
    with spsr_fast.ops.backend("reference"):
        out = model(image[None].float().contiguous(memory_format=torch.channels_last))
    if isinstance(out, (tuple, list)):
        return out[1][0].clamp(0, 1), out[0][0]
    return (out[0].clamp(0, 1),)


def effective_bits(error: torch.Tensor | np.ndarray) -> float:
    """Precision of a result in bits, from its RMS error against the exact values: a uniform
    rounding to b bits (steps of 1 / (2**b - 1)) has RMS error step / sqrt(12), so rounding to
    8 bits scores 8."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(error, dtype=np.float64)))))
    return float(np.log2(1 + 1 / (rms * np.sqrt(12)))) if rms > 0 else float("inf")
