"""Training data: MATLAB-style bicubic resizing, robust image reading, datasets, built-in image
sources (`builtin:NAME`), sub-image preparation."""
from .imresize import imresize
from .images import ImageReadError, read_image

__all__ = ["imresize", "ImageReadError", "read_image"]
