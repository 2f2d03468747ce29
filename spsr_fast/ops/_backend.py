"""Which implementation of each fused op runs: reference, native (C++/CUDA) or triton.

The choice comes from, in order: `backend(...)` / `set_backend(...)`, the environment
variable SPSR_FAST_BACKEND, or the op's own default for the tensor's device. Either names
one backend for every op (`triton`) or backends per op (`dense_block=triton,gradient_map=native`;
a bare name in the list covers the ops not named). Availability is worked out once per op
and device type, so `torch.compile` sees plain dictionary lookups.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .. import _extension

BACKENDS = ("reference", "native", "triton")
DEVICE_TYPES = ("cpu", "cuda")
OP_NAMES = ("dense_block", "gradient_map", "info_nce")
ALL_OPS = "*"


def _validated_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)} or auto, got {name!r}")
    return name


def _parsed(spec, source: str) -> dict[str, str]:
    """{op name or "*": backend} from a backend name, "op=name,..." or a mapping."""
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "auto")):
        return {}
    if isinstance(spec, str):
        if "=" not in spec:
            return {ALL_OPS: _validated_name(spec.strip(), source)}
        entries = {}
        for entry in spec.split(","):
            op, sep, name = (part.strip() for part in entry.partition("="))
            entries[op if sep else ALL_OPS] = name if sep else op
        spec = entries
    if not isinstance(spec, Mapping):
        raise TypeError(f"{source} must be a backend name, 'op=name,...' or a dict, got {type(spec).__name__}")
    forced = {}
    for op, name in spec.items():
        if op not in OP_NAMES and op != ALL_OPS:
            raise ValueError(f"{source}: unknown op {op!r} (ops: {', '.join(OP_NAMES)})")
        if name not in (None, "auto"):
            forced[op] = _validated_name(name, f"{source} [{op}]" if op != ALL_OPS else source)
    return forced


def _from_environment() -> tuple[dict[str, str], ValueError | TypeError | None]:
    """SPSR_FAST_BACKEND, parsed; a bad value is kept and raised when an op first runs (or
    get_backend is asked), so that importing spsr_fast never fails on it and the CLI can
    report it as one line."""
    try:
        return _parsed(os.environ.get("SPSR_FAST_BACKEND"), "SPSR_FAST_BACKEND"), None
    except (ValueError, TypeError) as error:
        return {}, error


_forced, _environment_error = _from_environment()


def _check_environment() -> None:
    if _environment_error is not None:
        raise _environment_error


def set_backend(spec) -> None:
    """Force ops onto a backend: one name for every op, "op=name,..." or {op: name}
    (None or "auto" restores the defaults)."""
    global _forced, _environment_error
    _forced = _parsed(spec, "set_backend(name)")
    _environment_error = None  # an explicit choice replaces the environment's


def get_backend(op: str | None = None) -> str | None:
    """The backend forced on every op (op=None), or the one forced on `op`; None when the
    default applies."""
    _check_environment()
    if op is None:
        return _forced.get(ALL_OPS)
    return _forced.get(op, _forced.get(ALL_OPS))


@contextlib.contextmanager
def backend(spec):
    """`with spsr_fast.ops.backend("reference"): ...` runs the block on that backend;
    `backend({"dense_block": "triton"})` forces one op only."""
    global _forced, _environment_error
    previous = _forced, _environment_error
    _forced, _environment_error = _parsed(spec, "backend(name)"), None
    try:
        yield
    finally:
        _forced, _environment_error = previous


NO_CUDA_DEVICE = "no CUDA device"


def triton_usable() -> bool:
    """Whether Triton kernels can run in this process on any device type."""
    return any(triton_status(device_type)[0] for device_type in DEVICE_TYPES)


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
    # device type -> why the first backend of default_order is the default (doctor shows it)
    why_default: dict[str, str] = field(default_factory=dict)
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
        for rank, candidate in enumerate(order):
            ok, reason = self.status(candidate, device_type)
            if ok or (assume_device and reason == NO_CUDA_DEVICE):
                if rank == 0 and device_type in self.why_default:
                    reason = self.why_default[device_type]
                return candidate, reason
            reasons.append(f"{candidate}: {reason}")
        return "reference", "fallback: " + "; ".join(reasons)

    def choose(self, device_type: str) -> str:
        _check_environment()
        forced = _forced.get(self.name, _forced.get(ALL_OPS))
        if forced is not None:
            ok, reason = self.status(forced, device_type)
            if not ok:
                raise RuntimeError(
                    f"{self.name}: backend {forced!r} was requested but is unavailable on "
                    f"{device_type}: {reason}")
            return forced
        chosen, reason = self.default(device_type)
        fallback = chosen == "reference" and "reference" not in self.default_order.get(device_type, ())
        if fallback and device_type not in self._warned:
            self._warned.add(device_type)
            warnings.warn(f"spsr_fast: {self.name} on {device_type} falls back to the slow "
                          f"PyTorch reference ({reason}). Rebuild with "
                          "`pip install -e . --no-build-isolation`.", RuntimeWarning, stacklevel=3)
        return chosen


REGISTRY: dict[str, OpBackends] = {}


def register(op: OpBackends) -> OpBackends:
    """Adds an op and settles its availability now, outside any torch.compile trace."""
    if op.name not in OP_NAMES:  # SPSR_FAST_BACKEND's "op=name" entries are checked against OP_NAMES
        raise ValueError(f"register: add {op.name!r} to OP_NAMES")
    for device_type in DEVICE_TYPES:
        for name in BACKENDS:
            op.status(name, device_type)
    REGISTRY[op.name] = op
    return op
