"""Independent oracles for the RRDBNet layouts users have: ESRGAN's old single-Sequential
layout (model.N), ESRGAN's new layout (RRDB_trunk) and BasicSR's (body.N.rdb1).

Each layout gets a key/shape listing spelled out from that project's modules and a
functional forward that reads the state dict under that project's own names.
"""
from __future__ import annotations

import torch.nn.functional as F

from authors_spsr_oracle import conv, count, lrelu, rrdb, upsample2


def _conv(keys, name, cin, cout):
    keys[f"{name}.weight"] = (cout, cin, 3, 3)
    keys[f"{name}.bias"] = (cout,)


def _rrdb(keys, prefix, nf, gc, rdb_names, conv_suffix):
    for rdb in rdb_names:
        for i in range(1, 6):
            _conv(keys, f"{prefix}{rdb}.conv{i}{conv_suffix}", nf + (i - 1) * gc, gc if i < 5 else nf)


def esrgan_old_keys(nf, nb, gc, steps, in_nc=3, out_nc=3):
    """model = [fea_conv, Shortcut(RRDB * nb, LR_conv), (up, conv, act) * steps, HR_conv0, act, HR_conv1]."""
    keys = {}
    _conv(keys, "model.0", in_nc, nf)
    for i in range(nb):
        _rrdb(keys, f"model.1.sub.{i}.", nf, gc, ("RDB1", "RDB2", "RDB3"), ".0")
    _conv(keys, f"model.1.sub.{nb}", nf, nf)
    for k in range(1, steps + 1):
        _conv(keys, f"model.{3 * k}", nf, nf)
    _conv(keys, f"model.{3 * steps + 2}", nf, nf)
    _conv(keys, f"model.{3 * steps + 4}", nf, out_nc)
    return keys


def esrgan_old_forward(sd, x):
    nb = count(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
    steps = (count(sd, r"model\.(\d+)\.weight") - 1 - 4) // 3
    fea = conv(sd, "model.0", x)
    trunk = fea
    for i in range(nb):
        trunk = rrdb(sd, f"model.1.sub.{i}.", trunk)
    x = fea + conv(sd, f"model.1.sub.{nb}", trunk)  # ShortcutBlock: identity + sub
    for k in range(1, steps + 1):
        x = lrelu(conv(sd, f"model.{3 * k}", upsample2(x)))
    x = lrelu(conv(sd, f"model.{3 * steps + 2}", x))
    return conv(sd, f"model.{3 * steps + 4}", x)


def esrgan_new_keys(nf, nb, gc, steps=2, in_nc=3, out_nc=3):
    keys = {}
    _conv(keys, "conv_first", in_nc, nf)
    for i in range(nb):
        _rrdb(keys, f"RRDB_trunk.{i}.", nf, gc, ("RDB1", "RDB2", "RDB3"), "")
    _conv(keys, "trunk_conv", nf, nf)
    for k in range(1, steps + 1):
        _conv(keys, f"upconv{k}", nf, nf)
    _conv(keys, "HRconv", nf, nf)
    _conv(keys, "conv_last", nf, out_nc)
    return keys


def esrgan_new_forward(sd, x):
    nb = count(sd, r"RRDB_trunk\.(\d+)\.RDB1\.conv1\.weight")
    fea = conv(sd, "conv_first", x)
    trunk = fea
    for i in range(nb):
        trunk = rrdb(sd, f"RRDB_trunk.{i}.", trunk, conv_suffix="")
    fea = fea + conv(sd, "trunk_conv", trunk)
    k = 1
    while f"upconv{k}.weight" in sd:
        fea = lrelu(conv(sd, f"upconv{k}", upsample2(fea)))
        k += 1
    return conv(sd, "conv_last", lrelu(conv(sd, "HRconv", fea)))


def basicsr_keys(nf, nb, gc, scale=4, in_nc=3, out_nc=3):
    """BasicSR RRDBNet: always two x2 steps; x2 / x1 models pixel-unshuffle the input."""
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    keys = {}
    _conv(keys, "conv_first", in_nc * unshuffle ** 2, nf)
    for i in range(nb):
        _rrdb(keys, f"body.{i}.", nf, gc, ("rdb1", "rdb2", "rdb3"), "")
    _conv(keys, "conv_body", nf, nf)
    _conv(keys, "conv_up1", nf, nf)
    _conv(keys, "conv_up2", nf, nf)
    _conv(keys, "conv_hr", nf, nf)
    _conv(keys, "conv_last", nf, out_nc)
    return keys


def basicsr_forward(sd, x, scale=4):
    if scale in (1, 2):
        x = F.pixel_unshuffle(x, {2: 2, 1: 4}[scale])
    nb = count(sd, r"body\.(\d+)\.rdb1\.conv1\.weight")
    feat = conv(sd, "conv_first", x)
    body = feat
    for i in range(nb):
        body = rrdb(sd, f"body.{i}.", body, conv_suffix="", rdb_names=("rdb1", "rdb2", "rdb3"))
    feat = feat + conv(sd, "conv_body", body)
    feat = lrelu(conv(sd, "conv_up1", upsample2(feat)))
    feat = lrelu(conv(sd, "conv_up2", upsample2(feat)))
    return conv(sd, "conv_last", lrelu(conv(sd, "conv_hr", feat)))
