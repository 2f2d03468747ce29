"""NSE pre-training (both tasks) and SPSR-P / SPSR-J end to end on real photographs (scikit-image's
bundled ones): the trainer with the NSE stages, tiny networks, one thread.

The pre-training tests train a random-init control beside the NSE: the same NSE at the weights
the trainer started from, frozen, with the run's initial head trained on the same images for the
same budget (steps, batch, crop size, samples per image, learning rate, head width). A random
network with a trained head already scores several times chance on both tasks, so only the
difference to that control says the pre-training taught the NSE anything. What it teaches at
this scale is largely where the crop border is: on cells whose receptive field stays inside the
patch, neither NSE beats its control yet. So these tests guard the training (the loss reaches
and moves the NSE), not the structure the features capture.
"""
import copy
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_fast.nse.checkpoint import STAGE_TASKS, load_trained_nse
from spsr_fast.train.config import load_config as load_nse_config
from spsr_fast.nse.eval import (contrastive_outcomes, dense_patches, feature_maps, jigsaw_outcomes, read_folder,
                                train_head)
from spsr_fast.nse.eval import main as eval_main
from spsr_fast.nse.sampling import ContrastiveGeometry, JigsawGeometry
from spsr_fast.train.config import ConfigError
from spsr_fast.train.distributed import unwrap
from spsr_fast.train.trainer import Trainer

skimage_data = pytest.importorskip("skimage.data")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Training photographs, cut into 128 px tiles (cheap to read per sample); the test photographs
# are other scenes, never seen in training.
TRAIN_PHOTOS = ("astronaut", "coffee", "immunohistochemistry", "camera", "brick", "gravel", "coins", "moon", "cell")
TEST_PHOTOS = ("chelsea", "rocket", "grass", "clock")
TILE = 128
TEST_PATCH = 96  # 24 x 24 feature maps: ~260 negatives per contrastive target


def photo(name):
    img = getattr(skimage_data, name)()
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    (root / "train").mkdir()
    (root / "test").mkdir()
    for name in TRAIN_PHOTOS:
        img = photo(name)
        for y in range(0, img.shape[0] - TILE + 1, TILE):
            for x in range(0, img.shape[1] - TILE + 1, TILE):
                Image.fromarray(img[y:y + TILE, x:x + TILE]).save(root / "train" / f"{name}_{y}_{x}.png")
    for name in TEST_PHOTOS:
        Image.fromarray(photo(name)).save(root / "test" / f"{name}.png")
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
    """Train an NSE with the trainer; also return the control: the NSE at its initial weights,
    frozen, with the run's initial head trained on the same images for the same budget."""
    cfg = load_nse_config(os.path.join(REPO, "configs", f"{stage}_tiny_cpu.yaml"), overrides({
        "run.output_dir": str(out), "run.name": stage, "data.train_hr": str(images / "train"),
        "data.hr_size": 96, "data.batch_size": 8, "data.augment": False, "nse.width": 16, "nse.channels": 16,
        "nse.head_hidden": 64, "nse.samples_per_image": 64, "optim.total_iters": steps,
        "optim.milestones": [steps], **extra}))
    trainer = Trainer(cfg)
    initial_nse, initial_head = (copy.deepcopy(unwrap(trainer.stage.nets[k])) for k in ("G", "head"))
    try:
        trainer.train()
    finally:
        trainer.close()
    run_dir = os.path.join(out, stage)
    n = cfg.nse
    control_head = train_head(initial_nse, STAGE_TASKS[stage], read_folder(str(images / "train")), steps,
                              crop=cfg.data.hr_size, batch=cfg.data.batch_size, per_image=n.samples_per_image,
                              lr=cfg.optim.lr_g, strategy=n.strategy, hidden=n.head_hidden, seed=cfg.run.seed,
                              head=initial_head)
    return {"log": read_log(run_dir), "checkpoint": os.path.join(run_dir, "checkpoints", f"step_{steps:08d}.pt"),
            "control": (initial_nse, control_head)}


@pytest.fixture(scope="module")
def contrastive_run(images, tmp_path_factory):
    return pretrain(images, tmp_path_factory.mktemp("runs"), "nse_contrastive", 40)


@pytest.fixture(scope="module")
def jigsaw_run(images, tmp_path_factory):
    return pretrain(images, tmp_path_factory.mktemp("runs"), "nse_jigsaw", 100, **{"optim.lr_g": 3e-3})


