"""`spsr-fast export` to ONNX: every model load_model reads, run in ONNX Runtime (CPU) and
OpenVINO at two input shapes from one file and compared with spsr-fast's own fp32 output;
standard operators only, opset 17, metadata, fp16, static shapes, outputs by name, errors.

Runtimes that are not installed are skipped with the reason (CI installs ONNX Runtime)."""
import contextlib
import io
import json
import os
import stat
import sys

import numpy as np
import pytest
import torch

import spsr_fast
from spsr_fast.cli import main
from spsr_fast.export import ExportError
from spsr_fast.export.deploy import deployment_model, dynamic_shapes, example_input, foreign_ops, trace
from spsr_fast.export.files import atomic_path
from spsr_fast.export.metadata import file_sha256
from spsr_fast.export.onnx_export import downgrade_18_to_17, ir_version_for, nonstandard_nodes
from spsr_fast.export.verify import verify
from spsr_fast.models import VGGDiscriminator128
from spsr_fast.weights import resolve_model

from authors_esrgan_oracle import basicsr_keys
from authors_spsr_oracle import authors_spsr_state_dict, random_weights, reference_json, spsr_keys

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxscript)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (the torch.onnx exporter needs it)")

FP32_TOLERANCE = 1e-4  # the bound on max abs error against spsr-fast's fp32 output
SHAPES = ((1, 16, 16), (2, 24, 20))  # two input sizes (and batches) from one dynamic file


def onnxruntime_or_skip():
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")


def openvino_or_skip():
    return pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")


def export(*argv):
    """Runs `spsr-fast export ARGV`; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def exported(*argv):
    code, out, err = export(*argv)
    assert code == 0, err
    return out


def inputs(channels=3, multiple=1, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((n, channels, h * multiple, w * multiple), generator=g) for n, h, w in shapes]


def spsr_fast_outputs(model, x):
    """spsr-fast's fp32 outputs by name (the default backend: what `upscale` runs)."""
    with torch.no_grad():
        result = model(x)
    if isinstance(result, tuple):
        return {"sr": result[1].numpy(), "gradient": result[0].numpy()}
    return {"sr": result.numpy()}


def run_onnxruntime(path, x):
    ort = onnxruntime_or_skip()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"lr": x.numpy()})))


def run_openvino(path, x):
    ov = openvino_or_skip()
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert len(compiled.outputs) == len(names)
    result = compiled({"lr": x.numpy()})
    return {name: np.asarray(result[compiled.output(name)]) for name in names}


RUNTIMES = {"onnxruntime": run_onnxruntime, "openvino": run_openvino}


def max_errors(model, path, runtime, xs, expected_outputs):
    """{(shape, output): max abs error} of the file in `runtime` against spsr-fast fp32."""
    errors = {}
    for x in xs:
        got = RUNTIMES[runtime](path, x)
        assert list(got) == list(expected_outputs)
        want = spsr_fast_outputs(model, x)
        for name in expected_outputs:
            # outputs of order 1, like a trained model's: an error bound on near-zero outputs proves nothing
            assert np.abs(want[name]).max() > 0.2, name
            assert got[name].shape == want[name].shape, name
            assert got[name].dtype == np.float32
            errors[(tuple(x.shape), name)] = float(np.abs(got[name] - want[name]).max())
    print(f"\n{runtime} {os.path.basename(path)}: " + ", ".join(
        f"{'x'.join(map(str, s))} {n} {e:.2g}" for (s, n), e in errors.items()))
    return errors


