"""The CPU inference engine of RRDBNet and SPSRNet: weights packed once per model, bf16 dot
products where the CPU has them (docs/ARCHITECTURE.md 5).

Two modes, both inference only (no autograd):

- float32 (`bf16=False`): the generator's forward written out below (the dense blocks as one
  wavefront where the CPU has the AVX-512 transforms: same arithmetic), every RRDB run by
  spsr_fast::rrdb_packed (the trunk's: spsr_fast::rrdb_trunk_packed, all in one call) on
  Winograd weights transformed once per model (where
  spsr_fast::dense_blocks transforms, and first copies, all of them on every call: the RRDBs are
  bit for bit the model's), the high-resolution tail by spsr_fast::conv_chain with float32
  GEMMs, the other 3x3 convs of at least 8 channels by spsr_fast::conv3x3_packed with float32
  GEMMs, and the narrow ones (conv_first: RGB) by oneDNN as in the model. The tail is where
  the model's forward spent most of its time (bundled model, 128x128 input, 2 threads: oneDNN convs and nearest upsampling at 256^2 and
  512^2 about 65 ms of 100; conv_chain 27 ms). Float32 throughout, but not the model's bits: the
  Winograd tail sums in another order, and measured against float64 it is the closer of the two
  (bundled model, random input: max error 1.6e-6, the model's forward 2.4e-6).
- bf16 (`bf16=True`): the generator's forward written out here, every 3x3 conv of at least 8
  input and output channels run by Winograd convolutions whose per-position GEMMs take bf16
  factors on the CPU's bf16 dot-product instructions (csrc/cpu/winograd_packed.cpp): F(4x4,
  3x3) in the RRDBs (36 GEMMs per 4x4 output tile), F(2x2, 3x3) elsewhere.
  Activations, the Winograd transforms, bias, LeakyReLU and the residuals stay float32: only
  the factors of the products are rounded, no activation is, and each RRDB's skip carries
  its input exactly. Nearest x2 upsampling is read inside the conv that follows it;
  LeakyReLU and residual adds are conv epilogues. The high-resolution tails (the upsampling
  convs, conv_hr and what follows up to conv_last) run as one chain tile by tile of the
  output (spsr_fast::conv_chain), so their full-size intermediate images are never written.
  conv_last (3 output channels: the image) runs float32 GEMMs in that chain; the convs that
  read the 3 RGB channels (conv_first, grad_conv_first) and the 1x1 grad_conv_out are float32
  oneDNN convolutions: too narrow for the GEMMs.
  `fp32_image_path=True` runs the convs of the image path (image_path.IMAGE_PATHS: the
  upsampling convs, conv_hr and what follows, which carry the image itself) with float32
  GEMMs. On the bundled model and a photograph that takes the error against float32 from a
  mean of 2.2e-3 (max 1.1e-2; bf16 autocast: 2.4e-3, 1.3e-2) to 3.2e-5 (max 7.7e-4): it is
  what `--precision auto` runs, and what bf16 runs for 16-bit outputs. The image path's RRDBs
  (SPSRNet's fusion block) stay bf16 either way: their skip already carries the image
  exactly, and float32 GEMMs there changed the error by less than 1 %.

Packed weights live in a per-model cache (`packs_of`), keyed on every parameter's identity,
storage and version counter: computed once per model and precision, recomputed after the
weights change (an optimizer step, load_state_dict, a replaced parameter), never per tile.
"""
from __future__ import annotations

import os
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .. import _extension
from ..models.blocks import LRELU_SLOPE, RESIDUAL_SCALE
from .image_path import image_path_children

ARCHS = ("RRDBNet", "SPSRNet")
MIN_PACKED_CHANNELS = 8  # narrower 3x3 convs (the RGB ones) stay float32 convolutions


