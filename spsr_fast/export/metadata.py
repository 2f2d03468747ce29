"""Metadata written into exported files, so a runtime user knows how to call them."""
from __future__ import annotations

import hashlib
import json
import os

import torch
from torch import nn

from .. import __version__
from .deploy import INPUT_NAME, StaticShape, input_multiple

COLOURS = {1: "grayscale", 3: "RGB", 4: "RGBA"}


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_description(name: str, out_nc: int) -> str:
    channels = COLOURS.get(out_nc, f"{out_nc}-channel")
    if name == "sr":
        return f"sr: float32 N x {out_nc} x (scale*H) x (scale*W), {channels}, nominal range [0, 1], not clamped"
    return (f"gradient: float32 N x {out_nc} x (scale*H) x (scale*W), the HR gradient map the gradient branch "
            f"predicts (per channel sqrt(v^2 + h^2 + 1e-6) of the SR image)")


def describe(model: nn.Module, outputs: tuple[str, ...], precision: str, static: StaticShape | None,
             source=None, source_layout: str | None = None, exporter: str = "") -> dict[str, str]:
    """String key/value pairs: ONNX metadata_props and the pt2 `spsr_fast.json` extra file."""
    config = model.config
    in_nc = config["in_nc"]
    multiple = input_multiple(model)
    if static:
        shape = f"static {static.batch} x {in_nc} x {static.height} x {static.width}"
    elif multiple > 1:  # the ONNX dims read "2*height": sides are multiples of 2
        shape = f"dynamic batch x {in_nc} x ({multiple}*height) x ({multiple}*width)"
    else:
        shape = f"dynamic batch x {in_nc} x height x width"
    meta = {
        "architecture": model.arch,
        "scale": str(config["scale"]),
        "nf": str(config["nf"]),
        "nb": str(config["nb"]),
        "gc": str(config["gc"]),
        "config": json.dumps(config, sort_keys=True),
        "input_name": INPUT_NAME,
        "input_format": f"float32 NCHW, {COLOURS.get(in_nc, f'{in_nc}-channel')}, range [0, 1]",
        "input_shape": shape,
        "input_multiple": str(multiple),
        "output_names": ",".join(outputs),
        "outputs": "; ".join(output_description(name, config["out_nc"]) for name in outputs),
        "precision": precision + (" (weights and activations; input and outputs float32)"
                                  if precision == "fp16" else ""),
        "spsr_fast_version": __version__,
        "torch_version": torch.__version__,
    }
    if exporter:
        meta["exporter"] = exporter
    if source is not None:
        meta["source_file"] = os.path.basename(str(source))
        meta["source_sha256"] = file_sha256(source)
    if source_layout:
        meta["source_layout"] = source_layout
    return meta
