"""The foreign state-dict layouts we load: how to recognise each, infer the network's
config from its keys and shapes, and name each of our keys in it.

A layout maps every key of our network (for a given config) to exactly one key of its
own, by regular-expression rules; `aliases` name extra keys that hold the same tensor
as another (the authors' `model.8` is `HR_conv0_new.0`), and `fixed` names
non-trainable tensors that must hold known values (the authors' gradient kernels).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from ..models.spsrnet import AUTHORS_TAPS
from .errors import CheckpointError

Rule = tuple[str, object]  # (regex over our key, template string or fn(match) -> str)


@dataclass(frozen=True)
class Layout:
    name: str
    arch: str
    description: str
    matches: Callable[[set], bool]
    infer_config: Callable[[dict], dict]
    rules: Callable[[dict], list]  # config -> [Rule]
    aliases: Callable[[dict], dict] = lambda config: {}  # alias key -> canonical key
    fixed: Callable[[], dict] = lambda: {}  # key -> required tensor value
    notes: str = ""

    def rename(self, our_key: str, config: dict) -> str:
        for pattern, target in self.rules(config):
            m = re.fullmatch(pattern, our_key)
            if m:
                return target(m) if callable(target) else m.expand(target)
        raise KeyError(f"layout {self.name} has no name for {our_key}")


# ---------------------------------------------------------------------------- helpers

def _indices(keys, pattern: str) -> list[int]:
    """Sorted distinct integers captured by group 1 of `pattern` over `keys`."""
    found = {int(m.group(1)) for k in keys if (m := re.fullmatch(pattern, k))}
    return sorted(found)


def _shape(sd: dict, key: str, layout: str) -> tuple:
    if key not in sd:
        raise CheckpointError(f"{layout} layout: key {key} is missing, cannot infer the network")
    return tuple(sd[key].shape)


def _count_blocks(sd, pattern, layout) -> int:
    blocks = _indices(sd, pattern)
    if not blocks:
        raise CheckpointError(f"{layout} layout: no RRDB blocks found")
    return blocks[-1] + 1  # a gap shows up as missing keys in the strict check


def _unshuffle_from(conv_first_in: int, out_nc: int, layout: str) -> tuple[int, int]:
    """BasicSR x2/x1 models pixel-unshuffle the input: conv_first sees in_nc * u * u channels."""
    for u in (1, 2, 4):
        if conv_first_in == out_nc * u * u:
            return out_nc, u
    return conv_first_in, 1


def _rrdb_rule(ours: str, theirs: str, conv_suffix: str, index_offset: int = 0) -> Rule:
    """Our RRDB parameters `<ours>rdb{r}.conv{c}.{w}` -> `<theirs>RDB{r}.conv{c}<suffix>.{w}`.
    `ours` may capture a block index, which fills `theirs`' {} (plus index_offset)."""
    pattern = rf"{ours}rdb(\d)\.conv(\d)\.(weight|bias)"

    def target(m):
        *block, rdb, conv, kind = m.groups()
        head = theirs.format(*(int(i) + index_offset for i in block))
        return f"{head}RDB{rdb}.conv{conv}{conv_suffix}.{kind}"
    return pattern, target


P = r"\.(weight|bias)"  # a conv's parameters


def _renamed(ours: str, theirs: str) -> Rule:
    return rf"{re.escape(ours)}{P}", rf"{theirs}.\1"


# ---------------------------------------------------------------------------- RRDBNet

def _rrdbnet_config(sd, layout, first, last, block_pattern, block_conv1, up_pattern) -> dict:
    nf, conv_first_in = _shape(sd, first, layout)[:2]
    out_nc = _shape(sd, last, layout)[0]
    nb = _count_blocks(sd, block_pattern, layout)
    gc = _shape(sd, block_conv1, layout)[0]
    steps = len(_indices(sd, up_pattern))
    in_nc, unshuffle = _unshuffle_from(conv_first_in, out_nc, layout)
    if (2 ** steps) % unshuffle:
        raise CheckpointError(f"{layout} layout: {steps} upsampling steps cannot undo a "
                              f"pixel-unshuffle by {unshuffle}")
    return dict(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=2 ** steps // unshuffle,
                unshuffle=unshuffle)


BASICSR = Layout(
    name="basicsr",
    arch="RRDBNet",
    description="BasicSR / Real-ESRGAN RRDBNet (conv_first, body.N.rdb1.conv1, conv_body, "
                "conv_up1/2, conv_hr, conv_last; also spsr-fast's own RRDBNet state dict)",
    matches=lambda keys: "conv_first.weight" in keys and "body.0.rdb1.conv1.weight" in keys
    and "grad_conv_first.weight" not in keys,
    infer_config=lambda sd: _rrdbnet_config(sd, "basicsr", "conv_first.weight", "conv_last.weight",
                                            r"body\.(\d+)\.rdb1\.conv1\.weight",
                                            "body.0.rdb1.conv1.weight", r"conv_up(\d+)\.weight"),
    rules=lambda config: [(r"(.*)", r"\1")],
)

