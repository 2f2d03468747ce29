"""Which reduced precisions a device runs natively, decided by the target device itself.

`torch.cuda.is_bf16_supported()` answers for the *current* device and counts bf16 that is
only emulated (T4, V100: compute capability < 8.0, where bf16 matmuls run several times
slower than fp16). Inference and training ask about the device they will run on instead.
"""
from __future__ import annotations

import functools

import torch

# bf16 tensor-core math arrived with Ampere (sm_80); earlier GPUs emulate it.
_BF16_MIN_CAPABILITY = (8, 0)


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


def has_native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes in bf16 natively (not through emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index) >= _BF16_MIN_CAPABILITY
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False
