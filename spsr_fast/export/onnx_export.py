"""ONNX export: torch.export program -> torch.onnx (dynamo exporter) -> checked, standard-only
ONNX with metadata, written atomically."""
from __future__ import annotations

import importlib.util
import os
import re
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import __version__
from .deploy import (INPUT_NAME, ExportError, StaticShape, architecture, choose_outputs, deployment_model,
                     dynamic_shapes, example_input, trace)
from .files import atomic_path, check_destination
from .metadata import describe

# Opset 17 is the newest that TensorRT 8.6, OpenVINO 2022.3 LTS and ONNX Runtime >= 1.12 all
# read; every operator these networks use (Conv, LeakyRelu, Resize, Pad, ...) reached its final
# semantics by opset 13, so nothing is lost against newer opsets.
DEFAULT_OPSET = 17
# torch.onnx's dynamo exporter emits opset 18 natively, upgrading further with onnxscript.
EXPORTER_OPSET = 18
SUPPORTED_OPSETS = (17, 18, 19, 20, 21)
STANDARD_DOMAINS = ("", "ai.onnx")

# Operators whose opset-18 version only added optional inputs or attributes (ONNX Changelog,
# opset 18): a node that leaves them out means the same under opset 17. Pad-18 added the
# `axes` input; Resize-18 the `antialias`, `axes` and `keep_aspect_ratio_policy` attributes.
OPSET18_ADDITIONS = {
    "Pad": {"max_inputs": 3, "defaults": {}},
    "Resize": {"max_inputs": 4, "defaults": {"antialias": 0, "keep_aspect_ratio_policy": "stretch"}},
}


@dataclass
class OnnxExport:
    path: str
    opset: int
    outputs: tuple[str, ...]
    precision: str
    seconds: float
    bytes: int
    metadata: dict[str, str] = field(default_factory=dict)


def nonstandard_nodes(model) -> list[str]:
    """`domain::op` of every node (including in local functions) outside the standard domain."""
    nodes = list(model.graph.node) + [n for fn in model.functions for n in fn.node]
    return sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})


def _attribute_value(attribute):
    import onnx

    value = onnx.helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


def downgrade_18_to_17(model) -> None:
    """Rewrites an opset-18 model as opset 17 in place, where that changes no meaning.

    onnx.version_converter has no Pad 18 -> 17 adapter, and the exporter emits 18: every node
    whose operator changed in 18 must leave the additions unused (OPSET18_ADDITIONS), its
    default-valued new attributes are dropped; anything else is refused by name."""
    import onnx

    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS:
            continue
        try:
            schema17 = onnx.defs.get_schema(node.op_type, 17)
        except onnx.defs.SchemaError:
            raise ExportError(f"--opset 17: the graph uses {node.op_type}, which opset 17 does not have; "
                              f"export with --opset 18") from None
        if onnx.defs.get_schema(node.op_type, 18).since_version == schema17.since_version:
            continue
        rule = OPSET18_ADDITIONS.get(node.op_type)
        known = set(schema17.attributes)
        kept, refused = [], []
        for attribute in node.attribute:
            if attribute.name in known:
                kept.append(attribute)
            elif rule is None or rule["defaults"].get(attribute.name, object()) != _attribute_value(attribute):
                refused.append(attribute.name)
        if rule is None or refused or any(node.input[rule["max_inputs"]:]):
            raise ExportError(f"--opset 17: the graph's {node.op_type} node {node.name!r} uses what opset 18 "
                              f"added to it; export with --opset 18")
        del node.attribute[:]
        node.attribute.extend(kept)
        del node.input[rule["max_inputs"]:]
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            entry.version = 17


def _standard_only(model) -> None:
    """Refuses custom-domain nodes; drops opset imports of domains no node uses."""
    leftover = nonstandard_nodes(model)
    if leftover:
        raise ExportError(f"export: the ONNX graph has non-standard operators ({', '.join(leftover)})")
    if len(model.functions):
        raise ExportError("export: the ONNX graph has local functions; expected plain standard operators")
    kept = [entry for entry in model.opset_import if entry.domain in STANDARD_DOMAINS]
    del model.opset_import[:]
    model.opset_import.extend(kept)


