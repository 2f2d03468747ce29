"""Fused residual dense blocks: residual_dense_block (RDB) and rrdb (docs/ARCHITECTURE.md 2.2).

One channels_last buffer per RDB holds [x_in | x1 | x2 | x3 | x4]; each 3x3 conv reads
the first C_in channels of it and its epilogue writes bias + LeakyReLU(0.2) (conv1..4)
or the residual 0.2*x5 + x_in (conv5, straight into the next RDB's buffer) or, for the
last conv of an RRDB, 0.2*(0.2*x5 + x_in) + x (into the output): no torch.cat and no
separate bias/activation/residual passes.

Backends: `native` = spsr_fast::dense_blocks in spsr_fast._C (CPU float32: Winograd
F(2x2, 3x3) convolutions with the epilogues fused, csrc/cpu/winograd_conv3x3, or oneDNN with
SPSR_FAST_CPU_CONV=direct; other CPU dtypes oneDNN; CUDA cuDNN, all on the buffer slices),
`triton` = spsr_fast::dense_blocks_triton (implicit-GEMM conv with the fused epilogues,
kernels/conv3x3.py), `reference` = the torch.cat formulation. Defaults: `native` on the CPU,
`reference` on CUDA (see CUDA_DEFAULT_REASON). Training saves only the buffers (one per RDB)
and runs convolution backward on their slices, accumulating input gradients into one
gradient buffer.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .. import _extension
from . import _backend
from ._checks import check_image_batch
from ._reference import DENSE_NEGATIVE_SLOPE, residual_dense_block_reference, rrdb_reference

# CUDA default: the torch.cat formulation. By byte count the cuDNN-on-slices path (`native`)
# is no faster: cuDNN needs dense NHWC inputs, so ATen copies each strided slice (the same
# bytes torch.cat copies) and adds the bias in a separate pass; neither it nor the Triton
# conv has been timed on a GPU. Both stay opt-in (SPSR_FAST_BACKEND=dense_block=native|triton)
# until bench/gpu_check.sh measures one ahead on the card.
CUDA_DEFAULT_REASON = ("torch.cat formulation on cuDNN; the fused paths (native: cuDNN on buffer slices, "
                       "triton) are opt-in until bench/gpu_check.sh measures one faster")
OPS = _backend.register(_backend.OpBackends(
    name="dense_block",
    native_ops=("dense_blocks",),
    default_order={"cpu": ("native",), "cuda": ("reference",)},
    why_default={"cuda": CUDA_DEFAULT_REASON},
))

CONVS_PER_BLOCK = 5
_HAS_WINOGRAD = _extension.has_kernel("conv3x3_winograd", "CPU")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_inputs(x, weights, biases, blocks: int, what: str) -> None:
    """Clear errors naming the argument, before any kernel sees the input."""
    check_image_batch(x, what)
    n = blocks * CONVS_PER_BLOCK
    for name, seq in (("weights", weights), ("biases", biases)):
        if not isinstance(seq, Sequence) or len(seq) != n:
            got = len(seq) if isinstance(seq, Sequence) else type(seq).__name__
            raise ValueError(f"{what}: {name} must be a list of {n} tensors, got {got}")
        for i, t in enumerate(seq):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{what}: {name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    nf = x.shape[1]
    gc = weights[0].shape[0] if weights[0].dim() == 4 else -1
    for i, (w, b) in enumerate(zip(weights, biases)):
        k = i % CONVS_PER_BLOCK
        c_out = gc if k < 4 else nf
        expected = (c_out, nf + k * gc, 3, 3)
        if tuple(w.shape) != expected:
            raise ValueError(f"{what}: weights[{i}] has shape {tuple(w.shape)}, expected {expected} "
                             f"(nf={nf} from x, gc={gc} from weights[0])")
        if tuple(b.shape) != (c_out,):
            raise ValueError(f"{what}: biases[{i}] has shape {tuple(b.shape)}, expected ({c_out},)")
        for name, t in (("weights", w), ("biases", b)):
            if t.device != x.device:
                raise ValueError(f"{what}: {name}[{i}] is on {t.device} but x is on {x.device}")
            if t.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                raise TypeError(f"{what}: {name}[{i}] has dtype {t.dtype} but x has {x.dtype}")


def residual_dense_block(x: torch.Tensor, weights, biases, residual_scale: float = 0.2) -> torch.Tensor:
    """ESRGAN's ResidualDenseBlock_5C: `weights`/`biases` of conv1..conv5 (conv k maps
    nf + k*gc -> gc channels, conv5 nf + 4gc -> nf); returns residual_scale*x5 + x."""
    return _dense_blocks(x, weights, biases, residual_scale, blocks=1, outer_residual=False,
                         what="residual_dense_block")


def rrdb(x: torch.Tensor, weights, biases, residual_scale: float = 0.2) -> torch.Tensor:
    """ESRGAN's RRDB: three residual dense blocks (15 weights/biases, rdb1.conv1 first)
    and residual_scale*out + x."""
    return _dense_blocks(x, weights, biases, residual_scale, blocks=3, outer_residual=True, what="rrdb")


def _dense_blocks(x, weights, biases, residual_scale, blocks, outer_residual, what):
    check_inputs(x, weights, biases, blocks, what)
    residual_scale = float(residual_scale)
    chosen = OPS.choose(x.device.type)
    if chosen == "reference":
        reference = rrdb_reference if outer_residual else residual_dense_block_reference
        return reference(x, weights, biases, residual_scale)
    input_dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        # Custom ops see no autocast: cast like the convolutions would.
        dtype = torch.get_autocast_dtype(x.device.type)
        x = x.to(dtype)
        weights = [w.to(dtype) for w in weights]
        biases = [b.to(dtype) for b in biases]
    if chosen == "triton" and x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{what}: the triton backend supports float32/float16/bfloat16, got {x.dtype}")
    keep_buffers = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, *weights, *biases))
    op = torch.ops.spsr_fast.dense_blocks if chosen == "native" else torch.ops.spsr_fast.dense_blocks_triton
    out, _buffers = op(x, list(weights), list(biases), residual_scale, outer_residual, keep_buffers)
    return out.to(input_dtype)


def _cpu_winograd(t: torch.Tensor) -> bool:
    """Whether the CPU kernel ran this tensor's convs by Winograd (csrc/dense_block.cpp reads
    and validates the same variable)."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and _HAS_WINOGRAD
            and os.environ.get("SPSR_FAST_CPU_CONV", "winograd") != "direct")


