"""One optimiser step under AMP: autocast, GradScaler (fp16), non-finite loss check, clipping,
grad-norm bookkeeping. Shared by every stage."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from .distributed import DistInfo, all_reduce_flag
from .stages import SkipStep

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class StepRunner:
    def __init__(self, device: torch.device, amp: str, grad_clip: float, info: DistInfo):
        self.device, self.info, self.grad_clip = device, info, grad_clip
        self.dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        self.want_grad_norm = False
        self.grad_norms: dict[str, torch.Tensor] = {}

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        """Raise SkipStep naming the non-finite terms (one sync; all ranks agree under DDP)."""
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        bad = not bool(torch.isfinite(values).all())
        if all_reduce_flag(self.info, bad, self.device):
            names = [k for k, v in terms.items() if not torch.isfinite(v.detach()).all()]
            raise SkipStep(", ".join(names) or "another rank's loss")

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, net: nn.Module,
                          name: str, before_step=None) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if before_step is not None:
            before_step()
        if self.grad_clip > 0 or self.want_grad_norm:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for p in net.parameters() if p.grad is not None]
            if self.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
            else:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])) \
                    if params else torch.zeros(())
            self.grad_norms[name] = norm.detach()
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def end_iteration(self) -> None:
        if self.scaler is not None:
            self.scaler.update()
