"""`spsr-fast eval`: protocol (modcrop, MATLAB bicubic LR, Y metrics, shave) and outputs."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.data.imresize import imresize
from spsr_fast.inference.evaluate import evaluate_image
from spsr_fast.inference.runner import Upscaler
from spsr_fast.metrics import psnr_y
from spsr_fast.models import RRDBNet

skimage_data = pytest.importorskip("skimage.data")


class MatlabBicubic(nn.Module):
    """A 'network' that is exactly the bicubic baseline: its scores must equal bicubic's."""

    config = {"scale": 4}

    def forward(self, x):
        return imresize(x, 4.0)


def hr_image():
    return skimage_data.chelsea()[50:113, 100:170].astype(np.float32) / 255  # 63 x 70: modcrop to 60 x 68


def test_bicubic_model_scores_equal_the_bicubic_column():
    result = evaluate_image(Upscaler(MatlabBicubic(), device="cpu", tile=0), hr_image(), "chelsea")
    assert result.size == (60, 68)
    bicubic, model = result.scores["bicubic"], result.scores["model"]
    assert model.psnr_y == pytest.approx(bicubic.psnr_y, abs=1e-6)
    assert model.ssim_y == pytest.approx(bicubic.ssim_y, abs=1e-6)
    assert model.grad_mae == pytest.approx(bicubic.grad_mae, abs=1e-7)
    # the bicubic column is the usual protocol: LR = MATLAB bicubic of the modcropped HR, shave 4
    hr = torch.from_numpy(hr_image()[:60, :68]).permute(2, 0, 1)
    lr = torch.round(imresize(hr.double(), 0.25).clamp(0, 1) * 255) / 255
    expected = psnr_y(imresize(lr, 4.0).clamp(0, 1).float(), hr, shave=4)
    assert bicubic.psnr_y == pytest.approx(expected, abs=0.02)
    assert 20 < bicubic.psnr_y < 40 and 0 < bicubic.ssim_y < 1


def test_eval_cli_table_and_json(tmp_path, capsys):
    torch.manual_seed(0)
    spsr_fast.save_model(RRDBNet(nf=4, nb=1, gc=4), tmp_path / "m.safetensors")
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(skimage_data.astronaut()[:48, :52]).save(hr / "astronaut.png")
    Image.fromarray(skimage_data.coffee()[:40, :40]).save(hr / "coffee.png")
    (hr / "broken.png").write_bytes(b"nope")
    out = tmp_path / "scores.json"
    code = main(["eval", str(hr), "--model", str(tmp_path / "m.safetensors"), "--json", str(out),
                 "--save-comparisons", str(tmp_path / "cmp")])
    captured = capsys.readouterr()
    assert code == 1 and "FAILED" in captured.err and "broken.png" in captured.err
    assert "mean of 2" in captured.out
    payload = json.loads(out.read_text())
    assert payload["scale"] == 4 and [i["name"] for i in payload["images"]] == ["astronaut.png", "coffee.png"]
    assert payload["images"][0]["size"] == [48, 52]
    for method in ("bicubic", "model"):
        means = payload["mean"][method]
        assert set(means) == {"psnr_y", "ssim_y", "grad_mae", "lpips"}
        assert means["psnr_y"] == pytest.approx(np.mean([i[method]["psnr_y"] for i in payload["images"]]))
    assert Image.open(tmp_path / "cmp" / "astronaut_cmp.png").size == (3 * 52 + 8, 48)
    # a random untrained network is far worse than bicubic: the columns are not mixed up
    assert payload["mean"]["model"]["psnr_y"] < payload["mean"]["bicubic"]["psnr_y"]


def test_eval_cli_missing_folder(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing"), "--model", "x"]) == 2
    assert "nothing" in capsys.readouterr().err
