"""JPEG compression of a batch in torch: what libjpeg(-turbo), and so Pillow, writes and reads
for a baseline 4:2:0 file at an IJG quality, one quality per sample, in integer arithmetic as
libjpeg does it (bit-identical to Pillow on the tests' images):

1. 8-bit RGB to YCbCr by libjpeg's fixed-point JFIF formulas; the image padded to whole 16x16
   MCUs by repeating its last column and row (libjpeg's edge expansion);
2. Cb, Cr averaged over 2x2 (libjpeg's alternating rounding bias 1, 2), the last chroma row
   repeated to fill the MCU (libjpeg pads the downsampled plane, not the image);
3. per 8x8 block: libjpeg's 'islow' integer DCT (the Loeffler-Ligtenberg-Moschytz factorisation,
   13-bit constants), quantised by the IJG tables scaled to the quality (jpeg_quality_scaling,
   baseline-clamped to 1..255) with rounding half away from zero;
4. decoding: dequantise, 'islow' inverse DCT, +128 and clamp to 0..255 (libjpeg's range limit,
   exact for the |values| < 384 that 8-bit blocks produce), chroma upsampled by libjpeg's 'fancy'
   triangle filter, RGB by its fixed-point formulas.

Integer arithmetic runs in int64 (libjpeg's JLONG) for the DCTs and in float32 elsewhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K tables (rows: vertical frequency, columns: horizontal), as in IJG's jcparam.c
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99)
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32))

# ----- colour conversion (jccolor.c / jdcolor.c, 16-bit fixed point) -------------------------
# Done in float32 elementwise: every product and partial sum is an integer below 2^24, which
# float32 holds exactly (and no matmul, which reduced-precision matmul modes could reach).
SCALE_BITS = 16
ONE = float(1 << SCALE_BITS)
HALF = float(1 << (SCALE_BITS - 1))


def _fix16(x: float) -> float:
    return float(int(x * (1 << SCALE_BITS) + 0.5))


def _rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """libjpeg's rgb_ycc_convert of integer-valued float32 (B, 3, H, W) RGB 0..255."""
    r, g, b = rgb.unbind(1)
    y = torch.floor((_fix16(0.29900) * r + _fix16(0.58700) * g + _fix16(0.11400) * b + HALF) / ONE)
    offset = 128 * ONE + HALF - 1
    cb = torch.floor(((offset + _fix16(0.50000) * b) - _fix16(0.16874) * r - _fix16(0.33126) * g) / ONE)
    cr = torch.floor(((offset + _fix16(0.50000) * r) - _fix16(0.41869) * g - _fix16(0.08131) * b) / ONE)
    return torch.stack((y, cb, cr), 1)


def _ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """libjpeg's ycc_rgb_convert, clamped to 0..255 (integer-valued float32)."""
    y, cb, cr = ycc.unbind(1)
    cb, cr = cb - 128, cr - 128
    r = y + torch.floor((_fix16(1.40200) * cr + HALF) / ONE)
    b = y + torch.floor((_fix16(1.77200) * cb + HALF) / ONE)
    g = y + torch.floor((-_fix16(0.34414) * cb - _fix16(0.71414) * cr + HALF) / ONE)
    return torch.stack((r, g, b), 1).clamp(0, 255)


# ----- chroma subsampling (jcsample.c h2v2_downsample, jdsample.c h2v2_fancy_upsample) --------

