"""python -m spsr_fast.nse.train --config configs/nse_contrastive.yaml [--resume auto|PATH] [key=value ...]

The trainer (spsr_fast.train.Trainer) with the NSE stages registered and the config's `nse` /
`structure` sections accepted: NSE pre-training (nse_contrastive, nse_jigsaw) and SPSR-P / SPSR-J
(spsr_p, spsr_j). Same checkpoints, resume, logging and DDP as `python -m spsr_fast.train`.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsr_fast.nse.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config (configs/nse_*.yaml, spsr_p*.yaml, spsr_j*.yaml)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH", help="a checkpoint path, or `auto`")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. nse.strategy=cross")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ..train.config import ConfigError, dump_config
    from ..train.trainer import Trainer, TrainingStopped
    from .config import load_nse_config

    try:
        cfg = load_nse_config(args.config, args.overrides, check_paths=not args.print_config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
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
