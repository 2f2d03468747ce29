"""spsr-fast against other CPU inference engines on the same x4 generators, side by side.

    python bench/infer_peers.py [--models bundled,nf64] [--sizes 64,128] [--rounds 9] [--threads 2]
                                [--engines NAME,...] [--json PATH] [--workdir DIR]

Models: `bundled` (the bundled default model, rrdbnet-tiny-x4: trained weights) and `nf64`
(RRDBNet nf 64, nb 23, gc 32, x4 with seeded weights: the interpolating init of
spsr_fast/weights/identity_init.py, so the output is an image, with seeded noise on the trunk
and seeded detail weights in conv_last scaled to add detail of RMS 0.03: every layer shapes
the output; see `nf64_model`). Inputs: skimage's astronaut photograph
downscaled x4 (MATLAB bicubic) to 128x128, and its centre 64x64 crop.

Every peer reads an ONNX file (opset 17) exported for the input's fixed shape, its fastest
configuration. Engines, each in its own process (its peak RSS is its own; the input and outputs go through
.npy files, so the peers' processes never import torch), with `--threads` threads each:
  spsr-fast-auto         the inference runner with --precision auto (bf16 on CPUs with AVX512_BF16,
                         the layers carrying the image with float32 GEMMs)
  spsr-fast-bf16         the inference runner with --precision bf16 (those layers in bf16 too)
  spsr-fast-fp32         the inference runner with --precision fp32
  spsr-fast-fp32-module  the model's own forward (channels_last, fused ops): the fp32 path before
                         the CPU engine, whose Winograd weight transforms run on every call
  pytorch-eager          the torch.cat formulation, NCHW (spsr_fast.ops.backend("reference"))
  onnxruntime            ONNX (opset 17, exported here) on ONNX Runtime's CPU provider
  openvino-fp32          the ONNX file on OpenVINO's CPU plugin, INFERENCE_PRECISION_HINT f32
  openvino-default       the same with OpenVINO's default precision (no hint: bf16 on CPUs with bf16)
  ncnn-fp32              ncnn (converted by pnnx from a TorchScript trace at the smallest size, fp32
                         weights; the ncnn net runs every size)
The export to each peer's format is part of the run (its time is printed). An engine that is not
installed is skipped with a printed reason.

Timing: every engine is warmed up, then the engines run one forward each in turn (the starting
engine rotates per round), for --rounds rounds, each forward after a pause of --settle-ms (the
engines' thread pools spin for a while after a forward: without the pause that spinning takes
cores from whichever engine runs next, which on 2 cores moved a 20 ms forward by 20-50 %);
the median is reported, with the ratio
`engine time / spsr-fast-fp32 time` (the issue's convention) and `engine / spsr-fast-auto`, output
megapixels per second, the process's peak RSS (and its growth over the RSS after imports and
loading), and each engine's max / mean absolute error against spsr-fast-fp32 (outputs clamped to
[0, 1], in [0, 1] units). The load average at the start and end is recorded: numbers taken while
other work runs are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ENGINES = ("spsr-fast-auto", "spsr-fast-bf16", "spsr-fast-fp32", "spsr-fast-fp32-module", "pytorch-eager", "onnxruntime",
           "openvino-fp32", "openvino-default", "ncnn-fp32")
REFERENCE_ENGINE = "spsr-fast-fp32"
MODELS = ("bundled", "nf64")
NF64_SEED = 0
NF64_TRUNK_NOISE = 0.3  # x 1/sqrt(fan_in)
NF64_DETAIL_RMS = 0.03


# ---- models and inputs (parent process) --------------------------------------------------

def nf64_model(calibration_input):
    """RRDBNet nf 64, nb 23, gc 32, x4 whose output is a photograph with detail on top.

    The interpolating init (spsr_fast/weights/identity_init.py: channels 0..2 carry the image,
    upscaled by nearest + blur; the other channels He/kaiming-initialised, the trunk as the
    authors initialise it), then seeded noise of std 0.3/sqrt(fan_in) on every trunk weight
