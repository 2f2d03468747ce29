"""Built-in image sources (`builtin:NAME`, spsr_fast/data/builtin.py): the training demo's data
ships with scikit-image, resolves offline, keeps validation images out of training, and goes
through the same datasets and trainer as a folder."""
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import pytest

from spsr_fast.data import read_image
from spsr_fast.data.builtin import SOURCES, BuiltinSource, BuiltinSourceError, builtin_paths
from spsr_fast.data.datasets import HRDataset, ValidationDataset, make_lr
from spsr_fast.train import load_config
from spsr_fast.train.trainer import Trainer

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _pixel_hash(path):
    return hashlib.sha256(read_image(path).tobytes()).hexdigest()


def test_sources_are_bundled_and_the_split_is_disjoint_by_content():
    import skimage

    package_dir = os.path.dirname(skimage.__file__)
    train, val = builtin_paths("builtin:skimage-train"), builtin_paths("builtin:skimage-val")
    assert len(train) == 9 and len(val) == 3
    for path in train + val:  # inside the installed wheel: nothing was downloaded
        assert os.path.commonpath([path, package_dir]) == package_dir and os.path.isfile(path)
    # By pixels, not names: skimage.data.cat() is chelsea.png under another name.
    train_hashes, val_hashes = {_pixel_hash(p) for p in train}, {_pixel_hash(p) for p in val}
    assert len(train_hashes) == len(train) and len(val_hashes) == len(val)
    assert not train_hashes & val_hashes
    for path in train + val:  # large enough for the NSE configs' 128 px patches
        assert min(read_image(path).shape[:2]) >= 300, path


def test_datasets_treat_a_builtin_source_like_a_folder_of_the_same_files(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    for path in builtin_paths("builtin:skimage-val"):
        shutil.copy(path, folder)
    builtin = ValidationDataset(["builtin:skimage-val"], scale=4, crop=96)
    copied = ValidationDataset([str(folder)], scale=4, crop=96)
    assert len(builtin) == len(copied) == 3
    for i in range(3):  # same order, same crops, same on-the-fly 8-bit bicubic LR
        a, b = builtin[i], copied[i]
        assert a["name"] == b["name"]
        assert (a["hr"] == b["hr"]).all() and (a["lr"] == b["lr"]).all()
        hr = a["hr"].numpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(a["lr"].numpy().transpose(1, 2, 0), make_lr(hr, 4, True))

    train = HRDataset("builtin:skimage-train", scale=4, hr_size=64)
    item = train[(3, (0, 0, 1))]
    assert len(train) == 9 and item["lr"].shape == (3, 16, 16) and item["hr"].shape == (3, 64, 64)


def test_unknown_or_incomplete_source_is_a_one_line_error(monkeypatch):
    with pytest.raises(BuiltinSourceError, match=r"unknown built-in image source 'builtin:skimage' "
                                                 r"\(known: builtin:skimage-train, builtin:skimage-val\)"):
        builtin_paths("builtin:skimage")
    monkeypatch.setitem(SOURCES, "skimage-val", BuiltinSource(
        package="skimage.data", install="scikit-image", what="test", files=("chelsea.png", "no_such.png")))
    with pytest.raises(BuiltinSourceError, match=r"builtin:skimage-val: skimage\.data does not bundle no_such\.png"):
        builtin_paths("builtin:skimage-val")


def test_missing_scikit_image_says_how_to_install(monkeypatch):
    # An import of a name mapped to None fails like a package that is not installed.
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(BuiltinSourceError) as info:
        builtin_paths("builtin:skimage-train")
    assert str(info.value) == "builtin:skimage-train needs scikit-image: pip install scikit-image"


def test_demo_config_trains_and_validates_on_builtin_data_beside_bicubic(tmp_path, monkeypatch):
    """configs/tiny_cpu.yaml as shipped (no paths to fill in), shrunk to a few steps."""
    import spsr_fast.train.trainer as trainer

    monkeypatch.setattr(trainer, "make_lpips", lambda device: None)  # LPIPS may fetch weights: no network here
    demo = load_config(os.path.join(ROOT, "configs", "tiny_cpu.yaml"))  # paths checked
    assert demo.data.train_hr == ["builtin:skimage-train"] and demo.data.val_hr == ["builtin:skimage-val"]
    cfg = load_config(os.path.join(ROOT, "configs", "tiny_cpu.yaml"), [
        f"run.output_dir={tmp_path}", "run.name=demo", "run.threads=1", "run.progress_bar=false",
        "run.tensorboard=false", "data.num_workers=0", "data.hr_size=32", "data.batch_size=2",
        "data.val_crop=64", "model.nf=8", "model.nb=1", "model.gc=4", "model.discriminator_nf=4",
        "optim.total_iters=2", "optim.milestones=[1]", "run.val_every=2", "run.save_every=2"])
    Trainer(cfg).train()
    with open(tmp_path / "demo" / "log.jsonl") as fh:
        val = [r for r in map(json.loads, fh) if "val/psnr_y" in r]
    assert len(val) == 1
    for key in ("val/psnr_y", "val/ema_psnr_y", "val/bicubic_psnr_y"):
        assert np.isfinite(val[0][key]) and val[0][key] > 15, key
