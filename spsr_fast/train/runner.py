"""Optimiser steps under AMP: autocast, GradScaler (fp16), non-finite loss check, clipping,
grad-norm bookkeeping. Shared by every stage.

An iteration is all-or-nothing: a stage checks every loss and runs every backward first
(`check_finite`, `backward`), and only then `step()` applies the optimiser steps, in the order
of the backwards. A non-finite loss anywhere raises SkipStep before any weight has changed.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..precision import has_native_bf16
from .distributed import DistInfo, all_reduce_flag
from .stages import SkipStep

log = logging.getLogger("spsr_fast.train")

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str | None]:
    """The AMP mode to run `amp` (run.amp) with on `device`, and a note when it differs.

    bf16 only where the device computes it natively: a GPU below compute capability 8.0
    (T4, V100) emulates it several times slower than fp16, so it runs fp16 with a GradScaler;
    a CPU without AVX512-BF16/AMX runs fp32 (fp16 is emulated on CPUs too)."""
    if amp != "bf16" or has_native_bf16(device):
        return amp, None
    fallback = "fp16" if device.type == "cuda" else "fp32"
    return fallback, (f"run.amp: bf16 is not native on {device} (emulated, slow); "
                      f"training in {fallback}{' with a GradScaler' if fallback == 'fp16' else ''} instead")


@dataclass
class _PendingStep:
    optimizer: torch.optim.Optimizer
    net: nn.Module
    name: str
    before_step: Callable[[], None] | None


class StepRunner:
    def __init__(self, device: torch.device, amp: str, grad_clip: float, info: DistInfo):
        self.device, self.info, self.grad_clip = device, info, grad_clip
        self.amp = amp
        self.dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        self.want_grad_norm = False
        self.grad_norms: dict[str, torch.Tensor] = {}
        self._pending: list[_PendingStep] = []
        self._stepped = False  # an optimiser step ran this iteration (GradScaler.update needs one)

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

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, net: nn.Module,
                 name: str, before_step: Callable[[], None] | None = None) -> None:
        """Gradients of `loss` into `net` (fresh: the optimiser's gradients are reset first);
        the step itself waits for `step()`."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self._pending.append(_PendingStep(optimizer, net, name, before_step))

    def step(self) -> None:
        """Apply every optimiser step whose backward ran, in order."""
        pending, self._pending = self._pending, []
        for p in pending:
            if p.before_step is not None:
                p.before_step()
            if self.grad_clip > 0 or self.want_grad_norm:
                if self.scaler is not None:
                    self.scaler.unscale_(p.optimizer)
                params = [q for q in p.net.parameters() if q.grad is not None]
                if self.grad_clip > 0:
                    norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
                else:
                    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q.grad.float()) for q in params])) \
                        if params else torch.zeros(())
                self.grad_norms[p.name] = norm.detach()
            if self.scaler is not None:
                self.scaler.step(p.optimizer)
            else:
                p.optimizer.step()
            self._stepped = True

    def discard(self) -> None:
        """Forget the backwards of a skipped iteration (the trainer zeroes the gradients)."""
        self._pending = []

    def end_iteration(self) -> None:
        if self._pending:
            raise RuntimeError("StepRunner: backward() without step() in this iteration: "
                               + ", ".join(p.name for p in self._pending))
        if self.scaler is not None and self._stepped:
            self.scaler.update()
        self._stepped = False
