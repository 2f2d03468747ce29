"""Run the layers that carry the image itself in float32 while the rest runs under autocast.

A bf16 activation keeps 8 significant bits: a network that carries its input through a
bf16 conv (conv_first feeds the long skip of RRDBNet) or writes its output from bf16
(the upsampling convs, conv_hr, conv_last) cannot give more than about 8 bits, however
many bits the output file has. Measured on the bundled model (bf16 autocast on the CPU,
against the fp32 network, RMS error): all in bf16 2.3e-3 on a smooth ramp, 0.6 of an 8-bit
step; with only conv_hr and conv_last in fp32 still 2.0e-3; with conv_first and everything
after the trunk in fp32 5.6e-5, about 12 bits. So the *image path* is conv_first (the long
skip) and every layer after the trunk; the RRDB trunk, nearly all the work of the network,
stays in reduced precision (its output is a residual added to the fp32 skip).

`with_fp32_image_path(model)` returns a view of the model that shares its parameters and
submodules, with the image-path children wrapped to run in float32 with autocast off; the
model itself is not changed. A network of unknown architecture runs whole in float32.

On a GPU, cuDNN runs float32 convolutions in TF32 by default (inputs rounded to 10 mantissa
bits: about 11 bits of an image); `exact_fp32_convolutions` turns that off around a forward
that must keep 16-bit precision.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

# children of each architecture that carry the image at full resolution of its values;
# names ending in "*" are prefixes (the x2 upsampling steps: conv_up1, conv_up2, ...)
IMAGE_PATHS = {
    "RRDBNet": ("conv_first", "conv_up*", "conv_hr", "conv_last"),
    # SPSRNet: the SR branch as above; the gradient branch's skip (grad_conv_first) and its
    # upsampling to the gradient map; the fusion RRDB runs at HR on [branch, SR features]
    # and returns its input plus a residual, so it must be fp32 to keep that input exact.
    "SPSRNet": ("conv_first", "conv_up*", "conv_hr", "conv_hr_out",
                "grad_conv_first", "grad_conv_up*", "grad_conv_hr", "grad_conv_hr_out", "grad_conv_out",
                "fusion_block", "fusion_conv", "fusion_conv_hr", "conv_last"),
}


class Float32(nn.Module):
    """Runs `module` in float32 with autocast turned off, whatever autocast is around it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def image_path_children(model: nn.Module) -> list[str] | None:
    """Names of the children that form the image path, or None for an unknown architecture."""
    patterns = IMAGE_PATHS.get(getattr(model, "arch", None))
    if patterns is None:
        return None
    names = []
    for name, _ in model.named_children():
        if any(name == p or (p.endswith("*") and name.startswith(p[:-1]) and name[len(p) - 1:].isdigit())
               for p in patterns):
            names.append(name)
    missing = [p for p in patterns if not p.endswith("*") and p not in names]
    if missing:  # an object claiming an arch it does not have: do not guess
        return None
    return names


def with_fp32_image_path(model: nn.Module) -> nn.Module:
    """A view of `model` whose image path runs in float32 (module docstring); sharing
    parameters, so it costs no memory. Unknown architectures are wrapped whole."""
    names = image_path_children(model)
    if names is None:
        return Float32(model)
    view = copy.copy(model)
    view._modules = type(model._modules)(model._modules)  # its own child table; the model keeps its own
    for name in names:
        view._modules[name] = Float32(model._modules[name])
    return view


@contextlib.contextmanager
def exact_fp32_convolutions(device: torch.device):
    """cuDNN float32 convolutions in IEEE float32, not TF32, inside the block (CUDA only)."""
    if device.type != "cuda":
        yield
        return
    conv = torch.backends.cudnn.conv
    previous = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = previous
