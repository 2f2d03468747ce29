"""NSE pre-training (both tasks) and SPSR-P / SPSR-J end to end on generated structured images:
the trainer with the NSE stages, tiny networks, one thread."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_fast.nse.checkpoint import load_trained_nse
from spsr_fast.train.config import load_config as load_nse_config
from spsr_fast.nse.eval import contrastive_accuracy, dense_patches, feature_maps, jigsaw_accuracy, read_folder
from spsr_fast.nse.eval import main as eval_main
from spsr_fast.nse.sampling import ContrastiveGeometry, JigsawGeometry
from spsr_fast.train.__main__ import main as train_main
from spsr_fast.train.config import ConfigError
from spsr_fast.train.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def structured_image(rng, size):
    """Oriented stripes in random colours inside discs and squares (local structure that
    continues across neighbouring receptive fields) under a global colour ramp."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(0, 1, 3)
    for _ in range(5):
        theta, period = rng.uniform(0, np.pi), rng.uniform(8, 24)
        stripes = np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + rng.uniform(0, 7)) > 0
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 5, size / 2)
        region = ((y - cy) ** 2 + (x - cx) ** 2 < r * r) if rng.random() < 0.5 else \
            (np.abs(y - cy) < r) & (np.abs(x - cx) < r)
        colours = np.where(stripes[..., None], rng.uniform(0, 1, 3), rng.uniform(0, 1, 3))
        img[region] = colours[region]
    # Light from one side, as in photos: a global colour ramp the jigsaw can order pieces by.
    ramp = np.stack([y, x, (x + y) / 2], axis=2) / size
    return 0.5 * img + 0.5 * ramp


def write_images(folder, count, size, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        Image.fromarray((structured_image(rng, size) * 255).astype(np.uint8)).save(folder / f"s{k:03d}.png")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("structured")
    write_images(root / "train", 24, 128, seed=0)
    write_images(root / "test", 6, 96, seed=1)
    return root


COMMON = {
    "run.device": "cpu", "run.amp": "fp32", "run.threads": 1, "run.log_every": 5, "run.progress_bar": False,
    "run.tensorboard": False, "run.val_every": 10 ** 6, "run.image_every": 10 ** 6, "run.save_every": 10 ** 6,
    "data.num_workers": 0,
}


def overrides(values):
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in {**COMMON, **values}.items()]


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def pretrain(images, out, stage, steps, **extra):
    config = os.path.join(REPO, "configs", f"{stage}_tiny_cpu.yaml")
    assert train_main(["--config", config] + overrides({**extra,
        "run.output_dir": str(out), "run.name": stage, "data.train_hr": str(images / "train"),
        "data.hr_size": 96, "data.batch_size": 8, "nse.width": 16, "nse.channels": 16, "nse.head_hidden": 64,
        "nse.samples_per_image": 32, "optim.total_iters": steps, "optim.milestones": [steps]})) == 0
    run_dir = os.path.join(out, stage)
    return read_log(run_dir), os.path.join(run_dir, "checkpoints", f"step_{steps:08d}.pt")


@pytest.fixture(scope="module")
def contrastive_run(images, tmp_path_factory):
    return pretrain(images, tmp_path_factory.mktemp("runs"), "nse_contrastive", 40)


@pytest.fixture(scope="module")
def jigsaw_run(images, tmp_path_factory):
    # No flips / transposes: the pieces' order stays tied to the image's light direction.
    return pretrain(images, tmp_path_factory.mktemp("runs"), "nse_jigsaw", 60, **{"data.augment": False})


def test_contrastive_pretraining_learns_structure(images, contrastive_run):
    log, checkpoint = contrastive_run
    assert np.mean([r["loss/l_g_nse"] for r in log[-2:]]) < log[0]["loss/l_g_nse"] - 0.3
    trained = load_trained_nse(checkpoint)
    assert trained.task == "contrastive" and trained.strategy == "h"
    maps = feature_maps(trained.nse, dense_patches(read_folder(str(images / "test")), 96))
    mean, std, chance = contrastive_accuracy(maps, trained.head, ContrastiveGeometry("h"), repeats=5, per_map=16)
    assert chance < 0.006 and mean > 20 * chance  # unseen images, ~200 negatives per positive


def test_jigsaw_pretraining_learns_structure(images, jigsaw_run):
    log, checkpoint = jigsaw_run
    assert np.mean([r["loss/l_g_nse"] for r in log[-3:]]) < log[0]["loss/l_g_nse"] - 0.1
    trained = load_trained_nse(checkpoint)
    assert trained.task == "jigsaw"
    maps = feature_maps(trained.nse, dense_patches(read_folder(str(images / "test")), 96))
    mean, _, chance = jigsaw_accuracy(maps, trained.head, JigsawGeometry(), repeats=5, per_map=32)
    assert chance == pytest.approx(1 / 24) and mean > 2 * chance


