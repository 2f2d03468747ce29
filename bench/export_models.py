"""Export cost and deployed accuracy of the paper-size generators (nf 64, nb 23, x4).

    python bench/export_models.py [--models rrdbnet,spsrnet] [--json PATH] [--torchscript]

For each model (seeded weights, kaiming x0.5 so outputs are of order 1):
`spsr_fast.export.export_onnx` (torch.export + the dynamo ONNX exporter, opset 17) fp32 and
fp16, and `export_pt2` (program only): seconds, file size; then ONNX Runtime and OpenVINO
(where installed) at 1x3x16x16 and 2x3x24x20: max abs error against spsr-fast's fp32
output, and the runtime's time for a 1x3x64x64 input. `--torchscript` also times
torch.onnx's legacy TorchScript exporter on the same model (the alternative exporter; its
file is not kept).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

import spsr_fast
from spsr_fast.export import export_onnx, export_pt2
from spsr_fast.export.verify import missing_runtime, verify
from spsr_fast.models import RRDBNet, SPSRNet
from spsr_fast.models.blocks import kaiming_init_

MODELS = {"rrdbnet": lambda: RRDBNet(nf=64, nb=23, gc=32, scale=4),
          "spsrnet": lambda: SPSRNet(nf=64, nb=23, gc=32, scale=4)}


def time_torchscript_export(model, outputs, path) -> float:
    from spsr_fast.export.deploy import deployment_model

    wrapped = deployment_model(model, outputs, "fp32")
    axes = {"lr": {0: "batch", 2: "height", 3: "width"}}
    start = time.perf_counter()
    with spsr_fast.ops.backend("reference"), torch.no_grad():
        torch.onnx.export(wrapped, (torch.rand(1, 3, 16, 16),), path, dynamo=False, opset_version=17,
                          input_names=["lr"], output_names=list(outputs), dynamic_axes=axes)
    return time.perf_counter() - start


def runtime_seconds(runtime, path, repeats=3) -> float:
    from spsr_fast.export.verify import RUNNERS

    run = RUNNERS[runtime](path)
    x = torch.rand(1, 3, 64, 64)
    run(x)
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return (time.perf_counter() - start) / repeats


def bench(name, folder, torchscript) -> list[dict]:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    # x0.5 instead of the generators' x0.1 init: outputs of order 1 like a trained model's,
    # not ~1e-5, so the errors below mean something
    kaiming_init_(model, 0.5)
    outputs = ("sr", "gradient") if name == "spsrnet" else ("sr",)
    records = []
    for precision in ("fp32", "fp16"):
        result = export_onnx(model, os.path.join(folder, f"{name}_{precision}.onnx"), precision=precision)
        record = dict(model=name, format="onnx", precision=precision, export_s=round(result.seconds, 1),
                      mb=round(result.bytes / 1e6, 1), opset=result.opset)
        for runtime in ("onnxruntime", "openvino"):
            if missing_runtime(runtime):
                record[runtime] = missing_runtime(runtime)
                continue
            checks = verify(model, result.path, runtime, precision, None, outputs)
            record[runtime] = {f"{'x'.join(map(str, c.shape))} {c.output}":
                               dict(error=float(f"{c.error:.3g}"), vs_fp32=float(f"{c.error_vs_fp32:.3g}"),
                                    limit=float(f"{c.limit:.3g}"), ok=c.ok) for c in checks}
            record[f"{runtime}_64x64_s"] = round(runtime_seconds(runtime, result.path), 3)
        records.append(record)
        print(json.dumps(record), flush=True)
    result = export_pt2(model, os.path.join(folder, f"{name}.pt2"), aoti=False)
    records.append(dict(model=name, format="pt2", precision="fp32", export_s=round(result.seconds, 1),
                        mb=round(result.bytes / 1e6, 1)))
    print(json.dumps(records[-1]), flush=True)
    if torchscript:
        seconds = time_torchscript_export(model, outputs, os.path.join(folder, f"{name}_torchscript.onnx"))
        records.append(dict(model=name, format="onnx (TorchScript exporter)", export_s=round(seconds, 1)))
        print(json.dumps(records[-1]), flush=True)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rrdbnet,spsrnet")
    parser.add_argument("--json", default=None)
    parser.add_argument("--torchscript", action="store_true")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"--models: choose from {', '.join(MODELS)}, got {', '.join(unknown)}")
    records = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            records += bench(name, folder, args.torchscript)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