ESRGAN_NEW = Layout(
    name="esrgan_new",
    arch="RRDBNet",
    description="ESRGAN RRDBNet, new layout (conv_first, RRDB_trunk.N.RDB1.conv1, trunk_conv, "
                "upconv1/2, HRconv, conv_last)",
    matches=lambda keys: "RRDB_trunk.0.RDB1.conv1.weight" in keys,
    infer_config=lambda sd: _rrdbnet_config(sd, "esrgan_new", "conv_first.weight", "conv_last.weight",
                                            r"RRDB_trunk\.(\d+)\.RDB1\.conv1\.weight",
                                            "RRDB_trunk.0.RDB1.conv1.weight", r"upconv(\d+)\.weight"),
    rules=lambda config: [
        _rrdb_rule(r"body\.(\d+)\.", "RRDB_trunk.{}.", ""),
        _renamed("conv_body", "trunk_conv"),
        (rf"conv_up(\d+){P}", r"upconv\1.\2"),
        _renamed("conv_hr", "HRconv"),
        (r"(conv_first|conv_last)\.(weight|bias)", r"\1.\2"),
    ],
)


def _old_steps(sd, layout: str) -> int:
    """The Sequential `model` of ESRGAN's old layout and of the authors' SPSRNet: index 0
    fea_conv, 1 the trunk, then (upsample, conv, LeakyReLU) per x2 step, so the up
    convs sit at model.3, model.6, ...: their count is the number of steps."""
    if "model.0.weight" not in sd:
        raise CheckpointError(f"{layout} layout: key model.0.weight is missing, cannot infer the network")
    steps = 0
    while f"model.{3 * (steps + 1)}.weight" in sd:
        steps += 1
    return steps


