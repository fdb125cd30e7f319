from __future__ import annotations

import pytest
import torch

from layermod.data import datasets as D


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No LAYERMOD_DATA, no system copy, an empty cache and no network for the loaders."""
    monkeypatch.delenv("LAYERMOD_DATA", raising=False)
    monkeypatch.setitem(D._SYSTEM_DIRS, "fashion-mnist", tmp_path / "no-system-copy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url, dest):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(D, "_download_file", no_network)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: more threads only wait for each other, so use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
