"""Which implementation of each fused op runs: reference, native (C++/CUDA) or triton.

The choice comes from, in order: `backend(...)` / `set_backend(...)`, the environment
variable SPSR_FAST_BACKEND, or the op's own default for the tensor's device (the
fastest available one). Availability is worked out once per op and device type, so
`torch.compile` sees plain dictionary lookups.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field

import torch

from .. import _extension

BACKENDS = ("reference", "native", "triton")
DEVICE_TYPES = ("cpu", "cuda")


def _validated(name: str | None, source: str) -> str | None:
    if name in (None, "", "auto"):
        return None
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)} or auto, got {name!r}")
    return name


_forced: str | None = _validated(os.environ.get("SPSR_FAST_BACKEND"), "SPSR_FAST_BACKEND")


def set_backend(name: str | None) -> None:
    """Force every op onto one backend (None or "auto" restores the defaults)."""
    global _forced
    _forced = _validated(name, "set_backend(name)")


def get_backend() -> str | None:
    """The forced backend, or None when each op picks its default."""
    return _forced


@contextlib.contextmanager
def backend(name: str | None):
    """`with spsr_fast.ops.backend("reference"): ...` runs the block on that backend."""
    global _forced
    previous = _forced
    _forced = _validated(name, "backend(name)")
    try:
        yield
    finally:
        _forced = previous


NO_CUDA_DEVICE = "no CUDA device"


def triton_status(device_type: str) -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False, NO_CUDA_DEVICE
        return True, "triton kernel on the GPU"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "triton kernel in the interpreter (TRITON_INTERPRET=1)"
    return False, "triton runs CPU tensors only with TRITON_INTERPRET=1"


@dataclass
class OpBackends:
    """Availability and default order of one op's backends."""

    name: str
    native_ops: tuple[str, ...]  # schemas in spsr_fast._C that the native path calls
    default_order: dict[str, tuple[str, ...]]  # device type -> preferred backends
    has_triton: bool = True
    _status: dict = field(default_factory=dict)
    _warned: set = field(default_factory=set)

    def status(self, backend_name: str, device_type: str) -> tuple[bool, str]:
        key = (backend_name, device_type)
        if key not in self._status:
            self._status[key] = self._compute_status(backend_name, device_type)
        return self._status[key]

    def _compute_status(self, backend_name: str, device_type: str) -> tuple[bool, str]:
        if backend_name == "reference":
            return True, "plain PyTorch reference"
        if backend_name == "triton":
            if not self.has_triton:
                return False, f"{self.name} has no triton kernel"
            return triton_status(device_type)
        dispatch_key = device_type.upper()
        if not _extension.LOADED:
            return False, f"spsr_fast._C is not built or failed to load ({_extension.LOAD_ERROR})"
        if all(_extension.has_kernel(op, dispatch_key) for op in self.native_ops):
            kind = "C++ CPU" if device_type == "cpu" else "CUDA"
            return True, f"{kind} kernel in spsr_fast._C"
        return False, f"spsr_fast._C was built without {dispatch_key} kernels for {self.name}"

    def default(self, device_type: str, assume_device: bool = False) -> tuple[str, str]:
        """(backend, reason) the op uses on this device type when nothing is forced.
        assume_device: answer as if a GPU were present (for `spsr-fast doctor`)."""
        order = self.default_order.get(device_type, ("native",))
        reasons = []
        for candidate in order:
            ok, reason = self.status(candidate, device_type)
            if ok or (assume_device and reason == NO_CUDA_DEVICE):
                return candidate, reason
            reasons.append(f"{candidate}: {reason}")
        return "reference", "fallback: " + "; ".join(reasons)

    def choose(self, device_type: str) -> str:
        forced = _forced
        if forced is not None:
            ok, reason = self.status(forced, device_type)
            if not ok:
                raise RuntimeError(
                    f"{self.name}: backend {forced!r} was requested but is unavailable on "
                    f"{device_type}: {reason}")
            return forced
        chosen, reason = self.default(device_type)
        if chosen == "reference" and device_type not in self._warned:
            self._warned.add(device_type)
            warnings.warn(f"spsr_fast: {self.name} on {device_type} falls back to the slow "
                          f"PyTorch reference ({reason}). Rebuild with "
                          "`pip install -e . --no-build-isolation`.", RuntimeWarning, stacklevel=3)
        return chosen


REGISTRY: dict[str, OpBackends] = {}


def register(op: OpBackends) -> OpBackends:
    """Adds an op and settles its availability now, outside any torch.compile trace."""
    for device_type in DEVICE_TYPES:
        for name in BACKENDS:
            op.status(name, device_type)
    REGISTRY[op.name] = op
    return op