def beats_control(trained, control):
    """(accuracy of the trained NSE, of the control, standard error of their difference) on the
    same evaluated samples. The evaluation's error is the larger of the binomial one from the
    number of samples n, sqrt((p_t (1 - p_t) + p_c (1 - p_c)) / n), and the one over test patches
    (samples drawn on one patch are correlated, which the binomial one ignores); the head
    training's noise is added for both runs."""
    assert torch.equal(trained.map_index, control.map_index) and torch.equal(trained.repeat, control.repeat)
    n = len(trained.correct)
    p_t, p_c = trained.correct.float().mean().item(), control.correct.float().mean().item()
    se_samples = math.sqrt((p_t * (1 - p_t) + p_c * (1 - p_c)) / n)
    patches = int(trained.map_index.max()) + 1
    per_patch = torch.zeros(patches).index_add_(0, trained.map_index, trained.correct.float() - control.correct.float())
    per_patch /= torch.bincount(trained.map_index, minlength=patches).float()
    se_patches = per_patch.std().item() / math.sqrt(patches)
    return p_t, p_c, math.sqrt(max(se_samples, se_patches) ** 2 + 2 * HEAD_TRAINING_NOISE ** 2)


# Std of one control's accuracy over head-training seeds (other crops and samples, same initial
# weights): measured 0.0040 (contrastive) and 0.0035 (jigsaw) over 6 seeds, rounded up.
HEAD_TRAINING_NOISE = 0.005
# The trained NSE must beat its control by MARGIN standard errors. If pre-training taught the NSE
# nothing, the two runs differ only by evaluation and head-training noise, and one-sided the test
# passes by chance with probability < 4e-5 (normal tail). 4 rather than 3 because the per-patch
# error is itself estimated from only 73 patches and the noise term from 6 seeds. With n = 73
# patches x 32 samples x 5 repeats = 11,680, 4 standard errors come to 3-4.4 accuracy points.
# Measured over seeds 0-2, the trained NSEs lead by 9.6-11.4 (contrastive) and 8.6-22 (jigsaw)
# points, 9-25 standard errors; with the NSE detached from the loss, by -1.1 to +0.4 (|z| <= 1.3).
MARGIN = 4.0


@pytest.mark.slow
def test_contrastive_pretraining_beats_random_init(images, contrastive_run):
    log = contrastive_run["log"]
    assert np.mean([r["loss/l_g_nse"] for r in log[-2:]]) < log[0]["loss/l_g_nse"] - 0.3
    trained = load_trained_nse(contrastive_run["checkpoint"])
    assert trained.task == "contrastive" and trained.strategy == "h"
    control_nse, control_head = contrastive_run["control"]
    patches = dense_patches(read_folder(str(images / "test")), TEST_PATCH)
    geometry = ContrastiveGeometry("h")
    ours = contrastive_outcomes(feature_maps(trained.nse, patches), trained.head, geometry, repeats=5, per_map=32)
    theirs = contrastive_outcomes(feature_maps(control_nse, patches), control_head, geometry, repeats=5, per_map=32)
    p_trained, p_control, se = beats_control(ours, theirs)
    chance = ours.chance.mean().item()
    assert chance < 0.006  # unseen photographs, ~260 candidates per target
    assert p_trained - p_control > MARGIN * se, (p_trained, p_control, se)


@pytest.mark.slow
def test_jigsaw_pretraining_beats_random_init(images, jigsaw_run):
    log = jigsaw_run["log"]
    assert np.mean([r["loss/l_g_nse"] for r in log[-3:]]) < log[0]["loss/l_g_nse"] - 0.1
    trained = load_trained_nse(jigsaw_run["checkpoint"])
    assert trained.task == "jigsaw"
    control_nse, control_head = jigsaw_run["control"]
    patches = dense_patches(read_folder(str(images / "test")), TEST_PATCH)
    ours = jigsaw_outcomes(feature_maps(trained.nse, patches), trained.head, JigsawGeometry(), repeats=5, per_map=32)
    theirs = jigsaw_outcomes(feature_maps(control_nse, patches), control_head, JigsawGeometry(), repeats=5,
                             per_map=32)
    p_trained, p_control, se = beats_control(ours, theirs)
    assert ours.chance.mean().item() == pytest.approx(1 / 24)
    assert p_trained - p_control > MARGIN * se, (p_trained, p_control, se)


def test_eval_table_with_cross_evaluation(images, contrastive_run, capsys, tmp_path):
    out = tmp_path / "scores.json"
    assert eval_main(["--train", str(images / "train"), "--test", str(images / "test"), "--patch", "96",
                      "--nse", f"contrastive={contrastive_run['checkpoint']}", "--random-init", "--repeats", "2",
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
    nse_path = (jigsaw_run if config.startswith("spsr_j") else contrastive_run)["checkpoint"]
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
