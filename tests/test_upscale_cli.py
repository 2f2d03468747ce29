"""`spsr-fast upscale` end to end on real photographs, with networks whose outputs are real
images (the bundled trained model; an SPSRNet started as a closed-form interpolator and
perturbed), each output compared with the float32 CPU reference of the same network run whole:
every kind of picture, tiling seams, alpha, 16-bit precision, gradient maps, bad inputs."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.inference import io as inference_io
from spsr_fast.weights import resolve_model

from inference_models import bundled_model, effective_bits, interpolating_spsrnet, reference_outputs

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    spsr = folder / "spsr.safetensors"
    spsr_fast.save_model(interpolating_spsrnet(), spsr)
    return {"rrdb": resolve_model("default"), "spsr": str(spsr)}


@pytest.fixture(scope="module")
def rrdb():
    return bundled_model()


def photo(h=40, w=48):
    return skimage_data.astronaut()[100:100 + h, 180:180 + w]


def upscale(*argv):
    return main(["upscale", "--no-progress", *map(str, argv)])


def reference(model, pixels: np.ndarray, gradient: bool = False):
    """The float32 whole-image reference of `model` on H x W x C pixels in [0, 1] (gray via RGB)
    as H x W x C numpy; with `gradient`, (sr, gradient map)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    gray = x.shape[0] == 1
    outs = reference_outputs(model, x.expand(3, -1, -1) if gray else x)
    sr = outs[0].mean(0, keepdim=True) if gray else outs[0]
    sr = sr.permute(1, 2, 0).numpy()
    return (sr, outs[1].permute(1, 2, 0).numpy()) if gradient else sr


def levels(image: np.ndarray, bits: int = 8) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * (2 ** bits - 1)).astype(int)


def test_rgb_gray_and_sixteen_bit_keep_their_kind_and_values(tmp_path, models, rrdb, capsys):
    gray8 = skimage_data.camera()[200:230, 200:236]
    gray16 = skimage_data.camera()[:20, :24].astype(np.uint16) * 257
    rgb16 = photo(16, 20).astype(np.uint16) * 257
    Image.fromarray(photo()).save(tmp_path / "rgb.png")
    Image.fromarray(gray8).save(tmp_path / "gray.png")
    Image.fromarray(gray16).save(tmp_path / "gray16.tif")
    (tmp_path / "rgb16.png").write_bytes(inference_io.encode_png16(rgb16))
    Image.fromarray(photo()).save(tmp_path / "photo.jpg")
    assert upscale(tmp_path, "--model", models["rrdb"]) == 0
    assert "5 image(s) upscaled x4, 0 failed" in capsys.readouterr().out
    rgb = Image.open(tmp_path / "rgb_x4.png")
    assert rgb.mode == "RGB" and rgb.size == (48 * 4, 40 * 4)
    # the values are the network's (one 8-bit step for rounding), not merely the right shape
    assert np.abs(np.asarray(rgb).astype(int) - levels(reference(rrdb, photo() / 255))).max() <= 1
    gray = Image.open(tmp_path / "gray_x4.png")
    assert gray.mode == "L"
    assert np.abs(np.asarray(gray).astype(int) - levels(reference(rrdb, gray8[..., None] / 255))[..., 0]).max() <= 1
    assert Image.open(tmp_path / "photo_x4.jpg").size == (192, 160)
    g16 = inference_io.read_picture(str(tmp_path / "gray16_x4.tif"))
    assert g16.gray and g16.bits == 16 and g16.size == (80, 96)
    c16 = inference_io.read_picture(str(tmp_path / "rgb16_x4.png"))
    assert not c16.gray and c16.bits == 16 and c16.size == (64, 80)
    # real 16-bit values: within 2 of 65535 steps of the fp32 reference (8-bit rounding is up to 128 off)
    for picture, source in ((g16, gray16[..., None]), (c16, rgb16)):
        expected = levels(reference(rrdb, source / 65535), 16)
        assert np.abs(levels(picture.pixels, 16) - expected).max() <= 2


def test_sixteen_bit_ramp_keeps_more_than_8_bits_under_bf16(tmp_path, models, rrdb, capsys):
    """bf16 keeps 8 significant bits; the layers that carry the image run in fp32 for 16-bit outputs."""
    h, w = 24, 64
    ramp = np.linspace(0.2, 0.8, w)[None, :, None] * np.array([1.0, 0.9, 0.8]) + np.linspace(0, 0.1, h)[:, None, None]
    samples = np.round(ramp * 65535).astype(np.uint16)
    (tmp_path / "ramp.png").write_bytes(inference_io.encode_png16(samples))
    assert upscale(tmp_path / "ramp.png", "--model", models["rrdb"], "--device", "cpu", "--precision", "bf16") == 0
    assert "16-bit output(s) with the image path in float32" in capsys.readouterr().out
    out = inference_io.read_picture(str(tmp_path / "ramp_x4.png"))
    assert out.bits == 16
    error = out.pixels - reference(rrdb, samples / 65535)
    assert effective_bits(error) > 10, effective_bits(error)  # measured 12.2; all bf16: about 7; 8-bit output: 8.0


