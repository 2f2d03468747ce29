"""Start-up: `import spsr_fast` stays light where Triton cannot run, and a bad
SPSR_FAST_BACKEND never breaks the import (it is reported when an op runs)."""
import os
import subprocess
import sys

import pytest
import torch


def run_python(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPSR_FAST_BACKEND")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the Triton ops are registered at import")
def test_import_does_not_load_the_compiler_stack_without_triton():
    code = "import sys, spsr_fast; print(sorted(m for m in ('torch._inductor', 'torch._dynamo') if m in sys.modules))"
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the Triton ops are registered at import")
def test_upscale_on_the_cpu_does_not_load_the_compiler_stack(tmp_path):
    """A whole `spsr-fast upscale` (bundled model, --precision auto: the CPU engine) never imports
    torch._dynamo / torch._inductor (1.6 s of start-up in the issue) where no Triton/compile path runs."""
    from PIL import Image

    Image.new("RGB", (12, 10), (90, 140, 200)).save(tmp_path / "p.png")
    code = ("import sys\nfrom spsr_fast.cli import main\n"
            f"status = main(['upscale', {str(tmp_path / 'p.png')!r}, '--no-progress', '--device', 'cpu'])\n"
            "print(status, sorted(m for m in ('torch._inductor', 'torch._dynamo') if m in sys.modules))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout
    assert (tmp_path / "p_x4.png").exists()


def test_triton_ops_are_registered_where_triton_runs():
    code = "import torch, spsr_fast; print(hasattr(torch.ops.spsr_fast, 'gradient_map_triton'))"
    assert run_python(code, TRITON_INTERPRET="1").stdout.strip() == "True"


def test_bad_backend_variable_is_reported_on_use_not_on_import():
    code = ("import torch, spsr_fast\nprint('imported')\n"
            "spsr_fast.ops.gradient_map(torch.rand(1, 1, 4, 4))")
    result = run_python(code, SPSR_FAST_BACKEND="fastest")
    assert result.stdout.strip() == "imported"
    assert "SPSR_FAST_BACKEND must be one of" in result.stderr
    with_block = ("import torch, spsr_fast\n"
                  "with spsr_fast.ops.backend('reference'):\n"
                  "    print(spsr_fast.ops.gradient_map(torch.zeros(1, 1, 2, 2)).shape)")
    assert run_python(with_block, SPSR_FAST_BACKEND="fastest").stdout.strip() == "torch.Size([1, 1, 2, 2])"
