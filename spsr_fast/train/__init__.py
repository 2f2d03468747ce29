"""The SPSR trainer: `python -m spsr_fast.train --config configs/<name>.yaml [key=value ...]`."""
from .config import Config, ConfigError, load_config
from .stages import STAGES, register_stage

__all__ = ["Config", "ConfigError", "load_config", "STAGES", "register_stage", "Trainer", "main"]


def __getattr__(name):
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    if name == "main":
        from .__main__ import main
        return main
    raise AttributeError(name)
