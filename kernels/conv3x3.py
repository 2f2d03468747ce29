"""Triton implicit-GEMM 3x3 convolution (stride 1, zero padding 1) with fused epilogues,
the building block of the fused residual dense blocks (DESIGN.md 2.2).

GEMM view: M = B*H*W output pixels, N = C_out, K = 9 taps x C_in. Each program owns a
BLOCK_M x BLOCK_N output tile and loops over the 9 taps and BLOCK_K chunks of C_in,
loading shifted input pixels (zero outside the image) and the matching weight rows, and
accumulating with tl.dot in fp32 (tensor cores for fp16/bf16; on Hopper tl.dot lowers to
WGMMA). Input and output are any 4-D strided views: a channel slice of a channels_last
buffer is read and written in place, which is how the dense block avoids torch.cat.

Epilogue (acc = conv + bias, in fp32):
  EPILOGUE_LRELU    out = lrelu(acc, 0.2)
  EPILOGUE_RESIDUAL out = scale*acc + res
  EPILOGUE_RRDB     out = scale*(scale*acc + res) + res2   (last conv of an RRDB)
"""
import os

import torch
import triton
import triton.language as tl

EPILOGUE_LRELU = 0
EPILOGUE_RESIDUAL = 1
EPILOGUE_RRDB = 2
NEGATIVE_SLOPE = 0.2


