import pytest
import torch
import torch.nn.functional as F

from spsr_fast.losses import (PerceptualLoss, VGGFeatureExtractor, VGGWeightsUnavailable,
                              gradient_branch_loss, gradient_pixel_loss, pixel_loss,
                              ragan_discriminator_loss, ragan_generator_loss)
from spsr_fast.ops._reference import gradient_map_reference


def test_ragan_matches_formula_and_detaches():
    torch.manual_seed(0)
    real = torch.randn(4, 1, requires_grad=True)
    fake = torch.randn(4, 1, requires_grad=True)
    sig = torch.sigmoid
    d_expected = -(torch.log(sig(real - fake.mean())).mean() + torch.log(1 - sig(fake - real.mean())).mean()) / 2
    assert ragan_discriminator_loss(real, fake).item() == pytest.approx(d_expected.item(), rel=1e-6)
    g = ragan_generator_loss(real, fake)
    g_expected = -(torch.log(1 - sig(real - fake.mean())).mean() + torch.log(sig(fake - real.mean())).mean()) / 2
    assert g.item() == pytest.approx(g_expected.item(), rel=1e-6)
    g.backward()
    assert real.grad is None and fake.grad is not None  # G step: no gradient into D(real)


def test_gradient_losses_use_padding_2_and_1():
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 16, 16)
    expected = F.mse_loss(gradient_map_reference(sr, 2), gradient_map_reference(hr, 2))
    got = gradient_pixel_loss(sr, hr)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    got.backward()
    assert sr.grad is not None
    branch = torch.rand(2, 3, 16, 16)
    assert gradient_branch_loss(branch, hr).item() == pytest.approx(
        F.l1_loss(branch, gradient_map_reference(hr, 1)).item(), rel=1e-5)


def test_pixel_loss_criteria():
    a, b = torch.zeros(3), torch.tensor([1.0, -2.0, 3.0])
    assert pixel_loss(a, b).item() == pytest.approx(2.0)
    assert pixel_loss(a, b, "l2").item() == pytest.approx(14 / 3)
    with pytest.raises(ValueError, match="criterion"):
        pixel_loss(a, b, "huber")


def test_vgg_extractor_is_conv5_4_before_relu_and_loads_from_path(tmp_path):
    torch.manual_seed(0)
    ext = VGGFeatureExtractor("random")
    assert isinstance(ext.features[-1], torch.nn.Conv2d) and len(ext.features) == 35
    x = torch.rand(1, 3, 32, 32)
    feats = ext(x)
    assert feats.shape == (1, 512, 2, 2) and (feats < 0).any()  # no trailing ReLU
    assert not any(p.requires_grad for p in ext.parameters())
    path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in ext.features.state_dict().items()}, path)
    loaded = VGGFeatureExtractor(str(path))
    torch.testing.assert_close(loaded(x), feats)
    loss = PerceptualLoss("random")
    assert loss(x, x).item() == 0.0


def test_vgg_missing_weights_error_says_how_to_provide(tmp_path):
    with pytest.raises(VGGWeightsUnavailable, match="losses.vgg_weights"):
        VGGFeatureExtractor(str(tmp_path / "missing.pth"))
