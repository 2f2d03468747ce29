"""The `spsr-fast` command. Each subcommand lives in its own module exposing
`HELP`, `add_arguments(parser)` and `run(args) -> int`; they are imported only when used."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "doctor": "spsr_fast.cli.doctor",
    "upscale": "spsr_fast.cli.upscale",
    "eval": "spsr_fast.cli.eval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spsr-fast", description="Structure-preserving super-resolution.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
