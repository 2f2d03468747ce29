import importlib.util
import logging
import os
import urllib.error

import numpy as np
import pytest
import torch

from spsr_fast.metrics import LPIPS, LPIPSUnavailable, make_lpips, psnr_y, rgb_to_y, ssim_y

HAS_LPIPS = importlib.util.find_spec("lpips") is not None
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def test_rgb_to_y_range():
    assert rgb_to_y(torch.zeros(3, 1, 1)).item() == pytest.approx(16.0)
    assert rgb_to_y(torch.ones(3, 1, 1)).item() == pytest.approx(235.0)


def test_psnr_matches_formula_and_shave():
    torch.manual_seed(0)
    hr = torch.rand(3, 24, 24)
    sr = hr.clone()
    sr[:, :4] = 0  # damage only the shaved border
    assert psnr_y(sr, hr, shave=4) == float("inf")
    sr = (hr + 0.02 * torch.randn_like(hr)).clamp(0, 1)
    q = lambda t: torch.round(t * 255) / 255  # noqa: E731
    y_sr, y_hr = rgb_to_y(q(sr))[..., 4:-4, 4:-4], rgb_to_y(q(hr))[..., 4:-4, 4:-4]
    expected = 10 * np.log10(255.0 ** 2 / ((y_sr - y_hr) ** 2).mean().item())
    assert psnr_y(sr, hr) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(1)
    hr = torch.rand(3, 40, 40)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    y_sr = rgb_to_y(torch.round(sr * 255) / 255)[0, 4:-4, 4:-4].numpy()
    y_hr = rgb_to_y(torch.round(hr * 255) / 255)[0, 4:-4, 4:-4].numpy()
    ref = skimage_metrics.structural_similarity(y_hr, y_sr, gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, data_range=255)
    # skimage averages over the padded-free centre like the valid conv (crop of win//2 = 5).
    assert ssim_y(sr, hr) == pytest.approx(ref, abs=2e-3)
    assert ssim_y(hr, hr) == pytest.approx(1.0)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache; every download fails as it does without a network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch_home" / "hub" / "checkpoints", calls


def test_lpips_unavailable_is_one_note_saying_why(offline_hub, caplog):
    checkpoints, calls = offline_hub
    with caplog.at_level(logging.WARNING):
        assert make_lpips() is None
    notes = [r.getMessage() for r in caplog.records if "LPIPS is skipped" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0]
    if not HAS_LPIPS:
        assert "pip install lpips" in notes[0] and not calls
    else:
        # torchvision's AlexNet is fetched on first use; offline the note names both ways to provide it
        assert calls == ["https://download.pytorch.org/models/" + ALEXNET_FILE]
        assert "could not be downloaded" in notes[0] and str(checkpoints / ALEXNET_FILE) in notes[0]
        with pytest.raises(LPIPSUnavailable, match="connect to the internet once"):
            LPIPS()


@pytest.mark.skipif(not HAS_LPIPS, reason="the lpips package is not installed")
def test_lpips_plumbing_with_a_random_trunk():
    """Inputs in [0, 1] reach lpips in [-1, 1]; identical images score 0; the score grows with
    the distortion and is symmetric."""
    import lpips as lpips_package

    torch.manual_seed(0)
    metric = LPIPS(backbone="random")
    hr = torch.rand(3, 32, 32)
    slightly, badly = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1), (hr + 0.3 * torch.randn_like(hr)).clamp(0, 1)
    assert metric(hr, hr) == 0.0
    assert 0 < metric(slightly, hr) < metric(badly, hr)
    assert metric(badly, hr) == pytest.approx(metric(hr, badly), rel=1e-6)
    direct = metric.net(badly[None] * 2 - 1, hr[None] * 2 - 1).item()
    assert metric(badly, hr) == pytest.approx(direct, rel=1e-6)
    # the linear layers are the package's calibrated v0.1 weights, not random ones
    shipped = torch.load(os.path.join(os.path.dirname(lpips_package.__file__), "weights", "v0.1", "alex.pth"),
                         map_location="cpu", weights_only=True)
    torch.testing.assert_close(metric.net.lin0.model[1].weight, shipped["lin0.model.1.weight"], rtol=0, atol=0)


@pytest.mark.skipif(not HAS_LPIPS, reason="the lpips package is not installed")
def test_lpips_loads_the_alexnet_trunk_from_the_cache(offline_hub):
    """The cached torchvision AlexNet file lands in lpips' trunk, tensor for tensor, offline."""
    from torchvision.models import alexnet

    checkpoints, calls = offline_hub
    torch.manual_seed(1)
    # random weights under the real file name and layout (its features part: the trunk)
    state = {k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}
    os.makedirs(checkpoints)
    torch.save(state, checkpoints / ALEXNET_FILE)
    metric = LPIPS()
    assert not calls
    trunk = {f"features.{i}.{n}": p for part in metric.net.net.children()
             for i, m in part.named_children() for n, p in m.named_parameters(recurse=False)}
    assert len(trunk) == 10  # five convs, weight and bias each
    for key, value in trunk.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
