"""Checkpoints: our format, the authors' SPSR layout, ESRGAN old/new and BasicSR, bad files."""
import json
import os

import pytest
import torch

import spsr_fast
from authors_esrgan_oracle import (basicsr_forward, basicsr_keys, esrgan_new_forward, esrgan_new_keys,
                                   esrgan_old_forward, esrgan_old_keys)
from authors_spsr_oracle import authors_spsr_state_dict, random_weights, reference_json, spsr_forward, spsr_keys
from spsr_fast.checkpoints import (CheckpointError, CheckpointNotFoundError, detect_layout, export_state_dict,
                                   inspect_checkpoint, load_model, save_model)
from spsr_fast.models import NSE, ContrastivePredictor, JigsawHead, RRDBNet, SPSRNet, VGGDiscriminator128

def reference_generator_shapes():
    entries = reference_json()["generator_SPSRNet_test_options"]["state_dict"]
    return {e["key"]: tuple(e["shape"]) for e in entries}


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def as_double(sd):
    """float32 weights as float64: our model (loaded as float32, then .double()) and the
    oracle then hold exactly the same values."""
    return {k: v.double() for k, v in sd.items()}


def assert_same_outputs(ours, theirs, rtol=1e-9):
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,),
                    theirs if isinstance(theirs, tuple) else (theirs,)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * b.abs().max().item())


# ---------------------------------------------------------------------------- the authors' SPSR layout

def test_oracle_key_listing_is_the_reference_layout():
    """The oracle's hand-written key list equals the reference JSON (so the small
    layouts it generates below are the authors' too)."""
    assert spsr_keys(nf=64, nb=23, gc=32, steps=2) == reference_generator_shapes()


@pytest.mark.slow
def test_authors_layout_loads_strictly_and_round_trips_bit_exactly(tmp_path):
    shapes = reference_generator_shapes()
    theirs = authors_spsr_state_dict(shapes, seed=1)
    assert len(theirs) == 884
    path = tmp_path / "spsr.pth"
    torch.save(theirs, path)
    info = inspect_checkpoint(path)
    assert (info.layout, info.arch) == ("authors_spsr", "SPSRNet")
    assert info.config == dict(in_nc=3, out_nc=3, nf=64, nb=23, gc=32, scale=4, taps=[5, 10, 15, 20])
    model = load_model(path)
    # zero missing/unexpected keys: load_state_dict(strict=True) inside load_model passed,
    # and every tensor of theirs is somewhere in ours
    back = export_state_dict(model, "authors_spsr")
    assert list(back) == list(theirs) or set(back) == set(theirs)
    for key, value in theirs.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    assert sum(p.numel() for p in model.parameters()) + 18 == 24_796_248


@pytest.mark.slow
def test_authors_full_model_gives_the_authors_numbers(tmp_path):
    """nb=23, nf=64: our SPSRNet loaded from their layout == their forward (float64)."""
    theirs = authors_spsr_state_dict(reference_generator_shapes(), seed=2)
    torch.save(theirs, tmp_path / "spsr.pth")
    model = load_model(tmp_path / "spsr.pth").double()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        assert_same_outputs(model(x), spsr_forward(as_double(theirs), x))


@pytest.mark.parametrize("steps", [1, 2])
def test_authors_small_model_gives_the_authors_numbers(tmp_path, steps):
    """nb=21 (taps 5..20 plus one block after), nf=8, gc=8; x2 and x4."""
    theirs = authors_spsr_state_dict(spsr_keys(nf=8, nb=21, gc=8, steps=steps), seed=3)
    torch.save({"state_dict": theirs}, tmp_path / "small.pth")
    model = load_model(tmp_path / "small.pth").double()
    assert model.config["scale"] == 2 ** steps and model.config["nb"] == 21
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ours, expected = model(x), spsr_forward(as_double(theirs), x)
    assert_same_outputs(ours, expected)
    assert ours[1].shape == (1, 3, 6 * 2 ** steps, 5 * 2 ** steps)


def small_authors_state_dict(**kw):
    return authors_spsr_state_dict(spsr_keys(nf=4, nb=20, gc=4, steps=2), seed=4, **kw)


