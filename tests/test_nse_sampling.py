"""Sampling geometry of the NSE tasks, checked in pixels against brute force."""
import itertools

import pytest
import torch

from spsr_fast.models import JIGSAW_PERMUTATIONS, NSE, NSE_RECEPTIVE_FIELD, NSE_STRIDE
from spsr_fast.nse.sampling import (STRATEGIES, ContrastiveGeometry, JigsawGeometry, count_negatives,
                                    gather_cells, interior_negatives, separation, shuffle_pieces,
                                    unshuffle_pieces)
from spsr_fast.ops import backend, info_nce
from spsr_fast.ops._reference import info_nce_candidate_mask


def receptive_fields_overlap(a, b) -> bool:
    """Pixel windows [stride*cell, stride*cell + RF) on both axes intersect."""
    return all(abs(NSE_STRIDE * (x - y)) < NSE_RECEPTIVE_FIELD for x, y in zip(a, b))


def test_separation_is_derived_from_the_receptive_field():
    d = separation()
    assert d == 8
    assert NSE_STRIDE * d >= NSE_RECEPTIVE_FIELD > NSE_STRIDE * (d - 1)
    assert separation(32, 4) == 8 and separation(33, 4) == 9 and separation(3, 1) == 3


def test_nse_receptive_field_matches_the_constant():
    # The output at one cell depends on exactly a 31x31 input window (gradient support).
    torch.manual_seed(0)
    nse = NSE(width=8, out_channels=4)
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    nse(x)[0, :, 12, 12].sum().backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero().squeeze(1)
    cols = x.grad[0].abs().sum(dim=(0, 1)).nonzero().squeeze(1)
    assert rows.numel() == cols.numel() == NSE_RECEPTIVE_FIELD
    assert rows.max() - rows.min() + 1 == NSE_RECEPTIVE_FIELD


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_context_never_overlaps_the_target(strategy):
    geometry = ContrastiveGeometry(strategy)
    sample = geometry.sample(3, 20, 23, 50, torch.Generator().manual_seed(1))
    assert sample.context.shape == (150, geometry.num_context, 2)
    for target, context in zip(sample.target.tolist(), sample.context.tolist()):
        for cell in context:
            assert 0 <= cell[0] < 20 and 0 <= cell[1] < 23
            assert not receptive_fields_overlap(target, cell)
        for a, b in itertools.combinations(context, 2):
            assert not receptive_fields_overlap(a, b)


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
        cells = [(r, c) for r in range(H) for c in range(W)
                 if (r, c) == pos or not any(receptive_fields_overlap((r, c), x) for x in centres)]
        logits = torch.stack([64.0 * torch.cosine_similarity(queries[n], fmap[b, :, r, c], dim=0)
                              for r, c in cells])
        expected = torch.logsumexp(logits, 0) - logits[cells.index(pos)]
        assert torch.allclose(loss[n], expected, rtol=1e-10)


def test_jigsaw_pieces_do_not_share_receptive_fields():
    sample = JigsawGeometry().sample(2, 12, 15, 40, torch.Generator().manual_seed(4))
    assert sample.cells.shape == (80, 4, 2)
    assert sample.labels.min() >= 0 and sample.labels.max() < 24
    for cells in sample.cells.tolist():
        for a, b in itertools.combinations(cells, 2):
            assert not receptive_fields_overlap(a, b)
        assert all(0 <= r < 12 and 0 <= c < 15 for r, c in cells)


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
