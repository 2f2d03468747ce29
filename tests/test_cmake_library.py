"""The CMake/LibTorch build of csrc/ (CI builds it and sets SPSR_FAST_CMAKE_LIB): the
library loads with torch.ops.load_library, registers exactly the ops below, and each runs
the same kernels as spsr_fast._C, checked against spsr_fast/ops/_reference.py."""
import os
import subprocess
import sys
import textwrap

import pytest

LIB = os.environ.get("SPSR_FAST_CMAKE_LIB")
REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "spsr_fast", "ops", "_reference.py")

# Runs in a fresh interpreter that never imports spsr_fast: the library must not meet
# spsr_fast._C's registrations. The references are loaded from their file alone.
CHECKS = textwrap.dedent("""
    import importlib.util, sys
    import torch
    import torch.nn.functional as F

    LIB, REFERENCE = sys.argv[1], sys.argv[2]
    torch.ops.load_library(LIB)
    spec = importlib.util.spec_from_file_location("reference", REFERENCE)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ops = torch.ops.spsr_fast
    g = torch.Generator().manual_seed(0)

    registered = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names()
                        if n.startswith("spsr_fast::"))
    covered = sorted(["gradient_map", "gradient_map_backward", "info_nce", "info_nce_backward",
                      "dense_blocks", "conv3x3_winograd", "winograd_pack", "conv3x3_packed", "rrdb_packed",
                      "rrdb_trunk_packed", "conv_chain"])
    assert registered == covered, f"ops registered {registered}, this test covers {covered}"

    def close_fp32(got, truth, fp32_ref, what):
        # ~1e-5 relative to the largest value, and no worse than 2x the fp32 reference's error
        truth = truth.double()
        err = (got.double() - truth).abs().max().item()
        allowed = max(1e-5 * max(truth.abs().max().item(), 1.0), 2 * (fp32_ref.double() - truth).abs().max().item())
        assert got.shape == truth.shape, f"{what}: shape {tuple(got.shape)} != {tuple(truth.shape)}"
        assert err <= allowed, f"{what}: max error {err:.3g} > {allowed:.3g}"

    # gradient_map and its backward, float64, both paddings
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64, generator=g, requires_grad=True)
    for padding in (1, 2):
        y = ref.gradient_map_reference(x, padding)
        torch.testing.assert_close(ops.gradient_map(x.detach(), padding), y.detach(),
                                   msg=lambda m: f"gradient_map padding {padding}: {m}")
        grad = torch.rand(y.shape, dtype=torch.float64, generator=g)
        (truth,) = torch.autograd.grad(y, x, grad)
        torch.testing.assert_close(ops.gradient_map_backward(grad, x.detach(), padding), truth,
                                   msg=lambda m: f"gradient_map_backward padding {padding}: {m}")

    # info_nce and its backward, float64: 2 images on a 6x5 grid, 3 excluded centres per row
    height, width, n, dim, radius, scale = 6, 5, 7, 8, 2, 10.0
    q = torch.randn(n, dim, dtype=torch.float64, generator=g, requires_grad=True)
    f = torch.randn(2, height * width, dim, dtype=torch.float64, generator=g, requires_grad=True)
    image = torch.randint(0, 2, (n,), generator=g)
    positive = torch.randint(0, height * width, (n,), generator=g)
    centres = torch.stack([positive // width, positive % width], 1)[:, None] + torch.randint(-2, 3, (n, 3, 2), generator=g)
    centres[:, 0] = torch.stack([positive // width, positive % width], 1)
    args = (image, positive, centres, width, radius, scale)
    loss = ref.info_nce_reference(q, f, *args)
    got_loss, lse = ops.info_nce(q.detach(), f.detach(), *args)
    torch.testing.assert_close(got_loss, loss.detach(), msg=lambda m: f"info_nce: {m}")
    grad = torch.rand(n, dtype=torch.float64, generator=g)
    dq, df = torch.autograd.grad(loss, (q, f), grad)
    got_dq, got_df = ops.info_nce_backward(grad, q.detach(), f.detach(), image, positive, centres, lse,
                                           width, radius, scale)
    torch.testing.assert_close(got_dq, dq, msg=lambda m: f"info_nce_backward dq: {m}")
    torch.testing.assert_close(got_df, df, msg=lambda m: f"info_nce_backward df: {m}")

    # dense_blocks: one RDB and one RRDB (float32, Winograd convs); the kept buffers hold
    # [block input | x1..x4] of each block
    nf, gc = 8, 4
    def params(blocks):
        weights, biases = [], []
        for i in range(5 * blocks):
            c_out, c_in = (gc if i % 5 < 4 else nf), nf + (i % 5) * gc
            weights.append(torch.randn(c_out, c_in, 3, 3, generator=g) / (9 * c_in) ** 0.5)
            biases.append(0.1 * torch.randn(c_out, generator=g))
        return weights, biases
    def first_buffer(x, weights, biases, dtype):
        features = [x.to(dtype)]
        for k in range(4):
            conv = F.conv2d(torch.cat(features, 1), weights[k].to(dtype), biases[k].to(dtype), padding=1)
            features.append(F.leaky_relu(conv, 0.2))
        return torch.cat(features, 1)
    x = torch.randn(2, nf, 7, 6, generator=g).contiguous(memory_format=torch.channels_last)
    for blocks, outer, reference in ((1, False, ref.residual_dense_block_reference), (3, True, ref.rrdb_reference)):
        weights, biases = params(blocks)
        out, buffers = ops.dense_blocks(x, weights, biases, 0.2, outer, True)
        truth = reference(x.double(), [w.double() for w in weights], [b.double() for b in biases], 0.2)
        close_fp32(out, truth, reference(x, weights, biases, 0.2), f"dense_blocks blocks={blocks}")
        assert len(buffers) == blocks, f"dense_blocks kept {len(buffers)} buffers for {blocks} blocks"
        close_fp32(buffers[0], first_buffer(x, weights, biases, torch.float64),
                   first_buffer(x, weights, biases, torch.float32), "dense_blocks buffer 0")

    # conv3x3_winograd, with and without bias, against conv2d
    x = torch.randn(2, 13, 9, 11, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 13, 3, 3, generator=g) / (9 * 13) ** 0.5
    bias = torch.randn(6, generator=g)
    for b in (bias, None):
        truth = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), padding=1)
        close_fp32(ops.conv3x3_winograd(x, weight, b), truth, F.conv2d(x, weight, b, padding=1),
                   f"conv3x3_winograd bias={b is not None}")

    # winograd_pack + conv3x3_packed (float32 and bf16 packs), against float64: no more than
    # twice the error of torch's own conv in the pack's dtype
    def max_error(got, truth):
        return (got.double() - truth).abs().max().item()
    for bf16, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        pack = ops.winograd_pack(weight, bf16)
        for epilogue, upsample in (("lrelu", False), ("residual", True)):
            grid = F.interpolate(x, scale_factor=2, mode="nearest") if upsample else x
            res1 = torch.randn(2, 6, *grid.shape[2:], generator=g).contiguous(memory_format=torch.channels_last)
            def finish(conv):
                return res1.double() + 0.5 * conv if epilogue == "residual" else F.leaky_relu(conv, 0.2)
            got = ops.conv3x3_packed(x, pack, bias, epilogue, 0.5, res1 if epilogue == "residual" else None, None,
                                     upsample)
            truth = finish(F.conv2d(grid.double(), weight.double(), bias.double(), padding=1))
            same_dtype = finish(F.conv2d(grid.to(dtype), weight.to(dtype), bias.to(dtype), padding=1).double())
            what = f"conv3x3_packed {dtype} {epilogue} upsample={upsample}"
            assert got.shape == truth.shape, f"{what}: shape {tuple(got.shape)}"
            assert max_error(got, truth) <= 2 * max_error(same_dtype, truth), \
                f"{what}: error {max_error(got, truth):.3g} > 2 x {max_error(same_dtype, truth):.3g}"

    # rrdb_packed: float32 packs give dense_blocks' result bit for bit; bf16 packs are within
    # twice the error of the reference RRDB computed in bfloat16
    x = torch.randn(2, nf, 7, 6, generator=g).contiguous(memory_format=torch.channels_last)
    weights, biases = params(3)
    expected, _ = ops.dense_blocks(x, weights, biases, 0.2, True, False)
    got = ops.rrdb_packed(x, [ops.winograd_pack(w, False) for w in weights], biases, 0.2, True)
    assert torch.equal(got, expected), f"rrdb_packed float32: max difference {max_error(got, expected.double()):.3g}"
    truth = ref.rrdb_reference(x.double(), [w.double() for w in weights], [b.double() for b in biases], 0.2)
    bf16_ref = ref.rrdb_reference(x.bfloat16(), [w.bfloat16() for w in weights], [b.bfloat16() for b in biases], 0.2)
    got = ops.rrdb_packed(x, [ops.winograd_pack(w, True) for w in weights], biases, 0.2, True)
    assert max_error(got, truth) <= 2 * max_error(bf16_ref, truth), \
        f"rrdb_packed bf16: error {max_error(got, truth):.3g} > 2 x {max_error(bf16_ref, truth):.3g}"
    # rrdb_trunk_packed: two RRDBs in one call are rrdb_packed twice, bit for bit (float32 and bf16)
    second_weights, second_biases = params(3)
    for bf16 in (False, True):
        first = [ops.winograd_pack(w, bf16) for w in weights]
        second = [ops.winograd_pack(w, bf16) for w in second_weights]
        got = ops.rrdb_trunk_packed(x, first + second, list(biases) + list(second_biases), 0.2)
        expected = ops.rrdb_packed(ops.rrdb_packed(x, first, biases, 0.2, True), second, second_biases, 0.2, True)
        assert torch.equal(got, expected), f"rrdb_trunk_packed bf16={bf16}: max difference {max_error(got, expected.double()):.3g}"
    # conv_chain (an x4 tail computed tile by tile: upsample + lrelu twice, then a plain conv to
    # 3 channels in float32) against float64: no more than twice the error of torch's convs in
    # the packs' dtype, with tiles smaller than the image
    widths, upsample, leaky = [8, 8, 8, 3], [True, True, False], [True, True, False]
    weights = [torch.randn(widths[i + 1], widths[i], 3, 3, generator=g) / (9 * widths[i]) ** 0.5 for i in range(3)]
    biases = [0.1 * torch.randn(widths[i + 1], generator=g) for i in range(3)]
    x = torch.randn(1, 8, 7, 5, generator=g).contiguous(memory_format=torch.channels_last)
    def chain(dtype):
        y = x.to(dtype)
        for weight, bias, up, lrelu in zip(weights, biases, upsample, leaky):
            y = F.interpolate(y, scale_factor=2, mode="nearest") if up else y
            y = F.conv2d(y, weight.to(dtype), bias.to(dtype), padding=1)
            y = F.leaky_relu(y, 0.2) if lrelu else y
        return y.double()
    truth = chain(torch.float64)
    for bf16, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        packs = [ops.winograd_pack(w, bf16 and i < 2) for i, w in enumerate(weights)]
        got = ops.conv_chain(x, packs, biases, upsample, leaky, 8)
        assert got.shape == truth.shape, f"conv_chain {dtype}: shape {tuple(got.shape)}"
        assert max_error(got, truth) <= 2 * max_error(chain(dtype), truth), \
            f"conv_chain {dtype}: error {max_error(got, truth):.3g} > 2 x {max_error(chain(dtype), truth):.3g}"
    # float32 F(4x4) packs (the engine's float32 tails): the float32 bound, 1e-5 of the output's
    # range (on these 8-channel convs about 3x torch's float32 error)
    got = ops.conv_chain(x, [ops.winograd_pack(w, False, 4) for w in weights], biases, upsample, leaky, 8)
    assert max_error(got, truth) <= 1e-5 * max(truth.abs().max().item(), 1.0), \
        f"conv_chain float32 F(4x4): error {max_error(got, truth):.3g}"
    print("ok:", ", ".join(covered))
""")


@pytest.mark.skipif(not LIB, reason="SPSR_FAST_CMAKE_LIB not set (CI sets it after the CMake build)")
def test_cmake_library_runs_every_op_like_the_reference():
    result = subprocess.run([sys.executable, "-c", CHECKS, LIB, REFERENCE], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("ok:"), result.stdout
