"""Training stages: which networks a stage builds and what one iteration does.

A stage is registered by name (`@register_stage("psnr")`); the NSE stages plug in the same way.
The trainer owns everything generic (device, AMP, DDP, EMA, checkpoints, logging); a stage gets
a `StepRunner` for the AMP/NaN/clipping details of each optimiser step. An iteration is
all-or-nothing: every loss is computed and checked, and every backward run, before
`runner.step()` changes any weight.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn as nn

from ..losses import (PerceptualLoss, gradient_branch_loss, gradient_pixel_loss, pixel_loss,
                      ragan_discriminator_loss, ragan_generator_loss)
from ..ops import gradient_map
from .config import Config, ConfigError
from .distributed import unwrap
from .errors import UserError
from .profiling import nvtx_range

log = logging.getLogger("spsr_fast.train")


# ----- generators --------------------------------------------------------------------------

def _spsrnet(cfg: Config) -> nn.Module:
    from ..models import SPSRNet

    m = cfg.model
    return SPSRNet(in_nc=m.in_nc, out_nc=m.out_nc, nf=m.nf, nb=m.nb, gc=m.gc, scale=cfg.data.scale)


def _rrdbnet(cfg: Config) -> nn.Module:
    from ..models import RRDBNet

    m = cfg.model
    return RRDBNet(in_nc=m.in_nc, out_nc=m.out_nc, nf=m.nf, nb=m.nb, gc=m.gc, scale=cfg.data.scale)


GENERATORS: dict[str, Callable[[Config], nn.Module]] = {"spsrnet": _spsrnet, "rrdbnet": _rrdbnet}

# SPSRNet parameters of the final fusion (the authors' `f_*` modules: f_block, f_concat,
# f_HR_conv0, f_HR_conv1), the only ones trained during `optim.fusion_only_iters`.
FUSION_PREFIXES = ("fusion_", "conv_last.")

def basicsr_init_(net: nn.Module) -> None:
    """Reset every conv outside the RRDBs to PyTorch's default init (BasicSR's scheme); the
    RRDBs keep their x0.1-scaled kaiming init."""
    from ..models import RRDB

    inside = {id(m) for block in net.modules() if isinstance(block, RRDB) for m in block.modules()}
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in inside:
            m.reset_parameters()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _read_generator_state(path: str) -> dict[str, torch.Tensor]:
    """Generator weights from a trainer checkpoint (.pt) or anything spsr_fast's load_model reads."""
    from ..checkpoints import CheckpointError, load_model

    if path.endswith((".pt", ".pth")):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types for a bad file
            raise UserError(f"model.pretrained: {path} is not a readable checkpoint ({_first_line(exc)})") from exc
        if isinstance(state, dict) and "models" in state and "G" in state["models"]:
            return state["models"]["G"]
    try:
        return load_model(path, device="cpu").state_dict()
    except CheckpointError as exc:
        raise UserError(f"model.pretrained: {exc}") from exc


def init_sr_branch(generator: nn.Module, path: str) -> list[str]:
    """Initialise `generator` from the file at `path` (model.pretrained): an SPSRNet's SR
    branch from an RRDBNet (SPSRNet.load_sr_branch), anything else (an SPSRNet from an SPSRNet,
    an RRDBNet from an RRDBNet) whole. Every tensor must be there with the right shape: a
    UserError names the missing, unexpected and mis-shaped ones. Returns the names copied."""
    from ..models import SPSRNet
    from ..models.spsrnet import describe_mismatch

    source = _read_generator_state(path)
    if isinstance(generator, SPSRNet) and not any(k.startswith("grad_") for k in source):
        try:
            return generator.load_sr_branch(source)
        except ValueError as exc:
            raise UserError(f"model.pretrained: {path}: {exc}") from None
    target = generator.state_dict()
    problem = describe_mismatch(source, target, list(target), unexpected=[k for k in source if k not in target])
    if problem:
        raise UserError(f"model.pretrained: {path} does not fit the {type(generator).__name__} of "
                        f"model.* (check model.nf/nb/gc and data.scale): {problem}")
    with torch.no_grad():
        for k, v in target.items():
            v.copy_(source[k])
    return list(target)


