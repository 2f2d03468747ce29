"""VGG-style discriminators: the authors' 128x128 one (images and gradient maps) and a
smaller one of the same family for NSE structure-feature maps."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import LRELU_SLOPE, kaiming_init_

FINAL_SIZE = 4  # spatial size the classifier sees


def _conv_bn_lrelu(in_channels, out_channels, kernel, stride, batch_norm=True):
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, 1, bias=True)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(LRELU_SLOPE, inplace=True))
    return layers


class VGGDiscriminator(nn.Module):
    """`features`: conv3x3 + LeakyReLU, conv4x4/2 + BN + LeakyReLU, then per further
    stage conv3x3 + BN + LeakyReLU and conv4x4/2 + BN + LeakyReLU; channels
    base_nf * (1, 2, 4, 8, 8, ...) capped at 8 * base_nf. `classifier`: Linear(C*4*4,
    100), LeakyReLU(0.2), Linear(100, 1). With input_size=128 this is the authors'
    Discriminator_VGG_128, state-dict keys included (features.N, classifier.0/2).

    Each 4x4/2 conv with padding 1 maps n to floor(n / 2), so an input of
    input_size + 2 (the 130x130 gradient maps of 128x128 patches) ends at 4x4 too.
    """

    arch = "VGGDiscriminator"

    def __init__(self, in_nc: int = 3, base_nf: int = 64, input_size: int = 128):
        super().__init__()
        stages = _halvings_to_final(input_size)
        self.config = dict(in_nc=in_nc, base_nf=base_nf, input_size=input_size)
        self.input_size = input_size
        layers = _conv_bn_lrelu(in_nc, base_nf, 3, 1, batch_norm=False)
        layers += _conv_bn_lrelu(base_nf, base_nf, 4, 2)
        channels = base_nf
        for stage in range(1, stages):
            wider = base_nf * min(2 ** stage, 8)
            layers += _conv_bn_lrelu(channels, wider, 3, 1)
            layers += _conv_bn_lrelu(wider, wider, 4, 2)
            channels = wider
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(channels * FINAL_SIZE * FINAL_SIZE, 100),
                                        nn.LeakyReLU(LRELU_SLOPE, inplace=True), nn.Linear(100, 1))
        kaiming_init_(self, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        if features.shape[-2:] != (FINAL_SIZE, FINAL_SIZE):
            raise ValueError(
                f"{type(self).__name__}: input of spatial size {tuple(x.shape[-2:])} gives "
                f"{tuple(features.shape[-2:])} features; it takes {self.input_size}x{self.input_size} "
                f"(or {self.input_size + 2}x{self.input_size + 2}) inputs")
        # flatten in (C, H, W) order whatever the memory format, like the authors' view()
        return self.classifier(torch.flatten(features, 1))


def _halvings_to_final(input_size: int) -> int:
    stages, size = 0, input_size
    while size > FINAL_SIZE and size % 2 == 0:
        size //= 2
        stages += 1
    if size != FINAL_SIZE or stages < 1:
        raise ValueError(f"VGGDiscriminator: input_size must be 4 * 2**k (k >= 1), got {input_size!r}")
    return stages


class VGGDiscriminator128(VGGDiscriminator):
    """The authors' Discriminator_VGG_128 (14,502,281 parameters at base_nf=64): for
    128x128 HR/SR patches and for their 130x130 gradient maps (padding 2)."""

    arch = "VGGDiscriminator"

    def __init__(self, in_nc: int = 3, base_nf: int = 64):
        super().__init__(in_nc=in_nc, base_nf=base_nf, input_size=128)


class FeatureDiscriminator(VGGDiscriminator):
    """Discriminator for NSE structure features (SPSR-P/J): 32 channels at 1/4 of the
    HR patch (32x32 for 128x128 patches). Our design, the paper gives none: the same
    VGG family with three stages (64, 128, 256 channels: 32 -> 16 -> 8 -> 4) and the
    same classifier, 2,175,689 parameters at the defaults."""

    arch = "VGGDiscriminator"

    def __init__(self, in_nc: int = 32, base_nf: int = 64, input_size: int = 32):
        super().__init__(in_nc=in_nc, base_nf=base_nf, input_size=input_size)
