"""Builds spsr_fast._C from csrc/ and installs kernels/ as spsr_fast._triton.

CPU kernels are always built. CUDA kernels are built when torch is a CUDA build and a
CUDA toolkit is found at CUDA_HOME; SPSR_FAST_CUDA=0 forces a CPU-only build and
SPSR_FAST_CUDA=1 makes a missing toolkit an error instead of a CPU-only build.
"""
import glob
import os
import sys

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_home():
    return os.environ.get("CUDA_HOME") or cpp_extension.CUDA_HOME or ""


def cuda_build_decision():
    """(build_cuda, reason): whether CUDA kernels are built, and why in one phrase."""
    wanted = os.environ.get("SPSR_FAST_CUDA", "auto").lower()
    if wanted not in ("auto", "0", "1"):
        sys.exit(f"spsr-fast: SPSR_FAST_CUDA must be auto, 0 or 1, got {wanted!r}")
    if wanted == "0":
        return False, "SPSR_FAST_CUDA=0"
    import torch

    problem = None
    home = cuda_home()
    if torch.version.cuda is None:
        problem = f"torch {torch.__version__} is not a CUDA build"
    elif not home:
        problem = "no CUDA toolkit found (set CUDA_HOME)"
    elif not (os.path.exists(os.path.join(home, "bin", "nvcc"))
              and os.path.exists(os.path.join(home, "include", "cuda_runtime.h"))):
        problem = f"CUDA_HOME={home} has no bin/nvcc and include/cuda_runtime.h (set CUDA_HOME)"
    if problem and wanted == "1":
        sys.exit(f"spsr-fast: SPSR_FAST_CUDA=1 but {problem}")
    if problem:
        return False, problem
    return True, f"CUDA_HOME={home}, torch CUDA {torch.version.cuda}"


def pip_cuda_include_dirs(cuda_home):
    """Headers torch's CUDA headers include (cusparse.h, cublas_v2.h, ...) that a bare
    toolkit may lack but torch's pip dependencies (nvidia-*) ship."""
    if os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for root in nvidia.__path__:
        dirs += glob.glob(os.path.join(root, "*", "include")) + glob.glob(os.path.join(root, "include"))
    return sorted(d for d in dirs if os.path.isdir(d))


def extension():
    build_cuda, reason = cuda_build_decision()
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # -fopenmp: ATen's at::parallel_for is an inline `#pragma omp parallel` in torch's
    # headers; compiled without it every CPU kernel here would run on one thread.
    cxx_flags = ["-O3", "-Wall", "-Wno-unknown-pragmas", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if build_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        print(f"spsr-fast: building spsr_fast._C with CPU and CUDA kernels ({reason})", flush=True)
        return cpp_extension.CUDAExtension(
            "spsr_fast._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")] + pip_cuda_include_dirs(cuda_home()),
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]},
            extra_link_args=link_flags,
        )
    print(f"spsr-fast: building spsr_fast._C CPU-only, no CUDA kernels ({reason})", flush=True)
    return cpp_extension.CppExtension(
        "spsr_fast._C", sources, include_dirs=[os.path.join(ROOT, "csrc")], extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )


setup(
    packages=find_packages(include=["spsr_fast", "spsr_fast.*"]) + ["spsr_fast._triton"],
    package_dir={"spsr_fast._triton": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
