"""The bundled default model and the interpolating initialisation its recipe starts from."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.weights import DEFAULT_MODEL, bundled_models, resolve_model
from spsr_fast.weights.identity_init import interpolating_rrdbnet


def test_interpolating_init_is_nearest_plus_blur_per_step():
    net = interpolating_rrdbnet(nf=8, nb=1, gc=4, scale=4).eval()
    x = torch.rand(1, 3, 12, 10)
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = (torch.outer(blur, blur) / 16).expand(3, 1, 3, 3)
    expected = x
    for _ in range(2):
        expected = F.conv2d(F.interpolate(expected, scale_factor=2, mode="nearest"), blur, padding=1, groups=3)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)
    # everything else is still random, so training has features to learn with
    assert net.body[0].rdb1.conv1.weight.abs().sum() > 0 and net.conv_up1.weight[3:].abs().sum() > 0


def test_spsrnet_interpolating_init_starts_as_the_same_interpolation():
    """SPSRNet routes the RGB through its SR branch and the fusion (model.init: interpolating)."""
    from spsr_fast.models import SPSRNet
    from spsr_fast.train.stages import basicsr_init_
    from spsr_fast.weights.identity_init import interpolating_init_

    torch.manual_seed(0)
    net = SPSRNet(nf=8, nb=2, gc=4, scale=4)
    basicsr_init_(net)
    interpolating_init_(net).eval()
    x = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        grad_branch_map, sr, _ = net(x)
        torch.testing.assert_close(sr, interpolating_rrdbnet(nf=8, nb=2, gc=4).eval()(x), rtol=1e-5, atol=1e-6)
    # the gradient branch and the fusion RRDB still have their own (random) features
    assert grad_branch_map.abs().sum() > 0 and net.fusion_block.rdb1.conv5.weight[:8].abs().sum() > 0
    with pytest.raises(TypeError, match="RRDBNet or SPSRNet"):
        interpolating_init_(torch.nn.Conv2d(3, 3, 3))


def test_identity_init_cli_writes_a_loadable_model(tmp_path):
    from spsr_fast.weights.identity_init import main as init_main

    assert init_main([str(tmp_path / "init.safetensors"), "--nf", "8", "--nb", "1", "--gc", "4"]) == 0
    model = spsr_fast.load_model(tmp_path / "init.safetensors")
    assert model.config["nf"] == 8 and model.arch == "RRDBNet"


bundled = pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="no bundled default model in this checkout")


@bundled
def test_bundled_default_model_is_small_and_loads():
    path = resolve_model("default")
    assert os.path.getsize(path) <= 25 * 1024 * 1024
    model = spsr_fast.load_model(path)
    assert model.config["scale"] == 4


@bundled
def test_upscale_without_model_uses_the_bundled_one(tmp_path, capsys):
    skimage_data = pytest.importorskip("skimage.data")
    Image.fromarray(skimage_data.chelsea()[:32, :40]).save(tmp_path / "cat.png")
    assert main(["upscale", "--no-progress", str(tmp_path / "cat.png")]) == 0
    assert DEFAULT_MODEL in capsys.readouterr().out
    out = np.asarray(Image.open(tmp_path / "cat_x4.png"))
    assert out.shape == (128, 160, 3)
