"""The package namespace: only public names, each listed in ``__all__`` or a subpackage."""

from __future__ import annotations

import pkgutil

import layermod


def test_every_public_name_is_exported_or_a_subpackage():
    subpackages = {info.name for info in pkgutil.iter_modules(layermod.__path__)}
    public = [name for name in dir(layermod) if not name.startswith("_")]
    assert "importlib" not in public
    assert [name for name in public if name not in layermod.__all__ and name not in subpackages] == []


def test_load_checkpoint_is_exported():
    from layermod.models.checkpoint import load_checkpoint

    assert "load_checkpoint" in layermod.__all__ and layermod.load_checkpoint is load_checkpoint
