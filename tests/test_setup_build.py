"""setup.py's build decisions (issue 12): where the CUDA toolkit is found, which archs are
compiled without a GPU, and what the installed extension reports through `spsr-fast doctor`.
Toolkits here are fakes: a bin/nvcc script answering --version, --list-gpu-arch and -dryrun
like the real one, and an include/cuda_runtime.h."""
import contextlib
import io
import textwrap

import pytest
import torch

from test_build_portability import load_setup

TORCH_ARCH_FLAGS = "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"


@pytest.fixture
def setup_py(monkeypatch, tmp_path):
    for var in ("CUDA_HOME", "CUDA_PATH", "TORCH_CUDA_ARCH_LIST", "SPSR_FAST_CUDA"):
        monkeypatch.delenv(var, raising=False)
    module = load_setup()
    monkeypatch.setattr(module, "STANDARD_CUDA_HOME", str(tmp_path / "no-standard-toolkit"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getArchFlags", lambda: TORCH_ARCH_FLAGS, raising=False)
    return module


def fake_toolkit(root, release="13.0", archs=("80", "90", "100")):
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    listed = "\\n".join(f"compute_{a}" for a in archs)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in
          *-dryrun*) echo "#\\$ _HERE_=$(cd "${{0%/*}}" && pwd)" >&2 ;;
          *--list-gpu-arch*) printf '{listed}\\n' ;;
          *--version*) echo "Cuda compilation tools, release {release}, V{release}.0" ;;
        esac
        """))
    nvcc.chmod(0o755)
    return root


def test_cuda_home_wins_and_a_wrong_one_is_reported_not_replaced(setup_py, monkeypatch, tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert setup_py.find_cuda_toolkit()[0] == str(toolkit)
    monkeypatch.setattr(setup_py, "STANDARD_CUDA_HOME", str(toolkit))  # a valid fallback exists...
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "nowhere"))
    home, why = setup_py.find_cuda_toolkit()  # ...but an explicit CUDA_HOME is never swapped for it
    assert home is None and f"CUDA_HOME={tmp_path / 'nowhere'} is not a CUDA toolkit" in why


def test_nvcc_wrapper_on_path_resolves_to_its_real_toolkit(setup_py, monkeypatch, tmp_path):
    """/usr/local/bin/nvcc on this machine is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`: the
    toolkit is where nvcc really runs, not the wrapper's parent directory."""
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper_bin = tmp_path / "wrapper-bin"
    wrapper_bin.mkdir()
    (wrapper_bin / "nvcc").write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    (wrapper_bin / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(wrapper_bin))
    home, why = setup_py.find_cuda_toolkit()
    assert home == str(toolkit), why


@pytest.mark.skipif(torch.version.cuda is None, reason="torch is not a CUDA build")
def test_no_toolkit_anywhere_gives_a_cpu_only_build_saying_why(setup_py, monkeypatch):
    home, why = setup_py.cuda_build_decision()
    assert home is None and why.startswith("no CUDA toolkit found")
    monkeypatch.setenv("SPSR_FAST_CUDA", "1")
    with pytest.raises(SystemExit, match="SPSR_FAST_CUDA=1 but no CUDA toolkit found"):
        setup_py.cuda_build_decision()


@pytest.mark.skipif(torch.version.cuda is None, reason="torch is not a CUDA build")
def test_toolkit_of_another_cuda_major_gives_a_cpu_only_build(setup_py, monkeypatch, tmp_path):
    other = str(int(torch.version.cuda.split(".")[0]) - 1) + ".4"
    monkeypatch.setenv("CUDA_HOME", str(fake_toolkit(tmp_path / "old", release=other)))
    home, why = setup_py.cuda_build_decision()
    assert home is None and f"is {other}, torch was built with CUDA {torch.version.cuda}" in why


def test_archs_without_gpu_are_torchs_that_nvcc_supports_ptx_on_the_newest(setup_py, monkeypatch, tmp_path):
    toolkit = str(fake_toolkit(tmp_path / "cuda", archs=("80", "86", "90", "100")))
    archs, how = setup_py.choose_cuda_archs(toolkit)
    assert archs == "8.0;8.6;9.0;10.0+PTX"
    assert "no GPU visible" in how and "not 7.5, 12.0" in how
    monkeypatch.setattr(torch._C, "_cuda_getArchFlags", lambda: "")  # torch lists none
    assert setup_py.choose_cuda_archs(toolkit)[0] == "8.0;8.6;9.0;10.0+PTX"  # fixed list, filtered


def test_explicit_arch_list_wins_and_a_visible_gpu_keeps_torchs_choice(setup_py, monkeypatch, tmp_path):
    toolkit = str(fake_toolkit(tmp_path / "cuda"))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    assert setup_py.choose_cuda_archs(toolkit) == ("8.6", "from TORCH_CUDA_ARCH_LIST")
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert setup_py.choose_cuda_archs(toolkit)[0] is None


def test_arch_list_recorded_from_torchs_own_gencode_flags(setup_py, monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0;12.0+PTX")
    assert setup_py.describe_gencode(cpp_extension._get_cuda_arch_flags()) == "8.0;9.0;12.0+PTX"


def test_doctor_reports_what_the_build_recorded():
    from spsr_fast import _extension
    from spsr_fast.cli import doctor

    info = _extension.build_info()
    if info is None:
        pytest.skip("spsr_fast._C is not loaded or predates build_info(): rebuild it")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert doctor.run(None) == 0
    text = out.getvalue()
    if info["cuda_archs"]:
        assert f"CUDA kernels compiled for: {info['cuda_archs']}\n" in text
        assert _extension.has_kernel("gradient_map", "CUDA")
    else:
        assert "CUDA kernels: not compiled (CPU-only build)" in text and "CPU-only" in info["summary"]
    assert f"build: {info['summary']}\n" in text  # setup.py's build line
    assert info["summary"].startswith("building spsr_fast._C ")
