"""The inference runner: device, precision, memory layout, tile size, and what to do
with alpha, gray and 16-bit pictures.

Policy (docs/ARCHITECTURE.md 5): on a GPU, bf16 autocast where the GPU computes bf16
natively (compute capability 8.0+; fp16 on older GPUs, which only emulate bf16),
channels_last and the fused kernels. On the CPU, RRDBNet and SPSRNet run through the CPU
engine (cpu_engine.py: weights packed once per model) on every CPU this process may use.
There `auto` is bf16 where the CPU has bf16 dot products (AVX512_BF16; SPSR_FAST_CPU_BF16=0
says it has not), else float32; auto's bf16 runs the layers that carry the image with float32
GEMMs, which keeps its error against float32 within the bound tests/test_cpu_bf16_engine.py
checks on photographs (mean <= 0.002, max no larger than bf16's elsewhere), and 16-bit
outputs in float32; `bf16` runs those layers in bf16 too for 8-bit outputs; `fp32` is
float32 throughout. `precision="fp32"` turns autocast off. Pictures written
with 16 bits per sample run the layers that carry the image in fp32 (image_path.py), so
they keep more than 8 bits under autocast. The tile size is chosen from free memory unless
given; an image that fits one tile is not tiled; a tile that runs out of device memory is
retried at half the size, down to a floor.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..precision import cpu_bf16_kernels, has_native_bf16
from . import cpu_engine
from .cpus import available_cpus
from .image_path import exact_fp32_convolutions, with_fp32_image_path
from .io import Picture, with_pixels
from .tiling import tile_starts, tiled_forward

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TILE_MULTIPLE = 8
MAX_AUTO_TILE = {"cuda": 512, "cpu": 512}
MIN_TILE = 4 * TILE_MULTIPLE  # out-of-memory retries halve the tile down to this (or 2 x overlap)


class TileOutOfMemoryError(RuntimeError):
    """Even the smallest tile tried did not fit in the device's memory."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was asked for but torch sees no GPU (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device: {device} does not exist; torch sees {torch.cuda.device_count()} GPU(s) "
                         f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return device


def choose_precision(precision: str, device: torch.device, model: nn.Module | None = None
                     ) -> tuple[torch.dtype, str]:
    """(dtype, why in a few words). `auto` on the CPU depends on the model: bf16 only where
    the CPU engine runs it on native bf16 dot products (without a model: float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise ValueError("precision: fp16 is not supported on the CPU (use fp32 or bf16)")
        return _DTYPES[precision], "asked for"
    if device.type == "cuda":
        # the target device's own capability: bf16 that is only emulated (sm < 80) is slow
        if has_native_bf16(device):
            return torch.bfloat16, "native bf16 on this GPU"
        return torch.float16, "this GPU only emulates bf16"
    if model is None:
        return torch.float32, "no model to check"
    native, why = cpu_bf16_kernels()
    if not native:
        return torch.float32, f"no native bf16: {why}"
    unsupported = cpu_engine.unsupported_reason(model)
    if unsupported is not None:
        return torch.float32, unsupported
    return torch.bfloat16, f"{why}; activations and the layers carrying the image in float32"


def resolve_dtype(precision: str, device: torch.device, model: nn.Module | None = None) -> torch.dtype:
    return choose_precision(precision, device, model)[0]


def model_scale(model: nn.Module) -> int:
    """The upscaling factor: from the model's config, else measured on a small input."""
    config = getattr(model, "config", None) or {}
    if "scale" in config:
        return int(config["scale"])
    param = next(model.parameters())
    with torch.no_grad():
        out = _sr_output(model(torch.zeros(1, 3, 16, 16, device=param.device, dtype=param.dtype)))
    return out.shape[-1] // 16


def input_multiple(model: nn.Module) -> int:
    """Input sides must be multiples of this (BasicSR x2/x1 RRDBNets pixel-unshuffle their input)."""
    return int((getattr(model, "config", None) or {}).get("unshuffle", 1))


def _sr_output(result) -> torch.Tensor:
    return result[1] if isinstance(result, (tuple, list)) else result


def _outputs(result, with_gradient: bool) -> tuple[torch.Tensor, ...]:
    """(sr,) or (sr, gradient map) from a model's output: SPSRNet returns
    (grad_branch_map, sr, lr_grad), other networks the SR image."""
    if isinstance(result, (tuple, list)):
        return (result[1], result[0]) if with_gradient else (result[1],)
    if with_gradient:
        raise ValueError("this model has no gradient branch, so there is no gradient map to save")
    return (result,)


