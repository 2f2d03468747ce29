"""`spsr-fast doctor`: what this installation can run, and why."""
from __future__ import annotations

import importlib.util
import os
import platform

HELP = "print versions, compiled kernels and the backend each op uses on CPU and GPU"


def add_arguments(parser) -> None:
    pass


def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    mod = importlib.import_module(module)
    return getattr(mod, "__version__", "installed")


def _print_build_info(info) -> None:
    if info is None:
        print("build: unknown (spsr_fast._C predates build_info; rebuild with pip install -e .)")
        return
    if info["cuda_archs"]:
        print(f"CUDA kernels compiled for: {info['cuda_archs']}")
    else:
        print("CUDA kernels: not compiled (CPU-only build)")
    print(f"CPU kernels: {'with' if info['openmp'] else 'WITHOUT'} OpenMP")
    print(f"build: {info['summary']}")


def run(args) -> int:
    import torch

    import spsr_fast
    from spsr_fast import _extension
    from spsr_fast.ops import get_backend
    from spsr_fast.ops._backend import DEVICE_TYPES, NO_CUDA_DEVICE, REGISTRY

    print(f"spsr-fast {spsr_fast.__version__}  python {platform.python_version()}  {platform.machine()}")
    print(f"torch {torch.__version__}  (CUDA build: {torch.version.cuda or 'no'})  triton {_version('triton')}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()} (capability {'.'.join(map(str, torch.cuda.get_device_capability()))})")
    else:
        print("GPU: none visible to torch")
    print(f"CPU threads: {torch.get_num_threads()}")
    if _extension.LOADED:
        keys = [k for k in ("CPU", "CUDA") if any(_extension.has_kernel(op, k) for o in REGISTRY.values()
                                                    for op in o.native_ops)]
        print(f"spsr_fast._C: loaded, kernels for {', '.join(keys) or 'nothing'}")
        _print_build_info(_extension.build_info())
    else:
        print(f"spsr_fast._C: NOT loaded ({_extension.LOAD_ERROR})")
    per_op = {name: get_backend(name) for name in REGISTRY}
    forced = get_backend()
    if any(per_op.values()):
        choice = ", ".join(f"{name}={b}" for name, b in sorted(per_op.items()) if b)
        source = "SPSR_FAST_BACKEND / set_backend"
    else:
        choice, source = "auto", "per-op default"
    print(f"backend choice: {forced or choice} ({source})"
          + ("  TRITON_INTERPRET=1" if os.environ.get("TRITON_INTERPRET") == "1" else ""))
    print()
    width = max(len(name) for name in REGISTRY)
    for name, ops in sorted(REGISTRY.items()):
        forced = per_op[name]
        for device_type in DEVICE_TYPES:
            if forced:
                ok, reason = ops.status(forced, device_type)
                chosen = forced if ok else f"{forced} (unavailable)"
            else:
                chosen, reason = ops.default(device_type, assume_device=True)
            if device_type == "cuda" and not torch.cuda.is_available():
                reason = ("would run here with a GPU: " + reason) if reason != NO_CUDA_DEVICE else \
                    "would run with a GPU; none visible here"
            print(f"{name:<{width}}  {device_type:<4}  {chosen:<9}  {reason}")
    return 0
