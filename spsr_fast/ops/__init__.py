"""Fused ops of spsr-fast. Each op module registers its backends on import."""
from ._backend import BACKENDS, REGISTRY, backend, get_backend, set_backend
from .gradient_map import gradient_map
from .dense_block import residual_dense_block, rrdb

__all__ = ["BACKENDS", "REGISTRY", "backend", "get_backend", "set_backend", "gradient_map",
           "residual_dense_block", "rrdb"]
