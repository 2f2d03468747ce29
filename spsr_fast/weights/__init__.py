"""Models bundled with the package (safetensors in this folder, spsr_fast format).

`--model NAME` resolves NAME to `<NAME>.safetensors` here; "default" names DEFAULT_MODEL.
Nothing is ever downloaded."""
from __future__ import annotations

import os

WEIGHTS_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = "rrdbnet-tiny-x4"


def bundled_models() -> dict[str, str]:
    """name -> path of every bundled model."""
    return {name[:-len(".safetensors")]: os.path.join(WEIGHTS_DIR, name)
            for name in sorted(os.listdir(WEIGHTS_DIR)) if name.endswith(".safetensors")}


def resolve_model(name_or_path: str) -> str:
    """A checkpoint path for `--model`: an existing file, or a bundled model's name
    ("default" = DEFAULT_MODEL). Raises FileNotFoundError with a message saying what exists."""
    if os.path.isfile(name_or_path):
        return name_or_path
    models = bundled_models()
    name = DEFAULT_MODEL if name_or_path == "default" else name_or_path
    if name in models:
        return models[name]
    if os.path.sep in name_or_path or os.path.splitext(name_or_path)[1]:
        raise FileNotFoundError(f"--model: no such checkpoint file: {name_or_path}")
    if not models:
        raise FileNotFoundError(
            f"--model {name_or_path}: this installation has no bundled model (nothing in {WEIGHTS_DIR}); "
            "pass --model PATH to a checkpoint (ours, the authors' SPSR, ESRGAN or BasicSR)")
    raise FileNotFoundError(f"--model {name_or_path}: not a file and not a bundled model "
                            f"(bundled: {', '.join(models)}; 'default' = {DEFAULT_MODEL})")
