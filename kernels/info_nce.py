"""Triton kernels of info_nce (semantics: docs/ARCHITECTURE.md 2.3, csrc/info_nce_math.h).

Queries are grouped by image (a stable sort by image_index, kept as `order`), so a
program's rows all stream the same image's L candidates. Queries and features are
normalised as they are loaded (u = x / max(|x|, 1e-12), norms in fp32), and the
gradients are turned into gradients w.r.t. the raw vectors in each kernel's epilogue,
so no normalised copy of anything is written.

  forward:      one program per tile of BLOCK_M rows of one image; streams candidate
                tiles, logits by `tl.dot`, scale and the coordinate mask in registers,
                running max and sum per row (online logsumexp). Writes loss and lse (N).
  backward dq:  same tiling; recomputes each logit tile and accumulates
                dq = scale * sum_m dlogit_nm f_m.
  backward df:  one program per (image, tile of BLOCK_N candidates); walks every row of
                the image and accumulates df = scale * sum_n dlogit_nm q_n. Each feature
                gradient has one owner: deterministic, no atomics.
No N x L matrix is ever written. Mask index math mirrors csrc/info_nce_math.h.
"""
import torch
import triton
import triton.language as tl

from ._device import on_device_of

NORM_EPS = tl.constexpr(1e-12)  # csrc/info_nce_math.h kNormEps, F.normalize's eps

# Tile sizes: compiled ahead of time for sm_90 (fp32/fp16/bf16) to have no register
# spills; not tuned by timing (no GPU was at hand when they were picked).
ROW_BLOCK_N = 64                     # candidates per tile of the row-tiled kernels (forward, dq)
ROW_TILINGS = ((32, 8), (16, 4))     # (rows per program, warps) of the row-tiled kernels
DF_BLOCK_M, DF_BLOCK_N, DF_WARPS = 32, 64, 8


def row_tiling(n: int, device: torch.device) -> tuple[int, int]:
    """(rows per program, warps) of the row-tiled kernels: 32 rows when that still gives two
    programs per SM (each program streams all of its image's candidates), else 16."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    wide, narrow = ROW_TILINGS
    return wide if triton.cdiv(n, wide[0]) >= 2 * sms else narrow


@triton.jit
def _masked_logits(q, f, cand, cand_ok, positive, src, row_ok, cen_ptr, K, W, radius, scale,
                   scn, sck, scc, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """scale * q f^T (BLOCK_M x BLOCK_N), -inf where the candidate is not in the row's set:
    valid = m == pos, or Chebyshev distance >= radius from every excluded centre."""
    logits = tl.dot(q, tl.trans(f), input_precision=PRECISION, out_dtype=ACC) * scale
    cand_row = cand // W
    cand_col = cand % W
    excluded = tl.zeros(logits.shape, dtype=tl.int1)
    for k in range(K):
        # int32 tiles (positions and grid coordinates fit): int64 ones double the registers
        centre_row = tl.load(cen_ptr + src * scn + k * sck, mask=row_ok, other=0).to(tl.int32)
        centre_col = tl.load(cen_ptr + src * scn + k * sck + scc, mask=row_ok, other=0).to(tl.int32)
        dr = cand_row[None, :] - centre_row[:, None]
        dc = cand_col[None, :] - centre_col[:, None]
        excluded = excluded | ((dr < radius) & (-dr < radius) & (dc < radius) & (-dc < radius))
    is_positive = cand[None, :] == positive[:, None]
    valid = (is_positive | ~excluded) & cand_ok[None, :] & row_ok[:, None]
    return tl.where(valid, logits, float("-inf")), is_positive


@triton.jit
def _unit(x, ACC: tl.constexpr):
    """(x / max(|x|, eps) in ACC, |x|) for the rows of a tile (info_nce_math.h inverse_norm)."""
    xa = x.to(ACC)
    norm = tl.sqrt(tl.sum(xa * xa, axis=1))
    return xa * (1.0 / tl.maximum(norm, NORM_EPS))[:, None], norm


@triton.jit
def _raw_grad(grad_unit, unit, norm):
    """Gradient w.r.t. the raw rows from the one w.r.t. their unit vectors (info_nce_math.h
    raw_grad): (du - u <u, du>) / |x|, or du / eps where the norm was clamped."""
    unit_dot = tl.sum(unit * grad_unit, axis=1)
    projected = (grad_unit - unit * unit_dot[:, None]) / tl.maximum(norm, NORM_EPS)[:, None]  # no 0/0 in spare rows
    return tl.where((norm > NORM_EPS)[:, None], projected, grad_unit / NORM_EPS)


@triton.jit
def _load_rows(q_ptr, order_ptr, pos_ptr, rows, row_ok, dd, d_ok, sqn, sqd, ACC: tl.constexpr):
    """Original row index, unit queries (input dtype for tl.dot, and ACC), norms, positives."""
    src = tl.load(order_ptr + rows, mask=row_ok, other=0)
    q = tl.load(q_ptr + src[:, None] * sqn + dd[None, :] * sqd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    q_unit, q_norm = _unit(q, ACC)
    positive = tl.load(pos_ptr + src, mask=row_ok, other=-1).to(tl.int32)
    return src, q_unit.to(q.dtype), q_unit, q_norm, positive


@triton.jit
def _load_features(f_base, cand, cand_ok, dd, d_ok, sfl, sfd, ACC: tl.constexpr):
    """Unit features of a candidate tile (input dtype for tl.dot, and ACC), and their norms."""
    f = tl.load(f_base + cand[:, None] * sfl + dd[None, :] * sfd, mask=cand_ok[:, None] & d_ok[None, :], other=0.0)
    f_unit, f_norm = _unit(f, ACC)
    return f_unit.to(f.dtype), f_unit, f_norm


@triton.jit
def _row_tile(tile_img_ptr, tile_begin_ptr, tile_end_ptr, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's tile of query rows (all of one image) and the feature lanes."""
    t = tl.program_id(0)
    b = tl.load(tile_img_ptr + t)
    rows = tl.load(tile_begin_ptr + t) + tl.arange(0, BLOCK_M)
    dd = tl.arange(0, BLOCK_D)
    return b, rows, rows < tl.load(tile_end_ptr + t), dd, dd < D


