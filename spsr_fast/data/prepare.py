"""Crop large HR images once into overlapping sub-images for fast training loads.

    python -m spsr_fast.data.prepare SRC DST --size 480 --step 240

Like the usual DIV2K preparation: windows of `size` every `step` pixels, plus one window flush
with the right/bottom edge when the remainder exceeds `min_remainder`. Sub-images are written as
PNG named <stem>_s###.png; unreadable sources are reported by path and skipped.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

from .builtin import is_builtin
from .images import ImageReadError, list_images, read_image, to_uint8


def window_starts(length: int, size: int, step: int, min_remainder: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if length - (starts[-1] + size) > min_remainder:
        starts.append(length - size)
    return starts


def crop_subimages(img: np.ndarray, size: int, step: int, min_remainder: int) -> list[np.ndarray]:
    h, w = img.shape[:2]
    return [img[y:y + size, x:x + size]
            for y in window_starts(h, size, step, min_remainder)
            for x in window_starts(w, size, step, min_remainder)]


def prepare(src: str, dst: str, size: int = 480, step: int = 240, min_remainder: int = 48) -> int:
    """Write the sub-images of every image under `src` into `dst`; returns how many."""
    if size < 1 or step < 1:
        raise ValueError(f"size and step must be >= 1, got size={size}, step={step}")
    os.makedirs(dst, exist_ok=True)
    written = 0
    for path in list_images(src):
        try:
            img = read_image(path)
        except ImageReadError as exc:
            print(f"skipping unreadable image {exc.path}: {exc}", file=sys.stderr)
            continue
        # a built-in source (`builtin:NAME`) has no folder: its files are named by their file name
        name = os.path.relpath(path, src) if os.path.isdir(src) else os.path.basename(path)
        stem = os.path.splitext(name)[0].replace(os.sep, "_")
        for k, sub in enumerate(crop_subimages(img, size, step, min_remainder), start=1):
            out = os.path.join(dst, f"{stem}_s{k:03d}.png")
            tmp = out + ".tmp.png"
            Image.fromarray(to_uint8(sub)).save(tmp, compress_level=1)
            os.replace(tmp, out)
            written += 1
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spsr_fast.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of HR images, or a built-in source builtin:NAME")
    parser.add_argument("dst", help="output folder for the sub-images")
    parser.add_argument("--size", type=int, default=480, help="sub-image size in pixels (default 480)")
    parser.add_argument("--step", type=int, default=240, help="stride between sub-images (default 240)")
    parser.add_argument("--min-remainder", type=int, default=48,
                        help="add an edge-flush window when more than this many pixels remain (default 48)")
    args = parser.parse_args(argv)
    if not (os.path.isdir(args.src) or is_builtin(args.src)):
        parser.error(f"src is not a folder or a built-in source (builtin:NAME): {args.src}")
    n = prepare(args.src, args.dst, args.size, args.step, args.min_remainder)
    print(f"wrote {n} sub-images to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