AXIS_NAMES = {0: "batch", 2: "height", 3: "width"}


def _name_axes(onnx_program) -> None:
    """The input's symbolic dims ("s40", or "2*s40" for unshuffling models) become batch,
    height and width; output dims follow ("4*height")."""
    shape = onnx_program.model.graph.inputs[0].shape
    mapping = {}
    for axis, name in AXIS_NAMES.items():
        value = getattr(shape[axis], "value", None)  # static dims are plain ints
        symbols = set(re.findall(r"[A-Za-z_]\w*", value)) if isinstance(value, str) else set()
        if len(symbols) == 1:
            mapping[symbols.pop()] = name
    onnx_program.rename_axes(mapping)


def _strip_trace_metadata(model) -> None:
    """Drops the per-node metadata the exporter records (stack traces with the exporting
    machine's file paths, FX node text): a deployment file carries only the model's own."""
    graph = model.graph
    for item in (*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del item.metadata_props[:]
        item.doc_string = ""


def ir_version_for(opset: int) -> int:
    """The oldest ONNX IR version that carries `opset`: older runtimes refuse newer IR versions
    (ONNX Runtime 1.12 and TensorRT 8.6 read up to IR 8), and these graphs need nothing newer."""
    import onnx

    return min(ir for _, ir, ai_onnx, *_ in onnx.helper.VERSION_TABLE if ai_onnx >= opset)


def to_onnx(program, lr: torch.Tensor, outputs: tuple[str, ...], opset: int):
    """The checked ModelProto of an ExportedProgram at `opset`."""
    onnx_program = torch.onnx.export(program, (lr,), dynamo=True, opset_version=max(opset, EXPORTER_OPSET),
                                     input_names=[INPUT_NAME], output_names=list(outputs),
                                     external_data=False, optimize=True, verbose=False)
    _name_axes(onnx_program)
    model = onnx_program.model_proto
    _standard_only(model)
    _strip_trace_metadata(model)
    if opset == 17:
        downgrade_18_to_17(model)
    got = {e.version for e in model.opset_import if e.domain in STANDARD_DOMAINS}
    if got != {opset}:
        raise ExportError(f"--opset {opset}: the exporter produced opset {sorted(got)}")
    model.ir_version = ir_version_for(opset)
    return model


def export_onnx(model: nn.Module, path, *, outputs=None, precision: str = "fp32",
                static: StaticShape | None = None, opset: int = DEFAULT_OPSET, source=None,
                source_layout: str | None = None, overwrite: bool = False) -> OnnxExport:
    """Writes `model` (RRDBNet or SPSRNet) as a standard-operator ONNX file at `path`.

    The graph takes `lr` (float32 NCHW in [0, 1]; dynamic batch/height/width unless
    `static`) and returns the chosen outputs (`sr`, and `gradient` for SPSRNet) in
    float32; with precision "fp16" weights and activations are float16 inside.
    `source`: the checkpoint file, hashed into the metadata."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install onnx onnxscript "
                          f"(or pip install 'spsr-fast[export]')")
    import onnx

    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"--opset must be one of {', '.join(map(str, SUPPORTED_OPSETS))}, got {opset}")
    architecture(model)
    outputs = choose_outputs(model, outputs)
    path = check_destination(path, overwrite)
    start = time.perf_counter()
    wrapped = deployment_model(model, outputs, precision)
    lr = example_input(model, static)
    program = trace(wrapped, lr, dynamic_shapes(model, static))
    proto = to_onnx(program, lr, outputs, opset)
    meta = describe(model, outputs, precision, static, source, source_layout,
                    exporter=f"torch.onnx dynamo exporter (torch {torch.__version__})")
    meta["opset"] = str(opset)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "spsr-fast", __version__
    proto.doc_string = (f"spsr-fast {model.arch} x{model.config['scale']}: input {INPUT_NAME} "
                        f"({meta['input_format']}), outputs {', '.join(outputs)}")
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, tmp)
    return OnnxExport(str(path), opset, outputs, precision, time.perf_counter() - start,
                      os.path.getsize(path), meta)
