"""`spsr-fast export --format pt2`: a torch.export program (and an AOTInductor package) that
a fresh interpreter loads and runs without spsr_fast, matching spsr-fast's fp32 output."""
import contextlib
import io
import os
import subprocess
import sys

import pytest
import torch

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.export import read_pt2_metadata
from spsr_fast.export.deploy import foreign_ops
from spsr_fast.weights import resolve_model

from authors_spsr_oracle import authors_spsr_state_dict, spsr_keys

FP32_TOLERANCE = 1e-4
SHAPES = ((1, 16, 16), (2, 24, 20))

# Runs an exported file in a fresh interpreter where importing spsr_fast fails, then checks
# that nothing of spsr_fast got imported some other way.
FRESH_INTERPRETER = r'''
import importlib.abc, sys

class RefuseSpsrFast(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "spsr_fast":
            raise ImportError(f"{name}: an exported program must run without spsr_fast")
        return None

sys.meta_path.insert(0, RefuseSpsrFast())
import torch

kind, program, inputs, outputs = sys.argv[1:5]
run = torch.export.load(program).module() if kind == "program" else torch._inductor.aoti_load_package(program)
results = []
with torch.no_grad():
    for x in torch.load(inputs, weights_only=True):
        y = run(x)
        results.append([t.contiguous() for t in (y if isinstance(y, (tuple, list)) else [y])])
torch.save(results, outputs)
leaked = sorted(m for m in sys.modules if m.split(".")[0] == "spsr_fast")
assert not leaked, f"spsr_fast modules imported: {leaked}"
'''


def export(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", *map(str, argv)])
    assert code == 0, err.getvalue()
    return out.getvalue()


def inputs(shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((n, 3, h, w), generator=g) for n, h, w in shapes]


def run_fresh(kind, path, xs, tmp_path):
    """Outputs of the exported file at `path` for each input, from a fresh interpreter."""
    torch.save(xs, tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", FRESH_INTERPRETER, kind, str(path), str(tmp_path / "inputs.pt"),
                             str(tmp_path / "outputs.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "outputs.pt", weights_only=True)


def spsr_fast_outputs(model, x):
    with torch.no_grad():
        result = model(x)
    return {"sr": result[1], "gradient": result[0]} if isinstance(result, tuple) else {"sr": result}


def assert_matches(model, xs, results, names, tolerance=FP32_TOLERANCE):
    errors = []
    for x, got in zip(xs, results):
        want = spsr_fast_outputs(model, x)
        assert len(got) == len(names)
        for name, value in zip(names, got):
            assert value.dtype == torch.float32 and value.shape == want[name].shape, name
            errors.append((tuple(x.shape), name, (value - want[name]).abs().max().item()))
    print("\n" + ", ".join(f"{'x'.join(map(str, s))} {n} {e:.2g}" for s, n, e in errors))
    assert max(e for *_, e in errors) <= tolerance


@pytest.fixture(scope="module")
def spsr_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "spsr_authors.pth"
    torch.save(authors_spsr_state_dict(spsr_keys(nf=8, nb=20, gc=4, steps=2), seed=4), path)
    return path


def test_program_runs_without_spsr_fast_and_matches(spsr_file, tmp_path):
    """SPSRNet from the authors' layout: both outputs, two input shapes, fresh interpreter."""
    path = tmp_path / "spsr.pt2"
    out = export(spsr_file, "-o", path, "--no-aoti")
    assert "torch.export program" in out and not (tmp_path / "spsr.aoti-cpu.pt2").exists()
    meta = read_pt2_metadata(path)
    assert meta["architecture"] == "SPSRNet" and meta["output_names"] == "sr,gradient"
    assert meta["source_layout"] == "authors_spsr" and meta["input_format"] == "float32 NCHW, RGB, range [0, 1]"
    assert foreign_ops(torch.export.load(str(path))) == []
    xs = inputs()
    results = run_fresh("program", path, xs, tmp_path)
    assert_matches(spsr_fast.load_model(spsr_file), xs, results, ["sr", "gradient"])


def test_static_program_takes_only_its_shape(tmp_path):
    path = tmp_path / "static.pt2"
    export("-o", path, "--no-aoti", "--static", "2x12x20")
    module = torch.export.load(str(path)).module()
    model = spsr_fast.load_model(resolve_model("default"))
    x = inputs(((2, 12, 20),))
    with torch.no_grad():
        assert_matches(model, x, [[module(x[0])]], ["sr"])
        with pytest.raises(Exception, match="12"):
            module(torch.rand(2, 3, 16, 20))


def test_fp16_program_error_is_bounded(tmp_path):
    path = tmp_path / "fp16.pt2"
    export("-o", path, "--no-aoti", "--fp16")
    assert read_pt2_metadata(path)["precision"].startswith("fp16")
    module = torch.export.load(str(path)).module()
    load = lambda: spsr_fast.load_model(resolve_model("default"))  # noqa: E731
    truth_model, half_model, fp32_model = load().double(), load().half(), load()
    for x in inputs():
        with torch.no_grad(), spsr_fast.ops.backend("reference"):
            got = module(x)
            truth, half, fp32 = truth_model(x.double()), half_model(x.half()).double(), fp32_model(x)
        assert got.dtype == torch.float32
        err, half_err = (got.double() - truth).abs().max().item(), (half - truth).abs().max().item()
        print(f"\nfp16 pt2 {tuple(x.shape)}: vs fp32 {(got - fp32).abs().max().item():.3g}, vs float64 {err:.3g} "
              f"(PyTorch fp16 {half_err:.3g})")
        assert err <= 2 * half_err + float(torch.finfo(torch.float16).eps) * truth.abs().max().item()


@pytest.mark.slow
def test_aotinductor_package_runs_without_spsr_fast(tmp_path):
    path = tmp_path / "default.pt2"
    out = export("-o", path)
    if "AOTInductor package skipped:" in out:
        pytest.skip(out.split("AOTInductor package skipped:")[1].strip().splitlines()[0])
    package = tmp_path / "default.aoti-cpu.pt2"
    assert package.is_file() and f"wrote {package}" in out
    xs = inputs()
    results = run_fresh("aoti", package, xs, tmp_path)
    assert_matches(spsr_fast.load_model(resolve_model("default")), xs, results, ["sr"])
