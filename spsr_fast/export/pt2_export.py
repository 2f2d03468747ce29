"""torch.export programs (`.pt2`, loaded with torch.export.load) and AOTInductor packages
(loaded with torch._inductor.aoti_load_package): neither needs spsr_fast to run."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .deploy import (ExportError, StaticShape, architecture, choose_outputs, deployment_model, dynamic_shapes,
                     example_input, trace)
from .files import atomic_path, check_destination
from .metadata import describe

METADATA_FILE = "spsr_fast.json"  # extra file inside the .pt2 program


@dataclass
class Pt2Export:
    path: str
    outputs: tuple[str, ...]
    precision: str
    seconds: float
    bytes: int
    metadata: dict[str, str] = field(default_factory=dict)
    aoti_path: str | None = None  # the AOTInductor package, when built
    aoti_seconds: float = 0.0
    aoti_skipped: str | None = None  # why no AOTInductor package was built


def aoti_package_path(path, device: str) -> Path:
    """`model.pt2` -> `model.aoti-cpu.pt2`: an AOTInductor package runs on one device type."""
    path = Path(path)
    stem = path.name[:-len(".pt2")] if path.name.endswith(".pt2") else path.name
    return path.with_name(f"{stem}.aoti-{torch.device(device).type}.pt2")


def _environmental_failure(error: BaseException) -> str | None:
    """A one-line reason when building the package failed because of the machine (no or
    broken C++ compiler, missing toolchain files), None for anything else."""
    from torch._inductor import exc

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (exc.InvalidCxxCompiler, exc.CppCompileError, exc.CUDACompileError, OSError,
                              subprocess.CalledProcessError)):
            text = str(error).strip().splitlines()
            return f"{type(error).__name__}: {text[0] if text else ''}"
        error = getattr(error, "inner_exception", None) or error.__cause__ or error.__context__
    return None


def compile_aoti(program, path: Path, metadata: dict[str, str]) -> str | None:
    """Builds the AOTInductor package at `path`; returns None, or why it could not be built here."""
    try:
        with atomic_path(path) as tmp:
            torch._inductor.aoti_compile_and_package(
                program, package_path=tmp, inductor_configs={"aot_inductor.metadata": dict(metadata)})
    except Exception as error:
        reason = _environmental_failure(error)
        if reason is None:
            raise
        return reason
    return None


def check_device(device: str) -> str:
    """The device type the AOTInductor package is built for; it must be present here."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ExportError(f"--device: expected cpu, cuda or cuda:N, got {device!r}") from None
    if kind not in ("cpu", "cuda"):
        raise ExportError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ExportError(f"--device {device}: no CUDA device on this machine; a package for a GPU is built on one")
    return kind


def export_pt2(model: nn.Module, path, *, outputs=None, precision: str = "fp32",
               static: StaticShape | None = None, source=None, source_layout: str | None = None,
               overwrite: bool = False, aoti: bool = True, device: str = "cpu") -> Pt2Export:
    """Writes `model` as a torch.export program at `path` (same interface as the ONNX export:
    input `lr`, outputs float32) and, with `aoti`, an AOTInductor package for `device` beside
    it (see aoti_package_path); a machine that cannot build one gets `aoti_skipped`."""
    architecture(model)
    outputs = choose_outputs(model, outputs)
    check_device(device)
    if not str(path).endswith(".pt2"):
        raise ExportError(f"-o {path}: a torch.export program needs the suffix .pt2")
    path = check_destination(path, overwrite)
    package = aoti_package_path(path, device) if aoti else None
    if package is not None:
        check_destination(package, overwrite)
    start = time.perf_counter()
    wrapped = deployment_model(model, outputs, precision).to(device)
    lr = example_input(model, static).to(device)
    program = trace(wrapped, lr, dynamic_shapes(model, static))
    meta = describe(model, outputs, precision, static, source, source_layout,
                    exporter=f"torch.export (torch {torch.__version__})")
    meta["device"] = torch.device(device).type
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp, extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
    result = Pt2Export(str(path), outputs, precision, time.perf_counter() - start, os.path.getsize(path), meta)
    if package is not None:
        start = time.perf_counter()
        result.aoti_skipped = compile_aoti(program, package, meta)
        if result.aoti_skipped is None:
            result.aoti_path, result.aoti_seconds = str(package), time.perf_counter() - start
    return result


def read_pt2_metadata(path) -> dict[str, str]:
    """The metadata an export wrote into a .pt2 program."""
    extra = {METADATA_FILE: ""}
    torch.export.load(path, extra_files=extra)
    return json.loads(extra[METADATA_FILE])
