"""SPSR-G training-step throughput: the fused formulation vs the reference one, same run.

    python bench/train_step.py [--device cpu|cuda] [--json PATH] [--rounds R] [--steps N] [--batch B] [--threads T]

reference ("eager"): fp32, NCHW, reference ops (SPSR_FAST_BACKEND=reference), torch.cat dense blocks.
fused:  channels_last, AMP (bf16 on GPU; fp32 on CPU), the fused ops' default backends.
CPU runs the tiny model of configs/tiny_cpu.yaml (batch 8, HR 128, no perceptual loss, as
there); GPU the paper model (nf 64, nb 23, batch 16, HR 128, all SPSR-G losses). Inputs are synthetic (this times the step, not the loader);
the perceptual VGG19 runs with random weights (same cost as the real ones). The two variants
alternate in rounds so machine noise hits both alike. Records follow bench/kernels.py
(op `train_step`, backend `eager` or `fused`) plus it_per_s.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402,F401  (before torch)
import torch  # noqa: E402
from _harness import Record, peak_bytes, print_table, synchronize  # noqa: E402

from spsr_fast import ops  # noqa: E402
from spsr_fast.train.config import Config  # noqa: E402
from spsr_fast.train.distributed import DistInfo  # noqa: E402
from spsr_fast.train.runner import StepRunner  # noqa: E402
from spsr_fast.train.stages import STAGES  # noqa: E402

MODELS = {  # device -> (nf, nb, gc, discriminator_nf, batch, perceptual_weight)
    "cpu": (16, 2, 8, 8, 8, 0.0),      # configs/tiny_cpu.yaml (no VGG19 on CPU, as there)
    "cuda": (64, 23, 32, 64, 16, 1.0),  # the paper's SPSR-G
}


class Variant:
    def __init__(self, name: str, device: torch.device, amp: str, channels_last: bool, backend: str | None,
                 batch: int, hr: int, nf: int, nb: int, gc: int, dnf: int, perceptual: float):
        self.name, self.device, self.backend = name, device, backend
        cfg = Config()
        cfg.run.stage, cfg.model.arch = "spsr_g", "spsrnet"
        cfg.model.nf, cfg.model.nb, cfg.model.gc, cfg.model.discriminator_nf = nf, nb, gc, dnf
        cfg.data.hr_size, cfg.losses.vgg_weights = hr, "random"
        cfg.losses.perceptual_weight = perceptual
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        torch.manual_seed(0)
        self.stage = STAGES["spsr_g"](cfg, device, self.memory_format)
        self.runner = StepRunner(device, amp, 0.0, DistInfo())
        g = torch.Generator().manual_seed(1)
        self.lr = torch.rand(batch, 3, hr // 4, hr // 4, generator=g).to(device).contiguous(memory_format=self.memory_format)
        self.hr = torch.rand(batch, 3, hr, hr, generator=g).to(device).contiguous(memory_format=self.memory_format)
        self.step_index = 10 ** 6  # past any fusion-only phase
        self.samples: list[float] = []

    def step(self) -> None:
        with ops.backend(self.backend):
            self.stage.train_step(self.lr, self.hr, self.step_index, self.runner)
            self.runner.end_iteration()

    def timed(self, reps: int) -> None:
        for _ in range(reps):
            synchronize(self.device.type)
            t0 = time.perf_counter()
            self.step()
            synchronize(self.device.type)
            self.samples.append((time.perf_counter() - t0) * 1e3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--rounds", type=int, default=4, help="alternating timing rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--batch", type=int, help="override the batch size")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for CPU runs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    device = torch.device(args.device)
    nf, nb, gc_, dnf, batch, perceptual = MODELS[args.device]
    batch = args.batch or batch
    hr = 128
    fused_amp = "bf16" if args.device == "cuda" else "fp32"
    print(f"# torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else f" ({torch.get_num_threads()} threads)"))
    print(f"# SPSR-G step, SPSRNet nf {nf} nb {nb} gc {gc_}, D nf {dnf}, batch {batch}, HR {hr}, "
          f"perceptual weight {perceptual}")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True

    variants = {
        "eager": dict(amp="fp32", channels_last=False, backend="reference"),
        "fused": dict(amp=fused_amp, channels_last=True, backend=None),
    }
    records, built = [], {}
    for name, kw in variants.items():
        built[name] = Variant(name, device, batch=batch, hr=hr, nf=nf, nb=nb, gc=gc_, dnf=dnf,
                              perceptual=perceptual, **kw)
        for _ in range(2):
            built[name].step()  # warm-up (cudnn autotune, allocator)
    peaks = {}
    for name, v in built.items():
        peaks[name] = 0 if args.no_memory else peak_bytes(v.step, args.device)
    for _ in range(args.rounds):
        for v in built.values():
            v.timed(args.steps)
    ref_ms = statistics.median(built["eager"].samples)
    for name, v in built.items():
        ms = statistics.median(v.samples)
        dtype = variants[name]["amp"]
        records.append(Record(
            op="train_step", backend=name, device=args.device, dtype=dtype,
            shape=f"B{batch}x3x{hr // 4}x{hr // 4}->x4 nf{nf} nb{nb}", pass_="spsr_g",
            ms_median=ms, peak_bytes=peaks[name], speedup_vs_reference=ref_ms / ms,
            extra={"it_per_s": round(1000.0 / ms, 3),
                   "memory_vs_reference": round(peaks[name] / peaks["eager"], 3) if peaks["eager"] else None,
                   "channels_last": variants[name]["channels_last"],
                   "ops_backend": variants[name]["backend"] or "default"}))
    print_table(records, ("it_per_s", "memory_vs_reference"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_json() for r in records], f, indent=1)
        print(f"# wrote {len(records)} records to {args.json}")
    del built
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