def load_dict(tmp_path, sd, name="x.pth"):
    torch.save(sd, tmp_path / name)
    return load_model(tmp_path / name)


def test_authors_layout_alias_can_be_either_key_but_must_agree(tmp_path):
    sd = small_authors_state_dict()
    only_alias = {k: v for k, v in sd.items() if not k.startswith("HR_conv0_new.")}
    only_canonical = {k: v for k, v in sd.items() if not k.startswith("model.8.")}
    a, b = load_dict(tmp_path, only_alias, "a.pth"), load_dict(tmp_path, only_canonical, "b.pth")
    assert torch.equal(a.conv_hr.weight, sd["HR_conv0_new.0.weight"])
    assert torch.equal(b.conv_hr.weight, sd["model.8.weight"])
    sd["model.8.weight"] = sd["model.8.weight"] + 1
    with pytest.raises(CheckpointError) as error:
        load_dict(tmp_path, sd)
    assert "model.8.weight and HR_conv0_new.0.weight must hold the same tensor" in one_line(error)


def test_authors_layout_fixed_kernels_are_checked(tmp_path):
    sd = small_authors_state_dict()
    sd["get_g_nopadding.weight_h"] = sd["get_g_nopadding.weight_h"].flip(-1)
    with pytest.raises(CheckpointError, match="get_g_nopadding.weight_h must be the fixed kernel"):
        load_dict(tmp_path, sd)


def test_authors_layout_strictness_names_keys_and_layout(tmp_path):
    sd = small_authors_state_dict()
    del sd["b_block_3.RDB2.conv4.0.bias"]
    sd["f_block.RDB4.conv1.0.weight"] = torch.zeros(1)
    sd["conv_w.0.weight"] = torch.zeros(3, 4, 3, 3)
    with pytest.raises(CheckpointError) as error:
        load_dict(tmp_path, sd)
    message = one_line(error)
    for part in ("x.pth", "authors_spsr layout", "SPSRNet(", "1 missing keys: b_block_3.RDB2.conv4.0.bias",
                 "1 unexpected keys: f_block.RDB4.conv1.0.weight",
                 "conv_w.0.weight (3, 4, 3, 3) (expected (3, 4, 1, 1))"):
        assert part in message


def test_authors_layout_needs_twenty_blocks(tmp_path):
    sd = authors_spsr_state_dict(spsr_keys(nf=4, nb=12, gc=4, steps=2), seed=0)
    with pytest.raises(CheckpointError, match="needs nb >= 20, this checkpoint has nb=12"):
        load_dict(tmp_path, sd)


def test_many_missing_keys_are_named_up_to_a_limit(tmp_path):
    sd = {k: v for k, v in small_authors_state_dict().items() if not k.startswith("f_block.")}
    with pytest.raises(CheckpointError) as error:
        load_dict(tmp_path, sd)
    message = one_line(error)
    assert "30 missing keys: f_block.RDB1.conv1.0.weight" in message and "and 18 more" in message


def test_save_in_the_authors_layout(tmp_path):
    torch.manual_seed(0)
    model = SPSRNet(nf=4, nb=20, gc=4, taps=(5, 10, 15, 20)).eval()
    save_model(model, tmp_path / "spsr.pth", layout="authors_spsr")
    raw = torch.load(tmp_path / "spsr.pth", weights_only=True)
    assert set(raw) == set(spsr_keys(nf=4, nb=20, gc=4, steps=2))
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert_same_outputs(model.double()(x), spsr_forward({k: v.double() for k, v in raw.items()}, x))


# ---------------------------------------------------------------------------- ESRGAN and BasicSR

RRDB_LAYOUTS = {
    # name: (keys, forward, wrapper)
    "esrgan_old_x4": (lambda: esrgan_old_keys(8, 3, 8, steps=2), esrgan_old_forward, None),
    "esrgan_old_x2": (lambda: esrgan_old_keys(8, 2, 8, steps=1), esrgan_old_forward, None),
    "esrgan_new_x4": (lambda: esrgan_new_keys(8, 3, 8), esrgan_new_forward, None),
    "basicsr_x4": (lambda: basicsr_keys(8, 3, 8, scale=4), basicsr_forward, "params"),
    "basicsr_x2_ema": (lambda: basicsr_keys(8, 2, 8, scale=2), lambda sd, x: basicsr_forward(sd, x, 2),
                       "params_ema"),
}
EXPECTED_LAYOUT = {"esrgan_old_x4": "esrgan_old", "esrgan_old_x2": "esrgan_old", "esrgan_new_x4": "esrgan_new",
                   "basicsr_x4": "basicsr", "basicsr_x2_ema": "basicsr"}