@triton.jit
def _forward_kernel(q_ptr, f_ptr, order_ptr, pos_ptr, cen_ptr, tile_img_ptr, tile_begin_ptr, tile_end_ptr,
                    loss_ptr, lse_ptr, L, D, K, W, radius, scale,
                    sqn, sqd, sfb, sfl, sfd, scn, sck, scc,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    ACC: tl.constexpr, PRECISION: tl.constexpr):
    b, rows, row_ok, dd, d_ok = _row_tile(tile_img_ptr, tile_begin_ptr, tile_end_ptr, D, BLOCK_M, BLOCK_D)
    src, q, _q_unit, _q_norm, positive = _load_rows(q_ptr, order_ptr, pos_ptr, rows, row_ok, dd, d_ok, sqn, sqd,
                                                    ACC)
    f_base = f_ptr + b.to(tl.int64) * sfb
    run_max = tl.full([BLOCK_M], float("-inf"), ACC)
    run_sum = tl.zeros([BLOCK_M], ACC)
    positive_logit = tl.zeros([BLOCK_M], ACC)
    for j0 in range(0, L, BLOCK_N):
        cand = j0 + tl.arange(0, BLOCK_N)
        cand_ok = cand < L
        f, _f_unit, _f_norm = _load_features(f_base, cand, cand_ok, dd, d_ok, sfl, sfd, ACC)
        logits, is_positive = _masked_logits(q, f, cand, cand_ok, positive, src, row_ok, cen_ptr, K, W, radius,
                                             scale, scn, sck, scc, ACC, PRECISION)
        positive_logit += tl.sum(tl.where(is_positive & cand_ok[None, :], logits, 0.0), axis=1)
        # online logsumexp: move the reference point, then add this tile's exp(s - max)
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe_max) + tl.sum(tl.exp(logits - safe_max[:, None]), axis=1)
        run_max = new_max
    lse = run_max + tl.log(tl.where(row_ok, run_sum, 1.0))  # spare rows: no log(0)
    tl.store(lse_ptr + src, lse, mask=row_ok)
    tl.store(loss_ptr + src, lse - positive_logit, mask=row_ok)


@triton.jit
def _logit_grads(logits, is_positive, lse, grad):
    """(exp(s - lse) - [m == pos]) * g: the gradient of each row's loss w.r.t. its logits."""
    p = tl.exp(logits - lse[:, None])
    return (p - tl.where(is_positive, 1.0, 0.0)) * grad[:, None]


