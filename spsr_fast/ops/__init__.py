"""Fused ops of spsr-fast. Each op module registers its backends on import."""
from ._backend import BACKENDS, REGISTRY, backend, get_backend, set_backend
from .gradient_map import gradient_map
from .info_nce import info_nce, info_nce_mean

__all__ = ["BACKENDS", "REGISTRY", "backend", "get_backend", "set_backend", "gradient_map", "info_nce", "info_nce_mean"]
