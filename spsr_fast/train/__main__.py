"""python -m spsr_fast.train --config configs/spsr_g.yaml [--resume auto|PATH] [key=value ...]

Scales out with `torchrun --nproc_per_node=N -m spsr_fast.train ...` (DDP; NCCL on GPU, gloo on CPU).
Errors the user can fix (spsr_fast/train/errors.py) end with one line on stderr and exit code 2
(config) or 1; `--debug` or SPSR_FAST_DEBUG=1 shows their traceback. The last line on stdout
is the summary: iterations, time, final validation PSNR-Y beside bicubic's.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

EXIT_ERROR, EXIT_CONFIG, EXIT_STOPPED, EXIT_INTERRUPTED = 1, 2, 3, 130


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsr_fast.train", description="Train SPSR models.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="continue from a checkpoint: a path, or `auto` for the run's latest "
                             "(starting fresh when there is none yet)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of every error (also: SPSR_FAST_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any field, e.g. optim.lr_g=2e-4 data.batch_size=16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from .config import ConfigError
    from .errors import debug_requested, one_line, user_error_types
    from .trainer import TrainingStopped

    try:
        return _run(args)
    except TrainingStopped as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_STOPPED
    except user_error_types() as exc:
        if debug_requested(args.debug):
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_ERROR
    except KeyboardInterrupt:
        if debug_requested(args.debug):
            traceback.print_exc()
        print("interrupted (continue with --resume auto from the last checkpoint)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args) -> int:
    from .config import dump_config, load_config

    cfg = load_config(args.config, args.overrides, check_paths=not args.print_config)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0

    from .trainer import Trainer

    trainer = Trainer(cfg, resume=args.resume)
    try:
        trainer.train()
    finally:
        trainer.close()
    if trainer.summary:
        print(trainer.summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
