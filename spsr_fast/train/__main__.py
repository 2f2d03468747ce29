"""python -m spsr_fast.train --config configs/spsr_g.yaml [--resume auto|PATH] [key=value ...]

Scales out with `torchrun --nproc_per_node=N -m spsr_fast.train ...` (DDP; NCCL on GPU, gloo on CPU).
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsr_fast.train", description="Train SPSR models.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="continue from a checkpoint: a path, or `auto` for the run's latest")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any field, e.g. optim.lr_g=2e-4 data.batch_size=16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from .config import ConfigError, dump_config, load_config

    try:
        cfg = load_config(args.config, args.overrides, check_paths=not args.print_config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0

    from .trainer import Trainer, TrainingStopped

    trainer = Trainer(cfg, resume=args.resume)
    try:
        trainer.train()
    except TrainingStopped as exc:
        print(str(exc), file=sys.stderr)
        return 3
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
