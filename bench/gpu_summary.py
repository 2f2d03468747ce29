"""The one summary table of bench/gpu_check.sh, from the JSON files it left in OUT_DIR.

    python bench/gpu_summary.py OUT_DIR

Reads steps.jsonl (each step: status, seconds, time box), env.json, tests.jsonl (one line per
test), kernels.json and models.json (bench/kernels.py records), train_step.json
(bench/train_step.py records); any of them may be missing or partial (a step that ran out of
time). Prints one table and writes OUT_DIR/summary.json with the same rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

COLUMNS = ("section", "item", "result", "x ref", "x compiled", "throughput")


def _load_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(f"gpu_summary: {path} is not valid JSON ({error})") from None


def _load_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    # the last line of a step killed mid-write
                    print(f"# {os.path.basename(path)} line {number}: incomplete, ignored", file=sys.stderr)
    return rows


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}x"


def _throughput(record: dict) -> str:
    parts = []
    if "%copy_bw" in record:
        parts.append(f"{record['%copy_bw']:.0f}% of copy bw ({record.get('GB/s', 0):.0f} GB/s)")
    if "TFLOP/s" in record:
        parts.append(f"{record['TFLOP/s']:.1f} TFLOP/s")
    if "it_per_s" in record:
        parts.append(f"{record['it_per_s']:.2f} it/s")
    if "megapixels_per_s" in record:
        parts.append(f"{record['megapixels_per_s']:.1f} MP/s")
    if record.get("peak_bytes"):
        parts.append(f"peak {record['peak_bytes'] / 2 ** 20:.0f} MiB")
    return ", ".join(parts)


def _benchmark_rows(section: str, records) -> list[dict]:
    rows = []
    for r in records or []:
        rows.append({"section": section,
                     "item": f"{r['op']} {r['shape']} {r['dtype']} {r['pass']} [{r['backend']}]",
                     "result": f"{r['ms_median']:.3f} ms",
                     "x ref": _ratio(r.get("speedup_vs_reference")),
                     "x compiled": _ratio(r.get("speedup_vs_compiled")),
                     "throughput": _throughput(r)})
    return rows


def summary_rows(out_dir: str) -> list[dict]:
    rows = []
    env = _load_json(os.path.join(out_dir, "env.json")) or {}
    if env:
        rows.append({"section": "machine", "item": env.get("gpu", "?"),
                     "result": f"torch {env.get('torch', '?')}, triton {env.get('triton', '?')}",
                     "throughput": f"copy {env['copy_gbps']:.0f} GB/s" if env.get("copy_gbps") else ""})
    for step in _load_jsonl(os.path.join(out_dir, "steps.jsonl")):
        status = step["status"] if step["status"] != "failed" else f"failed (exit {step.get('rc')})"
        rows.append({"section": "step", "item": step["step"],
                     "result": f"{status}, {step['seconds']:.0f} s of {step['timeout']} s"})
    tests = _load_jsonl(os.path.join(out_dir, "tests.jsonl"))
    if tests:
        counts = Counter(t["outcome"] for t in tests)
        rows.append({"section": "tests", "item": "CUDA-marked and Triton tests",
                     "result": ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped")
                                         if counts[k])})
        for t in tests:
            if t["outcome"] in ("failed", "error"):
                message = (t.get("message") or "").strip().splitlines()
                rows.append({"section": t["outcome"].upper(), "item": t["test"],
                             "result": message[-1][:160] if message else ""})
    rows += _benchmark_rows("kernel", _load_json(os.path.join(out_dir, "kernels.json")))
    rows += _benchmark_rows("network", _load_json(os.path.join(out_dir, "models.json")))
    rows += _benchmark_rows("train", _load_json(os.path.join(out_dir, "train_step.json")))
    return rows


def print_rows(rows: list[dict]) -> None:
    table = [COLUMNS] + [tuple(str(row.get(c, "")) for c in COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the OUT_DIR of bench/gpu_check.sh")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.out_dir):
        parser.error(f"out_dir: {args.out_dir} is not a folder")
    rows = summary_rows(args.out_dir)
    print_rows(rows)
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
