"""bench/kernels.py cases: whole-network inference with the fused dense blocks (GPU only).

RRDBNet and SPSRNet (default sizes: nb=23, nf=64) on one 256x256 LR image, bf16
channels_last: `eager` = the model on the reference backend (PyTorch eager, torch.cat
blocks), `compiled` = torch.compile of that (left out with --no-compile: compiling a whole
network takes minutes), `native`/`triton` = the model on the fused blocks. --quick: RRDBNet
only. The FLOP count (FlopCounterMode on the eager model) is in the case's `flops` for the
TFLOP/s column.
"""
from __future__ import annotations

import torch

from _harness import Case, on_backend, without_grad
from spsr_fast.ops import backend as use_backend
from spsr_fast.ops._backend import REGISTRY


def _model_cases(device: str, quick: bool, compile: bool) -> list[Case]:
    """Whole RRDBNet / SPSRNet inference on a 256x256 LR image, bf16 channels_last (GPU)."""
    if device != "cuda":
        print("# rrdb_models: GPU only")
        return []
    from torch.utils.flop_counter import FlopCounterMode

    from spsr_fast.models import RRDBNet, SPSRNet

    dtype = torch.bfloat16
    x = torch.rand((1, 3, 256, 256), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    archs = [("RRDBNet", RRDBNet)] + ([] if quick else [("SPSRNet", SPSRNet)])
    out = []
    for name, cls in archs:
        model = cls().to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()
        with torch.no_grad(), use_backend("reference"):
            with FlopCounterMode(display=False) as counter:
                model(x)
            flops = counter.get_total_flops()

        def on(backend_name, fn, x=x):
            return without_grad(lambda: on_backend(backend_name, fn)(x))

        variants = {"eager": on("reference", model)}
        if compile:
            compiled = torch.compile(model, dynamic=False)
            with torch.no_grad(), use_backend("reference"):
                compiled(x)  # compile outside the timed region
            variants["compiled"] = on("reference", compiled)
        for backend_name in ("native", "triton"):
            if REGISTRY["dense_block"].status(backend_name, device)[0]:
                variants[backend_name] = on(backend_name, model)
        out.append(Case(op=name, shape="1x3x256x256 NHWC", dtype=dtype, variants={"fwd": variants},
                        reference="eager", compare_to="compiled" if compile else None, flops={"fwd": flops}))
    return out


def cases(device: str, quick: bool = False, compile: bool = True) -> list[Case]:
    return _model_cases(device, quick, compile)
