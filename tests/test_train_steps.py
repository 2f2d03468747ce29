"""Trainer iterations are all-or-nothing; the EMA after resume; DDP with a loss switched off;
run.deterministic and run.amp=bf16 settings (tiny models, CPU, a few steps)."""
import json
import os
import socket

import pytest
import torch

from spsr_fast.train import load_config
from spsr_fast.train.trainer import Trainer, TrainingStopped

from helpers import write_wave_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    write_wave_images(root / "train", 4, 48, seed=0)
    return root


def tiny(images, out, stage="spsr_g", **extra):
    overrides = {
        "run.stage": stage, "run.name": "t", "run.output_dir": str(out), "run.device": "cpu",
        "run.amp": "fp32", "run.threads": 1, "run.log_every": 1, "run.val_every": 1000,
        "run.image_every": 1000, "run.save_every": 1000, "run.progress_bar": False,
        "run.tensorboard": False, "run.ema_decay": 0.9,
        "data.train_hr": str(images / "train"), "data.hr_size": 32, "data.batch_size": 2,
        "data.num_workers": 0, "model.arch": "rrdbnet" if stage == "psnr" else "spsrnet",
        "model.nf": 4, "model.nb": 1, "model.gc": 4, "model.discriminator_nf": 4,
        "losses.perceptual_weight": 0, "optim.total_iters": 2, "optim.milestones": [1000],
    }
    overrides.update(extra)
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()])


def snapshot(trainer):
    """Every weight the optimisers can change, and the EMA. (BatchNorm statistics of the
    discriminators move with every training-mode forward, skipped or not.)"""
    state = {f"{n}.{k}": v.detach().clone() for n, net in trainer.stage.nets.items() for k, v in net.named_parameters()}
    state.update({f"ema.{k}": v.clone() for k, v in trainer.ema.state_dict().items()})
    return state


def changed(before, after):
    return [k for k in before if not torch.equal(before[k], after[k])]


def _nan_on(call_indices):
    """ragan_discriminator_loss that returns NaN on the given calls (0-based), else the real loss."""
    from spsr_fast.losses import ragan_discriminator_loss

    calls = []

    def loss(real, fake):
        calls.append(1)
        value = ragan_discriminator_loss(real, fake)
        return value * float("nan") if len(calls) - 1 in call_indices else value
    return loss


# ---------------------------------------------------------------- all-or-nothing iterations

def test_non_finite_discriminator_loss_changes_no_weight(images, tmp_path, monkeypatch, caplog):
    """SPSR-G: G, then D, then D_grad. A NaN in D_grad's loss (the last one computed) must
    leave G, D, D_grad and the EMA as they were: the iteration is skipped, as logged."""
    import spsr_fast.train.stages as stages

    # calls per iteration: D, D_grad -> NaN in every D_grad loss
    monkeypatch.setattr(stages, "ragan_discriminator_loss", _nan_on({1, 3, 5}))
    trainer = Trainer(tiny(images, tmp_path, **{"run.max_bad_steps": 5}))
    before = snapshot(trainer)
    trainer.train()
    assert trainer.bad_steps == 2 and "non-finite loss (l_d_grad)" in caplog.text
    assert "no weight changed" in caplog.text
    assert not changed(before, snapshot(trainer))


def test_finite_iteration_still_updates_every_network(images, tmp_path):
    trainer = Trainer(tiny(images, tmp_path, **{"optim.total_iters": 1}))
    before = snapshot(trainer)
    trainer.train()
    moved = {k.split(".")[0] for k in changed(before, snapshot(trainer))}
    assert moved == {"G", "D", "D_grad", "ema"} and trainer.bad_steps == 0


def test_structure_stage_non_finite_feature_discriminator_changes_no_weight(images, tmp_path, monkeypatch):
    """SPSR-P: a NaN in the feature discriminator's loss after the generator's backward."""
    import spsr_fast.train.stages as stages
    from spsr_fast.checkpoints import save_model
    from spsr_fast.models import NSE

    torch.manual_seed(0)
    nse_path = tmp_path / "nse.safetensors"
    save_model(NSE(width=4, out_channels=4), nse_path)
    monkeypatch.setattr(stages, "ragan_discriminator_loss", _nan_on({0, 1}))
    trainer = Trainer(tiny(images, tmp_path, stage="spsr_p", **{
        "structure.nse": str(nse_path), "losses.gan_weight": 0, "losses.gradient_gan_weight": 0,
        "run.max_bad_steps": 5}))
    assert set(trainer.stage.nets) == {"G", "D_struct"}
    before = snapshot(trainer)
    trainer.train()
    assert trainer.bad_steps == 2
    assert not changed(before, snapshot(trainer))


def test_fp16_skipped_steps_keep_the_grad_scaler_consistent(images, tmp_path, monkeypatch):
    """fp16: a skipped iteration has no optimiser step, so GradScaler.update() must not run
    (it asserts that a step recorded its inf checks)."""
    import spsr_fast.train.stages as stages

    monkeypatch.setattr(stages, "pixel_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    trainer = Trainer(tiny(images, tmp_path, stage="psnr", **{"run.amp": "fp16", "run.max_bad_steps": 2,
                                                              "optim.total_iters": 4}))
    with pytest.raises(TrainingStopped, match="max_bad_steps is 2"):
        trainer.train()
    assert trainer.bad_steps == 2


# ---------------------------------------------------------------- EMA on resume

