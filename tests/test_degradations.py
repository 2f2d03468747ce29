"""Real-world degradation operations (spsr_fast/degradations), each against an independent
reference: kernels against BasicSR's covariance formulation and their moments, the sinc
cut-off in the Fourier domain, noise against its statistics, JPEG against Pillow's libjpeg,
resizing against F.interpolate, blur and unsharp mask against SciPy."""
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spsr_fast.degradations import reference as R
from spsr_fast.degradations.config import RealWorldConfig
from spsr_fast.degradations.filters import filter2d, usm_sharpen
from spsr_fast.degradations.jpeg import jpeg, quality_tables
from spsr_fast.degradations.kernels import (GAUSSIAN, PLATEAU, PULSE, SINC, KernelParams, build, draw_blur,
                                            draw_final_sinc)
from spsr_fast.degradations.noise import _levels, gaussian_noise, poisson_noise

skimage_data = pytest.importorskip("skimage.data")


def _params(shape, size, sx=1.0, sy=1.0, theta=0.0, beta=1.0, cutoff=1.0):
    t = lambda v, dt=torch.float64: torch.tensor([v], dtype=dt)  # noqa: E731
    return KernelParams(t(shape, torch.long), t(size, torch.long), t(sx), t(sy), t(theta), t(beta), t(cutoff))


# ----- kernels --------------------------------------------------------------------------------

