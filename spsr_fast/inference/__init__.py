"""Inference: image I/O, tiled upscaling and the runner behind `spsr-fast upscale` / `eval`."""