@triton.jit
def _conv3x3_kernel(x_ptr, w_ptr, b_ptr, out_ptr, res_ptr, res2_ptr, scale,
                    n_pixels, H, W, C_in, C_out,
                    sxb, sxc, sxh, sxw, sob, soc, soh, sow, srb, src, srh, srw, s2b, s2c, s2h, s2w,
                    EPILOGUE: tl.constexpr, IEEE_DOT: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pix = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    pix_ok = pix < n_pixels
    col_ok = cols < C_out
    w_idx = pix % W
    h_idx = (pix // W) % H
    b_idx = pix // (W * H)
    ks = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap in tl.static_range(9):
        hh = h_idx + (tap // 3 - 1)
        ww = w_idx + (tap % 3 - 1)
        inside = pix_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        row_base = b_idx * sxb + hh * sxh + ww * sxw
        for c0 in range(0, C_in, BLOCK_K):
            c = c0 + ks
            c_ok = c < C_in
            a = tl.load(x_ptr + row_base[:, None] + c[None, :] * sxc,
                        mask=inside[:, None] & c_ok[None, :], other=0.0)
            # weights are laid out (tap, C_in, C_out), C_out contiguous
            wt = tl.load(w_ptr + (tap * C_in + c)[:, None] * C_out + cols[None, :],
                         mask=c_ok[:, None] & col_ok[None, :], other=0.0)
            if IEEE_DOT:
                acc = tl.dot(a, wt, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, wt, acc)

    acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    mask = pix_ok[:, None] & col_ok[None, :]
    if EPILOGUE == 0:
        acc = tl.where(acc > 0, acc, acc * 0.2)
    else:
        res = tl.load(res_ptr + (b_idx * srb + h_idx * srh + w_idx * srw)[:, None] + cols[None, :] * src,
                      mask=mask, other=0.0).to(tl.float32)
        acc = acc * scale + res
        if EPILOGUE == 2:
            res2 = tl.load(res2_ptr + (b_idx * s2b + h_idx * s2h + w_idx * s2w)[:, None] + cols[None, :] * s2c,
                           mask=mask, other=0.0).to(tl.float32)
            acc = acc * scale + res2
    out_off = (b_idx * sob + h_idx * soh + w_idx * sow)[:, None] + cols[None, :] * soc
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _configs():
    # BLOCK_N covers C_out (32/64/128) in one or two tiles; BLOCK_K divides every C_in of
    # the dense blocks (multiples of 32). num_warps 4/8 = one/two warpgroups for WGMMA.
    configs = []
    for block_m in (64, 128):
        for block_n in (32, 64, 128):
            for block_k in (32, 64):
                for warps, stages in ((4, 3), (4, 4), (8, 3)):
                    if block_m * block_n >= 128 * 128 and warps == 4:
                        continue
                    configs.append(triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
                                                 num_warps=warps, num_stages=stages))
    return configs


_autotuned_kernel = triton.autotune(configs=_configs(), key=["C_in", "C_out", "n_pixels"])(_conv3x3_kernel)
# The interpreter (CPU tests) runs one small fixed tile: autotuning there would only be slow.
INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (9, C_in, C_out) contiguous: tap-major rows of the GEMM's B."""
    c_out, c_in = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(9, c_in, c_out).contiguous()


def conv3x3(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor,
            epilogue: int, res: torch.Tensor | None = None, res2: torch.Tensor | None = None,
            scale: float = 0.2, launch=lambda kernel: kernel, blocks: dict | None = None) -> torch.Tensor:
    """out <- epilogue(conv3x3(x) + bias), in place; x, out, res, res2 are (B, C, H, W) views
    with any strides (out must not overlap x's channels). `packed_weight` is pack_weight(w).
    `blocks` pins the tile sizes (tests); otherwise the autotuner picks them on the GPU."""
    B, c_in, H, W = x.shape
    c_out = packed_weight.shape[2]
    n_pixels = B * H * W
    if n_pixels == 0:
        return out
    res = out if res is None else res
    res2 = out if res2 is None else res2
    if blocks is None and _interpreting():
        blocks = INTERPRETER_BLOCKS
    kernel = _conv3x3_kernel if blocks is not None else _autotuned_kernel
    meta = blocks or {}

    def grid(m):
        return (triton.cdiv(n_pixels, m["BLOCK_M"]), triton.cdiv(c_out, m["BLOCK_N"]))

    launch(kernel)[grid](
        x, packed_weight, bias, out, res, res2, float(scale), n_pixels, H, W, c_in, c_out,
        *x.stride(), *out.stride(), *res.stride(), *res2.stride(),
        EPILOGUE=epilogue, IEEE_DOT=x.dtype == torch.float32, **meta)
    return out


def dense_blocks(x: torch.Tensor, weights, biases, residual_scale: float, outer_residual: bool,
                 keep_buffers: bool, launch=lambda kernel: kernel):
    """Residual dense blocks on one channels_last buffer each, every conv a fused launch
    (same scheme and outputs as csrc/dense_block.cpp). Returns (out, buffers)."""
    B, nf, H, W = x.shape
    gc = weights[0].shape[0]
    blocks = len(weights) // 5

    def new_buffer():
        return torch.empty((B, nf + 4 * gc, H, W), dtype=x.dtype, device=x.device,
                           memory_format=torch.channels_last)

    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    kept, ping_pong = [], [None, None]

    def buffer_for(block):
        if keep_buffers:
            kept.append(new_buffer())
            return kept[-1]
        if ping_pong[block % 2] is None:
            ping_pong[block % 2] = new_buffer()
        return ping_pong[block % 2]

    buffer = buffer_for(0)
    buffer[:, :nf].copy_(x)
    for block in range(blocks):
        first = 5 * block
        for k in range(4):
            c_in = nf + k * gc
            conv3x3(buffer[:, :c_in], pack_weight(weights[first + k]), biases[first + k],
                    buffer[:, c_in:c_in + gc], EPILOGUE_LRELU, launch=launch)
        block_x = buffer[:, :nf]
        w5, b5 = pack_weight(weights[first + 4]), biases[first + 4]
        if block + 1 < blocks:
            nxt = buffer_for(block + 1)
            conv3x3(buffer, w5, b5, nxt[:, :nf], EPILOGUE_RESIDUAL, res=block_x, scale=residual_scale,
                    launch=launch)
            buffer = nxt
        elif outer_residual:
            conv3x3(buffer, w5, b5, out, EPILOGUE_RRDB, res=block_x, res2=x, scale=residual_scale,
                    launch=launch)
        else:
            conv3x3(buffer, w5, b5, out, EPILOGUE_RESIDUAL, res=block_x, scale=residual_scale, launch=launch)
    return out, kept
