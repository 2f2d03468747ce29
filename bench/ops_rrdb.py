"""bench/kernels.py cases for the fused residual dense blocks (op `rrdb`).

One RRDB (15 convs), inference ("fwd", under no_grad) and training ("fwd+bwd"), channels_last
input: `eager` is the torch.cat formulation (spsr_fast.ops._reference.rrdb_reference),
`compiled` its torch.compile (GPU), then every fused backend available on the device; on the
CPU `native` (Winograd convs, fused epilogues) and `native-direct` (oneDNN convs).
Whole networks: bench/ops_rrdb_models.py.
"""
from __future__ import annotations

import torch

from _harness import Case, on_backend, with_env, without_grad
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


def _block_cases(device: str, quick: bool, compile: bool) -> list[Case]:
    ops = REGISTRY["dense_block"]
    impls = {"eager": rrdb_reference}
    if device == "cuda" and compile:
        impls["compiled"] = torch.compile(rrdb_reference, dynamic=False)
    for name in ("native", "triton"):
        # interpreted Triton on the CPU is a test tool, not a backend to time
        if ops.status(name, device)[0] and not (device == "cpu" and name == "triton"):
            impls[name] = on_backend(name, rrdb)
    if device == "cpu" and "native" in impls:
        # the same buffers with oneDNN convolutions instead of Winograd (float32 A/B)
        impls["native-direct"] = with_env("SPSR_FAST_CPU_CONV", "direct", impls["native"])
    out = []
    gc = 32
    for batch, nf, H, W, dtype in _block_shapes(device, quick):
        x = torch.randn((batch, nf, H, W), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x_grad = x.clone().requires_grad_(True)
        weights, biases = make_params(nf, gc, device, dtype, requires_grad=True)
        grad_out = torch.randn_like(x)
        params = [x_grad, *weights, *biases]

        def forward(fn, x=x, weights=weights, biases=biases):
            return without_grad(lambda: fn(x, weights, biases))

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
                    reference="eager", compare_to="compiled" if device == "cuda" else None,
                    # multiply-adds x 2 per pass (backward: 2x forward)
                    flops={"fwd": rrdb_flops(batch, nf, gc, H, W), "fwd+bwd": 3 * rrdb_flops(batch, nf, gc, H, W)})
        out.append(case)
    return out


def cases(device: str, quick: bool = False, compile: bool = True) -> list[Case]:
    return _block_cases(device, quick, compile)
