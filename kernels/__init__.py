"""Triton kernels of spsr-fast, installed as ``spsr_fast._triton``.

Each module holds the kernels of one op and thin launchers taking torch tensors;
the op modules in ``spsr_fast.ops`` decide when to call them.
"""
