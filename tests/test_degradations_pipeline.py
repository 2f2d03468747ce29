"""The real-world pipeline as a whole: against the per-image numpy/Pillow reference, its draws
against the config, determinism from (seed, step, rank) and (seed, name), its config checks,
and the `spsr-fast degrade` / `spsr-fast eval --lr-dir` commands."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_fast.cli import main
from spsr_fast.degradations import reference as R
from spsr_fast.degradations.config import RealWorldConfig, check_realworld
from spsr_fast.degradations.filters import usm_sharpen
from spsr_fast.degradations.images import degrade_image
from spsr_fast.degradations.pipeline import RealWorldDegrader, apply, draw

skimage_data = pytest.importorskip("skimage.data")


def _photo_batch(n=6, size=128):
    img = skimage_data.astronaut()
    crops = [img[40 * k: 40 * k + size, 60 + 30 * k: 60 + 30 * k + size] for k in range(n)]
    return np.stack(crops).astype(np.float64) / 255


def _noiseless(cfg: RealWorldConfig, quality=100) -> RealWorldConfig:
    for stage in (cfg.first, cfg.second):
        stage.noise_range, stage.poisson_scale_range = [0.0, 0.0], [0.0, 0.0]
        if quality is not None:
            stage.jpeg_range = [quality, quality]
    return cfg


def test_pipeline_matches_the_per_image_reference():
    """Same draws, noise off, float64: blur, resizes, JPEG (Pillow's there), the final filter
    and the order as the numpy/SciPy/Pillow reference, image by image. Resized 8-bit values
    often land on exact halves before JPEG's rounding, where the two op orders can fall on
    either side: such a sample differs a little from there on; most are identical."""
    imgs = _photo_batch()
    hr = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    cfg = _noiseless(RealWorldConfig(), quality=None)
    modes, identical, total = set(), 0, 0
    for seed in range(4):
        d = draw(cfg, len(imgs), torch.Generator().manual_seed(seed))
        lr = apply(hr, d, 4, torch.Generator())
        assert lr.shape == (6, 3, 32, 32) and lr.dtype == torch.float64
        modes |= {d.first.resize.mode, d.second.resize.mode, d.final_mode}
        for i in range(len(imgs)):
            ref = R.degrade(imgs[i], d, i, 4, np.random.default_rng(0))
            diff = np.abs(lr[i].permute(1, 2, 0).numpy() - ref) * 255
            assert diff.mean() < 0.5, (seed, i, diff.mean(), diff.max())
            identical += int(diff.max() < 1e-6)
            total += 1
    assert identical >= 0.75 * total, f"{identical} of {total} identical"
    assert modes == {"area", "bilinear", "bicubic"}


def test_noise_and_jpeg_change_the_lr_as_configured():
    hr = torch.from_numpy(_photo_batch(4)).permute(0, 3, 1, 2).float()
    d = draw(_noiseless(RealWorldConfig()), 4, torch.Generator().manual_seed(0))
    clean = apply(hr, d, 4, torch.Generator().manual_seed(1))
    noisy_cfg = _noiseless(RealWorldConfig())
    noisy_cfg.second.noise_range = [20.0, 20.0]
    noisy_cfg.second.gaussian_noise_prob = 1.0
    noisy_cfg.second.gray_noise_prob = 0.0
    d2 = draw(noisy_cfg, 4, torch.Generator().manual_seed(0))
    noisy = apply(hr, d2, 4, torch.Generator().manual_seed(1))
    # the same geometry (same draws but sigma), noise of ~20/255 passed through the final filter
    residual = (noisy - clean).std().item() * 255
    assert 5 < residual < 21
    assert torch.all(d2.second.gaussian) and torch.all(d2.second.sigma == 20)


def test_draws_follow_the_config():
    cfg = RealWorldConfig()
    gen = torch.Generator().manual_seed(3)
    directions, orders, qualities, grey, gaussian = [], [], [], [], []
    for _ in range(400):
        d = draw(cfg, 8, gen)
        f = d.first.resize.factor
        directions.append("keep" if f == 1 else "up" if f > 1 else "down")
        assert cfg.first.resize_range[0] <= f <= cfg.first.resize_range[1]
        orders.append(d.jpeg_first.double().mean().item())
        qualities.append(d.first.quality)
        grey.append(d.first.grey.double().mean().item())
        gaussian.append(d.second.gaussian.double().mean().item())
    n = len(directions)
    for name, p in zip(("up", "down", "keep"), cfg.first.resize_prob):
        assert abs(directions.count(name) / n - p) < 4 * math.sqrt(p * (1 - p) / n), name
    assert abs(np.mean(orders) - 0.5) < 0.03 and abs(np.mean(grey) - 0.4) < 0.03 and abs(np.mean(gaussian) - 0.5) < 0.03
    q = torch.cat(qualities)
    assert q.dtype == torch.int64 and q.min() >= 30 and q.max() <= 95 and len(q.unique()) > 50


def test_training_pairs_depend_on_seed_step_and_rank_only():
    hr = torch.from_numpy(_photo_batch(4, 64)).permute(0, 3, 1, 2).float()
    deg = RealWorldDegrader(RealWorldConfig(), 4, seed=7)
    a = deg(hr, step=5, rank=0)
    assert a.lr.shape == (4, 3, 16, 16) and a.lr.min() >= 0 and a.lr.max() <= 1
    assert torch.equal(torch.round(a.lr * 255) / 255, a.lr)                 # 8-bit LR
    again = RealWorldDegrader(RealWorldConfig(), 4, seed=7)(hr.clone(), step=5, rank=0)
    assert torch.equal(a.lr, again.lr) and torch.equal(a.target, again.target)
    for other in (dict(step=6, rank=0), dict(step=5, rank=1)):
        assert not torch.equal(a.lr, deg(hr, **other).lr), other
    assert not torch.equal(a.lr, RealWorldDegrader(RealWorldConfig(), 4, seed=8)(hr, 5, 0).lr)
    # rank r at step s is not rank 0 at a nearby step either (no seed = step + rank collisions)
    assert not torch.equal(deg(hr, 6, 0).lr, deg(hr, 5, 1).lr)
    # per-sample draws: every sample of the batch has its own kernel and JPEG quality
    from spsr_fast.degradations.seeding import training_generators
    d = draw(RealWorldConfig(), 4, training_generators("cpu", 7, 5, 0)[0])
    assert len({tuple(k.flatten().tolist()) for k in d.first.kernels}) == 4


def test_sharpened_targets():
    hr = torch.from_numpy(_photo_batch(2, 64)).permute(0, 3, 1, 2).float()
    out = RealWorldDegrader(RealWorldConfig(), 4, 0)(hr, 0)
    torch.testing.assert_close(out.target, usm_sharpen(hr), rtol=0, atol=0)
    assert torch.equal(out.real, hr) and not torch.equal(out.target, hr)
    both = RealWorldDegrader(dataclasses.replace(RealWorldConfig(), sharpen_adversarial=True), 4, 0)(hr, 0)
    assert torch.equal(both.real, both.target) and torch.equal(both.lr, out.lr)
    plain = RealWorldDegrader(dataclasses.replace(RealWorldConfig(), sharpen=False), 4, 0)(hr, 0)
    assert torch.equal(plain.target, hr) and torch.equal(plain.real, hr)
    assert not torch.equal(plain.lr, out.lr)   # the LR is made from the sharpened HR (Real-ESRGAN)


def test_fixed_set_images_depend_on_seed_and_name_only():
    hr = _photo_batch(1, 96)[0]
    a = degrade_image(hr, RealWorldConfig(), 4, 0, "a.png")
    assert a.shape == (24, 24, 3) and a.dtype == np.float32
    assert np.array_equal(a, degrade_image(hr, RealWorldConfig(), 4, 0, "a.png"))
    assert not np.array_equal(a, degrade_image(hr, RealWorldConfig(), 4, 0, "b.png"))
    assert not np.array_equal(a, degrade_image(hr, RealWorldConfig(), 4, 1, "a.png"))
    odd = degrade_image(np.zeros((99, 50, 3)), RealWorldConfig(), 4, 0, "odd.png")
    assert odd.shape == (24, 12, 3)


@pytest.mark.parametrize("key, value, message", [
    ("first.kernel_prob", [0.5, 0.5, 0, 0, 0, 0.1], "realworld.first.kernel_prob: must be non-negative and sum to 1"),
    ("first.kernel_list", ["iso", "gauss"], "realworld.first.kernel_list[1]: must be one of"),
    ("second.blur_prob", 1.2, "realworld.second.blur_prob: must be a probability"),
    ("second.resize_range", [0.3, 0.9], "realworld.second.resize_range: must satisfy 0 < down <= 1 <= up"),
    ("first.kernel_size", [8, 21], "realworld.first.kernel_size: kernel sizes must be odd"),
    ("first.jpeg_range", [95, 30], "realworld.first.jpeg_range: low 95 is above high 30"),
    ("first.jpeg_range", [0, 95], "realworld.first.jpeg_range: must be >= 1"),
    ("first.betag_range", [1.5, 4], "realworld.first.betag_range: must satisfy 0 < low <= 1 <= high"),
    ("final_resize_modes", ["nearest"], "realworld.final_resize_modes[0]: must be one of area, bilinear, bicubic"),
    ("usm_threshold", -1.0, "realworld.usm_threshold: must be >= 0"),
])
def test_config_checks_name_the_field(key, value, message):
    cfg = RealWorldConfig()
    section, _, name = key.rpartition(".")
    setattr(getattr(cfg, section) if section else cfg, name, value)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_realworld(cfg)


def test_defaults_are_real_esrgans_published_values():
    c = RealWorldConfig()
    assert check_realworld(c) is c
    assert c.first.kernel_prob == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03] and c.first.sinc_prob == 0.1
    assert (c.first.blur_sigma, c.second.blur_sigma) == ([0.2, 3.0], [0.2, 1.5])
    assert (c.first.betag_range, c.first.betap_range) == ([0.5, 4.0], [1.0, 2.0])
    assert (c.first.resize_prob, c.second.resize_prob) == ([0.2, 0.7, 0.1], [0.3, 0.4, 0.3])
    assert (c.first.resize_range, c.second.resize_range) == ([0.15, 1.5], [0.3, 1.2])
    assert (c.first.noise_range, c.second.noise_range) == ([1.0, 30.0], [1.0, 25.0])
    assert (c.first.poisson_scale_range, c.second.poisson_scale_range) == ([0.05, 3.0], [0.05, 2.5])
    assert c.first.gaussian_noise_prob == c.second.gaussian_noise_prob == 0.5
    assert c.first.gray_noise_prob == c.second.gray_noise_prob == 0.4
    assert c.first.jpeg_range == c.second.jpeg_range == [30.0, 95.0]
    assert (c.second.blur_prob, c.final_sinc_prob, c.jpeg_first_prob) == (0.8, 0.8, 0.5)
    assert c.first.kernel_size == c.final_kernel_size == [7, 21] and c.sinc_large_kernel == 13
    assert (c.usm_weight, c.usm_radius, c.usm_threshold) == (0.5, 50, 10.0)
    assert (c.sharpen, c.sharpen_adversarial) == (True, False)


# ----- commands -------------------------------------------------------------------------------

def _hr_folder(tmp_path):
    hr = tmp_path / "hr"
    (hr / "sub").mkdir(parents=True)
    Image.fromarray(skimage_data.astronaut()[:96, :100]).save(hr / "astronaut.png")
    Image.fromarray(skimage_data.coffee()[:64, :64]).save(hr / "sub" / "coffee.jpg")
    return hr


def test_degrade_command_writes_a_seeded_set(tmp_path, capsys):
    hr = _hr_folder(tmp_path)
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr"), "--seed", "3"]) == 0
    lr = np.asarray(Image.open(tmp_path / "lr" / "astronaut.png"), dtype=np.float32) / 255
    assert lr.shape == (24, 25, 3)
    expected = degrade_image(skimage_data.astronaut()[:96, :100].astype(np.float32) / 255, RealWorldConfig(), 4, 3,
                             "astronaut.png")
    assert np.array_equal(lr, expected)
    assert (tmp_path / "lr" / "sub" / "coffee.png").exists()
    manifest = json.loads((tmp_path / "lr" / "degradation.json").read_text())
    assert manifest["seed"] == 3 and manifest["scale"] == 4
    assert sorted(manifest["files"]) == ["astronaut.png", "sub/coffee.jpg"]
    # never overwrites without --overwrite; a bad field is one line naming it
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  scale: 2\nrealworld:\n  second:\n    jpeg_range: [60, 200]\n")
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr2"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "spsr-fast degrade: realworld.second.jpeg_range: must be <= 100, got [60.0, 200.0]"
    # the config's scale and a --set override apply
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr2"), "--config", str(cfg),
                 "--set", "realworld.second.jpeg_range=[60,95]"]) == 0
    assert Image.open(tmp_path / "lr2" / "astronaut.png").size == (50, 48)


def test_eval_scores_against_the_given_lr(tmp_path, capsys):
    import spsr_fast
    from spsr_fast.models import RRDBNet

    hr = _hr_folder(tmp_path)
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr"), "--seed", "0"]) == 0
    torch.manual_seed(0)
    spsr_fast.save_model(RRDBNet(nf=4, nb=1, gc=4), tmp_path / "m.safetensors")
    out = tmp_path / "s.json"
    args = ["eval", str(hr), "--model", str(tmp_path / "m.safetensors"), "--no-lpips", "--json"]
    assert main(args + [str(out), "--lr-dir", str(tmp_path / "lr")]) == 0
    degraded = json.loads(out.read_text())
    assert main(args + [str(tmp_path / "b.json")]) == 0
    bicubic = json.loads((tmp_path / "b.json").read_text())
    assert degraded["lr"] == str(tmp_path / "lr") and bicubic["lr"] == "matlab_bicubic"
    # the bicubic column upscales the given (degraded) LR: far from MATLAB bicubic's scores
    from spsr_fast.data.imresize import imresize
    from spsr_fast.metrics import psnr_y
    hr_img = torch.from_numpy(skimage_data.astronaut()[:96, :100].astype(np.float32) / 255).permute(2, 0, 1)
    lr_img = np.asarray(Image.open(tmp_path / "lr" / "astronaut.png"), np.float32) / 255
    lr_img = torch.from_numpy(lr_img).permute(2, 0, 1)
    expected = psnr_y(torch.round(imresize(lr_img, 4.0).clamp(0, 1) * 255) / 255, hr_img[:, :96, :100], shave=4)
    assert degraded["images"][0]["bicubic"]["psnr_y"] == pytest.approx(expected, abs=1e-4)
    assert degraded["images"][0]["bicubic"]["psnr_y"] < bicubic["images"][0]["bicubic"]["psnr_y"] - 1
    # an HR image without an LR partner is an error before any work
    (tmp_path / "lr" / "astronaut.png").unlink()
    assert main(args + [str(out), "--lr-dir", str(tmp_path / "lr")]) == 2
    assert "no LR image" in capsys.readouterr().err


def test_degraded_tiles_of_the_builtin_photos(tmp_path):
    """The README demo's evaluation set: held-out built-in photos cut into tiles (named by the
    photo), then degraded from a seed."""
    from spsr_fast.data.prepare import main as prepare_main

    assert prepare_main(["builtin:skimage-val", str(tmp_path / "tiles"), "--size", "256", "--step", "256"]) == 0
    tiles = sorted(p.name for p in (tmp_path / "tiles").iterdir())
    assert tiles[:2] == ["chelsea_s001.png", "chelsea_s002.png"] and len(tiles) == 12
    assert main(["degrade", str(tmp_path / "tiles"), "-o", str(tmp_path / "lr"), "--seed", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "lr").glob("*.png")) == tiles
