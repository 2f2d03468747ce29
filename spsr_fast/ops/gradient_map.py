"""gradient_map(x, padding=1): per-channel gradient magnitude (docs/ARCHITECTURE.md 2.1).

Backends: the C++/CUDA kernels of spsr_fast._C (schemas `spsr_fast::gradient_map` and
`spsr_fast::gradient_map_backward`), the Triton kernels of spsr_fast._triton
(`spsr_fast::gradient_map_triton`), and the PyTorch reference. Each compiled op has a
fake impl (torch.compile traces it without graph breaks) and an autograd formula.
"""
from __future__ import annotations

import torch

from .. import _extension
from . import _backend
from ._checks import check_image_batch
from ._reference import gradient_map_reference

OPS = _backend.register(_backend.OpBackends(
    name="gradient_map",
    native_ops=("gradient_map", "gradient_map_backward"),
    # A one-pass stencil: the CUDA kernel and the Triton one are both bandwidth-bound;
    # the CUDA one needs no JIT warm-up.
    default_order={"cpu": ("native",), "cuda": ("native", "triton")},
))


def check_inputs(x, padding) -> None:
    """Clear errors naming the argument, before any kernel sees the input."""
    check_image_batch(x, "gradient_map")
    if isinstance(padding, bool) or padding not in (1, 2):
        raise ValueError(f"gradient_map: padding must be 1 or 2, got {padding!r}")


def gradient_map(x: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """sqrt(v^2 + h^2 + 1e-6) per channel, v/h the vertical/horizontal central differences
    with zero padding. padding=1 keeps H x W; padding=2 gives (H + 2) x (W + 2)."""
    check_inputs(x, padding)
    chosen = OPS.choose(x.device.type)
    if chosen == "native":
        return torch.ops.spsr_fast.gradient_map(x, padding)
    if chosen == "triton":
        return torch.ops.spsr_fast.gradient_map_triton(x, padding)
    return gradient_map_reference(x, padding)


def _output_format(x: torch.Tensor) -> torch.memory_format:
    # Same rule as the kernels: NHWC out for NHWC in, NCHW otherwise.
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _output_shape(x: torch.Tensor, padding: int):
    B, C, H, W = x.shape
    return (B, C, H + 2 * padding - 2, W + 2 * padding - 2)


def _fake_forward(x, padding=1):
    return torch.empty(_output_shape(x, padding), dtype=x.dtype, device=x.device,
                       memory_format=_output_format(x))


def _fake_backward(grad_out, x, padding):
    return torch.empty_like(x, memory_format=_output_format(x))


def _setup_context(ctx, inputs, output):
    x, padding = inputs
    ctx.save_for_backward(x)
    ctx.padding = padding


if _extension.LOADED:
    torch.library.register_fake("spsr_fast::gradient_map")(_fake_forward)
    torch.library.register_fake("spsr_fast::gradient_map_backward")(_fake_backward)

    def _native_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.spsr_fast.gradient_map_backward(grad, x, ctx.padding), None

    torch.library.register_autograd("spsr_fast::gradient_map", _native_backward,
                                    setup_context=_setup_context)


def _register_triton_ops() -> None:
    """The Triton ops; registered only where Triton can run (a GPU, or TRITON_INTERPRET=1),
    because torch.library.triton_op imports the compiler stack (~1.6 s of start-up)."""

    @torch.library.triton_op("spsr_fast::gradient_map_triton", mutates_args=())
    def _gradient_map_triton(x: torch.Tensor, padding: int) -> torch.Tensor:
        from .._triton import gradient_map as kernels

        return kernels.forward(x, padding, launch=torch.library.wrap_triton)


    @torch.library.triton_op("spsr_fast::gradient_map_backward_triton", mutates_args=())
    def _gradient_map_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, padding: int) -> torch.Tensor:
        from .._triton import gradient_map as kernels

        return kernels.backward(grad_out, x, padding, launch=torch.library.wrap_triton)


    # Explicit fakes: shape propagation needs no kernel, and the Triton interpreter (CPU
    # tests) cannot run on fake tensors.
    _gradient_map_triton.register_fake(_fake_forward)
    _gradient_map_backward_triton.register_fake(_fake_backward)


    def _triton_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.spsr_fast.gradient_map_backward_triton(grad, x, ctx.padding), None


    torch.library.register_autograd("spsr_fast::gradient_map_triton", _triton_backward,
                                    setup_context=_setup_context)


if _backend.triton_usable():
    _register_triton_ops()