def bytes_per_input_pixel(model: nn.Module, dtype: torch.dtype, fp32_image_path: bool = False) -> float:
    """Rough peak activation bytes per low-resolution pixel of one forward (no autograd):
    the widest feature maps live at the output resolution (SPSRNet: two branches and a
    2*nf fusion block there); with the fp32 image path they are float32."""
    config = getattr(model, "config", None) or {}
    nf, gc, scale = config.get("nf", 64), config.get("gc", 32), config.get("scale", 4)
    element = torch.finfo(dtype).bits // 8
    hr_element = 4 if fp32_image_path else element
    hr_channels = (4 * nf + 4 * gc) if getattr(model, "arch", "") == "SPSRNet" else (2 * nf + gc)
    lr_channels = 4 * nf + 4 * gc
    return (hr_element * scale * scale * hr_channels + element * lr_channels) * 1.5


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_tile(model: nn.Module, device: torch.device, dtype: torch.dtype, batch: int,
              fp32_image_path: bool = False) -> int:
    """The largest tile (multiple of 8, at most 512) whose batch fits in
    half the free memory, by the estimate of bytes_per_input_pixel."""
    budget = free_memory_bytes(device) * 0.5
    pixels = budget / (bytes_per_input_pixel(model, dtype, fp32_image_path) * max(batch, 1))
    side = int(pixels ** 0.5) // TILE_MULTIPLE * TILE_MULTIPLE
    return max(TILE_MULTIPLE * 4, min(side, MAX_AUTO_TILE[device.type]))


def balanced_tile(length: int, max_tile: int, overlap: int, multiple: int = TILE_MULTIPLE) -> int:
    """The smallest tile (a multiple of `multiple`, at most `max_tile`) that covers `length`
    with as few tiles as `max_tile` would: less work wasted in tiles that overlap more than needed."""
    if length <= max_tile:
        return length
    count = math.ceil((length - overlap) / (max_tile - overlap))
    tile = math.ceil((length - overlap) / count) + overlap
    return min(max_tile, math.ceil(tile / multiple) * multiple)


def bicubic_upscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    """C x H x W -> C x sH x sW, bicubic, clamped to [0, 1]."""
    return F.interpolate(image[None], scale_factor=scale, mode="bicubic", align_corners=False)[0].clamp_(0, 1)


@dataclass
class UpscaleResult:
    picture: Picture
    gradient_map: np.ndarray | None  # H x W x 3 float32, the gradient branch's prediction
    seconds: float
    tiles: int
    fp32_image_path: bool = False  # the layers that carry the image ran in fp32 under autocast