def _conv_backward(grad_output, inputs, weight):
    """(input, weight, bias) gradients of a 3x3 conv with padding 1. By Winograd on the CPU in
    float32, the input gradient is the conv of grad_output with the flipped, transposed
    weight (2.25x fewer multiplies); the weight and bias gradients are ATen's."""
    winograd = _cpu_winograd(grad_output)
    grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_output, inputs, weight, [weight.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [not winograd, True, True])
    if winograd:
        grad_input = torch.ops.spsr_fast.conv3x3_winograd(grad_output, weight.flip(2, 3).transpose(0, 1), None)
    return grad_input, grad_weight, grad_bias


def dense_blocks_backward(grad_out, buffers, weights, residual_scale, outer_residual):
    """Gradients of dense_blocks from the saved buffers alone: convolution backward on
    the buffer slices, input gradients accumulated into one gradient buffer."""
    s = residual_scale
    nf = grad_out.shape[1]
    gc = weights[0].shape[0]
    grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    grad_weights = [None] * len(weights)
    grad_biases = [None] * len(weights)
    grad_block = grad_out * s if outer_residual else grad_out  # d loss / d (last block's output)
    for block in reversed(range(len(buffers))):
        buf, first = buffers[block], CONVS_PER_BLOCK * block
        # conv5's input gradient covers the whole buffer: it becomes the gradient buffer
        grad_buffer, grad_weights[first + 4], grad_biases[first + 4] = _conv_backward(
            grad_block * s, buf, weights[first + 4])
        grad_buffer[:, :nf] += grad_block  # the block's own residual
        for k in (3, 2, 1, 0):
            c_in = nf + k * gc
            features = buf[:, c_in:c_in + gc]  # lrelu outputs: same sign as its inputs
            grad_pre = torch.ops.aten.leaky_relu_backward(
                grad_buffer[:, c_in:c_in + gc], features, DENSE_NEGATIVE_SLOPE, True)
            grad_in, grad_weights[first + k], grad_biases[first + k] = _conv_backward(
                grad_pre, buf[:, :c_in], weights[first + k])
            grad_buffer[:, :c_in] += grad_in
            del grad_in
        grad_block = grad_buffer[:, :nf].clone()  # frees the rest of the gradient buffer
        del grad_buffer
    grad_x = grad_block + grad_out if outer_residual else grad_block
    return grad_x, grad_weights, grad_biases


