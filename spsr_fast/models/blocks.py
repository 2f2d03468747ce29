"""Building blocks shared by the generators: dense blocks (RDB/RRDB), upsampling, init.

The RDB/RRDB computation lives in `rdb_forward` / `rrdb_forward` only. The fused
dense-block op (docs/ARCHITECTURE.md 2.2) replaces the body of `rrdb_forward`; nothing else
changes, because every generator calls its RRDBs through `RRDB.forward`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import rrdb as fused_rrdb

LRELU_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=True)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    # In place is safe: every caller passes a fresh conv output that nothing else holds.
    return F.leaky_relu(x, LRELU_SLOPE, inplace=True)


class RDB(nn.Module):
    """Residual dense block: five 3x3 convs over the growing concatenation
    [x, x1, .., x4]; LeakyReLU(0.2) after conv1..conv4, none after conv5;
    output `0.2 * x5 + x`. Parameters conv1..conv5 (weight + bias)."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.conv1 = conv3x3(nf, gc)
        self.conv2 = conv3x3(nf + gc, gc)
        self.conv3 = conv3x3(nf + 2 * gc, gc)
        self.conv4 = conv3x3(nf + 3 * gc, gc)
        self.conv5 = conv3x3(nf + 4 * gc, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rdb_forward(x, self)


class RRDB(nn.Module):
    """Residual in residual dense block: three RDBs and `0.2 * out + x`."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.rdb1 = RDB(nf, gc)
        self.rdb2 = RDB(nf, gc)
        self.rdb3 = RDB(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rrdb_forward(x, self)


def rdb_forward(x: torch.Tensor, rdb: RDB) -> torch.Tensor:
    x1 = lrelu(rdb.conv1(x))
    x2 = lrelu(rdb.conv2(torch.cat((x, x1), 1)))
    x3 = lrelu(rdb.conv3(torch.cat((x, x1, x2), 1)))
    x4 = lrelu(rdb.conv4(torch.cat((x, x1, x2, x3), 1)))
    x5 = rdb.conv5(torch.cat((x, x1, x2, x3, x4), 1))
    return x5 * RESIDUAL_SCALE + x


def rrdb_forward(x: torch.Tensor, rrdb: RRDB) -> torch.Tensor:
    """The one place an RRDB is computed: the fused dense-block op (spsr_fast.ops.rrdb;
    its `reference` backend is the torch.cat formulation of rdb_forward)."""
    convs = [getattr(rdb, f"conv{k}") for rdb in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3) for k in range(1, 6)]
    return fused_rrdb(x, [c.weight for c in convs], [c.bias for c in convs], RESIDUAL_SCALE)


def upsampling_steps(scale: int, argument: str = "scale") -> int:
    """Number of nearest-x2 + conv steps for an integer power-of-two `scale` (1, 2, 4, 8...)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1 or scale & (scale - 1):
        raise ValueError(f"{argument} must be a power of two (1, 2, 4, 8, ...), got {scale!r}")
    return int(math.log2(scale))


def add_upsampler(module: nn.Module, prefix: str, steps: int, nf: int) -> None:
    """Registers convs `<prefix>1 .. <prefix><steps>` on `module`, one per x2 step."""
    for step in range(1, steps + 1):
        module.add_module(f"{prefix}{step}", conv3x3(nf, nf))


def upsampler_convs(module: nn.Module, prefix: str, steps: int) -> list[nn.Conv2d]:
    # Looked up by name on each call, so copies (EMA) and replaced modules stay right.
    return [getattr(module, f"{prefix}{step}") for step in range(1, steps + 1)]


def upsample(x: torch.Tensor, convs) -> torch.Tensor:
    """Per step: nearest-neighbour x2, 3x3 conv, LeakyReLU(0.2) (the authors' upconv block)."""
    for conv in convs:
        x = lrelu(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
    return x


@torch.no_grad()
def kaiming_init_(module: nn.Module, scale: float = 1.0) -> None:
    """The authors' init: kaiming-normal (fan_in, a=0) times `scale` for every conv and
    linear weight, zero biases, BatchNorm weight 1 / bias 0. Generators use scale 0.1,
    discriminators 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and m.weight.is_meta:
            continue  # built only for its shapes (checkpoint loading): nothing to fill
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            m.weight.mul_(scale)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()
