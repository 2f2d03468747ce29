"""Trainer options: run.ops_backend auto keeps SPSR_FAST_BACKEND, run.val_lpips, one thread per
loader worker (torch and numpy's BLAS)."""
import glob
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_fast import ops
from spsr_fast.ops import _backend
from spsr_fast.train import load_config
from spsr_fast.train import trainer as trainer_module
from spsr_fast.train.config import ConfigError
from spsr_fast.train.trainer import Trainer

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt_imgs")
    rng = np.random.default_rng(0)
    for folder, count, size in (("train", 3, 48), ("val", 2, 32)):
        (root / folder).mkdir()
        for k in range(count):
            img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(img).save(root / folder / f"img{k}.png")
    return root


def tiny(images, out, **extra):
    overrides = {
        "run.stage": "spsr_g", "run.name": "t", "run.output_dir": str(out), "run.device": "cpu",
        "run.amp": "fp32", "run.threads": 1, "run.progress_bar": False, "run.tensorboard": False,
        "data.train_hr": str(images / "train"), "data.hr_size": 32, "data.batch_size": 2,
        "data.num_workers": 0, "model.nf": 8, "model.nb": 1, "model.gc": 4, "model.discriminator_nf": 4,
        "losses.vgg_weights": "random", "optim.total_iters": 2,
    }
    overrides.update(extra)
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()])


# ----- run.ops_backend ---------------------------------------------------------------------------

def _environment_backend(monkeypatch, value):
    """SPSR_FAST_BACKEND as if set before spsr_fast was imported (it is read at import)."""
    monkeypatch.setenv("SPSR_FAST_BACKEND", value)
    forced, error = _backend._from_environment()
    monkeypatch.setattr(_backend, "_forced", forced)
    monkeypatch.setattr(_backend, "_environment_error", error)


def test_ops_backend_auto_keeps_the_environment_backend(images, tmp_path, monkeypatch):
    _environment_backend(monkeypatch, "reference")
    Trainer(tiny(images, tmp_path))                       # run.ops_backend: auto (the default)
    assert ops.get_backend() == "reference"
    _environment_backend(monkeypatch, "gradient_map=native")
    Trainer(tiny(images, tmp_path))
    assert ops.get_backend("gradient_map") == "native" and ops.get_backend("dense_block") is None


def test_ops_backend_in_the_config_overrides_the_environment(images, tmp_path, monkeypatch):
    _environment_backend(monkeypatch, "reference")
    Trainer(tiny(images, tmp_path, **{"run.ops_backend": "native"}))
    assert ops.get_backend() == "native"


# ----- run.val_lpips -------------------------------------------------------------------------------

def _count_lpips(monkeypatch):
    calls = []

    def fake_make_lpips(device="cpu"):
        calls.append(device)
        return lambda sr, hr: 0.25
    monkeypatch.setattr(trainer_module, "make_lpips", fake_make_lpips)
    return calls


@pytest.mark.parametrize("val_lpips", [False, True])
def test_val_lpips_switches_lpips_in_validation(images, tmp_path, monkeypatch, val_lpips):
    calls = _count_lpips(monkeypatch)
    trainer = Trainer(tiny(images, tmp_path, **{"data.val_hr": str(images / "val"), "run.val_lpips": val_lpips}))
    metrics = trainer.validate()
    assert np.isfinite(metrics["val/psnr_y"])
    assert ("val/lpips" in metrics) == val_lpips and len(calls) == int(val_lpips)
    if val_lpips:
        assert metrics["val/lpips"] == 0.25 and metrics["val/ema_lpips"] == 0.25


def test_val_lpips_is_checked_by_name(images, tmp_path):
    with pytest.raises(ConfigError, match="run.val_lpips: expected true or false, got 'sometimes'"):
        tiny(images, tmp_path, **{"run.val_lpips": "sometimes"})


def test_tiny_configs_validate_without_lpips():
    """The CPU demos never reach the network: LPIPS would download torchvision's AlexNet."""
    paths = sorted(glob.glob(os.path.join(CONFIGS, "*tiny_cpu*.yaml")))
    assert len(paths) >= 2
    for path in paths:
        cfg = load_config(path, check_paths=False)
        assert cfg.run.val_lpips is False, path


# ----- loader workers ------------------------------------------------------------------------------

class _ThreadProbe(torch.utils.data.Dataset):
    """Reports the thread counts a loader worker runs with (torch, and numpy's BLAS pools)."""

    def __len__(self):
        return 4

    def __getitem__(self, item):
        blas = -1
        try:
            from threadpoolctl import threadpool_info

            blas = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=-1)
        except ImportError:
            pass
        return {"torch": torch.get_num_threads(), "blas": blas}


def test_loader_workers_run_one_thread(images, tmp_path):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    trainer = Trainer(tiny(images, tmp_path, **{"data.num_workers": 1, "run.threads": 2}))
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):   # the parent's pools: 2 threads
        assert torch.get_num_threads() == 2
        trainer.dataset = _ThreadProbe()
        batch = next(iter(trainer._loader()))
    assert batch["torch"].tolist() == [1, 1]
    assert batch["blas"].tolist() == [1, 1]
