from __future__ import annotations

import signal

import pytest
import torch

import models_for_tests
from idx_files import write_mnist_like
from layermod import models
from layermod.data import download as DL
from layermod.models.checkpoint import save_checkpoint


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No LAYERMOD_DATA, no system copy, an empty cache and no network for the loaders."""
    monkeypatch.delenv("LAYERMOD_DATA", raising=False)
    monkeypatch.setitem(DL._SYSTEM_DIRS, "fashion-mnist", tmp_path / "no-system-copy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url, dest):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(DL, "_download_file", no_network)
    return tmp_path


@pytest.fixture
def blobs_npz(tmp_path):
    """A .npz dataset of 4 separated classes, 30 samples each, as 1x4x4 images."""
    return models_for_tests.blobs_npz(tmp_path / "blobs.npz", n_per_class=30)


@pytest.fixture
def resnet20_checkpoint(tmp_path):
    """(weights, data folder): an untrained ResNet20 (width 1/8) checkpoint whose sidecar names fashion-mnist,
    and tiny Fashion-MNIST-layout files for it (200 training and 100 test images), for prune."""
    data = tmp_path / "fm"
    write_mnist_like(data, n_train=200, n_test=100)
    args = {"num_classes": 10, "in_channels": 1, "width": 0.125}
    torch.manual_seed(0)
    weights = save_checkpoint(models.create("resnet20", **args), tmp_path / "ckpt" / "best.safetensors",
                              {"arch": "resnet20", "arch_args": args, "dataset": "fashion-mnist"})
    return weights, data


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: more threads only wait for each other, so the whole suite uses one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def live_sigint():
    """SIGINT raises KeyboardInterrupt during the test, as in a terminal, even when the test run was started in
    the background (where the shell ignores SIGINT); the previous handler comes back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