def _esrgan_old_config(sd) -> dict:
    steps = _old_steps(sd, "esrgan_old")
    nf, conv_first_in = _shape(sd, "model.0.weight", "esrgan_old")[:2]
    out_nc = _shape(sd, f"model.{3 * steps + 4}.weight", "esrgan_old")[0]
    return dict(in_nc=conv_first_in, out_nc=out_nc, nf=nf,
                nb=_count_blocks(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight", "esrgan_old"),
                gc=_shape(sd, "model.1.sub.0.RDB1.conv1.0.weight", "esrgan_old")[0],
                scale=2 ** steps, unshuffle=1)


def _old_trunk_rules(config) -> list:
    return [
        (rf"conv_first{P}", r"model.0.\1"),
        _rrdb_rule(r"body\.(\d+)\.", "model.1.sub.{}.", ".0"),
        (rf"conv_body{P}", rf"model.1.sub.{config['nb']}.\1"),
        (rf"conv_up(\d+){P}", lambda m: f"model.{3 * int(m[1])}.{m[2]}"),
    ]


ESRGAN_OLD = Layout(
    name="esrgan_old",
    arch="RRDBNet",
    description="ESRGAN RRDBNet, old layout (one Sequential: model.0, model.1.sub.N.RDB1.conv1.0, "
                "model.3, model.6, model.8, model.10 at x4)",
    matches=lambda keys: "model.0.weight" in keys and "model.1.sub.0.RDB1.conv1.0.weight" in keys,
    infer_config=_esrgan_old_config,
    rules=lambda config: _old_trunk_rules(config) + [
        (rf"conv_hr{P}", lambda m, s=_steps(config): f"model.{3 * s + 2}.{m[1]}"),
        (rf"conv_last{P}", lambda m, s=_steps(config): f"model.{3 * s + 4}.{m[1]}"),
    ],
)


def _steps(config) -> int:
    return (config["scale"] * config.get("unshuffle", 1)).bit_length() - 1


# ---------------------------------------------------------------------------- SPSRNet

GRADIENT_KERNEL_V = torch.tensor([[[[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])
GRADIENT_KERNEL_H = torch.tensor([[[[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]])


def _authors_config(sd) -> dict:
    layout = "authors_spsr"
    steps = _old_steps(sd, layout)
    nf, in_nc = _shape(sd, "model.0.weight", layout)[:2]
    nb = _count_blocks(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight", layout)
    if nb < AUTHORS_TAPS[-1]:
        raise CheckpointError(f"{layout} layout: the authors' SPSRNet taps RRDBs "
                              f"{', '.join(map(str, AUTHORS_TAPS))} and needs nb >= {AUTHORS_TAPS[-1]}, "
                              f"this checkpoint has nb={nb}")
    return dict(in_nc=in_nc, out_nc=_shape(sd, "f_HR_conv1.0.weight", layout)[0], nf=nf, nb=nb,
                gc=_shape(sd, "model.1.sub.0.RDB1.conv1.0.weight", layout)[0], scale=2 ** steps,
                taps=list(AUTHORS_TAPS))


def _authors_rules(config) -> list:
    steps = _steps(config)
    return _old_trunk_rules(config) + [
        (rf"conv_hr{P}", r"HR_conv0_new.0.\1"),
        (rf"conv_hr_out{P}", r"HR_conv1_new.0.\1"),
        (rf"grad_conv_first{P}", r"b_fea_conv.0.\1"),
        _rrdb_rule(r"grad_blocks\.(\d+)\.", "b_block_{}.", ".0", index_offset=1),
        (rf"grad_fuse\.(\d+){P}", lambda m: f"b_concat_{int(m[1]) + 1}.0.{m[2]}"),
        (rf"grad_conv_body{P}", r"b_LR_conv.0.\1"),
        (rf"grad_conv_up(\d+){P}", lambda m: f"b_module.{3 * int(m[1]) - 2}.{m[2]}"),
        (rf"grad_conv_hr{P}", rf"b_module.{3 * steps}.\1"),
        (rf"grad_conv_hr_out{P}", rf"b_module.{3 * steps + 2}.\1"),
        (rf"grad_conv_out{P}", r"conv_w.0.\1"),
        _rrdb_rule(r"fusion_block\.", "f_block.", ".0"),
        (rf"fusion_conv{P}", r"f_concat.0.\1"),
        (rf"fusion_conv_hr{P}", r"f_HR_conv0.0.\1"),
        (rf"conv_last{P}", r"f_HR_conv1.0.\1"),
    ]


AUTHORS_SPSR = Layout(
    name="authors_spsr",
    arch="SPSRNet",
    description="the SPSR authors' SPSRNet (Maclory/SPSR: model.N, b_block_K, f_block, ...; "
                "model.8 is an alias of HR_conv0_new.0, get_g_nopadding.weight_h/_v are fixed kernels)",
    matches=lambda keys: any(k.startswith(("b_fea_conv.", "get_g_nopadding.", "f_HR_conv1."))
                             for k in keys),
    infer_config=_authors_config,
    rules=_authors_rules,
    aliases=lambda config: {f"model.{3 * _steps(config) + 2}.{kind}": f"HR_conv0_new.0.{kind}"
                            for kind in ("weight", "bias")},
    fixed=lambda: {"get_g_nopadding.weight_h": GRADIENT_KERNEL_H,
                   "get_g_nopadding.weight_v": GRADIENT_KERNEL_V},
)


def _spsrnet_config(sd) -> dict:
    layout = "spsr_fast_spsrnet"
    nf, in_nc = _shape(sd, "conv_first.weight", layout)[:2]
    return dict(in_nc=in_nc, out_nc=_shape(sd, "conv_last.weight", layout)[0], nf=nf,
                nb=_count_blocks(sd, r"body\.(\d+)\.rdb1\.conv1\.weight", layout),
                gc=_shape(sd, "body.0.rdb1.conv1.weight", layout)[0],
                scale=2 ** len(_indices(sd, r"conv_up(\d+)\.weight")))


SPSRNET_PLAIN = Layout(
    name="spsr_fast_spsrnet",
    arch="SPSRNet",
    description="spsr-fast's own SPSRNet as a plain state dict (taps take their default; "
                "our safetensors files store them)",
    matches=lambda keys: "grad_conv_first.weight" in keys,
    infer_config=_spsrnet_config,
    rules=lambda config: [(r"(.*)", r"\1")],
)


# ---------------------------------------------------------------------------- discriminator

def _vgg_config(sd) -> dict:
    layout = "vgg_discriminator"
    base_nf, in_nc = _shape(sd, "features.0.weight", layout)[:2]
    strided = [k for k, v in sd.items() if re.fullmatch(r"features\.\d+\.weight", k)
               and v.dim() == 4 and v.shape[-1] == 4]
    return dict(in_nc=in_nc, base_nf=base_nf, input_size=4 * 2 ** len(strided))


VGG_DISCRIMINATOR = Layout(
    name="vgg_discriminator",
    arch="VGGDiscriminator",
    description="VGG-style discriminator (the authors' Discriminator_VGG_128: features.N, classifier.0/2)",
    matches=lambda keys: "features.0.weight" in keys and "classifier.0.weight" in keys,
    infer_config=_vgg_config,
    rules=lambda config: [(r"(.*)", r"\1")],
)


# Detection order matters: the first layout whose signature matches wins.
LAYOUTS = (AUTHORS_SPSR, SPSRNET_PLAIN, ESRGAN_OLD, ESRGAN_NEW, BASICSR, VGG_DISCRIMINATOR)
LAYOUTS_BY_NAME = {layout.name: layout for layout in LAYOUTS}


def detect_layout(state_dict) -> str:
    """The name of the layout `state_dict` is in (see LAYOUTS); CheckpointError if none."""
    keys = set(state_dict)
    for layout in LAYOUTS:
        if layout.matches(keys):
            return layout.name
    sample = sorted(keys)[:6]
    raise CheckpointError(f"unrecognised checkpoint layout ({len(keys)} keys, e.g. {', '.join(sample)}); "
                          f"known layouts: {', '.join(LAYOUTS_BY_NAME)}")
