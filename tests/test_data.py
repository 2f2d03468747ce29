"""Image reading, datasets, sampler and sub-image preparation."""
import itertools
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


def _dihedral(a, hflip, vflip, transpose):
    """The transform of datasets.augment, in the same order."""
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1]
    return a.transpose(1, 0, 2) if transpose else a


def _undo_dihedral(a, hflip, vflip, transpose):
    a = a.transpose(1, 0, 2) if transpose else a
    a = a[::-1] if vflip else a
    return a[:, ::-1] if hflip else a


def _locate_crop(crop, image, scale):
    """(transform, LR top, LR left) at which the augmented HR `crop` was cut from `image`."""
    n = crop.shape[0]
    for transform in itertools.product((False, True), repeat=3):
        plain = _undo_dihedral(crop, *transform)
        for top in range(0, image.shape[0] - n + 1, scale):
            for left in range(0, image.shape[1] - n + 1, scale):
                if np.array_equal(image[top:top + n, left:left + n], plain):
                    return transform, top // scale, left // scale
    raise AssertionError("the HR crop is not a (flipped/transposed) window of the image on the LR grid")


def test_hr_dataset_items_and_augment_consistency(folder):
    ds = HRDataset(str(folder), scale=4, hr_size=32)
    item = ds[(0, (1, 0, 5))]
    assert item["lr"].shape == (3, 8, 8) and item["hr"].shape == (3, 32, 32)
    again = ds[(0, (1, 0, 5))]
    assert (item["hr"] == again["hr"]).all() and (item["lr"] == again["lr"]).all()  # a pure function of its seed

    # Each LR crop must be the same (flipped/transposed) window of the 8-bit LR of the whole
    # image as its HR crop: the on-the-fly LR is float64 bicubic rounded once to 8 bits, so it
    # is exact, except that a value within float error of a rounding tie (k + 0.5) / 255 may
    # round either way (1/255). A 1-pixel shift, a missing quantisation or flips applied to
    # one side only break this by far more.
    hr = read_image(ds.paths[0])
    hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
    lr_exact = make_lr(hr, 4, quantize_lr=False).astype(np.float64)
    lr_full = make_lr(hr, 4, quantize_lr=True)
    transforms = set()
    for position in range(12):
        item = ds[(0, (1, 0, position))]
        lr, hr_crop = (item[k].numpy().transpose(1, 2, 0) for k in ("lr", "hr"))
        np.testing.assert_array_equal(lr * 255, np.round(lr * 255))  # 8-bit levels, as an LR PNG
        transform, top, left = _locate_crop(hr_crop, hr, 4)
        transforms.add(transform)
        expected = _dihedral(lr_full[top:top + 8, left:left + 8], *transform)
        exact = _dihedral(lr_exact[top:top + 8, left:left + 8], *transform) * 255
        near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
        np.testing.assert_array_equal(lr[~near_tie], expected[~near_tie])
        assert np.abs(lr - expected).max() <= 1 / 255 + 1e-7
    assert len(transforms) >= 4  # the draws really flipped and transposed


def test_decoded_images_are_cached_within_the_budget(folder, monkeypatch):
    import spsr_fast.data.datasets as datasets

    reads = []
    real_read = datasets.read_image
    monkeypatch.setattr(datasets, "read_image", lambda path: reads.append(path) or real_read(path))
    cached = HRDataset(str(folder), scale=4, hr_size=32)
    first = [cached[(i % 3, (0, 0, i))] for i in range(9)]
    assert len(reads) == 3  # each image decoded once, then served from memory
    monkeypatch.setattr(datasets, "DECODE_CACHE_BYTES", 0)  # nothing fits: decoded per sample
    uncached = HRDataset(str(folder), scale=4, hr_size=32)
    again = [uncached[(i % 3, (0, 0, i))] for i in range(9)]
    assert len(reads) == 3 + 9
    for a, b in zip(first, again):  # the cache changes no sample
        assert (a["lr"] == b["lr"]).all() and (a["hr"] == b["hr"]).all()


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
