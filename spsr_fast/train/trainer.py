"""The trainer: builds a stage, runs it with AMP / channels_last / DDP, keeps the EMA, writes
atomic checkpoints, resumes exactly (on CUDA with run.deterministic), logs (progress bar,
TensorBoard, JSON lines, image grids) and validates (PSNR/SSIM on Y, LPIPS when available).
With data.degradation realworld the loader brings HR crops only and the LR of each batch is made
on the training device (spsr_fast/degradations), drawn from (run.seed, step, rank)."""
from __future__ import annotations

import json
import logging
import os
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import ops
from ..data.datasets import HRDataset, PairedDataset, ResumableSampler, ValidationDataset
from ..data.imresize import imresize
from ..degradations import RealWorldDegrader
from ..degradations.images import DegradedValidationSet
from ..metrics import make_lpips, psnr_y, ssim_y
from . import checkpoint as ckpt
from .config import Config, ConfigError, dump_config
from .determinism import configure_determinism
from .distributed import DistInfo, barrier, cleanup, ddp_wrapper, init_distributed, unwrap
from .ema import EMA
from .errors import UserError
from .profiling import nvtx_range
from .runner import StepRunner, resolve_amp
from .stages import STAGES, SkipStep

log = logging.getLogger("spsr_fast.train")


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (too many non-finite losses); the message says why."""


def summary_line(iterations: int, seconds: float, start_step: int, metrics: dict[str, float]) -> str:
    """The last line of a training run: how long, and the final validation PSNR-Y of the EMA
    and the raw weights beside bicubic's."""
    took = f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
    text = f"done: {iterations} iterations in {took}" + (f" (resumed at step {start_step})" if start_step else "")
    raw, ema = metrics.get("val/psnr_y"), metrics.get("val/ema_psnr_y")
    if raw is None:
        return text + "; no validation (data.val_hr is empty)"
    scores = f"{ema:.2f} dB (EMA), {raw:.2f} (raw)" if ema is not None else f"{raw:.2f} dB"
    bicubic = metrics.get("val/bicubic_psnr_y")
    return text + f"; validation PSNR-Y {scores}" + (f", bicubic {bicubic:.2f}" if bicubic is not None else "")


def pick_device(name: str, info: DistInfo) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("run.device: cuda requested but no CUDA device is available")
        return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    return torch.device("cpu")


def _init_worker(worker_id: int) -> None:
    """One thread per loader worker, for torch and for the BLAS / OpenMP pools numpy uses (imresize's
    matrix products): each worker is a process of its own whose pools default to one thread per
    core, which oversubscribes the cores the training step runs on (imresize was seen 60x slower).
    Samples are seeded by the sampler, not by the worker, so this changes no sample."""
    torch.set_num_threads(1)
    if _threadpoolctl_available():
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)


def _threadpoolctl_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("threadpoolctl") is not None


