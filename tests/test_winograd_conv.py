"""The CPU Winograd F(2x2, 3x3) convolution (csrc/cpu/winograd_conv3x3) against torch's
conv2d, alone and as the float32 convolution of the CPU dense blocks."""
import pytest
import torch
import torch.nn.functional as F

from spsr_fast import _extension
from spsr_fast.ops import backend, rrdb
from spsr_fast.ops._reference import rrdb_reference

from helpers import make_input
from test_dense_block import check_backend, make_params

pytestmark = pytest.mark.skipif(not _extension.has_kernel("conv3x3_winograd", "CPU"),
                                reason="spsr_fast._C without the Winograd CPU conv")


def winograd(x, weight, bias):
    return torch.ops.spsr_fast.conv3x3_winograd(x, weight, bias)


def assert_matches_conv2d(x, weight, bias):
    got = winograd(x, weight, bias)
    truth = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    direct = F.conv2d(x, weight, bias, padding=1)
    assert got.shape == truth.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    scale = max(truth.abs().max().item(), 1.0)
    err = (got.double() - truth).abs().max().item()
    direct_err = (direct.double() - truth).abs().max().item()
    # ~1e-5 relative to the largest output, and no worse than 2x ATen's own fp32 conv
    assert err <= max(1e-5 * scale, 2 * direct_err), (err, direct_err, scale)


# odd and even sizes, 1-pixel images, tiles cut by the edge, channels not a multiple of 16,
# the dense blocks' shapes, and more tiles than one chunk (chunks end mid-row and mid-image)
SHAPES = [(1, 1, 1, 1, 1), (1, 3, 1, 7, 2), (2, 5, 7, 9, 3), (3, 37, 2, 3, 5), (1, 64, 17, 31, 32),
          (2, 192, 9, 8, 64), (1, 8, 70, 53, 4)]


@pytest.mark.parametrize("B, C, H, W, C_out", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "strided"])
def test_matches_conv2d(B, C, H, W, C_out, layout):
    x = make_input((B, C, H, W), torch.float32, layout)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn((C_out, C, 3, 3), generator=g) / (9 * C) ** 0.5
    bias = torch.randn((C_out,), generator=g)
    assert_matches_conv2d(x, weight, bias)


def test_channel_slice_input_and_no_bias():
    big = make_input((2, 48, 11, 6), torch.float32, "channels_last")
    x = big[:, 8:40]  # a channel slice of a channels_last buffer: channel stride 1, read in place
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    weight = torch.randn((16, 32, 3, 3)) / 17
    assert_matches_conv2d(x, weight, None)


def test_opcheck():
    x = make_input((2, 6, 5, 4), torch.float32, "channels_last")
    torch.library.opcheck(torch.ops.spsr_fast.conv3x3_winograd.default, (x, torch.randn(3, 6, 3, 3), torch.randn(3)))
    torch.library.opcheck(torch.ops.spsr_fast.conv3x3_winograd.default, (x, torch.randn(3, 6, 3, 3), None))


@pytest.mark.parametrize("bad, match", [
    (lambda: winograd(torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 2, 3, 3), None), "float32"),
    (lambda: winograd(torch.randn(2, 3, 3), torch.randn(1, 2, 3, 3), None), "4-D"),
    (lambda: winograd(torch.randn(1, 2, 3, 3), torch.randn(1, 3, 3, 3), None), r"weight must be \(C_out, 2, 3, 3\)"),
    (lambda: winograd(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 5, 5), None), "weight"),
    (lambda: winograd(torch.randn(1, 2, 3, 3), torch.randn(4, 2, 3, 3), torch.randn(3)), "bias"),
])
def test_bad_input_is_named(bad, match):
    with pytest.raises(RuntimeError, match=match):
        bad()


@pytest.mark.parametrize("algorithm", ["winograd", "direct"])
@pytest.mark.parametrize("op, shape, gc", [("rdb", (2, 64, 5, 7), 32), ("rrdb", (1, 128, 7, 9), 32),
                                           ("rrdb", (3, 8, 1, 11), 4), ("rrdb", (1, 8, 34, 3), 4)])
def test_dense_blocks_with_either_cpu_conv(algorithm, op, shape, gc, monkeypatch):
    monkeypatch.setenv("SPSR_FAST_CPU_CONV", algorithm)
    check_backend("native", op, shape, gc, torch.float32)


@pytest.mark.parametrize("algorithm", ["winograd", "direct"])
def test_inference_shares_one_buffer_and_matches(algorithm, monkeypatch):
    """Without grad the blocks reuse one buffer; conv5's output must not clobber the x_in
    that neighbouring tiles still read."""
    monkeypatch.setenv("SPSR_FAST_CPU_CONV", algorithm)
    x = make_input((2, 16, 13, 10), torch.float32, "channels_last")
    weights, biases = make_params(16, 8, 3)
    with torch.no_grad():
        with backend("native"):
            got = rrdb(x, weights, biases)
        truth = rrdb_reference(x.double(), [w.double() for w in weights], [b.double() for b in biases])
    torch.testing.assert_close(got.double(), truth, rtol=1e-5, atol=1e-5)


def test_bad_algorithm_is_named(monkeypatch):
    monkeypatch.setenv("SPSR_FAST_CPU_CONV", "fft")
    x = make_input((1, 8, 4, 4), torch.float32, "channels_last")
    weights, biases = make_params(8, 4, 1)
    with backend("native"), pytest.raises(RuntimeError, match="SPSR_FAST_CPU_CONV"):
        torch.ops.spsr_fast.dense_blocks(x, weights, biases, 0.2, False, False)
