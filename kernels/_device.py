"""Triton launches on the tensor's GPU. Triton launches on the *current* CUDA device, so a
tensor on cuda:1 while cuda:0 is current would be handed to a kernel running on cuda:0."""
import contextlib

import torch


def on_device_of(tensor: torch.Tensor):
    """Context in which `tensor`'s GPU is the current device; a no-op for CPU tensors (which
    only Triton's interpreter runs)."""
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()
