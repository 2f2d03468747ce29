"""Which reduced precisions a device runs natively, decided by the target device itself.

`torch.cuda.is_bf16_supported()` answers for the *current* device and counts bf16 that is
only emulated (T4, V100: compute capability < 8.0, where bf16 matmuls run several times
slower than fp16). Inference and training ask about the device they will run on instead.

On the CPU, SPSR_FAST_CPU_BF16=0 makes every answer "no native bf16" (to test or compare the
float32 fallback on a CPU that has it), =1 "native"; unset, the CPU's flags decide.
"""
from __future__ import annotations

import functools
import os

import torch

# bf16 tensor-core math arrived with Ampere (sm_80); earlier GPUs emulate it.
_BF16_MIN_CAPABILITY = (8, 0)
CPU_BF16_VARIABLE = "SPSR_FAST_CPU_BF16"
# What the bf16 CPU kernels (csrc/cpu/winograd_packed.cpp, small_gemm_bf16.cpp) run on: the bf16
# dot product VDPBF16PS with 256/512-bit masked moves. AMX CPUs have these too.
_AVX512_BF16_FLAGS = frozenset({"avx512_bf16", "avx512bw", "avx512vl"})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def _cpu_has_native_bf16() -> bool:
    """AVX512_BF16 / AMX-BF16 on x86, the BF16 extension on Arm (Linux /proc/cpuinfo)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_bf16_override() -> bool | None:
    """SPSR_FAST_CPU_BF16: False for "0", True for "1", None when unset or empty."""
    value = os.environ.get(CPU_BF16_VARIABLE, "").strip()
    if value == "":
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{CPU_BF16_VARIABLE} must be 0 (no native bf16) or 1, got {value!r}")
    return value == "1"


def cpu_bf16_kernels() -> tuple[bool, str]:
    """(whether spsr-fast's bf16 CPU kernels run natively here, why in a few words): the x86
    AVX512_BF16 dot product (with AVX512BW/VL), unless SPSR_FAST_CPU_BF16 says otherwise."""
    override = cpu_bf16_override()
    if override is not None:
        return override, f"{CPU_BF16_VARIABLE}={int(override)}"
    missing = sorted(_AVX512_BF16_FLAGS - _cpu_flags())
    if missing:
        return False, f"this CPU has no {'/'.join(f.upper() for f in missing)}"
    return True, "AVX512_BF16 dot products"


def has_native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes in bf16 natively (not through emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index) >= _BF16_MIN_CAPABILITY
    if device.type == "cpu":
        override = cpu_bf16_override()
        return _cpu_has_native_bf16() if override is None else override
    return False
