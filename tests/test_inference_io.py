"""Inference image I/O: every mode, 16 bits, alpha, EXIF orientation, ICC profiles, bad files, atomic writes."""
import os

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from spsr_fast.inference import io
from spsr_fast.inference.io import ImageError, Picture, encode_png16, read_picture, write_picture

RNG = np.random.default_rng(0)


def rgb8(h=12, w=17):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "webp"])
def test_lossless_rgb_round_trip(tmp_path, ext):
    data = rgb8()
    src = tmp_path / f"a.{ext}"
    Image.fromarray(data).save(src, **({"lossless": True} if ext == "webp" else {}))
    pic = read_picture(str(src))
    assert pic.bits == 8 and pic.pixels.shape == (12, 17, 3) and pic.alpha is None and pic.pixels.dtype == np.float32
    np.testing.assert_array_equal(np.round(pic.pixels * 255).astype(np.uint8), data)
    write_picture(str(tmp_path / f"b.{ext}"), pic, quality=100)
    back = np.asarray(Image.open(tmp_path / f"b.{ext}").convert("RGB"))
    np.testing.assert_array_equal(back, data)


def test_jpeg_reads_as_rgb(tmp_path):
    Image.fromarray(rgb8()).save(tmp_path / "a.jpg", quality=90)
    pic = read_picture(str(tmp_path / "a.jpg"))
    assert pic.format == "JPEG" and pic.pixels.shape == (12, 17, 3)


