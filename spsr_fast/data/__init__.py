"""Training data: MATLAB-style bicubic resizing, robust image reading, datasets, sub-image preparation."""
from .imresize import imresize
from .images import ImageReadError, read_image

__all__ = ["imresize", "ImageReadError", "read_image"]