def metadata(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def assert_standard_dynamic_graph(path, outputs, scale, opset=17, multiple=1):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert nonstandard_nodes(model) == [] and len(model.functions) == 0
    assert {(e.domain, e.version) for e in model.opset_import} == {("", opset)}
    assert model.ir_version == ir_version_for(opset)
    assert [i.name for i in model.graph.input] == ["lr"]
    assert [o.name for o in model.graph.output] == list(outputs)
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    side = (lambda name: f"{multiple}*{name}") if multiple > 1 else (lambda name: name)
    assert dims(model.graph.input[0]) == ["batch", 3, side("height"), side("width")]
    for output in model.graph.output:
        assert dims(output) == ["batch", 3, f"{scale * multiple}*height", f"{scale * multiple}*width"]


# ---------------------------------------------------------------------------------------- models

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    spsr = folder / "spsr_authors.pth"  # the authors' layout needs >= 20 blocks (taps 5..20)
    torch.save(authors_spsr_state_dict(spsr_keys(nf=8, nb=20, gc=4, steps=2), seed=4), spsr)
    basicsr_x2 = folder / "RealESRGAN_x2plus_like.pth"
    torch.save({"params_ema": random_weights(basicsr_keys(8, 1, 8, scale=2), seed=5)}, basicsr_x2)
    discriminator = folder / "discriminator.safetensors"
    spsr_fast.save_model(VGGDiscriminator128(base_nf=8), discriminator)
    return {"default": resolve_model("default"), "spsr": spsr, "basicsr_x2": basicsr_x2,
            "discriminator": discriminator, "folder": folder}


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory):
    """The bundled default model, exported with MODEL omitted (dynamic, fp32, opset 17), --verify."""
    path = tmp_path_factory.mktemp("bundled") / "default.onnx"
    return path, exported("-o", path, "--verify")


@pytest.fixture(scope="module")
def spsr_onnx(files, tmp_path_factory):
    path = tmp_path_factory.mktemp("spsr") / "spsr.onnx"
    return path, exported(files["spsr"], "-o", path)


# ---------------------------------------------------------------------------------------- fp32 ONNX

def test_bundled_model_matches_in_onnxruntime_at_two_shapes(bundled_onnx):
    path, out = bundled_onnx
    assert "opset 17" in out and "dynamic batch/height/width" in out
    assert "input lr (float32 NCHW, RGB, range [0, 1]), outputs sr (float32)" in out
    checks = [line for line in out.splitlines() if line.startswith("verify: onnxruntime")]
    assert len(checks) == 2 and all(line.endswith(" ok") for line in checks)  # --verify ran the file
    assert_standard_dynamic_graph(path, ["sr"], scale=4)
    model = spsr_fast.load_model(resolve_model("default"))
    errors = max_errors(model, path, "onnxruntime", inputs(), ["sr"])
    assert len(errors) == 2 and max(errors.values()) <= FP32_TOLERANCE


def test_bundled_model_matches_in_openvino(bundled_onnx):
    path, _ = bundled_onnx
    model = spsr_fast.load_model(resolve_model("default"))
    errors = max_errors(model, path, "openvino", inputs(), ["sr"])
    assert max(errors.values()) <= FP32_TOLERANCE


def test_metadata_tells_a_runtime_user_how_to_call_the_model(bundled_onnx):
    path, _ = bundled_onnx
    meta = metadata(path)
    source = resolve_model("default")
    assert meta["architecture"] == "RRDBNet" and meta["scale"] == "4"
    assert (meta["nf"], meta["nb"], meta["gc"]) == ("32", "2", "16")
    assert json.loads(meta["config"])["nb"] == 2
    assert meta["input_name"] == "lr" and meta["input_format"] == "float32 NCHW, RGB, range [0, 1]"
    assert meta["input_shape"] == "dynamic batch x 3 x height x width" and meta["input_multiple"] == "1"
    assert meta["output_names"] == "sr" and meta["opset"] == "17" and meta["precision"] == "fp32"
    assert meta["source_sha256"] == file_sha256(source) and meta["source_file"] == os.path.basename(source)
    assert meta["source_layout"] == "spsr_fast" and meta["spsr_fast_version"] == spsr_fast.__version__
    # nothing of the exporting machine: no per-node stack traces with its file paths
    model = onnx.load(str(path))
    assert not any(len(n.metadata_props) for n in model.graph.node)


def test_spsrnet_in_the_authors_layout_gives_both_outputs_by_name(files, spsr_onnx):
    path, out = spsr_onnx
    assert "authors_spsr layout" in out and "outputs sr, gradient" in out
    assert_standard_dynamic_graph(path, ["sr", "gradient"], scale=4)
    assert metadata(path)["output_names"] == "sr,gradient"
    model = spsr_fast.load_model(files["spsr"])
    for runtime in RUNTIMES:
        errors = max_errors(model, path, runtime, inputs(), ["sr", "gradient"])
        assert len(errors) == 4 and max(errors.values()) <= FP32_TOLERANCE, runtime