@triton.jit
def _backward_dq_kernel(q_ptr, f_ptr, order_ptr, pos_ptr, cen_ptr, tile_img_ptr, tile_begin_ptr, tile_end_ptr,
                        lse_ptr, grad_ptr, dq_ptr, L, D, K, W, radius, scale,
                        sqn, sqd, sfb, sfl, sfd, scn, sck, scc,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr):
    b, rows, row_ok, dd, d_ok = _row_tile(tile_img_ptr, tile_begin_ptr, tile_end_ptr, D, BLOCK_M, BLOCK_D)
    src, q, q_unit, q_norm, positive = _load_rows(q_ptr, order_ptr, pos_ptr, rows, row_ok, dd, d_ok, sqn, sqd,
                                                  ACC)
    lse = tl.load(lse_ptr + src, mask=row_ok, other=0.0).to(ACC)
    grad = tl.load(grad_ptr + src, mask=row_ok, other=0.0).to(ACC)
    f_base = f_ptr + b.to(tl.int64) * sfb
    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    for j0 in range(0, L, BLOCK_N):
        cand = j0 + tl.arange(0, BLOCK_N)
        cand_ok = cand < L
        f, _f_unit, _f_norm = _load_features(f_base, cand, cand_ok, dd, d_ok, sfl, sfd, ACC)
        logits, is_positive = _masked_logits(q, f, cand, cand_ok, positive, src, row_ok, cen_ptr, K, W, radius,
                                             scale, scn, sck, scc, ACC, PRECISION)
        dlogits = _logit_grads(logits, is_positive, lse, grad)
        dq += tl.dot(dlogits.to(f.dtype), f, input_precision=PRECISION, out_dtype=ACC)
    dq = _raw_grad(dq * scale, q_unit, q_norm)
    tl.store(dq_ptr + src[:, None] * D + dd[None, :], dq.to(dq_ptr.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _backward_df_kernel(q_ptr, f_ptr, order_ptr, pos_ptr, cen_ptr, img_begin_ptr, img_end_ptr,
                        lse_ptr, grad_ptr, df_ptr, L, D, K, W, radius, scale,
                        sqn, sqd, sfb, sfl, sfd, scn, sck, scc,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr):
    b = tl.program_id(1)
    cand = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cand_ok = cand < L
    dd = tl.arange(0, BLOCK_D)
    d_ok = dd < D
    f, f_unit, f_norm = _load_features(f_ptr + b.to(tl.int64) * sfb, cand, cand_ok, dd, d_ok, sfl, sfd, ACC)
    row_begin = tl.load(img_begin_ptr + b)
    row_end = tl.load(img_end_ptr + b)
    df = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    for r0 in range(row_begin, row_end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        src, q, _q_unit, _q_norm, positive = _load_rows(q_ptr, order_ptr, pos_ptr, rows, row_ok, dd, d_ok, sqn,
                                                        sqd, ACC)
        lse = tl.load(lse_ptr + src, mask=row_ok, other=0.0).to(ACC)
        grad = tl.load(grad_ptr + src, mask=row_ok, other=0.0).to(ACC)
        logits, is_positive = _masked_logits(q, f, cand, cand_ok, positive, src, row_ok, cen_ptr, K, W, radius,
                                             scale, scn, sck, scc, ACC, PRECISION)
        dlogits = _logit_grads(logits, is_positive, lse, grad)
        df += tl.dot(tl.trans(dlogits.to(q.dtype)), q, input_precision=PRECISION, out_dtype=ACC)
    df = _raw_grad(df * scale, f_unit, f_norm)
    out = df_ptr + b.to(tl.int64) * L * D + cand[:, None] * D + dd[None, :]
    tl.store(out, df.to(df_ptr.dtype.element_ty), mask=cand_ok[:, None] & d_ok[None, :])


class _Plan:
    """Rows grouped by image, and the row tiles of BLOCK_M rows (never spanning two
    images), built with tensor ops only: no host synchronisation."""

    def __init__(self, image_index: torch.Tensor, num_images: int, block_m: int):
        n = image_index.shape[0]
        device = image_index.device
        self.order = torch.argsort(image_index, stable=True)
        counts = torch.zeros(num_images, dtype=torch.int64, device=device)
        counts.index_add_(0, image_index, torch.ones_like(image_index))
        self.img_end = counts.cumsum(0)
        self.img_begin = self.img_end - counts
        tiles = (counts + block_m - 1) // block_m
        tiles_end = tiles.cumsum(0)
        # an upper bound on the tile count; spare programs get empty row ranges
        self.num_tiles = triton.cdiv(n, block_m) + num_images
        t = torch.arange(self.num_tiles, device=device)
        img = torch.searchsorted(tiles_end, t, right=True).clamp_max(num_images - 1)
        begin = self.img_begin[img] + (t - (tiles_end[img] - tiles[img])) * block_m
        end = torch.minimum(begin + block_m, self.img_end[img])
        self.tile_img = img
        self.tile_begin = begin
        self.tile_end = torch.where(t < tiles_end[-1], end, begin)


def _meta(queries: torch.Tensor):
    acc = tl.float64 if queries.dtype == torch.float64 else tl.float32
    # fp32 stays fp32 in tl.dot ("ieee", not TF32): the logits are scaled by 64
    precision = "ieee" if queries.dtype in (torch.float32, torch.float64) else "tf32"
    return dict(BLOCK_D=max(16, triton.next_power_of_2(queries.shape[1])), ACC=acc, PRECISION=precision)


def _loss_dtype(queries: torch.Tensor) -> torch.dtype:
    return torch.float64 if queries.dtype == torch.float64 else torch.float32


def _common_args(queries, features, excluded_centres, grid_width, radius, scale):
    B, L, D = features.shape
    return (L, D, excluded_centres.shape[1], grid_width, radius, scale, *queries.stride(), *features.stride(),
            *excluded_centres.stride())


def forward(queries, features, image_index, positive_index, excluded_centres, grid_width, radius, scale,
            launch=lambda kernel: kernel):
    """(loss, lse), both (N,) float32 (float64 for float64 inputs), of raw queries/features."""
    n = queries.shape[0]
    loss = torch.empty(n, dtype=_loss_dtype(queries), device=queries.device)
    lse = torch.empty_like(loss)
    if n == 0:
        return loss, lse
    block_m, warps = row_tiling(n, queries.device)
    plan = _Plan(image_index, features.shape[0], block_m)
    with on_device_of(queries):
        launch(_forward_kernel)[(plan.num_tiles,)](
            queries, features, plan.order, positive_index, excluded_centres, plan.tile_img, plan.tile_begin,
            plan.tile_end, loss, lse, *_common_args(queries, features, excluded_centres, grid_width, radius, scale),
            BLOCK_M=block_m, BLOCK_N=ROW_BLOCK_N, num_warps=warps, **_meta(queries))
    return loss, lse


def backward(grad_loss, queries, features, image_index, positive_index, excluded_centres, lse, grid_width, radius,
             scale, launch=lambda kernel: kernel):
    """(grad_queries (N, D), grad_features (B, L, D)) w.r.t. the raw inputs, contiguous, in their dtype."""
    B, L, D = features.shape
    dq = torch.empty((queries.shape[0], D), dtype=queries.dtype, device=queries.device)
    df = torch.empty((B, L, D), dtype=features.dtype, device=features.device)
    if queries.shape[0] == 0 or df.numel() == 0:
        return dq.zero_(), df.zero_()
    grad_loss = grad_loss.to(lse.dtype).contiguous()
    common = _common_args(queries, features, excluded_centres, grid_width, radius, scale)
    meta = _meta(queries)
    block_m, warps = row_tiling(queries.shape[0], queries.device)
    plan = _Plan(image_index, B, block_m)
    with on_device_of(queries):
        launch(_backward_dq_kernel)[(plan.num_tiles,)](
            queries, features, plan.order, positive_index, excluded_centres, plan.tile_img, plan.tile_begin,
            plan.tile_end, lse, grad_loss, dq, *common, BLOCK_M=block_m, BLOCK_N=ROW_BLOCK_N, num_warps=warps,
            **meta)
        launch(_backward_df_kernel)[(triton.cdiv(L, DF_BLOCK_N), B)](
            queries, features, plan.order, positive_index, excluded_centres, plan.img_begin, plan.img_end,
            lse, grad_loss, df, *common, BLOCK_M=DF_BLOCK_M, BLOCK_N=DF_BLOCK_N, num_warps=DF_WARPS, **meta)
    return dq, df
