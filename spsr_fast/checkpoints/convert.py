"""Strict conversion between a foreign layout's state dict and ours, both ways."""
from __future__ import annotations

import torch
from torch import nn

from ..models import ARCHITECTURES
from .errors import CheckpointError, name_keys
from .layouts import Layout


def build(arch: str, config: dict, device="meta") -> nn.Module:
    """The network `arch` with `config`; on the meta device it costs no memory and no init."""
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    try:
        with torch.device(device):
            return ARCHITECTURES[arch](**config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot build {arch} with config {config}: {error}") from None


def describe(arch: str, config: dict) -> str:
    return f"{arch}(" + ", ".join(f"{k}={v}" for k, v in config.items()) + ")"


def check_fit(state_dict: dict, expected: dict[str, torch.Size], what: str,
              ignored=frozenset()) -> None:
    """Raises one CheckpointError naming every missing, unexpected and mis-shaped key."""
    problems = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in ignored]
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(shape)})"
                 for k, shape in expected.items()
                 if isinstance(state_dict.get(k), torch.Tensor) and state_dict[k].shape != shape]
    if missing:
        problems.append(f"{len(missing)} missing keys: {name_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {name_keys(unexpected)}")
    if not_tensors:
        problems.append(f"{len(not_tensors)} keys not holding tensors: {name_keys(not_tensors)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped keys: {name_keys(misshaped)}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def to_ours(state_dict: dict, layout: Layout, config: dict, source: str = "state dict") -> dict:
    """Our state dict for `layout`'s `state_dict`, after checking it strictly: every key
    named, none extra, every shape right, aliases equal, fixed tensors at their values."""
    model = build(layout.arch, config)
    ours = model.state_dict()
    mapping = {key: layout.rename(key, config) for key in ours}
    what = f"{source} ({layout.name} layout, {describe(layout.arch, config)})"

    state_dict = dict(state_dict)
    aliases = layout.aliases(config)
    for alias, canonical in aliases.items():
        if alias in state_dict and canonical in state_dict:
            if not torch.equal(state_dict.pop(alias), state_dict[canonical]):
                raise CheckpointError(f"{what}: {alias} and {canonical} must hold the same tensor "
                                      f"(one module under two names) but differ")
        elif alias in state_dict:
            state_dict[canonical] = state_dict.pop(alias)

    fixed = layout.fixed()
    expected = {mapping[key]: tensor.shape for key, tensor in ours.items()}
    expected.update({key: value.shape for key, value in fixed.items()})
    check_fit(state_dict, expected, what)
    for key, value in fixed.items():
        if not torch.equal(state_dict[key].to(value.dtype), value):
            raise CheckpointError(f"{what}: {key} must be the fixed kernel "
                                  f"{value.flatten().tolist()} but differs")
    return {key: state_dict[foreign] for key, foreign in mapping.items()}


def from_ours(model: nn.Module, layout: Layout) -> dict:
    """`model`'s state dict in `layout` (aliases and fixed tensors included)."""
    config = model.config
    if layout.arch != model.arch:
        raise CheckpointError(f"layout {layout.name} holds {layout.arch}, not {model.arch}")
    out = {layout.rename(key, config): value for key, value in model.state_dict().items()}
    for alias, canonical in layout.aliases(config).items():
        out[alias] = out[canonical]
    for key, value in layout.fixed().items():
        out[key] = value.clone()
    return out
