"""`spsr-fast doctor` reports the backend each op really uses, per-op choices included."""
import os
import subprocess
import sys


def doctor(**env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SPSR_FAST_BACKEND"}
    env.update(env_changes)
    result = subprocess.run([sys.executable, "-m", "spsr_fast.cli", "doctor"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def op_rows(text: str) -> dict[tuple[str, str], str]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("dense_block", "gradient_map", "info_nce") and parts[1] in ("cpu", "cuda"):
            rows[parts[0], parts[1]] = parts[2]
    return rows


def test_per_op_backend_choice_is_shown_for_that_op_only():
    rows = op_rows(doctor(SPSR_FAST_BACKEND="dense_block=reference"))
    assert rows["dense_block", "cpu"] == rows["dense_block", "cuda"] == "reference"
    assert rows["gradient_map", "cpu"] == "native"
    assert "backend choice: dense_block=reference" in doctor(SPSR_FAST_BACKEND="dense_block=reference")