def reachable_parameters(output: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) that a backward from `output` reaches."""
    found: set[int] = set()
    seen, stack = set(), [output.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


# ----- stages ------------------------------------------------------------------------------

STAGES: dict[str, type] = {}


def register_stage(name: str):
    def wrap(cls):
        cls.name = name
        STAGES[name] = cls
        return cls
    return wrap


class SkipStep(Exception):
    """A non-finite loss: the iteration is skipped (no optimiser step), counted by the trainer."""

    def __init__(self, term: str):
        super().__init__(term)
        self.term = term


class Stage:
    """Base: builds the generator (+ its optimiser); subclasses add discriminators and losses."""

    name = "base"
    generator_archs: tuple[str, ...] = ("spsrnet", "rrdbnet")
    # The networks the generator loss trains (each DDP-wrapped on its own).
    generator_loss_nets: tuple[str, ...] = ("G",)
    # True when train_step / generator_forward take `real_hr`: the HR the discriminators see as
    # real when the content losses train towards another target (realworld.sharpen: an
    # unsharp-masked HR). Stages without it give every loss the one `hr`.
    separate_adversarial_targets = False

    def __init__(self, cfg: Config, device: torch.device, memory_format=torch.contiguous_format):
        if cfg.model.arch not in self.generator_archs:
            raise ConfigError(f"model.arch: stage {self.name} trains {' or '.join(self.generator_archs)}, "
                              f"got {cfg.model.arch!r}")
        self.cfg, self.device, self.memory_format = cfg, device, memory_format
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        generator = GENERATORS[cfg.model.arch](cfg)
        if cfg.model.init in ("basicsr", "interpolating"):
            basicsr_init_(generator)
        if cfg.model.init == "interpolating":
            from ..weights.identity_init import interpolating_init_
            interpolating_init_(generator)
        self.nets["G"] = self._to_device(generator)
        if cfg.model.pretrained:
            copied = init_sr_branch(self.nets["G"], cfg.model.pretrained)
            log.info("initialised %d generator tensors from %s", len(copied), cfg.model.pretrained)
        self.optimizers["G"] = self._adam(self.nets["G"], cfg.optim.lr_g)

    def _to_device(self, net: nn.Module) -> nn.Module:
        return net.to(self.device, memory_format=self.memory_format)

    def _adam(self, net: nn.Module, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.Adam(net.parameters(), lr=lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)

    def wrap(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Apply the trainer's DDP wrapper to the trainable networks."""
        self.nets = {k: wrapper(v) for k, v in self.nets.items()}

    @property
    def generator(self) -> nn.Module:
        return unwrap(self.nets["G"])

    def sr_of(self, generator_output) -> torch.Tensor:
        return generator_output[1] if isinstance(generator_output, tuple) else generator_output

    def discriminator_backward(self, name: str, real: torch.Tensor, fake: torch.Tensor, runner,
                               terms: dict[str, torch.Tensor]) -> None:
        """The RaGAN loss of discriminator `name` on `real` vs detached `fake`, checked and
        backpropagated (the step waits for runner.step()); records l_<name>, <name>_real and
        <name>_fake in `terms`."""
        net = self.nets[name]
        _set_requires_grad(unwrap(net), True)
        key = "l_" + name.lower()
        with nvtx_range(f"{name} step"):
            with runner.autocast():
                # Real and fake in separate forwards: BatchNorm statistics per half, as the authors.
                pred_real = net(real)
                pred_fake = net(fake.detach())
            l_d = ragan_discriminator_loss(pred_real, pred_fake)
            runner.check_finite({key: l_d})
            runner.backward(l_d, self.optimizers[name], net, name)
        terms[key] = l_d
        terms[f"{name}_real"] = pred_real.detach().float().mean()
        terms[f"{name}_fake"] = pred_fake.detach().float().mean()

    def generator_forward(self, lr: torch.Tensor, hr: torch.Tensor, step: int, runner):
        """The generator's forward and weighted loss terms (with l_g_total), plus what the
        discriminator steps need: (terms, extras)."""
        raise NotImplementedError

    @torch.no_grad()
    def _probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        d, m = self.cfg.data, self.cfg.model
        g = torch.Generator().manual_seed(0)  # its own generator: the run's RNG stream is untouched
        lr = torch.rand(2, m.in_nc, d.hr_size // d.scale, d.hr_size // d.scale, generator=g)
        hr = torch.rand(2, m.out_nc, d.hr_size, d.hr_size, generator=g)
        return (t.to(self.device).contiguous(memory_format=self.memory_format) for t in (lr, hr))

    def parameters_without_gradient(self, runner) -> dict[str, list[str]]:
        """For each network of the generator loss, the trainable parameters that no configured
        loss reaches (e.g. grad_conv_out when losses.branch_weight is 0), found from the autograd
        graph of one forward on a small synthetic batch; buffers (BatchNorm statistics) are
        restored afterwards."""
        modules = [m for m in (*self.nets.values(), *vars(self).values()) if isinstance(m, nn.Module)]
        buffers = [b for m in modules for b in m.buffers()]
        saved = [b.clone() for b in buffers]
        flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
        lr, hr = self._probe_batch()
        with torch.enable_grad():
            terms, _ = self.generator_forward(lr, hr, 10 ** 9, runner)  # past fusion-only and ramps
        reached = reachable_parameters(terms["l_g_total"])
        del terms
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)
        for p, flag in flags:
            p.requires_grad_(flag)
        return {name: [n for n, p in unwrap(self.nets[name]).named_parameters()
                       if p.requires_grad and id(p) not in reached]
                for name in self.generator_loss_nets}

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor, step: int, runner) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@register_stage("psnr")
class PSNRStage(Stage):
    """L1 (or L2) pre-training of RRDBNet, the initialisation of SPSR's SR branch."""

    generator_archs = ("rrdbnet",)
    separate_adversarial_targets = True   # no discriminator: real_hr is not used

    def generator_forward(self, lr, hr, step, runner, real_hr=None):
        with nvtx_range("G forward"), runner.autocast():
            sr = self.nets["G"](lr)
        l_pix = self.cfg.losses.pixel_weight * pixel_loss(sr, hr, self.cfg.losses.pixel_criterion)
        return {"l_g_pix": l_pix, "l_g_total": l_pix}, {}

    def train_step(self, lr, hr, step, runner, real_hr=None):
        terms, _ = self.generator_forward(lr, hr, step, runner)
        runner.check_finite({"l_g_pix": terms["l_g_pix"]})
        with nvtx_range("G backward"):
            runner.backward(terms["l_g_total"], self.optimizers["G"], self.nets["G"], "G")
        runner.step()
        return {k: v.detach() for k, v in terms.items()}