@pytest.mark.parametrize("name", RRDB_LAYOUTS)
def test_rrdbnet_layouts_give_the_same_outputs(tmp_path, name):
    keys, forward, wrapper = RRDB_LAYOUTS[name]
    sd = random_weights(keys(), seed=5)
    payload = sd
    if wrapper == "params_ema":  # BasicSR keeps both; the EMA weights are the ones to use
        payload = {"params": random_weights(keys(), seed=6), "params_ema": sd}
    elif wrapper:
        payload = {wrapper: sd, "iter": 1000}
    torch.save(payload, tmp_path / "net.pth")
    info = inspect_checkpoint(tmp_path / "net.pth")
    assert info.layout == EXPECTED_LAYOUT[name] and info.arch == "RRDBNet"
    assert info.wrapper == wrapper
    model = load_model(tmp_path / "net.pth").double()
    x = torch.rand(2, 3, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        assert_same_outputs(model(x), forward(as_double(sd), x))
    assert model.config["scale"] == (2 if name.endswith(("x2", "x2_ema")) else 4)
    # and back out in the same layout, bit-exactly
    back = export_state_dict(model.float(), EXPECTED_LAYOUT[name])
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_inferred_rrdbnet_config():
    sd = random_weights(esrgan_old_keys(16, 5, 12, steps=3, in_nc=1, out_nc=1), seed=0)
    assert detect_layout(sd) == "esrgan_old"
    from spsr_fast.checkpoints.layouts import ESRGAN_OLD
    assert ESRGAN_OLD.infer_config(sd) == dict(in_nc=1, out_nc=1, nf=16, nb=5, gc=12, scale=8, unshuffle=1)


def test_prefixes_from_dataparallel_and_compile_are_stripped(tmp_path):
    sd = random_weights(esrgan_new_keys(4, 1, 4), seed=0)
    torch.save({f"module._orig_mod.{k}": v for k, v in sd.items()}, tmp_path / "p.pth")
    assert load_model(tmp_path / "p.pth").conv_first.weight.equal(sd["conv_first.weight"])


def test_safetensors_state_dict_in_a_foreign_layout(tmp_path):
    from safetensors.torch import save_file

    sd = random_weights(basicsr_keys(4, 1, 4), seed=0)
    save_file(sd, str(tmp_path / "net.safetensors"))
    assert inspect_checkpoint(tmp_path / "net.safetensors").layout == "basicsr"


def test_authors_discriminator_layout(tmp_path):
    torch.manual_seed(0)
    d = VGGDiscriminator128(base_nf=8)
    torch.save(d.state_dict(), tmp_path / "d.pth")
    info = inspect_checkpoint(tmp_path / "d.pth")
    assert (info.layout, info.config) == ("vgg_discriminator", dict(in_nc=3, base_nf=8, input_size=128))


# ---------------------------------------------------------------------------- our format

OUR_MODELS = {
    "SPSRNet": lambda: SPSRNet(nf=4, nb=5, gc=4, scale=2, taps=(0, 2, 2, 5)),
    "RRDBNet": lambda: RRDBNet(nf=4, nb=2, gc=4, scale=2, unshuffle=2),
    "VGGDiscriminator": lambda: VGGDiscriminator128(base_nf=4),
    "NSE": lambda: NSE(width=8, out_channels=16),
    "ContrastivePredictor": lambda: ContrastivePredictor(num_context=2, channels=16, hidden=8),
    "JigsawHead": lambda: JigsawHead(channels=16, hidden=8),
}


@pytest.mark.parametrize("arch", OUR_MODELS)
def test_our_format_round_trips_with_no_flags(tmp_path, arch):
    torch.manual_seed(0)
    model = OUR_MODELS[arch]()
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    save_model(model, path)  # overwriting is fine
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind
    loaded = spsr_fast.load_model(path)
    assert type(loaded).arch == arch and loaded.config == model.config
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert inspect_checkpoint(path).layout == "spsr_fast"


def test_our_format_keeps_channels_last_and_wrapped_models(tmp_path):
    torch.manual_seed(0)
    model = RRDBNet(nf=4, nb=1, gc=4).to(memory_format=torch.channels_last)
    wrapper = torch.nn.Module()
    wrapper.module = model  # what DataParallel / DDP look like
    save_model(wrapper, tmp_path / "m.safetensors")
    assert torch.equal(load_model(tmp_path / "m.safetensors").conv_first.weight, model.conv_first.weight)


def test_save_refuses_foreign_modules(tmp_path):
    with pytest.raises(TypeError, match="save_model: model must be one of"):
        save_model(torch.nn.Conv2d(1, 1, 1), tmp_path / "x.safetensors")


def test_our_format_is_checked_strictly(tmp_path):
    from safetensors.torch import save_file

    model = RRDBNet(nf=4, nb=2, gc=4)
    save_model(model, tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    metadata["spsr_fast.config"] = json.dumps({**model.config, "nb": 3})  # claims a block it does not hold
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "bad.safetensors")
    assert "spsr_fast layout, RRDBNet(" in one_line(error) and "missing keys: body.2.rdb1.conv1.weight" in str(
        error.value)


# ---------------------------------------------------------------------------- bad files

def test_truncated_torch_file(tmp_path):
    torch.save(random_weights(basicsr_keys(4, 1, 4), seed=0), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "cut.pth")
    assert "cut.pth: truncated or corrupt PyTorch file" in one_line(error)


def test_truncated_safetensors_file(tmp_path):
    save_model(RRDBNet(nf=4, nb=1, gc=4), tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "cut.safetensors")
    assert "cut.safetensors: truncated or corrupt safetensors file" in one_line(error)


def test_text_file(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "notes.pth")
    assert "notes.pth: not a checkpoint" in one_line(error)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint file"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pth")


