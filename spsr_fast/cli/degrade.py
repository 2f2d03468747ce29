"""`spsr-fast degrade HR_DIR -o LR_DIR --seed N`: a fixed real-world-degraded LR set."""
from __future__ import annotations

import sys

HELP = "write a fixed real-world-degraded LR set (data.degradation realworld) from a seed"


def add_arguments(parser) -> None:
    parser.add_argument("hr", metavar="HR_DIR", help="folder of HR images, one image, or builtin:NAME")
    parser.add_argument("-o", "--output", metavar="LR_DIR", required=True, help="folder for the LR images")
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (default 0); each image draws from "
                                                            "(seed, its path inside HR_DIR)")
    parser.add_argument("--scale", type=int, default=None, help="downscaling factor (default: data.scale of "
                                                                "--config, else 4)")
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="a training config: its realworld: section (and data.scale) set the pipeline")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a field, e.g. --set realworld.second.jpeg_range=[60,95] (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device to degrade on (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace LR files that exist")


def load_pipeline_config(path: str | None, overrides: list[str]):
    """(RealWorldConfig, data.scale or None) from a training config and key=value overrides;
    errors name the field."""
    from spsr_fast.degradations.config import RealWorldConfig, check_realworld
    from spsr_fast.train.config import ConfigError, _build, _check_value, read_tree

    tree = read_tree(path, overrides)   # other sections of a training config are not used here
    cfg = _build(RealWorldConfig, tree.get("realworld"), "realworld")
    try:
        check_realworld(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    data = tree.get("data") or {}
    scale = data.get("scale") if isinstance(data, dict) else None
    return cfg, None if scale is None else _check_value("data.scale", int, scale)


def run(args) -> int:
    import torch

    from spsr_fast.degradations.images import degrade_folder

    from .upscale import EXIT_OK, EXIT_SOME_FAILED

    cfg, config_scale = load_pipeline_config(args.config, args.overrides)
    scale = args.scale if args.scale is not None else int(config_scale or 4)
    if scale < 1:
        raise ValueError(f"--scale: must be >= 1, got {scale}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device: not a torch device: {args.device!r}") from None
    written, failed = degrade_folder(args.hr, args.output, cfg, scale, args.seed, args.overwrite, device,
                                     log=lambda line: print(line, file=sys.stderr))
    print(f"wrote {written} LR images (x{scale}, seed {args.seed}) to {args.output}")
    return EXIT_SOME_FAILED if failed else EXIT_OK
