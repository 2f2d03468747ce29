"""Trainer stages of paper section 4, registered in spsr_fast.train.stages' registry:

- nse_contrastive / nse_jigsaw: self-supervised NSE pre-training on HR patches (the NSE is
  the stage's "G"; its head is "head"; one Adam over both).
- spsr_p / spsr_j: SR training with the structure loss of a frozen NSE. As the paper: pixel +
  perceptual + gradient-branch + structure losses; the image-space GAN and the gradient-space
  losses are off in the configs but stay available (losses.gan_weight, gradient_*_weight),
  so the structure and gradient losses also attach to a plain RRDBNet (appendix D).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..checkpoints.errors import CheckpointError
from ..losses import PerceptualLoss, gradient_branch_loss, gradient_pixel_loss, pixel_loss, ragan_generator_loss
from ..models import NSE, NSE_STRIDE, FeatureDiscriminator, VGGDiscriminator
from ..ops import gradient_map
from ..train.config import ConfigError
from ..train.distributed import unwrap
from ..train.errors import UserError
from ..train.profiling import nvtx_range
from ..train.stages import GENERATORS, Stage, adversarial_scale, register_stage
from .checkpoint import load_trained_nse, make_head
from .config import NSESection, StructureSection
from .sampling import ContrastiveGeometry, JigsawGeometry
from .structure_loss import StructureLoss
from .tasks import contrastive_task, jigsaw_task

log = logging.getLogger("spsr_fast.train")


def _nse_section(cfg) -> NSESection:
    return getattr(cfg, "nse", None) or NSESection()


def _build_nse(cfg) -> nn.Module:
    n = _nse_section(cfg)
    return NSE(in_nc=cfg.model.in_nc, width=n.width, out_channels=n.channels)


GENERATORS.setdefault("nse", _build_nse)


class NSEPretrainStage(Stage):
    generator_archs = ("nse",)
    generator_loss_nets = ("G", "head")
    task = ""

    def __init__(self, cfg, device, memory_format=torch.contiguous_format):
        super().__init__(cfg, device, memory_format)
        n = _nse_section(cfg)
        self.settings = n
        self.nets["head"] = self._to_device(make_head(self.task, n.channels, n.head_hidden, n.strategy))
        params = list(self.nets["G"].parameters()) + list(self.nets["head"].parameters())
        o = cfg.optim
        self.optimizers["G"] = torch.optim.Adam(params, lr=o.lr_g, betas=(o.beta1, o.beta2),
                                                weight_decay=o.weight_decay)
        self._trained = nn.ModuleList([self.nets["G"], self.nets["head"]])  # for grad norms / clipping

    def _sampler(self, step: int) -> torch.Generator:
        # Sample positions from (seed, step) alone: a resumed run samples what an uninterrupted one does.
        return torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + step)

    def _task(self, feature_map, head, generator):
        raise NotImplementedError

    def generator_forward(self, lr, hr, step, runner):
        with nvtx_range("NSE forward"), runner.autocast():
            out = self._task(self.nets["G"](hr), self.nets["head"], self._sampler(step))
        return {"l_g_nse": out.loss, "l_g_total": out.loss}, {"out": out}

    def train_step(self, lr, hr, step, runner):
        terms, extras = self.generator_forward(lr, hr, step, runner)
        out = extras["out"]
        runner.check_finite({"l_g_nse": out.loss})
        with nvtx_range("NSE backward"):
            runner.backward(out.loss, self.optimizers["G"], self._trained, "G")
        runner.step()
        return {"l_g_nse": out.loss.detach(), "acc_top1": out.correct.float().mean(),
                "acc_chance": out.chance.float().mean()}


@register_stage("nse_contrastive")
class NSEContrastiveStage(NSEPretrainStage):
    task = "contrastive"

    def _task(self, feature_map, head, generator):
        n = self.settings
        return contrastive_task(feature_map, head, ContrastiveGeometry(n.strategy), n.samples_per_image,
                                generator, n.similarity_scale)


@register_stage("nse_jigsaw")
class NSEJigsawStage(NSEPretrainStage):
    task = "jigsaw"

    def _task(self, feature_map, head, generator):
        return jigsaw_task(feature_map, head, JigsawGeometry(), self.settings.samples_per_image, generator)


class StructureStage(Stage):
    """SR generator (SPSRNet or RRDBNet) trained with the structure loss of a frozen NSE."""

    generator_archs = ("spsrnet", "rrdbnet")
    expected_task = ""

    def __init__(self, cfg, device, memory_format=torch.contiguous_format):
        super().__init__(cfg, device, memory_format)
        s: StructureSection = getattr(cfg, "structure", None) or StructureSection()
        if not s.nse:
            raise ConfigError(f"structure.nse: stage {self.name} needs the path of a trained NSE")
        try:
            trained = load_trained_nse(s.nse)
        except CheckpointError as exc:
            raise UserError(f"structure.nse: {exc}") from exc
        if trained.task and trained.task != self.expected_task:
            log.warning("%s: the NSE in %s was trained by %s, not %s", self.name, s.nse, trained.task,
                        self.expected_task)
        self.structure = StructureLoss(trained.nse, s.pixel_weight, s.gan_weight, s.pixel_criterion)
        self.structure.to(device, memory_format=memory_format)
        w, size, nf = cfg.losses, cfg.data.hr_size, cfg.model.discriminator_nf
        discriminators = {}
        if s.gan_weight > 0:
            discriminators["D_struct"] = FeatureDiscriminator(trained.nse.config["out_channels"], nf,
                                                              input_size=size // NSE_STRIDE)
        if w.gan_weight > 0:
            discriminators["D"] = VGGDiscriminator(cfg.model.out_nc, nf, input_size=size)
        if w.gradient_gan_weight > 0:
            discriminators["D_grad"] = VGGDiscriminator(cfg.model.out_nc, nf, input_size=size)
        for name, net in discriminators.items():
            self.nets[name] = self._to_device(net)
            self.optimizers[name] = self._adam(self.nets[name], cfg.optim.lr_d)
        self.perceptual = None
        if w.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(w.vgg_weights).to(device, memory_format=memory_format)
        self._use_gradient_maps = w.gradient_pixel_weight > 0 or "D_grad" in self.nets

    def generator_forward(self, lr, hr, step, runner):
        w, G = self.cfg.losses, self.nets["G"]
        plain = {k: unwrap(v) for k, v in self.nets.items() if k != "G"}
        for net in plain.values():
            net.requires_grad_(False)
        adversarial = adversarial_scale(w, step)
        pairs = {}
        with nvtx_range("G forward"), runner.autocast():
            out = G(lr)
            sr = self.sr_of(out)
            terms = {}
            if w.pixel_weight > 0:
                terms["l_g_pix"] = w.pixel_weight * pixel_loss(sr, hr, w.pixel_criterion)
            if self.perceptual is not None:
                terms["l_g_fea"] = w.perceptual_weight * self.perceptual(sr, hr)
            if isinstance(out, tuple) and w.branch_weight > 0:
                terms["l_g_branch"] = w.branch_weight * gradient_branch_loss(out[0], hr, w.branch_criterion)
            if "D" in plain:
                terms["l_g_gan"] = adversarial * w.gan_weight * ragan_generator_loss(plain["D"](hr), plain["D"](sr))
            if self._use_gradient_maps:
                with torch.no_grad():
                    hr_grad = gradient_map(hr, padding=2)
                sr_grad = gradient_map(sr, padding=2)
                pairs["D_grad"] = (hr_grad, sr_grad)
                if w.gradient_pixel_weight > 0:
                    terms["l_g_pix_grad"] = w.gradient_pixel_weight * gradient_pixel_loss(sr, hr, sr_grad, hr_grad)
                if "D_grad" in plain:
                    terms["l_g_gan_grad"] = adversarial * w.gradient_gan_weight * ragan_generator_loss(
                        plain["D_grad"](hr_grad), plain["D_grad"](sr_grad))
            sr_features, hr_features = self.structure.features(sr, hr)
            terms.update(self.structure.generator_terms(sr_features, hr_features, plain.get("D_struct")))
        terms["l_g_total"] = sum(terms.values())
        pairs["D"] = (hr, sr)
        pairs["D_struct"] = (hr_features, sr_features)
        return terms, pairs

    def train_step(self, lr, hr, step, runner):
        terms, pairs = self.generator_forward(lr, hr, step, runner)
        runner.check_finite(terms)
        with nvtx_range("G backward"):
            runner.backward(terms["l_g_total"], self.optimizers["G"], self.nets["G"], "G")
        for name in ("D", "D_grad", "D_struct"):
            if name in self.nets:
                self.discriminator_backward(name, *pairs[name], runner, terms)
        # Every loss is finite: now the generator and the discriminators step.
        runner.step()
        return {k: v.detach() for k, v in terms.items()}


@register_stage("spsr_p")
class SPSRPStage(StructureStage):
    """SPSR-P: the NSE was trained by contrastive prediction."""

    expected_task = "contrastive"


@register_stage("spsr_j")
class SPSRJStage(StructureStage):
    """SPSR-J: the NSE was trained by solving jigsaw puzzles."""

    expected_task = "jigsaw"
