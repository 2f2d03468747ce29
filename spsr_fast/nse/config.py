"""The trainer's config plus two sections for the NSE stages.

    nse:        the structure extractor being pre-trained (nse_contrastive / nse_jigsaw stages)
    structure:  the structure loss of SPSR-P / SPSR-J (frozen NSE + feature discriminator)

Same YAML rules, `key=value` overrides and field-named errors as spsr_fast.train.config.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, Optional

from ..train import config as train_config
from ..train.config import Config, ConfigError


@dataclass
class NSESection:
    width: int = 64                  # channels of the NSE's first stage
    channels: int = 32               # structure-feature channels (the paper: 32)
    strategy: Literal["h", "v", "cross"] = "h"   # context cells of contrastive prediction
    samples_per_image: int = 64      # targets (contrastive) or puzzles (jigsaw) per image and step
    similarity_scale: float = 64.0   # tau of the cosine similarity (the paper: 64)
    head_hidden: int = 256           # hidden width of the predictor MLP / jigsaw classifier


@dataclass
class StructureSection:
    nse: Optional[str] = None        # frozen NSE: an nse_* trainer checkpoint (.pt) or NSE .safetensors
    pixel_weight: float = 1e-2       # pixelwise structure loss (eq. 14)
    pixel_criterion: Literal["l1", "l2"] = "l1"
    gan_weight: float = 5e-3         # adversarial structure loss (eq. 15, RaGAN)


@dataclass
class NSETrainConfig(Config):
    nse: NSESection = field(default_factory=NSESection)
    structure: StructureSection = field(default_factory=StructureSection)


def _check(cfg: NSETrainConfig, check_paths: bool) -> NSETrainConfig:
    n, s = cfg.nse, cfg.structure
    for name, value in {"nse.width": n.width, "nse.channels": n.channels,
                        "nse.samples_per_image": n.samples_per_image, "nse.head_hidden": n.head_hidden}.items():
        if value < 1:
            raise ConfigError(f"{name}: must be >= 1, got {value}")
    if n.similarity_scale <= 0:
        raise ConfigError(f"nse.similarity_scale: must be > 0, got {n.similarity_scale}")
    if s.pixel_weight < 0 or s.gan_weight < 0:
        raise ConfigError("structure.pixel_weight / structure.gan_weight: must be >= 0")
    if cfg.run.stage in ("spsr_p", "spsr_j"):
        if not s.nse:
            raise ConfigError(f"structure.nse: stage {cfg.run.stage} needs the path of a trained NSE")
        if check_paths and not os.path.isfile(s.nse):
            raise ConfigError(f"structure.nse: file does not exist: {s.nse}")
    return cfg


# Every trainer command accepts the `nse` and `structure` sections from here on.
train_config.extend_config(NSETrainConfig, _check)
from . import stages  # noqa: E402,F401  (registers the NSE stages and the `nse` architecture)
