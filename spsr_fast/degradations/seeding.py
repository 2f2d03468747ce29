"""Seeds of the degradation draws: a pure function of (run seed, step, rank) for training and
of (seed, image name) for a fixed validation set. Nothing is carried from one step to the next,
so a resumed run draws what an uninterrupted one does and every DDP rank draws its own."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (ints, strings): stable across processes and Python versions
    (no hash randomisation), and far apart for neighbouring parts."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def generators(device: torch.device | str, *parts) -> tuple[torch.Generator, torch.Generator]:
    """(parameters, fields): a CPU generator for the per-sample choices (kernels, sigmas,
    qualities: the same on every device) and one on `device` for the noise images."""
    device = torch.device(device)
    params = torch.Generator().manual_seed(derive_seed("params", *parts))
    fields = torch.Generator(device=device).manual_seed(derive_seed("fields", *parts))
    return params, fields


def training_generators(device, seed: int, step: int, rank: int) -> tuple[torch.Generator, torch.Generator]:
    return generators(device, "train", seed, step, rank)


def image_generators(device, seed: int, name: str) -> tuple[torch.Generator, torch.Generator]:
    return generators(device, "image", seed, name)
