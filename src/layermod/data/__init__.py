"""Labelled data: named datasets, image folders, ``.npz`` files, text tables, ``hf:`` and ``torchvision:`` sets, and
class-balanced draws.

The modules, lowest first (each imports only those before it):

* :mod:`~layermod.data.bounds`: the bound on what a file may declare, shared by every reader;
* :mod:`~layermod.data.arrays`: :class:`ArrayDataset` and the accessors of any data (:func:`as_dataset`,
  :func:`dataset_labels`, :func:`gather`);
* :mod:`~layermod.data.npz`: :func:`load_npz`;
* :mod:`~layermod.data.download`: the search order, the cache and downloads of named datasets;
* :mod:`~layermod.data.idx`, :mod:`~layermod.data.cifar`, :mod:`~layermod.data.digits`,
  :mod:`~layermod.data.imagefolder`: the readers;
* :mod:`~layermod.data.tabular` (CSV / JSON / JSON-lines / Parquet columns, Parquet read by the script
  :mod:`~layermod.data.parquet_child`), :mod:`~layermod.data.text` (:class:`TokenDataset`, tokenisation),
  :mod:`~layermod.data.hfdata` (``hf:`` sets), :mod:`~layermod.data.tvdata` (``torchvision:`` names);
* :mod:`~layermod.data.draws`: :func:`balanced_draws` and :func:`~layermod.data.draws.balanced_subset`;
* :mod:`~layermod.data.datasets`: :data:`DATASETS` and :func:`load_dataset`;
* :mod:`~layermod.data.hfhub` (``hf:`` names, the tokenizer saved with a model) and :mod:`~layermod.data.spec`
  (:func:`~layermod.data.spec.resolve_data`: the dataset a user names).

Code inside layermod imports from the defining module, never from this package.
"""

from .arrays import ArrayDataset, Data, Labels, as_dataset, dataset_labels, gather
from .cifar import CIFAR_DATASETS, load_cifar
from .datasets import DATASETS, load_dataset
from .draws import balanced_draws
from .idx import read_idx
from .imagefolder import IMAGE_SUFFIXES, load_image_folder
from .npz import load_npz
from .text import TokenDataset, load_text_file

__all__ = ["ArrayDataset", "CIFAR_DATASETS", "DATASETS", "Data", "IMAGE_SUFFIXES", "Labels", "TokenDataset",
           "as_dataset", "balanced_draws", "dataset_labels", "gather", "load_cifar", "load_dataset",
           "load_image_folder", "load_npz", "load_text_file", "read_idx"]
