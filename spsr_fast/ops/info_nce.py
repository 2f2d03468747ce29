"""info_nce(...): InfoNCE of contrastive prediction over ~10k negatives (docs/ARCHITECTURE.md 2.3).

    loss = info_nce(queries, features, image_index, positive_index, excluded_centres,
                    grid_width, radius, scale=64.0)          # (N,) float32 per-row losses
    info_nce_mean(...)                                     # their mean

queries (N, D): the predictor's outputs. features (B, L, D): each image's structure
features, position m of the H' x W' map at grid cell (m // grid_width, m % grid_width)
(a (B, D, H', W') map is `fmap.flatten(2).transpose(1, 2)`; a (B, H', W', D) one is also
accepted, with grid_width == W'). For row n: image image_index[n], positive position
positive_index[n] (flat index into its image), and K excluded centres
excluded_centres[n] (grid (row, col): the target and the context positions). With
s_nm = scale * cos(q_n, f_m), a position m enters row n's logsumexp iff it is the
positive, or its Chebyshev distance to every excluded centre is >= radius:
    loss_n = logsumexp_{m in {pos} u neg(n)} s_nm - s_n,pos
Cosine similarity normalises both sides like F.normalize(eps=1e-12), with norms in
float32; the fused kernels do it as they load each tile and fold its backward into their
epilogues, so not even a normalised copy of the features is made.

Backends: the C++ CPU kernel (`spsr_fast::info_nce`, `spsr_fast::info_nce_backward`),
the Triton kernels (`spsr_fast::info_nce_triton`, GPU default; there is no CUDA C++
kernel), and the reference (materialises each image's similarity matrix). The fused
ones stream feature tiles with an online logsumexp: memory O((N + B L) D), never N x L.
Losses are float32 (float64 for float64 inputs); gradients come back in the input dtype.
Argument checks read index values (a device sync on the GPU) unless torch.compile traces.
"""
from __future__ import annotations

import math

import torch

from .. import _extension
from . import _backend
from ._reference import info_nce_loss_dtype, info_nce_reference

