"""Where the self-supervised NSE tasks look on a structure-feature map (paper section 4.2).

Everything is in feature-grid units. A feature at grid cell (r, c) sees the
NSE_RECEPTIVE_FIELD x NSE_RECEPTIVE_FIELD input window whose corner moves NSE_STRIDE pixels
per cell, so two cells' receptive fields are disjoint iff their Chebyshev distance d satisfies
NSE_STRIDE * d >= NSE_RECEPTIVE_FIELD, i.e. d >= separation() (8 for 31 px at stride 4).

- Contrastive prediction: a target cell, context cells at `separation` from it (strategy
  `h`: left and right, `v`: above and below, `cross`: the four ends of a cross), and as
  negatives every cell of the same map at Chebyshev distance >= separation from the target and
  from each context cell: exactly the candidate set of `spsr_fast.ops.info_nce` with
  `radius = separation` and the target + context cells as excluded centres.
- Jigsaw: four cells on a 2x2 grid `separation` apart, shuffled by one of the 24
  JIGSAW_PERMUTATIONS (label = index): shuffled[i] = pieces[permutation[i]].
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..models.nse import JIGSAW_PERMUTATIONS, NSE_RECEPTIVE_FIELD, NSE_STRIDE

STRATEGIES = ("h", "v", "cross")


def separation(receptive_field: int = NSE_RECEPTIVE_FIELD, stride: int = NSE_STRIDE) -> int:
    """Smallest Chebyshev grid distance at which two receptive fields do not overlap."""
    if receptive_field < 1 or stride < 1:
        raise ValueError(f"separation: receptive_field and stride must be >= 1, got {receptive_field}, {stride}")
    return -(-receptive_field // stride)


def context_offsets(strategy: str, distance: int) -> tuple[tuple[int, int], ...]:
    """(row, col) offsets of the context cells from the target cell."""
    if strategy == "h":
        return ((0, -distance), (0, distance))
    if strategy == "v":
        return ((-distance, 0), (distance, 0))
    if strategy == "cross":
        return ((-distance, 0), (0, -distance), (0, distance), (distance, 0))
    raise ValueError(f"strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def _check_map(name: str, height: int, width: int, need_rows: int, need_cols: int) -> None:
    if height < need_rows or width < need_cols:
        raise ValueError(f"{name}: a {height}x{width} feature map is too small; it needs at least "
                         f"{need_rows}x{need_cols} cells (an input of at least "
                         f"{need_rows * NSE_STRIDE}x{need_cols * NSE_STRIDE} pixels)")


@dataclass(frozen=True)
class ContrastiveSample:
    image_index: torch.Tensor   # (N,) which map of the batch
    target: torch.Tensor        # (N, 2) grid (row, col) of the positive
    context: torch.Tensor       # (N, K, 2) grid (row, col) of the context cells

    def positive_index(self, grid_width: int) -> torch.Tensor:
        return self.target[:, 0] * grid_width + self.target[:, 1]

    def excluded_centres(self) -> torch.Tensor:
        """(N, 1 + K, 2): the cells whose neighbourhoods hold no negatives (info_nce's argument)."""
        return torch.cat([self.target[:, None], self.context], dim=1)


@dataclass(frozen=True)
class ContrastiveGeometry:
    strategy: str = "h"
    distance: int = separation()

    def __post_init__(self):
        context_offsets(self.strategy, self.distance)  # validates the strategy
        if self.distance < separation():
            raise ValueError(f"distance: context cells {self.distance} apart would overlap the target's "
                             f"receptive field (need >= {separation()})")

    @property
    def offsets(self) -> tuple[tuple[int, int], ...]:
        return context_offsets(self.strategy, self.distance)

    @property
    def num_context(self) -> int:
        return len(self.offsets)

    @property
    def radius(self) -> int:
        """info_nce's radius: candidates closer than this to a centre are excluded."""
        return separation()

    def margins(self) -> tuple[int, int]:
        return (max(abs(dr) for dr, _ in self.offsets), max(abs(dc) for _, dc in self.offsets))

    def check_map(self, height: int, width: int) -> None:
        mr, mc = self.margins()
        _check_map(f"contrastive sampling ({self.strategy})", height, width, 2 * mr + 1, 2 * mc + 1)

    def sample(self, batch: int, height: int, width: int, per_image: int,
               generator: torch.Generator | None = None) -> ContrastiveSample:
        """`per_image` uniformly random targets per map, each with every context cell inside the map."""
        self.check_map(height, width)
        mr, mc = self.margins()
        n = batch * per_image
        rows = torch.randint(mr, height - mr, (n,), generator=generator)
        cols = torch.randint(mc, width - mc, (n,), generator=generator)
        target = torch.stack([rows, cols], dim=1)
        context = target[:, None, :] + torch.tensor(self.offsets)[None]
        image_index = torch.arange(batch).repeat_interleave(per_image)
        return ContrastiveSample(image_index, target, context)


def _excluded_interval(centre: int, radius: int, length: int) -> tuple[int, int]:
    """Cells of one axis at distance < radius from `centre`, clipped to [0, length): [lo, hi)."""
    return max(centre - radius + 1, 0), min(centre + radius, length)


def count_negatives(height: int, width: int, centres, radius: int) -> int:
    """Number of cells of a height x width map at Chebyshev distance >= radius from every centre.

    Each centre excludes a (2 radius - 1)-wide square, clipped to the map; the union is counted
    by inclusion-exclusion over the squares (intersections of squares are rectangles), so this
    shares nothing with the mask code it checks."""
    intervals = [(_excluded_interval(r, radius, height), _excluded_interval(c, radius, width))
                 for r, c in (tuple(map(int, rc)) for rc in centres)]
    excluded = 0
    for k in range(1, len(intervals) + 1):
        for subset in itertools.combinations(intervals, k):
            r0 = max(s[0][0] for s in subset)
            r1 = min(s[0][1] for s in subset)
            c0 = max(s[1][0] for s in subset)
            c1 = min(s[1][1] for s in subset)
            excluded += (-1) ** (k + 1) * max(r1 - r0, 0) * max(c1 - c0, 0)
    return height * width - excluded


def interior_negatives(strategy: str, height: int, width: int, distance: int | None = None) -> int:
    """Negatives of a target whose excluded neighbourhoods all lie inside the map, with the
    context at the minimal distance d = separation(): a (2d-1) x (4d-1) bar (h / v), or two
    such bars crossing in a (2d-1)^2 square (cross). 9535 for a 100x100 map (400 px, h)."""
    d = separation() if distance is None else distance
    if d != separation():
        raise ValueError("interior_negatives: the closed form assumes distance == separation()")
    bar = (2 * d - 1) * (4 * d - 1)
    excluded = {"h": bar, "v": bar, "cross": 2 * bar - (2 * d - 1) ** 2}
    if strategy not in excluded:
        raise ValueError(f"strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return height * width - excluded[strategy]


# ----- jigsaw ------------------------------------------------------------------------------------

PERMUTATIONS = torch.tensor(JIGSAW_PERMUTATIONS)            # (24, 4)
INVERSE_PERMUTATIONS = torch.argsort(PERMUTATIONS, dim=1)   # (24, 4)


@dataclass(frozen=True)
class JigsawSample:
    image_index: torch.Tensor   # (N,)
    cells: torch.Tensor         # (N, 4, 2) grid (row, col) of the pieces, in reading order
    labels: torch.Tensor        # (N,) index into JIGSAW_PERMUTATIONS


@dataclass(frozen=True)
class JigsawGeometry:
    distance: int = separation()

    def __post_init__(self):
        if self.distance < separation():
            raise ValueError(f"distance: jigsaw pieces {self.distance} apart would share receptive fields "
                             f"(need >= {separation()})")

    @property
    def offsets(self) -> tuple[tuple[int, int], ...]:
        d = self.distance
        return ((0, 0), (0, d), (d, 0), (d, d))

    def sample(self, batch: int, height: int, width: int, per_image: int,
               generator: torch.Generator | None = None) -> JigsawSample:
        d = self.distance
        _check_map("jigsaw sampling", height, width, d + 1, d + 1)
        n = batch * per_image
        rows = torch.randint(0, height - d, (n,), generator=generator)
        cols = torch.randint(0, width - d, (n,), generator=generator)
        cells = torch.stack([rows, cols], dim=1)[:, None, :] + torch.tensor(self.offsets)[None]
        labels = torch.randint(0, len(JIGSAW_PERMUTATIONS), (n,), generator=generator)
        return JigsawSample(torch.arange(batch).repeat_interleave(per_image), cells, labels)


def _reorder(pieces: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return pieces.gather(1, order.to(pieces.device)[..., None].expand(-1, -1, pieces.shape[-1]))


def shuffle_pieces(pieces: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 4, C) pieces in reading order -> shuffled[:, i] = pieces[:, JIGSAW_PERMUTATIONS[label][i]]."""
    return _reorder(pieces, PERMUTATIONS[labels.cpu()])


def unshuffle_pieces(shuffled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Inverse of shuffle_pieces."""
    return _reorder(shuffled, INVERSE_PERMUTATIONS[labels.cpu()])


# ----- reading features ----------------------------------------------------------------------------

def gather_cells(feature_map: torch.Tensor, image_index: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """(B, C, H', W') map, (N,) image indices, (N, K, 2) cells -> (N, K, C) feature vectors."""
    device = feature_map.device
    image_index, cells = image_index.to(device), cells.to(device)
    return feature_map.permute(0, 2, 3, 1)[image_index[:, None], cells[..., 0], cells[..., 1]]
