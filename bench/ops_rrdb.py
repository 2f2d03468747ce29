"""bench/kernels.py cases for the fused residual dense blocks (op `rrdb`).

One RRDB (15 convs), inference ("fwd", under no_grad) and training ("fwd+bwd"), channels_last
input: `eager` is the torch.cat formulation (spsr_fast.ops._reference.rrdb_reference),
`compiled` its torch.compile (GPU), then every fused backend available on the device.
On the GPU, whole-network inference too (RRDBNet, SPSRNet, 256x256 LR, bf16 channels_last):
`eager` = the model on the reference backend, `compiled` = torch.compile of that,
`native`/`triton` = the model on the fused blocks; achieved TFLOP/s in the `TFLOP/s` field.
"""
from __future__ import annotations

import torch

from _harness import Case
from spsr_fast.ops import backend as use_backend
from spsr_fast.ops import rrdb
from spsr_fast.ops._backend import REGISTRY
from spsr_fast.ops._reference import rrdb_reference

OP = "rrdb"


def _block_shapes(device: str, quick: bool):
    """(batch, nf, H, W, dtype) of the single-RRDB cases."""
    if device == "cuda":
        shapes = [(16, 64, 32, 32, torch.bfloat16), (16, 64, 64, 64, torch.bfloat16),
                  (16, 128, 128, 128, torch.bfloat16), (16, 64, 32, 32, torch.float32)]
    else:
        shapes = [(16, 64, 32, 32, torch.float32), (16, 64, 64, 64, torch.float32),
                  (1, 128, 128, 128, torch.float32)]
    return shapes[:1] if quick else shapes


def make_params(nf: int, gc: int, device, dtype, requires_grad: bool, seed: int = 0):
    """15 conv weights/biases of one RRDB, ESRGAN-like scale (kaiming * 0.1)."""
    g = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for i in range(15):
        k = i % 5
        c_in, c_out = nf + k * gc, (gc if k < 4 else nf)
        w = torch.randn((c_out, c_in, 3, 3), generator=g) * (0.1 * (2.0 / (9 * c_in)) ** 0.5)
        b = torch.randn((c_out,), generator=g) * 0.01
        weights.append(w.to(device=device, dtype=dtype).requires_grad_(requires_grad))
        biases.append(b.to(device=device, dtype=dtype).requires_grad_(requires_grad))
    return weights, biases


def rrdb_flops(batch: int, nf: int, gc: int, H: int, W: int) -> int:
    macs_per_pixel = 3 * 9 * sum((nf + k * gc) * (gc if k < 4 else nf) for k in range(5))
    return 2 * macs_per_pixel * batch * H * W


def _fused(name):
    def run(x, weights, biases):
        with use_backend(name):
            return rrdb(x, weights, biases)
    return run


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def _block_cases(device: str, quick: bool) -> list[Case]:
    ops = REGISTRY["dense_block"]
    impls = {"eager": rrdb_reference}
    if device == "cuda":
        impls["compiled"] = torch.compile(rrdb_reference, dynamic=False)
    for name in ("native", "triton"):
        # interpreted Triton on the CPU is a test tool, not a backend to time
        if ops.status(name, device)[0] and not (device == "cpu" and name == "triton"):
            impls[name] = _fused(name)
    out = []
    gc = 32
    for batch, nf, H, W, dtype in _block_shapes(device, quick):
        x = torch.randn((batch, nf, H, W), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x_grad = x.clone().requires_grad_(True)
        weights, biases = make_params(nf, gc, device, dtype, requires_grad=True)
        grad_out = torch.randn_like(x)
        params = [x_grad, *weights, *biases]

        def forward(fn, x=x, weights=weights, biases=biases):
            return _no_grad(lambda: fn(x, weights, biases))

        def forward_backward(fn, weights=weights, biases=biases, g=grad_out, params=params):
            def run():
                for p in params:
                    p.grad = None
                fn(params[0], weights, biases).backward(g)
            return run

        label = f"{batch}x{nf}x{H}x{W} NHWC"
        case = Case(op=OP, shape=label, dtype=dtype,
                    variants={"fwd": {n: forward(f) for n, f in impls.items()},
                              "fwd+bwd": {n: forward_backward(f) for n, f in impls.items()}},
                    reference="eager", compare_to="compiled" if device == "cuda" else None)
        # multiply-adds x 2 per pass (backward: 2x forward); read by the harness for TFLOP/s
        case.flops = {"fwd": rrdb_flops(batch, nf, gc, H, W), "fwd+bwd": 3 * rrdb_flops(batch, nf, gc, H, W)}
        out.append(case)
    return out


def _model_cases(device: str, quick: bool) -> list[Case]:
    """Whole RRDBNet / SPSRNet inference on a 256x256 LR image, bf16 channels_last (GPU)."""
    if device != "cuda" or quick:
        return []
    try:
        from spsr_fast.models import RRDBNet, SPSRNet
    except ImportError as error:  # models not built yet on this branch
        print(f"# rrdb: whole-network cases skipped ({error})")
        return []
    from torch.utils.flop_counter import FlopCounterMode

    dtype = torch.bfloat16
    x = torch.rand((1, 3, 256, 256), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    out = []
    for name, cls in (("RRDBNet", RRDBNet), ("SPSRNet", SPSRNet)):
        model = cls().to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()
        with torch.no_grad(), use_backend("reference"):
            with FlopCounterMode(display=False) as counter:
                model(x)
            flops = counter.get_total_flops()
            compiled = torch.compile(model, dynamic=False)
            compiled(x)  # compile outside the timed region

        def on(backend_name, fn):
            return _no_grad(lambda: _run_on(backend_name, fn, x))

        variants = {"eager": on("reference", model), "compiled": on("reference", compiled)}
        for backend_name in ("native", "triton"):
            if REGISTRY["dense_block"].status(backend_name, device)[0]:
                variants[backend_name] = on(backend_name, model)
        case = Case(op=name, shape="1x3x256x256 NHWC", dtype=dtype, variants={"fwd": variants},
                    reference="eager", compare_to="compiled")
        case.flops = {"fwd": flops}
        out.append(case)
    return out


def _run_on(backend_name, fn, x):
    with use_backend(backend_name):
        return fn(x)


def cases(device: str, quick: bool = False) -> list[Case]:
    return _block_cases(device, quick) + _model_cases(device, quick)
