"""Fused residual dense blocks (RDB, RRDB) against the torch.cat reference: values and
gradients of x, weights and biases, on every backend; the Triton conv kernel on its own."""
import os

import pytest
import torch
import torch.nn.functional as F

from spsr_fast.ops import backend, residual_dense_block, rrdb
from spsr_fast.ops._reference import residual_dense_block_reference, rrdb_reference

from helpers import assert_close_to_truth, make_input

HALF = (torch.float16, torch.bfloat16)


def make_params(nf, gc, blocks, dtype=torch.float32, device="cpu", seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for i in range(5 * blocks):
        k = i % 5
        c_in, c_out = nf + k * gc, (gc if k < 4 else nf)
        # scale so that activations stay O(1) through the blocks
        w = torch.randn((c_out, c_in, 3, 3), generator=g, dtype=torch.float64) * (1.0 / (9 * c_in)) ** 0.5
        b = torch.randn((c_out,), generator=g, dtype=torch.float64) * 0.1
        weights.append(w.to(device=device, dtype=dtype).requires_grad_(requires_grad))
        biases.append(b.to(device=device, dtype=dtype).requires_grad_(requires_grad))
    return weights, biases


OPS = {"rdb": (residual_dense_block, residual_dense_block_reference, 1),
       "rrdb": (rrdb, rrdb_reference, 3)}


def dense_blocks_on_pattern(x, weights, biases, positive, outer_residual, s=0.2):
    """The torch.cat formulation with each LeakyReLU's slope fixed by `positive[block][k]`
    (True: slope 1) instead of by the sign of its input: the network on one linear piece."""
    out = x
    for block in range(len(weights) // 5):
        features = [out]
        for k in range(4):
            pre = F.conv2d(torch.cat(features, 1), weights[5 * block + k], biases[5 * block + k], padding=1)
            features.append(torch.where(positive[block][k], pre, pre * 0.2))
        x5 = F.conv2d(torch.cat(features, 1), weights[5 * block + 4], biases[5 * block + 4], padding=1)
        out = x5 * s + out
    return out * s + x if outer_residual else out


def pre_activations(x, weights, biases):
    """conv1..conv4 outputs (before the LeakyReLU) of every block of the torch.cat formulation."""
    out, pre = x, []
    for block in range(len(weights) // 5):
        features = [out]
        for k in range(4):
            pre.append(F.conv2d(torch.cat(features, 1), weights[5 * block + k], biases[5 * block + k], padding=1))
            features.append(F.leaky_relu(pre[-1], 0.2))
        out = F.conv2d(torch.cat(features, 1), weights[5 * block + 4], biases[5 * block + 4], padding=1) * 0.2 + out
    return pre


RAW_OPS = {"native": lambda: torch.ops.spsr_fast.dense_blocks, "triton": lambda: torch.ops.spsr_fast.dense_blocks_triton}


def check_backend(name, op, shape, gc, dtype, layout="channels_last", device="cpu"):
    """Forward against the float64 truth; gradients against the float64 truth *on the fused
    run's own linear piece*. LeakyReLU's derivative jumps at 0, and any run below float64
    rounds pre-activations that lie within its rounding error of 0 to either sign: one ulp
    more or less then moves a whole term of a weight gradient by 0.8x (fp16 weights[11] of
    the 1x64x9x6 RRDB: 0.031 off the truth, 0.0002 on the same piece; the torch.cat
    reference with its residual add rounded once instead of twice fails the plain comparison
    on 3 of 10 seeds). So the test checks (1) the fused run picked the truth's slope for every
    pre-activation farther from 0 than 2x the same-dtype reference's pre-activation error
    (the forward rule), and (2) its gradients are as accurate as the same-dtype reference's,
    both evaluated with the fused run's slopes."""
    fused_fn, reference_fn, blocks = OPS[op]
    outer = op == "rrdb"
    x = make_input(shape, dtype, layout, device=device, requires_grad=True)
    weights, biases = make_params(shape[1], gc, blocks, dtype, device)
    with backend(name):
        y = fused_fn(x, weights, biases)
    leaves = [x, *weights, *biases]
    n = 5 * blocks

    def detached(dtype_):
        return [t.detach().to(dtype_).requires_grad_(True) for t in leaves]

    truth_leaves, same_leaves = detached(torch.float64), detached(dtype)
    truth = reference_fn(truth_leaves[0], truth_leaves[1:1 + n], truth_leaves[1 + n:])
    same = reference_fn(same_leaves[0], same_leaves[1:1 + n], same_leaves[1 + n:])
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert_close_to_truth(y, same, truth, dtype, "forward")

    # the slopes the fused run took: the signs of the LeakyReLU outputs in its buffers
    with torch.no_grad():
        out, buffers = RAW_OPS[name]()(x, weights, biases, 0.2, outer, True)
        assert torch.equal(out, y), "the op is not deterministic: its buffers are not those of y"
        nf = shape[1]
        positive = [[buf[:, nf + k * gc:nf + (k + 1) * gc] > 0 for k in range(4)] for buf in buffers]
        pre_truth = pre_activations(truth_leaves[0], truth_leaves[1:1 + n], truth_leaves[1 + n:])
        pre_same = pre_activations(same_leaves[0], same_leaves[1:1 + n], same_leaves[1 + n:])
        for i, (fused_positive, p64, p_same) in enumerate(zip(
                (p for block in positive for p in block), pre_truth, pre_same)):
            bound = 2 * (p_same.double() - p64).abs().max() + torch.finfo(dtype).eps * p64.abs().max()
            wrong = (fused_positive != (p64 > 0)) & (p64.abs() > bound)
            assert not wrong.any(), (f"block {i // 4} conv{i % 4 + 1}: {int(wrong.sum())} LeakyReLU slopes differ "
                                     f"from the truth's at pre-activations farther than {bound:.3g} from 0")

    truth_piece = dense_blocks_on_pattern(truth_leaves[0], truth_leaves[1:1 + n], truth_leaves[1 + n:],
                                          positive, outer)
    same_piece = dense_blocks_on_pattern(same_leaves[0], same_leaves[1:1 + n], same_leaves[1 + n:],
                                         positive, outer)
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(y, leaves, g.to(device=device, dtype=dtype))
    grads_truth = torch.autograd.grad(truth_piece, truth_leaves, g.to(device))
    grads_same = torch.autograd.grad(same_piece, same_leaves, g.to(device=device, dtype=dtype))
    names = ["x"] + [f"weights[{i}]" for i in range(n)] + [f"biases[{i}]" for i in range(n)]
    for what, got, want, want_same in zip(names, grads, grads_truth, grads_same):
        assert got.shape == want.shape and got.dtype == dtype, what
        assert_close_to_truth(got, want_same, want, dtype, f"gradient of {what}")


# nf=64/gc=32 (trunk) and nf=128/gc=32 (gradient branch, fusion); odd sizes, batch 1 and > 1;
# fp32, fp16 and bf16 for RDB and RRDB (the nf=128 RRDB in fp32 only, to keep the file fast)
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
CPU_CASES = [("rdb", (2, 64, 5, 7), 32, F32), ("rdb", (2, 64, 5, 7), 32, F16), ("rdb", (2, 64, 5, 7), 32, BF16),
             ("rdb", (1, 128, 7, 9), 32, F32), ("rdb", (1, 128, 7, 9), 32, F16),
             ("rrdb", (1, 64, 9, 6), 32, F32), ("rrdb", (1, 64, 9, 6), 32, F16), ("rrdb", (1, 64, 9, 6), 32, BF16),
             ("rrdb", (2, 128, 3, 5), 32, F32),
             ("rrdb", (3, 8, 1, 11), 4, F32), ("rrdb", (3, 8, 1, 11), 4, F16), ("rrdb", (3, 8, 1, 11), 4, BF16)]


@pytest.mark.parametrize("op, shape, gc, dtype", CPU_CASES,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_native_matches_reference(op, shape, gc, dtype):
    check_backend("native", op, shape, gc, dtype)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_native_any_input_layout(layout):
    check_backend("native", "rrdb", (2, 8, 5, 6), 4, torch.float32, layout=layout)


@pytest.mark.parametrize("op", ["rdb", "rrdb"])
def test_native_gradcheck(op):
    fused_fn, _, blocks = OPS[op]
    x = make_input((2, 3, 3, 4), torch.float64, "channels_last", requires_grad=True)
    weights, biases = make_params(3, 2, blocks, torch.float64)
    n = 5 * blocks
    with backend("native"):
        assert torch.autograd.gradcheck(lambda x_, *p: fused_fn(x_, list(p[:n]), list(p[n:])),
                                        (x, *weights, *biases), fast_mode=True)


def test_opcheck_native():
    x = make_input((2, 4, 3, 4), torch.float32, "channels_last", requires_grad=True)
    weights, biases = make_params(4, 2, 3)
    torch.library.opcheck(torch.ops.spsr_fast.dense_blocks.default, (x, weights, biases, 0.2, True, True))
    # without the buffers there is no backward: inference inputs
    detached = [[t.detach() for t in ts] for ts in (weights, biases)]
    torch.library.opcheck(torch.ops.spsr_fast.dense_blocks.default, (x.detach(), *detached, 0.2, True, False))
    torch.library.opcheck(torch.ops.spsr_fast.dense_blocks.default, (x, weights[:5], biases[:5], 0.2, False, True))


def test_buffers_hold_the_concatenated_features():
    x = make_input((1, 8, 4, 5), torch.float64, "contiguous")
    weights, biases = make_params(8, 4, 3, torch.float64)
    out, buffers = torch.ops.spsr_fast.dense_blocks(x, weights, biases, 0.2, True, True)
    assert len(buffers) == 3 and all(b.is_contiguous(memory_format=torch.channels_last) for b in buffers)
    torch.testing.assert_close(buffers[0][:, :8], x)
    x1 = F.leaky_relu(F.conv2d(x, weights[0], biases[0], padding=1), 0.2)
    torch.testing.assert_close(buffers[0][:, 8:12], x1)
    torch.testing.assert_close(buffers[1][:, :8], residual_dense_block_reference(x, weights[:5], biases[:5]))
    with torch.no_grad():
        out2, none = torch.ops.spsr_fast.dense_blocks(x, weights, biases, 0.2, True, False)
    assert none == [] and torch.equal(out, out2)


def test_no_buffers_kept_without_grad():
    x = make_input((1, 8, 4, 5), torch.float32, "channels_last")
    weights, biases = make_params(8, 4, 3)
    with torch.no_grad(), backend("native"):
        y = rrdb(x, weights, biases)
    assert y.grad_fn is None
    x.requires_grad_(True)
    with backend("native"):
        y = rrdb(x, weights, biases)
    assert "DenseBlocks" in y.grad_fn.name() or "dense_blocks" in y.grad_fn.name().lower()


def test_empty_batch():
    x = torch.zeros(0, 8, 4, 4, requires_grad=True)
    weights, biases = make_params(8, 4, 3)
    with backend("native"):
        y = rrdb(x, weights, biases)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape and weights[0].grad.abs().sum() == 0


def test_torch_compile_fullgraph_with_grads():
    weights, biases = make_params(8, 4, 3)

    def loss_fn(x, weights, biases):
        return rrdb(x * 2.0, weights, biases).square().mean()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    x = make_input((2, 8, 5, 6), torch.float32, "channels_last", requires_grad=True)
    with backend("native"):
        loss = compiled(x, weights, biases)
    grads = torch.autograd.grad(loss, [x, *weights])
    with backend("reference"):
        loss_ref = loss_fn(x, weights, biases)
    grads_ref = torch.autograd.grad(loss_ref, [x, *weights])
    torch.testing.assert_close(loss, loss_ref)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_autocast_bfloat16_cpu():
    """Under autocast the fused blocks run wholly in the autocast dtype (residual adds too,
    like a model cast to bf16) and return x's dtype: the yardstick is the bf16 reference."""
    x = make_input((2, 16, 6, 5), torch.float32, "channels_last", requires_grad=True)
    weights, biases = make_params(16, 8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), backend("native"):
        y = rrdb(x, weights, biases)
    same = rrdb_reference(x.bfloat16(), [w.bfloat16() for w in weights], [b.bfloat16() for b in biases])
    truth = rrdb_reference(x.double(), [w.double() for w in weights], [b.double() for b in biases])
    assert y.dtype == torch.float32
    assert_close_to_truth(y, same, truth, torch.bfloat16, "autocast forward")
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and weights[0].grad.dtype == torch.float32
    assert weights[0].grad.abs().sum() > 0


@pytest.mark.parametrize("bad, match, error", [
    (lambda w, b: rrdb(torch.zeros(1, 8, 4), w, b), "rrdb: x must be 4-D", ValueError),
    (lambda w, b: rrdb(torch.zeros(1, 8, 4, 4, dtype=torch.int32), w, b), "x must be a floating-point", TypeError),
    (lambda w, b: rrdb(torch.zeros(1, 8, 4, 4), w[:14], b), "weights must be a list of 15", ValueError),
    (lambda w, b: residual_dense_block(torch.zeros(1, 8, 4, 4), w, b[:5]), "weights must be a list of 5", ValueError),
    (lambda w, b: rrdb(torch.zeros(1, 6, 4, 4), w, b), r"weights\[0\] has shape \(4, 8, 3, 3\), expected \(4, 6, 3, 3\)", ValueError),
    (lambda w, b: rrdb(torch.zeros(1, 8, 4, 4), w, b[:3] + [b[4]] + b[4:]), r"biases\[3\] has shape", ValueError),
    (lambda w, b: rrdb(torch.zeros(1, 8, 4, 4, dtype=torch.float64), w, b), r"weights\[0\] has dtype", TypeError),
    (lambda w, b: rrdb(torch.zeros(1, 8, 4, 4), w, "b"), "biases must be a list", ValueError),
    (lambda w, b: torch.ops.spsr_fast.dense_blocks(torch.zeros(1, 8, 4, 4), w[:4], b[:4], 0.2, True, False),
     "5 conv weights per dense block", RuntimeError),
    (lambda w, b: torch.ops.spsr_fast.dense_blocks(torch.zeros(1, 8, 4, 4), w[1:6], b[1:6], 0.2, True, False),
     r"weights\[0\] has shape", RuntimeError),
])
def test_bad_input_is_named(bad, match, error):
    weights, biases = make_params(8, 4, 3)
    with pytest.raises(error, match=match):
        bad([w.detach() for w in weights], [b.detach() for b in biases])


def test_backend_switch_routes_calls():
    x = make_input((1, 8, 4, 4), torch.float32, "channels_last", requires_grad=True)
    weights, biases = make_params(8, 4, 3)
    with backend("reference"):
        assert "AddBackward" in rrdb(x, weights, biases).grad_fn.name()
    with backend("native"):
        assert "AddBackward" not in rrdb(x, weights, biases).grad_fn.name()


def test_cuda_default_is_the_torch_cat_reference():
    """On CUDA the dense blocks run the torch.cat formulation (cuDNN on dense inputs) unless a
    fused path is asked for: neither fused path has been measured faster there (see
    CUDA_DEFAULT_REASON). On the CPU the fused kernel stays the default."""
    import warnings

    import importlib

    from spsr_fast.ops import dense_block

    gradient_map_module = importlib.import_module("spsr_fast.ops.gradient_map")

    ops = dense_block.OPS
    assert ops.default("cuda", assume_device=True) == ("reference", dense_block.CUDA_DEFAULT_REASON)
    assert ops.default("cpu")[0] == "native"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the chosen default is no fallback: no warning
        assert ops.choose("cuda") == "reference"
    with backend({"dense_block": "triton"}):  # opt-in for this op only
        assert ops.choose("cpu") == "triton"
        assert gradient_map_module.OPS.choose("cpu") == "native"


def test_per_op_backend_from_the_environment():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        from spsr_fast.ops import get_backend
        from spsr_fast.ops.dense_block import OPS
        print(get_backend(), get_backend("dense_block"), get_backend("gradient_map"), OPS.choose("cpu"))
    """)
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        env={**os.environ, "SPSR_FAST_BACKEND": "dense_block=reference, native"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["native", "reference", "native", "reference"]
    # the import never fails on a bad value (tests/test_import_startup.py); the first op to choose reports it
    bad = subprocess.run([sys.executable, "-c", "from spsr_fast.ops.dense_block import OPS; OPS.choose('cpu')"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SPSR_FAST_BACKEND": "dense_blocks=triton"})
    assert bad.returncode != 0 and "SPSR_FAST_BACKEND: unknown op 'dense_blocks'" in bad.stderr


# ------------------------------------------------------------------ Triton conv kernel

def conv_truth(x, w, b, epilogue, res=None, res2=None, scale=0.2):
    from spsr_fast._triton import conv3x3 as k
    acc = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    if epilogue == k.EPILOGUE_LRELU:
        return F.leaky_relu(acc, 0.2)
    acc = acc * scale + res.double()
    return acc * scale + res2.double() if epilogue == k.EPILOGUE_RRDB else acc


@pytest.mark.parametrize("epilogue", [0, 1, 2], ids=["lrelu", "residual", "rrdb"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B, H, W, c_in, c_out", [
    (1, 1, 1, 8, 8), (2, 5, 5, 20, 24), (1, 17, 3, 16, 16), (1, 3, 17, 33, 5), (2, 4, 9, 48, 32)])
def test_triton_conv3x3_in_place_on_buffer_slices(B, H, W, c_in, c_out, dtype, epilogue, triton_device):
    from spsr_fast._triton import conv3x3 as k
    g = torch.Generator().manual_seed(0)
    total = c_in + c_out + 3
    buffer = torch.randn((B, total, H, W), generator=g).to(triton_device, dtype).contiguous(
        memory_format=torch.channels_last)
    before = buffer.clone()
    w = (torch.randn((c_out, c_in, 3, 3), generator=g) / (9 * c_in) ** 0.5).to(triton_device, dtype)
    b = torch.randn((c_out,), generator=g).to(triton_device, dtype)
    res = torch.randn((B, c_out, H, W), generator=g).to(triton_device, dtype)
    res2 = torch.randn((B, c_out, H, W), generator=g).to(triton_device, dtype)  # NCHW: other strides
    x = buffer[:, :c_in]
    out = buffer[:, c_in:c_in + c_out]
    k.conv3x3(x, k.pack_weight(w), b, out, epilogue, res=res, res2=res2)
    truth = conv_truth(x, w, b, epilogue, res, res2)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=4e-3)
    torch.testing.assert_close(out.double(), truth, **tol)
    # channels outside the written slice are untouched
    assert torch.equal(buffer[:, :c_in], before[:, :c_in])
    assert torch.equal(buffer[:, c_in + c_out:], before[:, c_in + c_out:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("op, shape, gc", [("rrdb", (2, 8, 5, 3), 4), ("rdb", (1, 64, 3, 5), 32),
                                           ("rrdb", (1, 16, 1, 17), 8)])
def test_triton_matches_reference(op, shape, gc, dtype, triton_device):
    check_backend("triton", op, shape, gc, dtype, device=triton_device)


def test_opcheck_triton(triton_device):
    x = make_input((1, 8, 3, 4), torch.float32, "channels_last", device=triton_device, requires_grad=True)
    weights, biases = make_params(8, 4, 1, device=triton_device)
    # The interpreter runs kernels eagerly on real storage: AOT tracing is checked on the GPU only.
    utils = None if triton_device == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.spsr_fast.dense_blocks_triton.default,
                          (x, weights, biases, 0.2, False, True), test_utils=utils)


# ------------------------------------------------------------------ GPU

@pytest.mark.cuda
@pytest.mark.parametrize("name", ["native", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape, gc", [((2, 64, 17, 23), 32), ((1, 128, 33, 20), 32), ((3, 64, 1, 5), 32)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"gc{v}")
def test_cuda_backends_match_reference(name, shape, gc, dtype):
    check_backend(name, "rrdb", shape, gc, dtype, device="cuda")


@pytest.mark.cuda
def test_cuda_opcheck_and_compile():
    x = make_input((2, 64, 8, 8), torch.bfloat16, "channels_last", device="cuda", requires_grad=True)
    weights, biases = make_params(64, 32, 3, torch.bfloat16, "cuda")
    torch.library.opcheck(torch.ops.spsr_fast.dense_blocks.default, (x, weights, biases, 0.2, True, True))
    torch.library.opcheck(torch.ops.spsr_fast.dense_blocks_triton.default, (x, weights, biases, 0.2, True, True))
    for name in ("native", "triton"):
        with backend(name), torch.no_grad():
            compiled = torch.compile(lambda t: rrdb(t, weights, biases), fullgraph=True)
            got = compiled(x)
        with backend("reference"), torch.no_grad():
            want = rrdb(x, weights, biases)
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


# ------------------------------------------------------------------ whole networks

@pytest.mark.parametrize("arch", ["RRDBNet", "SPSRNet"])
def test_whole_network_same_with_fused_and_reference_blocks(arch):
    from spsr_fast import models

    torch.manual_seed(0)
    model = getattr(models, arch)(nf=16, nb=4, gc=8)
    with torch.no_grad():  # the authors' init scale (0.1) makes the trunk nearly an identity
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.rand(2, 3, 7, 9)
    outputs = {}
    for name in ("reference", "native"):
        model.zero_grad()
        with backend(name):
            out = model(x)
        out = out if isinstance(out, tuple) else (out,)
        sum(o.square().mean() for o in out).backward()
        outputs[name] = ([o.detach() for o in out], [p.grad.clone() for p in model.parameters()])
    (out_ref, grads_ref), (out_fused, grads_fused) = outputs["reference"], outputs["native"]
    for got, want in zip(out_fused, out_ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_fused, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ Triton conv autotuning

DENSE_BLOCK_CONVS = sorted({(nf + k * 32, 32 if k < 4 else nf) for nf in (64, 128) for k in range(5)})


def test_triton_conv_autotune_key_buckets_the_pixel_count():
    """A new tile or batch shape must not re-run the autotuner: the key holds the pixel count's
    bucket (next power of two in [4096, 2^20]), never the count itself."""
    from spsr_fast._triton import conv3x3 as k
    assert k._autotuned_kernel.keys == ["C_in", "C_out", "PIXEL_BUCKET"]
    for batch in (1, 2, 4, 16):  # tiles a few pixels apart share a key
        assert k.pixel_bucket(batch * 128 * 128) == k.pixel_bucket(batch * 120 * 136) == batch * 128 * 128
    tiles_and_batches = [b * h * w for b in (1, 2, 4, 16) for h, w in ((128, 128), (120, 136), (200, 200))]
    buckets = {k.pixel_bucket(n) for n in tiles_and_batches}
    assert buckets == {1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 20}, buckets  # 12 shapes, 6 keys
    assert k.pixel_bucket(1) == k.pixel_bucket(4096) == 4096 and k.pixel_bucket(4097) == 8192
    assert k.pixel_bucket(10 ** 9) == 1 << 20


def test_triton_conv_launch_passes_the_bucket(monkeypatch):
    from spsr_fast._triton import conv3x3 as k
    seen = []

    def launch(kernel):
        class Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: seen.append(dict(zip(kernel.arg_names, args)))
        return Grid()

    x = torch.zeros(3, 8, 50, 60).contiguous(memory_format=torch.channels_last)
    k.conv3x3(x, k.pack_weight(torch.zeros(4, 8, 3, 3)), torch.zeros(4), torch.zeros(3, 4, 50, 60), 0,
              launch=launch)
    assert seen[0]["n_pixels"] == 9000 and seen[0]["PIXEL_BUCKET"] == 16384
    assert seen[0]["C_in"] == 8 and seen[0]["C_out"] == 4


@pytest.mark.parametrize("c_in, c_out", DENSE_BLOCK_CONVS, ids=lambda v: str(v))
def test_triton_conv_candidates_per_conv(c_in, c_out):
    """Per conv of the nf 64 / nf 128 dense blocks: at most 4 timed candidates, BLOCK_N = C_out,
    BLOCK_K dividing C_in; float32 one config (nothing timed)."""
    from spsr_fast._triton import conv3x3 as k
    configs = k._configs()
    for ieee in (False, True):
        kept = [k._tile(c) for c in k._prune(configs, {"C_in": c_in, "C_out": c_out}, IEEE_DOT=ieee)]
        assert sorted(kept) == sorted(k.tiles_for(c_in, c_out, ieee)) and kept, kept
        assert len(kept) == 1 if ieee else 2 <= len(kept) <= 4, kept
        for block_m, block_n, block_k, warps, stages in kept:
            assert c_in % block_k == 0
            assert block_n == (min(c_out, 64) if ieee else c_out)


TRITON_CONV_COMPILE = """
    import inspect, json, os, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from spsr_fast._triton import conv3x3 as k

    # The launch's own specialisation (triton's JIT): integer 1 -> constexpr (the channel stride
    # of channels_last buffers), pointers and 16-divisible integers -> divisibility hint.
    # Without it every stride is a runtime value and each config compiles to a spilling kernel
    # that never runs.
    names = list(inspect.signature(k._conv3x3_kernel.fn).parameters)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    jobs = [(dtype, c) for c in k._configs() for dtype in
            (["fp32"] if k._tile(c) in k.tiles_for(64, c.kwargs["BLOCK_N"], True) else ["bf16"])]
    jobs.append(("fp16", k._configs()[-1]))
    for dtype, config in jobs:
        consts = dict(EPILOGUE=k.EPILOGUE_RRDB, IEEE_DOT=dtype == "fp32", **config.kwargs)
        signature, attrs = {}, {}
        for i, name in enumerate(names):
            if name in consts:
                signature[name] = "constexpr"
            elif name in ("sxc", "soc", "src", "s2c"):
                signature[name], consts[name] = "constexpr", 1
            elif name.endswith("_ptr"):
                signature[name], attrs[(i,)] = "*" + dtype, [["tt.divisibility", 16]]
            elif name == "scale":
                signature[name] = "fp32"
            else:
                signature[name] = "i32"
                if name not in ("H", "W"):
                    attrs[(i,)] = [["tt.divisibility", 16]]
        src = triton.compiler.ASTSource(fn=k._conv3x3_kernel, signature=signature, constexprs=consts, attrs=attrs)
        out = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                             options={"num_warps": config.num_warps, "num_stages": config.num_stages})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(out.asm["cubin"])
            f.flush()
            usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        print(json.dumps({"dtype": dtype, "tile": k._tile(config), "wgmma": "wgmma" in out.asm["ptx"],
                          "usage": [line.strip() for line in usage.splitlines() if "REG:" in line]}))
"""


def test_triton_conv_compiles_for_sm90_without_spills():
    """Every autotune config of the conv kernel lowers to sm_90 cubin with Triton's bundled
    compiler, GPU or not: tensor-core dtypes on WGMMA, and no config spills registers."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("triton.backends.nvidia")
    from spsr_fast._triton import conv3x3 as k
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(TRITON_CONV_COMPILE)], capture_output=True,
                            text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(compiled) == len(k._configs()) + 1
    for c in compiled:
        assert c["usage"] and all("STACK:0 " in u and "LOCAL:0 " in u for u in c["usage"]), c
        assert c["wgmma"] == (c["dtype"] != "fp32"), c
