"""The inference runner: precision policy, tile choice, odd sizes, alpha/gray handling, 16-bit
precision under autocast, out-of-memory retries, threads, GPU paths."""
import numpy as np
import pytest
import torch
from torch import nn

from spsr_fast import precision
from spsr_fast.inference import cpus
from spsr_fast.inference.image_path import Float32, image_path_children, with_fp32_image_path
from spsr_fast.inference.io import Picture
from spsr_fast.inference.runner import TileOutOfMemoryError, Upscaler, auto_tile, model_scale, resolve_dtype
from spsr_fast.models import RRDBNet, SPSRNet

from inference_models import bundled_model, effective_bits, interpolating_spsrnet, reference_outputs

skimage_data = pytest.importorskip("skimage.data")


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


@pytest.mark.parametrize("capabilities,expected", [({0: (9, 0), 1: (7, 5)}, torch.float16),
                                                   ({0: (7, 5), 1: (9, 0)}, torch.bfloat16),
                                                   ({0: (8, 0), 1: (8, 0)}, torch.bfloat16)])
def test_auto_precision_asks_the_target_gpu_for_native_bf16(monkeypatch, capabilities, expected):
    """cuda:1 decides for cuda:1 while cuda:0 is current; bf16 that is only emulated (sm < 80) is not chosen."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: capabilities[0 if device is None else torch.device("cuda", device).index
                                                         if isinstance(device, int) else torch.device(device).index])
    # torch's own answer: about the current device, and True for emulated bf16 too
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", torch.device("cuda:1")) == expected
    assert precision.has_native_bf16("cuda:1") == (expected == torch.bfloat16)
    assert resolve_dtype("bf16", torch.device("cuda:1")) == torch.bfloat16  # asked for: emulated or not


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


def ramp_picture(h=24, w=48, bits=16):
    """A smooth 16-bit colour ramp: neighbouring output pixels differ by less than an 8-bit step."""
    ramp = np.linspace(0.2, 0.8, w)[None, :, None] * np.array([1.0, 0.9, 0.8]) + np.linspace(0, 0.1, h)[:, None, None]
    levels = 2 ** bits - 1
    return Picture((np.round(ramp * levels) / levels).astype(np.float32), bits=bits)


def sixteen_bit_precision(net, device, with_gradient=False):
    """Effective bits of the bf16 runner's outputs on a 16-bit ramp, against the fp32 reference."""
    picture = ramp_picture()
    runner = Upscaler(net, device=device, precision="bf16", tile=0)
    result = runner.upscale_picture(picture, with_gradient=with_gradient)
    assert result.fp32_image_path
    expected = reference_outputs(net, torch.from_numpy(picture.pixels).permute(2, 0, 1))
    bits = [effective_bits(result.picture.pixels - expected[0].permute(1, 2, 0).numpy())]
    if with_gradient:
        bits.append(effective_bits(result.gradient_map - expected[1].permute(1, 2, 0).numpy()))
    return bits


@pytest.mark.parametrize("model", ["bundled", "spsrnet"])
def test_sixteen_bit_pictures_keep_more_than_8_bits_under_bf16_on_the_cpu(model):
    net = bundled_model() if model == "bundled" else interpolating_spsrnet()
    bits = sixteen_bit_precision(net, "cpu", with_gradient=model == "spsrnet")
    # measured: bundled 12.2 bits (all in bf16: 7.1); SPSRNet image 13.6 (6.5), gradient map 16.3 (8.9)
    assert min(bits) > 10, bits


def test_eight_bit_pictures_run_all_in_reduced_precision():
    """The fp32 image path is for 16-bit outputs only: 8-bit ones keep the speed of bf16 throughout."""
    net = bundled_model()
    runner = Upscaler(net, device="cpu", precision="bf16", tile=0)
    picture = ramp_picture(bits=8)
    result = runner.upscale_picture(picture)
    assert not result.fp32_image_path and set(runner._networks) == {False}
    expected = reference_outputs(net, torch.from_numpy(picture.pixels).permute(2, 0, 1))[0].permute(1, 2, 0).numpy()
    assert effective_bits(result.picture.pixels - expected) < 9  # what bf16 gives: the 16-bit path is needed


