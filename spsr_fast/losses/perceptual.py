"""Perceptual loss: L1 between VGG19 conv5_4 features (before its ReLU) of SR and HR.

Inputs are RGB in [0, 1]; the extractor normalises with the ImageNet mean/std. Weights:
`weights="torchvision"` (default) uses torchvision's VGG19 IMAGENET1K_V1 file, fetched on first
use into the torch hub cache like torchvision does (spsr_fast/losses/pretrained.py);
`weights=PATH` reads a VGG19 state dict (torchvision layout, full or features-only) instead;
`weights="random"` exists for tests of the plumbing only.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from .pixel import pixel_loss
from .pretrained import PretrainedWeightsUnavailable, torchvision_state_dict

CONV5_4 = 34  # index of conv5_4 in torchvision's vgg19().features; 35 is its ReLU
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIELD = "losses.vgg_weights"
OTHERWISE = f"set {FIELD}=PATH to a VGG19 state dict (.pth)"


class VGGWeightsUnavailable(PretrainedWeightsUnavailable):
    """The VGG19 weights of the perceptual loss cannot be had; the message (one line) says how."""


def _vgg19_weights():
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1


def torchvision_vgg19_state() -> dict[str, torch.Tensor]:
    """torchvision's VGG19 ImageNet state dict: cached, or fetched now (first use)."""
    return torchvision_state_dict(_vgg19_weights(), FIELD, OTHERWISE, VGGWeightsUnavailable)


def _read_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise VGGWeightsUnavailable(f"{FIELD}: no file at {path} (give a VGG19 state dict, or "
                                    f"'torchvision' to use torchvision's ImageNet weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise VGGWeightsUnavailable(f"{FIELD}: {path} is not a readable state dict "
                                    f"({type(exc).__name__}: {first})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VGGWeightsUnavailable(f"{FIELD}: {path} holds a {type(state).__name__}, not a state dict")
    return state


def _features_state(state: dict) -> dict:
    """Accept full-model ("features.N.weight") and features-only ("N.weight") layouts."""
    return {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()
            if not k.startswith("classifier.")}


class VGGFeatureExtractor(nn.Module):
    """VGG19 features up to `layer` (default conv5_4, no ReLU), frozen and in eval mode."""

    def __init__(self, weights: str = "torchvision", layer: int = CONV5_4):
        super().__init__()
        from torchvision.models import vgg19

        features = vgg19(weights=None).features[: layer + 1]
        if weights != "random":  # "random": tests of the plumbing only
            if weights == "torchvision":
                source = f"torchvision's {_vgg19_weights()}"
                state = torchvision_vgg19_state()
            else:
                source = os.fspath(weights)
                state = _read_file(source)
            wanted = features.state_dict()
            state = {k: v for k, v in _features_state(state).items() if k in wanted}
            missing = [k for k in wanted if k not in state]
            shapes = [k for k in state if state[k].shape != wanted[k].shape]
            if missing or shapes:
                raise VGGWeightsUnavailable(
                    f"{FIELD}: {source} is not a VGG19 state dict "
                    f"({'lacks ' + ', '.join(missing[:4]) if missing else 'wrong shape of ' + ', '.join(shapes[:4])})")
            features.load_state_dict(state)
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


class PerceptualLoss(nn.Module):
    def __init__(self, weights: str = "torchvision", criterion: str = "l1"):
        super().__init__()
        self.extractor = VGGFeatureExtractor(weights)
        self.criterion = criterion

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.extractor(hr)
        return pixel_loss(self.extractor(sr), target, self.criterion)