def packed_ops_available() -> bool:
    return _extension.has_kernel("rrdb_packed", "CPU") and _extension.has_kernel("conv3x3_packed", "CPU")


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the engine cannot run `model` (None when it can)."""
    if not packed_ops_available():
        return "the compiled extension has no packed CPU kernels (rebuild spsr-fast)"
    arch = getattr(model, "arch", None)
    if arch not in ARCHS or image_path_children(model) is None:
        return f"the CPU engine runs {' and '.join(ARCHS)}, not {arch or type(model).__name__}"
    if "forward" in vars(model):  # the engine computes the class's forward, not a replacement
        return f"this {arch}'s forward was replaced"
    return None


def native_dense_blocks() -> bool:
    """Whether the dense-block op's backend on the CPU is the native one (not forced to the
    reference by SPSR_FAST_BACKEND or spsr_fast.ops.backend)."""
    from ..ops.dense_block import OPS

    return OPS.choose("cpu") == "native"


def fused_fp32_blocks_enabled() -> bool:
    """Whether the model's own forward would run its RRDBs by the native CPU Winograd kernel;
    otherwise (reference backend, SPSR_FAST_CPU_CONV=direct) the float32 engine runs the model as is."""
    return (native_dense_blocks() and os.environ.get("SPSR_FAST_CPU_CONV", "winograd") != "direct"
            and _extension.has_kernel("conv3x3_winograd", "CPU"))


def winograd_conv(conv: nn.Module) -> bool:
    """A 3x3, stride 1, padding 1 conv (what the Winograd kernels compute)."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def packable(conv: nn.Module) -> bool:
    """A Winograd conv wide enough for the GEMMs on both sides."""
    return (winograd_conv(conv) and conv.in_channels >= MIN_PACKED_CHANNELS
            and conv.out_channels >= MIN_PACKED_CHANNELS)