def _fake_dense_blocks(x, weights, biases, residual_scale, outer_residual, keep_buffers):
    B, nf, H, W = x.shape
    gc = weights[0].shape[0]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    buffers = [torch.empty((B, nf + 4 * gc, H, W), dtype=x.dtype, device=x.device,
                           memory_format=torch.channels_last)
               for _ in range(len(weights) // CONVS_PER_BLOCK)] if keep_buffers else []
    return out, buffers


def _setup_context(ctx, inputs, output):
    x, weights, biases, residual_scale, outer_residual, keep_buffers = inputs
    _out, buffers = output
    ctx.blocks = len(buffers)
    ctx.convs = len(weights)
    ctx.residual_scale = residual_scale
    ctx.outer_residual = outer_residual
    ctx.save_for_backward(*buffers, *weights)
    # The buffers are outputs only so that they can be saved: no gradient flows into them
    # (and none is materialised as zeros in backward).
    ctx.mark_non_differentiable(*buffers)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, _grad_buffers):
    if ctx.blocks == 0:
        raise RuntimeError("dense_blocks: backward needs the buffers, but the forward ran with "
                           "keep_buffers=False (call it with grad enabled)")
    saved = ctx.saved_tensors
    if grad_out is None:  # the output did not take part in the loss
        return None, [None] * ctx.convs, [None] * ctx.convs, None, None, None
    buffers, weights = saved[:ctx.blocks], saved[ctx.blocks:]
    grad_x, grad_weights, grad_biases = dense_blocks_backward(
        grad_out, buffers, weights, ctx.residual_scale, ctx.outer_residual)
    return grad_x, grad_weights, grad_biases, None, None, None


def _fake_conv3x3_winograd(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0], *x.shape[2:])).contiguous(memory_format=torch.channels_last)


if _HAS_WINOGRAD:
    torch.library.register_fake("spsr_fast::conv3x3_winograd")(_fake_conv3x3_winograd)

if _extension.LOADED:
    torch.library.register_fake("spsr_fast::dense_blocks")(_fake_dense_blocks)
    torch.library.register_autograd("spsr_fast::dense_blocks", _backward, setup_context=_setup_context)


def _register_triton_ops() -> None:
    """The Triton ops; registered only where Triton can run (a GPU, or TRITON_INTERPRET=1),
    because torch.library.triton_op imports the compiler stack (~1.6 s of start-up)."""

    @torch.library.triton_op("spsr_fast::dense_blocks_triton", mutates_args=())
    def _dense_blocks_triton(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                             residual_scale: float, outer_residual: bool,
                             keep_buffers: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from .._triton import conv3x3 as kernels

        return kernels.dense_blocks(x, weights, biases, residual_scale, outer_residual, keep_buffers,
                                    launch=torch.library.wrap_triton)


    _dense_blocks_triton.register_fake(_fake_dense_blocks)
    torch.library.register_autograd("spsr_fast::dense_blocks_triton", _backward, setup_context=_setup_context)


if _backend.triton_usable():
    _register_triton_ops()
