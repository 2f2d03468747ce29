"""Real-world degradations (`data.degradation: realworld`): Real-ESRGAN's two-stage pipeline
of random blur, resizing, noise and JPEG, run batched with torch ops on the training device,
drawn from (seed, step, rank).

    config.py     the fields and their checks (published defaults)
    kernels.py    blur-kernel draws and batched synthesis
    filters.py    per-sample grouped-convolution blur, unsharp mask
    resize.py     random resizing
    noise.py      Gaussian and Poisson noise
    jpeg.py       JPEG (libjpeg's 4:2:0 baseline) as blockwise DCT quantisation
    pipeline.py   draws, the pipeline, RealWorldDegrader (training pairs)
    images.py     fixed degraded sets: one image from (seed, name), folders
    seeding.py    seeds from (seed, step, rank) / (seed, name)
    reference.py  an independent numpy / SciPy / Pillow per-image implementation (tests, bench)
"""
from .config import RealWorldConfig, check_realworld
from .pipeline import DegradedBatch, RealWorldDegrader, apply, draw

__all__ = ["RealWorldConfig", "check_realworld", "RealWorldDegrader", "DegradedBatch", "apply", "draw"]
