"""Triton implicit-GEMM 3x3 convolution (stride 1, zero padding 1) with fused epilogues,
the building block of the fused residual dense blocks (docs/ARCHITECTURE.md 2.2).

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

from ._device import on_device_of

EPILOGUE_LRELU = 0
EPILOGUE_RESIDUAL = 1
EPILOGUE_RRDB = 2
NEGATIVE_SLOPE = 0.2


@triton.jit
def _conv3x3_kernel(x_ptr, w_ptr, b_ptr, out_ptr, res_ptr, res2_ptr, scale,
                    n_pixels, PIXEL_BUCKET, H, W, C_in, C_out,
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


# Autotuning. GEMM per conv of the dense blocks: M = B*H*W pixels, N = C_out (gc 32, or nf
# 64 / 128 for conv5), K = 9 C_in with C_in a multiple of gc = 32 (64..192 for nf 64, 128..256
# for nf 128). So:
# - BLOCK_N = C_out (up to 128): each program gathers its shifted input tile (the costly,
#   masked part) once for every output channel; a narrower BLOCK_N re-gathers it C_out/BLOCK_N
#   times. Picked from C_out, not timed.
# - BLOCK_K 32 divides every C_in; 64 only half of them (C_in 96/160/224 would mask half a
#   chunk), so 64 is a candidate only where it divides C_in.
# - BLOCK_M 64 (one WGMMA m64 per warpgroup, more programs for small images) or 128 (half
#   the weight reloads per pixel). 8 warps from BLOCK_M*BLOCK_N*BLOCK_K = 128*64*64 up: with 4
#   the accumulator, the operand tiles and the pipeline's addresses need more than 255
#   registers a thread (sm_90 compiles spill: tests/test_dense_block.py checks there are none).
# - float32 runs tl.dot in IEEE fp32 (no tensor cores): FMA code that needs more registers
#   and compiles slower as the tile grows (BLOCK_N 128 spills), for a path that is opt-in
#   anyway: one config (BLOCK_N at most 64), so no timing runs at all.
# Timed candidates per (C_in, C_out, dtype, pixel bucket): at most 4, about 2 s of compile each.
TENSOR_CORE_TILES = ((64, 32), (128, 32), (64, 64), (128, 64))  # (BLOCK_M, BLOCK_K), 3 stages
FP32_TILE = (64, 64, 32, 4, 2)  # BLOCK_M, largest BLOCK_N, BLOCK_K, warps, stages
BLOCK_NS = (32, 64, 128)
PIXEL_BUCKET_MIN, PIXEL_BUCKET_MAX = 1 << 12, 1 << 20


def block_n_for(c_out: int) -> int:
    return min(max(triton.next_power_of_2(c_out), BLOCK_NS[0]), BLOCK_NS[-1])


def pixel_bucket(n_pixels: int) -> int:
    """Autotune key for the pixel count: the next power of two in [4096, 2^20]. Below 4096
    pixels every tile gives under 64 programs (launch-bound); above 2^20 every tile fills the
    GPU many times over. So a new tile or batch shape re-tunes at most once per power of two."""
    return min(max(triton.next_power_of_2(n_pixels), PIXEL_BUCKET_MIN), PIXEL_BUCKET_MAX)


def tiles_for(c_in: int, c_out: int, ieee: bool) -> list[tuple[int, int, int, int, int]]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) worth timing for one convolution."""
    block_n = block_n_for(c_out)
    if ieee:
        block_m, max_block_n, block_k, warps, stages = FP32_TILE
        return [(block_m, min(block_n, max_block_n), block_k, warps, stages)]
    return [(block_m, block_n, block_k, 8 if block_m * block_n * block_k >= 128 * 64 * 64 else 4, 3)
            for block_m, block_k in TENSOR_CORE_TILES if c_in % block_k == 0 or block_k == 32]


def _tile(config) -> tuple[int, int, int, int, int]:
    kw = config.kwargs
    return kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], config.num_warps, config.num_stages


def _configs():
    tiles = {tile for c_out in BLOCK_NS for ieee in (False, True) for tile in tiles_for(64, c_out, ieee)}
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps, num_stages=stages)
            for m, n, k, warps, stages in sorted(tiles)]


def _prune(configs, named_args, **kwargs):
    wanted = tiles_for(named_args["C_in"], named_args["C_out"], kwargs["IEEE_DOT"])
    return [config for config in configs if _tile(config) in wanted]


_autotuned_kernel = triton.autotune(configs=_configs(), key=["C_in", "C_out", "PIXEL_BUCKET"],
                                    prune_configs_by={"early_config_prune": _prune})(_conv3x3_kernel)
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

    with on_device_of(x):
        launch(kernel)[grid](
            x, packed_weight, bias, out, res, res2, float(scale), n_pixels, pixel_bucket(n_pixels), H, W, c_in,
            c_out, *x.stride(), *out.stride(), *res.stride(), *res2.stride(),
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
