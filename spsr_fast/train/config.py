"""Training configuration: dataclasses, YAML loading with validation, `key=value` overrides.

Every error names the field (`optim.lr_g: expected a float, got 'fast'`). Defaults are the
paper's SPSR-G settings (docs/ARCHITECTURE.md 4); configs/*.yaml only state what differs.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import yaml

from ..data.builtin import BuiltinSourceError, builtin_paths, is_builtin, lookup
from ..degradations.config import RealWorldConfig, check_realworld


class ConfigError(ValueError):
    """A config problem; the message starts with the dotted field name."""


@dataclass
class DataConfig:
    # HR image folders, or built-in sources `builtin:NAME` (spsr_fast/data/builtin.py:
    # builtin:skimage-train, builtin:skimage-val); LR made on the fly
    train_hr: list[str] = field(default_factory=list)
    train_lr: list[str] = field(default_factory=list)   # optional paired LR folder(s)
    val_hr: list[str] = field(default_factory=list)     # validation HR folder(s) / sources; empty: no validation
    val_lr: list[str] = field(default_factory=list)
    val_crop: int = 0          # centre-crop validation HR images to this size (0: whole images)
    val_limit: int = 0         # validate on at most this many images (0: all)
    scale: int = 4
    hr_size: int = 128
    batch_size: int = 30       # global batch (split evenly across DDP ranks)
    num_workers: int = 4
    augment: bool = True
    quantize_lr: bool = True   # round on-the-fly LR to 8 bits, like LR PNGs
    # How LR training images are made from HR crops: bicubic (MATLAB-style, in the loader) or
    # realworld (the two-stage blur / resize / noise / JPEG pipeline of the realworld: section,
    # on the training device; spsr_fast/degradations)
    degradation: Literal["bicubic", "realworld"] = "bicubic"


@dataclass
class ModelConfig:
    arch: str = "spsrnet"      # spsrnet | rrdbnet
    in_nc: int = 3
    out_nc: int = 3
    nf: int = 64
    nb: int = 23
    gc: int = 32
    pretrained: Optional[str] = None     # SR-branch init: psnr-stage checkpoint or any RRDBNet file
    # authors: kaiming x0.1 on every conv (the authors' code); basicsr: x0.1 only inside the
    # RRDBs, PyTorch's default elsewhere (trains much faster from scratch); interpolating:
    # basicsr plus RGB routed through so the output starts as an interpolation
    # (spsr_fast/weights/identity_init.py)
    init: Literal["authors", "basicsr", "interpolating"] = "authors"
    discriminator_nf: int = 64


@dataclass
class LossConfig:
    pixel_weight: float = 1e-2
    pixel_criterion: Literal["l1", "l2"] = "l1"
    perceptual_weight: float = 1.0
    # torchvision: VGG19 ImageNet weights fetched by torchvision on first use (network once,
    # then its hub cache) | PATH: a local copy | random (tests only)
    vgg_weights: str = "torchvision"
    gan_weight: float = 5e-3
    gradient_pixel_weight: float = 1e-2
    gradient_gan_weight: float = 5e-3
    branch_weight: float = 0.5
    branch_criterion: Literal["l1", "l2"] = "l1"
    # The generator's adversarial terms (gan_weight, gradient_gan_weight) ramp linearly from 0
    # to full weight over the first N iterations; the discriminators train throughout. 0: full
    # weight from the start (the paper). For short runs from scratch (configs/tiny_cpu.yaml).
    adversarial_ramp_iters: int = 0


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [50_000, 100_000, 200_000, 300_000])
    gamma: float = 0.5
    total_iters: int = 500_000
    # max global grad-norm, applied to every network's gradients separately (G and each
    # discriminator; 0: off)
    grad_clip: float = 0.0
    fusion_only_iters: int = 0       # train only the fusion block for the first N iterations


@dataclass
class RunConfig:
    stage: str = "spsr_g"            # psnr | spsr_g (NSE stages plug into the same registry)
    name: str = "spsr_g"
    output_dir: str = "runs"         # the run lives in output_dir/name
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 on a device without native bf16 falls back (with a note): fp16 + GradScaler on a GPU, fp32 on a CPU
    amp: Literal["bf16", "fp16", "fp32"] = "bf16"
    channels_last: bool = True
    # fused-op backend for every op; auto: SPSR_FAST_BACKEND when set, else each op's default
    ops_backend: Literal["auto", "reference", "native", "triton"] = "auto"
    ema_decay: float = 0.999         # 0 disables the EMA
    max_bad_steps: int = 20          # stop after this many steps skipped for NaN/inf losses
    log_every: int = 100
    val_every: int = 5000
    image_every: int = 5000
    save_every: int = 5000
    keep_checkpoints: int = 2
    progress_bar: bool = True
    tensorboard: bool = True
    threads: int = 0                 # torch.set_num_threads (0: leave as is)
    # CUDA: deterministic algorithms (torch.use_deterministic_algorithms) and no cudnn.benchmark,
    # so a resumed run repeats an uninterrupted one bit for bit; slower (spsr_fast/train/determinism.py)
    deterministic: bool = False
    # Validation scores LPIPS (AlexNet) beside PSNR/SSIM when the lpips package is installed;
    # torchvision's AlexNet weights are fetched on first use (network). false: never LPIPS.
    val_lpips: bool = True


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # data.degradation realworld: every range and probability of the pipeline (Real-ESRGAN's
    # published values by default; spsr_fast/degradations/config.py)
    realworld: RealWorldConfig = field(default_factory=RealWorldConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----- value checking -------------------------------------------------------------------------

def _check_value(name: str, tp, value):
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(name, arg, value)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: unexpected value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{name}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single folder / milestone may be written without a list
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_value(f"{name}[{i}]", item_tp, v) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:  # YAML reads 5e5 as a string; accept integral numbers in any spelling
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported field type {tp}")


def _build(cls, data, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown field (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], name)
        else:
            kwargs[f.name] = _check_value(name, tp, data[f.name])
    return cls(**kwargs)


def _set_dotted(tree: dict, key: str, value) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr_g=2e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


# ----- semantic checks -------------------------------------------------------------------------

def _check_builtin_names(name: str, folders: list[str], allowed: bool) -> None:
    """`builtin:NAME` entries (spsr_fast/data/builtin.py) must name a known source, and only
    where HR images are expected; checked even without check_paths (a typo is not a path issue)."""
    for i, folder in enumerate(folders):
        if not is_builtin(folder):
            continue
        if not allowed:
            raise ConfigError(f"{name}[{i}]: built-in sources hold HR images only; "
                              f"{name} takes a folder of LR images, got {folder!r}")
        try:
            lookup(folder)
        except BuiltinSourceError as exc:
            raise ConfigError(f"{name}[{i}]: {exc}") from None


def _require_folders(name: str, folders: list[str]) -> None:
    for i, folder in enumerate(folders):
        if is_builtin(folder):
            try:
                builtin_paths(folder)  # the package that ships it is installed and complete
            except BuiltinSourceError as exc:
                raise ConfigError(f"{name}[{i}]: {exc}") from None
        elif not os.path.isdir(folder):
            raise ConfigError(f"{name}[{i}]: folder does not exist: {folder}")


def _check_realworld_stage(cfg: Config, stage) -> None:
    """data.degradation realworld fits the data and the stage."""
    if cfg.data.train_lr:
        raise ConfigError("data.train_lr: paired LR images and data.degradation realworld exclude each other "
                          "(realworld makes the LR from data.train_hr)")
    if cfg.model.arch == "nse":
        raise ConfigError(f"data.degradation: stage {cfg.run.stage} trains the NSE on HR patches alone; "
                          f"realworld LR images would go unused (use bicubic)")
    rw = cfg.realworld
    if rw.sharpen and not rw.sharpen_adversarial and not stage.separate_adversarial_targets:
        raise ConfigError(f"realworld.sharpen_adversarial: stage {cfg.run.stage} gives one HR target to every "
                          f"loss, its discriminators included; set realworld.sharpen_adversarial=true (they "
                          f"see the unsharp-masked HR too) or realworld.sharpen=false")


def validate(cfg: Config, check_paths: bool = True) -> Config:
    from .stages import STAGES, GENERATORS

    if cfg.run.stage not in STAGES:
        raise ConfigError(f"run.stage: must be one of {', '.join(sorted(STAGES))}, got {cfg.run.stage!r}")
    if cfg.model.arch not in GENERATORS:
        raise ConfigError(f"model.arch: must be one of {', '.join(sorted(GENERATORS))}, got {cfg.model.arch!r}")
    positive = {"data.scale": cfg.data.scale, "data.hr_size": cfg.data.hr_size,
                "data.batch_size": cfg.data.batch_size, "optim.total_iters": cfg.optim.total_iters,
                "model.nf": cfg.model.nf, "model.nb": cfg.model.nb, "model.gc": cfg.model.gc,
                "run.log_every": cfg.run.log_every, "run.save_every": cfg.run.save_every,
                "run.val_every": cfg.run.val_every, "run.image_every": cfg.run.image_every,
                "run.keep_checkpoints": cfg.run.keep_checkpoints}
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name}: must be >= 1, got {value}")
    if cfg.data.hr_size % cfg.data.scale:
        raise ConfigError(f"data.hr_size: {cfg.data.hr_size} is not a multiple of data.scale ({cfg.data.scale})")
    if not 0 <= cfg.run.ema_decay < 1:
        raise ConfigError(f"run.ema_decay: must be in [0, 1), got {cfg.run.ema_decay}")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {cfg.data.num_workers}")
    if cfg.losses.adversarial_ramp_iters < 0:
        raise ConfigError(f"losses.adversarial_ramp_iters: must be >= 0, got {cfg.losses.adversarial_ramp_iters}")
    if sorted(cfg.optim.milestones) != cfg.optim.milestones:
        raise ConfigError(f"optim.milestones: must be increasing, got {cfg.optim.milestones}")
    for name, allowed in (("train_hr", True), ("val_hr", True), ("train_lr", False), ("val_lr", False)):
        _check_builtin_names(f"data.{name}", getattr(cfg.data, name), allowed)
    try:
        check_realworld(cfg.realworld)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.data.degradation == "realworld":
        _check_realworld_stage(cfg, STAGES[cfg.run.stage])
    if check_paths:
        if not cfg.data.train_hr:
            raise ConfigError("data.train_hr: no training folder given")
        _require_folders("data.train_hr", cfg.data.train_hr)
        _require_folders("data.train_lr", cfg.data.train_lr)
        _require_folders("data.val_hr", cfg.data.val_hr)
        _require_folders("data.val_lr", cfg.data.val_lr)
        if cfg.model.pretrained and not os.path.isfile(cfg.model.pretrained):
            raise ConfigError(f"model.pretrained: file does not exist: {cfg.model.pretrained}")
        if cfg.losses.vgg_weights not in ("torchvision", "random") and not os.path.isfile(cfg.losses.vgg_weights):
            raise ConfigError(f"losses.vgg_weights: file does not exist: {cfg.losses.vgg_weights}")
    return cfg


# Stage plugins extend the config: each registers a Config subclass with its own sections
# (and checks); load_config builds the most derived one, so every command accepts them.
PLUGINS = ("spsr_fast.nse.config",)
_config_class: type = Config
_extra_checks: list = []


def extend_config(cls: type, check=None) -> None:
    """Make load_config build `cls` (a subclass of the current config class) and run
    `check(cfg, check_paths)` after the built-in validation."""
    global _config_class
    if not issubclass(cls, _config_class):
        raise TypeError(f"{cls.__name__} must subclass {_config_class.__name__}")
    _config_class = cls
    if check is not None:
        _extra_checks.append(check)


def _load_plugins() -> None:
    for module in PLUGINS:
        importlib.import_module(module)


def read_tree(path: str | None, overrides=()) -> dict:
    """The raw config mapping: the YAML file (if any) with `key=value` overrides applied."""
    tree: dict = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file does not exist: {path}")
        with open(path) as fh:
            try:
                tree = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return tree


def load_config(path: str | None = None, overrides: list[str] = (), check_paths: bool = True) -> Config:
    """Config from a YAML file plus `key=value` overrides (paths relative to the working directory)."""
    _load_plugins()
    cfg = validate(_build(_config_class, read_tree(path, overrides), ""), check_paths=check_paths)
    for check in _extra_checks:
        cfg = check(cfg, check_paths)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
