"""data.degradation realworld in the trainer: pairs made on the training device after the
loader, exactly resumable, independent of the loader's worker count, different per DDP rank;
validation on a seeded degraded set; config errors by field."""
import json
import os
import socket

import numpy as np
import pytest
import torch

from spsr_fast.degradations import RealWorldDegrader
from spsr_fast.degradations.filters import usm_sharpen
from spsr_fast.degradations.images import degrade_image
from spsr_fast.train import load_config
from spsr_fast.train.config import ConfigError
from spsr_fast.train.trainer import Trainer

from helpers import write_wave_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("rw_imgs")
    write_wave_images(root / "train", 6, 64, seed=0)
    write_wave_images(root / "val", 2, 48, seed=1)
    return root


def tiny(images, out, stage="spsr_g", **extra):
    overrides = {
        "run.stage": stage, "run.name": "t", "run.output_dir": str(out), "run.device": "cpu",
        "run.amp": "fp32", "run.threads": 1, "run.log_every": 1, "run.val_every": 1000,
        "run.image_every": 1000, "run.save_every": 1000, "run.progress_bar": False,
        "run.tensorboard": False, "run.ema_decay": 0.9, "run.seed": 3,
        "data.train_hr": str(images / "train"), "data.hr_size": 32, "data.batch_size": 2,
        "data.num_workers": 0, "data.degradation": "realworld",
        "model.arch": "spsrnet" if stage == "spsr_g" else "rrdbnet",
        "model.nf": 8, "model.nb": 1, "model.gc": 4, "model.discriminator_nf": 4,
        "losses.vgg_weights": "random", "optim.total_iters": 4, "optim.milestones": [3],
    }
    overrides.update(extra)
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()])


def _record_steps(trainer):
    """Wrap the stage's train_step to keep what it was given, step by step."""
    seen = []
    original = trainer.stage.train_step

    def recording(lr, hr, step, runner, **kwargs):
        seen.append({"step": step, "lr": lr.detach().clone(), "hr": hr.detach().clone(),
                     **{k: v.detach().clone() for k, v in kwargs.items()}})
        return original(lr, hr, step, runner, **kwargs)

    trainer.stage.train_step = recording
    return seen


def _all_weights(trainer):
    state = trainer.state_dict()
    flat = {f"{n}.{k}": v for n, sd in state["models"].items() for k, v in sd.items()}
    flat.update({f"ema.{k}": v for k, v in state["ema"].items()})
    return flat


def test_hr_only_dataset_gives_the_crops_and_flips_of_the_paired_one(images):
    from spsr_fast.data.datasets import HRDataset

    paired = HRDataset(str(images / "train"), 4, 32, use_augment=True)
    hr_only = HRDataset(str(images / "train"), 4, 32, use_augment=True, with_lr=False)
    for item in [(k, (3, 0, k)) for k in range(6)] + [(2, (1, 1, 7))]:
        a, b = paired[item], hr_only[item]
        assert b.keys() == {"hr", "index"} and torch.equal(a["hr"], b["hr"]) and a["index"] == b["index"]


def test_trainer_makes_realworld_pairs_on_the_device(images, tmp_path):
    trainer = Trainer(tiny(images, tmp_path, **{"optim.total_iters": 2}))
    assert trainer.dataset[(0, (3, 0, 0))].keys() == {"hr", "index"}    # the loader brings HR only
    seen = _record_steps(trainer)
    trainer.train()
    deg = RealWorldDegrader(trainer.cfg.realworld, 4, seed=3)
    for rec in seen:
        assert rec["lr"].shape == (2, 3, 8, 8) and rec["hr"].shape == (2, 3, 32, 32)
        # content target: the unsharp-masked HR; the discriminators' real: the plain HR crop
        torch.testing.assert_close(rec["hr"], usm_sharpen(rec["real_hr"]), rtol=0, atol=0)
        again = deg(rec["real_hr"], rec["step"], rank=0)
        assert torch.equal(again.lr, rec["lr"])
    assert not torch.equal(seen[0]["lr"], seen[1]["lr"])


def test_realworld_training_resumes_bit_exactly(images, tmp_path):
    straight = Trainer(tiny(images, tmp_path / "a"))
    straight.train()
    first = Trainer(tiny(images, tmp_path / "b", **{"run.save_every": 2}))
    first.cfg.optim.total_iters = 2
    first.train()
    resumed = Trainer(tiny(images, tmp_path / "b"), resume="auto")
    assert resumed.step == 2
    resumed.train()
    a, b = _all_weights(straight), _all_weights(resumed)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_realworld_pairs_do_not_depend_on_the_worker_count(images, tmp_path):
    batches = {}
    for workers in (0, 2):
        trainer = Trainer(tiny(images, tmp_path / str(workers), **{"data.num_workers": workers,
                                                                   "optim.total_iters": 3}))
        seen = _record_steps(trainer)
        trainer.train()
        batches[workers] = seen
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, images, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(tiny(images, out, **{"data.batch_size": 4, "optim.total_iters": 2}))
    seen = _record_steps(trainer)
    trainer.train()
    torch.save({"seen": seen, "weights": _all_weights(trainer)}, os.path.join(result_dir, f"rank{rank}.pt"))
    trainer.close()


