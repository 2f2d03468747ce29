"""Reading and writing images for inference, faithfully.

`read_picture` gives the colour (or gray) pixels and the alpha channel separately, as
float32 in [0, 1], with the bit depth (8 or 16), the ICC profile and the EXIF block of
the file, after applying the EXIF orientation. `write_picture` writes them back in the
same kind (gray stays gray, 16-bit stays 16-bit, alpha kept), atomically: a temporary
file in the target folder renamed into place, so an interrupted run leaves no
half-written image.

Pillow decodes 16-bit colour PNG/TIFF to 8 bits; here the file is decoded twice with the
high and the low byte of each sample (Pillow's unpackers for both byte orders) and
recombined, so 16-bit colour keeps its 16 bits. Pillow cannot write 16-bit colour, so
16-bit PNGs (any channel layout) are written by a small encoder here and 16-bit colour
TIFFs by `tifffile` when it is installed.
"""
from __future__ import annotations

import os
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000  # input pixels; the x4 output of such an image has 800 MP
ORIENTATION_TAG = 0x0112
FORMAT_BY_EXTENSION = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                       ".tif": "TIFF", ".tiff": "TIFF"}
EXTENSION_BY_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")

_PIXEL_LIMIT_LOCK = threading.Lock()


class ImageError(RuntimeError):
    """An image that cannot be read or written; `path` names it, `reason` says why in one line."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Picture:
    """pixels: float32 H x W x C in [0, 1], C = 1 (gray) or 3 (colour); alpha: float32 H x W or None."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bits: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str | None = None

    @property
    def gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.pixels.shape[0], self.pixels.shape[1]


def is_image_path(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------- reading

def _open_checked(path: str, max_pixels: int | None) -> Image.Image:
    """Opens `path` lazily and enforces our own decompression-bomb limit (`max_pixels`)."""
    with _PIXEL_LIMIT_LOCK:  # Pillow's limit is global: replace it by ours for this open only
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageError(path, f"{width}x{height} = {width * height:,} pixels is over the "
                               f"decompression-bomb limit of {max_pixels:,} (raise it with --max-pixels)")
    return img


_OTHER_BYTE = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def _sixteen_bit_colour(img: Image.Image) -> str | None:
    """The 16-bit raw mode Pillow will decode `img` with (losing the low byte), or None."""
    if img.mode not in ("RGB", "RGBA") or len(img.tile) == 0:
        return None
    args = img.tile[0].args
    rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
    if rawmode in (f"{img.mode};16B", f"{img.mode};16L", f"{img.mode};16N"):
        return rawmode
    return None


def _decode_with_rawmode(path: str, max_pixels: int | None, rawmode: str) -> np.ndarray:
    img = _open_checked(path, max_pixels)
    with img:
        tiles = []
        for tile in img.tile:
            args = tile.args
            args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
            tiles.append(tile._replace(args=args))
        img.tile = tiles
        img.load()
        return np.asarray(img)


def _read_sixteen_bit_colour(path: str, max_pixels: int | None, rawmode: str) -> np.ndarray:
    high = _decode_with_rawmode(path, max_pixels, rawmode).astype(np.uint16)
    low = _decode_with_rawmode(path, max_pixels, rawmode[:-1] + _OTHER_BYTE[rawmode[-1]])
    return (high << 8) | low


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Applies EXIF orientation 1..8 to an H x W (x C) array, like ImageOps.exif_transpose."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def _to_arrays(img: Image.Image, path: str, max_pixels: int | None, rawmode: str | None):
    """(pixels H x W x C float32, alpha H x W float32 | None, bits, keep_icc) of a loaded image;
    `rawmode`: the 16-bit colour raw mode seen before loading, if any."""
    mode = img.mode
    if rawmode is not None:
        data = _read_sixteen_bit_colour(path, max_pixels, rawmode).astype(np.float32) / 65535.0
        return data[..., :3], (data[..., 3] if mode == "RGBA" else None), 16, True
    if mode.startswith("I;16") or mode == "I":
        data = np.asarray(img).astype(np.float32)
        return (np.clip(data, 0, 65535) / 65535.0)[..., None], None, 16, True
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0, 1)[..., None], None, 16, True
    keep_icc = mode not in ("CMYK", "LAB")  # their profiles describe a colour space we convert away from
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
    elif mode == "PA" or mode == "RGBa":
        mode = "RGBA"
    elif mode == "La":
        mode = "LA"
    elif mode == "1":
        mode = "L"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        mode = "RGB"
    if mode != img.mode:
        img = img.convert(mode)
    data = np.asarray(img).astype(np.float32) / 255.0
    if mode == "L":
        return data[..., None], None, 8, keep_icc
    if mode == "LA":
        return data[..., :1], data[..., 1], 8, keep_icc
    return data[..., :3], (data[..., 3] if mode == "RGBA" else None), 8, keep_icc


