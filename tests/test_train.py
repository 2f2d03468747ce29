"""Trainer end to end on generated images (tiny models, 32 px patches, a few steps)."""
import json
import logging
import os
import socket

import numpy as np
import pytest
import torch

from spsr_fast.train import load_config
from spsr_fast.train.__main__ import main as train_main
from spsr_fast.train.trainer import Trainer, TrainingStopped

from helpers import write_wave_images


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network in tests: validation's LPIPS finds an empty torch hub cache and no download."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError("tests run offline")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    write_wave_images(root / "train", 6, 64, seed=0)
    write_wave_images(root / "val", 2, 48, seed=1)
    return root


def tiny(images, out, stage="spsr_g", **extra):
    overrides = {
        "run.stage": stage, "run.name": "t", "run.output_dir": str(out), "run.device": "cpu",
        "run.amp": "fp32", "run.threads": 2, "run.log_every": 1, "run.val_every": 1000,
        "run.image_every": 1000, "run.save_every": 1000, "run.progress_bar": False,
        "run.tensorboard": False, "run.ema_decay": 0.9,
        "data.train_hr": str(images / "train"), "data.hr_size": 32, "data.batch_size": 2,
        "data.num_workers": 0, "model.arch": "spsrnet" if stage == "spsr_g" else "rrdbnet",
        "model.nf": 8, "model.nb": 1, "model.gc": 4, "model.discriminator_nf": 4,
        "losses.vgg_weights": "random", "optim.total_iters": 4, "optim.milestones": [3],
    }
    overrides.update(extra)
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()])


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_psnr_stage_l1_falls_and_skips_corrupt_image(images, tmp_path, caplog):
    train = tmp_path / "train"
    write_wave_images(train, 4, 64, seed=2)
    (train / "zz_broken.png").write_bytes(b"\x89PNG broken")
    cfg = tiny(images, tmp_path / "out", stage="psnr", **{
        "data.train_hr": str(train), "optim.total_iters": 40, "optim.lr_g": 1e-3,
        "losses.pixel_weight": 1.0, "optim.milestones": [1000], "data.val_hr": str(images / "val"),
        "run.val_every": 40})
    with caplog.at_level(logging.WARNING):
        Trainer(cfg).train()
    assert "zz_broken.png" in caplog.text
    log = read_log(tmp_path / "out" / "t")
    losses = [r["loss/l_g_pix"] for r in log if "loss/l_g_pix" in r]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    val = [r for r in log if "val/psnr_y" in r][-1]
    assert np.isfinite(val["val/psnr_y"]) and "val/ema_psnr_y" in val and "val/bicubic_psnr_y" in val


def test_spsr_g_stage_end_to_end(images, tmp_path):
    cfg = tiny(images, tmp_path, **{"run.image_every": 2, "run.save_every": 2,
                                    "data.val_hr": str(images / "val"), "run.val_every": 4})
    Trainer(cfg).train()
    run = tmp_path / "t"
    log = read_log(run)
    terms = ["l_g_pix", "l_g_fea", "l_g_pix_grad", "l_g_branch", "l_g_gan", "l_g_gan_grad", "l_d", "l_d_grad"]
    for r in (r for r in log if "loss/l_g_total" in r):
        for t in terms:
            assert np.isfinite(r[f"loss/{t}"]), t
        assert r["grad_norm/G"] > 0 and r["lr/G"] > 0
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000002.pt", "step_00000004.pt"]
    assert os.path.exists(run / "images" / "step_00000004.png")
    assert [r for r in log if "lr/D" in r][-1]["lr/D"] == pytest.approx(5e-5)  # x0.5 at the milestone


def test_fusion_only_iterations_train_only_the_fusion(images, tmp_path):
    cfg = tiny(images, tmp_path, **{"optim.fusion_only_iters": 2, "optim.total_iters": 2})
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.stage.generator.state_dict().items()}
    trainer.train()
    after = trainer.stage.generator.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("fusion_", "conv_last.")) for k in changed)
    assert any(k.startswith("fusion_block") for k in changed)


