"""The two self-supervised tasks on a batch of structure-feature maps: loss and accuracy.

Shared by the training stages, the evaluation (Fig. 15 protocol) and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..ops import info_nce_mean
from ..ops._reference import info_nce_candidate_mask
from .sampling import (ContrastiveGeometry, ContrastiveSample, JigsawGeometry, gather_cells,
                       shuffle_pieces)

SIMILARITY_SCALE = 64.0  # the paper's tau: "set to 64 for stable convergence"


@dataclass
class TaskOutput:
    loss: torch.Tensor          # mean over rows
    correct: torch.Tensor       # (N,) bool: top-1 right
    chance: torch.Tensor        # (N,) float: accuracy of a random guess for each row


def _as_grid(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H', W') -> contiguous (B, H', W', C), the layout info_nce reads."""
    return feature_map.permute(0, 2, 3, 1).contiguous()


def contrastive_top1(queries: torch.Tensor, feature_map: torch.Tensor, sample: ContrastiveSample,
                     radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: is the positive the most cosine-similar of {positive} u negatives, and how many
    candidates there were. Materialises (rows x H'W') per image: for evaluation and logging."""
    grid = _as_grid(feature_map.detach().float())
    B, H, W, C = grid.shape
    q = F.normalize(queries.detach().float(), dim=1)
    f = F.normalize(grid.reshape(B, H * W, C), dim=2)
    positive = sample.positive_index(W).to(q.device)
    # Each row against its own image's map only: rows x H'W' in all, not rows x B H'W'. The
    # grouping reads the sampler's host-side indices, so it never waits for the device.
    sims = q.new_empty(len(q), H * W)
    host_index = sample.image_index.cpu()
    for b in host_index.unique().tolist():
        rows = (host_index == b).nonzero().squeeze(1).to(q.device)
        sims[rows] = q[rows] @ f[b].T
    valid = info_nce_candidate_mask(positive, sample.excluded_centres().to(q.device), H * W, W, radius)
    sims = sims.masked_fill(~valid, float("-inf"))
    positive_sim = sims.gather(1, positive[:, None])
    # Ties count against the prediction: the positive must be strictly the best.
    rivals = sims.scatter(1, positive[:, None], float("-inf"))
    correct = positive_sim.squeeze(1) > rivals.max(dim=1).values
    return correct, valid.sum(dim=1)


def contrastive_task(feature_map: torch.Tensor, predictor: torch.nn.Module, geometry: ContrastiveGeometry,
                     per_image: int, generator: torch.Generator | None = None,
                     scale: float = SIMILARITY_SCALE, score_rows: int = 64) -> TaskOutput:
    """InfoNCE of predicting each sampled target from its context (the fused op), plus the
    top-1 accuracy of the first `score_rows` rows."""
    B, _, H, W = feature_map.shape
    sample = geometry.sample(B, H, W, per_image, generator)
    device = feature_map.device
    context = gather_cells(feature_map, sample.image_index, sample.context)
    queries = predictor(context)
    grid = _as_grid(feature_map)
    loss = info_nce_mean(queries.to(grid.dtype), grid, sample.image_index.to(device),
                                  sample.positive_index(W).to(device), sample.excluded_centres().to(device),
                                  W, geometry.radius, scale)
    scored = ContrastiveSample(sample.image_index[:score_rows], sample.target[:score_rows],
                               sample.context[:score_rows])
    correct, candidates = contrastive_top1(queries[:score_rows], feature_map, scored, geometry.radius)
    return TaskOutput(loss, correct, 1.0 / candidates.float())


def jigsaw_task(feature_map: torch.Tensor, head: torch.nn.Module, geometry: JigsawGeometry, per_image: int,
                generator: torch.Generator | None = None) -> TaskOutput:
    """Cross-entropy of classifying the permutation of four shuffled 2x2-grid features."""
    B, _, H, W = feature_map.shape
    sample = geometry.sample(B, H, W, per_image, generator)
    pieces = gather_cells(feature_map, sample.image_index, sample.cells)
    labels = sample.labels.to(feature_map.device)
    logits = head(shuffle_pieces(pieces, sample.labels)).float()
    loss = F.cross_entropy(logits, labels)
    correct = logits.detach().argmax(dim=1) == labels
    return TaskOutput(loss, correct, torch.full_like(logits[:, 0], 1.0 / logits.shape[1]).detach())
