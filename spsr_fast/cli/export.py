"""`spsr-fast export [MODEL] -o OUT.onnx|OUT.pt2`: export a generator for deployment."""
from __future__ import annotations

import sys

from .upscale import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE

HELP = "export a model to ONNX or a torch.export program (and AOTInductor package) for deployment"
FORMATS = {".onnx": "onnx", ".pt2": "pt2"}


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", default="default", metavar="MODEL",
                        help="checkpoint path (ours, the authors' SPSR, ESRGAN, BasicSR) or bundled model name "
                             "(default: %(default)s)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write (.onnx or .pt2)")
    parser.add_argument("--format", choices=("onnx", "pt2"), default=None,
                        help="onnx, or pt2 (torch.export program + AOTInductor package); default: from OUT's suffix")
    parser.add_argument("--outputs", default=None, metavar="NAMES",
                        help="comma-separated outputs to keep: sr, gradient (SPSRNet's predicted HR gradient map); "
                             "default: all the model has")
    parser.add_argument("--static", default=None, metavar="HxW",
                        help="fixed input shape HxW (batch 1) or NxHxW, for engines that want one; "
                             "default: dynamic batch, height and width")
    parser.add_argument("--fp16", action="store_true",
                        help="weights and activations in float16 (input and outputs stay float32)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default 17: read by TensorRT 8.6+, OpenVINO 2022.3+, ONNX Runtime 1.12+)")
    parser.add_argument("--no-aoti", action="store_true", help="pt2: skip the AOTInductor package")
    parser.add_argument("--device", default="cpu",
                        help="pt2: device the AOTInductor package is built for (default: cpu)")
    parser.add_argument("--verify", action="store_true",
                        help="run the file in ONNX Runtime and OpenVINO (ONNX) or torch (pt2) at two input shapes "
                             "and compare with spsr-fast's output; exit 1 on a mismatch")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _format(args) -> str:
    import os

    if args.format:
        return args.format
    suffix = os.path.splitext(args.output)[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"-o {args.output}: cannot tell the format from the suffix; name it .onnx or .pt2, "
                         f"or pass --format onnx|pt2")
    return FORMATS[suffix]


def _check_options(args, fmt: str) -> None:
    if fmt == "onnx" and (args.no_aoti or args.device != "cpu"):
        raise ValueError("--no-aoti and --device apply to --format pt2 only")
    if fmt == "pt2" and args.opset is not None:
        raise ValueError("--opset applies to --format onnx only")


def _describe_model(model, path, layout) -> str:
    c = model.config
    unshuffle = f", pixel-unshuffle {c['unshuffle']}" if c.get("unshuffle", 1) > 1 else ""
    return (f"{model.arch} x{c['scale']} (nf {c['nf']}, nb {c['nb']}, gc {c['gc']}{unshuffle}) "
            f"from {path} ({layout} layout)")


def _verify(model, result, fmt: str, static) -> bool:
    from spsr_fast.export.verify import ONNX_RUNTIMES, missing_runtime, verify

    if fmt == "onnx":
        targets = [(runtime, result.path) for runtime in ONNX_RUNTIMES]
    else:
        targets = [("torch.export", result.path)] + ([("aotinductor", result.aoti_path)] if result.aoti_path else [])
    ran, ok = 0, True
    for runtime, path in targets:
        reason = missing_runtime(runtime)
        if reason:
            print(f"verify: {runtime} skipped: {reason}")
            continue
        ran += 1
        for check in verify(model, path, runtime, result.precision, static, result.outputs):
            print(f"verify: {check}")
            ok = ok and check.ok
    if not ran:
        print("verify: no runtime to run the file in; install onnxruntime or openvino", file=sys.stderr)
    return ok and ran > 0


def run(args) -> int:
    import spsr_fast
    from spsr_fast.checkpoints import CheckpointError
    from spsr_fast.export import DEFAULT_OPSET, ExportError, export_onnx, export_pt2, parse_static
    from spsr_fast.export.deploy import architecture
    from spsr_fast.weights import resolve_model

    try:
        fmt = _format(args)
        _check_options(args, fmt)
        static = parse_static(args.static) if args.static else None
        outputs = args.outputs.split(",") if args.outputs is not None else None
        path = resolve_model(args.model)
        model = spsr_fast.load_model(path)
        architecture(model)
        layout = spsr_fast.inspect_checkpoint(path).layout
        precision = "fp16" if args.fp16 else "fp32"
        shape = f"static {static}" if static else "dynamic batch/height/width"
        target = f"ONNX opset {args.opset or DEFAULT_OPSET}" if fmt == "onnx" else "torch.export program"
        print(f"exporting {_describe_model(model, path, layout)} to {target}, {precision}, {shape}", flush=True)
        common = dict(outputs=outputs, precision=precision, static=static, source=path, source_layout=layout,
                      overwrite=args.overwrite)
        if fmt == "onnx":
            result = export_onnx(model, args.output, opset=args.opset or DEFAULT_OPSET, **common)
        else:
            result = export_pt2(model, args.output, aoti=not args.no_aoti, device=args.device, **common)
    except (ExportError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"spsr-fast export: {error}", file=sys.stderr)
        return EXIT_USAGE
    opset = f"opset {result.opset}, " if fmt == "onnx" else ""
    print(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB) in {result.seconds:.1f} s: {opset}input lr "
          f"({result.metadata['input_format']}), outputs {', '.join(result.outputs)} (float32), {precision}")
    if fmt == "pt2":
        if result.aoti_path:
            print(f"wrote {result.aoti_path} (AOTInductor package for {args.device}) in {result.aoti_seconds:.1f} s")
        elif result.aoti_skipped:
            print(f"AOTInductor package skipped: {result.aoti_skipped}")
    if args.verify:
        try:
            if not _verify(model, result, fmt, static):
                return EXIT_SOME_FAILED
        except ExportError as error:
            print(f"spsr-fast export: {error}", file=sys.stderr)
            return EXIT_SOME_FAILED
    return EXIT_OK
