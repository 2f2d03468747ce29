"""Builds spsr_fast._C from csrc/ and installs kernels/ as spsr_fast._triton.

CPU kernels are always built. CUDA kernels are built when torch is a CUDA build and a CUDA
toolkit is found: CUDA_HOME, else CUDA_PATH, else /usr/local/cuda, else the toolkit of the
`nvcc` on PATH (asked where it lives, so wrapper scripts and symlinks resolve). SPSR_FAST_CUDA=0
forces a CPU-only build; SPSR_FAST_CUDA=1 makes a missing toolkit an error instead.

CUDA archs: TORCH_CUDA_ARCH_LIST when set; else, with a GPU visible, torch's own choice (the
visible cards); else the archs torch itself was compiled for that this nvcc supports, +PTX on
the newest (a fixed list when torch lists none). The build prints one line saying what it
builds and why, and records it in the extension (`spsr-fast doctor` shows it).
"""
import glob
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Used when torch lists no archs: Turing to Blackwell, the cards current CUDA 12/13 target.
FALLBACK_ARCHS = ("7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0")
BUILD_INFO_HEADER = "spsr_fast_build_info.h"

STANDARD_CUDA_HOME = "/usr/local/cuda"
# setup.py commands that compile; metadata and sdists need no torch.
COMPILING_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg"}

try:
    import torch
except ImportError:
    torch = None

