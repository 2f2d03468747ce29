"""An RRDBNet that starts as an interpolating upscaler, for short training budgets.

    python -m spsr_fast.weights.identity_init OUT.safetensors --nf 32 --nb 2 --gc 16 [--scale 4]

The usual initialisation (every conv kaiming x 0.1, like the authors') makes the network's
output start near zero: most of a short PSNR run is then spent learning to pass the image
through. Here feature channels 0..2 carry the RGB input unchanged through conv_first and
the trunk (conv_body's rows for them are zero, the RRDBs are residual), each nearest x2
step is followed by a [1 2 1] x [1 2 1] / 16 blur on those channels (together: bilinear-like
interpolation; inputs in [0, 1] pass the LeakyReLUs unchanged), and conv_hr / conv_last
copy them out. The other channels of conv_first, the upsampling convs and conv_hr get
plain He initialisation (BasicSR's RRDBNet scales only the dense blocks by 0.1): with the
0.1 scale on every layer of that chain, their features reach conv_last about 1e-5 times
smaller than the image and wake up far too slowly for a short run. conv_last starts
reading only the RGB channels, so the first output is exactly the interpolation and
training learns the detail on top. Used with `model.pretrained`
(configs/default_model.yaml).

SPSRNet (`model.init: interpolating`, configs/tiny_cpu.yaml) gets the same route through its
SR branch, then through the fusion: the RGB channels sit at nf..nf+2 of the fusion RRDB's
input, whose conv5 rows for them are zero (each dense block passes them unchanged, so the
RRDB gives 1.2x them), and fusion_conv takes them back to channels 0..2 at 1/1.2. The
gradient branch keeps its own init and starts off the route.
"""
from __future__ import annotations

import argparse

import torch

from ..checkpoints import save_model
from ..models import RRDBNet, SPSRNet
from ..models.blocks import RESIDUAL_SCALE

_BLUR = torch.tensor([1.0, 2.0, 1.0])
_BLUR = torch.outer(_BLUR, _BLUR) / 16
_CENTRE = torch.zeros(3, 3)
_CENTRE[1, 1] = 1.0


def _route_rgb(conv: torch.nn.Conv2d, kernel: torch.Tensor, channels: int = 3, source: int = 0) -> None:
    """Output channel c < `channels` = `kernel` applied to input channel source + c, nothing
    else; the other output channels He-initialised (for LeakyReLU 0.2), zero bias."""
    torch.nn.init.kaiming_normal_(conv.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
    conv.bias.zero_()
    conv.weight[:channels].zero_()
    conv.bias[:channels].zero_()
    for c in range(channels):
        conv.weight[c, source + c] = kernel


def _route_sr_branch(net: RRDBNet | SPSRNet) -> None:
    """conv_first .. conv_hr: RGB on channels 0..2, upsampled by nearest + blur per step."""
    _route_rgb(net.conv_first, _CENTRE)
    net.conv_body.weight[:3].zero_()
    net.conv_body.bias[:3].zero_()
    for step in range(1, net.steps + 1):
        _route_rgb(getattr(net, f"conv_up{step}"), _BLUR)
    _route_rgb(net.conv_hr, _CENTRE)


@torch.no_grad()
def interpolating_init_(net: RRDBNet | SPSRNet) -> RRDBNet | SPSRNet:
    """Make `net` start as the interpolation (module docstring), in place."""
    if not isinstance(net, (RRDBNet, SPSRNet)):
        raise TypeError(f"interpolating init: expected an RRDBNet or SPSRNet, got {type(net).__name__}")
    _route_sr_branch(net)
    if isinstance(net, RRDBNet):
        _route_rgb(net.conv_last, _CENTRE)  # all 3 outputs routed: starts as the interpolation
        return net
    nf = net.conv_hr_out.out_channels
    _route_rgb(net.conv_hr_out, _CENTRE)
    for rdb in (net.fusion_block.rdb1, net.fusion_block.rdb2, net.fusion_block.rdb3):
        rdb.conv5.weight[nf:nf + 3].zero_()  # the SR branch's RGB passes each dense block as is
        rdb.conv5.bias[nf:nf + 3].zero_()
    _route_rgb(net.fusion_conv, _CENTRE / (1 + RESIDUAL_SCALE), source=nf)
    _route_rgb(net.fusion_conv_hr, _CENTRE)
    _route_rgb(net.conv_last, _CENTRE)
    return net


def interpolating_rrdbnet(nf: int = 32, nb: int = 2, gc: int = 16, scale: int = 4, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return interpolating_init_(RRDBNet(nf=nf, nb=nb, gc=gc, scale=scale))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsr_fast.weights.identity_init", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the safetensors file")
    parser.add_argument("--nf", type=int, default=32)
    parser.add_argument("--nb", type=int, default=2)
    parser.add_argument("--gc", type=int, default=16)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_model(interpolating_rrdbnet(args.nf, args.nb, args.gc, args.scale, args.seed), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