class Upscaler:
    """Runs a super-resolution network on pictures of any size.

    `tile=None` picks the tile size from free memory, `tile=0` never tiles.
    `alpha="bicubic"` upscales the alpha channel bicubically, `"model"` with the network.
    `threads` (CPU): default, every CPU this process may use (cpus.available_cpus).
    `log(message)` reports out-of-memory retries (default: this module's logger)."""

    def __init__(self, model: nn.Module, device=None, precision: str = "auto", channels_last: bool = True,
                 tile: int | None = None, tile_overlap: int = 16, tile_batch: int | None = None,
                 compile: bool = False, alpha: str = "bicubic", threads: int | None = None,
                 log: Callable[[str], None] | None = None):
        if alpha not in ("bicubic", "model"):
            raise ValueError(f"alpha must be 'bicubic' or 'model', got {alpha!r}")
        if tile is not None and tile < 0:
            raise ValueError(f"tile must be >= 0, got {tile}")
        if tile_batch is not None and tile_batch < 1:
            raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
        if tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.device = resolve_device(device)
        self.dtype, self.precision_reason = choose_precision(precision, self.device, model)
        self.auto_precision = precision == "auto"
        if self.device.type == "cpu":
            torch.set_num_threads(threads or available_cpus())
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.eval().to(self.device).to(memory_format=self.memory_format)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.scale = model_scale(model)
        self.multiple = input_multiple(model)
        self.has_gradient_branch = getattr(model, "arch", None) == "SPSRNet"
        self.tile_batch = tile_batch or (4 if self.device.type == "cuda" else 1)
        self.auto_tile = tile is None  # auto: the largest tile that fits, balanced per image
        if tile is None:
            # per kind of run (False: autocast throughout, True: fp32 image path), lowered on out of memory
            self._max_tile = {precise: auto_tile(model, self.device, self.dtype, self.tile_batch, precise)
                              for precise in (False, True)}
        else:
            self._max_tile = {False: tile, True: tile}
        if tile and tile % self.multiple:
            raise ValueError(f"tile must be a multiple of {self.multiple} for this model, got {tile}")
        if tile and tile_overlap >= tile:
            raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile ({tile})")
        self.tile_overlap = tile_overlap
        self.alpha_mode = alpha
        self.compiled = compile
        self.log = log or logger.warning
        self._networks: dict[bool, nn.Module] = {}
        self.engine = self._engine_kind()

    @property
    def tile(self) -> int:
        """The largest tile of a run under the chosen precision (0: never tiled)."""
        return self._max_tile[False]

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    @property
    def reduced_precision(self) -> bool:
        return self.dtype != torch.float32

    def _engine_kind(self) -> str:
        """What runs the network: "cpu-bf16"/"cpu-fp32" (the CPU engine) or "module" (the
        model's forward, under autocast in reduced precision)."""
        if (self.device.type != "cpu" or self.compiled or cpu_engine.unsupported_reason(self.model)
                or not cpu_engine.native_dense_blocks()):  # e.g. SPSR_FAST_BACKEND=reference: as asked
            return "module"
        if self.dtype == torch.float32:
            return "cpu-fp32"
        # bf16 asked for on a CPU without bf16 dot products: oneDNN's autocast path, as before
        return "cpu-bf16" if self.dtype == torch.bfloat16 and cpu_bf16_kernels()[0] else "module"

    def _network(self, precise: bool) -> nn.Module:
        """The model to call: the CPU engine, the model as is or its view with the image path in
        fp32; compiled on request."""
        if precise not in self._networks and self.engine != "module":
            # auto keeps the image path in float32 GEMMs (the bound it is chosen by), and runs
            # 16-bit outputs in float32: bf16 products in the trunk leave them about 12 bits
            bf16 = self.engine == "cpu-bf16" and not (precise and self.auto_precision)
            self._networks[precise] = cpu_engine.CpuEngine(self.model, bf16=bf16,
                                                           fp32_image_path=precise or self.auto_precision)
        if precise not in self._networks:
            network = with_fp32_image_path(self.model) if precise else self.model
            if self.compiled:
                # On a GPU, "reduce-overhead" replays CUDA graphs: tiles (and padded batches) all have one shape
                mode = "reduce-overhead" if self.device.type == "cuda" else None
                network = torch.compile(network, dynamic=False, mode=mode)
            self._networks[precise] = network
        return self._networks[precise]

    def _autocast(self):
        if self.dtype == torch.float32 or self.engine != "module":  # the engine picks each layer's precision
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _forward(self, network: nn.Module, batch: torch.Tensor, with_gradient: bool,
                 precise: bool) -> tuple[torch.Tensor, ...]:
        x = batch.to(self.device, non_blocking=True).to(memory_format=self.memory_format)
        graphs = self.compiled and self.device.type == "cuda"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are copied out already
        exact = exact_fp32_convolutions(self.device) if precise else contextlib.nullcontext()
        with torch.inference_mode(), self._autocast(), exact:
            outs = _outputs(network(x), with_gradient)
            # CUDA graph outputs are overwritten by the next replay: fp32 ones are cloned (float() would not copy)
            return tuple(o.clone() if graphs and o.dtype == torch.float32 else o.float() for o in outs)

    def _tile_for(self, height: int, width: int, precise: bool) -> int:
        """The tile for one image: the largest allowed, balanced over the image when automatic."""
        tile = self._max_tile[precise] or max(height, width)
        if self.auto_tile:
            tile = balanced_tile(max(height, width), tile, min(self.tile_overlap, tile - 1),
                                 max(TILE_MULTIPLE, self.multiple))
        return max(self.multiple, tile)

    def _smaller_tile(self, tile: int) -> int | None:
        """Half of `tile` (a multiple of 8 and of the model's input multiple), not below
        MIN_TILE or twice the overlap; None when `tile` is already that small."""
        step = max(TILE_MULTIPLE, self.multiple)
        floor = max(MIN_TILE, math.ceil(2 * self.tile_overlap / step) * step)
        smaller = max(floor, tile // 2 // step * step)
        return smaller if smaller < tile else None

    def upscale_tensor(self, image: torch.Tensor, with_gradient: bool = False,
                       progress: Callable[[int, int], None] | None = None,
                       precise: bool = False) -> tuple[list[torch.Tensor], int]:
        """C=3 x H x W float in [0, 1] (CPU) -> ([sr, (gradient map)], number of tiles);
        outputs are float32 CPU tensors 3 x sH x sW (sr clamped to [0, 1]). `precise`: run the
        image path in fp32 (for 16-bit outputs), and float32 convolutions in IEEE fp32, not TF32.
        A tile that runs out of device memory is retried at half the size (logged), and the
        smaller tile is kept for later calls; TileOutOfMemoryError when even the floor fails."""
        network = self._network(precise and self.reduced_precision)
        _, height, width = image.shape
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            image = F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
        image = image.float()
        while True:
            tile = self._tile_for(image.shape[1], image.shape[2], precise)
            overlap = min(self.tile_overlap, tile - 1) if self._max_tile[precise] else 0
            try:
                # one tile per axis when the image fits; keep the shape static for compiled models
                outs = tiled_forward(lambda t: self._forward(network, t, with_gradient, precise), image, self.scale,
                                     tile, overlap, self.tile_batch, progress, pad_batch=self.compiled)
                break
            except torch.OutOfMemoryError:
                pass
            # here, not in the except block: its traceback would keep the failed tiles' tensors alive
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if not self._max_tile[precise]:
                raise TileOutOfMemoryError(f"out of memory on {self.device} with the whole image as one tile "
                                           "(tiling is off: --tile 0); allow tiling with --tile N")
            used = min(tile, max(image.shape[1:]))  # a tile never exceeds the image
            smaller = self._smaller_tile(used)
            if smaller is None:
                raise TileOutOfMemoryError(
                    f"out of memory on {self.device} even with tile {used}, the smallest tried "
                    f"(batch {self.tile_batch}); lower --tile-batch, free device memory or use --device cpu")
            self.log(f"out of memory on {self.device} with tile {used}: retrying with tile {smaller} "
                     "(kept for the images that follow)")
            self._max_tile[precise] = smaller
        tiles = len(tile_starts(image.shape[1], tile, overlap)) * len(tile_starts(image.shape[2], tile, overlap))
        s = self.scale
        outs = [o[:, :height * s, :width * s] for o in outs]
        outs[0] = outs[0].clamp_(0, 1)
        return outs, tiles

    def upscale_picture(self, picture: Picture, with_gradient: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        precise: bool | None = None) -> UpscaleResult:
        """Upscales colour (or gray, via RGB) pixels with the network and the alpha channel
        premultiplied: the network sees colour x alpha, so the invisible colour under
        transparent pixels cannot bleed into the edges, and the result is divided by the
        upscaled alpha again. `precise` (default: for 16-bit pictures): fp32 image path."""
        start = time.perf_counter()
        precise = picture.bits > 8 if precise is None else precise
        pixels = torch.from_numpy(picture.pixels).permute(2, 0, 1)
        if picture.gray:
            pixels = pixels.expand(3, -1, -1)
        alpha = None if picture.alpha is None else torch.from_numpy(picture.alpha)[None]
        if alpha is not None:
            pixels = pixels * alpha
        outs, tiles = self.upscale_tensor(pixels.contiguous(), with_gradient, progress, precise)
        sr = outs[0]
        hr_alpha = None
        if alpha is not None:
            if self.alpha_mode == "model":
                hr_alpha = self.upscale_tensor(alpha.expand(3, -1, -1).contiguous(), precise=precise)[0][0]
                hr_alpha = hr_alpha.mean(0, keepdim=True).clamp_(0, 1)
            else:
                hr_alpha = bicubic_upscale(alpha, self.scale)
            visible = hr_alpha > 0.5 / 255
            sr = torch.where(visible, sr / hr_alpha.clamp_min(0.5 / 255), torch.zeros_like(sr)).clamp_(0, 1)
        if picture.gray:
            sr = sr.mean(0, keepdim=True)
        result = with_pixels(picture, sr.permute(1, 2, 0).contiguous().numpy(),
                             None if hr_alpha is None else hr_alpha[0].numpy())
        gradient = outs[1].permute(1, 2, 0).contiguous().numpy() if with_gradient else None
        return UpscaleResult(result, gradient, time.perf_counter() - start, tiles,
                             precise and self.reduced_precision)
