"""Triton kernels of gradient_map (semantics: docs/ARCHITECTURE.md 2.1, spsr_fast/ops/_reference.py).

Each program handles BLOCK elements of the tensor it writes, in that tensor's memory
order (NCHW or NHWC), so stores are contiguous; x and grad_out may have any strides.
Index arithmetic mirrors csrc/gradient_map_math.h.
"""
import torch
import triton
import triton.language as tl

from ._device import on_device_of

EPS = tl.constexpr(1e-6)  # a plain global cannot be read inside @triton.jit on the GPU
BLOCK = 1024


@triton.jit
def _unravel(e, C, H, W, CHANNELS_LAST: tl.constexpr):
    if CHANNELS_LAST:
        c = e % C
        r = e // C
        j = r % W
        r = r // W
        i = r % H
        b = r // H
    else:
        j = e % W
        r = e // W
        i = r % H
        r = r // H
        c = r % C
        b = r // C
    return b, c, i, j


@triton.jit
def _load_zero_padded(ptr, base, i, j, H, W, stride_h, stride_w, mask, ACC: tl.constexpr):
    inside = mask & (i >= 0) & (i < H) & (j >= 0) & (j < W)
    return tl.load(ptr + base + i * stride_h + j * stride_w, mask=inside, other=0.0).to(ACC)


@triton.jit
def _forward_kernel(x_ptr, out_ptr, n, C, H, W, Ho, Wo, sxb, sxc, sxh, sxw,
                    PADDING: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
                    BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < n
    b, c, a, col = _unravel(e, C, Ho, Wo, CHANNELS_LAST)
    i = a + 1 - PADDING
    j = col + 1 - PADDING
    base = b * sxb + c * sxc
    v = (_load_zero_padded(x_ptr, base, i + 1, j, H, W, sxh, sxw, mask, ACC)
         - _load_zero_padded(x_ptr, base, i - 1, j, H, W, sxh, sxw, mask, ACC))
    h = (_load_zero_padded(x_ptr, base, i, j + 1, H, W, sxh, sxw, mask, ACC)
         - _load_zero_padded(x_ptr, base, i, j - 1, H, W, sxh, sxw, mask, ACC))
    y = tl.sqrt(v * v + h * h + EPS)
    tl.store(out_ptr + e, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scaled_diffs(x_ptr, g_ptr, xbase, gbase, ci, cj, H, W, sxh, sxw, sgh, sgw, mask,
                  PADDING: tl.constexpr, ACC: tl.constexpr):
    # g*v/y and g*h/y at centre (ci, cj); zero where the centre has no output pixel.
    has_output = (mask & (ci >= 1 - PADDING) & (ci < H + PADDING - 1)
                  & (cj >= 1 - PADDING) & (cj < W + PADDING - 1))
    v = (_load_zero_padded(x_ptr, xbase, ci + 1, cj, H, W, sxh, sxw, has_output, ACC)
         - _load_zero_padded(x_ptr, xbase, ci - 1, cj, H, W, sxh, sxw, has_output, ACC))
    h = (_load_zero_padded(x_ptr, xbase, ci, cj + 1, H, W, sxh, sxw, has_output, ACC)
         - _load_zero_padded(x_ptr, xbase, ci, cj - 1, H, W, sxh, sxw, has_output, ACC))
    g = tl.load(g_ptr + gbase + (ci + PADDING - 1) * sgh + (cj + PADDING - 1) * sgw,
                mask=has_output, other=0.0).to(ACC)
    s = g / tl.sqrt(v * v + h * h + EPS)
    return s * v, s * h


@triton.jit
def _backward_kernel(g_ptr, x_ptr, dx_ptr, n, C, H, W, sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw,
                     PADDING: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
                     BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < n
    b, c, i, j = _unravel(e, C, H, W, CHANNELS_LAST)
    xbase = b * sxb + c * sxc
    gbase = b * sgb + c * sgc
    dv_up, _unused0 = _scaled_diffs(x_ptr, g_ptr, xbase, gbase, i - 1, j, H, W, sxh, sxw, sgh, sgw,
                                    mask, PADDING, ACC)
    dv_down, _unused1 = _scaled_diffs(x_ptr, g_ptr, xbase, gbase, i + 1, j, H, W, sxh, sxw, sgh,
                                      sgw, mask, PADDING, ACC)
    _unused2, dh_left = _scaled_diffs(x_ptr, g_ptr, xbase, gbase, i, j - 1, H, W, sxh, sxw, sgh,
                                      sgw, mask, PADDING, ACC)
    _unused3, dh_right = _scaled_diffs(x_ptr, g_ptr, xbase, gbase, i, j + 1, H, W, sxh, sxw, sgh,
                                       sgw, mask, PADDING, ACC)
    dx = dv_up - dv_down + dh_left - dh_right
    tl.store(dx_ptr + e, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """NHWC output for NHWC input, NCHW otherwise (same rule as the C++ kernels)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _acc_dtype(x: torch.Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def forward(x: torch.Tensor, padding: int, launch=lambda kernel: kernel) -> torch.Tensor:
    """gradient_map(x, padding); `launch` wraps the kernel (torch.library.wrap_triton)."""
    B, C, H, W = x.shape
    Ho, Wo = H + 2 * padding - 2, W + 2 * padding - 2
    fmt = output_memory_format(x)
    out = torch.empty((B, C, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=fmt)
    n = out.numel()
    if n:
        with on_device_of(x):
            launch(_forward_kernel)[(triton.cdiv(n, BLOCK),)](
                x, out, n, C, H, W, Ho, Wo, *x.stride(), PADDING=padding,
                CHANNELS_LAST=fmt == torch.channels_last, ACC=_acc_dtype(x), BLOCK=BLOCK)
    return out


def backward(grad_out: torch.Tensor, x: torch.Tensor, padding: int,
             launch=lambda kernel: kernel) -> torch.Tensor:
    B, C, H, W = x.shape
    fmt = output_memory_format(x)
    grad_out = grad_out.to(x.dtype)
    dx = torch.empty_like(x, memory_format=fmt)
    n = dx.numel()
    if n:
        with on_device_of(x):
            launch(_backward_kernel)[(triton.cdiv(n, BLOCK),)](
                grad_out, x, dx, n, C, H, W, *grad_out.stride(), *x.stride(), PADDING=padding,
                CHANNELS_LAST=fmt == torch.channels_last, ACC=_acc_dtype(x), BLOCK=BLOCK)
    return dx