def test_modes(tmp_path):
    gray = RNG.integers(0, 256, (9, 7), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    pic = read_picture(str(tmp_path / "l.png"))
    assert pic.gray and pic.bits == 8 and pic.alpha is None
    np.testing.assert_array_equal(np.round(pic.pixels[..., 0] * 255), gray)

    la = np.stack([gray, 255 - gray], axis=2)
    Image.fromarray(la).save(tmp_path / "la.png")
    pic = read_picture(str(tmp_path / "la.png"))
    assert pic.gray and pic.alpha is not None
    np.testing.assert_array_equal(np.round(pic.alpha * 255), 255 - gray)

    pal = Image.fromarray(gray).convert("P")
    pal.save(tmp_path / "p.png")
    assert not read_picture(str(tmp_path / "p.png")).gray  # palette images come out as RGB
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    assert read_picture(str(tmp_path / "pt.png")).alpha is not None

    Image.fromarray(rgb8()).convert("CMYK").save(tmp_path / "c.jpg")
    pic = read_picture(str(tmp_path / "c.jpg"))
    assert pic.pixels.shape[2] == 3 and pic.icc_profile is None

    Image.fromarray(np.full((4, 4), 1).astype(bool)).save(tmp_path / "one.png")
    assert read_picture(str(tmp_path / "one.png")).pixels.max() == 1.0


def test_rgba_round_trip(tmp_path):
    data = np.concatenate([rgb8(), RNG.integers(0, 256, (12, 17, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(data).save(tmp_path / "a.png")
    pic = read_picture(str(tmp_path / "a.png"))
    assert pic.alpha.shape == (12, 17)
    write_picture(str(tmp_path / "b.png"), pic)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), data)
    with pytest.raises(ImageError, match="alpha"):
        write_picture(str(tmp_path / "b.jpg"), pic)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_gray(tmp_path, ext):
    data = RNG.integers(0, 65536, (10, 11), dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / f"a.{ext}")
    pic = read_picture(str(tmp_path / f"a.{ext}"))
    assert pic.bits == 16 and pic.gray
    np.testing.assert_array_equal(np.round(pic.pixels[..., 0] * 65535).astype(np.uint16), data)
    write_picture(str(tmp_path / f"b.{ext}"), pic)
    back = read_picture(str(tmp_path / f"b.{ext}"))
    assert back.bits == 16
    np.testing.assert_array_equal(back.pixels, pic.pixels)


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_png_keeps_all_bits(tmp_path, channels):
    data = RNG.integers(0, 65536, (13, 9, channels), dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(encode_png16(data))
    # Pillow itself sees the high bytes: our encoder writes a PNG others read the same way
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png"))[..., :3], (data[..., :3] >> 8))
    pic = read_picture(str(tmp_path / "a.png"))
    assert pic.bits == 16 and (pic.alpha is not None) == (channels == 4)
    np.testing.assert_array_equal(np.round(pic.pixels * 65535).astype(np.uint16), data[..., :3])
    write_picture(str(tmp_path / "b.png"), pic)
    np.testing.assert_array_equal(read_picture(str(tmp_path / "b.png")).pixels, pic.pixels)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_sixteen_bit_colour_tiff(tmp_path, byteorder):
    tifffile = pytest.importorskip("tifffile")
    data = RNG.integers(0, 65536, (8, 6, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data.astype(byteorder + "u2"), photometric="rgb")
    pic = read_picture(str(tmp_path / "a.tif"))
    assert pic.bits == 16
    np.testing.assert_array_equal(np.round(pic.pixels * 65535).astype(np.uint16), data)
    write_picture(str(tmp_path / "b.tif"), pic)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), data)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    img = Image.fromarray(rgb8(6, 10))
    exif = img.getexif()
    exif[0x0112] = orientation
    exif[0x0131] = "spsr-fast test"  # Software: other EXIF must survive
    img.save(tmp_path / "o.png", exif=exif.tobytes())
    pic = read_picture(str(tmp_path / "o.png"))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(np.round(pic.pixels * 255).astype(np.uint8), expected)
    out = tmp_path / "w.png"  # the written file must not rotate the upright pixels again
    write_picture(str(out), pic)
    written = Image.open(out).getexif()
    assert written.get(0x0112, 1) == 1 and written.get(0x0131) == "spsr-fast test"


def test_icc_profile_is_kept(tmp_path):
    profile = srgb_profile()
    Image.fromarray(rgb8()).save(tmp_path / "a.png", icc_profile=profile)
    pic = read_picture(str(tmp_path / "a.png"))
    assert pic.icc_profile == profile
    for ext in ("png", "jpg", "webp", "tif"):
        write_picture(str(tmp_path / f"b.{ext}"), pic)
        assert Image.open(tmp_path / f"b.{ext}").info.get("icc_profile") == profile, ext
    sixteen = Picture(np.zeros((4, 4, 3), np.float32), bits=16, icc_profile=profile)
    write_picture(str(tmp_path / "c.png"), sixteen)
    assert Image.open(tmp_path / "c.png").info.get("icc_profile") == profile


def test_bad_files_are_reported_by_path(tmp_path):
    Image.fromarray(rgb8(64, 64)).save(tmp_path / "good.png")
    full = (tmp_path / "good.png").read_bytes()
    cases = {"missing.png": None, "empty.png": b"", "text.png": b"this is not an image\n" * 20,
             "truncated.png": full[: len(full) // 2]}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError) as info:
            read_picture(str(tmp_path / name))
        assert info.value.path == str(tmp_path / name) and info.value.reason and "\n" not in info.value.reason
    with pytest.raises(ImageError, match="decompression-bomb limit of 4,000"):
        read_picture(str(tmp_path / "good.png"), max_pixels=4000)
    assert read_picture(str(tmp_path / "good.png"), max_pixels=4096).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is restored


def test_write_refuses_existing_and_is_atomic(tmp_path, monkeypatch):
    pic = Picture(np.full((5, 5, 3), 0.5, np.float32))
    out = tmp_path / "out.png"
    write_picture(str(out), pic)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not the temp file's private mode
    with pytest.raises(ImageError, match="--overwrite"):
        write_picture(str(out), pic)
    before = out.read_bytes()

    def interrupted(picture, handle, fmt, quality):
        handle.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_picture(str(out), pic, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        write_picture(str(tmp_path / "new.png"), pic)
    assert out.read_bytes() == before and not (tmp_path / "new.png").exists()
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary file left behind
