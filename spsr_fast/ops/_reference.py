"""Plain-PyTorch references of every fused op: the ground truth of the tests and the
baselines of bench/kernels.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F

GRADIENT_EPS = 1e-6


def gradient_map_reference(x: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Gradient magnitude per channel (docs/ARCHITECTURE.md 2.1): pad once, shifted-slice differences.

    Output pixel a is centred on padded row a + 1, so v = xp[a + 2] - xp[a], and the same
    along columns; padding 1 keeps H x W, padding 2 gives (H + 2) x (W + 2).
    """
    xp = F.pad(x, (padding, padding, padding, padding))
    v = xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1]
    h = xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]
    return torch.sqrt(v * v + h * h + GRADIENT_EPS)


_AUTHORS_KERNELS: dict = {}


def _authors_kernels(device, dtype):
    key = (device, dtype)
    if key not in _AUTHORS_KERNELS:
        kernel_v = torch.tensor([[0, -1, 0], [0, 0, 0], [0, 1, 0]], dtype=dtype, device=device)
        kernel_h = torch.tensor([[0, 0, 0], [-1, 0, 1], [0, 0, 0]], dtype=dtype, device=device)
        _AUTHORS_KERNELS[key] = (kernel_v.view(1, 1, 3, 3), kernel_h.view(1, 1, 3, 3))
    return _AUTHORS_KERNELS[key]


def gradient_map_authors(x: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """The authors' formulation (their Get_gradient / Get_gradient_nopadding): two fixed
    3x3 single-channel convolutions per channel, then sqrt(v^2 + h^2 + 1e-6)."""
    kernel_v, kernel_h = _authors_kernels(x.device, x.dtype)
    channels = []
    for c in range(x.shape[1]):
        xc = x[:, c:c + 1]
        v = F.conv2d(xc, kernel_v, padding=padding)
        h = F.conv2d(xc, kernel_h, padding=padding)
        channels.append(torch.sqrt(v.pow(2) + h.pow(2) + GRADIENT_EPS))
    return torch.cat(channels, dim=1)


# ---------------------------------------------------------------------------------------
# info_nce (docs/ARCHITECTURE.md 2.3): InfoNCE over every valid candidate of the query's own image.
# ---------------------------------------------------------------------------------------

INFO_NCE_NORM_EPS = 1e-12  # F.normalize's eps; the fused op normalises with the same helper


def info_nce_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last dim, like F.normalize(eps=1e-12), computed in float32
    (float64 stays float64) and returned in x's dtype: half-precision norms would
    overflow/underflow, and 1e-12 is below fp16's smallest subnormal."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return F.normalize(x.to(acc), dim=-1, eps=INFO_NCE_NORM_EPS).to(x.dtype)


def info_nce_loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-row losses come out in the accumulation type: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def info_nce_candidate_mask(positive_index: torch.Tensor, excluded_centres: torch.Tensor, length: int,
                            grid_width: int, radius: int) -> torch.Tensor:
    """(rows, length) bool: the positive, and every position at Chebyshev distance >= radius
    from each excluded centre (grid coordinates (row, col); position m sits at
    (m // grid_width, m % grid_width)). Built from per-axis tables, since the Chebyshev
    ball is a square: excluded = any_k near_row[k] x near_col[k]."""
    device = positive_index.device
    grid_rows = torch.arange(length // grid_width, device=device)
    grid_cols = torch.arange(grid_width, device=device)
    near_row = (grid_rows[None, None, :] - excluded_centres[:, :, 0:1]).abs() < radius
    near_col = (grid_cols[None, None, :] - excluded_centres[:, :, 1:2]).abs() < radius
    excluded = (near_row[:, :, :, None] & near_col[:, :, None, :]).any(dim=1).flatten(1)
    valid = ~excluded
    valid[torch.arange(valid.shape[0], device=device), positive_index] = True
    return valid


def info_nce_reference(queries: torch.Tensor, features: torch.Tensor, image_index: torch.Tensor,
                       positive_index: torch.Tensor, excluded_centres: torch.Tensor, grid_width: int,
                       radius: int, scale: float = 64.0) -> torch.Tensor:
    """Per-row InfoNCE losses, materialising each image's (rows x L) similarity matrix.

    s_nm = scale * cos(q_n, f_m) over the candidates m of image image_index[n]; the loss is
    logsumexp over {positive} + negatives minus s_n,pos (see spsr_fast.ops.info_nce)."""
    q = info_nce_normalize(queries)
    f = info_nce_normalize(features)
    acc = info_nce_loss_dtype(queries.dtype)
    B, L, _ = features.shape
    row_lists, loss_lists = [], []
    for b in range(B):
        rows = (image_index == b).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        logits = (scale * (q[rows] @ f[b].transpose(0, 1))).to(acc)
        pos = positive_index[rows]
        valid = info_nce_candidate_mask(pos, excluded_centres[rows], L, grid_width, radius)
        lse = torch.logsumexp(logits.masked_fill(~valid, float("-inf")), dim=1)
        row_lists.append(rows)
        loss_lists.append(lse - logits.gather(1, pos[:, None]).squeeze(1))
    losses = torch.zeros(queries.shape[0], dtype=acc, device=queries.device)
    if not row_lists:
        return losses + 0 * (queries.sum() + features.sum()).to(acc)  # keeps the graph connected
    return losses.index_copy(0, torch.cat(row_lists), torch.cat(loss_lists))


# ---------------------------------------------------------------------------------------
# Residual dense blocks (docs/ARCHITECTURE.md 2.2): the plain torch.cat formulation of ESRGAN's
# ResidualDenseBlock_5C and RRDB, the ground truth of spsr_fast.ops.dense_block.
# ---------------------------------------------------------------------------------------

DENSE_NEGATIVE_SLOPE = 0.2


def residual_dense_block_reference(x: torch.Tensor, weights, biases, residual_scale: float = 0.2) -> torch.Tensor:
    """x1..x4 = lrelu(conv_k(cat(x, x1, ..))), x5 = conv5(cat(x..x4)); returns s*x5 + x."""
    features = [x]
    for k in range(4):
        conv = F.conv2d(torch.cat(features, 1), weights[k], biases[k], padding=1)
        # in place on the fresh conv output, like ESRGAN's code (the fairest baseline)
        features.append(F.leaky_relu(conv, DENSE_NEGATIVE_SLOPE, inplace=True))
    x5 = F.conv2d(torch.cat(features, 1), weights[4], biases[4], padding=1)
    return x5 * residual_scale + x


def rrdb_reference(x: torch.Tensor, weights, biases, residual_scale: float = 0.2) -> torch.Tensor:
    """Three residual dense blocks (15 convs) and the outer residual s*out + x."""
    out = x
    for block in range(len(weights) // 5):
        out = residual_dense_block_reference(out, weights[5 * block:5 * block + 5],
                                             biases[5 * block:5 * block + 5], residual_scale)
    return out * residual_scale + x