(conv_body's rows of the image channels excepted),
    and conv_last given seeded weights on the 61 feature channels, scaled so that the detail
    they add to the interpolation has an RMS of 0.03 on `calibration_input` (real super-resolved
    detail is of that order). Every layer then shapes the output: a fault or a rounding anywhere
    shows, and the output is still an image (an error in [0, 1] units means something)."""
    import torch

    import spsr_fast
    from spsr_fast.models import RRDBNet
    from spsr_fast.weights.identity_init import interpolating_init_

    torch.manual_seed(NF64_SEED)
    net = interpolating_init_(RRDBNet(nf=64, nb=23, gc=32, scale=4)).eval()
    generator = torch.Generator().manual_seed(NF64_SEED + 1)
    with torch.no_grad():
        trunk = [p for name, p in net.named_parameters() if p.dim() > 1 and name.startswith("body.")]
        for p in trunk + [net.conv_body.weight[3:]]:  # conv_body's rows 0..2 keep the image's route
            p.add_(torch.randn(p.shape, generator=generator) * NF64_TRUNK_NOISE / p[0].numel() ** 0.5)
        detail_weight = torch.randn(net.conv_last.weight[:, 3:].shape, generator=generator)
        net.conv_last.weight[:, 3:] = detail_weight
        with spsr_fast.ops.backend("reference"):
            with_detail = net(calibration_input)
            net.conv_last.weight[:, 3:] = 0
            interpolation = net(calibration_input)
        rms = (with_detail - interpolation).pow(2).mean().sqrt()
        net.conv_last.weight[:, 3:] = detail_weight * (NF64_DETAIL_RMS / rms)
    return net


def write_model(name: str, workdir: str, calibration_path: str) -> str:
    import numpy as np
    import torch

    import spsr_fast
    from spsr_fast.weights import resolve_model

    if name == "bundled":
        return resolve_model("default")
    path = os.path.join(workdir, f"{name}.safetensors")
    calibration = torch.from_numpy(np.load(calibration_path))
    spsr_fast.save_model(nf64_model(calibration[..., :32, :32]), path)
    return path


def write_inputs(sizes, workdir: str) -> dict[int, str]:
    """{size: .npy path}: 1 x 3 x size x size float32 in [0, 1] from the astronaut photograph."""
    import numpy as np
    import torch
    from skimage import data

    from spsr_fast.data.imresize import imresize

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    lr = imresize(photo, 0.25).clamp(0, 1)  # 128 x 128
    paths = {}
    for size in sizes:
        if size > lr.shape[-1]:
            raise SystemExit(f"--sizes: at most {lr.shape[-1]} (the astronaut photograph downscaled x4), got {size}")
        top = (lr.shape[-2] - size) // 2
        left = (lr.shape[-1] - size) // 2
        crop = lr[:, top:top + size, left:left + size].contiguous()
        paths[size] = os.path.join(workdir, f"input_{size}.npy")
        np.save(paths[size], crop[None].numpy().astype(np.float32))
    return paths


# ---- exports (parent process) --------------------------------------------------------------

def export_onnx(model_path: str, size: int, onnx_path: str) -> tuple[float, str]:
    """(seconds, how) to write `model_path` as ONNX opset 17 for a 1 x 3 x size x size input
    (static shapes: each peer's fastest configuration)."""
    import torch

    import spsr_fast

    model = spsr_fast.load_model(model_path).eval()
    start = time.perf_counter()
    try:
        from spsr_fast.export import StaticShape
        from spsr_fast.export import export_onnx as spsr_export

        spsr_export(model, onnx_path, opset=17, static=StaticShape(1, size, size), overwrite=True)
        return time.perf_counter() - start, "spsr_fast.export.export_onnx (opset 17, static shape)"
    except Exception as error:  # noqa: BLE001 - the project's exporter missing or failing: torch.onnx directly
        how = f"torch.onnx.export (opset 17; spsr_fast.export failed: {type(error).__name__}: {error})"
    start = time.perf_counter()
    with spsr_fast.ops.backend("reference"), torch.no_grad():
        torch.onnx.export(model, torch.rand(1, 3, size, size), onnx_path, opset_version=17, input_names=["lr"],
                          output_names=["sr"], dynamo=False)
    return time.perf_counter() - start, how


def export_ncnn(model_path: str, size: int, workdir: str, stem: str) -> tuple[float, str, str]:
    """(seconds, param path, bin path): pnnx traces the model (the torch.cat formulation) at a
    fixed input shape and writes ncnn with fp32 weights. (pnnx's ONNX route wrote no ncnn files
    for these models.)"""
    import pnnx
    import torch

    import spsr_fast

    model = spsr_fast.load_model(model_path).eval()
    traced = os.path.join(workdir, f"{stem}_{size}.pt")
    param, binary = traced[:-3] + ".ncnn.param", traced[:-3] + ".ncnn.bin"
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(workdir)  # pnnx writes side files into the working directory
    try:
        with spsr_fast.ops.backend("reference"), torch.no_grad():
            pnnx.export(model, traced, torch.rand(1, 3, size, size), fp16=False)
    finally:
        os.chdir(cwd)
    if not (os.path.exists(param) and os.path.exists(binary)):
        raise RuntimeError("pnnx wrote no ncnn model")
    return time.perf_counter() - start, param, binary


def missing(engine: str) -> str | None:
    """Why `engine` cannot run here (None when it can)."""
    import importlib.util

    needs = {"onnxruntime": "onnxruntime", "openvino-fp32": "openvino", "openvino-default": "openvino",
             "ncnn-fp32": "ncnn"}
    module = needs.get(engine)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install spsr-fast[peers])"
    if engine == "ncnn-fp32" and importlib.util.find_spec("pnnx") is None:
        return "pnnx (the PyTorch -> ncnn converter) is not installed (pip install pnnx)"
    return None


# ---- workers: one process per engine ---------------------------------------------------------

def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM (ru_maxrss survives exec, so a worker would report the
    parent's peak when that was higher)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_runner(engine: str, spec: dict):
    """A function running one forward on the input (a numpy array) and returning the SR image
    as a numpy array (1 x 3 x H x W float32, not clamped), and a note about the engine."""
    import numpy as np

    threads = spec["threads"]
    if engine.startswith(("spsr-fast", "pytorch")):
        import torch

        import spsr_fast
        from spsr_fast.inference.runner import Upscaler

        torch.set_num_threads(threads)
        model = spsr_fast.load_model(spec["model"]).eval()
        if engine in ("spsr-fast-auto", "spsr-fast-bf16", "spsr-fast-fp32"):
            upscaler = Upscaler(model, device="cpu", precision=engine.rsplit("-", 1)[1], tile=0, threads=threads)
            note = f"{upscaler.dtype_name}, {upscaler.engine} ({upscaler.precision_reason})"

            def run(x):
                return upscaler.upscale_tensor(torch.from_numpy(x[0]))[0][0][None].numpy()
            return run, note
        if engine == "spsr-fast-fp32-module":
            model = model.to(memory_format=torch.channels_last)

            def run(x):
                with torch.inference_mode():
                    return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
            return run, "float32, the model's forward, channels_last, fused ops"

        def run(x):  # pytorch-eager
            with torch.inference_mode(), spsr_fast.ops.backend("reference"):
                return model(torch.from_numpy(x)).numpy()
        return run, "float32, NCHW, torch.cat dense blocks"
    if engine == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(spec["onnx"], options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x})[0]), f"onnxruntime {ort.__version__}, float32"
    if engine.startswith("openvino"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(spec["onnx"])  # exported with a static shape: OV's fastest
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if engine == "openvino-fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")

        def run(x):
            request.infer({0: x})
            return np.array(request.get_output_tensor(0).data, copy=True)
        return run, f"openvino {ov.__version__}, inference precision {precision}"
    if engine == "ncnn-fp32":
        import ncnn

        net = ncnn.Net()
        net.opt.num_threads = threads
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_storage = False
        net.load_param(spec["ncnn_param"])
        net.load_model(spec["ncnn_bin"])
        in_name, out_name = net.input_names()[0], net.output_names()[0]

        def run(x):
            extractor = net.create_extractor()
            extractor.input(in_name, ncnn.Mat(np.ascontiguousarray(x[0])))
            _, out = extractor.extract(out_name)
            return np.array(out)[None]
        return run, f"ncnn {ncnn.__version__}, float32"
    raise ValueError(f"unknown engine {engine!r}")


