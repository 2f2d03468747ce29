"""Test-session setup: Triton runs in its interpreter on machines without a GPU, so every
Triton kernel is checked against its reference on CPU tensors."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture
def triton_device():
    """Device the Triton kernels run on here: the GPU, or the CPU through the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def no_downloads(tmp_path_factory, monkeypatch):
    """No test may use the network: pretrained-weight fetches (torchvision's VGG19, LPIPS'
    AlexNet) see an empty torch hub cache and an offline connection, as on a machine
    without internet, whatever this machine has."""
    import urllib.error

    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(f"tests run offline (asked for {url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