def read_picture(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Reads `path`; raises ImageError(path, one-line reason) for anything unreadable."""
    if not os.path.exists(path):
        raise ImageError(path, "no such file")
    if os.path.isdir(path):
        raise ImageError(path, "is a folder, not an image")
    if os.path.getsize(path) == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        img = _open_checked(path, max_pixels)
        with img:
            rawmode = _sixteen_bit_colour(img)  # img.tile is gone after load()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
            exif = img.getexif()
            orientation = exif.get(ORIENTATION_TAG, 1)
            pixels, alpha, bits, keep_icc = _to_arrays(img, path, max_pixels, rawmode)
            icc = img.info.get("icc_profile") if keep_icc else None
            if ORIENTATION_TAG in exif:
                del exif[ORIENTATION_TAG]  # the pixels are upright now
            # a TIFF's "EXIF" is its own IFD (sizes, strip offsets): never copy that elsewhere
            exif_bytes = exif.tobytes() if len(exif) and img.format != "TIFF" else None
            fmt = img.format
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can identify (corrupt, or not an image file)") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "truncated" in reason.lower() or isinstance(error, EOFError):
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageError(path, reason) from None
    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    return Picture(np.ascontiguousarray(pixels), alpha, bits, icc or None, exif_bytes, fmt)


# ----------------------------------------------------------------------------- writing

def _quantise(array: np.ndarray, bits: int) -> np.ndarray:
    peak = 65535 if bits == 16 else 255
    return np.round(np.clip(array, 0, 1) * peak).astype(np.uint16 if bits == 16 else np.uint8)


def _stack(picture: Picture, bits: int) -> np.ndarray:
    """H x W x C integer samples, alpha last."""
    planes = picture.pixels if picture.alpha is None else np.concatenate(
        (picture.pixels, picture.alpha[..., None]), axis=2)
    return _quantise(planes, bits)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(samples: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """A 16-bit PNG of H x W x C uint16 samples (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)."""
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(samples, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    raw = np.concatenate((np.zeros((height, 1), np.uint8), rows), axis=1)  # filter type 0 per row
    out = [b"\x89PNG\r\n\x1a\n",
           _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))]
    if icc_profile:
        out.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    out += [_png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _save(picture: Picture, handle, fmt: str, quality: int) -> None:
    if picture.alpha is not None and fmt not in ALPHA_FORMATS:
        raise ValueError(f"{fmt} cannot store the alpha channel; write PNG, WebP or TIFF instead")
    bits = picture.bits if fmt in SIXTEEN_BIT_FORMATS else 8
    samples = _stack(picture, bits)
    if bits == 16 and fmt == "PNG":
        handle.write(encode_png16(samples, picture.icc_profile))
        return
    if bits == 16 and (samples.shape[2] > 1):  # 16-bit colour or gray+alpha TIFF
        try:
            import tifffile
        except ImportError:
            raise ValueError("writing a 16-bit colour TIFF needs the `tifffile` package "
                             "(pip install tifffile), or choose --format png") from None
        extratags = [(34675, 7, len(picture.icc_profile), picture.icc_profile, True)] if picture.icc_profile else []
        tifffile.imwrite(handle, samples, photometric="rgb" if samples.shape[2] >= 3 else "minisblack",
                         extrasamples=("unassalpha",) if picture.alpha is not None else None,
                         extratags=extratags, compression="zlib")
        return
    # uint16 H x W -> I;16; uint8 H x W (x 2, 3, 4) -> L, LA, RGB, RGBA
    img = Image.fromarray(samples if samples.shape[2] > 1 else samples[..., 0])
    options = {}
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    if picture.exif and fmt in ("JPEG", "WEBP", "PNG"):
        options["exif"] = picture.exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "WEBP" and quality >= 100:
        options["lossless"] = True
    if fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    if fmt == "PNG":  # zlib level 1, OpenCV's default: ~4x faster to encode than Pillow's 6,
        options["compress_level"] = 1  # files ~17% larger (2048 px photo: 4.4 vs 3.8 MB)
    img.save(handle, format=fmt, **options)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_picture(path: str, picture: Picture, fmt: str | None = None, overwrite: bool = False,
                  quality: int = 95) -> None:
    """Writes `picture` to `path` atomically (temp file in the same folder, then rename).

    Refuses to replace an existing file unless `overwrite`; an interrupted write
    (including Ctrl-C) removes its temporary file and leaves any existing file intact."""
    fmt = fmt or FORMAT_BY_EXTENSION.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ImageError(path, f"unknown output format for extension {os.path.splitext(path)[1]!r}")
    if not overwrite and os.path.exists(path):
        raise ImageError(path, "output exists (use --overwrite to replace it)")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part",
                                             delete=False)
    except OSError as error:
        raise ImageError(path, f"cannot write in {folder}: {error.strerror or error}") from None
    temp = handle.name
    try:
        with handle:
            _save(picture, handle, fmt, quality)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o666 & ~_umask())  # temp files are private; results get the usual mode
        if overwrite:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)  # atomic and never clobbers a file created meanwhile
            except FileExistsError:
                raise ImageError(path, "output exists (use --overwrite to replace it)") from None
            except OSError:  # file systems without hard links
                os.replace(temp, path)
    except ValueError as error:
        raise ImageError(path, str(error)) from None
    except OSError as error:
        raise ImageError(path, f"cannot write: {error.strerror or error}") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def with_pixels(picture: Picture, pixels: np.ndarray, alpha: np.ndarray | None) -> Picture:
    """A copy of `picture`'s metadata (bits, profile, EXIF, format) around new pixels."""
    return replace(picture, pixels=pixels, alpha=alpha)

