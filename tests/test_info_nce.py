"""info_nce: every backend against the float64 reference, values and gradients."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from spsr_fast.ops import backend, info_nce, info_nce_mean
from spsr_fast.ops._reference import info_nce_candidate_mask, info_nce_reference

from helpers import assert_close_to_truth

HALF = (torch.float16, torch.bfloat16)


@dataclass
class Problem:
    queries: torch.Tensor  # float64 masters; each check casts them
    features: torch.Tensor
    image_index: torch.Tensor
    positive_index: torch.Tensor
    excluded_centres: torch.Tensor
    grid_width: int
    radius: int

    def args(self, dtype, device="cpu", requires_grad=True):
        q = self.queries.to(device=device, dtype=dtype, copy=True).requires_grad_(requires_grad)
        f = self.features.to(device=device, dtype=dtype, copy=True).requires_grad_(requires_grad)
        rest = [t.to(device) for t in (self.image_index, self.positive_index, self.excluded_centres)]
        return [q, f, *rest, self.grid_width, self.radius]


def make_problem(n, images, height, width, dim, centres=3, radius=2, seed=0, similar=0.0):
    """Random queries/features; each row's positive is its target, its excluded centres are the
    target and context cells around it. similar > 0 pulls every vector towards one direction
    (near-identical vectors: all logits close to +scale)."""
    g = torch.Generator().manual_seed(seed)
    length = height * width
    queries = torch.randn(n, dim, generator=g, dtype=torch.float64)
    features = torch.randn(images, length, dim, generator=g, dtype=torch.float64)
    if similar:
        base = torch.randn(dim, generator=g, dtype=torch.float64)
        queries = base + (1 - similar) * queries
        features = base + (1 - similar) * features
    image_index = torch.randint(0, images, (n,), generator=g)
    positive = torch.randint(0, length, (n,), generator=g)
    target = torch.stack([positive // width, positive % width], dim=1)
    offsets = torch.randint(-3, 4, (n, centres, 2), generator=g)
    offsets[:, 0] = 0  # centre 0 is the target itself
    return Problem(queries, features, image_index, positive, target[:, None, :] + offsets, width, radius)


def assert_fp32_close(actual, truth, what, reference_fp32=None):
    """fp32: 1e-5 relative to the largest magnitude (logits are scaled by `scale`, so errors
    scale too), or, for ill-conditioned inputs (huge scales), no more than 2x the error of
    the fp32 reference against the same float64 truth."""
    truth = truth.double()
    atol = 1e-5 * max(1.0, truth.abs().max().item()) if truth.numel() else 1e-5
    if reference_fp32 is not None and truth.numel():
        atol = max(atol, 2 * (reference_fp32.double() - truth).abs().max().item())
    torch.testing.assert_close(actual.double(), truth, rtol=1e-5, atol=atol, msg=lambda m: f"{what}: {m}")


def check_backend(name, problem, dtype, device="cpu", scale=64.0):
    args = problem.args(dtype, device)
    with backend(name):
        loss = info_nce(*args, scale=scale)
    truth_args = problem.args(torch.float64, device)
    truth = info_nce_reference(*truth_args, scale=scale)
    same_args = problem.args(dtype, device)
    same = info_nce_reference(*same_args, scale=scale)
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.shape == truth.shape and loss.dtype == expected_dtype and loss.device == args[0].device

    g = torch.rand(truth.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    grads = torch.autograd.grad(loss, args[:2], g.to(loss.dtype))
    grads_truth = torch.autograd.grad(truth, truth_args[:2], g)
    grads_same = torch.autograd.grad(same, same_args[:2], g.to(same.dtype))
    for what, a, s, t in zip(("loss", "grad queries", "grad features"), (loss, *grads), (same, *grads_same),
                             (truth, *grads_truth)):
        assert a.dtype == (loss.dtype if what == "loss" else dtype) and a.shape == t.shape, what
        if dtype in HALF:
            assert_close_to_truth(a, s, t, dtype, what)
        elif dtype == torch.float32:
            assert_fp32_close(a, t, what, s)
        else:
            torch.testing.assert_close(a, t, rtol=1e-9, atol=1e-9, msg=lambda m: f"{what}: {m}")
    return loss


# (n, images, height, width, dim, centres, radius): n not a multiple of any tile, an image
# without queries (images > rows of one image is likely), D = 32 and 64 and odd D.
CPU_CASES = [
    (37, 3, 11, 13, 32, 3, 2),
    (130, 2, 9, 30, 64, 5, 3),
    (5, 4, 6, 7, 5, 1, 1),
    (67, 1, 16, 16, 17, 3, 0),
]
CASE_IDS = ["n37-D32", "n130-D64", "n5-D5-sparse-images", "n67-D17-r0"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("case", CPU_CASES, ids=CASE_IDS)
def test_cpu_kernel_matches_reference(case, dtype):
    n, images, h, w, d, k, r = case
    check_backend("native", make_problem(n, images, h, w, d, k, r), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("dim", [32, 64])
def test_cpu_kernel_ten_thousand_candidates(dim, dtype):
    check_backend("native", make_problem(45, 2, 100, 100, dim, 3, 3, seed=2), dtype)


@pytest.mark.parametrize("scale, similar", [(64.0, 0.999), (400.0, 0.0), (1e-3, 0.0)],
                         ids=["near-identical", "huge-logits", "tiny-logits"])
@pytest.mark.parametrize("name", ["native", "reference"])
def test_logsumexp_is_stable(name, scale, similar):
    problem = make_problem(50, 2, 20, 25, 32, 3, 2, seed=3, similar=similar)
    loss = check_backend(name, problem, torch.float32, scale=scale)
    assert torch.isfinite(loss).all()


def test_rows_with_few_or_no_valid_negatives():
    # radius 6 on a 9 x 9 grid: centres in the middle exclude everything but the positive
    problem = make_problem(24, 2, 9, 9, 16, 3, 6, seed=4)
    problem.excluded_centres[:12] = 4  # rows 0..11: every cell within distance 5 of (4, 4)
    problem.positive_index[:12] = 4 * 9 + 4
    q, f, *rest = problem.args(torch.float32)
    valid = info_nce_candidate_mask(rest[1], rest[2], 81, 9, 6)
    assert (valid[:12].sum(1) == 1).all() and (valid[12:].sum(1) <= 40).all()  # the rest: few
    with backend("native"):
        loss = info_nce(q, f, *rest)
    loss.sum().backward()
    assert torch.equal(loss[:12], torch.zeros(12))
    assert torch.equal(q.grad[:12], torch.zeros(12, 16))
    check_backend("native", problem, torch.float32)
    check_backend("native", problem, torch.float64)


def test_strided_and_map_shaped_inputs():
    problem = make_problem(20, 2, 6, 8, 12, 3, 2, seed=5)
    q_big = torch.randn(20, 30)
    q_big[:, ::2][:, :12] = problem.queries.float()  # every other column
    q = q_big[:, ::2][:, :12].requires_grad_(True)
    assert not q.is_contiguous()
    fmap = problem.features.float().transpose(1, 2).contiguous().reshape(2, 12, 6, 8).requires_grad_(True)  # (B, D, H', W')
    features = fmap.flatten(2).transpose(1, 2)  # (B, L, D) view, D not innermost
    assert not features.is_contiguous()
    rest = problem.args(torch.float32)[2:]
    with backend("native"):
        loss = info_nce(q, features, *rest)
        loss_hwd = info_nce(q, fmap.permute(0, 2, 3, 1), *rest)  # (B, H', W', D)
    truth = info_nce_reference(*problem.args(torch.float64))
    assert_fp32_close(loss, truth, "strided")
    assert_fp32_close(loss_hwd, truth, "map-shaped")
    (loss.sum() + loss_hwd.sum()).backward()
    assert q.grad.shape == q.shape and fmap.grad.shape == fmap.shape


def test_cpu_kernel_gradcheck():
    problem = make_problem(11, 2, 5, 6, 7, 2, 2, seed=6)
    q, f, *rest = problem.args(torch.float64)
    with backend("native"):
        assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, *rest, scale=3.0), (q, f))


def test_mean_helper():
    problem = make_problem(19, 2, 5, 6, 8, 2, 1, seed=7)
    args = problem.args(torch.float32, requires_grad=False)
    with backend("native"):
        torch.testing.assert_close(info_nce_mean(*args), info_nce(*args).mean())


def test_opcheck_native():
    problem = make_problem(13, 2, 5, 6, 8, 2, 1, seed=8)
    q, f, img, pos, cen, w, r = problem.args(torch.float32)
    args = (torch.nn.functional.normalize(q.detach()), torch.nn.functional.normalize(f.detach(), dim=-1), img, pos,
            cen, w, r, 64.0)
    torch.library.opcheck(torch.ops.spsr_fast.info_nce.default,
                          (args[0].requires_grad_(True), args[1].requires_grad_(True), *args[2:]))
    _, lse = torch.ops.spsr_fast.info_nce(*args)
    torch.library.opcheck(torch.ops.spsr_fast.info_nce_backward.default,
                          (torch.rand(13), args[0].detach(), args[1].detach(), img, pos, cen, lse, w, r, 64.0))


def test_torch_compile_fullgraph_cpu():
    problem = make_problem(21, 2, 6, 7, 8, 2, 1, seed=9)
    q, f, *rest = problem.args(torch.float32)

    def loss_fn(a, b):
        return info_nce_mean(a * 2.0, b, *rest)

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    with backend("native"):
        loss = compiled(q, f)
    loss.backward()
    q2, f2, *_ = problem.args(torch.float32)
    loss_ref = info_nce_reference(q2 * 2.0, f2, *rest).mean()
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(q.grad, q2.grad)
    torch.testing.assert_close(f.grad, f2.grad)


def test_empty_and_unused_images():
    problem = make_problem(0, 2, 4, 4, 8)
    q, f, *rest = problem.args(torch.float32)
    for name in ("native", "reference"):
        with backend(name):
            loss = info_nce(q, f, *rest)
        assert loss.shape == (0,)
        loss.sum().backward()
        assert f.grad.shape == f.shape and not f.grad.any()
        f.grad = None


def test_reference_by_hand():
    # one image, a 1 x 3 grid, radius 1 excludes only the target cell itself (0, 1)
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    f = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]], dtype=torch.float64)
    centres = torch.tensor([[[0, 1]]])
    args = (q, f, torch.tensor([0]), torch.tensor([0]), centres, 3, 1)
    # positive 0 (cos 1), candidate 1 excluded, candidate 2 (cos 0): log(e^s + 1) - s
    s = 2.0
    expected = torch.log(torch.exp(torch.tensor(s, dtype=torch.float64)) + 1) - s
    torch.testing.assert_close(info_nce_reference(*args, scale=s), expected.reshape(1))
    with backend("native"):
        torch.testing.assert_close(info_nce(*args, scale=s), expected.reshape(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", [(37, 3, 11, 13, 32, 3, 2), (70, 2, 5, 9, 5, 2, 1)], ids=["n37-D32", "n70-D5"])
def test_triton_kernel_matches_reference(case, dtype, triton_device):
    n, images, h, w, d, k, r = case
    check_backend("triton", make_problem(n, images, h, w, d, k, r, seed=10), dtype, device=triton_device)


def test_triton_kernel_float64_unused_image_and_stability(triton_device):
    problem = make_problem(9, 3, 5, 6, 8, 2, 1, seed=11)
    problem.image_index[problem.image_index == 1] = 2  # image 1: no rows, zero feature gradient
    check_backend("triton", problem, torch.float64, device=triton_device)
    problem = make_problem(17, 2, 6, 7, 16, 3, 2, seed=12, similar=0.999)
    check_backend("triton", problem, torch.float32, device=triton_device, scale=400.0)


def test_opcheck_triton(triton_device):
    problem = make_problem(13, 2, 5, 6, 8, 2, 1, seed=13)
    q, f, img, pos, cen, w, r = problem.args(torch.float32, triton_device)
    q = torch.nn.functional.normalize(q.detach()).requires_grad_(True)
    f = torch.nn.functional.normalize(f.detach(), dim=-1).requires_grad_(True)
    # The interpreter runs kernels eagerly on real storage, so AOT tracing is checked on the GPU only.
    utils = None if triton_device == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.spsr_fast.info_nce_triton.default, (q, f, img, pos, cen, w, r, 64.0),
                          test_utils=utils)
    _, lse = torch.ops.spsr_fast.info_nce_triton(q.detach(), f.detach(), img, pos, cen, w, r, 64.0)
    torch.library.opcheck(torch.ops.spsr_fast.info_nce_backward_triton.default,
                          (torch.rand(13, device=triton_device), q.detach(), f.detach(), img, pos, cen, lse, w, r,
                           64.0), test_utils=utils)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [(37, 3, 11, 13, 32, 3, 2), (300, 2, 100, 100, 32, 3, 3),
                                  (129, 2, 50, 40, 64, 5, 2)], ids=["small", "10k-D32", "D64"])
def test_cuda_triton_matches_reference(case, dtype):
    n, images, h, w, d, k, r = case
    check_backend("triton", make_problem(n, images, h, w, d, k, r, seed=14), dtype, device="cuda")


def test_backend_switch_routes_calls():
    args = make_problem(6, 2, 4, 4, 8).args(torch.float32)
    with backend("reference"):
        assert "IndexCopy" in info_nce(*args).grad_fn.name()
    with backend("native"):
        assert "IndexCopy" not in info_nce(*args).grad_fn.name()


def _good():
    return make_problem(4, 2, 3, 4, 8).args(torch.float32, requires_grad=False)


def _with(index, value):
    args = _good()
    args[index] = value
    return args


@pytest.mark.parametrize("args, kwargs, match, error", [
    (_with(0, torch.zeros(4, 8, 1)), {}, "queries must be 2-D", ValueError),
    (_with(1, torch.zeros(2, 12)), {}, "features must be", ValueError),
    (_with(0, torch.zeros(4, 8, dtype=torch.int32)), {}, "queries must be a floating-point", TypeError),
    (_with(1, torch.zeros(2, 12, 8, dtype=torch.float64)), {}, "features has dtype", TypeError),
    (_with(1, torch.zeros(2, 12, 7)), {}, "features has D = 7", ValueError),
    (_with(2, torch.zeros(4)), {}, "image_index must be an integer", ValueError),
    (_with(2, torch.tensor([0, 1, 2, 0])), {}, r"image_index must lie in \[0, 2\)", ValueError),
    (_with(3, torch.tensor([0, 12, 0, 0])), {}, r"positive_index must lie in \[0, 12\)", ValueError),
    (_with(3, torch.zeros(3, dtype=torch.int64)), {}, "positive_index must be an integer tensor of shape", ValueError),
    (_with(4, torch.zeros(4, 2)), {}, "excluded_centres must be an integer", ValueError),
    (_with(5, 5), {}, "not a multiple of grid_width = 5", ValueError),
    (_with(5, 0), {}, "grid_width must be a positive int", ValueError),
    (_with(6, -1), {}, "radius must be an int >= 0", ValueError),
    (_good(), {"scale": float("nan")}, "scale must be a finite number", ValueError),
    (_with(0, "queries"), {}, "queries must be a torch.Tensor", TypeError),
])
def test_bad_input_is_named(args, kwargs, match, error):
    with pytest.raises(error, match=match):
        info_nce(*args, **kwargs)


def test_native_op_checks_its_arguments():
    q, f, img, pos, cen, w, r = _good()
    with pytest.raises(RuntimeError, match="positive_index must lie in"):
        torch.ops.spsr_fast.info_nce(q, f, img, pos + 100, cen, w, r, 64.0)
    with pytest.raises(RuntimeError, match="not a multiple of grid_width"):
        torch.ops.spsr_fast.info_nce(q, f, img, pos, cen, 5, r, 64.0)
    with pytest.raises(RuntimeError, match="excluded_centres must be int64"):
        torch.ops.spsr_fast.info_nce(q, f, img, pos, cen.int(), w, r, 64.0)
