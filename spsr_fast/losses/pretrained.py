"""Pretrained ImageNet weights of torchvision models (VGG19 for the perceptual loss, AlexNet for
LPIPS), fetched the way torchvision fetches them: on first use, from torchvision's URL into the
torch hub cache ($TORCH_HOME/hub/checkpoints), the download checked against the SHA-256 prefix
in the file name; later uses read the cached file. Offline, one line says how to provide it.
"""
from __future__ import annotations

import os

import torch


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights that are neither cached nor downloadable; the message (one line) says
    where to put the file and what else to do."""


def cache_path(weights) -> str:
    """Where torchvision keeps the file of `weights` (a torchvision WeightsEnum member)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _reason(exc: BaseException) -> str:
    text = (str(getattr(exc, "reason", "")) or str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def torchvision_state_dict(weights, what: str, otherwise: str | None,
                           error: type[PretrainedWeightsUnavailable] = PretrainedWeightsUnavailable
                           ) -> dict[str, torch.Tensor]:
    """The state dict of `weights` (e.g. VGG19_Weights.IMAGENET1K_V1): the cached file, or a
    download through torchvision's own mechanism (WeightsEnum.get_state_dict with
    check_hash=True) into the cache. `what` names the consumer ("losses.vgg_weights"),
    `otherwise` another way to provide the weights (if any); both go into the one-line `error`."""
    path = cache_path(weights)
    cached = os.path.isfile(path)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as exc:  # network errors, a failed checksum, a corrupt cached file
        reason = _reason(exc)
        if cached:
            problem = f"the cached file {path} is unreadable ({reason}); delete it to download it again"
        elif isinstance(exc, OSError):  # URLError, ConnectionError, TimeoutError, ...
            problem = (f"torchvision's {weights} weights are not in the torch hub cache and could not be "
                       f"downloaded ({reason}); connect to the internet once (they are fetched on first "
                       f"use) or copy {weights.url} to {path}")
        else:
            problem = (f"the download of {weights.url} failed ({reason}); try again, or copy a good copy "
                       f"of that file to {path}")
        raise error(f"{what}: {problem}" + (f", or {otherwise}" if otherwise else "")) from exc