def _all_weights(trainer):
    state = trainer.state_dict()
    flat = {f"{n}.{k}": v for n, sd in state["models"].items() for k, v in sd.items()}
    flat.update({f"ema.{k}": v for k, v in state["ema"].items()})
    return flat


def test_resume_is_bit_exact(images, tmp_path):
    straight = Trainer(tiny(images, tmp_path / "a", **{"optim.fusion_only_iters": 1}))
    straight.train()
    half = tiny(images, tmp_path / "b", **{"optim.fusion_only_iters": 1, "run.save_every": 2})
    first = Trainer(half)
    first.cfg.optim.total_iters = 2
    first.train()
    resumed = Trainer(tiny(images, tmp_path / "b", **{"optim.fusion_only_iters": 1}), resume="auto")
    assert resumed.step == 2
    resumed.train()
    a, b = _all_weights(straight), _all_weights(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa["optimizers"]["G"]["state"][0]["step"] == sb["optimizers"]["G"]["state"][0]["step"]


def test_non_finite_losses_are_skipped_then_stop_the_run(images, tmp_path, monkeypatch, caplog):
    import spsr_fast.train.stages as stages

    monkeypatch.setattr(stages, "pixel_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    cfg = tiny(images, tmp_path, stage="psnr", **{"run.max_bad_steps": 3, "optim.total_iters": 10})
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.stage.generator.state_dict().items()}
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingStopped, match="max_bad_steps is 3"):
        trainer.train()
    assert trainer.bad_steps == 3 and "non-finite loss (l_g_pix)" in caplog.text
    assert all(torch.equal(v, trainer.stage.generator.state_dict()[k]) for k, v in before.items())


def test_cli_reports_config_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  stage: psnr\ndata:\n  train_hr: [/nonexistent/folder]\n")
    assert train_main(["--config", str(cfg)]) == 2
    assert "data.train_hr[0]: folder does not exist" in capsys.readouterr().err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, images, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = tiny(images, out, **{"data.batch_size": 4, "optim.total_iters": 3, "run.threads": 1,
                               "optim.fusion_only_iters": 1, "run.save_every": 3})
    trainer = Trainer(cfg)
    trainer.train()
    torch.save(_all_weights(trainer), os.path.join(result_dir, f"rank{rank}.pt"))
    trainer.close()


def test_ddp_gloo_two_processes_keep_weights_identical(images, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), images, tmp_path / "out", str(tmp_path)), nprocs=2)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    params = [k for k in w0 if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(w0[k], w1[k]) for k in params)
    assert os.path.exists(tmp_path / "out" / "t" / "checkpoints" / "step_00000003.pt")


def test_sr_branch_initialised_from_psnr_checkpoint(images, tmp_path):
    psnr = Trainer(tiny(images, tmp_path / "psnr", stage="psnr", **{"optim.total_iters": 1, "run.save_every": 1}))
    psnr.train()
    path = str(tmp_path / "psnr" / "t" / "checkpoints" / "step_00000001.pt")
    spsr = Trainer(tiny(images, tmp_path / "g", **{"model.pretrained": path}))
    source = psnr.stage.generator.state_dict()
    target = spsr.stage.generator.state_dict()
    for k in ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.bias", "conv_hr.weight"):
        assert torch.equal(source[k], target[k]), k
    assert not torch.equal(source["conv_last.weight"][:, :8], target["conv_last.weight"][:, :8])


