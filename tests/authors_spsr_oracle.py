"""An independent oracle for the SPSR authors' generator and discriminator.

Written from the authors' module structure (Maclory/SPSR, architecture.py and
block.py), not from spsr_fast: it runs straight off a state dict in *their* key
layout with plain torch.nn.functional calls, so a test can check that our SPSRNet,
loaded from the same state dict, computes the same numbers. The forward follows
theirs step by step: where the taps are, the order of every concatenation, nearest
upsampling, and which convs are followed by LeakyReLU(0.2) and which are not.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

TAPS = (5, 10, 15, 20)  # their forward hard-codes these block counts


def conv(sd, name, x, padding=1):
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=padding)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def upsample2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def dense_block(sd, prefix, x, conv_suffix):
    """ResidualDenseBlock_5C: convs `<prefix>conv{i}<suffix>`, LeakyReLU after 1..4."""
    grown = [x]
    for i in range(1, 5):
        grown.append(lrelu(conv(sd, f"{prefix}conv{i}{conv_suffix}", torch.cat(grown, 1))))
    return conv(sd, f"{prefix}conv5{conv_suffix}", torch.cat(grown, 1)) * 0.2 + x


def rrdb(sd, prefix, x, conv_suffix=".0", rdb_names=("RDB1", "RDB2", "RDB3")):
    out = x
    for name in rdb_names:
        out = dense_block(sd, f"{prefix}{name}.", out, conv_suffix)
    return out * 0.2 + x


def count(sd, pattern):
    return 1 + max(int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, k)))


def gradient_nopadding(sd, x):
    """Get_gradient_nopadding: per channel, the fixed 3x3 kernels with padding 1."""
    maps = []
    for c in range(x.shape[1]):
        xc = x[:, c:c + 1]
        v = F.conv2d(xc, sd["get_g_nopadding.weight_v"].to(x.dtype), padding=1)
        h = F.conv2d(xc, sd["get_g_nopadding.weight_h"].to(x.dtype), padding=1)
        maps.append(torch.sqrt(v ** 2 + h ** 2 + 1e-6))
    return torch.cat(maps, 1)


def spsr_forward(sd, x):
    """The authors' SPSRNet.forward over their state dict: (x_out_branch, x_out, x_grad)."""
    nb = count(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
    last_model_conv = max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    steps = (last_model_conv - 2) // 3  # model = [fea_conv, shortcut, (up, conv, act) * steps, HR_conv0_new]

    x_grad = gradient_nopadding(sd, x)
    x = conv(sd, "model.0", x)
    x_ori = x
    fea = []
    for i in range(nb):
        x = rrdb(sd, f"model.1.sub.{i}.", x)
        if i + 1 in TAPS:
            fea.append(x)
    x = conv(sd, f"model.1.sub.{nb}", x)  # LR_conv, the last entry of block_list
    x = x_ori + x
    for k in range(1, steps + 1):
        x = lrelu(conv(sd, f"model.{3 * k}", upsample2(x)))
    x = lrelu(conv(sd, f"model.{3 * steps + 2}", x))  # model.8 at x4, the same module as HR_conv0_new
    x = conv(sd, "HR_conv1_new.0", x)

    x_b_fea = conv(sd, "b_fea_conv.0", x_grad)
    branch = x_b_fea
    for k in range(1, 5):
        branch = rrdb(sd, f"b_block_{k}.", torch.cat([branch, fea[k - 1]], dim=1))
        branch = conv(sd, f"b_concat_{k}.0", branch)
    branch = conv(sd, "b_LR_conv.0", branch) + x_b_fea
    for k in range(1, steps + 1):  # b_module: (up, conv, act) * steps, conv, act, conv
        branch = lrelu(conv(sd, f"b_module.{3 * k - 2}", upsample2(branch)))
    branch = lrelu(conv(sd, f"b_module.{3 * steps}", branch))
    branch = conv(sd, f"b_module.{3 * steps + 2}", branch)
    x_out_branch = conv(sd, "conv_w.0", branch, padding=0)

    fused = rrdb(sd, "f_block.", torch.cat([branch, x], dim=1))
    fused = conv(sd, "f_concat.0", fused)
    fused = lrelu(conv(sd, "f_HR_conv0.0", fused))
    x_out = conv(sd, "f_HR_conv1.0", fused)
    return x_out_branch, x_out, x_grad


def spsr_keys(nf=64, nb=23, gc=32, steps=2, in_nc=3, out_nc=3):
    """{key: shape} of the authors' SPSRNet state dict (spelled out from their modules)."""
    keys = {}

    def add_conv(name, cin, cout, k=3):
        keys[f"{name}.weight"] = (cout, cin, k, k)
        keys[f"{name}.bias"] = (cout,)

    def add_rrdb(prefix, channels):
        for r in (1, 2, 3):
            for i in range(1, 6):
                add_conv(f"{prefix}RDB{r}.conv{i}.0", channels + (i - 1) * gc, gc if i < 5 else channels)

    add_conv("HR_conv0_new.0", nf, nf)
    add_conv("HR_conv1_new.0", nf, nf)
    add_conv("model.0", in_nc, nf)
    for i in range(nb):
        add_rrdb(f"model.1.sub.{i}.", nf)
    add_conv(f"model.1.sub.{nb}", nf, nf)
    for k in range(1, steps + 1):
        add_conv(f"model.{3 * k}", nf, nf)
    add_conv(f"model.{3 * steps + 2}", nf, nf)
    keys["get_g_nopadding.weight_h"] = (1, 1, 3, 3)
    keys["get_g_nopadding.weight_v"] = (1, 1, 3, 3)
    add_conv("b_fea_conv.0", in_nc, nf)
    for k in range(1, 5):
        add_conv(f"b_concat_{k}.0", 2 * nf, nf)
        add_rrdb(f"b_block_{k}.", 2 * nf)
    add_conv("b_LR_conv.0", nf, nf)
    for k in range(1, steps + 1):
        add_conv(f"b_module.{3 * k - 2}", nf, nf)
    add_conv(f"b_module.{3 * steps}", nf, nf)
    add_conv(f"b_module.{3 * steps + 2}", nf, nf)
    add_conv("conv_w.0", nf, out_nc, k=1)
    add_conv("f_concat.0", 2 * nf, nf)
    add_rrdb("f_block.", 2 * nf)
    add_conv("f_HR_conv0.0", nf, nf)
    add_conv("f_HR_conv1.0", nf, out_nc)
    return keys


KERNEL_V = [[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
KERNEL_H = [[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def random_weights(shapes: dict, seed: int, dtype=torch.float32) -> dict:
    """Random values for a {key: shape} layout: kaiming-like x0.1 weights (so a deep
    stack stays well scaled) and small non-zero biases (so a swapped bias shows)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("bias") or len(shape) == 1:
            sd[key] = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.02).to(dtype)
        else:
            fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else shape[1]
            sd[key] = (torch.randn(shape, generator=g, dtype=torch.float64)
                       * (2.0 / fan_in) ** 0.5 * 0.5).to(dtype)
    return sd


def authors_spsr_state_dict(shapes: dict, seed: int = 0, dtype=torch.float32) -> dict:
    """A state dict as the authors' model saves it: the alias model.<3*steps+2> is the
    same tensor as HR_conv0_new.0, and the gradient kernels hold their fixed values."""
    sd = random_weights(shapes, seed, dtype)
    last = max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    for kind in ("weight", "bias"):
        sd[f"model.{last}.{kind}"] = sd[f"HR_conv0_new.0.{kind}"]
    sd["get_g_nopadding.weight_v"] = torch.tensor([[KERNEL_V]], dtype=dtype)
    sd["get_g_nopadding.weight_h"] = torch.tensor([[KERNEL_H]], dtype=dtype)
    return sd


def vgg128_forward(sd, x, eps=1e-5):
    """Discriminator_VGG_128 in eval mode: features.N = conv [BN] LeakyReLU blocks,
    flatten in (C, H, W) order (their .view on a contiguous tensor), classifier."""
    convs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"features\.(\d+)\.weight", k))
                   and sd[k].dim() == 4)
    for i in convs:
        w = sd[f"features.{i}.weight"]
        stride = 2 if w.shape[-1] == 4 else 1
        x = F.conv2d(x, w, sd[f"features.{i}.bias"], stride=stride, padding=1)
        bn = f"features.{i + 1}"
        if f"{bn}.running_mean" in sd:
            x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"],
                             sd[f"{bn}.weight"], sd[f"{bn}.bias"], training=False, eps=eps)
        x = lrelu(x)
    x = x.contiguous().view(x.size(0), -1)
    x = lrelu(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    return F.linear(x, sd["classifier.2.weight"], sd["classifier.2.bias"])