def test_resume_from_a_checkpoint_without_ema_seeds_the_ema_from_it(images, tmp_path, caplog):
    first = Trainer(tiny(images, tmp_path, stage="psnr", **{"run.ema_decay": 0, "run.save_every": 2}))
    first.train()
    trained = {k: v.clone() for k, v in first.stage.generator.state_dict().items()}
    resumed = Trainer(tiny(images, tmp_path, stage="psnr", **{"optim.total_iters": 3}), resume="auto")
    assert resumed.step == 2 and "has no EMA" in caplog.text
    ema = resumed.ema.state_dict()
    assert all(torch.equal(ema[k], v) for k, v in trained.items())
    fresh = Trainer(tiny(images, tmp_path / "fresh", stage="psnr")).stage.generator.state_dict()
    assert not all(torch.equal(fresh[k], v) for k, v in trained.items())  # the test can tell them apart


# ---------------------------------------------------------------- DDP with a loss weight of zero

def test_parameters_no_loss_reaches_are_found_from_the_config(images, tmp_path):
    off = Trainer(tiny(images, tmp_path, **{"losses.branch_weight": 0}))
    assert off.stage.parameters_without_gradient(off.runner) == {"G": ["grad_conv_out.weight", "grad_conv_out.bias"]}
    on = Trainer(tiny(images, tmp_path))
    before = {f"{n}.{k}": v.clone() for n, net in on.stage.nets.items() for k, v in net.state_dict().items()}
    assert on.stage.parameters_without_gradient(on.runner) == {"G": []}
    # the probe leaves no trace: weights, BatchNorm statistics and requires_grad flags as they were
    after = {f"{n}.{k}": v for n, net in on.stage.nets.items() for k, v in net.state_dict().items()}
    assert not changed(before, after) and any("running_mean" in k for k in before)
    assert all(p.requires_grad for net in on.stage.nets.values() for p in net.parameters())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, images, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(tiny(images, out, **{"data.batch_size": 4, "optim.total_iters": 3,
                                           "losses.branch_weight": 0}))
    before = {k: v.clone() for k, v in trainer.stage.generator.state_dict().items()}
    trainer.train()
    after = trainer.stage.generator.state_dict()
    torch.save({"before": before, "after": {k: v.clone() for k, v in after.items()}},
               os.path.join(result_dir, f"rank{rank}.pt"))
    trainer.close()


def test_ddp_trains_with_the_gradient_branch_loss_off(images, tmp_path):
    """losses.branch_weight 0 leaves grad_conv_out without a gradient; DDP used to fail on the
    second step ("Expected to have finished reduction in the prior iteration")."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), images, tmp_path / "out", str(tmp_path)), nprocs=2)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0["after"][k], r1["after"][k]) for k in r0["after"])
    moved = changed(r0["before"], r0["after"])
    assert "conv_first.weight" in moved and "fusion_conv.weight" in moved
    assert "grad_conv_out.weight" not in moved


# ---------------------------------------------------------------- run.deterministic, run.amp

class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))


def test_deterministic_run_sets_cuda_determinism_before_cuda_starts(monkeypatch):
    from spsr_fast.train import determinism

    record = _Recorder()
    monkeypatch.setattr(torch, "use_deterministic_algorithms", record)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert determinism.configure_determinism(True) is None
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert record.calls == [((True,), {"warn_only": True})]
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True

    # CUDA already running: too late for cuBLAS, and the note says so
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUBLAS_WORKSPACE_CONFIG" in determinism.configure_determinism(True)
    # a value the user exported is kept
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert determinism.configure_determinism(True) is None and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_non_deterministic_run_keeps_cudnn_benchmark(monkeypatch):
    from spsr_fast.train import determinism

    record = _Recorder()
    monkeypatch.setattr(torch, "use_deterministic_algorithms", record)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert determinism.configure_determinism(False) is None
    assert torch.backends.cudnn.benchmark is True and not record.calls
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_trainer_applies_run_deterministic_before_any_device_work(images, tmp_path, monkeypatch):
    import spsr_fast.train.trainer as trainer_module

    order = []
    configure, init_distributed = trainer_module.configure_determinism, trainer_module.init_distributed
    monkeypatch.setattr(trainer_module, "configure_determinism",
                        lambda flag: order.append(("determinism", flag)) or configure(False))
    monkeypatch.setattr(trainer_module, "init_distributed",
                        lambda device_type: order.append(("distributed", device_type)) or init_distributed(device_type))
    Trainer(tiny(images, tmp_path, stage="psnr", **{"run.deterministic": True}))
    assert order == [("determinism", True), ("distributed", "cpu")]


def test_bf16_without_native_support_falls_back(monkeypatch):
    import spsr_fast.train.runner as runner

    monkeypatch.setattr(runner, "has_native_bf16", lambda device: False)
    amp, note = runner.resolve_amp("bf16", torch.device("cuda", 0))
    assert amp == "fp16" and "run.amp" in note and "GradScaler" in note
    amp, note = runner.resolve_amp("bf16", torch.device("cpu"))
    assert amp == "fp32" and "run.amp" in note
    assert runner.resolve_amp("fp32", torch.device("cuda", 0)) == ("fp32", None)
    monkeypatch.setattr(runner, "has_native_bf16", lambda device: True)
    assert runner.resolve_amp("bf16", torch.device("cuda", 0)) == ("bf16", None)


def test_trainer_runs_the_resolved_amp_mode(images, tmp_path, monkeypatch, caplog):
    import spsr_fast.train.runner as runner

    monkeypatch.setattr(runner, "has_native_bf16", lambda device: False)
    trainer = Trainer(tiny(images, tmp_path, stage="psnr", **{"run.amp": "bf16"}))
    assert trainer.runner.amp == "fp32" and trainer.runner.dtype is None
    assert "bf16 is not native on cpu" in caplog.text