def worker(engine: str, spec_json: str) -> None:
    """Serves one engine over stdin/stdout: `run` -> milliseconds, `save PATH`, `quit` -> peak RSS."""
    import numpy as np

    spec = json.loads(spec_json)
    x = np.load(spec["input"])
    rss_imports = current_rss_bytes()
    run, note = build_runner(engine, spec)
    rss_loaded = current_rss_bytes()
    print(json.dumps({"ready": True, "note": note, "rss_imports": rss_imports, "rss_loaded": rss_loaded}),
          flush=True)
    out = None
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            start = time.perf_counter()
            out = run(x)
            print(json.dumps({"ms": (time.perf_counter() - start) * 1e3}), flush=True)
        elif command[0] == "save":
            np.save(command[1], np.clip(out, 0, 1).astype(np.float32))
            print(json.dumps({"saved": command[1], "shape": list(out.shape)}), flush=True)
        elif command[0] == "quit":
            print(json.dumps({"peak_rss": peak_rss_bytes()}), flush=True)
            return


class Worker:
    def __init__(self, engine: str, spec: dict):
        env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
        self.engine = engine
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", engine,
                                         json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        self.ready = self.reply()

    def reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.engine}: the worker exited (code {self.process.wait()})")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.reply()

    def close(self) -> int:
        peak = self.ask("quit")["peak_rss"]
        self.process.wait()
        return peak


