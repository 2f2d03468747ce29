"""The `spsr-fast` command. Each subcommand lives in its own module exposing
`HELP`, `add_arguments(parser)` and `run(args) -> int`; they are imported only when used.

Errors a user can cause (a missing or unreadable file, a bad option value, a checkpoint that
does not fit, an unusable output folder) end every command here, in one place, with one line
on stderr and exit code 2; `--debug` (or SPSR_FAST_DEBUG=1) shows the traceback instead.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "doctor": "spsr_fast.cli.doctor",
    "upscale": "spsr_fast.cli.upscale",
    "eval": "spsr_fast.cli.eval",
    "export": "spsr_fast.cli.export",
    "degrade": "spsr_fast.cli.degrade",
}

EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130
DEBUG_ENV = "SPSR_FAST_DEBUG"


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad command line reported in one line (not usage + error)."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help=f"show the traceback of an error instead of one line (also: {DEBUG_ENV}=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="spsr-fast", description="Structure-preserving super-resolution.")
    _add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        _add_debug(command, argparse.SUPPRESS)  # after the command too; absent: the global flag's value
        command.set_defaults(run=module.run, command_parser=command)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug: files, values, checkpoints, images, memory."""
    import torch

    from spsr_fast.checkpoints import CheckpointError
    from spsr_fast.data.images import ImageReadError
    from spsr_fast.inference.io import ImageError
    from spsr_fast.inference.runner import TileOutOfMemoryError

    return (OSError, ValueError, CheckpointError, ImageError, ImageReadError, TileOutOfMemoryError,
            torch.OutOfMemoryError)


def describe(error: BaseException) -> str:
    """One line saying what went wrong; OS errors as 'reason: path'."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.strerror}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def debug_requested(args) -> bool:
    """--debug, or SPSR_FAST_DEBUG set to anything but "", 0, false, no (as for the trainer)."""
    return (bool(getattr(args, "debug", False))
            or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"))


def parse(argv=None) -> argparse.Namespace:
    """The parsed command line; a bad one exits with code 2 after one line naming the command."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exit_:  # --help, or a bad command line (reported already)
        code = exit_.code
        return 0 if code is None else code if isinstance(code, int) else EXIT_USER_ERROR
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if debug_requested(args):
            raise
        print(f"spsr-fast {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as error:
        if debug_requested(args):
            raise
        print(f"spsr-fast {args.command}: {describe(error)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
