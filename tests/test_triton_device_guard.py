"""Every Triton launcher makes the tensor's GPU the current device around its launches
(kernels/_device.py): Triton launches on the current device, so without the guard a tensor
on cuda:1 while cuda:0 is current is handed to a kernel on cuda:0.

No second GPU is needed: the tensors are fake cuda:1 tensors, torch.cuda's device switch is
recorded instead of performed, and each launch records which device was current."""
import types

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from spsr_fast._triton import conv3x3, gradient_map, info_nce
from spsr_fast._triton._device import on_device_of

DEVICE = torch.device("cuda", 1)


@pytest.fixture
def devices(monkeypatch):
    """Stands in for the CUDA runtime's current device (cuda:0 at the start)."""
    state = types.SimpleNamespace(current=0, launches=[])

    def exchange(index):
        previous = state.current
        if index >= 0:
            state.current = index
        return previous

    monkeypatch.setattr(torch.cuda, "_exchange_device", exchange)
    monkeypatch.setattr(torch.cuda, "_maybe_exchange_device", exchange)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        multi_processor_count=132))
    return state


def recording_launch(state):
    """A `launch` wrapper for the launchers: records the current device instead of launching."""
    def launch(kernel):
        name = getattr(getattr(kernel, "fn", kernel), "__name__", repr(kernel))

        class Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: state.launches.append((name, state.current))
        return Grid()
    return launch


def fake_cuda(*shape, dtype=torch.float32, **kwargs):
    return torch.empty(shape, dtype=dtype, device=DEVICE, **kwargs)


def run_launchers(state):
    launch = recording_launch(state)
    with FakeTensorMode():
        x = fake_cuda(2, 3, 8, 9)
        gradient_map.forward(x, 2, launch=launch)
        gradient_map.backward(fake_cuda(2, 3, 10, 11), x, 2, launch=launch)

        n, length, dim = 13, 40, 16
        q, f = fake_cuda(n, dim), fake_cuda(2, length, dim)
        image = torch.zeros(n, dtype=torch.int64, device=DEVICE)
        positive = torch.zeros(n, dtype=torch.int64, device=DEVICE)
        centres = torch.zeros(n, 3, 2, dtype=torch.int64, device=DEVICE)
        _, lse = info_nce.forward(q, f, image, positive, centres, 8, 2, 64.0, launch=launch)
        info_nce.backward(fake_cuda(n), q, f, image, positive, centres, lse, 8, 2, 64.0, launch=launch)

        nf, gc = 8, 4
        weights = [fake_cuda(gc if k < 4 else nf, nf + k * gc, 3, 3) for k in range(5)]
        biases = [fake_cuda(gc if k < 4 else nf) for k in range(5)]
        conv3x3.dense_blocks(fake_cuda(1, nf, 5, 6), weights, biases, 0.2, False, True, launch=launch)


def test_every_triton_launch_runs_on_the_tensors_gpu(devices):
    run_launchers(devices)
    names = [name for name, _ in devices.launches]
    assert {"_forward_kernel", "_backward_kernel", "_backward_dq_kernel", "_backward_df_kernel",
            "_conv3x3_kernel"} <= set(names), names
    assert names.count("_conv3x3_kernel") == 5  # one launch per conv of the block
    wrong = [(name, current) for name, current in devices.launches if current != DEVICE.index]
    assert not wrong, f"launched while another GPU was current: {wrong}"
    assert devices.current == 0, "the previous device is restored after the launches"


def test_guard_is_a_no_op_for_cpu_tensors():
    guard = on_device_of(torch.zeros(1))
    assert not isinstance(guard, torch.cuda.device)
    with FakeTensorMode():
        cuda_guard = on_device_of(fake_cuda(1))
    assert isinstance(cuda_guard, torch.cuda.device) and cuda_guard.idx == DEVICE.index
