"""spsr-fast: structure-preserving super-resolution with fused kernels."""
__version__ = "0.1.0"

from . import ops  # noqa: E402  (registers the fused ops)

__all__ = ["ops", "__version__"]
