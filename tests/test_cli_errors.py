"""Errors a user can cause end every `spsr-fast` command with one line on stderr and exit code 2,
no traceback; `--debug` (or SPSR_FAST_DEBUG=1) shows the traceback. Out of memory is retried
with smaller tiles and then reported per image."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.weights import resolve_model

skimage_data = pytest.importorskip("skimage.data")


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"spsr-fast {command}") and "Traceback" not in err
    return lines[0]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(skimage_data.astronaut()[:16, :16]).save(path)
    return path


def test_upscale_missing_weights_file(tmp_path, image, capsys):
    assert main(["upscale", str(image), "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in one_line_error(capsys, "upscale")


def test_upscale_checkpoint_that_is_not_one(tmp_path, image, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["upscale", str(image), "--model", str(tmp_path / "junk.pth")]) == 2
    assert "junk.pth" in one_line_error(capsys, "upscale")


@pytest.mark.parametrize("option,value,named", [("--tile", "-3", "--tile"), ("--threads", "0", "--threads"),
                                                ("--quality", "500", "--quality"), ("--precision", "fp8", "--precision"),
                                                ("--tile-batch", "x", "--tile-batch"), ("--device", "gpu0", "device")])
def test_upscale_bad_option_values(image, capsys, option, value, named):
    assert main(["upscale", str(image), option, value]) == 2
    assert named in one_line_error(capsys, "upscale")


def test_upscale_bad_output_folder(tmp_path, image, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    assert main(["upscale", str(image), "-o", str(tmp_path / "file.txt")]) == 2
    assert "is a file, not a folder" in one_line_error(capsys, "upscale")
    assert main(["upscale", str(image), "-o", str(tmp_path / "file.txt" / "below")]) == 2
    assert "cannot create the folder" in one_line_error(capsys, "upscale")
    assert not os.path.exists(tmp_path / "a_x4.png")


def test_eval_errors(tmp_path, image, capsys):
    assert main(["eval", str(tmp_path / "no-such-folder")]) == 2
    assert "no-such-folder" in one_line_error(capsys, "eval")
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "no images" in one_line_error(capsys, "eval")
    assert main(["eval", str(image), "--json", str(tmp_path / "missing" / "scores.json")]) == 2
    assert "--json" in one_line_error(capsys, "eval")  # refused before the evaluation, not after
    assert main(["eval", str(image), "--model", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth" in one_line_error(capsys, "eval")
    assert main(["eval", str(image), "--tile-overlap", "-1"]) == 2
    assert "--tile-overlap" in one_line_error(capsys, "eval")


def test_doctor_errors(capsys):
    assert main(["doctor", "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in one_line_error(capsys, "doctor")


def test_doctor_error_while_running_is_one_line(capsys, monkeypatch):
    """A bad value doctor meets while it runs (here: the backend it is told to report) ends it like any command."""
    import spsr_fast.ops._backend as backend

    def bad_backend(*_op):
        raise ValueError("SPSR_FAST_BACKEND must be one of reference, native, triton or auto, got 'fast'")

    monkeypatch.setattr(backend, "get_backend", bad_backend)
    monkeypatch.setattr("spsr_fast.ops.get_backend", bad_backend)
    assert main(["doctor"]) == 2
    assert one_line_error(capsys, "doctor").endswith("got 'fast'")
    with pytest.raises(ValueError, match="got 'fast'"):
        main(["doctor", "--debug"])


def test_debug_shows_the_traceback(tmp_path, image, capsys, monkeypatch):
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        main(["--debug", "upscale", str(image), "--model", missing])
    with pytest.raises(FileNotFoundError):
        main(["upscale", str(image), "--model", missing, "--debug"])  # after the command too
    with pytest.raises(FileNotFoundError):
        main(["eval", str(tmp_path / "nothing"), "--debug"])
    monkeypatch.setenv("SPSR_FAST_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["upscale", str(image), "--model", missing])
    monkeypatch.setenv("SPSR_FAST_DEBUG", "0")
    assert main(["upscale", str(image), "--model", missing]) == 2
    one_line_error(capsys, "upscale")


def test_the_installed_command_prints_one_line(tmp_path, image):
    """The real entry point, in a fresh process: stderr holds one line, or the traceback with SPSR_FAST_DEBUG."""
    command = [sys.executable, "-m", "spsr_fast.cli", "upscale", str(image), "--model", str(tmp_path / "m.pth")]
    env = {k: v for k, v in os.environ.items() if k != "SPSR_FAST_DEBUG"}
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and "m.pth" in quiet.stderr, quiet.stderr
    loud = subprocess.run(command, capture_output=True, text=True, env={**env, "SPSR_FAST_DEBUG": "1"}, timeout=300)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "FileNotFoundError" in loud.stderr


class AlwaysOutOfMemory(torch.nn.Module):
    config = {"scale": 4}

    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_upscale_out_of_memory_retries_then_fails_the_image_clearly(tmp_path, capsys, monkeypatch):
    Image.fromarray(skimage_data.astronaut()[:80, :80]).save(tmp_path / "big.png")
    Image.fromarray(skimage_data.astronaut()[:16, :16]).save(tmp_path / "small.png")
    monkeypatch.setattr(spsr_fast, "load_model", lambda path: AlwaysOutOfMemory())
    code = main(["upscale", "--no-progress", str(tmp_path / "big.png"), "--model", resolve_model("default"),
                 "--tile", "64"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert lines[0] == "spsr-fast upscale: out of memory on cpu with tile 64: retrying with tile 32 " \
                       "(kept for the images that follow)"
    assert lines[1].startswith(f"FAILED {tmp_path / 'big.png'}: out of memory on cpu even with tile 32")
    assert len(lines) == 2 and "0 image(s) upscaled x4, 1 failed" in captured.out
    assert not (tmp_path / "big_x4.png").exists()


def test_upscale_out_of_memory_recovers_with_a_smaller_tile(tmp_path, capsys, monkeypatch):
    model = spsr_fast.load_model(resolve_model("default"))
    forward = model.forward

    def limited(x):  # the real network, on tiles of at most 32 x 32
        if x.shape[-1] * x.shape[-2] > 32 * 32:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return forward(x)

    model.forward = limited
    monkeypatch.setattr(spsr_fast, "load_model", lambda path: model)
    Image.fromarray(skimage_data.astronaut()[100:148, 180:228]).save(tmp_path / "a.png")
    assert main(["upscale", "--no-progress", str(tmp_path / "a.png"), "--model", "default"]) == 0
    captured = capsys.readouterr()
    assert "retrying with tile 32" in captured.err and "1 image(s) upscaled x4, 0 failed" in captured.out
    from spsr_fast.inference.runner import Upscaler

    model.forward = forward
    expected = Upscaler(model, device="cpu", tile=32).upscale_tensor(
        torch.from_numpy(skimage_data.astronaut()[100:148, 180:228] / 255).float().permute(2, 0, 1))[0][0]
    out = np.asarray(Image.open(tmp_path / "a_x4.png")).astype(int)
    assert np.abs(out - np.round(expected.permute(1, 2, 0).numpy() * 255)).max() <= 1
