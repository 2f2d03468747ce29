"""SPSRNet: the SPSR generator (paper section 3.2), computing exactly what the authors' model does."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import gradient_map
from .blocks import (RRDB, add_upsampler, conv3x3, kaiming_init_, lrelu, upsample, upsampler_convs,
                     upsampling_steps)

AUTHORS_TAPS = (5, 10, 15, 20)
NUM_TAPS = 4

# SPSRNet's SR branch: the tensors it shares, by name and shape, with an RRDBNet of the same
# nf/nb/gc/scale (what the paper initialises from a PSNR-oriented RRDBNet). RRDBNet's
# conv_last (nf -> RGB) has no counterpart, like the authors' `model.10`.
SR_BRANCH_PREFIXES = ("conv_first.", "body.", "conv_body.", "conv_up", "conv_hr.")
RRDBNET_ONLY_PREFIXES = ("conv_last.",)


def default_taps(nb: int) -> tuple[int, ...]:
    """(5, 10, 15, 20) at nb=23, evenly spaced (step (nb + 2) // 5) otherwise."""
    step = max(1, (nb + 2) // 5)
    return tuple(min(nb, k * step) for k in range(1, NUM_TAPS + 1))


def check_taps(taps, nb: int) -> tuple[int, ...]:
    taps = tuple(taps)
    if (len(taps) != NUM_TAPS or any(isinstance(t, bool) or not isinstance(t, int) for t in taps)
            or list(taps) != sorted(taps) or taps[0] < 0 or taps[-1] > nb):
        raise ValueError(f"SPSRNet: taps must be {NUM_TAPS} non-decreasing block counts in "
                         f"[0, nb={nb}], got {taps!r}")
    return taps


def _modules_of(keys: list[str]) -> str:
    """'body.1, body.2, conv_up2' for tensor names: the modules they belong to (a container's
    numbered child, like body.1, counts as a module of its own)."""
    modules: dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        modules[".".join(parts[:2] if len(parts) > 2 and parts[1].isdigit() else parts[:1])] = None
    return ", ".join(modules)


def describe_mismatch(source, target, keys, unexpected=()) -> str:
    """'' when every key of `keys` is in `source` with its shape in `target`, else one line
    saying which modules miss tensors, which tensors differ in shape (two examples) and which
    modules of `unexpected` keys are foreign."""
    missing = [k for k in keys if k not in source]
    shapes = [f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}" for k in keys
              if k in source and tuple(source[k].shape) != tuple(target[k].shape)]
    unexpected = list(unexpected)
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensors of {_modules_of(missing)}")
    if shapes:
        parts.append(f"{len(shapes)} tensors differ in shape (source vs model), e.g. {'; '.join(shapes[:2])}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} tensors of {_modules_of(unexpected)}")
    return "; ".join(parts)


class SPSRNet(nn.Module):
    """SR branch + gradient branch + fusion. `forward(lr)` returns
    `(grad_branch_map, sr, lr_grad)`, like the authors' model.

    SR branch: conv_first -> nb RRDBs (nf) -> conv_body, long skip; x2 steps of
    nearest upsample + conv + LeakyReLU (conv_up1..); conv_hr + LeakyReLU;
    conv_hr_out (no activation) gives the SR features.

    Gradient branch: lr_grad = gradient_map(lr, padding=1); grad_conv_first; then
    four stages `grad_fuse[k](grad_blocks[k](cat[branch, trunk feature after taps[k]
    RRDBs]))` (RRDB at 2*nf channels, then a 3x3 conv 2*nf -> nf, no activation);
    grad_conv_body plus the skip from grad_conv_first; upsampling like the SR branch
    (grad_conv_up1..), grad_conv_hr + LeakyReLU, grad_conv_hr_out (no activation)
    gives the branch features, and the 1x1 grad_conv_out maps them to the gradient map.

    Fusion: fusion_block (RRDB at 2*nf) over cat[branch features, SR features],
    fusion_conv (2*nf -> nf, no activation), fusion_conv_hr + LeakyReLU, conv_last.

    `taps` (block counts, default (5, 10, 15, 20) at nb=23) choose which trunk
    features feed the gradient branch. The gradient extraction has no parameters.
    """

    arch = "SPSRNet"

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32,
                 scale: int = 4, taps=None):
        super().__init__()
        steps = upsampling_steps(scale, "SPSRNet: scale")
        if nb < 1:
            raise ValueError(f"SPSRNet: nb must be >= 1, got {nb!r}")
        taps = check_taps(default_taps(nb) if taps is None else taps, nb)
        self.config = dict(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale,
                           taps=list(taps))
        self.taps = taps
        self.steps = steps

        # SR branch
        self.conv_first = conv3x3(in_nc, nf)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = conv3x3(nf, nf)
        add_upsampler(self, "conv_up", steps, nf)
        self.conv_hr = conv3x3(nf, nf)
        self.conv_hr_out = conv3x3(nf, nf)

        # gradient branch
        self.grad_conv_first = conv3x3(in_nc, nf)
        self.grad_blocks = nn.ModuleList(RRDB(2 * nf, gc) for _ in range(NUM_TAPS))
        self.grad_fuse = nn.ModuleList(conv3x3(2 * nf, nf) for _ in range(NUM_TAPS))
        self.grad_conv_body = conv3x3(nf, nf)
        add_upsampler(self, "grad_conv_up", steps, nf)
        self.grad_conv_hr = conv3x3(nf, nf)
        self.grad_conv_hr_out = conv3x3(nf, nf)
        self.grad_conv_out = nn.Conv2d(nf, out_nc, 1)

        # fusion
        self.fusion_block = RRDB(2 * nf, gc)
        self.fusion_conv = conv3x3(2 * nf, nf)
        self.fusion_conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, out_nc)
        kaiming_init_(self, 0.1)

    @torch.no_grad()
    def load_sr_branch(self, source) -> list[str]:
        """Copies a (PSNR-pretrained) RRDBNet into the SR branch, as the paper initialises
        it: conv_first, the RRDBs, conv_body, the up convs and conv_hr share names and
        shapes; RRDBNet's conv_last (to RGB) has no counterpart. `source`: an RRDBNet or its
        state dict. Every SR-branch tensor must be there with this network's shape (nf, nb,
        gc and scale must match), else ValueError naming the keys; returns the copied keys."""
        if isinstance(source, nn.Module):
            if getattr(source, "unshuffle", 1) != 1:
                raise ValueError(f"load_sr_branch: an RRDBNet with pixel-unshuffle {source.unshuffle} "
                                 f"has no counterpart in SPSRNet's SR branch")
            source = source.state_dict()
        target = self.state_dict()
        keys = [k for k in target if k.startswith(SR_BRANCH_PREFIXES)]
        foreign = [k for k in source if not k.startswith(SR_BRANCH_PREFIXES + RRDBNET_ONLY_PREFIXES)]
        problem = describe_mismatch(source, target, keys, unexpected=foreign + [
            k for k in source if k.startswith(SR_BRANCH_PREFIXES) and k not in target])
        if problem:
            raise ValueError(f"load_sr_branch: the source does not fit this SPSRNet's SR branch "
                             f"(an RRDBNet with the same nf, nb, gc and scale is needed): {problem}")
        for key in keys:
            target[key].copy_(source[key])
        return keys

    def trunk(self, feat: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs the RRDBs and conv_body; returns (output, features after each tap)."""
        tapped, done = [], 0
        for tap in (*self.taps, len(self.body)):
            for i in range(done, tap):  # integer indexing keeps torch.compile graphs whole
                feat = self.body[i](feat)
            tapped.append(feat)
            done = tap
        return self.conv_body(feat), tapped[:-1]

    def forward(self, x: torch.Tensor):
        lr_grad = gradient_map(x, padding=1)

        feat = self.conv_first(x)
        trunk_out, tapped = self.trunk(feat)
        sr_feat = upsample(feat + trunk_out, upsampler_convs(self, "conv_up", self.steps))
        sr_feat = self.conv_hr_out(lrelu(self.conv_hr(sr_feat)))

        grad_first = self.grad_conv_first(lr_grad)
        branch = grad_first
        for block, fuse, trunk_feat in zip(self.grad_blocks, self.grad_fuse, tapped):
            branch = fuse(block(torch.cat((branch, trunk_feat), 1)))
        branch = self.grad_conv_body(branch) + grad_first
        branch = upsample(branch, upsampler_convs(self, "grad_conv_up", self.steps))
        branch = self.grad_conv_hr_out(lrelu(self.grad_conv_hr(branch)))
        grad_branch_map = self.grad_conv_out(branch)

        fused = self.fusion_conv(self.fusion_block(torch.cat((branch, sr_feat), 1)))
        sr = self.conv_last(lrelu(self.fusion_conv_hr(fused)))
        return grad_branch_map, sr, lr_grad
