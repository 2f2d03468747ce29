"""The CMake/LibTorch build of csrc/ (CI builds it and sets SPSR_FAST_CMAKE_LIB): the
library loads with torch.ops.load_library and runs the same kernels."""
import os
import subprocess
import sys
import textwrap

import pytest

LIB = os.environ.get("SPSR_FAST_CMAKE_LIB")


@pytest.mark.skipif(not LIB, reason="SPSR_FAST_CMAKE_LIB not set (CI sets it after the CMake build)")
def test_cmake_library_loads_and_matches_reference():
    code = textwrap.dedent(f"""
        import torch
        torch.ops.load_library({LIB!r})
        import torch.nn.functional as F
        x = torch.rand(2, 3, 9, 7, dtype=torch.float64)
        xp = F.pad(x, (2, 2, 2, 2))
        v = xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1]
        h = xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]
        torch.testing.assert_close(torch.ops.spsr_fast.gradient_map(x, 2), torch.sqrt(v * v + h * h + 1e-6))
        print("ok")
    """)
    # A fresh interpreter: the library must not meet spsr_fast._C's registrations.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