def test_ddp_ranks_draw_different_degradations(images, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), images, tmp_path / "out", str(tmp_path)), nprocs=2)
    runs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    cfg = tiny(images, tmp_path)
    for rank, run in enumerate(runs):
        for rec in run["seen"]:
            expected = RealWorldDegrader(cfg.realworld, 4, seed=3)(rec["real_hr"], rec["step"], rank)
            assert torch.equal(expected.lr, rec["lr"]), (rank, rec["step"])
    for rec0, rec1 in zip(runs[0]["seen"], runs[1]["seen"]):
        assert not torch.equal(rec0["lr"], rec1["lr"])
        # same HR crop on both ranks would still draw differently: the draws depend on the rank
        d0 = RealWorldDegrader(cfg.realworld, 4, seed=3)(rec0["real_hr"], rec0["step"], 0)
        d1 = RealWorldDegrader(cfg.realworld, 4, seed=3)(rec0["real_hr"], rec0["step"], 1)
        assert not torch.equal(d0.lr, d1.lr)
    w0, w1 = runs[0]["weights"], runs[1]["weights"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0 if "running" not in k and "num_batches" not in k)


def test_realworld_validation_uses_a_seeded_degraded_set(images, tmp_path):
    from spsr_fast.data.images import read_image

    trainer = Trainer(tiny(images, tmp_path, **{"data.val_hr": str(images / "val")}))
    item = trainer._val_set[0]
    hr = read_image(str(images / "val" / "img00.png"))
    expected = degrade_image(hr, trainer.cfg.realworld, 4, 3, "img00.png")
    assert np.array_equal(item["lr"].permute(1, 2, 0).numpy(), expected)
    metrics = trainer.validate()
    assert np.isfinite(metrics["val/psnr_y"]) and "val/bicubic_psnr_y" in metrics
    # a written set is used as it is
    from spsr_fast.cli import main
    assert main(["degrade", str(images / "val"), "-o", str(tmp_path / "val_lr"), "--seed", "5"]) == 0
    written = Trainer(tiny(images, tmp_path, **{"data.val_hr": str(images / "val"),
                                                "data.val_lr": str(tmp_path / "val_lr")}))
    lr = written._val_set[0]["lr"].permute(1, 2, 0).numpy()
    assert np.array_equal(lr, degrade_image(hr, written.cfg.realworld, 4, 5, "img00.png"))


def test_sharpened_targets_and_plain_real_samples_in_spsr_g(images, tmp_path):
    from spsr_fast.ops import gradient_map

    trainer = Trainer(tiny(images, tmp_path))
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 3, 8, 8, generator=g)
    hr, real = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    terms, pairs = trainer.stage.generator_forward(lr, hr, 10, trainer.runner, real_hr=real)
    assert pairs["D"][0] is real
    torch.testing.assert_close(pairs["D_grad"][0], gradient_map(real, padding=2))
    same, _ = trainer.stage.generator_forward(lr, hr, 10, trainer.runner)
    assert same["l_g_pix"] == terms["l_g_pix"] and same["l_g_branch"] == terms["l_g_branch"]
    assert same["l_g_gan"] != terms["l_g_gan"]


@pytest.mark.parametrize("extra, message", [
    ({"data.train_lr": "LR"}, "data.train_lr: paired LR images and data.degradation realworld exclude each other"),
    ({"realworld.first.kernel_prob": [1.0]}, "realworld.first.kernel_prob: expected 6 probabilities, got 1"),
    ({"realworld.second.jpeg_rang": [30, 95]}, "realworld.second.jpeg_rang: unknown field"),
    ({"data.degradation": "camera"}, "data.degradation: must be one of bicubic, realworld"),
    ({"run.stage": "nse_contrastive", "model.arch": "nse"}, "data.degradation: stage nse_contrastive trains the NSE"),
])
def test_config_errors_name_the_field(images, tmp_path, extra, message):
    if "data.train_lr" in extra:
        (tmp_path / "LR").mkdir()
        extra = {"data.train_lr": str(tmp_path / "LR")}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        tiny(images, tmp_path, **extra)


def test_stage_without_separate_adversarial_targets_is_refused(images, tmp_path, monkeypatch):
    from spsr_fast.train import stages

    monkeypatch.setattr(stages.SPSRGStage, "separate_adversarial_targets", False)
    with pytest.raises(ConfigError, match="realworld.sharpen_adversarial: stage spsr_g gives"):
        Trainer(tiny(images, tmp_path))
    Trainer(tiny(images, tmp_path, **{"realworld.sharpen_adversarial": True}))   # every target sharpened: fine
