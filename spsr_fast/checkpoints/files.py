"""Reading checkpoint files into a flat state dict (safetensors or torch.load with
weights_only=True), unwrapping the dicts that hold one, and writing atomically."""
from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError, CheckpointNotFoundError, name_keys

# Keys under which training frameworks store the weights, most preferred first:
# BasicSR/Real-ESRGAN keep the EMA weights in params_ema and use them for inference.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "net_g", "netG",
                "generator", "g_ema", "model", "net", "weights")
# Prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"


@dataclass
class RawCheckpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata
    wrapper: str | None = None  # the key the state dict was found under, if any


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _is_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def read_checkpoint(path, state_key: str | None = None) -> RawCheckpoint:
    """The state dict in `path`; `state_key` picks the wrapper key explicitly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        raw = _read_safetensors(path)
    elif head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC):
        raw = _read_torch(path, state_key)
    else:
        raise CheckpointError(f"{path}: not a checkpoint (neither a safetensors file nor a "
                              f"PyTorch torch.save file)")
    raw.state_dict = _strip_prefixes(raw.state_dict)
    return raw


def _read_safetensors(path: Path) -> RawCheckpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file "
                              f"({_first_line(error)})") from None
    return RawCheckpoint(tensors, metadata)


def _read_torch(path: Path, state_key: str | None) -> RawCheckpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = str(error)
        if "Weights only load failed" in message or "weights_only" in message:
            raise CheckpointError(
                f"{path}: holds Python objects that weights_only loading refuses; re-save just "
                f"the tensors (torch.save(model.state_dict(), path))") from None
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch file "
                              f"({_first_line(error)})") from None
    return _unwrap(obj, path, state_key)


def _tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj, path: Path, state_key: str | None) -> RawCheckpoint:
    if state_key is not None:
        if not isinstance(obj, Mapping) or state_key not in obj:
            keys = name_keys(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{path}: has no key {state_key!r} (top level: {keys})")
        if not _tensor_dict(obj[state_key]):
            raise CheckpointError(f"{path}: {state_key!r} does not hold a state dict of tensors")
        return RawCheckpoint(dict(obj[state_key]), wrapper=state_key)
    if _tensor_dict(obj):
        return RawCheckpoint(dict(obj))
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if _tensor_dict(obj.get(key)):
                return RawCheckpoint(dict(obj[key]), wrapper=key)
        nested = [k for k, v in obj.items() if _tensor_dict(v)]
        if len(nested) == 1:
            return RawCheckpoint(dict(obj[nested[0]]), wrapper=nested[0])
        if nested:
            raise CheckpointError(f"{path}: holds several state dicts ({name_keys(nested)}); "
                                  f"choose one with state_key=")
        raise CheckpointError(f"{path}: holds no state dict of tensors (top-level keys: "
                              f"{name_keys(map(str, obj))})")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")


def _strip_prefixes(state_dict: dict) -> dict:
    for prefix in WRAPPER_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def fsync_directory(folder) -> None:
    """Make a rename inside `folder` durable: on POSIX the new directory entry is data of the
    folder itself, which a crash can lose unless the folder is synced too. Windows cannot open
    a folder as a file (NTFS journals the rename), so nothing is done there."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        # Some file systems (a few network and FUSE ones) cannot sync a folder at all.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path, write) -> None:
    """Calls write(temporary_path) beside `path`, syncs the file, renames it over `path` and
    syncs the folder: a crash leaves either the old file or the new one, never a torn one,
    and a completed write survives a power loss."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    open(tmp, "xb").close()
    # The usual permissions (0666 less the umask), whatever the writer does (safetensors and
    # mkstemp make files only their owner can read).
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def write_safetensors_atomic(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def write_torch_atomic(obj, path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))
