"""`python -m spsr_fast.train`: errors a user can cause end with one line on stderr and a
non-zero exit (a traceback only with --debug / SPSR_FAST_DEBUG=1), bugs keep their traceback,
and the last line on stdout is the run's summary."""
import json
import re
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_fast.train.__main__ import main
from spsr_fast.train.trainer import summary_line

def _write_images(folder, count, size, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        img = rng.uniform(0, 1, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{k:02d}.png")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    _write_images(root / "train", 3, 48, seed=0)
    _write_images(root / "val", 2, 40, seed=1)
    (root / "psnr.yaml").write_text("run:\n  stage: psnr\nmodel:\n  arch: rrdbnet\n")
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network in tests: an empty torch hub cache, and every download fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError("tests run offline")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def args(images, out, **extra):
    values = {
        "run.stage": "psnr", "run.name": "t", "run.output_dir": str(out), "run.device": "cpu",
        "run.amp": "fp32", "run.threads": 1, "run.log_every": 1, "run.val_every": 1000,
        "run.image_every": 1000, "run.save_every": 2, "run.progress_bar": False, "run.tensorboard": False,
        "run.ema_decay": 0.5, "data.train_hr": str(images / "train"), "data.hr_size": 16,
        "data.batch_size": 2, "data.num_workers": 0, "model.arch": "rrdbnet", "model.nf": 4, "model.nb": 1,
        "model.gc": 4, "losses.pixel_weight": 1, "optim.total_iters": 2, "optim.milestones": [1000],
    }
    values.update(extra)
    return ["--config", str(images / "psnr.yaml")] + [
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]


def run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *phrases, exit_code=1):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == exit_code, err
    assert "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]


# ---------------------------------------------------------------- user errors

def test_bad_config_value(images, tmp_path, capsys):
    code, _, err = run_main(args(images, tmp_path, **{"optim.lr_g": "fast"}), capsys)
    assert_one_line_error(code, err, "optim.lr_g", exit_code=2)


def test_missing_pretrained_file(images, tmp_path, capsys):
    code, _, err = run_main(args(images, tmp_path, **{"model.pretrained": str(tmp_path / "nope.pth")}), capsys)
    assert_one_line_error(code, err, "model.pretrained", "nope.pth", exit_code=2)


def test_pretrained_file_that_does_not_fit(images, tmp_path, capsys):
    from spsr_fast.checkpoints import save_model
    from spsr_fast.models import RRDBNet

    path = tmp_path / "other.safetensors"
    save_model(RRDBNet(nf=8, nb=1, gc=4), path)
    code, _, err = run_main(args(images, tmp_path, **{"model.pretrained": str(path)}), capsys)
    assert_one_line_error(code, err, "model.pretrained", "conv_first.weight (8, 3, 3, 3) vs (4, 3, 3, 3)")


def test_unreadable_dataset(images, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for k in range(2):
        (broken / f"b{k}.png").write_bytes(b"\x89PNG not really")
    code, _, err = run_main(args(images, tmp_path, **{"data.train_hr": str(broken)}), capsys)
    assert_one_line_error(code, err, "data.train_hr", "unreadable")


def test_folder_without_images(images, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(args(images, tmp_path, **{"data.train_hr": str(tmp_path / "empty")}), capsys)
    assert_one_line_error(code, err, "data.train_hr", "no images")


def test_bad_resume_paths(images, tmp_path, capsys):
    code, _, err = run_main(["--resume", str(tmp_path / "missing.pt")] + args(images, tmp_path), capsys)
    assert_one_line_error(code, err, "--resume", "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run_main(["--resume", str(corrupt)] + args(images, tmp_path), capsys)
    assert_one_line_error(code, err, "--resume", "corrupt.pt", "not a readable checkpoint")


def test_resume_with_another_model_config(images, tmp_path, capsys):
    assert main(args(images, tmp_path)) == 0
    capsys.readouterr()
    code, _, err = run_main(["--resume", "auto"] + args(images, tmp_path, **{"model.nf": 8}), capsys)
    assert_one_line_error(code, err, "--resume", "does not fit", "conv_first.weight")


def test_vgg_weights_offline(images, tmp_path, capsys):
    code, _, err = run_main(args(images, tmp_path, **{
        "run.stage": "spsr_g", "model.arch": "spsrnet", "model.discriminator_nf": 4, "data.hr_size": 32,
        "losses.perceptual_weight": 1, "losses.vgg_weights": "torchvision"}), capsys)
    assert_one_line_error(code, err, "losses.vgg_weights", "vgg19-dcbb9e9d.pth", "losses.vgg_weights=PATH")


def test_debug_shows_the_traceback(images, tmp_path, capsys, monkeypatch):
    code, _, err = run_main(["--debug"] + args(images, tmp_path, **{"data.train_hr": str(tmp_path)}), capsys)
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
    monkeypatch.setenv("SPSR_FAST_DEBUG", "1")
    code, _, err = run_main(args(images, tmp_path, **{"data.train_hr": str(tmp_path)}), capsys)
    assert code == 1 and "Traceback" in err


def test_a_bug_keeps_its_traceback(images, tmp_path, monkeypatch):
    from spsr_fast.train.trainer import Trainer

    def broken(self):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(Trainer, "train", broken)
    with pytest.raises(ZeroDivisionError):
        main(args(images, tmp_path))


def test_command_line_exit_code_and_single_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  stage: psnr\n  amp: fp64\n")
    result = subprocess.run([sys.executable, "-m", "spsr_fast.train", "--config", str(cfg)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: run.amp: must be one of bf16, fp16, fp32, got 'fp64'"], result.stderr


# ---------------------------------------------------------------- the summary line

def test_summary_is_the_last_line_with_the_final_validation(images, tmp_path, capsys):
    code, out, _ = run_main(args(images, tmp_path, **{"data.val_hr": str(images / "val")}), capsys)
    assert code == 0
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"done: 2 iterations in [0-9.]+ (s|min); validation PSNR-Y ([0-9.]+) dB \(EMA\), "
                     r"([0-9.]+) \(raw\), bicubic ([0-9.]+)", last)
    assert m, last
    with open(tmp_path / "t" / "log.jsonl") as fh:
        val = [r for r in map(json.loads, fh) if "val/psnr_y" in r][-1]
    assert val["step"] == 2
    assert m.group(2) == f"{val['val/ema_psnr_y']:.2f}" and m.group(3) == f"{val['val/psnr_y']:.2f}"
    assert m.group(4) == f"{val['val/bicubic_psnr_y']:.2f}"

    # resumed when already complete: nothing to train, the same final weights are validated
    code, out, _ = run_main(["--resume", "auto"] + args(images, tmp_path, **{"data.val_hr": str(images / "val")}), capsys)
    again = out.strip().splitlines()[-1]
    assert code == 0 and again.startswith("done: 0 iterations in ") and "(resumed at step 2)" in again
    assert again.split("; ")[1] == last.split("; ")[1]


def test_summary_wording():
    metrics = {"val/psnr_y": 27.354, "val/ema_psnr_y": 28.031, "val/bicubic_psnr_y": 27.59}
    assert summary_line(2000, 312, 0, metrics) == (
        "done: 2000 iterations in 5.2 min; validation PSNR-Y 28.03 dB (EMA), 27.35 (raw), bicubic 27.59")
    del metrics["val/ema_psnr_y"]
    assert summary_line(10, 3.04, 990, metrics) == (
        "done: 10 iterations in 3.0 s (resumed at step 990); validation PSNR-Y 27.35 dB, bicubic 27.59")
    assert summary_line(5, 1, 0, {}) == "done: 5 iterations in 1.0 s; no validation (data.val_hr is empty)"