def test_sr_branch_init_refuses_a_checkpoint_that_does_not_fit(images, tmp_path):
    """model.pretrained: an RRDBNet nb=1 x2 into the SPSRNet nb=3 x4 of the config used to copy
    the 38 tensors that matched and skip the rest without a word."""
    from spsr_fast.checkpoints import save_model
    from spsr_fast.models import RRDBNet
    from spsr_fast.train.errors import UserError
    from spsr_fast.train.stages import init_sr_branch

    path = tmp_path / "x2.safetensors"
    save_model(RRDBNet(nf=8, nb=1, gc=4, scale=2), path)
    spsr = Trainer(tiny(images, tmp_path / "g", **{"model.nb": 3})).stage.generator
    before = {k: v.clone() for k, v in spsr.state_dict().items()}
    with pytest.raises(UserError) as info:
        init_sr_branch(spsr, str(path))
    message = str(info.value)
    assert message.startswith(f"model.pretrained: {path}: ") and "\n" not in message
    assert "missing 62 tensors of body.1, body.2, conv_up2" in message
    assert all(torch.equal(before[k], v) for k, v in spsr.state_dict().items())
    with pytest.raises(UserError, match="body.1, body.2, conv_up2"):  # the same through the config
        Trainer(tiny(images, tmp_path / "g", **{"model.nb": 3, "model.pretrained": str(path)}))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_modes_run(images, tmp_path, amp):
    trainer = Trainer(tiny(images, tmp_path, stage="psnr", **{"run.amp": amp, "optim.total_iters": 2}))
    assert (trainer.runner.scaler is not None) == (amp == "fp16")
    trainer.train()
    log = read_log(tmp_path / "t")
    assert all(np.isfinite(r["loss/l_g_pix"]) for r in log if "loss/l_g_pix" in r)
    if amp == "fp16":
        assert trainer.state_dict()["scaler"]["scale"] > 0


def test_basicsr_init_keeps_rrdbs_and_resets_the_rest():
    from spsr_fast.models import SPSRNet
    from spsr_fast.train.stages import basicsr_init_

    torch.manual_seed(0)
    net = SPSRNet(nf=8, nb=1, gc=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    basicsr_init_(net)
    after = net.state_dict()
    assert torch.equal(before["body.0.rdb1.conv1.weight"], after["body.0.rdb1.conv1.weight"])
    assert torch.equal(before["fusion_block.rdb1.conv1.weight"], after["fusion_block.rdb1.conv1.weight"])
    assert after["conv_first.weight"].std() > 3 * before["conv_first.weight"].std()


def test_interpolating_init_starts_the_generator_as_an_interpolator(images, tmp_path):
    import torch.nn.functional as F

    trainer = Trainer(tiny(images, tmp_path, **{"model.init": "interpolating"}))
    lr = torch.rand(1, 3, 8, 8)
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = (torch.outer(blur, blur) / 16).expand(3, 1, 3, 3)
    expected = lr
    for _ in range(2):  # nearest x2 + [1 2 1] blur per step
        expected = F.conv2d(F.interpolate(expected, scale_factor=2, mode="nearest"), blur, padding=1, groups=3)
    with torch.no_grad():
        sr = trainer.stage.sr_of(trainer.stage.generator.eval()(lr))
    torch.testing.assert_close(sr, expected, rtol=1e-5, atol=1e-5)


def test_adversarial_ramp_scales_the_generator_gan_terms(images, tmp_path):
    from spsr_fast.train.config import ConfigError
    from spsr_fast.train.stages import adversarial_scale

    cfg = tiny(images, tmp_path, **{"losses.adversarial_ramp_iters": 4})
    assert [adversarial_scale(cfg.losses, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert adversarial_scale(tiny(images, tmp_path).losses, 0) == 1.0
    # same seed, same data: at step 0 the ramped terms are exactly 1/4 of the full ones
    logs = []
    for ramp, name in ((0, "full"), (4, "ramped")):
        torch.manual_seed(0)
        Trainer(tiny(images, tmp_path / name, **{"losses.adversarial_ramp_iters": ramp,
                                                 "optim.total_iters": 1})).train()
        logs.append(read_log(tmp_path / name / "t")[0])
    for term in ("loss/l_g_gan", "loss/l_g_gan_grad"):
        assert logs[1][term] == pytest.approx(logs[0][term] / 4, rel=1e-5), term
    with pytest.raises(ConfigError, match="losses.adversarial_ramp_iters"):
        tiny(images, tmp_path, **{"losses.adversarial_ramp_iters": -1})
