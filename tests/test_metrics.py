import numpy as np
import pytest
import torch

from spsr_fast.metrics import make_lpips, psnr_y, rgb_to_y, ssim_y


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


def test_lpips_absent_is_a_note_not_an_error(caplog):
    metric = make_lpips()
    if metric is None:
        assert "LPIPS is skipped" in caplog.text
