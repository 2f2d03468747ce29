"""bench/kernels.py cases for gradient_map.

Baselines: `authors` (their per-channel pair of fixed 3x3 conv2d, then sqrt) and
`eager` (pad once, shifted-slice differences), `compiled` (torch.compile of eager, GPU),
then every fused backend available on the device."""
from __future__ import annotations

import torch

from _harness import Case, on_backend, without_grad
from spsr_fast.ops import gradient_map
from spsr_fast.ops._backend import REGISTRY
from spsr_fast.ops._reference import gradient_map_authors, gradient_map_reference

OP = "gradient_map"


def _shapes(device: str, quick: bool):
    if device == "cuda":
        shapes = [((16, 3, 128, 128), torch.float32, False), ((16, 3, 512, 512), torch.bfloat16, False),
                  ((16, 3, 512, 512), torch.bfloat16, True), ((16, 3, 512, 512), torch.float32, False)]
    else:
        shapes = [((16, 3, 128, 128), torch.float32, False), ((16, 3, 128, 128), torch.float32, True),
                  ((4, 64, 64, 64), torch.float32, True)]
    return shapes[:2] if quick else shapes


def cases(device: str, quick: bool = False, compile: bool = True) -> list[Case]:
    ops = REGISTRY[OP]
    impls = {"authors": gradient_map_authors, "eager": gradient_map_reference}
    if device == "cuda" and compile:
        impls["compiled"] = torch.compile(gradient_map_reference, dynamic=False)
    for name in ("native", "triton"):
        if ops.status(name, device)[0] and not (device == "cpu" and name == "triton"):
            impls[name] = on_backend(name, gradient_map)  # interpreted Triton on CPU is a test tool, not a backend to time

    out = []
    padding = 1
    for shape, dtype, channels_last in _shapes(device, quick):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.rand(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
        x_grad = x.clone().requires_grad_(True)
        grad_out = torch.rand_like(x)

        def forward(fn, x=x):
            return lambda: fn(x, padding)

        def forward_backward(fn, x=x_grad, g=grad_out):
            def run():
                x.grad = None
                fn(x, padding).backward(g)
            return run

        fwd = {name: without_grad(forward(fn)) for name, fn in impls.items()}
        fwd_bwd = {name: forward_backward(fn) for name, fn in impls.items()}
        size = x.numel() * x.element_size()
        label = "x".join(map(str, shape)) + (" NHWC" if channels_last else "")
        out.append(Case(op=OP, shape=label, dtype=dtype,
                        variants={"fwd": fwd, "fwd+bwd": fwd_bwd}, reference="authors",
                        compare_to="eager",
                        # one read of x + one write; backward adds reads of x and grad, one write
                        bytes_moved={"fwd": 2 * size, "fwd+bwd": 5 * size}))
    return out
