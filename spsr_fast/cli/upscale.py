"""`spsr-fast upscale INPUT... [-o OUT] [--model PATH|NAME]`: super-resolve images."""
from __future__ import annotations

import os
import sys
import time

HELP = "upscale images (files, folders, globs) with the bundled model or any supported checkpoint"

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF",
           "tiff": "TIFF"}


def int_at_least(low: int, high: int | None = None):
    """argparse type: an integer in [low, high]."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def add_model_arguments(parser) -> None:
    """Options shared by `upscale` and `eval`: which model, and how to run it."""
    from spsr_fast.inference.io import DEFAULT_MAX_PIXELS

    parser.add_argument("--model", default="default",
                        help="checkpoint path (ours, the authors' SPSR, ESRGAN, BasicSR) or bundled model "
                             "name (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 on GPUs with native bf16 (compute capability 8.0+), fp16 on older "
                             "ones; on the CPU bf16 products with float32 activations where the CPU has bf16 "
                             "dot products (AVX512_BF16; SPSR_FAST_CPU_BF16=0 turns that off), else fp32; "
                             "16-bit outputs run the layers that carry the image in fp32")
    parser.add_argument("--fp32", action="store_true", help="same as --precision fp32 (float32 throughout)")
    parser.add_argument("--tile", type=int_at_least(0), default=None,
                        help="tile size in input pixels (default: from free memory; 0: never tile); a tile "
                             "that runs out of device memory is retried at half the size")
    parser.add_argument("--tile-overlap", type=int_at_least(0), default=16,
                        help="overlap of neighbouring tiles (input pixels)")
    parser.add_argument("--tile-batch", type=int_at_least(1), default=None,
                        help="tiles per forward (default: 4 GPU, 1 CPU)")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (worth it for many same-size tiles on a GPU)")
    parser.add_argument("--threads", type=int_at_least(1), default=None,
                        help="CPU threads (default: the CPUs this process may use: affinity mask, cgroup quota)")
    parser.add_argument("--max-pixels", type=int_at_least(1), default=DEFAULT_MAX_PIXELS,
                        help="decompression-bomb guard: refuse inputs with more pixels (default: %(default)s)")


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", default=None,
                        help="output folder (default: next to each input)")
    parser.add_argument("--suffix", default=None,
                        help="added to the file name (default: _x<scale> next to the input, none with -o)")
    parser.add_argument("--format", default=None, choices=sorted(FORMATS),
                        help="output format (default: the input's)")
    parser.add_argument("-r", "--recursive", action="store_true", help="include images in subfolders")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")
    parser.add_argument("--quality", type=int_at_least(1, 100), default=95,
                        help="JPEG/WebP quality; 100 makes WebP lossless (default: %(default)s)")
    parser.add_argument("--alpha", default="bicubic", choices=("bicubic", "model"),
                        help="how the alpha channel is upscaled (default: %(default)s)")
    parser.add_argument("--save-gradient-map", action="store_true",
                        help="also write the predicted HR gradient map (SPSR models) as <name>_grad.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(parser)


def build_upscaler(args):
    """(Upscaler, model path) from the shared model options; raises ValueError/FileNotFoundError/
    CheckpointError with a message for the user."""
    import spsr_fast
    from spsr_fast.inference.runner import Upscaler
    from spsr_fast.weights import resolve_model

    path = resolve_model(args.model)
    model = spsr_fast.load_model(path)
    upscaler = Upscaler(model, device=args.device, precision="fp32" if args.fp32 else args.precision,
                        channels_last=not args.no_channels_last, tile=args.tile, tile_overlap=args.tile_overlap,
                        tile_batch=args.tile_batch, compile=args.compile,
                        alpha=getattr(args, "alpha", "bicubic"), threads=args.threads)
    return upscaler, path


def precision_summary(args, upscaler) -> str:
    """The precision for the summary line, with why when --precision auto chose it."""
    if args.fp32 or args.precision != "auto":
        return upscaler.dtype_name
    return f"{upscaler.dtype_name} by precision auto: {upscaler.precision_reason}"


def _progress_bars(enabled: bool):
    from tqdm import tqdm

    class Bars:
        def __init__(self, total):
            self.images = tqdm(total=total, unit="img", disable=not enabled, file=sys.stderr)
            self.tiles = None

        def tile_callback(self, done, total):
            if total <= 1 or not enabled:
                return
            if self.tiles is None:
                self.tiles = tqdm(total=total, unit="tile", leave=False, file=sys.stderr)
            self.tiles.update(done - self.tiles.n)

        def image_done(self, name):
            if self.tiles is not None:
                self.tiles.close()
                self.tiles = None
            self.images.set_postfix_str(os.path.basename(name), refresh=False)
            self.images.update(1)

        def write(self, message):
            self.images.write(message, file=sys.stderr)

        def close(self):
            if self.tiles is not None:
                self.tiles.close()
            self.images.close()

    return Bars


def _gradient_picture(gradient):
    import numpy as np

    from spsr_fast.inference.io import Picture

    return Picture(np.clip(gradient, 0, 1).astype(np.float32))


def check_output_folder(folder: str) -> None:
    """-o must be a folder that exists or can be made, and that we may write in."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"-o/--output: {folder} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise OSError(f"-o/--output: cannot create the folder {folder}: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"-o/--output: no permission to write in {folder}")


def _existing_output(job, overwrite: bool) -> str | None:
    """An output of `job` that exists already and may not be replaced (checked before any
    work, so a job never leaves one of its outputs written and the other refused)."""
    if overwrite:
        return None
    return next((path for path in job.outputs if os.path.exists(path)), None)


def _sixteen_bit_output(picture, output: str, fmt: str | None) -> bool:
    from spsr_fast.inference.io import FORMAT_BY_EXTENSION, SIXTEEN_BIT_FORMATS

    fmt = fmt or FORMAT_BY_EXTENSION.get(os.path.splitext(output)[1].lower())
    return picture.bits > 8 and fmt in SIXTEEN_BIT_FORMATS


def run(args) -> int:
    import traceback

    from spsr_fast.inference.inputs import plan_jobs
    from spsr_fast.inference.io import ImageError, read_picture, write_picture
    from spsr_fast.inference.runner import TileOutOfMemoryError

    from . import debug_requested

    debug = debug_requested(args)
    upscaler, model_path = build_upscaler(args)
    if args.output:
        check_output_folder(args.output)
    if args.save_gradient_map and not upscaler.has_gradient_branch:
        raise ValueError("--save-gradient-map needs a model with a gradient branch (SPSRNet); "
                         f"{model_path} holds a {getattr(upscaler.model, 'arch', type(upscaler.model).__name__)}")
    fmt = FORMATS[args.format] if args.format else None
    suffix = args.suffix if args.suffix is not None else ("" if args.output else f"_x{upscaler.scale}")
    jobs = plan_jobs(args.inputs, args.output, suffix, fmt, args.recursive, args.save_gradient_map)
    bars = _progress_bars(not args.no_progress)(len(jobs))
    upscaler.log = lambda message: bars.write(f"spsr-fast upscale: {message}")  # out-of-memory retries
    failures, done, pixels_out, seconds, fp32_path = [], 0, 0, 0.0, 0
    start = time.perf_counter()
    try:
        for job in jobs:
            try:
                if job.error is not None:
                    raise ImageError(job.source, job.error)
                existing = _existing_output(job, args.overwrite)
                if existing is not None:
                    raise ImageError(existing, "output exists (use --overwrite to replace it)")
                picture = read_picture(job.source, args.max_pixels)
                result = upscaler.upscale_picture(picture, args.save_gradient_map, bars.tile_callback,
                                                  precise=_sixteen_bit_output(picture, job.output, fmt))
                write_picture(job.output, result.picture, fmt, args.overwrite, args.quality)
                if result.gradient_map is not None:
                    write_picture(job.gradient_output, _gradient_picture(result.gradient_map), "PNG",
                                  args.overwrite)
                done += 1
                fp32_path += result.fp32_image_path
                pixels_out += result.picture.size[0] * result.picture.size[1]
                seconds += result.seconds
            except ImageError as error:
                failures.append(error)
                bars.write(f"FAILED {error.path}: {error.reason}")
            except TileOutOfMemoryError as error:
                failures.append(error)
                bars.write(f"FAILED {job.source}: {error}")
            except (RuntimeError, MemoryError) as error:  # e.g. out of memory on one huge image
                failures.append(error)
                bars.write(f"FAILED {job.source}: {type(error).__name__}: {str(error).splitlines()[0]}")
                if debug:
                    traceback.print_exc()
            bars.image_done(job.source)
    except KeyboardInterrupt:
        bars.close()
        print(f"spsr-fast upscale: interrupted after {done} image(s); no partial file was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    bars.close()
    total = time.perf_counter() - start
    rate = pixels_out / 1e6 / seconds if seconds > 0 else 0.0
    precision = precision_summary(args, upscaler)
    if fp32_path and upscaler.auto_precision and upscaler.engine == "cpu-bf16":  # the CPU engine's auto
        precision += f"; {fp32_path} 16-bit output(s) in float32"
    elif fp32_path:  # 16-bit outputs: the layers carrying the image ran in fp32 (runner/image_path.py)
        precision += f"; {fp32_path} 16-bit output(s) with the image path in float32"
    print(f"{done} image(s) upscaled x{upscaler.scale}, {len(failures)} failed, in {total:.1f} s: "
          f"{rate:.2f} output MP/s on {upscaler.device} ({precision}, "
          f"tile {upscaler.tile or 'off'}), model {model_path}")
    return EXIT_SOME_FAILED if failures else EXIT_OK