def test_fp32_image_path_is_a_view_that_leaves_the_model_alone():
    net = bundled_model()
    assert image_path_children(net) == ["conv_first", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    view = with_fp32_image_path(net)
    assert isinstance(view.conv_last, Float32) and not isinstance(net.conv_last, Float32)
    assert view.conv_last.module is net.conv_last and view.body is net.body  # shared, no copies
    assert [k for k, _ in view.named_parameters()] != [k for k, _ in net.named_parameters()]
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(view(x), net(x))  # same network in fp32
    spsr = SPSRNet(nf=8, nb=1, gc=4)
    assert {"conv_first", "fusion_block", "grad_conv_out", "conv_up2", "grad_conv_up1"} <= set(image_path_children(spsr))
    assert isinstance(with_fp32_image_path(Shuffle(2)), Float32)  # unknown architecture: all of it in fp32


class RunsOutOfMemory(nn.Module):
    """Raises torch.OutOfMemoryError for tiles larger than `limit` x `limit` pixels, else upsamples x2."""

    config = {"scale": 2}

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        if x.shape[-1] * x.shape[-2] > self.limit ** 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return nn.functional.pixel_shuffle(self.conv(x), 2)


def test_out_of_memory_on_a_tile_retries_with_half_the_tile():
    torch.manual_seed(0)
    net = RunsOutOfMemory(limit=40)
    messages = []
    runner = Upscaler(net, device="cpu", tile=128, tile_overlap=8, log=messages.append)
    image = torch.rand(3, 100, 90)
    (out,), tiles = runner.upscale_tensor(image)
    assert list(dict.fromkeys(net.sizes)) == [(100, 90), (48, 48), (32, 32)]  # the image's 100 -> 48 -> 32
    assert len(messages) == 2 and "with tile 100: retrying with tile 48" in messages[0]
    assert "with tile 48: retrying with tile 32" in messages[1]
    assert runner.tile == 32 and tiles > 1  # kept for the images that follow
    with torch.no_grad():
        whole = nn.functional.pixel_shuffle(net.conv(image[None]), 2)[0].clamp(0, 1)
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)  # a 3x3 conv: tiling is exact with overlap 8
    net.sizes.clear()
    runner.upscale_tensor(torch.rand(3, 50, 50))
    assert max(net.sizes) == (32, 32) and len(messages) == 2


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error():
    runner = Upscaler(RunsOutOfMemory(limit=8), device="cpu", tile=64, tile_overlap=8, log=lambda m: None)
    with pytest.raises(TileOutOfMemoryError, match="even with tile 32, the smallest tried"):
        runner.upscale_tensor(torch.rand(3, 70, 70))
    untiled = Upscaler(RunsOutOfMemory(limit=8), device="cpu", tile=0)
    with pytest.raises(TileOutOfMemoryError, match="tiling is off"):
        untiled.upscale_tensor(torch.rand(3, 40, 40))


def test_threads_follow_the_affinity_mask_and_the_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {2, 3, 5}, raising=False)
    assert cpus.available_cpus(str(tmp_path)) == 3  # no cgroup files: the mask alone
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.available_cpus(str(tmp_path)) == 3
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert cpus.available_cpus(str(tmp_path)) == 2
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.available_cpus(str(tmp_path)) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.available_cpus(str(tmp_path)) == 3


def test_upscaler_threads_default_to_the_cpus_it_may_use(monkeypatch):
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    before = torch.get_num_threads()
    try:
        Upscaler(Shuffle(2), device="cpu")
        assert torch.get_num_threads() == 1
        Upscaler(Shuffle(2), device="cpu", threads=2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads must be >= 1"):
            Upscaler(Shuffle(2), device="cpu", threads=0)
    finally:
        torch.set_num_threads(before)


def photo_tensor(h=96, w=80):
    return torch.from_numpy(skimage_data.astronaut()[100:100 + h, 180:180 + w].astype(np.float32) / 255).permute(2, 0, 1)


def rms(a, b):
    return torch.sqrt(torch.mean((a.float() - b.float()) ** 2)).item()


@pytest.mark.cuda
@pytest.mark.parametrize("compile", [False, True])
def test_gpu_bf16_tiled_matches_cpu_fp32(compile):
    """SPSRNet started as the closed-form interpolator and perturbed, on a photograph: the GPU's bf16,
    tiled, against the fp32 CPU reference run whole. Bound: twice what bf16 alone costs (the same
    network in bf16 on the CPU, untiled) plus twice what tiling alone costs (fp32 on the CPU, tiled)."""
    net = interpolating_spsrnet()
    image = photo_tensor()
    expected = reference_outputs(net, image)
    cpu_bf16, _ = Upscaler(net, device="cpu", precision="bf16", tile=0).upscale_tensor(image, with_gradient=True)
    cpu_tiled, _ = Upscaler(net, device="cpu", tile=48, tile_overlap=16).upscale_tensor(image, with_gradient=True)
    gpu_runner = Upscaler(net, device="cuda", precision="bf16", tile=48, tile_overlap=16, tile_batch=4, compile=compile)
    gpu, tiles = gpu_runner.upscale_tensor(image, with_gradient=True)
    assert tiles > 1 and gpu[0].device.type == "cpu"
    assert expected[1].std() > 0.02  # the gradient map is a picture, not a flat field
    for k, what in enumerate(("image", "gradient map")):
        bound = 2 * rms(cpu_bf16[k], expected[k]) + 2 * rms(cpu_tiled[k], expected[k])
        assert rms(gpu[k], expected[k]) <= bound, (what, rms(gpu[k], expected[k]), bound)
    assert 10 * np.log10(1 / max(rms(gpu[0], expected[0]) ** 2, 1e-12)) > 40


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["bundled", "spsrnet"])
def test_sixteen_bit_pictures_keep_more_than_8_bits_on_the_gpu(model):
    net = bundled_model() if model == "bundled" else interpolating_spsrnet()
    bits = sixteen_bit_precision(net, "cuda", with_gradient=model == "spsrnet")
    assert min(bits) > 10, bits