def test_eval_table_with_cross_evaluation(images, contrastive_run, capsys, tmp_path):
    out = tmp_path / "scores.json"
    assert eval_main(["--train", str(images / "train"), "--test", str(images / "test"), "--patch", "96",
                      "--nse", f"contrastive={contrastive_run[1]}", "--random-init", "--repeats", "2",
                      "--head-steps", "3", "--threads", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| contrastive | " in table and "| random init | " in table and "chance 4.17 %" in table
    scores = json.loads(out.read_text())
    assert scores["contrastive"]["contrastive"]["head"] == "own"
    assert scores["contrastive"]["jigsaw"]["head"] == "fresh"
    assert scores["random init"]["contrastive"]["head"] == "fresh"


@pytest.mark.parametrize("config, arch", [("spsr_p_tiny_cpu", "spsrnet"), ("spsr_j_tiny_cpu", "spsrnet"),
                                          ("esrgan_structure", "rrdbnet")])
def test_structure_stages_end_to_end(images, contrastive_run, jigsaw_run, tmp_path, config, arch):
    nse_path = (jigsaw_run if config.startswith("spsr_j") else contrastive_run)[1]
    cfg = load_nse_config(os.path.join(REPO, "configs", f"{config}.yaml"), overrides({
        "run.output_dir": str(tmp_path), "run.name": "sr", "run.ema_decay": 0.9, "run.log_every": 1,
        "data.train_hr": str(images / "train"), "data.val_hr": [], "data.hr_size": 32, "data.batch_size": 2,
        "model.nf": 8, "model.nb": 1, "model.gc": 4, "model.discriminator_nf": 4, "model.pretrained": None,
        "losses.vgg_weights": "random", "structure.nse": nse_path, "optim.total_iters": 2,
        "optim.milestones": [2]}))
    assert cfg.model.arch == arch
    trainer = Trainer(cfg)
    nse_before = {k: v.clone() for k, v in trainer.stage.structure.nse.state_dict().items()}
    trainer.train()
    trainer.close()
    record = read_log(tmp_path / "sr")[-1]
    for key in ("l_g_pix", "l_g_struct_pix", "l_g_struct_gan", "l_d_struct"):
        assert np.isfinite(record[f"loss/{key}"]), key
    if arch == "spsrnet":  # SPSR-P / J: no image GAN, no gradient-space losses
        assert "loss/l_g_branch" in record
        assert not {"loss/l_g_gan", "loss/l_g_pix_grad", "loss/l_g_gan_grad"} & set(record)
    else:  # appendix D: gradient loss and structure loss on a plain RRDBNet
        assert {"loss/l_g_pix_grad", "loss/l_g_gan_grad", "loss/l_d_grad"} <= set(record)
    for k, v in trainer.stage.structure.nse.state_dict().items():
        assert torch.equal(v, nse_before[k]), f"frozen NSE changed: {k}"
    assert os.path.isfile(tmp_path / "sr" / "models" / "G_latest.safetensors")


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="structure.nse"):
        load_nse_config(os.path.join(REPO, "configs", "spsr_p_tiny_cpu.yaml"), ["structure.nse=null"],
                        check_paths=False)
    with pytest.raises(ConfigError, match="nse.strategy"):
        load_nse_config(None, ["nse.strategy=diagonal"], check_paths=False)
    with pytest.raises(ConfigError, match="nse.colour"):
        load_nse_config(None, ["nse.colour=1"], check_paths=False)
    with pytest.raises(ConfigError, match="structure.nse: file does not exist"):
        load_nse_config(os.path.join(REPO, "configs", "spsr_p_tiny_cpu.yaml"),
                        [f"structure.nse={tmp_path}/none.pt", f"data.train_hr={tmp_path}"])


@pytest.mark.parametrize("name", ["nse_contrastive", "nse_jigsaw", "spsr_p", "spsr_j", "esrgan_structure",
                                  "nse_contrastive_tiny_cpu", "nse_jigsaw_tiny_cpu", "spsr_p_tiny_cpu",
                                  "spsr_j_tiny_cpu"])
def test_shipped_configs_load(name):
    cfg = load_nse_config(os.path.join(REPO, "configs", f"{name}.yaml"), check_paths=False)
    assert cfg.run.stage in ("nse_contrastive", "nse_jigsaw", "spsr_p", "spsr_j")
