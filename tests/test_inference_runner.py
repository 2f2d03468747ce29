"""The inference runner: precision policy, tile choice, odd sizes, alpha/gray handling, GPU paths."""
import numpy as np
import pytest
import torch
from torch import nn

from spsr_fast.inference.io import Picture
from spsr_fast.inference.runner import Upscaler, auto_tile, model_scale, resolve_dtype
from spsr_fast.models import RRDBNet, SPSRNet


class Shuffle(nn.Module):
    def __init__(self, scale=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.conv(x))


def test_precision_policy():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_dtype("fp8", cpu)


def test_scale_is_read_or_measured():
    assert model_scale(RRDBNet(nf=4, nb=1, gc=4, scale=2)) == 2
    assert model_scale(Shuffle(3)) == 3  # no config: measured on a probe input


def test_auto_tile_is_bounded_and_shrinks_with_the_model():
    small = auto_tile(RRDBNet(nf=4, nb=1, gc=4), torch.device("cpu"), torch.float32, 1)
    assert 32 <= small <= 512 and small % 8 == 0
    big = auto_tile(SPSRNet(nf=64, nb=1, gc=32), torch.device("cpu"), torch.float32, 64)
    assert 32 <= big <= small


@pytest.mark.parametrize("length,max_tile,overlap", [(512, 256, 16), (1000, 512, 16), (300, 64, 16), (100, 256, 16)])
def test_balanced_tile_needs_no_more_tiles_and_less_work(length, max_tile, overlap):
    from spsr_fast.inference.runner import balanced_tile
    from spsr_fast.inference.tiling import tile_starts

    tile = balanced_tile(length, max_tile, overlap)
    assert tile <= max(max_tile, length) and (tile == length or tile % 8 == 0)
    n_max = len(tile_starts(length, max_tile, overlap))
    n = len(tile_starts(length, tile, overlap))
    assert n == n_max and n * min(tile, length) <= n_max * min(max_tile, length)


def test_odd_sizes_with_an_unshuffling_model():
    torch.manual_seed(0)
    net = RRDBNet(nf=4, nb=1, gc=4, scale=2, unshuffle=2)  # BasicSR x2 layout: input sides must be even
    runner = Upscaler(net, device="cpu", tile=16, tile_overlap=4)
    out, tiles = runner.upscale_tensor(torch.rand(3, 21, 35))
    assert out[0].shape == (3, 42, 70) and tiles > 1
    with pytest.raises(ValueError, match="multiple of 2"):
        Upscaler(net, device="cpu", tile=15)


def test_gray_and_alpha_pictures():
    runner = Upscaler(Shuffle(2), device="cpu", tile=0)
    gray = Picture(np.random.default_rng(0).random((9, 7, 1), dtype=np.float32), bits=16)
    result = runner.upscale_picture(gray)
    assert result.picture.pixels.shape == (18, 14, 1) and result.picture.bits == 16
    alpha = np.zeros((8, 8), np.float32)
    alpha[2:6, 2:6] = 1
    rgba = Picture(np.full((8, 8, 3), 0.5, np.float32), alpha)
    result = runner.upscale_picture(rgba)
    assert result.picture.alpha.shape == (16, 16)
    assert result.picture.pixels[result.picture.alpha < 0.5 / 255].max() == 0  # invisible pixels carry no colour
    with pytest.raises(ValueError, match="no gradient branch"):
        runner.upscale_picture(rgba, with_gradient=True)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="tile_overlap"):
        Upscaler(Shuffle(2), device="cpu", tile=16, tile_overlap=16)
    with pytest.raises(ValueError, match="alpha"):
        Upscaler(Shuffle(2), device="cpu", alpha="nearest")
    with pytest.raises(ValueError, match="tile_batch"):
        Upscaler(Shuffle(2), device="cpu", tile_batch=0)
    with pytest.raises(ValueError, match="device: expected"):
        Upscaler(Shuffle(2), device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            Upscaler(Shuffle(2), device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("compile", [False, True])
def test_gpu_bf16_tiled_matches_cpu_fp32(compile):
    torch.manual_seed(0)
    net = SPSRNet(nf=16, nb=2, gc=8)
    image = torch.rand(3, 96, 80)
    cpu, _ = Upscaler(net, device="cpu", tile=0).upscale_tensor(image, with_gradient=True)
    gpu_runner = Upscaler(net, device="cuda", tile=48, tile_overlap=16, tile_batch=4, compile=compile)
    assert gpu_runner.dtype in (torch.bfloat16, torch.float16)
    gpu, tiles = gpu_runner.upscale_tensor(image, with_gradient=True)
    assert tiles > 1 and gpu[0].device.type == "cpu"
    mse = torch.mean((gpu[0] - cpu[0]) ** 2).item()
    assert 10 * np.log10(1 / max(mse, 1e-12)) > 40  # bf16 + tiling: visually identical
    assert (gpu[1] - cpu[1]).abs().mean() < 0.02
