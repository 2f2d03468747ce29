"""Fused residual dense blocks (RDB, RRDB) against the torch.cat reference: values and
gradients of x, weights and biases, on every backend; the Triton conv kernel on its own."""
import pytest
import torch
import torch.nn.functional as F

from spsr_fast.ops import backend, residual_dense_block, rrdb
from spsr_fast.ops._reference import residual_dense_block_reference, rrdb_reference

from helpers import assert_close_to_truth, make_input

HALF = (torch.float16, torch.bfloat16)


def make_params(nf, gc, blocks, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for i in range(5 * blocks):
        k = i % 5
        c_in, c_out = nf + k * gc, (gc if k < 4 else nf)
        # scale so that activations stay O(1) through the blocks
        w = torch.randn((c_out, c_in, 3, 3), generator=g, dtype=torch.float64) * (1.0 / (9 * c_in)) ** 0.5
        b = torch.randn((c_out,), generator=g, dtype=torch.float64) * 0.1
        weights.append(w.to(device=device, dtype=dtype).requires_grad_(True))
        biases.append(b.to(device=device, dtype=dtype).requires_grad_(True))
    return weights, biases


OPS = {"rdb": (residual_dense_block, residual_dense_block_reference, 1),
       "rrdb": (rrdb, rrdb_reference, 3)}


def check_backend(name, op, shape, gc, dtype, layout="channels_last", device="cpu"):
    fused_fn, reference_fn, blocks = OPS[op]
    x = make_input(shape, dtype, layout, device=device, requires_grad=True)
    weights, biases = make_params(shape[1], gc, blocks, dtype, device)
    with backend(name):
        y = fused_fn(x, weights, biases)
    leaves = [x, *weights, *biases]

    def detached(dtype_):
        return [t.detach().to(dtype_).requires_grad_(True) for t in leaves]

    truth_leaves, same_leaves = detached(torch.float64), detached(dtype)
    truth = reference_fn(truth_leaves[0], truth_leaves[1:1 + 5 * blocks], truth_leaves[1 + 5 * blocks:])
    same = reference_fn(same_leaves[0], same_leaves[1:1 + 5 * blocks], same_leaves[1 + 5 * blocks:])
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert_close_to_truth(y, same, truth, dtype, "forward")

    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(y, leaves, g.to(device=device, dtype=dtype))
    grads_truth = torch.autograd.grad(truth, truth_leaves, g.to(device))
    grads_same = torch.autograd.grad(same, same_leaves, g.to(device=device, dtype=dtype))
    names = ["x"] + [f"weights[{i}]" for i in range(5 * blocks)] + [f"biases[{i}]" for i in range(5 * blocks)]
    for what, got, want, want_same in zip(names, grads, grads_truth, grads_same):
        assert got.shape == want.shape and got.dtype == dtype, what
        assert_close_to_truth(got, want_same, want, dtype, f"gradient of {what}")


# nf=64/gc=32 (trunk) and nf=128/gc=32 (gradient branch, fusion); odd sizes, batch 1 and > 1;
# fp32 and fp16 for RDB and RRDB (the nf=128 RRDB in fp32 only, to keep the file fast)
F32, F16 = torch.float32, torch.float16
CPU_CASES = [("rdb", (2, 64, 5, 7), 32, F32), ("rdb", (2, 64, 5, 7), 32, F16),
             ("rdb", (1, 128, 7, 9), 32, F32), ("rdb", (1, 128, 7, 9), 32, F16),
             ("rrdb", (1, 64, 9, 6), 32, F32), ("rrdb", (1, 64, 9, 6), 32, F16),
             ("rrdb", (2, 128, 3, 5), 32, F32),
             ("rrdb", (3, 8, 1, 11), 4, F32), ("rrdb", (3, 8, 1, 11), 4, F16)]


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