def chain_tile(channels: int) -> int:
    """Output tile of conv_chain: its intermediate regions (two of about tile^2 x channels
    floats) stay within a core's L2 (64 x 64 at 32 channels)."""
    return max(16, int(64 * (32 / max(channels, 1)) ** 0.5) // 2 * 2)


# ---- per-model cache of packed weights ------------------------------------------------

def _signature(model: nn.Module) -> tuple:
    """Changes when any parameter is replaced, moved to other storage or written in place."""
    items = []
    for p in model.parameters():
        try:
            version = p._version
        except RuntimeError:  # inference tensors keep no version counter
            version = -1
        items.append((id(p), p.data_ptr(), version))
    return tuple(items)


class ModelPacks:
    """Packed weights of one model: {(module name, bf16): packs}, dropped when the weights change."""

    def __init__(self):
        self.signature: tuple | None = None
        self.entries: dict[tuple[str, bool], object] = {}
        self.builds = 0  # how many packs were computed (tests read it)

    def refresh(self, model: nn.Module) -> None:
        signature = _signature(model)
        if signature != self.signature:
            self.entries.clear()
            self.signature = signature

    def get(self, name: str, bf16: bool, make):
        key = (name, bf16)
        if key not in self.entries:
            with torch.inference_mode():
                self.entries[key] = make()
            self.builds += 1
        return self.entries[key]


_PACKS: weakref.WeakKeyDictionary[nn.Module, ModelPacks] = weakref.WeakKeyDictionary()


def packs_of(model: nn.Module) -> ModelPacks:
    """The model's pack cache, checked against its current weights."""
    packs = _PACKS.get(model)
    if packs is None:
        packs = _PACKS[model] = ModelPacks()
    packs.refresh(model)
    return packs


def _pack_conv(conv: nn.Conv2d, bf16: bool, output_tile: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(conv.out_channels)
    return torch.ops.spsr_fast.winograd_pack(weight, bf16, output_tile), bias.float().contiguous()


# bf16 RRDBs run Winograd F(4x4, 3x3): 36 products per 16 outputs instead of F(2x2)'s 64, at
# about F(2x2)'s error with these bf16 factors (csrc/cpu/winograd_packed.cpp); float32 RRDBs
# stay F(2x2), bit for bit the model's own forward.
BF16_RRDB_OUTPUT_TILE = 4
# The float32 convs of the high-resolution tails (conv_chain) run F(4x4, 3x3) as well (the
# tails are not the model's bits either way): bundled model, 2 threads, the tail 24.5 -> 18.1 ms
# at 128x128 and 6.1 -> 4.2 ms at 64x64; on a photograph the fp32 engine's error against
# float64 goes from max 1.2e-6 / mean 9.2e-8 to 1.4e-6 / 1.0e-7, still below the model's own
# float32 forward (2.4e-6 / 1.9e-7). The float32 RRDBs stay F(2x2): bit for bit the model's.
FP32_CHAIN_OUTPUT_TILE = 4


def _pack_rrdb(rrdb: nn.Module, bf16: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    convs = [getattr(rdb, f"conv{k}") for rdb in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3) for k in range(1, 6)]
    tile = BF16_RRDB_OUTPUT_TILE if bf16 else 2
    packed = [_pack_conv(conv, bf16, tile) for conv in convs]
    return [w for w, _ in packed], [b for _, b in packed]


# ---- the engine -----------------------------------------------------------------------

class CpuEngine:
    """Runs `model` (an RRDBNet or SPSRNet in float32 on the CPU) like `model(x)`; see the
    module docstring. `bf16`: bf16 GEMMs; `fp32_image_path`: the image path in float32."""

    def __init__(self, model: nn.Module, bf16: bool, fp32_image_path: bool = False):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"CpuEngine: {reason}")
        self.model = model
        self.bf16 = bf16
        self.fp32_image_path = fp32_image_path
        self.image_path = set(image_path_children(model))
        self._packs: ModelPacks | None = None

    def __call__(self, x: torch.Tensor):
        if not self.bf16 and not fused_fp32_blocks_enabled():
            return self.model(x)  # reference backend or oneDNN asked for: nothing to reproduce
        if x.device.type != "cpu" or x.dtype != torch.float32:
            raise ValueError(f"CpuEngine: expected a float32 CPU input, got {x.dtype} on {x.device}")
        self._packs = packs_of(self.model)
        with torch.no_grad():
            if self.model.arch == "RRDBNet":
                return self._rrdbnet(x)
            return self._spsrnet(x)

    # -- building blocks --

    def _rrdb_packs(self, name: str, bf16: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self._packs.get(name, bf16, lambda: _pack_rrdb(self.model.get_submodule(name), bf16))

    def rrdb(self, name: str, x: torch.Tensor, bf16: bool) -> torch.Tensor:
        packs, biases = self._rrdb_packs(name, bf16)
        return torch.ops.spsr_fast.rrdb_packed(x.float(), packs, biases, RESIDUAL_SCALE, True)

    def _trunk(self, x: torch.Tensor, first: int, stop: int) -> torch.Tensor:
        """RRDBs body.first .. body.(stop - 1) in one spsr_fast::rrdb_trunk_packed call: scratch
        allocated once for all of them, and in bf16 one wavefront through every dense block."""
        if stop <= first:
            return x
        packs, biases = [], []
        for i in range(first, stop):
            p, b = self._rrdb_packs(f"body.{i}", self.bf16)
            packs += p
            biases += b
        return torch.ops.spsr_fast.rrdb_trunk_packed(x.float(), packs, biases, RESIDUAL_SCALE)

    def _in_image_path(self, name: str) -> bool:
        return name.split(".")[0] in self.image_path

    def _block(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The RRDB `name` (body.3, grad_blocks.0, fusion_block), with bf16 GEMMs in bf16 mode."""
        return self.rrdb(name, x, bf16=self.bf16)

    def _bf16_gemms(self, name: str, conv: nn.Module) -> bool:
        """Whether conv `name` multiplies bf16 factors: in bf16 mode, off the image path under
        fp32_image_path, and never for fewer than 8 output channels (conv_last: the image)."""
        return (self.bf16 and not (self.fp32_image_path and self._in_image_path(name))
                and conv.out_channels >= MIN_PACKED_CHANNELS)

    def _conv(self, name: str, x: torch.Tensor, epilogue: str = "bias", upsample: bool = False,
              residual: torch.Tensor | None = None) -> torch.Tensor:
        """Conv `name` (of the model's children) on x (nearest x2 first when `upsample`), then
        `epilogue`: bias (none), lrelu, or residual (`residual` + conv). Winograd, GEMM precision
        as `_bf16_gemms` says; narrow convs as the model runs them."""
        conv = self.model.get_submodule(name)
        # float32 too: measured faster than oneDNN (conv_body, bundled model: 0.13 against 0.20 ms at 64^2)
        if packable(conv):
            bf16 = self._bf16_gemms(name, conv)
            pack, bias = self._packs.get(name, bf16, lambda: _pack_conv(conv, bf16))
            return torch.ops.spsr_fast.conv3x3_packed(x, pack, bias, epilogue, 1.0, residual, None, upsample)
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        y = conv(x)
        if epilogue == "lrelu":
            return F.leaky_relu(y, LRELU_SLOPE, inplace=True)
        if epilogue == "residual":
            return y.add_(residual)
        return y

    def _chain(self, x: torch.Tensor, convs: list[tuple[str, bool, bool]]) -> torch.Tensor:
        """Convs (name, upsample first, LeakyReLU after) one after the other by spsr_fast::conv_chain,
        tile by tile of the output: the high-resolution images between them never go to memory.
        bf16 GEMMs unless on the image path under fp32_image_path, and for the convs with fewer
        than 8 output channels (conv_last: the image itself) float32 ones."""
        if not all(winograd_conv(self.model.get_submodule(name)) and
                   self.model.get_submodule(name).in_channels >= MIN_PACKED_CHANNELS for name, _, _ in convs):
            for name, upsample, leaky in convs:  # a conv the kernels do not compute: one by one
                x = self._conv(name, x, "lrelu" if leaky else "bias", upsample=upsample)
            return x
        packs, biases = [], []
        for name, _, _ in convs:
            conv = self.model.get_submodule(name)
            bf16 = self._bf16_gemms(name, conv)
            tile = 2 if bf16 else FP32_CHAIN_OUTPUT_TILE
            pack, bias = self._packs.get(f"{name}@chain", bf16,
                                         lambda conv=conv, bf16=bf16, tile=tile: _pack_conv(conv, bf16, tile))
            packs.append(pack)
            biases.append(bias)
        return torch.ops.spsr_fast.conv_chain(x, packs, biases, [u for _, u, _ in convs], [r for _, _, r in convs],
                                              chain_tile(x.shape[1]))

    def _upsampling_tail(self, prefix: str, x: torch.Tensor, last: list[tuple[str, bool, bool]]) -> torch.Tensor:
        steps = [(f"{prefix}{step}", True, True) for step in range(1, self.model.steps + 1)]
        return self._chain(x, steps + last)

    # -- the generators (models/rrdbnet.py, models/spsrnet.py) --

    def _rrdbnet(self, x: torch.Tensor) -> torch.Tensor:
        net = self.model
        if net.unshuffle > 1:
            x = F.pixel_unshuffle(x, net.unshuffle)
        feat = self._conv("conv_first", x)
        body = self._trunk(feat, 0, len(net.body))
        feat = self._conv("conv_body", body, "residual", residual=feat)
        return self._upsampling_tail("conv_up", feat, [("conv_hr", False, True), ("conv_last", False, False)])

    def _spsrnet(self, x: torch.Tensor):
        from ..ops import gradient_map

        net = self.model
        lr_grad = gradient_map(x, padding=1)
        feat = self._conv("conv_first", x)
        body, tapped, done = feat, [], 0
        for tap in (*net.taps, len(net.body)):
            body = self._trunk(body, done, tap)
            tapped.append(body)
            done = tap
        sr_feat = self._conv("conv_body", body, "residual", residual=feat)
        sr_feat = self._upsampling_tail("conv_up", sr_feat, [("conv_hr", False, True), ("conv_hr_out", False, False)])

        grad_first = self._conv("grad_conv_first", lr_grad)
        branch = grad_first
        for k in range(len(net.grad_blocks)):
            merged = self._block(f"grad_blocks.{k}", torch.cat((branch, tapped[k]), 1))
            branch = self._conv(f"grad_fuse.{k}", merged)
        branch = self._conv("grad_conv_body", branch, "residual", residual=grad_first)
        branch = self._upsampling_tail("grad_conv_up", branch,
                                       [("grad_conv_hr", False, True), ("grad_conv_hr_out", False, False)])
        grad_branch_map = net.grad_conv_out(branch)

        fused = self._block("fusion_block", torch.cat((branch, sr_feat), 1))
        sr = self._chain(fused, [("fusion_conv", False, False), ("fusion_conv_hr", False, True),
                                 ("conv_last", False, False)])
        return grad_branch_map, sr, lr_grad
