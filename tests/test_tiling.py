"""Tiling: tile placement, blend windows, and tiled == untiled where it must be."""
import numpy as np
import pytest
import torch
from torch import nn

from spsr_fast.inference.tiling import TileGrid, axis_windows, tile_starts, tiled_forward


class ConvShuffle(nn.Module):
    """3 convs (receptive radius 3 input pixels) and a pixel shuffle: B x 3 x h x w -> B x 3 x sh x sw."""

    def __init__(self, scale=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.LeakyReLU(0.2), nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
                                  nn.PixelShuffle(scale))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("length,tile,overlap", [(10, 16, 4), (16, 16, 4), (17, 16, 4), (100, 32, 8),
                                                 (257, 64, 16), (65, 64, 0), (300, 64, 63)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + size - b >= overlap  # neighbours overlap by at least `overlap`
    assert len(starts) == len(set(starts))


def test_tile_starts_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tile_overlap"):
        tile_starts(100, 16, 16)
    with pytest.raises(ValueError, match="tile must be positive"):
        tile_starts(100, 0, 0)


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (257, 64, 16), (65, 64, 2), (40, 16, 0), (12, 16, 4)])
def test_windows_sum_to_one_and_fade_at_shared_edges(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    windows = axis_windows(length, starts, size, overlap)
    total = np.zeros(length)
    for s, w in zip(starts, windows):
        assert w.shape == (size,) and (w >= 0).all()
        total[s:s + size] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    if len(starts) > 1 and overlap >= 4:
        assert windows[0][-1] == 0 and windows[1][0] == 0  # tile borders next to a neighbour do not count
        assert windows[0][0] == 1  # the image border has no neighbour to blend with


def test_pointwise_upsampler_is_exact_under_tiling():
    image = torch.rand(3, 37, 53)
    nearest = lambda t: (torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest"),)  # noqa: E731
    whole = nearest(image[None])[0][0]
    tiled = tiled_forward(nearest, image, 2, tile=16, overlap=4, batch=3)[0]
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch,pad", [(1, False), (4, False), (4, True)])
def test_no_seams_when_overlap_covers_the_receptive_field(batch, pad):
    # radius 3 <= overlap / 4: every pixel that carries weight saw the same context as untiled
    net = ConvShuffle(scale=2).eval()
    image = torch.rand(3, 70, 45)
    forward = lambda t: (net(t),)  # noqa: E731
    with torch.no_grad():
        whole = net(image[None])[0]
        tiled = tiled_forward(forward, image, 2, tile=24, overlap=12, batch=batch, pad_batch=pad)[0]
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_each_forward_sees_only_a_batch_of_tiles_and_reports_progress():
    net = ConvShuffle(scale=2).eval()
    image = torch.rand(3, 100, 90)
    seen, calls = [], []

    def forward(t):
        seen.append(tuple(t.shape))
        return net(t), net(t)[:, :1]

    with torch.no_grad():
        sr, extra = tiled_forward(forward, image, 2, tile=32, overlap=8, batch=2,
                                  progress=lambda done, total: calls.append((done, total)))
    grid = TileGrid(100, 90, 32, 8, 2)
    assert all(s[1:] == (3, 32, 32) and s[0] <= 2 for s in seen)
    assert calls[-1] == (len(grid.boxes), len(grid.boxes))
    assert sr.shape == (3, 200, 180) and extra.shape == (1, 200, 180)


def test_image_smaller_than_the_tile_is_one_tile():
    net = ConvShuffle(scale=2).eval()
    image = torch.rand(3, 20, 30)
    seen = []

    def forward(t):
        seen.append(tuple(t.shape))
        return (net(t),)

    with torch.no_grad():
        out = tiled_forward(forward, image, 2, tile=64, overlap=16)[0]
        torch.testing.assert_close(out, net(image[None])[0])
    assert seen == [(1, 3, 20, 30)]


def test_rrdbnet_tiled_matches_untiled_in_the_interior():
    from spsr_fast.models import RRDBNet

    torch.manual_seed(0)
    net = RRDBNet(nf=8, nb=1, gc=4, scale=2).eval()
    image = torch.rand(3, 80, 80)
    forward = lambda t: (net(t),)  # noqa: E731
    with torch.no_grad():
        whole = net(image[None])[0]
        tiled = tiled_forward(forward, image, 2, tile=40, overlap=16, batch=4)[0]
    # a deep net's receptive field is wider than the overlap: equal within tolerance, not exactly
    assert (tiled - whole).abs().max() < 2e-3 * whole.abs().max()
