"""`--precision auto` on the CPU: bf16 where the CPU has bf16 dot products and the CPU engine runs
the model, float32 otherwise (SPSR_FAST_CPU_BF16=0 forces "no native bf16"), one line saying
what was chosen and why."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import spsr_fast
from spsr_fast import precision
from spsr_fast.cli import main
from spsr_fast.inference import cpu_engine
from spsr_fast.ops import backend
from spsr_fast.inference.runner import Upscaler, choose_precision, resolve_dtype
from spsr_fast.weights import resolve_model

from inference_models import bundled_model, reference_outputs

skimage_data = pytest.importorskip("skimage.data")
CPU = torch.device("cpu")
AVX512_BF16 = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"}


class Shuffle(nn.Module):  # an architecture the CPU engine does not know
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x):
        return nn.functional.pixel_shuffle(self.conv(x), 2)


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU has these /proc/cpuinfo flags."""
    monkeypatch.delenv(precision.CPU_BF16_VARIABLE, raising=False)

    def set_flags(names):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: set(names))
    return set_flags


@pytest.mark.skipif(not cpu_engine.packed_ops_available(), reason="the extension has no packed CPU kernels")
def test_auto_is_bf16_only_where_the_cpu_has_bf16_dot_products(flags, monkeypatch):
    model = bundled_model()
    flags(AVX512_BF16 | {"amx_bf16"})
    dtype, why = choose_precision("auto", CPU, model)
    assert dtype == torch.bfloat16 and "AVX512_BF16" in why
    flags({"avx512f", "avx512bw", "avx512vl", "avx2"})  # AVX-512 without BF16 (Skylake-X, Ice Lake)
    dtype, why = choose_precision("auto", CPU, model)
    assert dtype == torch.float32 and why == "no native bf16: this CPU has no AVX512_BF16"
    flags({"bf16", "asimd"})  # Arm's BF16: the kernels are x86 only
    assert choose_precision("auto", CPU, model)[0] == torch.float32
    flags(AVX512_BF16)
    monkeypatch.setenv(precision.CPU_BF16_VARIABLE, "0")
    dtype, why = choose_precision("auto", CPU, model)
    assert dtype == torch.float32 and why == "no native bf16: SPSR_FAST_CPU_BF16=0"
    assert not precision.has_native_bf16("cpu")  # the override answers for every caller


def test_auto_stays_float32_for_models_the_engine_does_not_run(flags):
    flags(AVX512_BF16)
    dtype, why = choose_precision("auto", CPU, Shuffle())
    assert dtype == torch.float32
    assert "RRDBNet and SPSRNet" in why or "packed CPU kernels" in why
    assert resolve_dtype("auto", CPU) == torch.float32  # without a model nothing is known about it
    assert choose_precision("fp32", CPU, bundled_model()) == (torch.float32, "asked for")


def test_bad_override_names_the_variable(monkeypatch):
    monkeypatch.setenv(precision.CPU_BF16_VARIABLE, "yes")
    with pytest.raises(ValueError, match="SPSR_FAST_CPU_BF16 must be 0"):
        precision.cpu_bf16_kernels()


@pytest.mark.skipif(not cpu_engine.packed_ops_available(), reason="the extension has no packed CPU kernels")
def test_runner_engines(flags, monkeypatch):
    model = bundled_model()
    monkeypatch.setenv(precision.CPU_BF16_VARIABLE, "0")
    assert Upscaler(model, device="cpu").engine == "cpu-fp32"
    # bf16 asked for without native bf16: autocast as before (oneDNN), not the portable kernels
    assert Upscaler(model, device="cpu", precision="bf16").engine == "module"
    assert Upscaler(Shuffle(), device="cpu").engine == "module"
    assert Upscaler(model, device="cpu", compile=True).engine == "module"


def write_photo(path):
    Image.fromarray(skimage_data.astronaut()[100:132, 180:220]).save(path)


def upscale(*argv):
    return main(["upscale", "--no-progress", "--device", "cpu", *map(str, argv)])


def summary(out: str) -> str:
    lines = [line for line in out.splitlines() if "image(s) upscaled" in line]
    assert len(lines) == 1, out
    return lines[0]


def test_without_native_bf16_auto_runs_float32_and_says_so(tmp_path, capsys, monkeypatch):
    """SPSR_FAST_CPU_BF16=0: auto falls back to float32, says so on the summary line, and the
    output is the float32 network's."""
    write_photo(tmp_path / "p.png")
    monkeypatch.setenv(precision.CPU_BF16_VARIABLE, "0")
    assert upscale(tmp_path / "p.png") == 0
    line = summary(capsys.readouterr().out)
    assert "(float32 by precision auto: no native bf16: SPSR_FAST_CPU_BF16=0, tile" in line, line
    out = np.asarray(Image.open(tmp_path / "p_x4.png")).astype(int)
    image = torch.from_numpy(np.asarray(Image.open(tmp_path / "p.png")).copy()).permute(2, 0, 1).float() / 255
    expected = reference_outputs(bundled_model(), image)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - np.round(expected * 255)).max() <= 1


@pytest.mark.skipif(not (cpu_engine.packed_ops_available() and precision.cpu_bf16_kernels()[0]),
                    reason="this CPU has no AVX512_BF16 (or SPSR_FAST_CPU_BF16=0)")
def test_auto_on_a_bf16_cpu_says_bf16_and_fp32_flag_stays_float32(tmp_path, capsys):
    write_photo(tmp_path / "p.png")
    assert upscale(tmp_path / "p.png", "-o", tmp_path / "auto") == 0
    line = summary(capsys.readouterr().out)
    assert "(bfloat16 by precision auto: AVX512_BF16 dot products" in line, line
    assert upscale(tmp_path / "p.png", "--fp32", "-o", tmp_path / "fp32") == 0
    line = summary(capsys.readouterr().out)
    assert "(float32, tile" in line and "precision auto" not in line, line  # given, not chosen
    # --fp32 is float32 throughout (before 8-bit rounding: the runner directly): against a
    # float64 run of the same network, no further off than the model's own float32 forward
    # (the engine sums the tail in another order, so it is not that forward's bits)
    model = spsr_fast.load_model(resolve_model("default"))
    image = torch.from_numpy(np.asarray(Image.open(tmp_path / "p.png")).copy()).permute(2, 0, 1).float() / 255
    got = Upscaler(model, device="cpu", precision="fp32", tile=0).upscale_tensor(image)[0][0]
    with torch.inference_mode(), backend("reference"):
        model_fp32 = model.to(memory_format=torch.channels_last)(
            image[None].contiguous(memory_format=torch.channels_last))[0].clamp(0, 1)
        truth = copy.deepcopy(model).double()(image[None].double())[0].clamp(0, 1)
    assert got.dtype == torch.float32
    ours, theirs = (got.double() - truth).abs().max().item(), (model_fp32.double() - truth).abs().max().item()
    assert ours <= max(2 * theirs, 1e-6) and ours < 1e-5, (ours, theirs)


def test_a_replaced_forward_runs_as_is():
    """The engine computes the class's forward: a model whose forward was replaced runs that."""
    model = bundled_model()
    calls = []
    forward = model.forward

    def counted(x):
        calls.append(x.shape)
        return forward(x)

    model.forward = counted
    upscaler = Upscaler(model, device="cpu", tile=0)
    assert upscaler.engine == "module" and "forward was replaced" in upscaler.precision_reason
    upscaler.upscale_tensor(torch.rand(3, 8, 8))
    assert calls