def test_gradient_output_is_the_predicted_map_not_the_input_gradient(files, spsr_onnx):
    """`gradient` is the gradient branch's HR map (the authors' x_out_branch), at SR size."""
    path, _ = spsr_onnx
    model = spsr_fast.load_model(files["spsr"])
    x = inputs(shapes=((1, 12, 10),))[0]
    got = run_onnxruntime(path, x)
    with torch.no_grad():
        branch_map, sr, lr_grad = model(x)
    assert got["gradient"].shape == (1, 3, 48, 40) and lr_grad.shape == (1, 3, 12, 10)
    np.testing.assert_allclose(got["gradient"], branch_map.numpy(), atol=FP32_TOLERANCE, rtol=0)
    assert np.abs(got["gradient"] - sr.numpy()).max() > 100 * FP32_TOLERANCE


def test_outputs_sr_and_static_shape(files, tmp_path):
    """`--outputs sr` drops the branch map; `--static HxW` fixes batch 1 and the size."""
    path = tmp_path / "spsr_static.onnx"
    out = exported(files["spsr"], "-o", path, "--outputs", "sr", "--static", "20x12")
    assert "static 1x20x12" in out
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["sr"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 20, 12] and not any(d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim)
    assert metadata(path)["input_shape"] == "static 1 x 3 x 20 x 12"
    spsr = spsr_fast.load_model(files["spsr"])
    errors = max_errors(spsr, path, "onnxruntime", inputs(shapes=((1, 20, 12),)), ["sr"])
    assert max(errors.values()) <= FP32_TOLERANCE
    ort = onnxruntime_or_skip()
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):
        run_onnxruntime(path, torch.rand(1, 3, 24, 12))


def test_basicsr_x2_pixel_unshuffle_model(files, tmp_path):
    """BasicSR x2 RRDBNets unshuffle their input: sides stay dynamic, as multiples of 2."""
    path = tmp_path / "x2.onnx"
    out = exported(files["basicsr_x2"], "-o", path)
    assert "pixel-unshuffle 2" in out and "basicsr layout" in out
    assert_standard_dynamic_graph(path, ["sr"], scale=2, multiple=2)
    assert metadata(path)["input_multiple"] == "2"
    assert metadata(path)["input_shape"] == "dynamic batch x 3 x (2*height) x (2*width)"
    model = spsr_fast.load_model(files["basicsr_x2"])
    errors = max_errors(model, path, "onnxruntime", inputs(multiple=2), ["sr"])
    assert max(errors.values()) <= FP32_TOLERANCE


def test_verify_reports_a_file_that_does_not_match(bundled_onnx):
    """`--verify`'s comparison fails a file of other weights (and passes the right one)."""
    onnxruntime_or_skip()
    path, _ = bundled_onnx
    model = spsr_fast.load_model(resolve_model("default"))
    assert all(check.ok for check in verify(model, path, "onnxruntime", "fp32", None, ("sr",)))
    with torch.no_grad():
        model.conv_last.bias.add_(1e-3)
    checks = verify(model, path, "onnxruntime", "fp32", None, ("sr",))
    assert len(checks) == 2 and not any(check.ok for check in checks)


# ---------------------------------------------------------------------------------------- fp16

def photo_crops():
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (test extra)")
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    return [image[None, :, 100:116, 180:196], torch.stack([image[:, 40:64, 200:220], image[:, 300:324, 60:80]])]