# setuptools says this for every editable install whose packages map to other folders
# (spsr_fast._triton is kernels/), and recent pip shows it as a warning: it is information only.
warnings.filterwarnings("ignore", message="Editable installation", category=UserWarning)
# Importing cpp_extension without a GPU logs "No CUDA runtime is found" although a toolkit-only
# build is what this file supports; our own build line says what is built.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def is_toolkit(home):
    return (os.path.isfile(os.path.join(home, "bin", "nvcc"))
            and os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")))


def nvcc_home(nvcc):
    """The toolkit root of an nvcc on PATH: nvcc's dry run names the directory it really runs
    from (`_HERE_`), which a wrapper script or symlink in another bin/ would hide."""
    try:
        run = subprocess.run([nvcc, "-dryrun", "-E", "-x", "cu", os.devnull], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^#\$ _HERE_=(.+)$", run.stdout + run.stderr, re.MULTILINE)
    if found:
        return os.path.dirname(os.path.realpath(found.group(1).strip()))
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def find_cuda_toolkit():
    """(root or None, why): the toolkit to build with, or one phrase saying why there is none."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:  # an explicit choice: used or reported, never replaced by another toolkit
            if is_toolkit(home):
                return home, f"{var}={home}"
            return None, f"{var}={home} is not a CUDA toolkit (no bin/nvcc and include/cuda_runtime.h)"
    if is_toolkit(STANDARD_CUDA_HOME):
        return STANDARD_CUDA_HOME, STANDARD_CUDA_HOME
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = nvcc_home(nvcc)
        if home and is_toolkit(home):
            return home, f"{home}, from {nvcc}"
        return None, f"the nvcc on PATH ({nvcc}) does not lead to a CUDA toolkit"
    return None, f"no CUDA toolkit found: CUDA_HOME and CUDA_PATH unset, no {STANDARD_CUDA_HOME}, no nvcc on PATH"


def nvcc_output(home, *args):
    try:
        return subprocess.run([os.path.join(home, "bin", "nvcc"), *args], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def cuda_build_decision():
    """(toolkit root or None, reason): whether CUDA kernels are built, and why in one phrase."""
    wanted = os.environ.get("SPSR_FAST_CUDA", "auto").lower()
    if wanted not in ("auto", "0", "1"):
        sys.exit(f"spsr-fast: SPSR_FAST_CUDA must be auto, 0 or 1, got {wanted!r}")
    if wanted == "0":
        return None, "SPSR_FAST_CUDA=0"
    home, why = None, f"torch {torch.__version__} is not a CUDA build"
    if torch.version.cuda is not None:
        home, why = find_cuda_toolkit()
    if home:
        version = re.search(r"release (\d+)\.(\d+)", nvcc_output(home, "--version") or "")
        if not version:
            home, why = None, f"{home}/bin/nvcc --version does not run"
        elif version.group(1) != torch.version.cuda.split(".")[0]:
            home, why = None, (f"the CUDA toolkit at {home} is {version.group(1)}.{version.group(2)}, torch was "
                               f"built with CUDA {torch.version.cuda} (set CUDA_HOME to a matching toolkit)")
    if home is None and wanted == "1":
        sys.exit(f"spsr-fast: SPSR_FAST_CUDA=1 but {why}")
    return home, why


def arch_number(name):
    """'sm_90' / 'sm_90a' / 'compute_120' -> '9.0' / '9.0a' / '12.0'; None for anything else."""
    found = re.fullmatch(r"(?:sm|compute)_(\d+)(\d)([af]?)", name)
    return f"{found[1]}.{found[2]}{found[3]}" if found else None


def arch_key(arch):
    major, minor = arch.rstrip("af").split(".")
    return int(major), int(minor), arch


def choose_cuda_archs(home):
    """(TORCH_CUDA_ARCH_LIST to build with, or None for torch's choice; how it was chosen)."""
    explicit = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    gpus = torch.cuda.device_count()
    if explicit == "native" and not gpus:
        sys.exit("spsr-fast: TORCH_CUDA_ARCH_LIST=native needs a visible GPU; unset it or name the archs")
    if explicit:
        return explicit, "from TORCH_CUDA_ARCH_LIST"
    if gpus:
        return None, "torch's choice for the visible GPUs"
    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)() or " ".join(torch.cuda.get_arch_list())
    archs = sorted({a for a in map(arch_number, flags.split()) if a and a[-1].isdigit()}, key=arch_key)
    how = "no GPU visible: the archs torch was built for"
    if not archs:
        archs, how = list(FALLBACK_ARCHS), "no GPU visible and torch lists no archs: a fixed list"
    listed = nvcc_output(home, "--list-gpu-arch")
    if listed:  # CUDA >= 11.4; older nvcc compiles what it can't list
        supported = {arch_number(a) for a in listed.split()}
        dropped = [a for a in archs if a not in supported]
        archs = [a for a in archs if a in supported]
        how += " that this nvcc supports" + (f" (not {', '.join(dropped)})" if dropped else "")
    if not archs:
        sys.exit(f"spsr-fast: the nvcc at {home} supports none of the archs torch was built for; "
                 "set TORCH_CUDA_ARCH_LIST, or SPSR_FAST_CUDA=0 for a CPU-only build")
    archs[-1] += "+PTX"
    return ";".join(archs), how


def describe_gencode(flags):
    """nvcc -gencode flags in TORCH_CUDA_ARCH_LIST notation: '7.5;8.0;9.0+PTX'."""
    real, ptx = [], []
    for flag in flags:
        for code in re.findall(r"code=\[?([\w,]+)", flag):
            for name in code.split(","):
                arch = arch_number(name)
                if arch:
                    (ptx if name.startswith("compute_") else real).append(arch)
    archs = sorted(set(real) | set(ptx), key=arch_key)
    return ";".join(a + ("+PTX" if a in ptx else "") for a in archs)


def compiles(cxx, flags, link_flags=(), source="int main() { return 0; }\n"):
    """Whether the C++ compiler builds and links `source` with these flags, without warnings."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.cpp")
        with open(path, "w") as f:
            f.write(source)
        try:
            run = subprocess.run([*cxx, *flags, "-Werror", path, "-o", os.path.join(tmp, "probe"), *link_flags],
                                 capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
        return run.returncode == 0


OPENMP_PROBE = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def openmp_flags(cxx):
    """(compile flags, link flags, note): OpenMP for the compiler torch's build will use.
    ATen's at::parallel_for is an inline `#pragma omp parallel` in torch's headers: compiled
    without OpenMP, every CPU kernel here runs on one thread."""
    if compiles(cxx, ["-fopenmp"], ["-fopenmp"], OPENMP_PROBE):
        return ["-fopenmp"], ["-fopenmp"], ""
    # Apple clang: no -fopenmp driver flag, but Homebrew's / conda's libomp works through the
    # preprocessor flag.
    prefixes = [os.environ.get("CONDA_PREFIX", ""), "/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"]
    for prefix in filter(None, prefixes):
        if os.path.isfile(os.path.join(prefix, "include", "omp.h")):
            flags = ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"]
            link = [f"-L{prefix}/lib", "-lomp", f"-Wl,-rpath,{prefix}/lib"]
            if compiles(cxx, flags, link, OPENMP_PROBE):
                return flags, link, f", OpenMP from libomp in {prefix}"
    return [], [], (f", WITHOUT OpenMP ({shlex.join(cxx)} has no working -fopenmp and no libomp was found:"
                    " the CPU kernels run on one thread)")


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


def build_info_header(summary, cuda_archs, openmp):
    """csrc/python_module.cpp exposes these through spsr_fast._C.build_info()."""
    return (f"// Generated by setup.py for this build of spsr_fast._C.\n#pragma once\n"
            f"#define SPSR_FAST_BUILD_SUMMARY {json.dumps(summary, ensure_ascii=True)}\n"
            f"#define SPSR_FAST_CUDA_ARCHS {json.dumps(cuda_archs, ensure_ascii=True)}\n"
            f"#define SPSR_FAST_OPENMP {int(openmp)}\n")


def cxx_flags(cxx):
    """(compile flags, link flags, note) for the CPU sources with compiler `cxx` (argv list)."""
    omp_cflags, omp_ldflags, note = openmp_flags(cxx)
    flags = ["-O3", "-Wall", "-Wno-unknown-pragmas"] + omp_cflags
    # GCC notes ABI changes of vector/pair arguments (torch's headers on aarch64): not ours to fix.
    if compiles(cxx, ["-Wno-psabi"]):
        flags.append("-Wno-psabi")
    return flags, omp_ldflags, note


def extension():
    """(Extension, build line, CUDA arch list or '', whether OpenMP is on)."""
    home, reason = cuda_build_decision()
    arch_list, arch_how = (choose_cuda_archs(home) if home else (None, ""))
    if home:
        # Torch reads these when it compiles; CUDA_HOME also fixes the root torch would guess
        # from a wrapper `nvcc` on PATH.
        os.environ["CUDA_HOME"] = home
        if arch_list:
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    from torch.utils import cpp_extension

    cxx = shlex.split(os.environ.get("CXX", "c++"))  # what torch's ninja build compiles with
    cflags, ldflags, omp_note = cxx_flags(cxx)
    ninja_note = "" if cpp_extension.is_ninja_available() else ", no ninja: one file at a time (pip install ninja)"
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc")]
    if home:
        cuda_archs = describe_gencode(cpp_extension._get_cuda_arch_flags())
        summary = (f"building spsr_fast._C with CPU and CUDA kernels for {cuda_archs} ({arch_how}; "
                   f"toolkit {reason}, torch CUDA {torch.version.cuda}){omp_note}{ninja_note}")
        ext = cpp_extension.CUDAExtension(
            "spsr_fast._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            include_dirs=include_dirs + pip_cuda_include_dirs(home),
            extra_compile_args={"cxx": cflags, "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]},
            extra_link_args=ldflags,
        )
    else:
        cuda_archs = ""
        summary = f"building spsr_fast._C CPU-only, no CUDA kernels ({reason}){omp_note}{ninja_note}"
        ext = cpp_extension.CppExtension("spsr_fast._C", sources, include_dirs=include_dirs,
                                         extra_compile_args={"cxx": cflags}, extra_link_args=ldflags)
    return ext, summary, cuda_archs, bool("-fopenmp" in cflags)


def build_ext_command(summary, header):
    """torch's BuildExtension (ninja), printing the build line and adding the build-info header
    (in the build's temp dir) to the include path."""
    from torch.utils.cpp_extension import BuildExtension

    class Command(BuildExtension):
        def build_extensions(self):
            print(f"spsr-fast: {summary}", flush=True)
            generated = os.path.join(os.path.abspath(self.build_temp), "spsr_fast_generated")
            os.makedirs(generated, exist_ok=True)
            path = os.path.join(generated, BUILD_INFO_HEADER)
            if not os.path.exists(path) or open(path).read() != header:  # keep ninja's timestamps
                with open(path, "w") as f:
                    f.write(header)
            for ext in self.extensions:
                ext.include_dirs.append(generated)
            super().build_extensions()

    return Command.with_options(use_ninja=True)


def main():
    packages = {"packages": find_packages(include=["spsr_fast", "spsr_fast.*"]) + ["spsr_fast._triton"],
                "package_dir": {"spsr_fast._triton": "kernels"}}
    if torch is None:
        if COMPILING_COMMANDS & set(sys.argv[1:]):
            sys.exit("spsr-fast: torch must be installed before building spsr-fast, which compiles against "
                     "the installed torch: pip install torch setuptools wheel ninja, then pip install "
                     "--no-build-isolation (an isolated build has no torch)")
        setup(**packages)  # metadata or an sdist (MANIFEST.in carries csrc/)
        return
    ext, summary, cuda_archs, openmp = extension()
    setup(
        **packages,
        ext_modules=[ext],
        cmdclass={"build_ext": build_ext_command(summary, build_info_header(summary, cuda_archs, openmp))},
    )


# setuptools runs this file as __main__; tests import it for its flags and probes.
if __name__ == "__main__":
    main()
