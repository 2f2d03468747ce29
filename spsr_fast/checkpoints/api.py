"""load_model / save_model / inspect_checkpoint / export_state_dict."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from ..models import ARCHITECTURES
from .convert import build, check_fit, describe, from_ours, to_ours
from .errors import CheckpointError
from .files import RawCheckpoint, read_checkpoint, write_safetensors_atomic, write_torch_atomic
from .layouts import LAYOUTS_BY_NAME, detect_layout

OUR_LAYOUT = "spsr_fast"
FORMAT_VERSION = "1"
# safetensors metadata keys of our files ("format": "pt" is the safetensors convention)
META_ARCH, META_CONFIG, META_VERSION = "spsr_fast.arch", "spsr_fast.config", "spsr_fast.format_version"


@dataclass(frozen=True)
class CheckpointInfo:
    layout: str  # "spsr_fast" for our files, else a name from layouts.LAYOUTS
    arch: str
    config: dict
    wrapper: str | None = None  # e.g. "params_ema" when the weights sat under that key


def _ours(raw: RawCheckpoint, path) -> CheckpointInfo | None:
    meta = raw.metadata
    if META_ARCH not in meta:
        return None
    if meta.get(META_VERSION) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: spsr_fast format version {meta.get(META_VERSION)!r}, "
                              f"this version reads {FORMAT_VERSION}")
    try:
        config = json.loads(meta[META_CONFIG])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: spsr_fast metadata is damaged ({error})") from None
    return CheckpointInfo(OUR_LAYOUT, meta[META_ARCH], config)


def _resolve(path, state_key=None) -> tuple[CheckpointInfo, dict]:
    """What `path` holds, and its weights as our state dict (checked strictly)."""
    raw = read_checkpoint(path, state_key)
    info = _ours(raw, path)
    if info is not None:
        model = build(info.arch, info.config)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        check_fit(raw.state_dict, expected,
                  f"{path} ({OUR_LAYOUT} layout, {describe(info.arch, info.config)})")
        return info, raw.state_dict
    try:
        layout = LAYOUTS_BY_NAME[detect_layout(raw.state_dict)]
        config = layout.infer_config(raw.state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    info = CheckpointInfo(layout.name, layout.arch, config, raw.wrapper)
    return info, to_ours(raw.state_dict, layout, config, source=str(path))


def inspect_checkpoint(path, state_key: str | None = None) -> CheckpointInfo:
    """The layout, architecture and config of the checkpoint at `path` (fully checked)."""
    return _resolve(path, state_key)[0]


def load_model(path, device=None, state_key: str | None = None) -> nn.Module:
    """Rebuilds the network stored at `path` and loads its weights (fp32, eval mode).

    Reads our safetensors files (the config is in their metadata) and, detected from
    the keys, the authors' SPSR generator, ESRGAN old/new and BasicSR RRDBNets, the
    authors' VGG discriminator, plain .pth state dicts and dicts wrapping one
    (params_ema preferred over params; `state_key` picks another). Always
    weights_only; any missing, unexpected or mis-shaped key raises CheckpointError.
    """
    info, state_dict = _resolve(path, state_key)
    # Module.to_empty goes through torch._refs on meta tensors, which imports sympy (~0.3 s of
    # every CLI run); plain torch.empty allocates the same uninitialised storage.
    model = build(info.arch, info.config)._apply(
        lambda t: torch.empty(t.shape, dtype=t.dtype, device=device or "cpu"))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _unwrapped(model: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel keep the network in .module, torch.compile in ._orig_mod
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_model(model: nn.Module, path, layout: str = OUR_LAYOUT) -> None:
    """Writes `model` atomically. Default: safetensors with arch and config in the
    metadata, so load_model(path) needs no flags. `layout=` a foreign layout name
    (e.g. "authors_spsr", "esrgan_old") writes a torch.save state dict in that layout."""
    model = _unwrapped(model)
    arch = getattr(model, "arch", None)
    if arch not in ARCHITECTURES or not hasattr(model, "config"):
        raise TypeError(f"save_model: model must be one of {', '.join(ARCHITECTURES)}, "
                        f"got {type(model).__name__}")
    if layout != OUR_LAYOUT:
        write_torch_atomic(export_state_dict(model, layout), path)
        return
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", META_VERSION: FORMAT_VERSION, META_ARCH: arch,
                META_CONFIG: json.dumps(model.config)}
    write_safetensors_atomic(tensors, path, metadata)


def export_state_dict(model: nn.Module, layout: str) -> dict[str, torch.Tensor]:
    """`model`'s weights as a state dict in a foreign layout (see layouts.LAYOUTS)."""
    if layout not in LAYOUTS_BY_NAME:
        raise ValueError(f"export_state_dict: layout must be one of {', '.join(LAYOUTS_BY_NAME)}, "
                         f"got {layout!r}")
    return from_ours(_unwrapped(model), LAYOUTS_BY_NAME[layout])