def test_fp16_onnx_error_is_bounded_by_the_same_dtype_reference(tmp_path):
    """Weights and activations in fp16, input and output float32. Error against the float64
    truth at most 2x that of PyTorch's own fp16 computation (+ one fp16 ulp of the largest
    value); the error against fp32 is reported."""
    path = tmp_path / "default_fp16.onnx"
    out = exported("default", "-o", path, "--fp16")
    assert "fp16" in out
    graph = onnx.load(str(path)).graph
    assert {t.data_type for t in graph.initializer if len(t.dims) == 4} == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert metadata(path)["precision"].startswith("fp16")
    load = lambda: spsr_fast.load_model(resolve_model("default"))  # noqa: E731
    truth_model, half_model, fp32_model = load().double(), load().half(), load()
    for runtime in RUNTIMES:
        for x in photo_crops():
            got = RUNTIMES[runtime](path, x)["sr"].astype(np.float64)
            with torch.no_grad(), spsr_fast.ops.backend("reference"):
                truth = truth_model(x.double()).numpy()
                half = half_model(x.half()).double().numpy()
                fp32 = fp32_model(x).double().numpy()
            err, half_err = np.abs(got - truth).max(), np.abs(half - truth).max()
            vs_fp32 = np.abs(got - fp32).max()
            print(f"\nfp16 {runtime} {tuple(x.shape)}: max error vs fp32 {vs_fp32:.3g}, vs float64 {err:.3g} "
                  f"(PyTorch fp16 {half_err:.3g})")
            assert err <= 2 * half_err + float(torch.finfo(torch.float16).eps) * np.abs(truth).max()
            assert vs_fp32 < 1e-2  # a few fp16 ulps of outputs in [0, 1]


# ---------------------------------------------------------------------------------------- lowering

def test_fused_ops_lower_to_standard_operators():
    """Traced under the reference backend the program is ATen only; traced with the fused ops
    (the CPU default) it would carry spsr_fast::dense_blocks, which no runtime has."""
    model = spsr_fast.load_model(resolve_model("default"))
    wrapped = deployment_model(model, ("sr",), "fp32")
    lr = example_input(model, None)
    assert foreign_ops(trace(wrapped, lr, dynamic_shapes(model, None))) == []
    if spsr_fast.ops.REGISTRY["dense_block"].default("cpu")[0] == "native":
        with torch.no_grad():
            fused = torch.export.export(wrapped, (lr,), strict=False)
        assert any(name.startswith("spsr_fast.") for name in foreign_ops(fused))


