"""Neural structure extractor (paper section 4.1) and its two self-supervised heads (4.2)."""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import kaiming_init_

# Every ordering of a 2x2 grid of features: the jigsaw head's 24 classes, index = label.
JIGSAW_PERMUTATIONS = tuple(itertools.permutations(range(4)))

NSE_STRIDE = 4
NSE_RECEPTIVE_FIELD = 31


class NSE(nn.Module):
    """Six 3x3 conv layers with ReLU and two residual (identity) skips; output
    `out_channels` (32) structure features at 1/4 resolution (stride 4).

        stem:   conv/2 (in -> width) + ReLU
        block1: conv + ReLU, conv, + stem output, ReLU          (width channels, 1/2 res)
        down:   conv/2 (width -> out) + ReLU
        block2: conv + ReLU, conv, + down output                 (out channels, 1/4 res)

    The last layer has no ReLU, so features can point anywhere for the cosine
    similarity of contrastive prediction. Receptive field: 31x31 input pixels
    (NSE_RECEPTIVE_FIELD), neighbouring features 4 pixels apart (NSE_STRIDE): small
    enough for local structure, not object semantics. The paper describes
    "several residual blocks" with a small receptive field and stride 4, the
    exact layers are our choice. Input H and W should be multiples of 4.
    """

    arch = "NSE"

    def __init__(self, in_nc: int = 3, width: int = 64, out_channels: int = 32):
        super().__init__()
        self.config = dict(in_nc=in_nc, width=width, out_channels=out_channels)
        self.stem = nn.Conv2d(in_nc, width, 3, 2, 1)
        self.block1_conv1 = nn.Conv2d(width, width, 3, 1, 1)
        self.block1_conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.down = nn.Conv2d(width, out_channels, 3, 2, 1)
        self.block2_conv1 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.block2_conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        kaiming_init_(self, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(h + self.block1_conv2(F.relu(self.block1_conv1(h))))
        h = F.relu(self.down(h))
        return h + self.block2_conv2(F.relu(self.block2_conv1(h)))


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_features))


def _concatenated(features: torch.Tensor, count: int, channels: int, name: str) -> torch.Tensor:
    """(N, count, C) or (N, count * C) -> (N, count * C), with a clear error otherwise."""
    if features.dim() == 3 and features.shape[1:] == (count, channels):
        return features.flatten(1)
    if features.dim() == 2 and features.shape[1] == count * channels:
        return features
    raise ValueError(f"{name}: features must be (N, {count}, {channels}) or (N, {count * channels}), "
                     f"got {tuple(features.shape)}")


class ContrastivePredictor(nn.Module):
    """Autoregressive head for contrastive prediction: an MLP (3 linear layers, ReLU)
    over the concatenated structure features of `num_context` context positions,
    predicting the target position's `channels`-d feature."""

    arch = "ContrastivePredictor"

    def __init__(self, num_context: int = 3, channels: int = 32, hidden: int = 256):
        super().__init__()
        self.config = dict(num_context=num_context, channels=channels, hidden=hidden)
        self.num_context, self.channels = num_context, channels
        self.mlp = _mlp(num_context * channels, hidden, channels)
        kaiming_init_(self, 1.0)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.mlp(_concatenated(context, self.num_context, self.channels, "ContrastivePredictor"))


class JigsawHead(nn.Module):
    """Jigsaw classifier: three fully connected layers over 4 concatenated structure
    features (a 2x2 grid, shuffled) -> 24 logits, one per JIGSAW_PERMUTATIONS entry."""

    arch = "JigsawHead"

    def __init__(self, channels: int = 32, hidden: int = 256):
        super().__init__()
        self.config = dict(channels=channels, hidden=hidden)
        self.channels = channels
        self.mlp = _mlp(4 * channels, hidden, len(JIGSAW_PERMUTATIONS))
        kaiming_init_(self, 1.0)

    def forward(self, pieces: torch.Tensor) -> torch.Tensor:
        return self.mlp(_concatenated(pieces, 4, self.channels, "JigsawHead"))
