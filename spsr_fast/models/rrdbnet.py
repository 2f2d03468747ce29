"""RRDBNet: the ESRGAN generator (also the SR-branch initialisation of SPSR)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (RRDB, add_upsampler, conv3x3, kaiming_init_, lrelu, upsample, upsampler_convs,
                     upsampling_steps)


class RRDBNet(nn.Module):
    """conv_first -> nb RRDBs -> conv_body, plus the long skip; then per x2 step a
    nearest upsample + conv + LeakyReLU; conv_hr + LeakyReLU; conv_last.

    Parameter names follow BasicSR (conv_first, body.N.rdb1.conv1, conv_body,
    conv_up1.., conv_hr, conv_last). `unshuffle` > 1 reproduces BasicSR's x2/x1
    models, which pixel-unshuffle the input and then upsample x4: the overall
    scale is 2**steps / unshuffle.
    """

    arch = "RRDBNet"

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32,
                 scale: int = 4, unshuffle: int = 1):
        super().__init__()
        if unshuffle not in (1, 2, 4):
            raise ValueError(f"RRDBNet: unshuffle must be 1, 2 or 4, got {unshuffle!r}")
        steps = upsampling_steps(scale * unshuffle, "RRDBNet: scale * unshuffle")
        self.config = dict(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale,
                           unshuffle=unshuffle)
        self.unshuffle = unshuffle
        self.conv_first = conv3x3(in_nc * unshuffle * unshuffle, nf)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = conv3x3(nf, nf)
        self.steps = steps
        add_upsampler(self, "conv_up", steps, nf)
        self.conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, out_nc)
        kaiming_init_(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = upsample(feat, upsampler_convs(self, "conv_up", self.steps))
        return self.conv_last(lrelu(self.conv_hr(feat)))
