"""The CPU sources compile for hosts other than this one (issue 12): aarch64 (GH200,
Graviton) through Debian's cross compiler, and clang when present, with torch's include dirs
and the flags setup.py would use there. Each skips, saying why, when its compiler is absent.

Code generation runs (-S, not -fsyntax-only): GCC checks target attributes such as
target_clones("avx512f") only when it generates code, so a syntax-only pass would accept
x86-only code on aarch64. -O0 instead of setup.py's -O3 keeps it fast; the checks are the same.
"""
import concurrent.futures
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What torch's BuildExtension adds to every C++ compile of an extension.
TORCH_FLAGS = ["-std=c++20", "-fPIC", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]


def load_setup():
    spec = importlib.util.spec_from_file_location("spsr_fast_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the build's functions; setup() runs only as __main__
    return module


def cpu_sources():
    return sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))


def compile_all(cxx, tmp_path, extra=()):
    """Compiles every CPU source with `cxx` (argv list) as setup.py would; returns the failures."""
    setup_py = load_setup()  # first: it quiets cpp_extension's "No CUDA runtime" import warning
    from torch.utils import cpp_extension

    cflags, _ldflags, note = setup_py.cxx_flags(cxx)
    print(f"{cxx[0]}: {' '.join(cflags)}{note}")
    cflags = [f for f in cflags if not f.startswith("-O")] + ["-O0"]
    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / setup_py.BUILD_INFO_HEADER).write_text(setup_py.build_info_header("portability check", "", True))
    includes = [os.path.join(ROOT, "csrc"), str(generated), *cpp_extension.include_paths(),
                sysconfig.get_paths()["include"]]
    command = [*cxx, *TORCH_FLAGS, *cflags, *extra, *(f"-I{d}" for d in includes), "-S", "-o", os.devnull]

    def compile_one(source):
        run = subprocess.run([*command, source], capture_output=True, text=True, timeout=600)
        return source, run.returncode, run.stderr

    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for source, returncode, stderr in pool.map(compile_one, cpu_sources()):
            if returncode != 0:
                errors = [line for line in stderr.splitlines() if "error" in line]
                failures.append(f"{os.path.relpath(source, ROOT)}:\n  " + "\n  ".join(errors[:10]))
    return failures


def require(compiler, why):
    path = shutil.which(compiler)
    if path is None:
        pytest.skip(f"{compiler} not found: {why}")
    return path


@pytest.mark.slow
def test_cpu_sources_compile_for_aarch64(tmp_path):
    cxx = require("aarch64-linux-gnu-g++", "install Debian's g++-aarch64-linux-gnu to check the aarch64 build")
    failures = compile_all([cxx], tmp_path)
    assert not failures, "aarch64 compile errors:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="clang check uses this host's libstdc++ (Linux)")
def test_cpu_sources_compile_with_clang(tmp_path):
    cxx = require("clang++", "install clang to check the clang build")
    failures = compile_all([cxx], tmp_path)
    assert not failures, "clang compile errors:\n" + "\n".join(failures)


def test_setup_flags_on_this_host_include_openmp():
    """The native build gets OpenMP here (gcc): at::parallel_for needs it to use every core."""
    cflags, ldflags, note = load_setup().cxx_flags(["c++"])
    assert "-fopenmp" in cflags and "-fopenmp" in ldflags, (cflags, ldflags, note)


def test_setup_builds_without_openmp_when_the_compiler_has_none(tmp_path):
    """A compiler without -fopenmp (Apple clang without libomp): no OpenMP flags, and the
    build line says so."""
    fake = tmp_path / "c++-without-openmp"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec c++ "$@"\n')
    fake.chmod(0o755)
    env_prefix = os.environ.get("CONDA_PREFIX")
    if env_prefix and os.path.isfile(os.path.join(env_prefix, "include", "omp.h")):
        pytest.skip("a conda libomp would be picked up")
    cflags, ldflags, note = load_setup().cxx_flags([str(fake)])
    assert not any("openmp" in f for f in cflags + ldflags), (cflags, ldflags)
    assert "WITHOUT OpenMP" in note, note
