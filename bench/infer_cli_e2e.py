"""`spsr-fast upscale` end to end, whole processes, this checkout against another one (before/after).

    python bench/infer_cli_e2e.py --baseline /tmp/baseline [--size 512] [--rounds 3] [--threads 2]
                                  [--precision auto] [--model default] [--json PATH]

`--baseline` is a checkout of an earlier commit with its extension built in place (e.g.
`git worktree add /tmp/baseline c9162a5`, then build there or copy a `_C*.so` whose ops are a
superset of what it calls). Each checkout runs through `PYTHONPATH=<checkout>` from a neutral
working directory, so the `spsr_fast` it imports is its own (the summary line names the model
file it loaded: checked).

Measured per checkout, the checkouts alternating within each round (the starting one rotates):
  import      `python -c "import spsr_fast"`: wall time of the whole process, and whether
              torch._dynamo / torch._inductor got imported
  start-up    `spsr-fast upscale` of a 16x16 picture: wall time of the whole process (start-up
              dominates), and whether the compiler stack got imported
  upscale     `spsr-fast upscale` of skimage's astronaut (size x size; 512: the 512^2 -> 2048^2 of
              the issue), whole process, with the seconds the CLI itself reports
Medians are printed with after/before ratios, and the largest difference between the two
checkouts' output pictures (8-bit, in [0, 1] units). Timings taken while other work runs are noisy:
run it alone (this project's engineers take `flock /tmp/spsr_heavy.lock`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILER_PROBE = ("import sys\n"
                  "import atexit\n"
                  "atexit.register(lambda: print('COMPILER', sorted(m for m in ('torch._dynamo', 'torch._inductor') "
                  "if m in sys.modules), file=sys.stderr))\n")
SUMMARY = re.compile(r"upscaled x\d+, (\d+) failed, in ([0-9.]+) s: .*model (\S+)")


def write_pictures(size: int, workdir: str) -> tuple[str, str]:
    """(the astronaut photograph at size x size, a 16 x 16 crop of it) as PNG files."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    if size != photo.width:
        photo = photo.resize((size, size), Image.BICUBIC)
    big, tiny = os.path.join(workdir, f"astronaut_{size}.png"), os.path.join(workdir, "astronaut_16.png")
    photo.save(big)
    photo.crop((200, 100, 216, 116)).save(tiny)
    return big, tiny


