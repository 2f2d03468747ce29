"""run.deterministic: what makes a resumed run repeat an uninterrupted one bit for bit.

CPU: the trainer's kernels are deterministic for a fixed thread count, so a resume is exact
whatever this flag says. CUDA: cuDNN's autotuner (benchmark) and its atomics-based backward
algorithms, and cuBLAS's split-K workspaces, vary from run to run; deterministic=true turns
them off (slower), deterministic=false keeps the fast autotuned kernels.
"""
from __future__ import annotations

import os

import torch

# cuBLAS needs a fixed workspace configuration for reproducible GEMMs (CUDA >= 10.2); it is read
# when the first cuBLAS handle is made, so it must be set before any CUDA work.
CUBLAS_WORKSPACE = ":4096:8"


def configure_determinism(deterministic: bool) -> str | None:
    """Apply run.deterministic to PyTorch's global settings; returns a note for the log when
    the setting cannot be fully honoured."""
    if not deterministic:
        torch.backends.cudnn.benchmark = True  # fastest conv algorithm per shape, chosen by timing
        return None
    note = None
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_initialized():
            note = ("run.deterministic: CUDA was initialised before the trainer could set "
                    f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}; export it before starting Python "
                    "for reproducible cuBLAS results")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    # warn_only: an op without a deterministic implementation warns, naming itself, rather than
    # stopping a long run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return note
