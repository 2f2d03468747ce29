"""Training checkpoints, written atomically (spsr_fast.checkpoints.files.write_atomic: a temp
file in the same folder, fsync, rename, fsync of the folder). The previous checkpoint stays
until the new one is complete; older ones beyond `keep` are removed afterwards."""
from __future__ import annotations

import glob
import os
import random
import re

import numpy as np
import torch

from ..checkpoints.files import write_torch_atomic
from .errors import UserError

PATTERN = re.compile(r"step_(\d+)\.pt$")


def atomic_save(obj, path: str) -> None:
    write_torch_atomic(obj, path)


def checkpoint_path(folder: str, step: int) -> str:
    return os.path.join(folder, f"step_{step:08d}.pt")


def list_checkpoints(folder: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(folder, "step_*.pt")):
        m = PATTERN.search(path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: str) -> str | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def prune(folder: str, keep: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep]:
        os.remove(path)


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array as a tensor: the checkpoint then loads with weights_only=True.
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str) -> dict:
    """A trainer checkpoint (step_*.pt); a missing or unreadable file is a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"--resume: checkpoint does not exist: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"--resume: {path} is not a readable checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict) or not {"step", "models", "optimizers"} <= set(state):
        raise UserError(f"--resume: {path} is not a trainer checkpoint (no step/models/optimizers; "
                        f"weights for model.pretrained go there instead)")
    return state
