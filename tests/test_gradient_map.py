"""gradient_map: every backend against the float64 reference, values and gradients."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import spsr_fast
from spsr_fast.ops import backend, gradient_map
from spsr_fast.ops._reference import gradient_map_authors, gradient_map_reference

from helpers import LAYOUTS, assert_close_to_truth, make_input

SHAPES = [(1, 1, 1, 1), (1, 1, 1, 37), (2, 3, 3, 517), (2, 3, 16, 16), (1, 5, 7, 1), (3, 2, 9, 12)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
HALF = (torch.float16, torch.bfloat16)


def check_backend(name, shape, dtype, layout, padding, device="cpu"):
    x = make_input(shape, dtype, layout, device=device, requires_grad=True)
    with backend(name):
        y = gradient_map(x, padding)
    # the truth: reference in float64; the yardstick for half: reference in the same dtype
    x64 = x.detach().double().requires_grad_(True)
    truth = gradient_map_reference(x64, padding)
    x_same = x.detach().clone().requires_grad_(True)
    same = gradient_map_reference(x_same, padding)
    assert y.shape == truth.shape and y.dtype == dtype and y.device == x.device
    assert_close_to_truth(y, same, truth, dtype, "forward")
    if layout == "channels_last" and shape[1] > 1 and min(shape[2:]) > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)

    g = torch.rand(truth.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (dx,) = torch.autograd.grad(y, x, g.to(device=device, dtype=dtype))
    (dx_truth,) = torch.autograd.grad(truth, x64, g.to(device=device))
    (dx_same,) = torch.autograd.grad(same, x_same, g.to(device=device, dtype=dtype))
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close_to_truth(dx, dx_same, dx_truth, dtype, "gradient")


@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_kernel_matches_reference(shape, dtype, layout, padding):
    check_backend("native", shape, dtype, layout, padding)


@pytest.mark.parametrize("padding", [1, 2])
def test_authors_formulation_matches_reference(padding):
    x = make_input((2, 3, 11, 13), torch.float64, "contiguous")
    torch.testing.assert_close(gradient_map_authors(x, padding), gradient_map_reference(x, padding))


def test_reference_matches_formula_by_hand():
    x = torch.tensor([[[[1.0, 2.0, 4.0], [0.0, 3.0, 9.0]]]], dtype=torch.float64)
    # centre (0, 1): v = x[1,1] - 0 = 3, h = 4 - 1 = 3; padding 2 corner (-1,-1) sees nothing.
    y1 = gradient_map_reference(x, 1)
    assert y1[0, 0, 0, 1].item() == pytest.approx((9 + 9 + 1e-6) ** 0.5)
    y2 = gradient_map_reference(x, 2)
    assert y2.shape == (1, 1, 4, 5)
    assert y2[0, 0, 0, 0].item() == pytest.approx(1e-3)
    # centre (-1, 0): v = x[0,0] - 0 = 1, h = 0
    assert y2[0, 0, 0, 1].item() == pytest.approx((1 + 1e-6) ** 0.5)


@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpu_kernel_gradcheck(padding, layout):
    x = make_input((2, 3, 5, 6), torch.float64, layout, requires_grad=True)
    with backend("native"):
        assert torch.autograd.gradcheck(lambda t: gradient_map(t, padding), (x,))


@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck_native(padding, layout):
    x = make_input((2, 3, 5, 7), torch.float32, layout, requires_grad=True)
    torch.library.opcheck(torch.ops.spsr_fast.gradient_map.default, (x, padding))
    g = torch.randn(gradient_map_reference(x, padding).shape)
    torch.library.opcheck(torch.ops.spsr_fast.gradient_map_backward.default, (g, x.detach(), padding))


@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 37), (1, 2, 33, 3)], ids=lambda s: "x".join(map(str, s)))
def test_triton_kernel_matches_reference(shape, dtype, layout, padding, triton_device):
    check_backend("triton", shape, dtype, layout, padding, device=triton_device)


@pytest.mark.parametrize("padding", [1, 2])
def test_opcheck_triton(padding, triton_device):
    x = make_input((1, 2, 4, 5), torch.float32, "contiguous", device=triton_device, requires_grad=True)
    # The interpreter runs kernels eagerly on real storage, so AOT tracing (which hands the
    # kernel functional tensors) is checked on the GPU only.
    utils = None if triton_device == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.spsr_fast.gradient_map_triton.default, (x, padding), test_utils=utils)
    g = torch.randn(gradient_map_reference(x, padding).shape, device=triton_device)
    torch.library.opcheck(torch.ops.spsr_fast.gradient_map_backward_triton.default, (g, x.detach(), padding),
                          test_utils=utils)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["native", "triton"])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES + [(4, 3, 130, 257)], ids=lambda s: "x".join(map(str, s)))
def test_cuda_kernels_match_reference(name, shape, dtype, layout, padding):
    check_backend(name, shape, dtype, layout, padding, device="cuda")


@pytest.mark.cuda
def test_cuda_opcheck_and_gradcheck():
    x = make_input((2, 3, 5, 7), torch.float64, "contiguous", device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.spsr_fast.gradient_map.default, (x, 2))
    with backend("native"):
        assert torch.autograd.gradcheck(lambda t: gradient_map(t, 2), (x,))


def test_torch_compile_fullgraph_cpu():
    def loss_fn(x):
        return gradient_map(x * 2.0, 2).square().mean() + gradient_map(x, 1).mean()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    x = make_input((2, 3, 8, 9), torch.float32, "contiguous", requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    loss = compiled(x)
    loss.backward()
    with backend("reference"):
        loss_ref = loss_fn(x_ref)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.slow
def test_torch_compile_inductor_cpu():
    compiled = torch.compile(lambda x: gradient_map(x, 1) * 2, fullgraph=True)
    x = make_input((1, 3, 8, 8), torch.float32, "contiguous")
    torch.testing.assert_close(compiled(x), gradient_map_reference(x, 1) * 2)


@pytest.mark.parametrize("bad, match, error", [
    (lambda: gradient_map(torch.zeros(3, 4, 4)), "x must be 4-D", ValueError),
    (lambda: gradient_map(torch.zeros(1, 1, 4, 4, dtype=torch.int32)), "x must be a floating-point", TypeError),
    (lambda: gradient_map(torch.zeros(1, 1, 4, 4), padding=3), "padding must be 1 or 2", ValueError),
    (lambda: gradient_map(torch.zeros(1, 1, 4, 4), padding=True), "padding must be 1 or 2", ValueError),
    (lambda: gradient_map([[1.0]]), "x must be a torch.Tensor", TypeError),
    (lambda: torch.ops.spsr_fast.gradient_map(torch.zeros(4, 4), 1), "x must be 4-D", RuntimeError),
    (lambda: torch.ops.spsr_fast.gradient_map(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 1), "floating-point", RuntimeError),
    (lambda: torch.ops.spsr_fast.gradient_map(torch.zeros(1, 1, 4, 4), 0), "padding must be 1 or 2", RuntimeError),
    (lambda: torch.ops.spsr_fast.gradient_map_backward(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), 2), "grad_out has shape", RuntimeError),
])
def test_bad_input_is_named(bad, match, error):
    with pytest.raises(error, match=match):
        bad()


def test_empty_batch():
    x = torch.zeros(0, 3, 4, 4, requires_grad=True)
    y = gradient_map(x, 2)
    assert y.shape == (0, 3, 6, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_backend_switch_routes_calls():
    x = make_input((1, 2, 4, 4), torch.float32, "contiguous", requires_grad=True)
    with backend("reference"):
        assert "SqrtBackward" in gradient_map(x).grad_fn.name()
    with backend("native"):
        assert "SqrtBackward" not in gradient_map(x).grad_fn.name()
    assert spsr_fast.ops.get_backend() is None
    with pytest.raises(ValueError, match="backend\\(name\\) must be one of"):
        with backend("cudnn"):
            pass


def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("SPSR_FAST_BACKEND", "TRITON_INTERPRET")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


def test_env_variable_chooses_and_is_validated():
    ok = run_python("""
        import torch, spsr_fast
        from spsr_fast.ops import gradient_map
        y = gradient_map(torch.rand(1, 1, 3, 3, requires_grad=True))
        print(y.grad_fn.name())
    """, SPSR_FAST_BACKEND="reference")
    assert ok.returncode == 0, ok.stderr
    assert "SqrtBackward" in ok.stdout
    bad = run_python("import spsr_fast", SPSR_FAST_BACKEND="fastest")
    assert bad.returncode != 0 and "SPSR_FAST_BACKEND must be one of" in bad.stderr


def test_forced_triton_on_cpu_without_interpreter_is_an_error():
    result = run_python("""
        import torch
        from spsr_fast.ops import backend, gradient_map
        with backend("triton"):
            gradient_map(torch.rand(1, 1, 3, 3))
    """)
    if "CUDA" in result.stdout:  # pragma: no cover
        pytest.skip("GPU machine")
    assert result.returncode != 0
    assert "backend 'triton' was requested but is unavailable on cpu" in result.stderr


def test_missing_extension_falls_back_with_one_warning():
    result = run_python("""
        import sys, warnings
        sys.modules["spsr_fast._C"] = None  # as if the extension was never built
        import torch
        from spsr_fast.ops import gradient_map
        from spsr_fast.ops._reference import gradient_map_reference
        x = torch.rand(2, 3, 5, 5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y1 = gradient_map(x)
            y2 = gradient_map(x)
        messages = [str(w.message) for w in caught if "falls back" in str(w.message)]
        assert len(messages) == 1, messages
        assert torch.equal(y1, gradient_map_reference(x))
        print(messages[0])
    """)
    assert result.returncode == 0, result.stderr
    assert "slow PyTorch reference" in result.stdout and "spsr_fast._C is not built" in result.stdout
