"""What an exported file computes, and how it is traced.

`DeploymentModel` wraps a generator so that the traced graph is exactly the deployed
interface: one input `lr` (float32, N x C x H x W, RGB in [0, 1]) and the chosen named
outputs in float32, whatever precision the network runs in. Tracing happens under the
`reference` backend of spsr_fast.ops, so the fused ops lower to their plain-PyTorch
decompositions (docs/ARCHITECTURE.md 2.1, 2.2) and the program holds only ATen ops.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import ops

INPUT_NAME = "lr"
# Each architecture's outputs, in the order the exported graph returns them.
OUTPUTS = {"RRDBNet": ("sr",), "SPSRNet": ("sr", "gradient")}
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
# torch.export specialises a dimension of size 0 or 1 to a constant: trace with 2 images.
EXAMPLE_BATCH = 2
EXAMPLE_SIDE = 16


class ExportError(ValueError):
    """A model, option or file that cannot be exported; the message says what can."""


def architecture(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    if arch not in OUTPUTS:
        raise ExportError(f"export: supports the generators {', '.join(OUTPUTS)}; got "
                          f"{arch or type(model).__name__}")
    return arch


def choose_outputs(model: nn.Module, requested=None) -> tuple[str, ...]:
    """The outputs to export, in the graph's fixed order (`requested`: names, or None for all)."""
    available = OUTPUTS[architecture(model)]
    if requested is None:
        return available
    requested = [name.strip() for name in requested if name.strip()]
    unknown = [name for name in requested if name not in available]
    if unknown or not requested:
        raise ExportError(f"--outputs: {model.arch} has the outputs {', '.join(available)}; got "
                          f"{', '.join(requested) or 'none'}")
    return tuple(name for name in available if name in requested)


def input_multiple(model: nn.Module) -> int:
    """Input sides must be multiples of this (BasicSR x2/x1 RRDBNets pixel-unshuffle their input)."""
    return int(model.config.get("unshuffle", 1))


@dataclass(frozen=True)
class StaticShape:
    batch: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}"


def parse_static(text: str) -> StaticShape:
    """`HxW` (batch 1) or `NxHxW`, positive integers."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise ExportError(f"--static: expected HxW or NxHxW with positive integers (e.g. 256x256), got {text!r}")
    return StaticShape(*([1] + sizes if len(sizes) == 2 else sizes))


class DeploymentModel(nn.Module):
    """lr (float32) -> the chosen outputs (float32), the network computing in `dtype`.

    SPSRNet's forward gives (grad_branch_map, sr, lr_grad); `gradient` is the first, the
    HR gradient map its gradient branch predicts."""

    def __init__(self, network: nn.Module, outputs: tuple[str, ...], dtype: torch.dtype):
        super().__init__()
        self.network = network
        self.outputs = outputs
        self.dtype = dtype

    def forward(self, lr: torch.Tensor):
        result = self.network(lr.to(self.dtype))
        if isinstance(result, tuple):
            named = {"gradient": result[0], "sr": result[1]}
        else:
            named = {"sr": result}
        # fp16 graphs return float32: callers get the same type from every file, and
        # nothing downstream rounds or overflows in half precision.
        values = tuple(named[name].to(torch.float32) for name in self.outputs)
        return values[0] if len(values) == 1 else values


def deployment_model(model: nn.Module, outputs: tuple[str, ...], precision: str) -> DeploymentModel:
    """A CPU copy of `model` in eval mode and `precision`, wrapped; `model` is left as it is."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    network = copy.deepcopy(model).to(device="cpu", dtype=PRECISIONS[precision],
                                      memory_format=torch.contiguous_format).eval()
    network.requires_grad_(False)
    return DeploymentModel(network, outputs, PRECISIONS[precision]).eval()


def example_input(model: nn.Module, static: StaticShape | None) -> torch.Tensor:
    multiple = input_multiple(model)
    if static is not None:
        if static.height % multiple or static.width % multiple:
            raise ExportError(f"--static: this model pixel-unshuffles its input by {multiple}, so height and "
                              f"width must be multiples of {multiple}; got {static.height}x{static.width}")
        shape = (static.batch, model.config["in_nc"], static.height, static.width)
    else:
        side = EXAMPLE_SIDE * multiple
        shape = (EXAMPLE_BATCH, model.config["in_nc"], side, side)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def dynamic_shapes(model: nn.Module, static: StaticShape | None):
    """torch.export dynamic_shapes for `lr`: batch, height and width free unless static.
    Unshuffling models take sides `multiple * k` (torch.export proves the reshape needs it)."""
    if static is not None:
        return None
    from torch.export import Dim

    multiple = input_multiple(model)
    height, width = Dim("height", min=1), Dim("width", min=1)
    if multiple > 1:
        height, width = multiple * height, multiple * width
    return {"lr": {0: Dim("batch", min=1), 2: height, 3: width}}


def foreign_ops(program) -> list[str]:
    """Operators of an ExportedProgram outside ATen/Python builtins (e.g. spsr_fast::...)."""
    found = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        namespace = getattr(node.target, "namespace", None)
        if namespace is not None and namespace not in ("aten", "prims"):
            found.add(str(node.target))
    return sorted(found)


def trace(wrapped: DeploymentModel, lr: torch.Tensor, shapes):
    """torch.export of the wrapped model with the fused ops lowered to their references."""
    with ops.backend("reference"), torch.no_grad():
        program = torch.export.export(wrapped, (lr,), dynamic_shapes=shapes, strict=False)
    leftover = foreign_ops(program)
    if leftover:
        raise ExportError(f"export: the traced program still calls non-ATen ops ({', '.join(leftover)}); "
                          f"the fused ops were expected to lower to their references")
    return program
