"""Sampling geometry of the NSE tasks, checked in pixels against brute force."""
import itertools

import pytest
import torch

from spsr_fast.models import JIGSAW_PERMUTATIONS, NSE, NSE_RECEPTIVE_FIELD, NSE_STRIDE
from spsr_fast.nse.sampling import (STRATEGIES, ContrastiveGeometry, JigsawGeometry, count_negatives,
                                    gather_cells, interior_negatives, separation, shuffle_pieces,
                                    unshuffle_pieces)
from spsr_fast.nse.tasks import contrastive_top1
from spsr_fast.ops import backend, info_nce
from spsr_fast.ops._reference import info_nce_candidate_mask


def receptive_fields_overlap(a, b) -> bool:
    """Pixel windows [stride*cell, stride*cell + RF) on both axes intersect."""
    return all(abs(NSE_STRIDE * (x - y)) < NSE_RECEPTIVE_FIELD for x, y in zip(a, b))


def brute_force_candidates(target, centres, H, W):
    """The positive and every cell whose receptive field overlaps no excluded centre's."""
    return [(r, c) for r in range(H) for c in range(W)
            if (r, c) == target or not any(receptive_fields_overlap((r, c), x) for x in centres)]


def test_separation_is_derived_from_the_receptive_field():
    d = separation()
    assert d == 8
    assert NSE_STRIDE * d >= NSE_RECEPTIVE_FIELD > NSE_STRIDE * (d - 1)
    assert separation(32, 4) == 8 and separation(33, 4) == 9 and separation(3, 1) == 3


def input_window(nse, x, row, col):
    """Input rows and columns the output at grid cell (row, col) depends on (gradient support)."""
    x = x.detach().requires_grad_(True)
    nse(x)[0, :, row, col].sum().backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero().squeeze(1)
    cols = x.grad[0].abs().sum(dim=(0, 1)).nonzero().squeeze(1)
    return rows, cols


