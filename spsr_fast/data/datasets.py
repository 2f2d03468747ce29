"""Training and validation datasets.

Every random choice of a training sample (which crop, which flips) comes from a per-sample
seed handed over by `ResumableSampler`, never from worker RNG state: a run resumed at step N
sees exactly the samples an uninterrupted run sees, whatever the number of workers.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .images import ImageReadError, list_images, read_image
from .imresize import imresize

log = logging.getLogger("spsr_fast.data")

# LR pixels of context around a crop when making LR on the fly: the x1/4 antialiased kernel
# reaches 2 LR pixels, so 3 makes the crop identical to cropping the LR of the whole image.
LR_CONTEXT = 3

# HRDataset keeps decoded images up to this many bytes per process: a small set (the built-in
# sources hold ~25 MB) is decoded once instead of once per sample, which on 2 CPU cores is a
# fifth of a tiny model's step; a large one costs at most this much memory per loader worker.
DECODE_CACHE_BYTES = 64 << 20


def _as_list(folders) -> list[str]:
    return [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)


def find_images(folders, what: str) -> list[str]:
    paths: list[str] = []
    for folder in _as_list(folders):
        paths.extend(list_images(os.fspath(folder)))
    if not paths:
        raise ValueError(f"{what}: no images found in {', '.join(map(str, _as_list(folders)))}")
    return paths


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def quantize(img: np.ndarray) -> np.ndarray:
    """Round to 8 bits like an LR image stored as PNG (what the authors trained on)."""
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.float32) / 255.0


def make_lr(hr: np.ndarray, scale: int, quantize_lr: bool) -> np.ndarray:
    lr = imresize(hr, 1.0 / scale).astype(np.float32)
    return quantize(lr) if quantize_lr else np.clip(lr, 0, 1)


def augment(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """hflip, vflip and transpose, each with p=0.5, the same for every array."""
    hflip, vflip, transpose = rng.random(3) < 0.5
    out = []
    for a in arrays:
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if transpose:
            a = a.transpose(1, 0, 2)
        out.append(a)
    return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


class _SkipsUnreadable:
    """Mixin: report an unreadable file by path once and use the next readable one instead."""

    paths: list[str]

    def _read_first_good(self, index: int) -> tuple[int, np.ndarray]:
        bad = getattr(self, "_bad", None)
        if bad is None:
            bad = self._bad = set()
        for k in range(len(self.paths)):
            i = (index + k) % len(self.paths)
            if i in bad:
                continue
            try:
                return i, self._load(i)
            except ImageReadError as exc:
                bad.add(i)
                log.warning("skipping unreadable image %s (%s)", exc.path, exc)
        raise RuntimeError(f"every image of this dataset is unreadable ({len(self.paths)} files)")

    def _load(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])


class HRDataset(_SkipsUnreadable, Dataset):
    """HR images (folders, or built-in sources `builtin:NAME`: spsr_fast/data/builtin.py); LR made
    on the fly by MATLAB-style bicubic x1/scale.

    Items are (index, seed) pairs from ResumableSampler; returns {"lr", "hr", "index"}, or
    {"hr", "index"} with with_lr=False (the LR is made later, e.g. by data.degradation realworld
    on the training device): the same crops and flips for the same seed either way.
    """

    def __init__(self, folders, scale: int = 4, hr_size: int = 128, use_augment: bool = True,
                 quantize_lr: bool = True, with_lr: bool = True):
        self.paths = find_images(folders, "HRDataset")
        if hr_size % scale:
            raise ValueError(f"hr_size ({hr_size}) must be a multiple of scale ({scale})")
        self.scale, self.hr_size, self.lr_size = scale, hr_size, hr_size // scale
        self.use_augment, self.quantize_lr, self.with_lr = use_augment, quantize_lr, with_lr
        self._decoded: dict[int, np.ndarray] = {}  # per process (each loader worker has its own)
        self._decoded_bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> np.ndarray:
        cached = self._decoded.get(i)
        if cached is not None:
            return cached
        img = modcrop(read_image(self.paths[i]), self.scale)
        if min(img.shape[:2]) < self.hr_size:
            raise ImageReadError(self.paths[i], f"smaller than the {self.hr_size}px training patch")
        if self._decoded_bytes + img.nbytes <= DECODE_CACHE_BYTES:
            img.flags.writeable = False  # shared by every later sample of this image
            self._decoded[i] = img
            self._decoded_bytes += img.nbytes
        return img

    def crop_pair(self, hr: np.ndarray, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
        """LR crop at LR (top, left) and its HR crop; the LR equals the same window of
        imresize(whole image), computed from a small HR region around the crop."""
        s, n = self.scale, self.lr_size
        h_lr, w_lr = hr.shape[0] // s, hr.shape[1] // s
        t0, l0 = max(top - LR_CONTEXT, 0), max(left - LR_CONTEXT, 0)
        t1, l1 = min(top + n + LR_CONTEXT, h_lr), min(left + n + LR_CONTEXT, w_lr)
        region_lr = make_lr(hr[t0 * s:t1 * s, l0 * s:l1 * s], s, self.quantize_lr)
        lr = region_lr[top - t0:top - t0 + n, left - l0:left - l0 + n]
        return lr, hr[top * s:(top + n) * s, left * s:(left + n) * s]

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, item)
        index, hr = self._read_first_good(index)
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        top = int(rng.integers(0, hr.shape[0] // self.scale - self.lr_size + 1))
        left = int(rng.integers(0, hr.shape[1] // self.scale - self.lr_size + 1))
        if not self.with_lr:   # the HR crop of crop_pair, the same flips
            s, n = self.scale, self.lr_size
            hr = hr[top * s:(top + n) * s, left * s:(left + n) * s]
            if self.use_augment:
                (hr,) = augment((hr,), rng)
            return {"hr": to_tensor(hr), "index": index}
        lr, hr = self.crop_pair(hr, top, left)
        if self.use_augment:
            lr, hr = augment((lr, hr), rng)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "index": index}


def _lr_key(path: str, scale: int) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    for suffix in (f"x{scale}", f"_x{scale}", "_LR", "_lr"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)].rstrip("_")
    return stem


def pair_paths(hr_folders, lr_folders, scale: int, what: str) -> tuple[list[str], list[str]]:
    hr_paths = find_images(hr_folders, f"{what} (HR)")
    lr_paths = find_images(lr_folders, f"{what} (LR)")
    lr_by_key = {_lr_key(p, scale): p for p in lr_paths}
    missing = [p for p in hr_paths if _lr_key(p, scale) not in lr_by_key]
    if missing:
        raise ValueError(f"{what}: no LR image for {len(missing)} HR images, e.g. {missing[0]}")
    return hr_paths, [lr_by_key[_lr_key(p, scale)] for p in hr_paths]


class PairedDataset(_SkipsUnreadable, Dataset):
    """Paired HR/LR folders (LR matched by file name, optional `x4` suffix); random aligned crops."""

    def __init__(self, hr_folders, lr_folders, scale: int = 4, hr_size: int = 128,
                 use_augment: bool = True):
        self.paths, self.lr_paths = pair_paths(hr_folders, lr_folders, scale, "PairedDataset")
        if hr_size % scale:
            raise ValueError(f"hr_size ({hr_size}) must be a multiple of scale ({scale})")
        self.scale, self.hr_size, self.lr_size = scale, hr_size, hr_size // scale
        self.use_augment = use_augment

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int):
        hr, lr = read_image(self.paths[i]), read_image(self.lr_paths[i])
        s = self.scale
        if lr.shape[0] * s > hr.shape[0] or lr.shape[1] * s > hr.shape[1]:
            raise ImageReadError(self.lr_paths[i], f"LR {lr.shape[:2]} x{s} is larger than HR {hr.shape[:2]}")
        if min(lr.shape[:2]) < self.lr_size:
            raise ImageReadError(self.lr_paths[i], f"smaller than the {self.lr_size}px LR patch")
        return hr, lr

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, item)
        index, (hr, lr) = self._read_first_good(index)
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        n, s = self.lr_size, self.scale
        top = int(rng.integers(0, lr.shape[0] - n + 1))
        left = int(rng.integers(0, lr.shape[1] - n + 1))
        lr = lr[top:top + n, left:left + n]
        hr = hr[top * s:(top + n) * s, left * s:(left + n) * s]
        if self.use_augment:
            lr, hr = augment((lr, hr), rng)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "index": index}


class ValidationDataset(Dataset):
    """Whole images for validation: HR modcropped (optionally centre-cropped to `crop` HR pixels),
    LR from a paired folder or MATLAB-style bicubic. Unreadable files are reported and left out."""

    def __init__(self, hr_folders, scale: int = 4, lr_folders=None, crop: int = 0,
                 quantize_lr: bool = True, limit: int = 0):
        self.scale, self.crop, self.quantize_lr = scale, crop, quantize_lr
        if lr_folders:
            self.paths, self.lr_paths = pair_paths(hr_folders, lr_folders, scale, "ValidationDataset")
        else:
            self.paths = find_images(hr_folders, "ValidationDataset")
            self.lr_paths = None
        if limit:
            self.paths = self.paths[:limit]

    def __len__(self) -> int:
        return len(self.paths)

    def _centre(self, img: np.ndarray, size: int) -> np.ndarray:
        h, w = img.shape[:2]
        top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
        return img[top:top + size, left:left + size]

    def __getitem__(self, i: int):
        s = self.scale
        try:
            hr = read_image(self.paths[i])
            lr = read_image(self.lr_paths[i]) if self.lr_paths else None
        except ImageReadError as exc:
            log.warning("validation: skipping unreadable image %s (%s)", exc.path, exc)
            return None
        if self.crop and lr is None:
            hr = self._centre(hr, self.crop)
        hr = modcrop(hr, s)
        if lr is None:
            lr = make_lr(hr, s, self.quantize_lr)
        else:
            hr = hr[: lr.shape[0] * s, : lr.shape[1] * s]
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "name": os.path.basename(self.paths[i])}


class ResumableSampler(Sampler):
    """Endless stream of (index, seed) pairs: a fresh permutation per epoch, sharded over ranks
    (each rank takes every world_size-th index; epochs are padded to a multiple of world_size).
    `start` skips that many of this rank's samples, which is how a resumed run continues exactly."""

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if length < 1:
            raise ValueError("ResumableSampler: the dataset is empty")
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.per_rank = math.ceil(length / world_size)
        self.start = start

    def epoch_indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.length, generator=g).tolist()
        padded = (perm * (self.per_rank * self.world_size // self.length + 1))[: self.per_rank * self.world_size]
        return padded[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_rank)
            indices = self.epoch_indices(epoch)
            for k in range(offset, self.per_rank):
                # One seed per (run seed, rank, sample position): crops differ across ranks.
                yield indices[k], (self.seed, self.rank, position)
                position += 1

    def __len__(self) -> int:  # one epoch of this rank
        return self.per_rank
