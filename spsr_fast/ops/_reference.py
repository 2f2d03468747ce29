"""Plain-PyTorch references of every fused op: the ground truth of the tests and the
baselines of bench/kernels.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F

GRADIENT_EPS = 1e-6


def gradient_map_reference(x: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Gradient magnitude per channel (DESIGN.md 2.1): pad once, shifted-slice differences.

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
# Residual dense blocks (DESIGN.md 2.2): the plain torch.cat formulation of ESRGAN's
# ResidualDenseBlock_5C and RRDB, the ground truth of spsr_fast.ops.dense_block.

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