def test_nse_receptive_field_and_stride_match_the_constants():
    # The output at one cell depends on exactly a 31x31 input window, and that window moves by
    # NSE_STRIDE pixels per cell: the geometry every sampler derives its separations from.
    torch.manual_seed(0)
    nse = NSE(width=8, out_channels=4)
    x = torch.rand(1, 3, 96, 96)
    assert nse(x).shape[2:] == (96 // NSE_STRIDE, 96 // NSE_STRIDE)
    rows, cols = input_window(nse, x, 12, 12)
    assert rows.numel() == cols.numel() == NSE_RECEPTIVE_FIELD
    assert rows.max() - rows.min() + 1 == NSE_RECEPTIVE_FIELD
    assert cols.max() - cols.min() + 1 == NSE_RECEPTIVE_FIELD
    next_rows, next_cols = input_window(nse, x, 13, 14)
    assert torch.equal(next_rows, rows + NSE_STRIDE) and torch.equal(next_cols, cols + 2 * NSE_STRIDE)


# Context offsets of each strategy (paper section 4.2), written out at the minimal separation 8.
CONTEXT_OFFSETS = {"h": [(0, -8), (0, 8)], "v": [(-8, 0), (8, 0)], "cross": [(-8, 0), (0, -8), (0, 8), (8, 0)]}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_context_never_overlaps_the_target(strategy):
    H, W = 20, 23
    geometry = ContrastiveGeometry(strategy)
    sample = geometry.sample(3, H, W, 100, torch.Generator().manual_seed(1))
    assert sample.context.shape == (300, geometry.num_context, 2)
    assert torch.equal(sample.image_index, torch.arange(3).repeat_interleave(100))
    for target, context in zip(sample.target.tolist(), sample.context.tolist()):
        assert [(r - target[0], c - target[1]) for r, c in context] == CONTEXT_OFFSETS[strategy]
        for cell in context:
            assert 0 <= cell[0] < H and 0 <= cell[1] < W
            assert not receptive_fields_overlap(target, cell)
        for a, b in itertools.combinations(context, 2):
            assert not receptive_fields_overlap(a, b)
    # Targets reach every row and column whose context fits in the map, borders included.
    margin_r = max(abs(dr) for dr, _ in CONTEXT_OFFSETS[strategy])
    margin_c = max(abs(dc) for _, dc in CONTEXT_OFFSETS[strategy])
    assert set(sample.target[:, 0].tolist()) == set(range(margin_r, H - margin_r))
    assert set(sample.target[:, 1].tolist()) == set(range(margin_c, W - margin_c))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_negatives_match_brute_force_and_the_formula(strategy):
    """The op's candidate set (radius = separation) is exactly the cells whose receptive field
    overlaps neither the target's nor a context cell's, plus the positive; its size is the
    inclusion-exclusion count, and the closed form away from the borders."""
    H, W = 21, 26
    geometry = ContrastiveGeometry(strategy)
    sample = geometry.sample(1, H, W, 12, torch.Generator().manual_seed(2))
    mask = info_nce_candidate_mask(sample.positive_index(W), sample.excluded_centres(), H * W, W, geometry.radius)
    for n, centres in enumerate(sample.excluded_centres().tolist()):
        brute = [not any(receptive_fields_overlap((m // W, m % W), c) for c in centres) for m in range(H * W)]
        expected = torch.tensor(brute)
        expected[sample.positive_index(W)[n]] = True
        assert torch.equal(mask[n], expected)
        assert sum(brute) == count_negatives(H, W, centres, geometry.radius)
    # A target far from every border: the closed form.
    d = separation()
    centre = (2 * d + 1, 2 * d + 2)
    centres = [centre] + [(centre[0] + dr, centre[1] + dc) for dr, dc in geometry.offsets]
    big = 4 * d + 5
    assert count_negatives(big, big, centres, d) == interior_negatives(strategy, big, big)
    # The paper's setting: 400 px patches, ~10,000 negatives per positive.
    assert interior_negatives("h", 100, 100) == 9535


def test_info_nce_loss_over_brute_force_negatives():
    """The fused op with this geometry computes InfoNCE over exactly the brute-force set."""
    torch.manual_seed(3)
    B, H, W, C = 2, 18, 19, 8
    geometry = ContrastiveGeometry("cross")
    sample = geometry.sample(B, H, W, 5, torch.Generator().manual_seed(3))
    fmap = torch.randn(B, C, H, W, dtype=torch.float64)
    queries = torch.randn(len(sample.target), C, dtype=torch.float64)
    grid = fmap.permute(0, 2, 3, 1).contiguous()
    with backend("native"):
        loss = info_nce(queries, grid, sample.image_index, sample.positive_index(W), sample.excluded_centres(),
                        W, geometry.radius, 64.0)
    for n in range(len(queries)):
        b, pos = int(sample.image_index[n]), tuple(sample.target[n].tolist())
        centres = sample.excluded_centres()[n].tolist()
        cells = brute_force_candidates(pos, centres, H, W)
        logits = torch.stack([64.0 * torch.cosine_similarity(queries[n], fmap[b, :, r, c], dim=0)
                              for r, c in cells])
        expected = torch.logsumexp(logits, 0) - logits[cells.index(pos)]
        assert torch.allclose(loss[n], expected, rtol=1e-10)


def test_jigsaw_pieces_do_not_share_receptive_fields():
    H, W = 12, 15
    sample = JigsawGeometry().sample(2, H, W, 200, torch.Generator().manual_seed(4))
    assert sample.cells.shape == (400, 4, 2)
    # Every one of the 24 permutations is drawn (a constant label would make the task trivial).
    assert set(sample.labels.tolist()) == set(range(24))
    for cells in sample.cells.tolist():
        r, c = cells[0]
        assert cells == [[r, c], [r, c + 8], [r + 8, c], [r + 8, c + 8]]  # a 2x2 grid in reading order
        for a, b in itertools.combinations(cells, 2):
            assert not receptive_fields_overlap(a, b)
        assert all(0 <= r < H and 0 <= c < W for r, c in cells)
    # The grid's corner reaches every position that keeps all four pieces in the map.
    assert set(sample.cells[:, 0, 0].tolist()) == set(range(H - 8))
    assert set(sample.cells[:, 0, 1].tolist()) == set(range(W - 8))


def test_permutation_labels_round_trip():
    assert len(set(JIGSAW_PERMUTATIONS)) == 24
    pieces = torch.randn(24, 4, 5)
    labels = torch.arange(24)
    shuffled = shuffle_pieces(pieces, labels)
    for label in range(24):
        for i, source in enumerate(JIGSAW_PERMUTATIONS[label]):
            assert torch.equal(shuffled[label, i], pieces[label, source])
    assert torch.equal(unshuffle_pieces(shuffled, labels), pieces)
    assert torch.equal(shuffle_pieces(pieces, torch.zeros(24, dtype=torch.long)), pieces)  # identity first


def test_contrastive_top1_matches_brute_force():
    """The accuracy the NSE tests and the evaluation report: right when the positive is strictly
    the most cosine-similar of its own map's candidates."""
    torch.manual_seed(5)
    B, H, W, C = 3, 18, 19, 6
    geometry = ContrastiveGeometry("h")
    sample = geometry.sample(B, H, W, 20, torch.Generator().manual_seed(5))
    fmap = torch.randn(B, C, H, W)
    positives = fmap[sample.image_index, :, sample.target[:, 0], sample.target[:, 1]]
    # Even rows near their positive (mostly right), odd rows random (mostly wrong).
    queries = torch.where(torch.arange(len(positives))[:, None] % 2 == 0,
                          positives + 0.3 * torch.randn_like(positives), torch.randn_like(positives))
    # Row 0 ties: its query is its positive, and a negative of the same map is a copy of it.
    b0, (r0, c0) = int(sample.image_index[0]), sample.target[0].tolist()
    twin = (r0 + 9 if r0 + 9 < H else r0 - 9, c0)
    fmap[b0, :, twin[0], twin[1]] = fmap[b0, :, r0, c0]
    queries[0] = fmap[b0, :, r0, c0]
    correct, candidates = contrastive_top1(queries, fmap, sample, geometry.radius)
    expected_correct, expected_candidates = [], []
    for n in range(len(queries)):
        b, target = int(sample.image_index[n]), tuple(sample.target[n].tolist())
        cells = brute_force_candidates(target, sample.excluded_centres()[n].tolist(), H, W)
        sims = {cell: torch.cosine_similarity(queries[n], fmap[b, :, cell[0], cell[1]], dim=0).item()
                for cell in cells}
        expected_correct.append(all(sims[target] > s for cell, s in sims.items() if cell != target))
        expected_candidates.append(len(cells))
        if n == 0:
            assert twin in cells and not expected_correct[0]
    assert correct.tolist() == expected_correct
    assert candidates.tolist() == expected_candidates
    assert 0 < sum(expected_correct) < len(expected_correct)  # both outcomes occur


def test_gather_cells_reads_the_named_positions():
    fmap = torch.randn(2, 3, 5, 6)
    cells = torch.tensor([[[0, 1], [4, 5]], [[2, 3], [1, 0]]])
    image_index = torch.tensor([1, 0])
    got = gather_cells(fmap, image_index, cells)
    assert torch.equal(got[0, 1], fmap[1, :, 4, 5]) and torch.equal(got[1, 0], fmap[0, :, 2, 3])


def test_bad_geometry_is_named():
    with pytest.raises(ValueError, match="strategy"):
        ContrastiveGeometry("diagonal")
    with pytest.raises(ValueError, match="distance"):
        ContrastiveGeometry("h", distance=7)
    with pytest.raises(ValueError, match="too small.*17"):
        ContrastiveGeometry("h").sample(1, 30, 16, 1)
    with pytest.raises(ValueError, match="jigsaw"):
        JigsawGeometry().sample(1, 8, 30, 1)
