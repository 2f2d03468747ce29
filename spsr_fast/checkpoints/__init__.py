"""Checkpoints: our safetensors format, and every foreign layout users have (see layouts.py)."""
from .api import CheckpointInfo, export_state_dict, inspect_checkpoint, load_model, save_model
from .errors import CheckpointError, CheckpointNotFoundError
from .layouts import LAYOUTS, LAYOUTS_BY_NAME, detect_layout

__all__ = ["CheckpointError", "CheckpointNotFoundError", "CheckpointInfo", "LAYOUTS", "LAYOUTS_BY_NAME",
           "detect_layout", "export_state_dict", "inspect_checkpoint", "load_model", "save_model"]
