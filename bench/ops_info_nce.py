"""bench/kernels.py cases for info_nce.

Baseline `eager`: the plain-PyTorch reference (each image's rows x L similarity matrix,
coordinate mask, logsumexp). Fused: `native` (C++ on the CPU) and `triton` (GPU).

Main case: N = 4096 queries over B = 2 images of L = 10,000 candidates (100 x 100 grid),
D = 32, K = 3 excluded centres (target + two horizontal context cells), radius 3.
Memory scaling: L = 100k and 1M per image; the reference is skipped (with its estimated
bytes printed) where it would need more than REFERENCE_LIMIT_BYTES. On the CPU the
scaling cases use N = 128 queries so that the run stays short: the fused op's memory is
O((N + B L) D), dominated by the features at these sizes."""
from __future__ import annotations

import torch

from _harness import Case, format_bytes, on_backend
from spsr_fast.ops import info_nce
from spsr_fast.ops._backend import REGISTRY

OP = "info_nce"
REFERENCE_LIMIT_BYTES = 2 * 1024 ** 3  # the budget for 1M candidates per image
IMAGES, DIM, CENTRES, RADIUS = 2, 32, 3, 3


def _problem(n, height, width, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    length = height * width
    queries = torch.randn(n, DIM, generator=g).to(device=device, dtype=dtype)
    features = torch.randn(IMAGES, length, DIM, generator=g).to(device=device, dtype=dtype)
    image_index = torch.randint(0, IMAGES, (n,), generator=g)
    positive = torch.randint(0, length, (n,), generator=g)
    target = torch.stack([positive // width, positive % width], dim=1)
    offsets = torch.tensor([[0, 0], [0, -1], [0, 1]])  # target, left and right context
    centres = target[:, None, :] + offsets[None, :, :]
    rest = [t.to(device) for t in (image_index, positive, centres)]
    return queries, features, rest, width


def _reference_bytes(n, length):
    """Rough peak of the reference's fwd+bwd: per (row, candidate) fp32 logits, masked
    logits, softmax/grad, plus the mask's bool tables (K + 2 bytes); measured on the CPU:
    2.1 GiB at N=128, L=1M, this formula says 2.0 GiB."""
    return n * length * (3 * 4 + CENTRES + 2)


def _make_case(n, height, width, device, dtype, backends, label):
    q, f, rest, grid_width = _problem(n, height, width, device, dtype)
    q_grad, f_grad = q.clone().requires_grad_(True), f.clone().requires_grad_(True)
    fwd, fwd_bwd = {}, {}
    for name in backends:
        fn = on_backend("reference" if name == "eager" else name, info_nce)

        def forward(fn=fn):
            with torch.no_grad():
                return fn(q, f, *rest, grid_width, RADIUS)

        def forward_backward(fn=fn):
            q_grad.grad = f_grad.grad = None
            fn(q_grad, f_grad, *rest, grid_width, RADIUS).mean().backward()

        fwd[name], fwd_bwd[name] = forward, forward_backward
    shape = f"N{n} B{IMAGES} L{height * width} D{DIM}{label}"
    # without an eager run (skipped for memory) the records carry no speedup
    return Case(op=OP, shape=shape, dtype=dtype, variants={"fwd": fwd, "fwd+bwd": fwd_bwd}, reference="eager")


def cases(device: str, quick: bool = False, compile: bool = True) -> list[Case]:
    del compile  # no torch.compile baseline: the reference's N x L matrices are what it measures
    ops = REGISTRY[OP]
    fused = [name for name in ("native", "triton")
             if ops.status(name, device)[0] and not (device == "cpu" and name == "triton")]
    dtype = torch.float32
    out = [_make_case(4096, 100, 100, device, dtype, ["eager"] + fused, "")]
    if device == "cuda":
        out.append(_make_case(4096, 100, 100, device, torch.bfloat16, ["eager"] + fused, ""))
    if quick:
        return out
    n_scaling = 4096 if device == "cuda" else 128
    for height, width in ((250, 400), (1000, 1000)):
        length = height * width
        backends = list(fused)
        estimate = _reference_bytes(n_scaling, length)
        if estimate <= REFERENCE_LIMIT_BYTES:
            backends.insert(0, "eager")
        else:
            print(f"# info_nce: reference skipped at N={n_scaling}, L={length}: its N x L matrices need "
                  f"~{estimate / 2 ** 30:.2f} GiB (> {REFERENCE_LIMIT_BYTES / 2 ** 30:.2f} GiB); at N=4096, "
                  f"~{format_bytes(_reference_bytes(4096, length))}")
        out.append(_make_case(n_scaling, height, width, device, dtype, backends, " scaling"))
    return out
