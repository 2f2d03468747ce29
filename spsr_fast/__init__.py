"""spsr-fast: structure-preserving super-resolution with fused kernels."""
__version__ = "0.1.0"

from . import ops  # noqa: E402  (registers the fused ops)

# Checkpoint helpers, imported on first use.
_CHECKPOINT_API = ("load_model", "save_model", "inspect_checkpoint", "export_state_dict",
                   "detect_layout", "CheckpointError")


def __getattr__(name):
    if name in _CHECKPOINT_API:
        from . import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'spsr_fast' has no attribute {name!r}")


__all__ = ["ops", "__version__", *_CHECKPOINT_API]
