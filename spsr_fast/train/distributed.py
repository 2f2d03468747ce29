"""DistributedDataParallel set-up for `torchrun` (NCCL on GPU, gloo on CPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank)


def ddp_wrapper(info: DistInfo, device: torch.device):
    def wrap(net: nn.Module) -> nn.Module:
        if not info.enabled or not any(p.requires_grad for p in net.parameters()):
            return net
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=True)
    return wrap


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_flag(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank says True (keeps ranks' control flow identical)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
