import sys

import pytest

from spsr_fast.train.config import Config, ConfigError, load_config, parse_override


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "hr").mkdir()
    return tmp_path / "hr"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_paper_settings():
    c = Config()
    assert (c.losses.pixel_weight, c.losses.perceptual_weight, c.losses.gan_weight) == (1e-2, 1.0, 5e-3)
    assert (c.losses.gradient_pixel_weight, c.losses.gradient_gan_weight, c.losses.branch_weight) == (1e-2, 5e-3, 0.5)
    assert (c.optim.lr_g, c.optim.lr_d, c.optim.beta1, c.optim.beta2) == (1e-4, 1e-4, 0.9, 0.999)
    assert c.optim.milestones == [50_000, 100_000, 200_000, 300_000] and c.optim.gamma == 0.5
    assert c.optim.total_iters == 500_000 and c.data.batch_size == 30
    assert (c.data.hr_size, c.data.scale) == (128, 4)


def test_yaml_numbers_and_overrides(tmp_path, folder):
    path = write(tmp_path, f"data:\n  train_hr: {folder}\noptim:\n  lr_g: 1e-4\n  total_iters: 5e5\n")
    cfg = load_config(path, ["optim.lr_d=3e-4", "data.batch_size=8", "run.amp=fp32",
                             "optim.milestones=[10, 20]"])
    assert cfg.optim.lr_g == 1e-4 and cfg.optim.total_iters == 500_000
    assert cfg.optim.lr_d == 3e-4 and cfg.data.batch_size == 8 and cfg.run.amp == "fp32"
    assert cfg.optim.milestones == [10, 20] and cfg.data.train_hr == [str(folder)]


@pytest.mark.parametrize("text, message", [
    ("optim:\n  lr_gg: 1\n", "optim.lr_gg: unknown field"),
    ("optimizer:\n  lr_g: 1\n", "optimizer: unknown field"),
    ("optim:\n  lr_g: fast\n", "optim.lr_g: expected a number"),
    ("data:\n  batch_size: 2.5\n", "data.batch_size: expected an integer"),
    ("run:\n  amp: fp8\n", "run.amp: must be one of bf16, fp16, fp32"),
    ("run:\n  channels_last: 1\n", "run.channels_last: expected true or false"),
    ("run:\n  stage: nse_magic\n", "run.stage: must be one of"),
    ("data:\n  hr_size: 130\n", "data.hr_size: 130 is not a multiple"),
    ("optim:\n  milestones: [20, 10]\n", "optim.milestones: must be increasing"),
    ("model: 3\n", "model: expected a mapping"),
])
def test_errors_name_the_field(tmp_path, folder, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(path, [f"data.train_hr={folder}"])


def test_missing_paths_name_the_field(tmp_path, folder):
    with pytest.raises(ConfigError, match=r"data\.train_hr\[0\]: folder does not exist"):
        load_config(None, ["data.train_hr=/no/such/dir"])
    with pytest.raises(ConfigError, match=r"model\.pretrained: file does not exist"):
        load_config(None, [f"data.train_hr={folder}", "model.pretrained=/no/file.pth"])
    with pytest.raises(ConfigError, match=r"losses\.vgg_weights: file does not exist"):
        load_config(None, [f"data.train_hr={folder}", "losses.vgg_weights=/no/vgg.pth"])
    with pytest.raises(ConfigError, match="data.train_hr: no training folder"):
        load_config(None, [])
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


def test_override_syntax():
    assert parse_override("optim.lr_g=2e-4") == ("optim.lr_g", "2e-4")  # float() accepts it later
    assert parse_override("run.name=a=b") == ("run.name", "a=b")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("optim.lr_g")


def test_shipped_configs_parse():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    paths = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert {os.path.basename(p) for p in paths} >= {"psnr_x4.yaml", "spsr_g.yaml", "tiny_cpu.yaml"}
    for p in paths:
        load_config(p, check_paths=False)


def test_builtin_sources_are_validated_like_folders(monkeypatch):
    cfg = load_config(None, ["data.train_hr=builtin:skimage-train", "data.val_hr=[builtin:skimage-val]"])
    assert cfg.data.train_hr == ["builtin:skimage-train"] and cfg.data.val_hr == ["builtin:skimage-val"]
    # A typo is caught even without path checks, naming the field and the valid names.
    for check_paths in (True, False):
        with pytest.raises(ConfigError, match=r"^data\.val_hr\[1\]: unknown built-in image source "
                                              r"'builtin:skimage-test' \(known: builtin:skimage-train, "
                                              r"builtin:skimage-val\)$"):
            load_config(None, ["data.train_hr=builtin:skimage-train",
                               "data.val_hr=[builtin:skimage-val, builtin:skimage-test]"], check_paths=check_paths)
    with pytest.raises(ConfigError, match=r"^data\.train_lr\[0\]: built-in sources hold HR images only"):
        load_config(None, ["data.train_hr=builtin:skimage-train", "data.train_lr=builtin:skimage-train"])
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ConfigError, match=r"^data\.train_hr\[0\]: builtin:skimage-train needs scikit-image: "
                                          r"pip install scikit-image$"):
        load_config(None, ["data.train_hr=builtin:skimage-train"])


def test_shipped_configs_point_only_inside_the_repository():
    """Data, weights and outputs are built-in sources or relative paths a user fills in:
    nothing absolute, nothing above the repository (a fresh clone has nothing there)."""
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    for p in sorted(glob.glob(os.path.join(root, "*.yaml"))):
        with open(p) as fh:
            text = fh.read()
        assert "shared/" not in text, p
        cfg = load_config(p, check_paths=False)
        values = [*cfg.data.train_hr, *cfg.data.train_lr, *cfg.data.val_hr, *cfg.data.val_lr,
                  cfg.model.pretrained or "", cfg.run.output_dir, getattr(getattr(cfg, "structure", None), "nse", None) or ""]
        for value in values:
            assert not os.path.isabs(value) and not value.startswith(".."), f"{p}: {value}"
