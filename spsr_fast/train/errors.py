"""Which errors a user can cause (and fix) and how `python -m spsr_fast.train` reports them:
one line on stderr and a non-zero exit, no traceback (`--debug` or SPSR_FAST_DEBUG=1 shows it).
Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import os


class UserError(RuntimeError):
    """A problem with what the user gave the trainer (a file, a checkpoint, a setting); the
    message is one line that names the field or file and says what to do."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as one line (imported lazily: each lives with its code)."""
    from ..checkpoints.errors import CheckpointError
    from ..losses.pretrained import PretrainedWeightsUnavailable
    from .config import ConfigError

    # Files and folders the user named (missing, unreadable, not writable, full disk).
    file_errors = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    return (UserError, ConfigError, CheckpointError, PretrainedWeightsUnavailable) + file_errors


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("SPSR_FAST_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line (its first non-empty line; OSError keeps its errno text)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
