"""Fused kernels vs their references, timed in one process.

    python bench/kernels.py [--op gradient_map] [--device cpu|cuda] [--json PATH] [--quick] [--no-compile]

Each op's cases live in bench/ops_<op>.py. Prints one progress line per case and pass on
stderr, then a table; --json writes the records
{op, backend, device, dtype, shape, pass, ms_median, peak_bytes, speedup_vs_reference, ...},
rewritten after every record (a run stopped by a time limit keeps what it measured).
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402,F401  (before torch)
import torch  # noqa: E402
from _harness import copy_bandwidth_gbps, print_table, run_case  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def available_ops() -> list[str]:
    names = [os.path.basename(p)[len("ops_"):-3] for p in glob.glob(os.path.join(BENCH_DIR, "ops_*.py"))]
    return sorted(names)


def main(argv=None) -> int:
    ops = available_ops()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=ops, action="append", help="op to run (repeatable; default: all)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--quick", action="store_true", help="fewer shapes (smoke runs)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile baselines")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")

    print(f"# torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else f" ({torch.get_num_threads()} threads)"))
    copy_gbps = copy_bandwidth_gbps(args.device)
    if copy_gbps:
        print(f"# measured copy bandwidth: {copy_gbps:.0f} GB/s")
    records = []
    started = time.perf_counter()
    selected = args.op or ops

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - started:4.0f}s] {line}", file=sys.stderr, flush=True)

    def save(record) -> None:
        records.append(record)
        if args.json:
            with open(args.json, "w") as f:
                json.dump([r.as_json() for r in records], f, indent=1)

    if args.json:
        with open(args.json, "w") as f:
            f.write("[]\n")
    for number, op in enumerate(selected, 1):
        progress(f"op {number}/{len(selected)}: {op} (preparing its cases)")
        module = importlib.import_module(f"ops_{op}")
        for case in module.cases(args.device, quick=args.quick, compile=not args.no_compile):
            run_case(case, args.device, copy_gbps, measure_memory=not args.no_memory, progress=progress,
                     on_record=save)
    progress(f"done: {len(records)} records")
    extra_columns = sorted({key for r in records for key in r.extra})
    print_table(records, tuple(extra_columns))
    if args.json:
        print(f"# wrote {len(records)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
