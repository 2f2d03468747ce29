"""`spsr-fast upscale` end to end on real images: every kind of picture, tiling seams, bad inputs."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.inference import io as inference_io
from spsr_fast.models import RRDBNet, SPSRNet

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    rrdb, spsr = folder / "rrdb.safetensors", folder / "spsr.safetensors"
    spsr_fast.save_model(RRDBNet(nf=4, nb=1, gc=4), rrdb)
    spsr_fast.save_model(SPSRNet(nf=4, nb=1, gc=4), spsr)
    return {"rrdb": str(rrdb), "spsr": str(spsr)}


def photo(h=40, w=48):
    return skimage_data.astronaut()[100:100 + h, 180:180 + w]


def upscale(*argv):
    return main(["upscale", "--no-progress", *map(str, argv)])


def test_rgb_gray_and_sixteen_bit_keep_their_kind(tmp_path, models, capsys):
    Image.fromarray(photo()).save(tmp_path / "rgb.png")
    Image.fromarray(skimage_data.camera()[200:230, 200:236]).save(tmp_path / "gray.png")
    Image.fromarray((skimage_data.camera()[:20, :24].astype(np.uint16) * 257)).save(tmp_path / "gray16.tif")
    (tmp_path / "rgb16.png").write_bytes(inference_io.encode_png16(photo(16, 20).astype(np.uint16) * 257))
    Image.fromarray(photo()).save(tmp_path / "photo.jpg")
    assert upscale(tmp_path, "--model", models["rrdb"]) == 0
    assert "5 image(s) upscaled x4, 0 failed" in capsys.readouterr().out
    rgb = Image.open(tmp_path / "rgb_x4.png")
    assert rgb.mode == "RGB" and rgb.size == (48 * 4, 40 * 4)
    assert Image.open(tmp_path / "gray_x4.png").mode == "L"
    assert Image.open(tmp_path / "photo_x4.jpg").size == (192, 160)
    g16 = inference_io.read_picture(str(tmp_path / "gray16_x4.tif"))
    assert g16.gray and g16.bits == 16 and g16.size == (80, 96)
    c16 = inference_io.read_picture(str(tmp_path / "rgb16_x4.png"))
    assert not c16.gray and c16.bits == 16 and c16.size == (64, 80)
    assert len(np.unique(np.round(c16.pixels * 65535) % 257)) > 1  # real 16-bit values, not 8-bit ones scaled


def test_rgba_edges_do_not_fringe(tmp_path, models):
    # an opaque red disc on a transparent background whose hidden colour is green
    h = w = 32
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - 16) ** 2 + (xx - 16) ** 2 < 100
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[inside] = (230, 20, 20, 255)
    Image.fromarray(rgba).save(tmp_path / "disc.png")
    assert upscale(tmp_path / "disc.png", "--model", models["rrdb"], "--tile", 0) == 0
    out = np.asarray(Image.open(tmp_path / "disc_x4.png"))
    assert out.shape == (128, 128, 4)
    visible = out[..., 3] > 32
    assert visible.sum() > 0.8 * inside.sum() * 16
    # premultiplied: the green under the transparent pixels never reaches a visible pixel
    assert out[visible][:, 1].max() <= 60, out[visible][:, 1].max()


def test_large_image_tiled_equals_untiled_in_the_interior(tmp_path, models):
    big = skimage_data.astronaut()[100:356, 100:356]  # 256 x 256: 25 tiles of 64
    Image.fromarray(big).save(tmp_path / "big.png")
    assert upscale(tmp_path / "big.png", "--model", models["rrdb"], "--tile", 64, "--tile-overlap", 16, "--tile-batch", 8,
                   "--suffix", "_tiled", "--format", "tif") == 0
    assert upscale(tmp_path / "big.png", "--model", models["rrdb"], "--tile", 0, "--suffix", "_whole",
                   "--format", "tif") == 0
    tiled = np.asarray(Image.open(tmp_path / "big_tiled.tif")).astype(int)
    whole = np.asarray(Image.open(tmp_path / "big_whole.tif")).astype(int)
    assert tiled.shape == whole.shape == (1024, 1024, 3)
    interior = (slice(32, -32), slice(32, -32))
    assert np.abs(tiled[interior] - whole[interior]).max() <= 1  # no seam: one 8-bit step at most


def test_gradient_map_is_saved_for_spsr_models(tmp_path, models, capsys):
    Image.fromarray(photo(24, 24)).save(tmp_path / "a.png")
    assert upscale(tmp_path / "a.png", "--model", models["spsr"], "--save-gradient-map") == 0
    grad = Image.open(tmp_path / "a_x4_grad.png")
    assert grad.size == (96, 96) and grad.mode == "RGB"
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"], "--save-gradient-map", "--suffix", "_r") == 2
    assert "gradient branch" in capsys.readouterr().err


def test_bad_inputs_are_reported_and_the_rest_is_processed(tmp_path, models, capsys):
    Image.fromarray(photo()).save(tmp_path / "good.png")
    full = (tmp_path / "good.png").read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 3])
    (tmp_path / "text.jpg").write_text("not an image at all\n")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "bomb.png")
    names = ["missing.png", "empty.png", "truncated.png", "text.jpg", "bomb.png", "good.png"]
    code = upscale(*[tmp_path / n for n in names], "--model", models["rrdb"], "--max-pixels", 5000)
    captured = capsys.readouterr()
    assert code == 1
    for name in names[:-1]:
        line = next(line for line in captured.err.splitlines() if line.startswith("FAILED") and name in line)
        assert len(line) > len(f"FAILED {tmp_path / name}: ") + 5
    assert "decompression-bomb" in captured.err and "empty file" in captured.err
    assert "1 image(s) upscaled x4, 5 failed" in captured.out
    assert (tmp_path / "good_x4.png").exists()
    assert not any(n.endswith(".part") for n in os.listdir(tmp_path))


def test_inputs_and_existing_outputs_are_never_overwritten(tmp_path, models, capsys):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"], "-o", tmp_path, "--suffix", "") == 1
    assert "would replace an input" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"]) == 0
    first = (tmp_path / "a_x4.png").stat().st_mtime_ns
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "a_x4.png").stat().st_mtime_ns == first
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"], "--overwrite") == 0


def test_folders_globs_and_output_layout(tmp_path, models):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(photo(16, 16)).save(tmp_path / "in" / "top.png")
    Image.fromarray(photo(16, 16)).save(tmp_path / "in" / "sub" / "deep.webp")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    assert upscale(tmp_path / "in", "-r", "-o", tmp_path / "out", "--model", models["rrdb"]) == 0
    assert (tmp_path / "out" / "top.png").exists() and (tmp_path / "out" / "sub" / "deep.webp").exists()
    assert upscale(str(tmp_path / "in" / "*.png"), "-o", tmp_path / "glob", "--model", models["rrdb"]) == 0
    assert os.listdir(tmp_path / "glob") == ["top.png"]
    assert upscale(str(tmp_path / "in" / "*.bmp"), "--model", models["rrdb"]) == 1


def test_exif_orientation_is_applied(tmp_path, models):
    img = Image.fromarray(photo(16, 24))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert upscale(tmp_path / "r.jpg", "--model", models["rrdb"]) == 0
    out = Image.open(tmp_path / "r_x4.jpg")
    assert out.size == (16 * 4, 24 * 4) and out.getexif().get(0x0112, 1) == 1


def test_ctrl_c_leaves_no_partial_output(tmp_path, models, monkeypatch):
    Image.fromarray(photo()).save(tmp_path / "a.png")

    def interrupted(picture, handle, fmt, quality):
        handle.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(inference_io, "_save", interrupted)
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"]) == 130
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import spsr_fast.weights as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", str(tmp_path))
    Image.fromarray(photo()).save(tmp_path / "a.png")
    assert upscale(tmp_path / "a.png") == 2
    assert "no bundled model" in capsys.readouterr().err
    assert upscale(tmp_path / "a.png", "--model", tmp_path / "nope.safetensors") == 2
    assert "no such checkpoint file" in capsys.readouterr().err