def test_wrong_architecture(tmp_path):
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(),
               tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "other.pth")
    assert "other.pth: unrecognised checkpoint layout (4 keys, e.g. 0.bias" in one_line(error)


def test_rrdbnet_weights_with_a_foreign_extra_module(tmp_path):
    sd = random_weights(esrgan_new_keys(4, 2, 4), seed=0)
    sd["attention.weight"] = torch.zeros(4)
    with pytest.raises(CheckpointError) as error:
        load_dict(tmp_path, sd)
    assert "esrgan_new layout" in one_line(error) and "1 unexpected keys: attention.weight" in str(error.value)


def test_pickled_python_objects_are_refused(tmp_path):
    torch.save({"model": torch.nn.Conv2d(1, 1, 1)}, tmp_path / "module.pth")
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "module.pth")
    assert "weights_only loading refuses" in one_line(error)


def test_dict_without_weights(tmp_path):
    torch.save({"epoch": 3, "lr": 1e-4}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"holds no state dict of tensors \(top-level keys: epoch, lr\)"):
        load_model(tmp_path / "meta.pth")


# ---------------------------------------------------------------------------- atomic writes

@pytest.mark.skipif(os.name == "nt", reason="POSIX folder fsync")
@pytest.mark.parametrize("writer", ["save_model", "trainer_checkpoint"])
def test_writes_sync_the_file_then_rename_then_sync_the_folder(tmp_path, monkeypatch, writer):
    """A rename is only durable once the folder holding the new entry is synced too."""
    import stat

    from spsr_fast.train import checkpoint as train_checkpoint

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if writer == "save_model":
        save_model(RRDBNet(nf=4, nb=1, gc=4), tmp_path / "m.safetensors")
        name = "m.safetensors"
    else:
        train_checkpoint.atomic_save({"step": 1}, str(tmp_path / "step_00000001.pt"))
        name = "step_00000001.pt"
    assert events == [("fsync", "file"), ("replace", name), ("fsync", "folder")]
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left behind
    # files get the usual permissions (umask), not mkstemp's owner-only 0600
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from spsr_fast.checkpoints.files import write_atomic

    target = tmp_path / "m.bin"
    target.write_bytes(b"old")

    def fail(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.bin"]