def test_rgba_edges_do_not_fringe(tmp_path, models):
    # an opaque red disc on a transparent background whose hidden colour is green (or black)
    h = w = 32
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - 16) ** 2 + (xx - 16) ** 2 < 100
    for hidden in ("green", "black"):
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 1] = 255 if hidden == "green" else 0
        rgba[inside] = (230, 20, 20, 255)
        Image.fromarray(rgba).save(tmp_path / f"{hidden}.png")
        assert upscale(tmp_path / f"{hidden}.png", "--model", models["rrdb"], "--tile", 0) == 0
    out = np.asarray(Image.open(tmp_path / "green_x4.png")).astype(int)
    black = np.asarray(Image.open(tmp_path / "black_x4.png")).astype(int)
    assert out.shape == (128, 128, 4)
    visible = out[..., 3] > 32
    assert visible.sum() > 0.8 * inside.sum() * 16
    # premultiplied: the colour under transparent pixels never reaches a visible pixel, exactly
    # (what green there is near the rim is the network's own ringing on a red-to-black edge: 81 at most)
    np.testing.assert_array_equal(out[visible], black[visible])
    # and the disc keeps its colour (a network writing black would pass the checks above)
    core = np.kron((yy - 16) ** 2 + (xx - 16) ** 2 < 49, np.ones((4, 4), bool))
    assert np.abs(out[core][:, :3] - (230, 20, 20)).max() <= 6


def test_tiled_equals_the_untiled_reference(tmp_path, models, rrdb):
    # 16-bit in, 16-bit out: seams are measured well below one 8-bit step
    big = skimage_data.astronaut()[100:228, 100:228].astype(np.uint16) * 257  # 128 x 128: 9 tiles of 48
    (tmp_path / "big.png").write_bytes(inference_io.encode_png16(big))
    assert upscale(tmp_path / "big.png", "--model", models["rrdb"], "--tile", 48, "--tile-overlap", 16,
                   "--tile-batch", 4) == 0
    tiled = inference_io.read_picture(str(tmp_path / "big_x4.png")).pixels
    whole = reference(rrdb, big / 65535)
    assert tiled.shape == whole.shape == (512, 512, 3)
    # the network sees beyond the overlap, so not exact: measured max 4.2e-4 (0.1 of an 8-bit step)
    assert np.abs(tiled - whole).max() < 1.5e-3


def test_gradient_map_is_saved_for_spsr_models(tmp_path, models, capsys):
    Image.fromarray(photo(24, 24)).save(tmp_path / "a.png")
    assert upscale(tmp_path / "a.png", "--model", models["spsr"], "--save-gradient-map") == 0
    grad = Image.open(tmp_path / "a_x4_grad.png")
    assert grad.size == (96, 96) and grad.mode == "RGB"
    sr, expected_grad = reference(spsr_fast.load_model(models["spsr"]), photo(24, 24) / 255, gradient=True)
    assert np.abs(np.asarray(Image.open(tmp_path / "a_x4.png")).astype(int) - levels(sr)).max() <= 1
    assert np.abs(np.asarray(grad).astype(int) - levels(expected_grad)).max() <= 1
    assert levels(expected_grad).std() > 10  # the map is a picture of the edges, not a flat field
    assert upscale(tmp_path / "a.png", "--model", models["rrdb"], "--save-gradient-map", "--suffix", "_r") == 2
    assert "gradient branch" in capsys.readouterr().err


def test_gradient_map_never_replaces_an_input_or_an_existing_file(tmp_path, models, capsys):
    Image.fromarray(photo(16, 16)).save(tmp_path / "a.png")
    Image.fromarray(photo(16, 16)[::-1]).save(tmp_path / "a_x4_grad.png")  # an input named like a gradient map
    before = (tmp_path / "a_x4_grad.png").read_bytes()
    code = upscale(tmp_path / "a.png", tmp_path / "a_x4_grad.png", "--model", models["spsr"], "--save-gradient-map",
                   "--overwrite")
    err = capsys.readouterr().err
    assert code == 1 and "would replace an input" in err
    assert (tmp_path / "a_x4_grad.png").read_bytes() == before
    # an existing gradient map (not an input) is refused before anything is written
    (tmp_path / "b").mkdir()
    Image.fromarray(photo(16, 16)).save(tmp_path / "b" / "c.png")
    (tmp_path / "b" / "c_x4_grad.png").write_bytes(before)
    assert upscale(tmp_path / "b" / "c.png", "--model", models["spsr"], "--save-gradient-map") == 1
    assert "c_x4_grad.png: output exists" in capsys.readouterr().err
    assert not (tmp_path / "b" / "c_x4.png").exists()
    assert (tmp_path / "b" / "c_x4_grad.png").read_bytes() == before
    assert upscale(tmp_path / "b" / "c.png", "--model", models["spsr"], "--save-gradient-map", "--overwrite") == 0
    assert (tmp_path / "b" / "c_x4_grad.png").read_bytes() != before


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