class Trainer:
    def __init__(self, cfg: Config, resume: str | None = None):
        self.cfg = cfg
        run = cfg.run
        self._notes: set[str] = set()
        # First: CUBLAS_WORKSPACE_CONFIG must be set before any CUDA work.
        determinism_note = configure_determinism(run.deterministic)
        if run.threads:
            torch.set_num_threads(run.threads)
        device_type = "cuda" if run.device == "cuda" or (run.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.info = init_distributed(device_type)
        self.device = pick_device(run.device, self.info)
        if determinism_note:
            self._note(determinism_note)
        if cfg.data.batch_size % self.info.world_size:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by the "
                              f"{self.info.world_size} processes")
        self.batch_per_rank = cfg.data.batch_size // self.info.world_size
        if run.ops_backend != "auto":   # auto keeps SPSR_FAST_BACKEND (or each op's default)
            ops.set_backend(run.ops_backend)
        self.memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
        self.run_dir = os.path.join(run.output_dir, run.name)
        self.ckpt_dir = os.path.join(self.run_dir, "checkpoints")
        amp, amp_note = resolve_amp(run.amp, self.device)
        if amp_note:
            self._note(amp_note)

        self.degrader = self._degrader()
        self.dataset = self._train_dataset()  # before the networks: data errors show at once
        self._val_set = self._validation_dataset()
        self._fetch_pretrained_once()
        torch.manual_seed(run.seed)  # same initial weights on every rank
        self.stage = STAGES[run.stage](cfg, self.device, self.memory_format)
        self.ema = EMA(self.stage.generator, run.ema_decay) if run.ema_decay > 0 else None
        self.schedulers = {k: torch.optim.lr_scheduler.MultiStepLR(o, cfg.optim.milestones, cfg.optim.gamma)
                           for k, o in self.stage.optimizers.items()}
        self.runner = StepRunner(self.device, amp, cfg.optim.grad_clip, self.info)
        self.step, self.bad_steps = 0, 0
        if resume == "auto":
            latest = ckpt.latest_checkpoint(self.ckpt_dir)
            if latest is None:
                log.info("--resume auto: no checkpoint in %s yet, starting from scratch", self.ckpt_dir)
            else:
                self._load(latest)
        elif resume:
            self._load(resume)
        if self.info.enabled:
            self._exclude_unreached_parameters()
        self.stage.wrap(ddp_wrapper(self.info, self.device))
        self.writer = None
        self.summary: str | None = None

    def _fetch_pretrained_once(self) -> None:
        """Under DDP the first rank fetches torchvision's VGG19 (first use only) while the others
        wait, instead of every rank downloading the same file at once."""
        losses = self.cfg.losses
        if not (self.info.enabled and losses.perceptual_weight > 0 and losses.vgg_weights == "torchvision"):
            return
        if self.info.is_main:
            from ..losses.perceptual import torchvision_vgg19_state

            torchvision_vgg19_state()
        barrier(self.info)

    def _exclude_unreached_parameters(self) -> None:
        """DDP waits for a gradient of every parameter that requires one and fails on the next
        step when none comes (e.g. grad_conv_out with losses.branch_weight 0). Parameters that no
        configured loss reaches never change, so they stop requiring gradients before wrapping."""
        for name, names in self.stage.parameters_without_gradient(self.runner).items():
            if not names:
                continue
            params = dict(unwrap(self.stage.nets[name]).named_parameters())
            for n in names:
                params[n].requires_grad_(False)
            self._note(f"{name}: {len(names)} parameters get no gradient from the configured losses and "
                       f"stay fixed ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")

    # ----- data ---------------------------------------------------------------------------
    def _degrader(self) -> RealWorldDegrader | None:
        """data.degradation realworld: the pipeline that makes each batch's LR on this device."""
        if self.cfg.data.degradation != "realworld":
            return None
        return RealWorldDegrader(self.cfg.realworld, self.cfg.data.scale, self.cfg.run.seed)

    def _train_dataset(self):
        d = self.cfg.data
        field = "data.train_hr / data.train_lr" if d.train_lr else "data.train_hr"
        try:
            if d.train_lr:
                dataset = PairedDataset(d.train_hr, d.train_lr, d.scale, d.hr_size, d.augment)
            else:
                dataset = HRDataset(d.train_hr, d.scale, d.hr_size, d.augment, d.quantize_lr,
                                    with_lr=self.degrader is None)
        except (ValueError, FileNotFoundError) as exc:  # no images, no LR partner, no folder
            raise UserError(f"{field}: {exc}") from exc
        try:
            dataset[(0, 0)]  # one sample now: a dataset with no usable image fails here, not in a worker
        except RuntimeError as exc:
            raise UserError(f"{field}: {exc} (see the warnings above for each file)") from exc
        return dataset

    def _validation_dataset(self):
        d = self.cfg.data
        if not d.val_hr or not self.info.is_main:
            return None
        try:
            val_set = ValidationDataset(d.val_hr, d.scale, d.val_lr or None, d.val_crop, d.quantize_lr, d.val_limit)
        except (ValueError, FileNotFoundError) as exc:
            raise UserError(f"data.val_hr: {exc}") from exc
        if self.degrader is not None and not d.val_lr:
            self._note(f"validation LR: the realworld degradation of data.val_hr under seed {self.cfg.run.seed} "
                       f"(run.seed), made once; `spsr-fast degrade` writes such a set for data.val_lr")
            return DegradedValidationSet(val_set, self.cfg.realworld, d.scale, self.cfg.run.seed)
        return val_set

    def _loader(self) -> DataLoader:
        d = self.cfg.data
        if d.num_workers > 0 and not _threadpoolctl_available():
            self._note("data.num_workers: threadpoolctl is not installed, so numpy's BLAS in each loader worker "
                       "keeps one thread per core and can oversubscribe the CPU (pip install threadpoolctl)")
        sampler = ResumableSampler(len(self.dataset), seed=self.cfg.run.seed, rank=self.info.rank,
                                   world_size=self.info.world_size, start=self.step * self.batch_per_rank)
        return DataLoader(self.dataset, batch_size=self.batch_per_rank, sampler=sampler,
                          num_workers=d.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=d.num_workers > 0, worker_init_fn=_init_worker,
                          prefetch_factor=4 if d.num_workers > 0 else None, drop_last=True)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _training_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(lr, hr, extra train_step arguments) of a loader batch on the training device; with a
        degrader the LR is made here and `hr` is the content target (unsharp-masked when
        realworld.sharpen), the plain HR going to the discriminators as real_hr."""
        if self.degrader is None:
            return self._to_device(batch["lr"]), self._to_device(batch["hr"]), {}
        with nvtx_range("degrade"):
            pair = self.degrader(batch["hr"].to(self.device, non_blocking=True), self.step, self.info.rank)
        extra = {} if pair.real is pair.target else {"real_hr": self._to_device(pair.real)}
        return self._to_device(pair.lr), self._to_device(pair.target), extra

    # ----- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "stage": self.cfg.run.stage,
            "config": self.cfg.to_dict(),
            "models": {k: unwrap(v).state_dict() for k, v in self.stage.nets.items()},
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizers": {k: o.state_dict() for k, o in self.stage.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.runner.scaler.state_dict() if self.runner.scaler else None,
            "rng": ckpt.rng_state(),
            "sampler": {"samples_per_rank": self.step * self.batch_per_rank, "seed": self.cfg.run.seed,
                        "world_size": self.info.world_size},
            "bad_steps": self.bad_steps,
        }

    def _load(self, path: str) -> None:
        from ..models.spsrnet import describe_mismatch

        state = ckpt.load_checkpoint(path)
        if state.get("stage") != self.cfg.run.stage:
            raise UserError(f"--resume: {path} is a {state.get('stage')!r} checkpoint, "
                            f"this run trains {self.cfg.run.stage!r} (run.stage)")
        for k, net in self.stage.nets.items():
            net = unwrap(net)
            source, target = state["models"].get(k, {}), net.state_dict()
            problem = describe_mismatch(source, target, list(target), [n for n in source if n not in target])
            if problem:
                raise UserError(f"--resume: network {k} of {path} does not fit this run's config "
                                f"(model.* / data.scale changed?): {problem}")
            net.load_state_dict(source)
        if self.ema:
            if state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # the checkpoint's run kept no EMA: start it from the weights just loaded
                self.ema.load_state_dict(self.stage.generator.state_dict())
                self._note(f"--resume: {path} has no EMA (run.ema_decay was 0); the EMA starts from its generator")
        for k, o in self.stage.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if self.runner.scaler and state["scaler"]:
            self.runner.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        if state["sampler"]["world_size"] != self.info.world_size:
            self._note(f"resuming a {state['sampler']['world_size']}-process run on "
                       f"{self.info.world_size}: the data order differs from an uninterrupted run")
        log.info("resumed from %s at step %d", path, self.step)

    def save(self) -> str | None:
        path = None
        if self.info.is_main:
            path = ckpt.checkpoint_path(self.ckpt_dir, self.step)
            ckpt.atomic_save(self.state_dict(), path)
            ckpt.prune(self.ckpt_dir, self.cfg.run.keep_checkpoints)
            self._export_generator()
        barrier(self.info)
        return path

    def _export_generator(self) -> None:
        try:
            from ..checkpoints import save_model
        except ImportError as exc:
            self._note(f"generator weights are only inside the training checkpoint ({exc})")
            return
        models_dir = os.path.join(self.run_dir, "models")
        os.makedirs(models_dir, exist_ok=True)
        save_model(self.stage.generator, os.path.join(models_dir, "G_latest.safetensors"))
        if self.ema:
            save_model(self.ema.model, os.path.join(models_dir, "G_ema_latest.safetensors"))

    # ----- logging ------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self._notes and self.info.is_main:
            self._notes.add(text)
            log.warning(text)

    def _open_writer(self) -> None:
        if not (self.info.is_main and self.cfg.run.tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._note("TensorBoard logging is off: install `tensorboard` to enable it")
            return
        self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"))

    def _log_scalars(self, scalars: dict[str, float]) -> None:
        if not self.info.is_main:
            return
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, self.step)
        with open(os.path.join(self.run_dir, "log.jsonl"), "a") as fh:
            fh.write(json.dumps({"step": self.step, **scalars}) + "\n")

    @torch.no_grad()
    def _image_grid(self, lr: torch.Tensor, hr: torch.Tensor) -> None:
        from torchvision.utils import make_grid, save_image

        G = self.stage.generator
        G.eval()
        n = min(4, lr.shape[0])
        with self.runner.autocast():
            out = G(lr[:n])
        G.train()
        sr = self.stage.sr_of(out).float().clamp(0, 1)
        rows = [F.interpolate(lr[:n].float(), size=hr.shape[-2:], mode="nearest"), sr, hr[:n].float()]
        if isinstance(out, tuple):
            rows += [out[0].float().clamp(0, 1), ops.gradient_map(hr[:n].float(), padding=1).clamp(0, 1)]
        grid = make_grid(torch.cat([r.contiguous() for r in rows]).cpu(), nrow=n, padding=2)
        folder = os.path.join(self.run_dir, "images")
        os.makedirs(folder, exist_ok=True)
        save_image(grid, os.path.join(folder, f"step_{self.step:08d}.png"))
        if self.writer:
            self.writer.add_image("train/LR_SR_HR_branch_gradHR", grid, self.step)

    # ----- validation ---------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        d = self.cfg.data
        if self._val_set is None:
            return {}
        if not hasattr(self, "_lpips"):
            self._lpips = make_lpips(self.device) if self.cfg.run.val_lpips else None
            self._bicubic = None
        models = {"": self.stage.generator}
        if self.ema:
            models["ema_"] = self.ema.model
        sums: dict[str, list[float]] = {}
        bicubic = []
        for i in range(len(self._val_set)):
            item = self._val_set[i]
            if item is None:
                continue
            lr, hr = item["lr"][None], item["hr"][None]
            if self._bicubic is None:
                bicubic.append(psnr_y(imresize(lr, d.scale).clamp(0, 1), hr, d.scale))
            for prefix, G in models.items():
                was_training = G.training
                G.eval()
                with self.runner.autocast():
                    sr = self.stage.sr_of(G(self._to_device(lr))).float().clamp(0, 1).cpu()
                G.train(was_training)
                sums.setdefault(f"val/{prefix}psnr_y", []).append(psnr_y(sr, hr, d.scale))
                sums.setdefault(f"val/{prefix}ssim_y", []).append(ssim_y(sr, hr, d.scale))
                if self._lpips is not None:
                    sums.setdefault(f"val/{prefix}lpips", []).append(self._lpips(sr.to(self.device), hr.to(self.device)))
        if self._bicubic is None and bicubic:
            self._bicubic = sum(bicubic) / len(bicubic)
        result = {k: sum(v) / len(v) for k, v in sums.items() if v}
        if self._bicubic is not None:
            result["val/bicubic_psnr_y"] = self._bicubic
        return result

    # ----- the loop -----------------------------------------------------------------------
    def _skip(self, exc: SkipStep) -> None:
        self.bad_steps += 1
        self.runner.discard()
        for o in self.stage.optimizers.values():
            o.zero_grad(set_to_none=True)
        self._note_always(f"step {self.step}: non-finite loss ({exc.term}); step skipped, no weight "
                          f"changed ({self.bad_steps} of at most {self.cfg.run.max_bad_steps})")
        if self.bad_steps >= self.cfg.run.max_bad_steps:
            raise TrainingStopped(
                f"stopping: {self.bad_steps} steps had non-finite losses (last: {exc.term} at step "
                f"{self.step}); run.max_bad_steps is {self.cfg.run.max_bad_steps}. Lower the learning "
                f"rates, use run.amp=bf16 or fp32, or set optim.grad_clip, then --resume.")

    def _note_always(self, text: str) -> None:
        if self.info.is_main:
            log.warning(text)

    def train(self) -> dict[str, float]:
        from tqdm import tqdm

        run, total = self.cfg.run, self.cfg.optim.total_iters
        if self.info.is_main:
            os.makedirs(self.run_dir, exist_ok=True)
            with open(os.path.join(self.run_dir, "config.yaml"), "w") as fh:
                fh.write(dump_config(self.cfg))
        self._open_writer()
        loader_iter = iter(self._loader())
        bar = tqdm(total=total, initial=self.step, disable=not (self.info.is_main and run.progress_bar),
                   dynamic_ncols=True, unit="it")
        last: dict[str, float] = {}
        start, start_step, validated_at = time.perf_counter(), self.step, None
        tick, tick_step = start, self.step
        try:
            while self.step < total:
                with nvtx_range("data"):
                    batch = next(loader_iter)
                lr, hr, extra = self._training_pair(batch)
                logging_step = (self.step + 1) % run.log_every == 0 or self.step + 1 == total
                self.runner.want_grad_norm = logging_step
                try:
                    terms = self.stage.train_step(lr, hr, self.step, self.runner, **extra)
                except SkipStep as exc:
                    terms = None
                    self._skip(exc)
                if terms is not None and self.ema:
                    with nvtx_range("ema"):
                        self.ema.update(self.stage.generator)
                self.runner.end_iteration()
                with warnings.catch_warnings():
                    # A skipped iteration has no optimizer.step(); the schedule still counts it.
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    for s in self.schedulers.values():
                        s.step()
                self.step += 1
                bar.update(1)
                if logging_step and terms is not None:
                    now = time.perf_counter()
                    scalars = {f"loss/{k}": v.item() for k, v in terms.items()}
                    scalars.update({f"lr/{k}": o.param_groups[0]["lr"] for k, o in self.stage.optimizers.items()})
                    scalars.update({f"grad_norm/{k}": v.item() for k, v in self.runner.grad_norms.items()})
                    scalars["speed/it_per_s"] = (self.step - tick_step) / max(now - tick, 1e-9)
                    scalars["train/bad_steps"] = self.bad_steps
                    tick, tick_step = now, self.step
                    self._log_scalars(scalars)
                    last.update(scalars)
                    shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in scalars.items() if k.startswith("loss/l_g_")}
                    bar.set_postfix(shown, refresh=False)
                if self.step % run.image_every == 0 and self.info.is_main:
                    self._image_grid(lr, hr)
                if self.step % run.val_every == 0 or self.step == total:
                    with nvtx_range("validation"):
                        metrics = self.validate()
                    if metrics:
                        self._log_scalars(metrics)
                        last.update(metrics)
                        bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                    validated_at = self.step
                    barrier(self.info)
                if self.step % run.save_every == 0 or self.step == total:
                    self.save()
            if validated_at != self.step:  # resumed at the end: validate the weights it ends with
                last.update(self.validate())
        finally:
            bar.close()
            if self.writer:
                self.writer.close()
        if self.info.is_main:
            self.summary = summary_line(self.step - start_step, time.perf_counter() - start, start_step, last)
        return last

    def close(self) -> None:
        cleanup(self.info)