def run_process(checkout: str, code: str, args: list[str], threads: int, workdir: str) -> tuple[float, str]:
    """(wall seconds, stderr + stdout) of `python -c code args` importing spsr_fast from `checkout`."""
    env = dict(os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS=str(threads))
    env.pop("TRITON_INTERPRET", None)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{checkout}: exited {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds, result.stderr + result.stdout


def compiler_modules(output: str) -> str:
    match = re.search(r"COMPILER (\[.*\])", output)
    return match.group(1) if match else "?"


def upscale_code() -> str:
    return COMPILER_PROBE + "import sys\nfrom spsr_fast.cli import main\nsys.argv[0] = 'spsr-fast'\nsys.exit(main())\n"


def upscale_args(picture: str, out_dir: str, args) -> list[str]:
    return ["upscale", picture, "-o", out_dir, "--overwrite", "--no-progress", "--threads", str(args.threads),
            "--precision", args.precision, "--model", args.model]


def measure(checkout: str, label: str, pictures: tuple[str, str], args, workdir: str) -> dict:
    """One round of the three measurements for one checkout."""
    big, tiny = pictures
    out_dir = os.path.join(workdir, label)
    os.makedirs(out_dir, exist_ok=True)
    record = {}
    record["import_s"], output = run_process(checkout, COMPILER_PROBE + "import spsr_fast\n", [], args.threads, workdir)
    record["import_compiler"] = compiler_modules(output)
    record["startup_s"], output = run_process(checkout, upscale_code(), upscale_args(tiny, out_dir, args),
                                              args.threads, workdir)
    record["startup_compiler"] = compiler_modules(output)
    record["upscale_s"], output = run_process(checkout, upscale_code(), upscale_args(big, out_dir, args),
                                              args.threads, workdir)
    summary = SUMMARY.search(output)
    if summary is None or summary.group(1) != "0":
        raise SystemExit(f"{label}: no clean summary line in:\n{output[-2000:]}")
    if not os.path.realpath(summary.group(3)).startswith(os.path.realpath(checkout)) and args.model == "default":
        raise SystemExit(f"{label}: loaded {summary.group(3)}, not from {checkout}: PYTHONPATH did not take")
    record["cli_reported_s"] = float(summary.group(2))
    record["summary"] = next(line for line in output.splitlines() if SUMMARY.search(line))
    record["upscale_compiler"] = compiler_modules(output)
    record["output"] = os.path.join(out_dir, os.path.basename(big))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="checkout of the earlier commit (extension built in it)")
    parser.add_argument("--current", default=HERE, help="checkout to compare (default: this one)")
    parser.add_argument("--size", type=int, default=512, help="side of the input picture (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median; default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="--threads of both runs (default %(default)s)")
    parser.add_argument("--precision", default="auto", help="--precision of both runs (default %(default)s)")
    parser.add_argument("--model", default="default", help="--model of both runs (default: the bundled one)")
    parser.add_argument("--json", default=None, help="write the records to this file")
    args = parser.parse_args()
    for name in ("baseline", "current"):
        if not os.path.isdir(os.path.join(getattr(args, name), "spsr_fast")):
            parser.error(f"--{name}: {getattr(args, name)} has no spsr_fast package")
    if args.rounds < 1 or args.threads < 1 or args.size < 16:
        parser.error("--rounds and --threads must be >= 1, --size >= 16")
    workdir = tempfile.mkdtemp(prefix="spsr_e2e_")
    pictures = write_pictures(args.size, workdir)
    checkouts = {"before": os.path.abspath(args.baseline), "after": os.path.abspath(args.current)}
    records = {label: [] for label in checkouts}
    load_start = [round(v, 2) for v in os.getloadavg()]
    for round_index in range(args.rounds):
        order = list(checkouts) if round_index % 2 == 0 else list(reversed(checkouts))
        for label in order:
            records[label].append(measure(checkouts[label], label, pictures, args, workdir))
            print(f"round {round_index + 1} {label}: {json.dumps({k: v for k, v in records[label][-1].items() if k != 'output'})}",
                  flush=True)
    load_end = [round(v, 2) for v in os.getloadavg()]

    import numpy as np
    from PIL import Image

    outputs = [np.asarray(Image.open(records[label][-1]["output"])).astype(np.float64) / 255 for label in checkouts]
    difference = np.abs(outputs[0] - outputs[1])
    print(f"\n{args.size}x{args.size} -> x4, --precision {args.precision}, --threads {args.threads}, "
          f"{args.rounds} rounds (median); load average {load_start} -> {load_end}")
    print(f"{'':38} {'before':>9} {'after':>9} {'after/before':>13}")
    for key, what in (("import_s", "import spsr_fast (process, s)"), ("startup_s", "spsr-fast upscale 16x16 (process, s)"),
                      ("upscale_s", f"spsr-fast upscale {args.size}^2 (process, s)"),
                      ("cli_reported_s", "  of which the CLI reports (s)")):
        before = statistics.median(r[key] for r in records["before"])
        after = statistics.median(r[key] for r in records["after"])
        print(f"{what:38} {before:9.2f} {after:9.2f} {after / before:13.2f}")
    for label in checkouts:
        last = records[label][-1]
        print(f"{label}: compiler stack imported: import {last['import_compiler']}, start-up {last['startup_compiler']}, "
              f"upscale {last['upscale_compiler']}; {last['summary']}")
    print(f"outputs (8-bit): max difference {difference.max():.4f}, mean {difference.mean():.5f} ([0, 1] units)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load_average": [load_start, load_end], "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