def adversarial_scale(losses, step: int) -> float:
    """Factor on the generator's adversarial terms at `step` (losses.adversarial_ramp_iters)."""
    ramp = losses.adversarial_ramp_iters
    return 1.0 if ramp <= 0 else min(1.0, (step + 1) / ramp)


def _set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


@register_stage("spsr_g")
class SPSRGStage(Stage):
    """SPSR-G: SPSRNet with pixel + perceptual + image RaGAN + gradient pixel + gradient RaGAN
    + gradient-branch losses; the generator, then the image D, then the gradient D, every
    iteration, in the authors' order and with their detach points. With `real_hr` the
    discriminators (and the generator's adversarial terms) take it as the real image, the pixel,
    perceptual, gradient and branch losses `hr`."""

    generator_archs = ("spsrnet",)
    separate_adversarial_targets = True

    def __init__(self, cfg, device, memory_format=torch.contiguous_format):
        super().__init__(cfg, device, memory_format)
        from ..models import VGGDiscriminator

        size, nf = cfg.data.hr_size, cfg.model.discriminator_nf
        self.nets["D"] = self._to_device(VGGDiscriminator(cfg.model.out_nc, nf, input_size=size))
        self.nets["D_grad"] = self._to_device(VGGDiscriminator(cfg.model.out_nc, nf, input_size=size))
        self.optimizers["D"] = self._adam(self.nets["D"], cfg.optim.lr_d)
        self.optimizers["D_grad"] = self._adam(self.nets["D_grad"], cfg.optim.lr_d)
        self.perceptual = None
        if cfg.losses.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(cfg.losses.vgg_weights).to(device, memory_format=memory_format)
        self._fusion_names = {n for n, _ in self.generator.named_parameters() if n.startswith(FUSION_PREFIXES)}
        if cfg.optim.fusion_only_iters > 0 and not self._fusion_names:
            raise ConfigError("optim.fusion_only_iters: the generator has no fusion parameters")
        self.distributed = False

    def wrap(self, wrapper):
        super().wrap(wrapper)
        self.distributed = self.nets["G"] is not self.generator

    def _fusion_only(self, step: int) -> bool:
        return step < self.cfg.optim.fusion_only_iters

    def _freeze_non_fusion(self, frozen: bool) -> None:
        # Single process: like the authors, frozen parameters get no gradient at all (and the
        # backward stops early). Under DDP every parameter keeps requires_grad (the reducer
        # expects them) and frozen gradients are dropped before the step instead.
        if self.distributed:
            return
        for n, p in self.generator.named_parameters():
            if n not in self._fusion_names:
                p.requires_grad_(not frozen)

    def _drop_frozen_grads(self) -> None:
        for n, p in self.generator.named_parameters():
            if n not in self._fusion_names:
                p.grad = None

    def generator_forward(self, lr, hr, step, runner, real_hr=None):
        w = self.cfg.losses
        G = self.nets["G"]
        # In the G step the discriminators run as plain modules: no DDP reducer for D there.
        D_plain, D_grad_plain = unwrap(self.nets["D"]), unwrap(self.nets["D_grad"])
        _set_requires_grad(D_plain, False)
        _set_requires_grad(D_grad_plain, False)
        real = hr if real_hr is None else real_hr
        with torch.no_grad():
            hr_grad = gradient_map(hr, padding=2)
            real_grad = hr_grad if real_hr is None else gradient_map(real, padding=2)
        adversarial = adversarial_scale(w, step)
        with nvtx_range("G forward"), runner.autocast():
            branch, sr, _ = G(lr)
            sr_grad = gradient_map(sr, padding=2)
            terms = {}
            if w.pixel_weight > 0:
                terms["l_g_pix"] = w.pixel_weight * pixel_loss(sr, hr, w.pixel_criterion)
            if self.perceptual is not None:
                terms["l_g_fea"] = w.perceptual_weight * self.perceptual(sr, hr)
            if w.gradient_pixel_weight > 0:
                terms["l_g_pix_grad"] = w.gradient_pixel_weight * gradient_pixel_loss(sr, hr, sr_grad, hr_grad)
            if w.branch_weight > 0:
                terms["l_g_branch"] = w.branch_weight * gradient_branch_loss(branch, hr, w.branch_criterion)
            if w.gan_weight > 0:
                terms["l_g_gan"] = adversarial * w.gan_weight * ragan_generator_loss(D_plain(real), D_plain(sr))
            if w.gradient_gan_weight > 0:
                terms["l_g_gan_grad"] = adversarial * w.gradient_gan_weight * ragan_generator_loss(
                    D_grad_plain(real_grad), D_grad_plain(sr_grad))
        terms["l_g_total"] = sum(terms.values())
        return terms, {"D": (real, sr), "D_grad": (real_grad, sr_grad)}

    def train_step(self, lr, hr, step, runner, real_hr=None):
        fusion_only = self._fusion_only(step)
        self._freeze_non_fusion(fusion_only)
        terms, pairs = self.generator_forward(lr, hr, step, runner, real_hr)
        runner.check_finite(terms)
        with nvtx_range("G backward"):
            runner.backward(terms["l_g_total"], self.optimizers["G"], self.nets["G"], "G",
                            before_step=self._drop_frozen_grads if (fusion_only and self.distributed) else None)
        if fusion_only:
            self._freeze_non_fusion(False)

        # ---- image discriminator, then gradient discriminator ----
        for name in ("D", "D_grad"):
            self.discriminator_backward(name, *pairs[name], runner, terms)
        # Every loss is finite: now G, D and D_grad step (D saw the pre-step fakes, as the authors).
        runner.step()
        return {k: v.detach() for k, v in terms.items()}
