"""Run an exported file in the runtimes users deploy with and compare with spsr-fast.

fp32 files must match spsr-fast's own fp32 output within FP32_TOLERANCE (max abs). fp16
files are held to the project's half-precision rule: their error against the float64 truth
may be at most twice that of the plain PyTorch fp16 computation (plus one fp16 ulp of the
largest value); their error against fp32 is reported alongside."""
from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import ops
from .deploy import INPUT_NAME, ExportError, StaticShape, input_multiple

FP32_TOLERANCE = 1e-4
ONNX_RUNTIMES = ("onnxruntime", "openvino")
# Two shapes per dynamic file: a different batch, height, width and aspect ratio each.
DYNAMIC_SHAPES = ((1, 16, 16), (2, 24, 20))


@dataclass
class Check:
    runtime: str
    shape: tuple[int, ...]
    output: str
    error: float  # max |file - reference|: spsr-fast fp32 (fp32 files) or the float64 truth (fp16)
    limit: float
    error_vs_fp32: float  # max |file - spsr-fast fp32|

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error <= self.limit

    def __str__(self) -> str:
        shape = "x".join(map(str, self.shape))
        return (f"{self.runtime:<12} {shape:<12} {self.output:<9} max abs error {self.error:.3g} "
                f"(limit {self.limit:.3g}; vs spsr-fast fp32 {self.error_vs_fp32:.3g}) "
                f"{'ok' if self.ok else 'FAILED'}")


def missing_runtime(name: str) -> str | None:
    """Why `name` cannot run here, or None."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch.export": "torch",
              "aotinductor": "torch"}[name]
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install {module})"
    return None


def check_inputs(model: nn.Module, static: StaticShape | None, seed: int = 0) -> list[torch.Tensor]:
    """Inputs in [0, 1] at the static shape, or at two different dynamic shapes."""
    multiple, channels = input_multiple(model), model.config["in_nc"]
    shapes = ([(static.batch, static.height, static.width)] if static else
              [(n, h * multiple, w * multiple) for n, h, w in DYNAMIC_SHAPES])
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand((n, channels, h, w), generator=generator) for n, h, w in shapes]


def torch_outputs(model: nn.Module, lr: torch.Tensor, dtype: torch.dtype = torch.float32,
                  backend: str | None = None) -> dict[str, np.ndarray]:
    """spsr-fast's outputs by name, computed in `dtype` (float64 for fp16's truth)."""
    network = model
    if next(model.parameters()).dtype != dtype:
        network = copy.deepcopy(model).to("cpu", dtype)
    with torch.no_grad(), ops.backend(backend):
        result = network.eval()(lr.to(dtype))
    named = {"gradient": result[0], "sr": result[1]} if isinstance(result, tuple) else {"sr": result}
    return {name: value.double().numpy() for name, value in named.items()}


def run_onnxruntime(path) -> callable:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda lr: dict(zip(names, session.run(None, {INPUT_NAME: lr.numpy()})))


def onnx_output_names(path) -> list[str]:
    import onnx

    return [output.name for output in onnx.load(str(path), load_external_data=False).graph.output]


def run_openvino(path) -> callable:
    import openvino

    # fp32 on purpose: OpenVINO's CPU plugin may otherwise pick bf16 on CPUs that have it.
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = onnx_output_names(path)  # a port has several names (e.g. of the node before a Cast)
    if len(names) != len(compiled.outputs):
        raise ExportError(f"verify: openvino reads {len(compiled.outputs)} outputs from {path}, "
                          f"its graph lists {names}")

    def run(lr):
        result = compiled({INPUT_NAME: lr.numpy()})
        return {name: np.asarray(result[compiled.output(name)]) for name in names}

    return run


def run_torch_export(path) -> callable:
    from .pt2_export import read_pt2_metadata

    names = read_pt2_metadata(path)["output_names"].split(",")
    module = torch.export.load(str(path)).module()
    return lambda lr: _named(module(lr), names)


def run_aotinductor(path) -> callable:
    runner = torch._inductor.aoti_load_package(str(path))
    names = runner.get_metadata()["output_names"].split(",")
    return lambda lr: _named(runner(lr), names)


def _named(result, names) -> dict[str, np.ndarray]:
    values = result if isinstance(result, (tuple, list)) else (result,)
    return {name: value.detach().numpy() for name, value in zip(names, values)}


RUNNERS = {"onnxruntime": run_onnxruntime, "openvino": run_openvino, "torch.export": run_torch_export,
           "aotinductor": run_aotinductor}


def verify(model: nn.Module, path, runtime: str, precision: str, static: StaticShape | None,
           outputs: tuple[str, ...]) -> list[Check]:
    """Runs the exported file at `path` in `runtime` and compares every output."""
    run = RUNNERS[runtime](path)
    checks = []
    for lr in check_inputs(model, static):
        got = run(lr)
        if set(got) != set(outputs):
            raise ExportError(f"verify: {runtime} gives the outputs {sorted(got)} of {path}, expected {list(outputs)}")
        fp32 = torch_outputs(model, lr)
        if precision == "fp32":
            reference, limits = fp32, {name: FP32_TOLERANCE for name in outputs}
        else:
            reference = torch_outputs(model, lr, torch.float64)
            half = torch_outputs(model, lr, torch.float16, backend="reference")
            limits = {name: 2 * np.abs(half[name] - reference[name]).max()
                      + float(torch.finfo(torch.float16).eps) * np.abs(reference[name]).max() for name in outputs}
        for name in outputs:
            value = got[name].astype(np.float64)
            checks.append(Check(runtime, tuple(lr.shape), name, float(np.abs(value - reference[name]).max()),
                                float(limits[name]), float(np.abs(value - fp32[name]).max())))
    return checks