def _opset18_model(node, extra_inputs=()):
    helper = onnx.helper
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "c", "h", "w"])
    graph = helper.make_graph([node], "g", [x], [y], initializer=list(extra_inputs))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_opset_downgrade_keeps_meaning_or_refuses():
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    pads4 = numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "pads")
    # Pad without axes and Resize with default-valued new attributes: same meaning at 17
    for node, init in ((helper.make_node("Pad", ["x", "pads"], ["y"]), [pads]),
                       (helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", antialias=0,
                                         keep_aspect_ratio_policy="stretch"), [scales])):
        model = _opset18_model(node, init)
        downgrade_18_to_17(model)
        assert model.opset_import[0].version == 17
        assert {a.name for a in model.graph.node[0].attribute} <= {"mode"}
        onnx.checker.check_model(model, full_check=True)
    # what opset 18 added, used: refused by name
    refused = (helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad_axes"), [pads4, axes])
    antialias = (helper.make_node("Resize", ["x", "", "scales"], ["y"], name="aa", mode="linear", antialias=1),
                 [scales])
    reduce = (helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"), [axes])
    for node, init in (refused, antialias, reduce):
        with pytest.raises(ExportError, match=f"{node.op_type} node '{node.name}'.*--opset 18"):
            downgrade_18_to_17(_opset18_model(node, init))


def test_custom_domain_nodes_are_found():
    helper = onnx.helper
    node = helper.make_node("dense_blocks", ["x"], ["y"], domain="spsr_fast")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([node], "g", [x], [x]))
    assert nonstandard_nodes(model) == ["spsr_fast::dense_blocks"]


# ---------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("argv, message", [
    (["{discriminator}", "-o", "{out}.onnx"], "supports the generators RRDBNet, SPSRNet; got VGGDiscriminator"),
    (["-o", "{out}.onnx", "--outputs", "gradient"], "--outputs: RRDBNet has the outputs sr; got gradient"),
    (["{spsr}", "-o", "{out}.onnx", "--outputs", "sr,edges"], "SPSRNet has the outputs sr, gradient; got sr, edges"),
    (["-o", "{out}.onnx", "--static", "64"], "--static: expected HxW or NxHxW"),
    (["-o", "{out}.onnx", "--static", "0x64"], "--static: expected HxW or NxHxW"),
    (["{basicsr_x2}", "-o", "{out}.onnx", "--static", "63x64"], "must be multiples of 2; got 63x64"),
    (["-o", "{out}.onnx", "--opset", "13"], "--opset must be one of 17, 18, 19, 20, 21, got 13"),
    (["-o", "{out}.tflite"], "name it .onnx or .pt2, or pass --format onnx|pt2"),
    (["-o", "{out}.pt2", "--opset", "17"], "--opset applies to --format onnx only"),
    (["-o", "{out}.onnx", "--no-aoti"], "--no-aoti and --device apply to --format pt2 only"),
    (["-o", "{out}.bin", "--format", "pt2", "--no-aoti"], "needs the suffix .pt2"),
    (["nonexistent-model", "-o", "{out}.onnx"], "not a file and not a bundled model"),
    (["-o", "{out}.pt2", "--device", "tpu0"], "--device: expected cpu, cuda or cuda:N, got 'tpu0'"),
    pytest.param(["-o", "{out}.pt2", "--device", "cuda"], "--device cuda: no CUDA device on this machine",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_options_say_what_is_supported(files, tmp_path, argv, message):
    names = {k: str(v) for k, v in files.items()}
    argv = [a.format(out=tmp_path / "out", **names) for a in argv]
    code, _, err = export(*argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == []


def test_missing_exporter_packages_are_named(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    code, _, err = export("-o", tmp_path / "model.onnx")
    assert code == 2 and "ONNX export needs onnxscript: pip install onnx onnxscript" in err
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"keep me")
    code, _, err = export("-o", path)
    assert code == 2 and "exists (use --overwrite to replace it)" in err
    assert path.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["model.onnx"]


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a fi")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.onnx"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------------------------- full size

@pytest.mark.slow
def test_nf64_nb23_rrdbnet_matches_in_onnxruntime_and_openvino(tmp_path):
    """An nf 64, nb 23, x4 RRDBNet in BasicSR's layout (as RealESRGAN_x4plus.pth), seeded weights."""
    source = tmp_path / "RealESRGAN_x4plus_like.pth"
    torch.save({"params_ema": random_weights(basicsr_keys(64, 23, 32, scale=4), seed=7)}, source)
    path = tmp_path / "rrdbnet.onnx"
    out = exported(source, "-o", path)
    print(f"\n{out.strip()}")
    assert "RRDBNet x4 (nf 64, nb 23, gc 32)" in out
    assert_standard_dynamic_graph(path, ["sr"], scale=4)
    model = spsr_fast.load_model(source)
    for runtime in RUNTIMES:
        errors = max_errors(model, path, runtime, inputs(), ["sr"])
        assert max(errors.values()) <= FP32_TOLERANCE, runtime


@pytest.mark.slow
def test_full_size_spsrnet_in_the_authors_layout(tmp_path):
    """The authors' nb=23, nf=64 generator, key for key as their checkpoint has it."""
    entries = reference_json()["generator_SPSRNet_test_options"]["state_dict"]
    shapes = {e["key"]: tuple(e["shape"]) for e in entries}
    source = tmp_path / "SPSR.pth"
    torch.save(authors_spsr_state_dict(shapes, seed=2), source)
    path = tmp_path / "spsr.onnx"
    out = exported(source, "-o", path)
    print(f"\n{out.strip()}")
    assert "authors_spsr layout" in out and "nb 23" in out
    assert_standard_dynamic_graph(path, ["sr", "gradient"], scale=4)
    model = spsr_fast.load_model(source)
    for runtime in RUNTIMES:
        errors = max_errors(model, path, runtime, inputs(), ["sr", "gradient"])
        assert max(errors.values()) <= FP32_TOLERANCE, runtime


@pytest.mark.slow
def test_newer_opset_on_request(tmp_path):
    path = tmp_path / "default_opset18.onnx"
    out = exported("-o", path, "--opset", "18")
    assert "opset 18" in out
    assert_standard_dynamic_graph(path, ["sr"], scale=4, opset=18)
    model = spsr_fast.load_model(resolve_model("default"))
    assert max(max_errors(model, path, "onnxruntime", inputs(), ["sr"]).values()) <= FP32_TOLERANCE


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