# ---- the run -----------------------------------------------------------------------------------

def cpu_description() -> str:
    """Model name and the flags that decide bf16 (/proc/cpuinfo), e.g. 'AMD EPYC (avx512_bf16, no amx)'."""
    name, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == platform.machine():
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    features = [f for f in ("avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(features) or 'no AVX-512'}; {os.cpu_count()} CPUs)"


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_case(model_name, model_path, size, engines, args, workdir, exports) -> list[dict]:
    import numpy as np

    spec = {"model": model_path, "size": size, "threads": args.threads, "input": exports["inputs"][size],
            "onnx": exports.get(("onnx", model_name, size))}
    if ("ncnn", model_name, size) in exports:
        spec["ncnn_param"], spec["ncnn_bin"] = exports[("ncnn", model_name, size)]
    workers = {}
    for engine in engines:
        try:
            workers[engine] = Worker(engine, spec)
        except Exception as error:  # noqa: BLE001 - a peer that fails to load is reported, not fatal
            print(f"  {engine}: skipped, failed to load: {error}", flush=True)
    if REFERENCE_ENGINE not in workers:
        raise SystemExit(f"{REFERENCE_ENGINE} failed to load: nothing to compare against")
    names = list(workers)
    for name in names:  # warm-up: first-call allocations, lazy compilation, caches
        for _ in range(args.warmup):
            workers[name].ask("run")
    times = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            time.sleep(args.settle_ms / 1e3)  # the previous engine's spinning threads go idle
            times[name].append(workers[name].ask("run")["ms"])
    outputs = {}
    for name in names:
        path = os.path.join(workdir, f"out_{model_name}_{size}_{name}.npy")
        workers[name].ask(f"save {path}")
        outputs[name] = np.load(path)
    reference = outputs[REFERENCE_ENGINE]
    records = []
    medians = {name: statistics.median(times[name]) for name in names}
    for name in names:
        peak = workers[name].close()
        ready = workers[name].ready
        out = outputs[name]
        if out.shape != reference.shape:
            error_max = error_mean = float("nan")
        else:
            diff = np.abs(out.astype(np.float64) - reference)
            error_max, error_mean = float(diff.max()), float(diff.mean())
        records.append({
            "model": model_name, "input": f"{size}x{size}", "engine": name, "note": ready["note"],
            "threads": args.threads, "rounds": args.rounds, "ms_median": medians[name],
            "ms_all": [round(t, 2) for t in times[name]],
            "ratio_vs_fp32": medians[name] / medians[REFERENCE_ENGINE],
            "ratio_vs_auto": medians[name] / medians["spsr-fast-auto"] if "spsr-fast-auto" in medians else None,
            "output_mp_per_s": reference.shape[-1] * reference.shape[-2] / 1e6 / (medians[name] / 1e3),
            "peak_rss_mib": peak / 2**20, "rss_growth_mib": (peak - ready["rss_imports"]) / 2**20,
            "max_abs_error": error_max, "mean_abs_error": error_mean,
        })
    return records


def print_table(records) -> None:
    header = (f"{'model':8} {'input':8} {'engine':22} {'ms':>9} {'/fp32':>6} {'/auto':>6} {'MP/s':>6} "
              f"{'RSS MiB':>8} {'+MiB':>7} {'max err':>9} {'mean err':>9}  note")
    print(header)
    print("-" * len(header))
    for r in records:
        auto = f"{r['ratio_vs_auto']:.2f}" if r["ratio_vs_auto"] is not None else "-"
        print(f"{r['model']:8} {r['input']:8} {r['engine']:22} {r['ms_median']:9.1f} {r['ratio_vs_fp32']:6.2f} "
              f"{auto:>6} {r['output_mp_per_s']:6.3f} {r['peak_rss_mib']:8.0f} {r['rss_growth_mib']:7.0f} "
              f"{r['max_abs_error']:9.2e} {r['mean_abs_error']:9.2e}  {r['note']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        worker(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: bundled, nf64")
    parser.add_argument("--sizes", default="64,128", help="input sides (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (median; default %(default)s)")
    parser.add_argument("--settle-ms", type=float, default=200.0,
                        help="pause before each timed forward, so other engines' thread pools stop spinning "
                             "(default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards per engine first")
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine (default %(default)s)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
    parser.add_argument("--json", default=None, help="write the records to this file")
    parser.add_argument("--workdir", default=None, help="where exports and outputs go (default: a temporary folder)")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: unknown model {m!r} (known: {', '.join(MODELS)})")
    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in ENGINES:
            parser.error(f"--engines: unknown engine {e!r} (known: {', '.join(ENGINES)})")
    if REFERENCE_ENGINE not in engines:
        engines.insert(0, REFERENCE_ENGINE)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if args.rounds < 1 or args.threads < 1 or args.warmup < 0 or args.settle_ms < 0:
        parser.error("--rounds and --threads must be >= 1, --warmup and --settle-ms >= 0")

    workdir = args.workdir or tempfile.mkdtemp(prefix="spsr_peers_")
    os.makedirs(workdir, exist_ok=True)
    available = []
    for engine in engines:
        reason = missing(engine)
        if reason:
            print(f"{engine}: skipped: {reason}")
        else:
            available.append(engine)
    start_load = load_average()
    print(f"CPU: {cpu_description()}, {args.threads} threads per engine, "
          f"load average {start_load}; work in {workdir}", flush=True)
    exports = {"inputs": write_inputs(sizes, workdir)}
    export_records = []
    records = []
    for model_name in models:
        model_path = write_model(model_name, workdir, exports["inputs"][min(sizes)])
        needs_onnx = any(e in available for e in ("onnxruntime", "openvino-fp32", "openvino-default"))
        for size in sizes if needs_onnx else ():
            onnx_path = os.path.join(workdir, f"{model_name}_{size}.onnx")
            seconds, how = export_onnx(model_path, size, onnx_path)
            exports[("onnx", model_name, size)] = onnx_path
            export_records.append({"model": model_name, "format": f"onnx {size}x{size}", "seconds": seconds,
                                   "how": how})
            print(f"{model_name}: ONNX export at {size}x{size} {seconds:.1f} s via {how}", flush=True)
        case_engines = list(available)
        if "ncnn-fp32" in available:
            # traced once, at the smallest size: an ncnn net runs any input size (its upsampling
            # is by scale factor), and pnnx at the larger sizes of nf64 wrote no ncnn files
            size = min(sizes)
            try:
                seconds, param, binary = export_ncnn(model_path, size, workdir, model_name)
                for other in sizes:
                    exports[("ncnn", model_name, other)] = (param, binary)
                export_records.append({"model": model_name, "format": f"ncnn (traced at {size}x{size})",
                                       "seconds": seconds, "how": "pnnx.export (TorchScript trace), fp32 weights"})
                print(f"{model_name}: ncnn export (traced at {size}x{size}) {seconds:.1f} s (pnnx)", flush=True)
            except Exception as error:  # noqa: BLE001 - reported, the other engines still run
                print(f"ncnn-fp32: skipped for {model_name}: pnnx failed: {error}", flush=True)
        for size in sizes:
            engines_here = [e for e in case_engines if e != "ncnn-fp32" or ("ncnn", model_name, size) in exports]
            print(f"{model_name} {size}x{size}: {', '.join(engines_here)}", flush=True)
            records += run_case(model_name, model_path, size, engines_here, args, workdir, exports)
    end_load = load_average()
    print()
    print_table(records)
    print(f"\nload average at start {start_load}, at end {end_load} (2 cores: above ~2 the numbers are noisy)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_description(), "threads": args.threads, "rounds": args.rounds, "settle_ms": args.settle_ms,
                       "load_average_start": start_load, "load_average_end": end_load,
                       "exports": export_records, "records": records}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
