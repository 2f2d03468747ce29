"""Image reading, datasets, sampler and sub-image preparation."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from spsr_fast.data import ImageReadError, read_image
from spsr_fast.data.datasets import (HRDataset, PairedDataset, ResumableSampler, ValidationDataset,
                                     make_lr)
from spsr_fast.data.prepare import main as prepare_main


def save_rgb(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0) + 0.05 * rng.random((h, w))
    rgb = np.stack([img, img[::-1], 1 - img], axis=2)
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "hr"
    d.mkdir()
    for k in range(3):
        save_rgb(d / f"img{k}.png", 72 + 4 * k, 80, seed=k)
    return d


def test_read_image_modes(tmp_path):
    gray = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(str(tmp_path / "g.png"))
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], gray / 255.0, atol=1e-7)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(str(tmp_path / "a.png"))
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out[..., 0], 200 / 255.0, atol=1e-7)  # alpha dropped, not blended

    deep = np.full((4, 4), 40000, np.uint16)
    Image.fromarray(deep).save(tmp_path / "d16.png")
    out = read_image(str(tmp_path / "d16.png"))
    np.testing.assert_allclose(out, 40000 / 65535.0, atol=1e-6)


def test_unreadable_image_error_names_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(str(bad))


def test_on_the_fly_crop_equals_crop_of_whole_lr(folder):
    ds = HRDataset(str(folder), scale=4, hr_size=32, use_augment=False)
    hr = read_image(ds.paths[1])
    full_lr = make_lr(hr, 4, quantize_lr=False)
    ds.quantize_lr = False
    for top, left in [(0, 0), (5, 7), (19 - 8, 20 - 8), (3, 12)]:
        lr, hr_crop = ds.crop_pair(hr, top, left)
        np.testing.assert_allclose(lr, full_lr[top:top + 8, left:left + 8], atol=1e-6)
        np.testing.assert_array_equal(hr_crop, hr[top * 4:(top + 8) * 4, left * 4:(left + 8) * 4])


def test_hr_dataset_items_and_augment_consistency(folder):
    ds = HRDataset(str(folder), scale=4, hr_size=32)
    item = ds[(0, (1, 0, 5))]
    assert item["lr"].shape == (3, 8, 8) and item["hr"].shape == (3, 32, 32)
    assert 0 <= item["lr"].min() and item["lr"].max() <= 1
    again = ds[(0, (1, 0, 5))]
    assert (item["hr"] == again["hr"]).all()  # a sample is a pure function of its seed
    # LR stays the bicubic of HR after the flips (same transform on both).
    lr = make_lr(item["hr"].numpy().transpose(1, 2, 0), 4, quantize_lr=True)
    assert np.abs(lr[2:-2, 2:-2] - item["lr"].numpy().transpose(1, 2, 0)[2:-2, 2:-2]).max() < 0.05


def test_corrupt_image_is_reported_and_skipped(folder, caplog):
    (folder / "zz_corrupt.png").write_bytes(b"garbage")
    ds = HRDataset(str(folder), scale=4, hr_size=32)
    with caplog.at_level(logging.WARNING, logger="spsr_fast.data"):
        item = ds[(3, (0, 0, 0))]
    assert item["index"] == 0  # wrapped around to the next readable image
    assert "zz_corrupt.png" in caplog.text


def test_empty_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        HRDataset(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        HRDataset(str(tmp_path / "nowhere"))


def test_paired_dataset(tmp_path, folder):
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for p in sorted(os.listdir(folder)):
        hr = read_image(str(folder / p))
        lr = make_lr(hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4], 4, True)
        Image.fromarray((lr * 255).round().astype(np.uint8)).save(lr_dir / p.replace(".png", "x4.png"))
    ds = PairedDataset(str(folder), str(lr_dir), scale=4, hr_size=32, use_augment=False)
    item = ds[(2, 3)]
    assert item["lr"].shape == (3, 8, 8) and item["hr"].shape == (3, 32, 32)
    val = ValidationDataset(str(folder), scale=4, lr_folders=str(lr_dir))
    assert val[0]["hr"].shape[1:] == tuple(4 * s for s in val[0]["lr"].shape[1:])


def test_sampler_shards_and_resumes():
    full = ResumableSampler(10, seed=3)
    it = iter(full)
    first = [next(it) for _ in range(25)]
    resumed = iter(ResumableSampler(10, seed=3, start=13))
    assert [next(resumed) for _ in range(12)] == first[13:]
    assert sorted(i for i, _ in first[:10]) == list(range(10))  # one epoch is a permutation
    r0, r1 = iter(ResumableSampler(10, seed=3, rank=0, world_size=2)), iter(ResumableSampler(10, seed=3, rank=1, world_size=2))
    epoch = {next(r0)[0] for _ in range(5)} | {next(r1)[0] for _ in range(5)}
    assert epoch == set(range(10))


def test_prepare_subimages(tmp_path, folder):
    out = tmp_path / "sub"
    assert prepare_main([str(folder), str(out), "--size", "48", "--step", "24", "--min-remainder", "4"]) == 0
    files = sorted(os.listdir(out))
    assert files and all(Image.open(out / f).size == (48, 48) for f in files)
    # 80 wide: starts 0, 24 and the flush window 32; 72 high: 0, 24 -> 2 x 3 windows.
    assert len([f for f in files if f.startswith("img0_")]) == 6
