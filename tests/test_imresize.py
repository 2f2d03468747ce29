"""MATLAB-style bicubic imresize: properties and a direct evaluation of the same kernel."""
import math

import numpy as np
import pytest
import torch

from spsr_fast.data.imresize import cubic, imresize


def direct_resize_1d(signal: np.ndarray, scale: float) -> np.ndarray:
    """Straight from MATLAB's definition, one output pixel at a time, with np.pad('symmetric')."""
    n = len(signal)
    out_len = math.ceil(n * scale)
    width = 4 / scale if scale < 1 else 4
    pad = int(width) + 4
    padded = np.pad(signal, pad, mode="symmetric")
    out = np.empty(out_len)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
        js = np.arange(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2)
        k = scale * cubic(scale * (u - js)) if scale < 1 else cubic(u - js)
        out[i - 1] = np.dot(k, padded[js - 1 + pad]) / k.sum()
    return out


def test_constant_image_stays_constant():
    img = np.full((37, 41, 3), 0.37)
    for scale in (0.25, 0.5, 2.0, 1 / 3):
        out = imresize(img, scale)
        assert out.shape == (math.ceil(37 * scale), math.ceil(41 * scale), 3)
        np.testing.assert_allclose(out, 0.37, atol=1e-12)


def test_quarter_of_ramp_is_exact_in_interior():
    rows, cols = np.meshgrid(np.arange(64.0), np.arange(48.0), indexing="ij")
    ramp = 0.01 * rows + 0.02 * cols
    out = imresize(ramp, 0.25)
    # LR pixel i (0-based) is centred on HR coordinate 4 i + 1.5.
    ci = 4 * np.arange(16) + 1.5
    cj = 4 * np.arange(12) + 1.5
    expected = 0.01 * ci[:, None] + 0.02 * cj[None, :]
    np.testing.assert_allclose(out[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2.0, 4.0])
def test_matches_direct_kernel_evaluation(scale):
    rng = np.random.default_rng(0)
    img = rng.random((23, 30))
    expected = np.stack([direct_resize_1d(col, scale) for col in img.T], axis=1)
    expected = np.stack([direct_resize_1d(row, scale) for row in expected], axis=0)
    np.testing.assert_allclose(imresize(img, scale), expected, atol=1e-12)


def test_torch_matches_numpy():
    rng = np.random.default_rng(1)
    img = rng.random((20, 28, 3))
    ref = imresize(img, 0.25)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    np.testing.assert_allclose(imresize(t, 0.25).numpy().transpose(1, 2, 0), ref, atol=1e-12)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError, match="img"):
        imresize(np.zeros((4, 4, 3, 1)), 0.5)
