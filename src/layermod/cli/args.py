"""Argument groups shared by the commands, the argparse types they use, and loading the model they name.

Decisions, on purpose:

* **One graph and draw group.** Every measuring command (curve, attack, compare, prune, train with
  ``--track-every``) takes the same options, built by :func:`add_measure_args` from the defaults and checks of
  :class:`~layermod.measure.config.GraphConfig` and :class:`~layermod.measure.config.DrawConfig`: a bad value
  is refused while parsing, in one line, in the words of the config's own check.
  :func:`measure_configs` turns the parsed options back into the two configs.
* **train's probe.** ``train`` has its own ``--seed`` (the training's), so there the draw seed is
  ``--probe-seed``; ``--probe-per-class`` and ``--probe-repeats`` are other names of ``--n-per-class`` and
  ``--repeats``. The draw seed is ``args.draw_seed`` in every command.
* **Quick parser.** Nothing here imports torch (or a module that does) at import time or while the parser is
  built or reads its arguments: ``--help`` and argument errors answer at once, and a Ctrl-C while torch loads
  reaches ``main``'s handler. The configs (which import neither torch nor numpy) are imported when a parser is
  built, inside ``main``; the library is imported by the command that runs.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from layermod.errors import DatasetError, DeviceError, LayermodError, SweepError

if TYPE_CHECKING:
    import torch

    from layermod.measure.config import DrawConfig, GraphConfig

__all__ = [
    "add_data_args",
    "add_extraction_args",
    "add_library_args",
    "add_measure_args",
    "add_model_args",
    "add_text_args",
    "checkpoint_text",
    "arch_arg",
    "data_options",
    "data_split",
    "key_value",
    "layer_spec",
    "load_model",
    "measure_configs",
    "non_negative",
    "out_path",
    "positive",
    "positive_real",
    "to_device",
]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def out_path(text: str) -> str:
    """An ``--out`` location: any path but the empty one (which would mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory or file, got an empty path")
    return text


def positive_real(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def memory(text: str) -> int:
    """A size like ``512M`` or ``4G`` in bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read memory size {text!r}; write e.g. 512M or 4G")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def layer_spec(text: str) -> list[str | int]:
    """``--layers``, read as the API reads a layer string (:func:`layermod.extract.layers.parse_layers`)."""
    from layermod.extract.layers import parse_layers

    return parse_layers(text)


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with the value read as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write KEY=VALUE, e.g. depth=2 or convs=[1,1,1]")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


_SMALLEST_DRAWS = {"n_per_class": 1, "repeats": 1, "null_permutations": 0}  # beside the field a flag checks


def _config_field(config: type, name: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type reading the field ``name`` of ``config`` with ``parse`` and checking it as ``config``
    does, beside the smallest other draw fields (their product is checked once all are parsed); argparse names
    it ``name`` when ``parse`` fails."""
    def read(text: str) -> object:
        value = parse(text)
        others = _SMALLEST_DRAWS if config.__name__ == "DrawConfig" else {}
        try:
            config(**{**others, name: value})
        except LayermodError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    read.__name__ = name
    return read


def add_measure_args(parser: argparse.ArgumentParser, *, probe: bool = False,
                     title: str = "graph and draws") -> None:
    """The graph and draw options (defaults and checks from GraphConfig and DrawConfig); with ``probe``, as
    ``train`` names them (see the module doc)."""
    from layermod.measure.config import KNN, METRICS, PRECISIONS, SYMMETRIZE, DrawConfig, GraphConfig

    graph, draws = GraphConfig(), DrawConfig()
    group = parser.add_argument_group(title)
    group.add_argument("--k", type=_config_field(GraphConfig, "k", int), default=graph.k,
                       help=f"neighbours per sample (default {graph.k}, the paper's)")
    group.add_argument("--metric", choices=METRICS, default=graph.metric, help=f"similarity (default {graph.metric})")
    group.add_argument("--symmetrize", choices=SYMMETRIZE, default=graph.symmetrize,
                       help="how the directed kNN graph is made undirected: mean (A + A^T) / 2, union max(A, A^T), "
                       f"mutual min(A, A^T) (default {graph.symmetrize})")
    group.add_argument("--binary", action="store_true", default=not graph.weighted,
                       help="unit edge weights instead of the similarities")
    group.add_argument("--resolution", type=_config_field(GraphConfig, "resolution", float),
                       default=graph.resolution, help=f"modularity resolution gamma, >= 0 (default "
                       f"{graph.resolution:g}: Newman's Q)")
    group.add_argument("--knn", choices=KNN, default=graph.knn, help="neighbour search: exact, or faiss's "
                       f"approximate ivf / hnsw for many samples (needs layermod[ann]; default {graph.knn})")
    group.add_argument("--sketch-dim", type=_config_field(GraphConfig, "sketch_dim", int), default=graph.sketch_dim,
                       metavar="M", help="project features to M dimensions first (approximate, seeded; for very "
                       "wide layers; default: none)")
    group.add_argument("--precision", choices=PRECISIONS, default=graph.precision, help="precision of the matmul "
                       "that proposes neighbours: float32 (TF32 off), tf32 or bf16; float64 settles what it cannot "
                       f"certify, so the graph is the same, a coarser one leaves more to settle (default "
                       f"{graph.precision})")
    per_class = ["--n-per-class", "--probe-per-class"] if probe else ["--n-per-class"]
    group.add_argument(*per_class, type=_config_field(DrawConfig, "n_per_class", int), default=draws.n_per_class,
                       dest="n_per_class", help=f"samples per class in each draw (default {draws.n_per_class})")
    repeats = ["--repeats", "--probe-repeats"] if probe else ["--repeats"]
    group.add_argument(*repeats, type=_config_field(DrawConfig, "repeats", int), default=draws.repeats,
                       dest="repeats", help=f"class-balanced draws (default {draws.repeats})")
    seed_help = (f"seed of the probe draws and shuffles (default {draws.seed})" if probe else
                 f"seed of the draws, the shuffles and an untrained model's weights; any integer (default "
                 f"{draws.seed})")
    group.add_argument("--probe-seed" if probe else "--seed", type=int, default=draws.seed, dest="draw_seed",
                       metavar="SEED", help=seed_help)
    group.add_argument("--null", type=_config_field(DrawConfig, "null_permutations", int),
                       default=draws.null_permutations, metavar="P", help="label shuffles per layer and draw for a "
                       f"chance baseline and z-scores, 0 or at least 2 (default {draws.null_permutations}: none)")


def measure_configs(args: argparse.Namespace) -> tuple[GraphConfig, DrawConfig]:
    """The graph and draw configs of the options :func:`add_measure_args` added."""
    from layermod.measure.config import DrawConfig, GraphConfig

    graph = GraphConfig(k=args.k, metric=args.metric, symmetrize=args.symmetrize, weighted=not args.binary,
                        resolution=args.resolution, knn=args.knn, sketch_dim=args.sketch_dim,
                        precision=args.precision)
    draws = DrawConfig(n_per_class=args.n_per_class, repeats=args.repeats, seed=args.draw_seed,
                       null_permutations=args.null)
    return graph, draws


def add_extraction_args(parser: argparse.ArgumentParser) -> None:
    """Which layers, and how the features are extracted: --layers, --batch-size, --max-memory, --pool."""
    group = parser.add_argument_group("layers and extraction")
    group.add_argument("--layers", type=layer_spec, default=["auto"],  # parsed: a text default would load torch
                       help="'auto', names, glob patterns or indices into the auto points, comma-separated "
                       "(e.g. 'auto', 'features.*', '0,-1'); see `layermod layers`")
    group.add_argument("--batch-size", type=positive, default=256, help="samples per forward pass (default 256)")
    group.add_argument("--max-memory", type=memory, default="2G",
                       help="memory for features held at once; layers are extracted in groups that fit, and a layer "
                       "that alone does not fit goes to a temporary file searched in blocks (default 2G)")
    group.add_argument("--pool", choices=["auto", "cls", "mean", "last", "flatten"], default="auto",
                       help="how a 3-D (batch, tokens, hidden) layer output becomes one vector per sample: auto (the "
                       "model's own: CLS for BERT-like encoders, last token for decoders, else masked mean; flatten "
                       "for non-token models), cls, mean, last, flatten; other outputs are flattened (default auto)")


def arch_arg(text: str) -> tuple[str, object]:
    """``--arch-arg KEY=VALUE``: another builder argument (not one that has its own option)."""
    key, value = key_value(text)
    if key in ("num_classes", "in_channels", "width", "pretrained", "hf_task"):
        raise argparse.ArgumentTypeError(f"pass {key} as --{key.replace('_', '-')}, not --arch-arg")
    return key, value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="architecture name (see `layermod models`), torchvision:NAME, timm:NAME, "
                       "hf:DIR_OR_ID, or module:function / file.py:function returning an nn.Module; optional when "
                       "--weights has a layermod sidecar")
    group.add_argument("--weights", help=".safetensors weights to load")
    group.add_argument("--num-classes", type=int, help="classes of a built-in architecture (default 10) or of a "
                       "library model (its num_classes / num_labels)")
    group.add_argument("--in-channels", type=int, help="input channels of a built-in architecture (default 1) or of "
                       "a library model (timm in_chans, HF num_channels)")
    group.add_argument("--width", type=float, help="width multiplier of a built-in architecture (default 1)")
    add_library_args(group)
    group.add_argument("--device", default="auto", help="torch device to run the model on (default auto: cuda when available)")


def add_library_args(group: argparse._ArgumentGroup) -> None:
    """--arch-arg, --pretrained and --hf-task (the model options beyond the registry's)."""
    group.add_argument("--arch-arg", type=arch_arg, action="append", metavar="KEY=VALUE",
                       help="another builder argument, repeatable (e.g. depth=2; img_size=32 for timm:vit_*; a config "
                       "attribute for hf:); the value is read as JSON when it parses")
    group.add_argument("--pretrained", action="store_true", help="load a torchvision:/timm:/hf: model's weights "
                       "through its library (downloaded, or a local hf: directory's); default: random, seeded")
    group.add_argument("--hf-task", help="the task of an hf: model, built by its transformers Auto class when it "
                       "differs from the saved architecture's: image-classification, text-classification, "
                       "token-classification, feature-extraction or text-generation (default: the class the "
                       "config's architectures names)")


def add_data_args(parser: argparse.ArgumentParser, required: bool, *, split: bool = True) -> None:
    """--dataset and how it is read; ``split=False`` for commands that read both splits themselves (no --split)."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=required,
                       help="fashion-mnist, mnist, digits, cifar10, cifar100, folder:PATH (one folder per class), "
                       "torchvision:NAME (CIFAR10, MNIST, ... under --data-dir), hf:NAME_OR_DIR (a datasets set: "
                       "a save_to_disk folder or a hub name), a .csv/.tsv/.json/.jsonl/.parquet file of texts and "
                       "labels, a .npz file with arrays X and y, or module:function")
    if split:
        group.add_argument("--split", help="dataset split: train or test (default test); an hf: set "
                           "any split it has, e.g. validation")
    group.add_argument("--data-dir", help="folder holding the dataset files (else $LAYERMOD_DATA, system and cache); "
                       "torchvision's root for torchvision:NAME")
    add_text_args(group)


def add_text_args(group: argparse._ArgumentGroup) -> None:
    """--text-column, --label-column, --max-length: how a table of texts is read (default: as a text checkpoint's
    sidecar records it, else text, label, 128; see :func:`data_options`)."""
    group.add_argument("--text-column", help="column of the texts (or an hf: set's images) in a table file or hf: "
                       "set (default: a text checkpoint's, else text)")
    group.add_argument("--label-column", help="column of the labels: class indices, or names numbered in sorted "
                       "order (default: a text checkpoint's, else label)")
    group.add_argument("--max-length", type=positive, help="tokens per text: longer ones are cut, all padded to the "
                       "longest (default: a text checkpoint's, else 128)")


def data_split(args: argparse.Namespace) -> str:
    """``--split``, ``"test"`` when not given; one line for a split given with a dataset that has none."""
    from layermod.data.spec import has_splits

    if args.split is None:
        return "test"
    if args.dataset and not has_splits(args.dataset):
        raise DatasetError(f"--split {args.split}: {args.dataset} has no splits (a .npz, table file or module:function "
                           "is one set of samples); leave out --split")
    return args.split


def data_options(args: argparse.Namespace, *, recorded: dict | None = None) -> dict:
    """The keyword arguments of :func:`layermod.data.spec.resolve_data` beyond the dataset, split and folder.

    Each text option is the one given, else the one ``recorded`` (a text checkpoint's,
    :func:`layermod.models.spec.text_options`; by default the sidecar of ``--weights``, without its classes), else
    the default; the tokenizer is the one of ``--model``, else the recorded one.
    """
    from layermod.data.spec import TEXT_DEFAULTS

    if recorded is None:
        recorded = {key: value for key, value in checkpoint_text(getattr(args, "weights", None)).items()
                    if key != "classes"}
    given = {key: getattr(args, key, None) for key in TEXT_DEFAULTS}
    options = {"tokenizer": None, **TEXT_DEFAULTS, **recorded,
               **{key: value for key, value in given.items() if value is not None}}
    if getattr(args, "model", None) is not None:
        options["tokenizer"] = args.model
    return options


def checkpoint_text(weights: str | None) -> dict:
    """:func:`layermod.models.spec.text_options` of the checkpoint ``weights`` ({} without a layermod sidecar)."""
    if weights is None:
        return {}
    from layermod.models.checkpoint import read_sidecar
    from layermod.models.commit import has_sidecar, sidecar_path, weights_path
    from layermod.models.spec import text_options

    file = weights_path(weights)
    return text_options(read_sidecar(file), sidecar_path(file)) if has_sidecar(file) else {}


def load_model(args: argparse.Namespace, *, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """The model of the options :func:`add_model_args` added, on its device, and how it was specified; ``seed``
    draws an untrained built-in model's weights. Inside an executor's worker, a copy of the one its earlier items
    loaded (:func:`layermod.models.cache.cached_model`)."""
    from layermod.models.cache import cached_model

    arch_args = {"num_classes": args.num_classes, "in_channels": args.in_channels, "width": args.width,
                 "hf_task": args.hf_task, **dict(args.arch_arg or [])}
    model, description = cached_model(args.model, weights=args.weights, arch_args=arch_args, seed=seed,
                                      pretrained=args.pretrained)
    to_device(model, args.device)
    return model, description


def resolve_device(device: str) -> str:
    """``device`` as torch takes it, ``"auto"`` being CUDA when available, else the CPU; one line for a device
    layermod cannot use (:func:`layermod.io.devices.check_device`)."""
    import torch

    from layermod.io.devices import check_device

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        check_device(device)
    except DeviceError as err:
        raise DeviceError(f"{err}: pass --device cpu") from None
    return device


def to_device(model: torch.nn.Module, device: str) -> None:
    """Move ``model`` to ``device`` (:func:`resolve_device`)."""
    model.to(resolve_device(device))


def add_backend_args(parser: argparse.ArgumentParser, what: str = "items") -> argparse._ArgumentGroup:
    """``--backend``, ``--workers``, ``--address``: where the command's ``what`` run
    (:func:`layermod.sweep.executor.run_items`); returns the group, for a command's own additions."""
    group = parser.add_argument_group(f"where the {what} run")
    group.add_argument("--backend", choices=["local", "ray"], default="local",
                       help=f"local: this process, or --workers processes; ray: Ray actors, each fed {what} one at a "
                       "time (pip install \"layermod[ray]\"), an embedded local Ray unless --address is given (default "
                       "local)")
    group.add_argument("--workers", type=positive, help="local: worker processes (default: this process); ray: actors "
                       "at most, and the CPUs of the embedded Ray (default: as many as the CPUs and GPUs fit)")
    group.add_argument("--address", help="ray: the cluster to join, e.g. 10.0.0.1:6379 or auto (default $RAY_ADDRESS, "
                       "else an embedded Ray); every node must see the same paths")
    return group


def check_backend(args: argparse.Namespace) -> None:
    """Refuse ``--address`` without ``--backend ray`` (one line)."""
    if args.address and args.backend != "ray":
        raise SweepError(f"--address {args.address} is a Ray cluster's; add --backend ray")