OPS = _backend.register(_backend.OpBackends(
    name="info_nce",
    native_ops=("info_nce", "info_nce_backward"),
    # No CUDA C++ kernel: on the GPU the Triton one is the fused backend.
    default_order={"cpu": ("native",), "cuda": ("triton",)},
))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_inputs(queries, features, image_index, positive_index, excluded_centres, grid_width, radius,
                 scale) -> None:
    """Clear errors naming the argument, before any kernel sees the input."""
    named = {"queries": queries, "features": features, "image_index": image_index,
             "positive_index": positive_index, "excluded_centres": excluded_centres}
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"info_nce: {name} must be a torch.Tensor, got {type(value).__name__}")
    if queries.dim() != 2:
        raise ValueError(f"info_nce: queries must be 2-D (N, D), got shape {tuple(queries.shape)}")
    if features.dim() not in (3, 4):
        raise ValueError(f"info_nce: features must be (B, L, D) or (B, H', W', D), got shape {tuple(features.shape)}")
    if not queries.dtype.is_floating_point:
        raise TypeError(f"info_nce: queries must be a floating-point tensor, got {queries.dtype}")
    if features.dtype != queries.dtype:
        raise TypeError(f"info_nce: features has dtype {features.dtype} but queries has {queries.dtype}")
    if features.shape[-1] != queries.shape[1]:
        raise ValueError(f"info_nce: features has D = {features.shape[-1]} but queries has D = {queries.shape[1]}")
    n = queries.shape[0]
    for name in ("image_index", "positive_index"):
        t = named[name]
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.shape != (n,):
            raise ValueError(f"info_nce: {name} must be an integer tensor of shape ({n},), "
                             f"got {t.dtype} {tuple(t.shape)}")
    if (excluded_centres.dtype.is_floating_point or excluded_centres.dtype == torch.bool
            or excluded_centres.dim() != 3 or excluded_centres.shape[0] != n or excluded_centres.shape[2] != 2):
        raise ValueError(f"info_nce: excluded_centres must be an integer tensor of shape ({n}, K, 2), "
                         f"got {excluded_centres.dtype} {tuple(excluded_centres.shape)}")
    for name, t in named.items():
        if t.device != queries.device:
            raise ValueError(f"info_nce: {name} is on {t.device} but queries is on {queries.device}")
    if not _is_int(grid_width) or grid_width <= 0:
        raise ValueError(f"info_nce: grid_width must be a positive int, got {grid_width!r}")
    if features.dim() == 4 and features.shape[2] != grid_width:
        raise ValueError(f"info_nce: features is a (B, H', W', D) map with W' = {features.shape[2]} "
                         f"but grid_width = {grid_width}")
    if features.dim() == 3 and features.shape[1] % grid_width:
        raise ValueError(f"info_nce: features has L = {features.shape[1]} positions, "
                         f"not a multiple of grid_width = {grid_width}")
    if not _is_int(radius) or radius < 0:
        raise ValueError(f"info_nce: radius must be an int >= 0, got {radius!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"info_nce: scale must be a finite number > 0, got {scale!r}")
    if n and not torch.compiler.is_compiling():
        num_images, length = features.shape[0], math.prod(features.shape[1:-1])
        if length == 0:
            raise ValueError(f"info_nce: features has no candidates (shape {tuple(features.shape)})")
        # one host transfer (one sync on the GPU) for the four bounds
        img_lo, img_hi, pos_lo, pos_hi = torch.stack([*torch.aminmax(image_index),
                                                      *torch.aminmax(positive_index)]).tolist()
        if img_lo < 0 or img_hi >= num_images:
            raise ValueError(f"info_nce: image_index must lie in [0, {num_images}), got [{img_lo}, {img_hi}]")
        if pos_lo < 0 or pos_hi >= length:
            raise ValueError(f"info_nce: positive_index must lie in [0, {length}), got [{pos_lo}, {pos_hi}]")


def info_nce(queries: torch.Tensor, features: torch.Tensor, image_index: torch.Tensor,
             positive_index: torch.Tensor, excluded_centres: torch.Tensor, grid_width: int, radius: int,
             scale: float = 64.0) -> torch.Tensor:
    """Per-row InfoNCE losses (N,), float32 (float64 for float64 inputs); see the module doc."""
    check_inputs(queries, features, image_index, positive_index, excluded_centres, grid_width, radius, scale)
    if features.dim() == 4:
        features = features.flatten(1, 2)
    image_index = image_index.to(torch.int64)
    positive_index = positive_index.to(torch.int64)
    excluded_centres = excluded_centres.to(torch.int64)
    scale = float(scale)
    chosen = OPS.choose(queries.device.type)
    if chosen == "reference":
        return info_nce_reference(queries, features, image_index, positive_index, excluded_centres, grid_width,
                                  radius, scale)
    op = torch.ops.spsr_fast.info_nce if chosen == "native" else torch.ops.spsr_fast.info_nce_triton
    loss, _ = op(queries, features, image_index, positive_index,
                 excluded_centres, grid_width, radius, scale)
    return loss


def info_nce_mean(queries: torch.Tensor, features: torch.Tensor, image_index: torch.Tensor,
                  positive_index: torch.Tensor, excluded_centres: torch.Tensor, grid_width: int, radius: int,
                  scale: float = 64.0) -> torch.Tensor:
    """Mean over rows of info_nce(...): the contrastive-prediction training loss."""
    return info_nce(queries, features, image_index, positive_index, excluded_centres, grid_width, radius,
                    scale).mean()


def _fake_forward(queries, features, image_index, positive_index, excluded_centres, grid_width, radius, scale):
    dtype = info_nce_loss_dtype(queries.dtype)
    n = queries.shape[0]
    return (torch.empty(n, dtype=dtype, device=queries.device),
            torch.empty(n, dtype=dtype, device=queries.device))


def _fake_backward(grad_loss, queries, features, image_index, positive_index, excluded_centres, lse, grid_width,
                   radius, scale):
    return (torch.empty(queries.shape, dtype=queries.dtype, device=queries.device),
            torch.empty(features.shape, dtype=features.dtype, device=features.device))


def _setup_context(ctx, inputs, output):
    queries, features, image_index, positive_index, excluded_centres, grid_width, radius, scale = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(queries, features, image_index, positive_index, excluded_centres, lse)
    ctx.geometry = (grid_width, radius, scale)


def _make_backward(backward_op):
    def backward(ctx, grad_loss, _grad_lse):
        queries, features, image_index, positive_index, excluded_centres, lse = ctx.saved_tensors
        dq, df = backward_op(grad_loss, queries, features, image_index, positive_index, excluded_centres, lse,
                             *ctx.geometry)
        return dq, df, None, None, None, None, None, None
    return backward


if _extension.LOADED and hasattr(torch.ops.spsr_fast, "info_nce"):
    torch.library.register_fake("spsr_fast::info_nce")(_fake_forward)
    torch.library.register_fake("spsr_fast::info_nce_backward")(_fake_backward)
    torch.library.register_autograd(
        "spsr_fast::info_nce", _make_backward(lambda *a: torch.ops.spsr_fast.info_nce_backward(*a)),
        setup_context=_setup_context)


def _register_triton_ops() -> None:
    """The Triton ops; registered only where Triton can run (a GPU, or TRITON_INTERPRET=1),
    because torch.library.triton_op imports the compiler stack (~1.6 s of start-up)."""

    @torch.library.triton_op("spsr_fast::info_nce_triton", mutates_args=())
    def _info_nce_triton(queries: torch.Tensor, features: torch.Tensor, image_index: torch.Tensor,
                         positive_index: torch.Tensor, excluded_centres: torch.Tensor, grid_width: int, radius: int,
                         scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        from .._triton import info_nce as kernels

        return kernels.forward(queries, features, image_index, positive_index, excluded_centres, grid_width, radius,
                               scale, launch=torch.library.wrap_triton)


    @torch.library.triton_op("spsr_fast::info_nce_backward_triton", mutates_args=())
    def _info_nce_backward_triton(grad_loss: torch.Tensor, queries: torch.Tensor, features: torch.Tensor,
                                  image_index: torch.Tensor, positive_index: torch.Tensor,
                                  excluded_centres: torch.Tensor, lse: torch.Tensor, grid_width: int, radius: int,
                                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        from .._triton import info_nce as kernels

        return kernels.backward(grad_loss, queries, features, image_index, positive_index, excluded_centres, lse,
                                grid_width, radius, scale, launch=torch.library.wrap_triton)


    # Explicit fakes: shape propagation needs no kernel, and the Triton interpreter (CPU
    # tests) cannot run on fake tensors.
    _info_nce_triton.register_fake(_fake_forward)
    _info_nce_backward_triton.register_fake(_fake_backward)
    torch.library.register_autograd(
        "spsr_fast::info_nce_triton", _make_backward(lambda *a: torch.ops.spsr_fast.info_nce_backward_triton(*a)),
        setup_context=_setup_context)


if _backend.triton_usable():
    _register_triton_ops()
