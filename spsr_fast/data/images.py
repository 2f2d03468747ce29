"""Robust image reading for training: always RGB float32 in [0, 1], H x W x 3.

Grayscale is expanded to RGB, alpha dropped, 16-bit grayscale scaled by 65535 (16-bit colour
PNGs are decoded by Pillow to their 8 high bits, so their range is right at 8-bit precision), EXIF
orientation applied (what a viewer shows is what is trained on). A file that cannot be decoded raises
ImageReadError naming the path, so datasets can report and skip it.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from .builtin import builtin_paths, is_builtin

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(RuntimeError):
    """An image file that could not be read; `path` names it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str) -> list[str]:
    """Sorted image files under `folder` (recursive), or the files of a built-in source
    `builtin:NAME` in its fixed order (spsr_fast/data/builtin.py)."""
    if is_builtin(folder):
        return builtin_paths(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder does not exist: {folder}")
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if is_image_file(f))
    return sorted(found)


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: PIL keeps the integers; scale by the bit depth.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) <= 65535 else 2.0 ** 32 - 1
        arr = (arr / peak).astype(np.float32)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2)
    if mode in ("L", "1", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        img = img.convert("RGB")  # palette/alpha/gray -> RGB; alpha is dropped
    elif mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path: str) -> np.ndarray:
    """RGB float32 H x W x 3 in [0, 1]; raises ImageReadError naming `path`."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
            return np.ascontiguousarray(_to_float_rgb(img))
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, f"{type(exc).__name__}: {exc}") from None


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
