"""`spsr-fast eval HR_DIR [--model ...] [--lr-dir LR_DIR]`: PSNR/SSIM(Y), LPIPS and gradient-map
error vs bicubic; LR by MATLAB bicubic, or the given LR images (e.g. from `spsr-fast degrade`)."""
from __future__ import annotations

import json
import sys

from .upscale import EXIT_OK, EXIT_SOME_FAILED, add_model_arguments, build_upscaler

HELP = "evaluate a model on HR images (LR by MATLAB bicubic or --lr-dir): PSNR/SSIM on Y, LPIPS, vs bicubic"


def add_arguments(parser) -> None:
    parser.add_argument("hr", metavar="HR_DIR", help="folder of high-resolution images (or one image)")
    parser.add_argument("--lr-dir", metavar="LR_DIR", default=None,
                        help="score against these LR images (same names as the HR ones, e.g. a set written by "
                             "`spsr-fast degrade`) instead of MATLAB-bicubic downscaling")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON ('-': stdout)")
    parser.add_argument("--save-comparisons", metavar="DIR", default=None,
                        help="write <name>_cmp.png per image: bicubic | model | HR side by side")
    parser.add_argument("--no-lpips", action="store_true",
                        help="do not score LPIPS, so nothing is downloaded for it (by default LPIPS is scored "
                             "when the lpips package is installed; torchvision downloads its AlexNet weights on "
                             "first use)")
    add_model_arguments(parser)


def _row(name: str, scores) -> str:
    cells = []
    for method in ("bicubic", "model"):
        s = scores[method]
        lp = "" if s.lpips is None else f" {s.lpips:6.4f}"
        cells.append(f"{s.psnr_y:6.2f} {s.ssim_y:6.4f} {s.grad_mae:7.4f}{lp}")
    return f"{name:<28} " + "   ".join(cells)


def run(args) -> int:
    import os

    from spsr_fast.data.images import ImageReadError, list_images, read_image
    from spsr_fast.inference.evaluate import (LRSizeError, as_json, evaluate_image, image_name, lr_partners,
                                              mean_scores, side_by_side)
    from spsr_fast.inference.io import ImageError, Picture, write_picture
    from spsr_fast.inference.runner import TileOutOfMemoryError
    from spsr_fast.metrics import make_lpips

    # errors here (no such folder, no images, a bad model) end the command in cli.main, in one line
    paths = [args.hr] if os.path.isfile(args.hr) else list_images(args.hr)
    if not paths:
        raise FileNotFoundError(f"HR_DIR: no images in {args.hr}")
    if args.json and args.json != "-":
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):  # found before the evaluation, not after it
            raise FileNotFoundError(f"--json: the folder of {args.json} does not exist")
    upscaler, model_path = build_upscaler(args)
    lr_paths = lr_partners(paths, args.hr, args.lr_dir, upscaler.scale) if args.lr_dir else [None] * len(paths)
    upscaler.log = lambda message: print(f"spsr-fast eval: {message}", file=sys.stderr)
    lpips = None if args.no_lpips else make_lpips(upscaler.device)
    lp = " LPIPS " if lpips is not None else ""
    out = sys.stderr if args.json == "-" else sys.stdout
    print(f"{'image':<28} {'bicubic: PSNR-Y SSIM-Y gradMAE' + lp:<30}   model: PSNR-Y SSIM-Y gradMAE{lp}", file=out)
    results, failed = [], 0
    for path, lr_path in zip(paths, lr_paths):
        try:
            hr = read_image(path)
            lr = read_image(lr_path) if lr_path else None
        except ImageReadError as error:
            print(f"FAILED {error.path}: {error}", file=sys.stderr)
            failed += 1
            continue
        try:
            result = evaluate_image(upscaler, hr, image_name(path, args.hr), lpips, bool(args.save_comparisons), lr)
        except (TileOutOfMemoryError, LRSizeError) as error:
            print(f"FAILED {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        results.append(result)
        if args.save_comparisons:
            target = os.path.join(args.save_comparisons, os.path.splitext(result.name)[0] + "_cmp.png")
            try:
                write_picture(target, Picture(side_by_side(result.images)), overwrite=True)
            except ImageError as error:
                print(f"FAILED {error.path}: {error.reason}", file=sys.stderr)
                failed += 1
            result.images = {}
        print(_row(result.name, result.scores), file=out)
    if results:
        print(_row(f"mean of {len(results)}", mean_scores(results)), file=out)
    if args.json:
        payload = as_json(results, {"model": model_path, "scale": upscaler.scale, "device": str(upscaler.device),
                                    "dtype": upscaler.dtype_name, "lpips": lpips is not None,
                                    "lr": args.lr_dir or "matlab_bicubic"})
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return EXIT_SOME_FAILED if failed or not results else EXIT_OK
