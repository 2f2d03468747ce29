"""Fixed degraded sets: the LR of one HR image from (seed, image name), and whole folders.

An image's draws depend only on the seed and its name (its path inside the folder), so adding,
removing or reordering images changes no other image's LR. The LR is made from the plain HR
(no unsharp mask: a validation input is a degraded photo, not a degraded sharpened one).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch

from .config import RealWorldConfig
from .pipeline import apply, draw
from .seeding import image_generators

MANIFEST = "degradation.json"


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


@torch.no_grad()
def degrade_image(hr: np.ndarray, cfg: RealWorldConfig, scale: int, seed: int, name: str,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """The LR (H/scale x W/scale x 3 float32, 8-bit valued) of `hr` (H x W x 3 in [0, 1],
    modcropped to the scale first) under the draws of (seed, name)."""
    hr = modcrop(hr, scale)
    if min(hr.shape[:2]) < scale:
        raise ValueError(f"{name}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32)).permute(2, 0, 1)[None].to(device)
    params_gen, fields_gen = image_generators(x.device, seed, name)
    lr = apply(x, draw(cfg, 1, params_gen), scale, fields_gen)
    return lr[0].permute(1, 2, 0).cpu().numpy()


def image_key(path: str, root: str) -> str:
    """The name an image's draws come from: its path inside `root` ('/'-separated), or its file
    name when `root` is one file or a built-in source."""
    if os.path.isdir(root):
        return os.path.relpath(path, root).replace(os.sep, "/")
    return os.path.basename(path)


def lr_path(key: str, dst: str) -> str:
    return os.path.join(dst, *(os.path.splitext(key)[0] + ".png").split("/"))


def _write_png(img: np.ndarray, path: str) -> None:
    from PIL import Image

    from ..data.images import to_uint8

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(to_uint8(img)).save(tmp, compress_level=1)
    os.replace(tmp, path)


def degrade_folder(src: str, dst: str, cfg: RealWorldConfig, scale: int, seed: int, overwrite: bool = False,
                   device: torch.device | str = "cpu", log: Callable[[str], None] = print) -> tuple[int, int]:
    """Write the LR of every image of `src` (a folder, one file or `builtin:NAME`) into `dst` as
    <name>.png, plus degradation.json (seed, scale, the pipeline's fields, the files). Unreadable
    images are reported by path and skipped. Returns (written, failed)."""
    from ..data.images import ImageReadError, list_images, read_image

    paths = [src] if os.path.isfile(src) else list_images(src)
    if not paths:
        raise FileNotFoundError(f"HR_DIR: no images in {src}")
    keys = [image_key(p, src) for p in paths]
    targets = [lr_path(k, dst) for k in keys]
    if len(set(targets)) != len(targets):
        raise ValueError(f"HR_DIR: two images of {src} would write the same LR file (same name, other extension)")
    if not overwrite:
        existing = [t for t in targets + [os.path.join(dst, MANIFEST)] if os.path.exists(t)]
        if existing:
            raise FileExistsError(f"-o: {existing[0]} exists ({len(existing)} files would be replaced; "
                                  f"--overwrite replaces them)")
    os.makedirs(dst, exist_ok=True)
    written, failed, files = 0, 0, {}
    for path, key, target in zip(paths, keys, targets):
        try:
            hr = read_image(path)
            lr = degrade_image(hr, cfg, scale, seed, key, device)
        except (ImageReadError, ValueError) as exc:
            log(f"FAILED {path}: {exc}")
            failed += 1
            continue
        _write_png(lr, target)
        files[key] = os.path.relpath(target, dst).replace(os.sep, "/")
        written += 1
    manifest = {"seed": seed, "scale": scale, "source": src, "realworld": cfg.to_dict(), "files": files}
    tmp = os.path.join(dst, MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, os.path.join(dst, MANIFEST))
    return written, failed


class DegradedValidationSet:
    """Validation items (ValidationDataset's {"lr", "hr", "name"}) whose LR is the real-world
    degradation of their HR under (seed, name) instead of bicubic: the set `spsr-fast degrade
    --seed SEED` writes for the same HR images. Made once, on first use."""

    def __init__(self, base, cfg: RealWorldConfig, scale: int, seed: int):
        self.base, self.cfg, self.scale, self.seed = base, cfg, scale, seed
        self._lr: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        if item is None:
            return None
        if i not in self._lr:
            hr = item["hr"].permute(1, 2, 0).numpy()
            lr = degrade_image(hr, self.cfg, self.scale, self.seed, item["name"])
            self._lr[i] = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)
        return {**item, "lr": self._lr[i]}
