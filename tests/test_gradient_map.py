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
    bad = run_python("import torch, spsr_fast; spsr_fast.ops.gradient_map(torch.rand(1, 1, 3, 3))",
                     SPSR_FAST_BACKEND="fastest")  # reported when an op runs (tests/test_import_startup.py)
    assert bad.returncode != 0 and "SPSR_FAST_BACKEND must be one of" in bad.stderr


def test_forced_triton_on_cpu_without_interpreter_is_an_error():
    """CPU tensors reach Triton only through its interpreter, GPU or not (run_python drops
    TRITON_INTERPRET)."""
    result = run_python("""
        import torch
        from spsr_fast.ops import backend, gradient_map
        with backend("triton"):
            gradient_map(torch.rand(1, 1, 3, 3))
    """)
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


AOT_COMPILE = """
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from spsr_fast._triton import gradient_map as k

    common = {"n": "i32", "C": "i32", "H": "i32", "W": "i32"}
    strides = lambda prefix: {f"s{prefix}{d}": "i32" for d in "bchw"}
    for dtype in ("fp32", "bf16"):
        for channels_last in (False, True):
            for padding in (1, 2):
                consts = dict(PADDING=padding, CHANNELS_LAST=channels_last, ACC=tl.float32, BLOCK=k.BLOCK)
                forward = {"x_ptr": "*" + dtype, "out_ptr": "*" + dtype, **common, "Ho": "i32", "Wo": "i32",
                           **strides("x"), **{c: "constexpr" for c in consts}}
                backward = {"g_ptr": "*" + dtype, "x_ptr": "*" + dtype, "dx_ptr": "*" + dtype, **common,
                            **strides("g"), **strides("x"), **{c: "constexpr" for c in consts}}
                for fn, sig in ((k._forward_kernel, forward), (k._backward_kernel, backward)):
                    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts)
                    out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
                    assert len(out.asm["cubin"]) > 0
                    print("compiled", fn.fn.__name__, dtype, channels_last, padding)
"""


def test_triton_kernels_compile_for_sm90():
    """The Triton kernels lower to sm_90 cubin with Triton's bundled compiler, GPU or not
    (the interpreter accepts code that the GPU compiler rejects)."""
    pytest.importorskip("triton.backends.nvidia")
    result = run_python(AOT_COMPILE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 16


GRID_STRIDE_PROGRAM = r"""
#include <cstdio>
#include "grid_stride_math.h"
int main() {
  long long n, stride;
  while (std::scanf("%lld %lld", &n, &stride) == 2) std::printf("%d\n", spsr_fast::grid_stride_fits_int32(n, stride));
}
"""


def test_cuda_int32_index_predicate_covers_the_grid_stride_step(tmp_path):
    """The CUDA kernels take 32-bit indices when csrc/grid_stride_math.h says the grid-stride
    loop cannot overflow: checked against the loop itself, simulated with exact integers for
    sizes at the int32 limit (where `numel < INT32_MAX`, the old test, let the last step wrap)."""
    import shutil

    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH")
    source = tmp_path / "predicate.cpp"
    source.write_text(GRID_STRIDE_PROGRAM)
    csrc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    build = subprocess.run([compiler, "-std=c++17", "-O1", f"-I{csrc}", str(source), "-o", str(tmp_path / "predicate")],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr

    int32_max = 2 ** 31 - 1
    h200_stride = 132 * 32 * 256  # SMs x 32 blocks x 256 threads (csrc/cuda/gradient_map_cuda.cu)
    cases = [(n, stride) for stride in (256, h200_stride, 114 * 32 * 256)
             for n in (1, stride, 2 ** 30, int32_max - stride, int32_max - stride + 1, int32_max - stride + 2,
                       int32_max - 1, int32_max, int32_max + 1, 2 ** 33)]
    run = subprocess.run([str(tmp_path / "predicate")], input="".join(f"{n} {s}\n" for n, s in cases),
                         capture_output=True, text=True, timeout=60)
    got = [line == "1" for line in run.stdout.split()]

    def loop_stays_in_int32(n, stride):
        # every thread t < stride visits t, t + stride, ... and computes one step past n - 1
        last = max(t + (n - 1 - t) // stride * stride for t in (0, min(stride, n) - 1, (n - 1) % stride))
        return last + stride <= int32_max

    assert got == [loop_stays_in_int32(n, s) for n, s in cases]
    assert not got[cases.index((int32_max - 1, h200_stride))]  # numel < INT32_MAX, yet it overflows
