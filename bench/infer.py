"""End-to-end x4 inference throughput: the runner vs the reference formulation, same run.

    python bench/infer.py [--device cpu|cuda] [--json PATH] [--model PATH|NAME] [--size N] [--memory-size N]

`eager`: the reference formulation (fp32, NCHW, reference ops, the whole image in one
forward). `fused`: the inference runner (fused ops, channels_last, bf16 autocast on a
GPU, fp32 on the CPU, its automatic tile size). Both run the same network on the same
input. Model: on the CPU the bundled default model (random weights of the same shape
when none is bundled: speed does not depend on the weights); on a GPU the full SPSRNet
(nb=23) unless --model is given. A last record gives the peak memory of the runner on a
--memory-size square input with tiling (2048 on a GPU).

Records: {op: "infer", backend, device, dtype, shape, pass, ms_median, peak_bytes,
speedup_vs_reference, megapixels_per_s (output megapixels per second)}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402,F401  (before torch)
import torch  # noqa: E402
from _harness import Record, peak_bytes, print_table, time_ms  # noqa: E402


def default_model(device: str, model_arg: str | None):
    import spsr_fast
    from spsr_fast.models import SPSRNet
    from spsr_fast.weights import DEFAULT_MODEL, bundled_models, resolve_model

    if model_arg:
        return spsr_fast.load_model(resolve_model(model_arg)), model_arg
    if device == "cuda":
        return SPSRNet(nb=23), "SPSRNet nb=23 (random weights)"
    if DEFAULT_MODEL in bundled_models():
        return spsr_fast.load_model(bundled_models()[DEFAULT_MODEL]), DEFAULT_MODEL
    from spsr_fast.models import RRDBNet

    return RRDBNet(nf=32, nb=4, gc=16), "RRDBNet nf=32 nb=4 (random weights; no bundled model)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", default=None, help="write the records to this file")
    parser.add_argument("--model", default=None, help="checkpoint or bundled model name")
    parser.add_argument("--size", type=int, default=None, help="input side (default 128 CPU, 256 GPU)")
    parser.add_argument("--memory-size", type=int, default=None,
                        help="input side of the tiled peak-memory run (default 2048 GPU, 512 CPU; 0: skip)")
    args = parser.parse_args()

    import spsr_fast.ops
    from spsr_fast.inference.runner import Upscaler

    device = args.device
    model, model_name = default_model(device, args.model)
    model = model.eval()
    size = args.size or (256 if device == "cuda" else 128)
    memory_size = args.memory_size if args.memory_size is not None else (2048 if device == "cuda" else 512)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))

    reference = copy.deepcopy(model).to(device)  # NCHW fp32; the runner converts its own copy
    batch = image[None].to(device)

    def eager():
        with torch.inference_mode(), spsr_fast.ops.backend("reference"):
            out = reference(batch)
        return out[1] if isinstance(out, tuple) else out

    runner = Upscaler(model, device=device)
    scale = runner.scale
    fused = lambda: runner.upscale_tensor(image)  # noqa: E731
    timed = {}
    for name, fn, dtype in (("eager", eager, "float32"), ("fused", fused, runner.dtype_name)):
        timed[name] = (time_ms(fn, device, min_time_s=1.0, warmup=1), peak_bytes(fn, device), dtype)
    ms_eager = timed["eager"][0]
    out_mp = (size * scale) ** 2 / 1e6
    records = []
    for name, (ms, mem, dtype) in timed.items():
        records.append(Record("infer", name, device, dtype, f"1x3x{size}x{size}", "fwd", ms, mem,
                              ms_eager / ms, {"megapixels_per_s": round(out_mp / (ms / 1e3), 3),
                                              "model": model_name}))
    if memory_size:
        big = torch.rand(3, memory_size, memory_size, generator=torch.Generator().manual_seed(1))
        tiled = lambda: runner.upscale_tensor(big)  # noqa: E731
        import time

        start = time.perf_counter()
        mem = peak_bytes(tiled, device)
        ms = (time.perf_counter() - start) * 1e3
        records.append(Record("infer", "fused", device, runner.dtype_name, f"1x3x{memory_size}x{memory_size}",
                              "fwd (tiled, peak memory)", ms, mem, None,
                              {"megapixels_per_s": round((memory_size * scale) ** 2 / 1e6 / (ms / 1e3), 3),
                               "tile": runner.tile, "tile_batch": runner.tile_batch, "model": model_name}))
    print(f"model: {model_name}; x{scale}; device {device}")
    print_table(records, ("megapixels_per_s",))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_json() for r in records], f, indent=2)


if __name__ == "__main__":
    main()
