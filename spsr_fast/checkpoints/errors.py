"""Errors of checkpoint loading: one line each, naming the file, layout and keys."""
from __future__ import annotations

MAX_NAMED_KEYS = 12


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint, or one that does not fit the network."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


def name_keys(keys) -> str:
    """'a, b, c' for up to MAX_NAMED_KEYS keys, then '... and N more'."""
    keys = list(keys)
    shown = ", ".join(keys[:MAX_NAMED_KEYS])
    if len(keys) > MAX_NAMED_KEYS:
        shown += f", ... and {len(keys) - MAX_NAMED_KEYS} more"
    return shown
