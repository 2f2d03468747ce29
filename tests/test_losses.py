import os
import urllib.error

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


def test_vgg_missing_weights_file_names_the_field(tmp_path):
    with pytest.raises(VGGWeightsUnavailable, match="losses.vgg_weights: no file at .*missing.pth"):
        VGGFeatureExtractor(str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"0.weight": torch.zeros(2, 3, 3, 3)}, wrong)
    with pytest.raises(VGGWeightsUnavailable, match="not a VGG19 state dict"):
        VGGFeatureExtractor(str(wrong), layer=2)


# ---- torchvision's VGG19: fetched on first use into the torch hub cache (no network here)

VGG19_FILE = "vgg19-dcbb9e9d.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache in TORCH_HOME; downloads go through `hub.download` (offline by default)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    class Hub:
        checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
        download = None

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        if Hub.download is None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        Hub.download(url, dst, hash_prefix)

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    Hub.calls = calls
    return Hub


def small_vgg_state(seed=0):
    """features.0 and features.2 of VGG19 (conv1_1, conv1_2): enough for a layer=2 extractor."""
    g = torch.Generator().manual_seed(seed)
    return {"features.0.weight": torch.randn(64, 3, 3, 3, generator=g), "features.0.bias": torch.randn(64, generator=g),
            "features.2.weight": torch.randn(64, 64, 3, 3, generator=g), "features.2.bias": torch.randn(64, generator=g)}


def test_vgg_offline_is_one_line_with_both_ways_to_provide_it(hub):
    with pytest.raises(VGGWeightsUnavailable) as info:
        VGGFeatureExtractor("torchvision")
    message = str(info.value)
    assert "\n" not in message and message.startswith("losses.vgg_weights: ")
    assert "Temporary failure in name resolution" in message
    assert str(hub.checkpoints / VGG19_FILE) in message  # where to copy the file
    assert "https://download.pytorch.org/models/" + VGG19_FILE in message
    assert "losses.vgg_weights=PATH" in message  # or give a file instead
    assert len(hub.calls) == 1


def test_vgg_first_use_downloads_through_torchvision_with_its_checksum(hub):
    def server(url, dst, hash_prefix):
        torch.save(small_vgg_state(), dst)
    hub.download = server
    extractor = VGGFeatureExtractor("torchvision", layer=2)
    (url, dst, hash_prefix), = hub.calls
    assert url == "https://download.pytorch.org/models/" + VGG19_FILE
    assert dst == str(hub.checkpoints / VGG19_FILE) and hash_prefix == "dcbb9e9d"  # torchvision's hash check
    torch.testing.assert_close(extractor.features[2].weight, small_vgg_state()["features.2.weight"], rtol=0, atol=0)
    # second use: the cached file, no download
    hub.download = None
    VGGFeatureExtractor("torchvision", layer=2)
    assert len(hub.calls) == 1


def test_vgg_cached_file_is_used_offline(hub):
    os.makedirs(hub.checkpoints)
    torch.save(small_vgg_state(seed=3), hub.checkpoints / VGG19_FILE)
    extractor = VGGFeatureExtractor("torchvision", layer=2)
    assert not hub.calls
    torch.testing.assert_close(extractor.features[0].bias, small_vgg_state(seed=3)["features.0.bias"], rtol=0, atol=0)


def test_vgg_corrupt_cached_file_says_delete_it(hub):
    os.makedirs(hub.checkpoints)
    (hub.checkpoints / VGG19_FILE).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(VGGWeightsUnavailable, match="cached file .*unreadable.*delete it"):
        VGGFeatureExtractor("torchvision", layer=2)
