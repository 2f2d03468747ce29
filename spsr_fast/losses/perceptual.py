"""Perceptual loss: L1 between VGG19 conv5_4 features (before its ReLU) of SR and HR.

Inputs are RGB in [0, 1]; the extractor normalises with the ImageNet mean/std. Weights come
from, in order: an explicit file (`weights=PATH`, a torchvision-style VGG19 state dict, full or
features-only), or torchvision's cache (`weights="torchvision"`; torchvision's IMAGENET1K_V1
file must already be in the torch hub cache: nothing is downloaded at run time). `weights="random"`
exists for tests of the plumbing only.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from .pixel import pixel_loss

CONV5_4 = 34  # index of conv5_4 in torchvision's vgg19().features; 35 is its ReLU
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsUnavailable(RuntimeError):
    pass


def _torchvision_cache_file() -> str:
    from torchvision.models import VGG19_Weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _how_to_provide(reason: str) -> str:
    cache = _torchvision_cache_file()
    return (f"VGG19 weights for the perceptual loss are unavailable: {reason}. Provide them by "
            f"either (a) placing torchvision's vgg19 ImageNet file at {cache} "
            f"(e.g. run `python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` "
            f"once on a machine with internet and copy it), or (b) setting the config field "
            f"losses.vgg_weights to the path of a VGG19 state dict (.pth).")


def _load_state(path: str) -> dict:
    if not os.path.isfile(path):
        raise VGGWeightsUnavailable(_how_to_provide(f"no file at {path}"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # Accept full-model ("features.N.weight") and features-only ("N.weight") layouts.
    return {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()
            if not k.startswith("classifier.")}


class VGGFeatureExtractor(nn.Module):
    """VGG19 features up to conv5_4 (no ReLU), frozen and in eval mode."""

    def __init__(self, weights: str = "torchvision", layer: int = CONV5_4):
        super().__init__()
        from torchvision.models import vgg19

        features = vgg19(weights=None).features[: layer + 1]
        if weights == "random":
            pass  # tests only: plumbing with random weights
        else:
            path = _torchvision_cache_file() if weights == "torchvision" else os.fspath(weights)
            state = _load_state(path)
            missing, unexpected = features.load_state_dict(
                {k: v for k, v in state.items() if int(k.split(".")[0]) <= layer}, strict=False)
            if missing:
                raise VGGWeightsUnavailable(_how_to_provide(f"{path} lacks {', '.join(missing)}"))
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
