"""Pixel losses (the authors' `pixel_criterion`: l1 or l2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

CRITERIA = {"l1": F.l1_loss, "l2": F.mse_loss}


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, criterion: str = "l1") -> torch.Tensor:
    try:
        fn = CRITERIA[criterion]
    except KeyError:
        raise ValueError(f"pixel_loss: criterion must be one of {sorted(CRITERIA)}, got {criterion!r}") from None
    # Losses in fp32 whatever the autocast dtype of the network.
    return fn(pred.float(), target.float())