def test_drawn_kernels_are_normalised_supported_and_match_the_covariance_formulation():
    cfg = RealWorldConfig()
    gen = torch.Generator().manual_seed(0)
    for stage in (cfg.first, cfg.second):
        p = draw_blur(gen, 400, stage, cfg)
        k = build(p, 21)
        assert k.shape == (400, 21, 21) and k.dtype == torch.float64
        torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(400, dtype=torch.float64), rtol=0, atol=1e-12)
        # zero outside each kernel's own odd support, point-symmetric inside
        half = (p.size // 2).view(-1, 1, 1)
        ax = torch.arange(21) - 10
        outside = (ax.view(1, -1, 1).abs() > half) | (ax.view(1, 1, -1).abs() > half)
        assert torch.all(k[outside] == 0)
        torch.testing.assert_close(k, k.flip(1, 2), rtol=0, atol=1e-15)
        reference = torch.from_numpy(np.stack(R.kernels_of(p, 21)))
        sinc = p.shape == SINC
        torch.testing.assert_close(k[~sinc], reference[~sinc], rtol=1e-9, atol=1e-14)
        # torch.special.bessel_j1 is within ~5e-7 of SciPy's J1 (far below float32 use)
        torch.testing.assert_close(k[sinc], reference[sinc], rtol=0, atol=1e-6)
        shapes = set(p.shape.tolist())
        assert {GAUSSIAN, PLATEAU, SINC} <= shapes and (PULSE in shapes) == (stage.blur_prob < 1)


def test_kernel_draw_frequencies_follow_the_config():
    cfg = RealWorldConfig()
    n = 20000
    p = draw_blur(torch.Generator().manual_seed(1), n, cfg.second, cfg)
    skipped = (p.shape == PULSE).double().mean().item()
    assert abs(skipped - (1 - cfg.second.blur_prob)) < 4 * math.sqrt(0.16 / n)
    blurred = p.shape != PULSE
    sinc = ((p.shape == SINC) & blurred).sum().item() / blurred.sum().item()
    assert abs(sinc - cfg.second.sinc_prob) < 4 * math.sqrt(0.09 / blurred.sum().item())
    sizes = p.size.bincount(minlength=22)[7:22:2].double() / n
    assert torch.all((sizes - 1 / 8).abs() < 4 * math.sqrt((1 / 8) * (7 / 8) / n))
    # plateau kernels: P(plateau_iso) + P(plateau_aniso) = 0.15 of the non-sinc blurs
    mixed = blurred & (p.shape != SINC)
    plateau = ((p.shape == PLATEAU) & mixed).sum().item() / mixed.sum().item()
    assert abs(plateau - 0.15) < 4 * math.sqrt(0.15 * 0.85 / mixed.sum().item())
    # isotropic families: sigma_y = sigma_x, no rotation; anisotropic ones differ
    iso = mixed & (p.sigma_x == p.sigma_y)
    assert abs(iso.sum().item() / mixed.sum().item() - (0.45 + 0.12 + 0.12)) < 0.02
    assert torch.all(p.theta[iso] == 0)
    # shape betas: generalized in [0.5, 4], plateau in [1, 2], half of them below 1 (plateau: exactly 1)
    generalized = mixed & (p.shape == GAUSSIAN) & (p.beta != 1)
    assert p.beta[generalized].min() >= 0.5 and p.beta[generalized].max() <= 4
    assert p.beta[mixed & (p.shape == PLATEAU)].min() >= 1 and p.beta[mixed & (p.shape == PLATEAU)].max() <= 2
    assert abs((p.beta[generalized] < 1).double().mean().item() - 0.5) < 0.05
    assert p.sigma_x.min() >= 0.2 and p.sigma_x.max() <= 1.5


@pytest.mark.parametrize("sx, sy, theta", [(1.5, 0.6, 0.4), (3.0, 1.0, -2.0), (2.0, 2.0, 0.0)])
def test_gaussian_kernel_second_moments_are_its_covariance(sx, sy, theta):
    k = build(_params(GAUSSIAN, 41, sx, sy, theta), 41)[0]
    ax = torch.arange(41, dtype=torch.float64) - 20
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    cov = torch.tensor([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    expected = rot @ torch.diag(torch.tensor([sx * sx, sy * sy], dtype=torch.float64)) @ rot.T
    # a sampled Gaussian's variance is sigma^2 up to ~exp(-2 pi^2 sigma^2) aliasing
    torch.testing.assert_close(cov, expected, rtol=0, atol=2e-3)


def test_generalized_and_plateau_shapes():
    g1 = build(_params(GAUSSIAN, 21, 2.0, 1.0, 0.3, beta=1.0), 21)
    ref = R.kernel(GAUSSIAN, 21, 2.0, 1.0, 0.3, 1.0, 0, 21)
    torch.testing.assert_close(g1[0], torch.from_numpy(ref), rtol=1e-12, atol=1e-15)
    # plateau: centre / value = 1 + Q^beta with Q the squared Mahalanobis distance
    k = build(_params(PLATEAU, 21, 2.0, 2.0, 0.0, beta=1.7), 21)[0]
    q = (3 ** 2 + 4 ** 2) / 4.0
    assert k[10, 10] / k[10 + 4, 10 + 3] == pytest.approx(1 + q ** 1.7, rel=1e-12)
    # generalised beta > 1 is flatter at the top and falls faster: more mass near 1 sigma, less in the tail
    flat = build(_params(GAUSSIAN, 21, 2.0, 2.0, beta=3.0), 21)[0]
    gauss = build(_params(GAUSSIAN, 21, 2.0, 2.0, beta=1.0), 21)[0]
    assert flat[10, 10 + 1] / flat[10, 10] > gauss[10, 10 + 1] / gauss[10, 10]   # Q = 1/4
    assert flat[10, 10 + 4] / flat[10, 10] < gauss[10, 10 + 4] / gauss[10, 10]   # Q = 4


@pytest.mark.parametrize("cutoff", [math.pi / 4, math.pi / 3, math.pi / 2, 2 * math.pi / 3])
def test_sinc_kernel_cuts_off_at_its_frequency(cutoff):
    k = build(_params(SINC, 21, cutoff=cutoff), 21)[0]
    n = 256
    spectrum = torch.fft.fft2(k, s=(n, n)).abs()
    f = torch.fft.fftfreq(n, dtype=torch.float64) * 2 * math.pi
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)
    assert spectrum[radius < 0.6 * cutoff].min() > 0.85          # pass band (21 taps: some ripple)
    stop = (radius > 1.4 * cutoff) & (radius < math.pi)
    assert spectrum[stop].max() < 0.15                            # stop band
    # the half-amplitude radius along the axes is the cut-off
    axis = spectrum[0, : n // 2]
    crossing = f[: n // 2][torch.nonzero(axis < 0.5)[0, 0]].item()
    assert crossing == pytest.approx(cutoff, rel=0.08)


def test_final_sinc_draws():
    cfg = RealWorldConfig()
    p = draw_final_sinc(torch.Generator().manual_seed(2), 5000, cfg)
    assert abs((p.shape == SINC).double().mean().item() - 0.8) < 0.025
    assert p.cutoff.min() >= math.pi / 3 and p.cutoff.max() <= math.pi
    k = build(p, 21)
    assert torch.all(k[p.shape == PULSE][:, 10, 10] == 1)


# ----- blur and unsharp mask ------------------------------------------------------------------

@pytest.mark.parametrize("size", [(37, 50), (5, 7), (1, 3)])
def test_filter2d_matches_scipy_with_mirrored_borders(size):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, *size, generator=gen, dtype=torch.float64)
    p = draw_blur(gen, 3, RealWorldConfig().first, RealWorldConfig())
    k = build(p, 21)
    out = filter2d(x, k)
    for i in range(3):
        ref = R.filter2d(x[i].permute(1, 2, 0).numpy(), k[i].numpy())
        torch.testing.assert_close(out[i].permute(1, 2, 0), torch.from_numpy(ref), rtol=1e-10, atol=1e-12)


def test_usm_sharpen_matches_the_reference_and_leaves_flat_areas():
    img = skimage_data.astronaut()[100:164, 150:230].astype(np.float64) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    out = usm_sharpen(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, R.usm_sharpen(img), rtol=0, atol=1e-10)
    flat = torch.full((1, 3, 40, 40), 0.3, dtype=torch.float64)
    assert torch.equal(usm_sharpen(flat), flat)
    assert np.abs(out - img).max() > 0.05   # edges are sharpened


# ----- resize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(20, 33), (61, 47), (9, 9), (1, 2)])
def test_resize_reference_matches_torch_interpolate(mode, size):
    img = torch.rand(1, 3, 31, 40, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kwargs = {} if mode == "area" else {"align_corners": False}
    expected = F.interpolate(img, size=size, mode=mode, **kwargs)[0].permute(1, 2, 0)
    ours = R.resize(img[0].permute(1, 2, 0).numpy(), size, mode)
    torch.testing.assert_close(torch.from_numpy(ours), expected, rtol=1e-10, atol=1e-12)


# ----- noise ----------------------------------------------------------------------------------

def test_gaussian_noise_statistics():
    sigma = torch.tensor([2.0, 10.0, 25.0, 30.0], dtype=torch.float64)
    grey = torch.tensor([False, True, False, True])
    gen = torch.Generator().manual_seed(5)
    colour = gaussian_noise((2, 3, 200, 200), sigma[~grey], False, gen, "cpu", torch.float64)
    mono = gaussian_noise((2, 3, 200, 200), sigma[grey], True, gen, "cpu", torch.float64)
    noise = torch.stack((colour[0], mono[0], colour[1], mono[1]))
    std = noise.std(dim=(1, 2, 3))
    torch.testing.assert_close(std, sigma / 255, rtol=0.02, atol=0)
    independent = torch.where(grey, 200 * 200, 3 * 200 * 200).double()
    assert torch.all(noise.mean(dim=(1, 2, 3)).abs() < 4 * (sigma / 255) / independent.sqrt())
    assert torch.equal(noise[1, 0], noise[1, 2]) and torch.equal(noise[3, 1], noise[3, 2])
    r = torch.corrcoef(noise[0].reshape(3, -1))
    assert (r - torch.eye(3, dtype=torch.float64)).abs().max() < 0.02


def test_poisson_noise_statistics():
    # a ramp with all 256 levels: the photon scale is 256, var(noise) = scale^2 * x / 256
    level = torch.arange(256, dtype=torch.float64) / 255
    x = level.repeat(3, 240, 1).unsqueeze(0).repeat(2, 1, 1, 1)          # (2, 3, 240, 256)
    assert _levels(torch.round(x * 255)).tolist() == [256.0, 256.0]
    scale = torch.tensor([1.0, 2.5], dtype=torch.float64)
    noise = poisson_noise(x, scale, False, torch.Generator().manual_seed(6))
    for i in range(2):
        var = noise[i].pow(2).mean(dim=(0, 1))[1:]                    # per level, 720 samples each
        expected = scale[i] ** 2 * level[1:] / 256
        ratio = (var / expected).mean().item()
        assert ratio == pytest.approx(1.0, abs=0.03)
        assert abs(noise[i].mean().item()) < 4 * math.sqrt((expected.mean() / 720 / 255).item())
    assert torch.all(noise[:, :, :, 0] == 0)                            # black has no shot noise
    # few levels: the photon scale is 2^ceil(log2(levels)) and grey noise is one image for R, G, B
    few = (torch.randint(0, 3, (1, 3, 64, 64), generator=torch.Generator().manual_seed(7)) * 100).double() / 255
    assert _levels(torch.round(few * 255)).tolist() == [4.0]
    assert len(np.unique(np.round(few.numpy() * 255))) == 3
    grey = poisson_noise(few, torch.tensor([1.0]), True, torch.Generator().manual_seed(8))
    assert torch.equal(grey[0, 0], grey[0, 1]) and torch.equal(grey[0, 1], grey[0, 2])
    luma = (few[0] * torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float64).view(3, 1, 1)).sum(0)
    lam = torch.round(luma * 255) / 255
    levels = _levels(torch.round(luma * 255)[None, None]).item()
    var = (grey[0, 0] ** 2).mean().item()
    assert var == pytest.approx((lam / levels).mean().item(), rel=0.1)


# ----- JPEG -----------------------------------------------------------------------------------

def _photos():
    rng = np.random.default_rng(0)
    return [("astronaut", skimage_data.astronaut()[100:261, 50:227]),   # odd sizes: partial MCUs
            ("coffee", skimage_data.coffee()[:200, :300]),
            ("chelsea", skimage_data.chelsea()[37:150, 11:170]),
            ("tiny", skimage_data.coffee()[5:10, 3:6]),
            ("noise", rng.integers(0, 256, (67, 93, 3)).astype(np.uint8))]


def _pillow(img: np.ndarray, quality: int):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_jpeg_matches_pillow(quality):
    """libjpeg's integer pipeline, emulated: the decoded pixels are Pillow's, bit for bit."""
    for name, img in _photos():
        with _pillow(img, quality) as decoded:
            pillow = np.asarray(decoded.convert("RGB"), dtype=np.float64)
            luma, chroma = quality_tables(torch.tensor([quality]))
            assert list(decoded.quantization[0]) == luma.flatten().tolist()    # IJG tables, scaled
            assert list(decoded.quantization[1]) == chroma.flatten().tolist()
            assert decoded.layer[0][1:3] == (2, 2)                           # 4:2:0
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        ours = jpeg(x, torch.tensor([quality]))[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(ours - np.round(ours)).max() < 1e-3                      # 8-bit values
        diff = np.abs(np.round(ours) - pillow)
        assert diff.max() == 0, (name, diff.mean(), diff.max(), (diff > 0).mean())
        if name != "tiny":
            assert np.abs(pillow - img).mean() > 0.5                          # it did compress


def test_islow_dct_is_the_dct():
    """libjpeg's integer DCT pair approximates the orthonormal DCT (x 8) to its rounding."""
    from spsr_fast.degradations.jpeg import dct_matrix, fdct_islow, idct_islow
    c = dct_matrix()
    x = torch.randint(-128, 128, (500, 8, 8), generator=torch.Generator().manual_seed(9))
    exact = c @ x.double() @ c.T
    assert (fdct_islow(x).double() / 8 - exact).abs().max() < 0.2
    coef = torch.round(exact)
    assert (idct_islow(coef.long()).double() - c.T @ coef @ c).abs().max() < 0.6   # rounded to integers


def test_jpeg_batch_uses_each_samples_quality():
    img = skimage_data.astronaut()[:64, :96]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).repeat(3, 1, 1, 1)
    out = jpeg(x, torch.tensor([30, 90, 30]))
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])
    torch.testing.assert_close(out[1:2], jpeg(x[:1], torch.tensor([90])), rtol=0, atol=0)
    errors = [(out[i] - x[i]).abs().mean().item() for i in range(2)]
    assert errors[0] > errors[1]
