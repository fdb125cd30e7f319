"""Labelled image data: named datasets, image folders, ``.npz`` files, and class-balanced draws.

The modules, lowest first (each imports only those before it):

* :mod:`~layermod.data.bounds`: the bound on what a file may declare, shared by every reader;
* :mod:`~layermod.data.arrays`: :class:`ArrayDataset` and the accessors of any data (:func:`as_dataset`,
  :func:`dataset_labels`, :func:`gather`);
* :mod:`~layermod.data.draws`: :func:`balanced_draws`;
* :mod:`~layermod.data.npz`: :func:`load_npz`;
* :mod:`~layermod.data.download`: the search order, the cache and downloads of named datasets;
* :mod:`~layermod.data.idx`, :mod:`~layermod.data.cifar`, :mod:`~layermod.data.digits`,
  :mod:`~layermod.data.imagefolder`: the readers;
* :mod:`~layermod.data.datasets`: :data:`DATASETS` and :func:`load_dataset`.

The public names below are imported on first use (PEP 562), so that importing one module of the package does not
import the others. Code inside layermod imports from the defining module, never from this package.
"""

import importlib

# Where each public name lives.
_EXPORTS = {
    "ArrayDataset": "arrays",
    "CIFAR_DATASETS": "cifar",
    "DATASETS": "datasets",
    "IMAGE_SUFFIXES": "imagefolder",
    "as_dataset": "arrays",
    "balanced_draws": "draws",
    "dataset_labels": "arrays",
    "gather": "arrays",
    "load_cifar": "cifar",
    "load_dataset": "datasets",
    "load_image_folder": "imagefolder",
    "load_npz": "npz",
    "read_idx": "idx",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
