"""Loads the compiled extension spsr_fast._C once and answers what it holds."""
from __future__ import annotations

import importlib

import torch

try:
    _C = importlib.import_module("spsr_fast._C")
    LOADED = True
    LOAD_ERROR = ""
except ImportError as error:  # not built, or built against another torch
    _C = None
    LOADED = False
    LOAD_ERROR = f"{type(error).__name__}: {error}"


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether spsr_fast::<op> has a kernel for dispatch_key ("CPU" or "CUDA")."""
    if not LOADED:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"spsr_fast::{op}", dispatch_key)
    except RuntimeError:  # schema absent: an older build of _C without this op
        return False


def build_info() -> dict | None:
    """How _C was built, from setup.py: {"summary": its build line, "cuda_archs": the arch list
    ('' when CPU-only), "openmp": bool}; None when _C is not loaded or predates build_info."""
    if not LOADED or not hasattr(_C, "build_info"):
        return None
    return _C.build_info()