def _downsample_2x2(plane: torch.Tensor) -> torch.Tensor:
    """(B, H, W) with H, W even: (sum of 2x2 + 1 or 2) >> 2, the bias alternating along a row."""
    b, h, w = plane.shape
    total = plane.view(b, h // 2, 2, w // 2, 2).sum(dim=(2, 4))
    bias = 1 + (torch.arange(w // 2, device=plane.device) % 2).to(plane.dtype)
    return torch.floor((total + bias) / 4)


def _upsample_fancy(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The valid (ceil(H/2), ceil(W/2)) part of a chroma plane (B, h, w) upsampled by a triangle
    filter (3/4, 1/4 per axis, edges repeated; rounding +8 / +7) to (B, height, width)."""
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    p = plane[:, :h2, :w2]
    above = torch.cat((p[:, :1], p[:, :-1]), 1)
    below = torch.cat((p[:, 1:], p[:, -1:]), 1)
    rows = torch.stack((3 * p + above, 3 * p + below), 2).reshape(p.shape[0], 2 * h2, w2)  # column sums
    left = torch.cat((rows[..., :1], rows[..., :-1]), 2)
    right = torch.cat((rows[..., 1:], rows[..., -1:]), 2)
    even = torch.floor((3 * rows + left + 8) / 16)
    odd = torch.floor((3 * rows + right + 7) / 16)
    out = torch.stack((even, odd), 3).reshape(p.shape[0], 2 * h2, 2 * w2)
    return out[:, :height, :width]


# ----- the 'islow' DCT pair (jfdctint.c / jidctint.c), on lists of 8 int64 tensors -------------
CONST_BITS, PASS1_BITS = 13, 2
FIX_0_298631336, FIX_0_390180644, FIX_0_541196100, FIX_0_765366865 = 2446, 3196, 4433, 6270
FIX_0_899976223, FIX_1_175875602, FIX_1_501321110, FIX_1_847759065 = 7373, 9633, 12299, 15137
FIX_1_961570560, FIX_2_053119869, FIX_2_562915447, FIX_3_072711026 = 16069, 16819, 20995, 25172


def _descale(x: torch.Tensor, n: int) -> torch.Tensor:
    return (x + (1 << (n - 1))) >> n


def _odd_part(t4, t5, t6, t7):
    """The odd-frequency rotations shared by the forward and the inverse DCT."""
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * FIX_1_175875602
    t4, t5, t6, t7 = t4 * FIX_0_298631336, t5 * FIX_2_053119869, t6 * FIX_3_072711026, t7 * FIX_1_501321110
    z1, z2 = z1 * -FIX_0_899976223, z2 * -FIX_2_562915447
    z3, z4 = z3 * -FIX_1_961570560 + z5, z4 * -FIX_0_390180644 + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_pass(d, first: bool):
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    if first:   # rows: results scaled up by 2^PASS1_BITS
        out0, out4 = (tmp10 + tmp11) << PASS1_BITS, (tmp10 - tmp11) << PASS1_BITS
        shift = CONST_BITS - PASS1_BITS
    else:
        out0, out4 = _descale(tmp10 + tmp11, PASS1_BITS), _descale(tmp10 - tmp11, PASS1_BITS)
        shift = CONST_BITS + PASS1_BITS
    z1 = (tmp12 + tmp13) * FIX_0_541196100
    out2 = _descale(z1 + tmp13 * FIX_0_765366865, shift)
    out6 = _descale(z1 - tmp12 * FIX_1_847759065, shift)
    o7, o5, o3, o1 = _odd_part(tmp4, tmp5, tmp6, tmp7)
    return [out0, _descale(o1, shift), out2, _descale(o3, shift), out4, _descale(o5, shift), out6,
            _descale(o7, shift)]


def fdct_islow(blocks: torch.Tensor) -> torch.Tensor:
    """(..., 8, 8) int64 level-shifted samples (rows y, columns x) -> DCT coefficients x 8
    (rows: vertical frequency), as jpeg_fdct_islow."""
    rows = torch.stack(_fdct_pass(blocks.unbind(-1), True), -1)
    return torch.stack(_fdct_pass(rows.unbind(-2), False), -2)


def _idct_pass(c, shift: int):
    z1 = (c[2] + c[6]) * FIX_0_541196100
    tmp2, tmp3 = z1 - c[6] * FIX_1_847759065, z1 + c[2] * FIX_0_765366865
    tmp0, tmp1 = (c[0] + c[4]) << CONST_BITS, (c[0] - c[4]) << CONST_BITS
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
    return [_descale(v, shift) for v in (tmp10 + o3, tmp11 + o2, tmp12 + o1, tmp13 + o0,
                                          tmp13 - o0, tmp12 - o1, tmp11 - o2, tmp10 - o3)]


def idct_islow(coef: torch.Tensor) -> torch.Tensor:
    """(..., 8, 8) int64 dequantised coefficients -> samples before the +128 level shift, as
    jpeg_idct_islow (columns first, then rows, descaled by 8 and the pass-1 scaling)."""
    cols = torch.stack(_idct_pass(coef.unbind(-2), CONST_BITS - PASS1_BITS), -2)
    return torch.stack(_idct_pass(cols.unbind(-1), CONST_BITS + PASS1_BITS + 3), -1)


def dct_matrix(dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal 8-point DCT-II C[u, x] = a(u) cos((2x + 1) u pi / 16): C X C^T is the JPEG
    standard's F(u, v); fdct_islow approximates 8 C X C^T (the tests' reference)."""
    u = torch.arange(8, dtype=torch.float64).view(8, 1)
    x = torch.arange(8, dtype=torch.float64).view(1, 8)
    c = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    c[0] = math.sqrt(1 / 8)
    return c.to(device=device, dtype=dtype)


# ----- quantisation -----------------------------------------------------------------------------

def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) quantisation tables (B, 8, 8) int64 for integer IJG qualities (B,)."""
    q = quality.long().clamp(1, 100).view(-1, 1, 1)
    scale = torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q)
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        t = torch.tensor(base, dtype=torch.long).view(1, 8, 8)
        tables.append(torch.div(t * scale + 50, 100, rounding_mode="floor").clamp(1, 255))
    return tables[0], tables[1]


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H/8 * W/8, 8, 8) int64 level-shifted 8x8 blocks (H, W multiples of 8)."""
    b, h, w = plane.shape
    return (plane.long() - 128).view(b, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(b, -1, 8, 8)


def _unblocks(blocks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b = blocks.shape[0]
    return blocks.view(b, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(b, h, w)


def _code(blocks: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Encode and decode 8x8 blocks (B, N, 8, 8) with their tables (B, N, 8, 8): DCT, quantise,
    dequantise, inverse DCT, level shift, clamp to 0..255."""
    coef = fdct_islow(blocks)                                   # x 8
    # libjpeg divides by 8 * table with rounding half away from zero
    quantised = torch.sign(coef) * torch.div(coef.abs() + 4 * tables, 8 * tables, rounding_mode="floor")
    return (idct_islow(quantised * tables) + 128).clamp(0, 255)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1] through JPEG at the integer IJG qualities (B,); float, 8-bit valued."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"jpeg: expected a (B, 3, H, W) RGB batch, got {tuple(x.shape)}")
    b, _, h, w = x.shape
    full_h, full_w = h + (-h % 16), w + (-w % 16)
    rgb = torch.round(x.float().clamp(0, 1) * 255)
    rgb = F.pad(rgb, (0, full_w - w, 0, full_h - h), mode="replicate")
    ycc = _rgb_to_ycbcr(rgb)
    even_h = h + h % 2
    chroma = _downsample_2x2(ycc[:, 1:, :even_h].reshape(2 * b, even_h, full_w))
    chroma = F.pad(chroma[:, None], (0, 0, 0, (full_h - even_h) // 2), mode="replicate")[:, 0]
    # every block of the three planes in one pass, each with its plane's table
    luma_blocks, chroma_blocks = _blocks(ycc[:, 0]), _blocks(chroma).view(b, -1, 8, 8)
    luma_t, chroma_t = (t.to(x.device).view(b, 1, 8, 8) for t in quality_tables(quality.cpu()))
    n_luma = luma_blocks.shape[1]
    tables = torch.cat((luma_t.expand(-1, n_luma, -1, -1), chroma_t.expand(-1, chroma_blocks.shape[1], -1, -1)), 1)
    coded = _code(torch.cat((luma_blocks, chroma_blocks), 1), tables).to(rgb.dtype)
    y = _unblocks(coded[:, :n_luma], full_h, full_w)[:, :h, :w]
    chroma = _unblocks(coded[:, n_luma:].reshape(2 * b, -1, 8, 8), full_h // 2, full_w // 2)
    chroma = _upsample_fancy(chroma, h, w).view(b, 2, h, w)
    rgb = _ycbcr_to_rgb(torch.cat((y[:, None], chroma), 1))
    return (rgb / 255).to(x.dtype)
