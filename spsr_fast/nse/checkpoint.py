"""Reading a trained NSE: from an nse_* trainer checkpoint (NSE + its head + its settings) or
from an NSE weights file that spsr_fast.checkpoints.load_model reads (NSE only)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoints.errors import CheckpointError
from ..models import NSE, ContrastivePredictor, JigsawHead
from .sampling import context_offsets, separation

# trainer stage name -> self-supervised task
STAGE_TASKS = {"nse_contrastive": "contrastive", "nse_jigsaw": "jigsaw"}


@dataclass
class TrainedNSE:
    nse: NSE
    task: str | None = None         # "contrastive" | "jigsaw" | None (unknown: a bare NSE file)
    head: nn.Module | None = None   # the head it was trained with
    strategy: str | None = None     # contrastive sampling strategy it was trained with
    source: str = ""


def make_head(task: str, channels: int, hidden: int, strategy: str = "h") -> nn.Module:
    if task == "contrastive":
        return ContrastivePredictor(len(context_offsets(strategy, separation())), channels, hidden)
    if task == "jigsaw":
        return JigsawHead(channels, hidden)
    raise ValueError(f"task: must be contrastive or jigsaw, got {task!r}")


def _from_trainer_checkpoint(state: dict, path: str) -> TrainedNSE:
    stage = state.get("stage")
    if stage not in STAGE_TASKS:
        raise CheckpointError(f"{path}: a {stage!r} trainer checkpoint, not an NSE one "
                              f"(expected stage {' or '.join(STAGE_TASKS)})")
    config, models = state["config"], state["models"]
    n = config["nse"]
    nse = NSE(in_nc=config["model"]["in_nc"], width=n["width"], out_channels=n["channels"])
    nse.load_state_dict(models["G"])
    task = STAGE_TASKS[stage]
    head = make_head(task, n["channels"], n["head_hidden"], n["strategy"])
    head.load_state_dict(models["head"])
    return TrainedNSE(nse.eval(), task, head.eval(), n["strategy"] if task == "contrastive" else None, path)


def load_trained_nse(path: str) -> TrainedNSE:
    """On the CPU, in eval mode; a file that is not a usable NSE raises CheckpointError naming it."""
    path = str(path)
    if path.endswith((".pt", ".pth")):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such NSE file") from None
        except Exception as exc:  # torch.load raises many types for a bad file
            first = (str(exc).strip().splitlines() or [""])[0]
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from exc
        if isinstance(state, dict) and "models" in state and "stage" in state:
            return _from_trainer_checkpoint(state, path)
    from ..checkpoints import load_model

    model = load_model(path, device="cpu")
    if not isinstance(model, NSE):
        raise CheckpointError(f"{path}: holds a {type(model).__name__}, not an NSE")
    return TrainedNSE(model, source=path)
