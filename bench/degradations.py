"""Real-world degradation throughput: the batched torch pipeline vs a per-image numpy/SciPy/
Pillow implementation of the same pipeline, same run.

    python bench/degradations.py [--batch 16] [--size 256] [--threads 2 [1 ...]] [--steps 6] [--rounds 3] [--json PATH]

Both make LR training pairs from the same HR batch (photo crops from scikit-image) with the same
draws (spsr_fast.degradations.pipeline.draw from (seed, step)): unsharp mask, the two stages,
final sinc + JPEG. The torch pipeline runs the batch at once (grouped-convolution blur, JPEG in
torch) on the CPU with each of --threads intra-op thread counts (a row each; on a busy machine
two OpenMP threads can wait on each other, so `--threads 2 1` shows both), and on the GPU when
there is one; the
reference runs one image at a time (spsr_fast/degradations/reference.py: SciPy correlate,
numpy resizing, Pillow's JPEG). The steps' draws differ (resize factors change the work), so
both run the same steps; the two alternate in rounds so machine noise hits both alike.
Records: {impl, device, threads, batch, size, ms_per_batch (median over rounds of the mean over
steps), pairs_per_s}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# The reference is single-threaded by design (one image at a time); OpenBLAS' own threads in its
# resizing GEMMs only oversubscribe a busy machine (3x slower here). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spsr_fast.degradations import reference as R  # noqa: E402
from spsr_fast.degradations.config import RealWorldConfig  # noqa: E402
from spsr_fast.degradations.filters import usm_sharpen  # noqa: E402
from spsr_fast.degradations.pipeline import apply, draw  # noqa: E402
from spsr_fast.degradations.seeding import training_generators  # noqa: E402


def photo_batch(n: int, size: int) -> np.ndarray:
    """n size x size crops of scikit-image's colour photos, float64 in [0, 1] (fixed)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    crops = []
    for k in range(n):
        img = photos[k % len(photos)]
        top, left = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crops.append(img[top:top + size, left:left + size])
    return np.stack(crops).astype(np.float64) / 255


def run_torch(hr: torch.Tensor, cfg: RealWorldConfig, steps: list[int], threads: int | None = None) -> float:
    """Mean ms per batch over the steps (draws, unsharp mask and the pipeline), with `threads`
    intra-op threads when given."""
    if threads is not None:
        torch.set_num_threads(threads)
    total = 0.0
    for step in steps:
        if hr.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        params_gen, fields_gen = training_generators(hr.device, 0, step, 0)
        apply(usm_sharpen(hr), draw(cfg, hr.shape[0], params_gen), 4, fields_gen)
        if hr.is_cuda:
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
    return total / len(steps) * 1e3


def run_reference(imgs: np.ndarray, cfg: RealWorldConfig, steps: list[int]) -> float:
    total = 0.0
    for step in steps:
        t0 = time.perf_counter()
        params_gen, _ = training_generators("cpu", 0, step, 0)
        d = draw(cfg, len(imgs), params_gen)
        rng = np.random.default_rng(step)
        for i, img in enumerate(imgs):
            R.degrade(R.usm_sharpen(img), d, i, 4, rng)
        total += time.perf_counter() - t0
    return total / len(steps) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="HR size (LR is size / 4)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="intra-op threads of the torch CPU pipeline, one row per count (default 2)")
    parser.add_argument("--steps", type=int, default=6, help="different draws per timing round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    cfg = RealWorldConfig()
    imgs = photo_batch(args.batch, args.size)
    hr = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().contiguous()
    steps = list(range(args.steps))
    if any(t < 1 for t in args.threads):
        parser.error(f"--threads: counts must be >= 1, got {args.threads}")
    variants, threads_of = {}, {}
    for t in args.threads:
        name = f"torch batched (cpu, {t}t)" if len(args.threads) > 1 else "torch batched (cpu)"
        variants[name], threads_of[name] = (lambda t=t: run_torch(hr, cfg, steps, t)), t
    variants["numpy/Pillow per image"] = lambda: run_reference(imgs, cfg, steps)
    threads_of["numpy/Pillow per image"] = 1
    if torch.cuda.is_available():
        hr_gpu = hr.cuda()
        variants["torch batched (cuda)"] = lambda: run_torch(hr_gpu, cfg, steps)
        threads_of["torch batched (cuda)"] = None
    for fn in variants.values():   # warm-up: allocator, kernel caches, first-call imports
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            samples[name].append(fn())
    records = []
    for name, ms in samples.items():
        median = statistics.median(ms)
        device = "cuda" if "cuda" in name else "cpu"
        records.append({"impl": name, "device": device,
                        "threads": threads_of[name],
                        "batch": args.batch, "size": args.size, "ms_per_batch": round(median, 1),
                        "pairs_per_s": round(args.batch / median * 1e3, 1)})
    base = next(r for r in records if r["impl"].startswith("numpy"))
    print(f"{'implementation':<26} {'device':<6} {'threads':>7} {'ms / batch':>11} {'pairs / s':>10} "
          f"{'vs per-image':>13}")
    for r in records:
        print(f"{r['impl']:<26} {r['device']:<6} {str(r['threads'] or '-'):>7} {r['ms_per_batch']:>11.1f} "
              f"{r['pairs_per_s']:>10.1f} {r['pairs_per_s'] / base['pairs_per_s']:>12.2f}x")
    print(f"batch {args.batch} of {args.size}x{args.size} HR -> {args.size // 4}x{args.size // 4} LR, "
          f"{args.steps} draws x {args.rounds} rounds (median of round means)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
