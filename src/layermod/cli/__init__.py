"""Command-line interface: a thin shell over the library.

Every command reports bad input as one line on stderr and exits with status 2 (1 for an unexpected internal
error, 130 when interrupted); set ``LAYERMOD_DEBUG=1`` to see tracebacks.

``train`` builds registered architectures only, so that its checkpoints rebuild from their sidecars; the number
of classes and input channels default to the training data's, and ``--arch-arg KEY=VALUE`` passes any other
builder argument (the value read as JSON when it parses, else as a string). Its training flags default to
``None`` so that a flag given explicitly overrides either preset (the small CPU one or ``--paper``).
``eval`` takes the architecture and, unless given, the dataset from the checkpoint's sidecar.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING

from layermod.errors import DatasetError, LayermodError, ModelError, ReportError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from layermod.training.train import TrainConfig

__all__ = ["main", "build_parser"]


def _memory(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read memory size {text!r}; write e.g. 512M or 4G")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def _layers(text: str) -> list[str | int]:
    """``--layers``, read as the API reads a layer string (:func:`layermod.layers.parse_layers`)."""
    from layermod.extract.layers import parse_layers

    return parse_layers(text)


def _null(text: str) -> int:
    value = int(text)
    if value < 0 or value == 1:
        raise argparse.ArgumentTypeError(f"must be 0 (no null) or at least 2 (a spread to take z from), got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_MAX_INPUT_VALUES = 2**27  # one input of --input-shape: at most 128M values (512 MB as float32)


def _input_shape(text: str) -> tuple[int, ...]:
    """``C,H,W`` (any number of positive sizes) of one input, refused when absurdly large."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write the sizes of one input, e.g. 1,28,28") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be at least 1, got {text!r}")
    values = 1
    for size in shape:
        values *= size
    if values > _MAX_INPUT_VALUES:
        raise argparse.ArgumentTypeError(f"{text} is {values:,} values per input (at most {_MAX_INPUT_VALUES:,}); "
                                         "give the shape of one real input")
    return shape


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="architecture name (see layermod.models), or module:function / file.py:function "
                       "returning an nn.Module; optional when --weights has a layermod sidecar")
    group.add_argument("--weights", help=".safetensors weights to load")
    group.add_argument("--num-classes", type=int, help="classes of a built-in architecture (default 10)")
    group.add_argument("--in-channels", type=int, help="input channels of a built-in architecture (default 1)")
    group.add_argument("--width", type=float, help="width multiplier of a built-in architecture (default 1)")
    group.add_argument("--device", default="auto", help="torch device to run the model on (default auto: cuda when available)")


def _add_data_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=required,
                       help="fashion-mnist, mnist, digits, cifar10, cifar100, folder:PATH (one folder per class), "
                       "a .npz file with arrays X and y, or module:function")
    group.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
    group.add_argument("--data-dir", help="folder holding the dataset files (else $LAYERMOD_DATA, system and cache)")


def _load_model(args: argparse.Namespace):
    from layermod.models.spec import resolve_model

    arch_args = {"num_classes": args.num_classes, "in_channels": args.in_channels, "width": args.width}
    model, description = resolve_model(args.model, args.weights, arch_args, seed=getattr(args, "seed", 0))
    _to_device(model, args.device)
    return model, description


def _to_device(model: torch.nn.Module, device: str) -> None:
    """Move ``model`` to ``device``; ``"auto"`` is CUDA when available, else the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise LayermodError(f"cannot use device {device!r} ({err}); pass --device cpu") from None


def cmd_layers(args: argparse.Namespace) -> int:
    """Print every called module with its type and output shape, marking the auto points."""
    import torch

    from layermod.data.datasets import gather
    from layermod.extract.features import model_device
    from layermod.extract.layers import auto_layers, trace_calls
    from layermod.models.spec import resolve_data

    model, _ = _load_model(args)
    if args.dataset:
        dataset, _ = resolve_data(args.dataset, args.split, args.data_dir)
        example, _ = gather(dataset, list(range(min(2, len(dataset)))))
    elif args.input_shape:
        example = torch.zeros(2, *args.input_shape)
    else:
        raise LayermodError("pass --dataset or --input-shape C,H,W so the model can be run once")
    calls = trace_calls(model, example.to(model_device(model)))
    try:
        auto = auto_layers(model, calls)
    except LayermodError:
        auto = []
    width = max(len("layer"), *(len(name) for name in calls))
    print(f"{'auto':>4}  {'layer':<{width}}  {'type':<22}  output shape")
    for name, call in calls.items():
        mark = str(auto.index(name)) if name in auto else ""
        shape = "x".join(map(str, call.shape[1:])) if call.shape else "(no tensor)"
        print(f"{mark:>4}  {name:<{width}}  {call.kind:<22}  {shape}")
    print(f"\n{len(calls)} called modules; {len(auto)} auto points (select them with --layers auto or by index)")
    return 0


def _curve_options(args: argparse.Namespace) -> dict:
    return dict(layers=args.layers, k=args.k, n_per_class=args.n_per_class, repeats=args.repeats, seed=args.seed,
                metric=args.metric, symmetrize=args.symmetrize, weighted=not args.binary,
                null_permutations=args.null, batch_size=args.batch_size, max_bytes=args.max_memory)


def cmd_curve(args: argparse.Namespace) -> int:
    """Compute a modularity curve and write DIR/curve.json, curve.csv and curve.png."""
    from layermod.analysis.curve import modularity_curve
    from layermod.io.files import check_writable_dir
    from layermod.analysis.curve_plot import curve_table, save_curve
    from layermod.models.spec import resolve_data

    check_writable_dir(args.out)
    if args.views:
        from layermod.analysis.views import check_method

        check_method(args.view_method)  # a missing scikit-learn is found before the curve, not after
    model, model_description = _load_model(args)
    dataset, data_description = resolve_data(args.dataset, args.split, args.data_dir)
    curve = modularity_curve(model, dataset, progress=not args.quiet, **_curve_options(args))
    curve = curve.with_config(**model_description, **data_description, data_dir=args.data_dir)
    if args.views:
        _save_views(args, model, dataset, curve)
    save_curve(curve, args.out)
    if not args.quiet:
        print(curve_table(curve))
    views = ", embedding.json and embedding.png" if args.views else ""
    print(f"wrote {os.path.join(args.out, 'curve.json')}, curve.csv, curve.png{views}")
    return 0


def _save_views(args: argparse.Namespace, model: torch.nn.Module, dataset, curve) -> None:
    """2-D views and kNN graphs of a few of the curve's layers, evenly spaced, into the run directory."""
    from layermod.analysis.views import layer_views, pick_layers, save_views

    per_class = args.view_per_class or min(args.n_per_class, 30)
    graph = {"k": args.k, "metric": args.metric, "symmetrize": args.symmetrize, "weighted": not args.binary}
    views = layer_views(model, dataset, pick_layers(curve.layers, args.views), n_per_class=per_class,
                        seed=args.seed, method=args.view_method, batch_size=args.batch_size, **graph)
    config = {"method": args.view_method, "n_per_class": per_class, "seed": args.seed, **graph}
    save_views(views, args.out, class_names=getattr(dataset, "classes", None), config=config)


def _pixel_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write LOW,HIGH, e.g. 0,1 or 0,255") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return low, high


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack class-balanced samples (FGSM / PGD), then measure clean and attacked curves on the same draws
    with the true labels as communities; write DIR/attack.json, attack.csv and attack.png."""
    from dataclasses import replace

    from layermod.adversarial.curves import adversarial_curves
    from layermod.adversarial.attacks import AttackConfig, PixelSpace
    from layermod.io.files import check_writable_dir
    from layermod.models.spec import resolve_data

    check_writable_dir(args.out)
    config = AttackConfig(method=args.method, eps=args.eps, norm=args.norm, steps=args.steps,
                          step_size=args.step_size, random_start=not args.no_random_start, seed=args.seed,
                          options=dict(args.attack_arg or []))
    model, model_description = _load_model(args)
    dataset, data_description = resolve_data(args.dataset, args.split, args.data_dir)
    space = PixelSpace.from_normalization(getattr(dataset, "normalization", None), *args.pixel_range)
    config.validate(space)
    result = adversarial_curves(model, dataset, config, space, keep=args.keep, pool_per_class=args.pool_per_class,
                                progress=not args.quiet, **_curve_options(args))
    described = {**model_description, **data_description, "data_dir": args.data_dir}
    result = replace(result, clean=result.clean.with_config(**described),
                     attacked=result.attacked.with_config(**described))
    result.save(args.out)
    summary = result.summary
    print(f"{result.label}: {summary['n_flipped']} of {summary['n_correct']} "
          f"correctly classified samples flipped (success rate {summary['success_rate']:.3f}); "
          f"accuracy {summary['clean_accuracy']:.4f} -> {summary['adversarial_accuracy']:.4f}")
    if not args.quiet:
        print(_attack_table(result))
    index = result.parting_index()
    where = "the curves do not part" if index is None else f"the curves part at layer {index} ({result.clean.layers[index]})"
    print(f"{where}; last layer: clean Q {result.clean.mean[-1]:.4f}, attacked {result.attacked.mean[-1]:.4f}")
    print(f"wrote {os.path.join(args.out, 'attack.json')}, attack.csv, attack.png")
    return 0


def _attack_table(result) -> str:
    width = max(len("layer"), *(len(name) for name in result.clean.layers))
    head = f"{'#':>3}  {'layer':<{width}}  {'clean Q':>8}  {'attacked':>8}  {'gap':>8}  {'± se':>7}"
    rows = [head, "-" * len(head)]
    for i, name in enumerate(result.clean.layers):
        rows.append(f"{i:>3}  {name:<{width}}  {result.clean.mean[i]:8.4f}  {result.attacked.mean[i]:8.4f}  "
                    f"{result.gap[i]:+8.4f}  {result.gap_se[i]:7.4f}")
    return "\n".join(rows)


def cmd_compare(args: argparse.Namespace) -> int:
    """Layer difference D_ij = |Q_i - Q_j| beside linear CKA between all pairs of layers, on the same draws; with
    --weights-b / --model-b between two models. Writes DIR/compare.json, d.csv, cka.csv and compare.png."""
    from dataclasses import replace

    from layermod.analysis.compare import compare_layers
    from layermod.io.files import check_writable_dir
    from layermod.models.spec import resolve_data, resolve_model

    check_writable_dir(args.out)
    model, description = _load_model(args)
    other = None
    names = (args.weights or args.model, args.weights or args.model)
    if args.model_b or args.weights_b:
        arch_args = {"num_classes": args.num_classes, "in_channels": args.in_channels, "width": args.width}
        other, _ = resolve_model(args.model_b, args.weights_b, arch_args if args.model_b else None, seed=args.seed + 1)
        _to_device(other, args.device)
        names = (names[0], args.weights_b or args.model_b)
    dataset, data_description = resolve_data(args.dataset, args.split, args.data_dir)
    options = _curve_options(args)
    layers = options.pop("layers")
    comparison = compare_layers(model, dataset, other, layers=layers, layers_b=args.layers_b, unbiased=args.unbiased,
                                names=names, progress=not args.quiet, **options)
    comparison = replace(comparison, config={**comparison.config, **description, **data_description,
                                             "data_dir": args.data_dir})
    comparison.save(args.out)
    print(f"{len(comparison.curve_a.layers)} x {len(comparison.curve_b.layers)} layers: D and CKA on "
          f"{comparison.curve_a.config['samples_per_draw']} samples x {len(comparison.curve_a.values)} draws")
    print(f"wrote {os.path.join(args.out, 'compare.json')}, d.csv, cka.csv, compare.png")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Gather what run directories hold (curves, verdicts, dynamics, attacks, heat maps, pruning, 2-D views) into
    one self-contained HTML file; every number also downloadable from it as CSV/JSON."""
    from layermod.report.page import write_report

    problems = write_report(args.runs, args.out, title=args.title)
    print(f"wrote {args.out}")
    if problems:
        raise ReportError(f"the report leaves out {len(problems)} unreadable item(s): {'; '.join(problems)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the registered architectures with their parameter counts (10 classes, 3 channels, width 1)."""
    import torch

    from layermod import models

    print(f"{'name':<10}  {'params':>11}  description")
    for name in models.available():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = models.create(name, num_classes=10, in_channels=3)
        params = sum(p.numel() for p in model.parameters())
        summary = (models.describe(name) or "").strip().split("\n")[0]
        summary = re.sub(r"[;.]?\s*[Ss]ee :class:`\w+`\.?", "", summary).rstrip(".")
        print(f"{name:<10}  {params:>11,}  {summary}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Find redundant layers from the curve, prune them, fine-tune, and compare against other methods."""
    import json

    from layermod.models.checkpoint import read_sidecar, save_checkpoint
    from layermod.analysis.curve import Curve, modularity_curve
    from layermod.data.datasets import gather
    from layermod.io.files import atomic_path, check_writable_dir, ensure_writable_dir
    from layermod.extract.layers import auto_layers, trace_calls
    from layermod.pruning.units import apply_plan, removable_units
    from layermod.pruning.study import compare_methods, method_order, save_comparison
    from layermod.analysis.redundancy import budget_for_params, find_redundant, plan_dict, read_plan, select_units, verdict_table
    from layermod.models.spec import resolve_data, resolve_model
    from layermod.training.train import TrainConfig, balanced_subset

    check_writable_dir(args.out)
    model, _ = resolve_model(None, args.weights)
    meta = read_sidecar(args.weights)
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise LayermodError("the checkpoint names no dataset; pass --dataset")
    trusted = args.dataset is not None  # a dataset named in the sidecar may not be code
    test_set, _ = resolve_data(dataset, "test", args.data_dir, allow_import=trusted)
    example, _ = gather(test_set, [0])
    units = removable_units(model, example)
    if not units:
        print(f"nothing to prune: {args.weights} has no shape-preserving residual block or sequential unit")
        return 0
    if args.curve:
        curve = Curve.load(args.curve)
        if curve.layers != auto_layers(model, trace_calls(model, example)):
            raise LayermodError(f"the curve in {args.curve} was measured on other layers than this model's auto "
                                "points; measure it on this checkpoint (drop --curve)")
    else:
        curve = modularity_curve(model, test_set, n_per_class=args.n_per_class, repeats=args.repeats, k=args.k,
                                 progress=not args.quiet)
    verdicts = find_redundant(curve, z=args.z, min_gain=args.min_gain)
    print(verdict_table(verdicts))
    total = sum(p.numel() for p in model.parameters())
    order = method_order("modularity", units, verdicts)
    if args.plan:
        remove = read_plan(args.plan)["remove"]
        apply_plan(model, remove, example)  # refuses a plan that breaks the structure
    else:
        budget = args.remove if args.remove else budget_for_params(order, units, args.target_params, total)
        remove = select_units(order, units, budget)
    plan = plan_dict(remove, "modularity" if not args.plan else f"edited {args.plan}", verdicts, len(remove))
    out = ensure_writable_dir(args.out)
    with atomic_path(out / "plan.json") as tmp:
        tmp.write_text(json.dumps(plan, indent=2))
    print(f"plan: remove {len(remove)} of {len(units)} removable units: {', '.join(remove)}")
    if args.plan_only:
        print(f"wrote {out / 'plan.json'}; edit it and pass it back with --plan")
        return 0
    train_set, _ = resolve_data(dataset, "train", args.data_dir, allow_import=trusted)
    if args.finetune_subset:
        train_set = balanced_subset(train_set, args.finetune_subset, 0)
    finetune = TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=args.batch_size,
                           schedule="cosine", weight_decay=5e-4)
    latency_batch, _ = gather(test_set, list(range(min(args.batch_size, len(test_set)))))
    rows, finals = compare_methods(model, units, len(remove), train_set, test_set, finetune, verdicts, example,
                                   methods=args.methods, seeds=args.seeds, latency_batch=latency_batch,
                                   plan=remove, from_scratch=args.from_scratch, progress=not args.quiet)
    save_comparison(rows, out)
    if "modularity" in finals:
        row = next(r for r in rows if r["method"] == "modularity")
        save_checkpoint(finals["modularity"], out / "pruned.safetensors",
                        {**{k: v for k, v in meta.items() if k in ("arch", "arch_args", "dataset", "normalization")},
                         "plan": {"remove": remove}, "accuracy": row["accs"][0], "finetune": finetune.to_dict()})
    print((out / "comparison.md").read_text())
    print(f"wrote {out}/plan.json, comparison.json/.csv/.md/.png" + (", pruned.safetensors" if "modularity" in finals else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or reuse) a small CNN on Fashion-MNIST and measure its modularity curve."""
    from layermod.demo import run_demo

    run_demo(out=args.out, epochs=args.epochs, data_dir=args.data_dir, cache_dir=args.cache_dir,
             retrain=args.retrain, progress=not args.quiet)
    return 0



_TRAIN_FLAGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "milestones", "gamma", "seed")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The preset (``--paper`` or the small CPU defaults) with every explicitly given flag on top; validated."""
    from dataclasses import replace

    from layermod.training.augment import augmentation_for
    from layermod.training.train import PAPER_RECIPE, TrainConfig

    given = {name: getattr(args, name) for name in _TRAIN_FLAGS if getattr(args, name) is not None}
    if args.workers is not None:
        given["num_workers"] = args.workers
    if "milestones" in given and "schedule" not in given:
        given["schedule"] = "step"
    if given.get("schedule", "step") != "step" and "milestones" not in given:
        given["milestones"] = ()
    augment = args.augment if args.augment is not None else augmentation_for(args.dataset)
    config = replace(PAPER_RECIPE if args.paper else TrainConfig(), **given, augment=augment)
    config.validate()
    return config


def _arch_args(args: argparse.Namespace, train_set: Dataset) -> dict:
    """Builder arguments: the flags, else the number of classes and channels of the training data."""
    from layermod.data.datasets import dataset_labels, gather

    num_classes = args.num_classes
    if num_classes is None:
        classes = getattr(train_set, "classes", None)
        num_classes = len(classes) if classes else int(dataset_labels(train_set).max()) + 1
    in_channels = args.in_channels
    if in_channels is None:
        example, _ = gather(train_set, [0])
        in_channels = int(example.shape[1]) if example.ndim >= 3 else 1
    width = args.width if args.width is not None else 1.0
    return {"num_classes": num_classes, "in_channels": in_channels, "width": width, **dict(args.arch_arg or [])}


def cmd_train(args: argparse.Namespace) -> int:
    """Train a registered architecture; write DIR/metrics.csv, last.*, best.* (and dynamics.* with --track-every)."""
    import torch

    from layermod import models
    from layermod.models.checkpoint import read_sidecar
    from layermod.analysis.dynamics import TrackConfig
    from layermod.io.files import check_writable_dir
    from layermod.models.spec import resolve_data
    from layermod.training.fit import fit
    from layermod.training.train import balanced_subset

    check_writable_dir(args.out)
    arch = args.model.strip().lower()
    if arch not in models.available():
        if ":" in args.model:
            raise ModelError(f"train builds registered architectures (their checkpoints rebuild from the sidecar), "
                             f"not {args.model!r}; available: {', '.join(models.available())}")
        models.create(arch)  # an unknown name: raises ModelError listing the available ones
    config = _train_config(args)
    train_set, train_description = resolve_data(args.dataset, "train", args.data_dir)
    if args.test_dataset is not None:
        test_spec = args.test_dataset
    elif "split" in train_description:
        test_spec = args.dataset
    else:
        raise DatasetError(f"{args.dataset} has no test split; pass --test-dataset with held-out data")
    test_set, _ = resolve_data(test_spec, "test", args.data_dir)
    normalization = getattr(train_set, "normalization", None) or {}
    if args.subset is not None:
        train_set = balanced_subset(train_set, args.subset, config.seed)
    arch_args = _arch_args(args, train_set)
    torch.manual_seed(config.seed)
    model = models.create(arch, **arch_args)
    _to_device(model, args.device)
    track = None
    if args.track_every:
        track = TrackConfig(every=args.track_every, per_class=args.probe_per_class, repeats=args.probe_repeats,
                            k=args.k, seed=args.probe_seed)
    meta = {"arch": arch, "arch_args": arch_args, "dataset": args.dataset, "test_dataset": test_spec,
            "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None, "subset": args.subset,
            "train_size": len(train_set), "test_size": len(test_set), "normalization": normalization,
            "device": args.device}
    resumable = args.resume and os.path.isfile(os.path.join(args.out, "last.json"))
    before = read_sidecar(os.path.join(args.out, "last.safetensors")).get("epoch", 0) if resumable else 0
    history = fit(model, train_set, test_set, config, args.out, meta, track, resume=args.resume,
                  progress=not args.quiet)
    last = history[-1]
    if last["epoch"] <= before:
        print(f"nothing to train: {args.out} already holds {last['epoch']} epochs (--epochs {config.epochs}); "
              "raise --epochs to train longer")
        return 0
    best = max(history, key=lambda row: row["test_acc"])
    files = "last.safetensors, best.safetensors, metrics.csv" + (", dynamics.json, dynamics.png" if track else "")
    print(f"trained epochs {before + 1}-{last['epoch']}: test accuracy {last['test_acc']:.4f} (best "
          f"{best['test_acc']:.4f} at epoch {best['epoch']}); wrote {files} in {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Accuracy of a layermod checkpoint (architecture from its sidecar; dataset too unless given)."""
    from layermod.models.checkpoint import load_checkpoint
    from layermod.io.files import atomic_path, check_writable_dir, ensure_writable_dir
    from layermod.models.spec import resolve_data
    from layermod.training.train import check_model_fits, evaluate

    if args.out:
        check_writable_dir(args.out)
    model, meta = load_checkpoint(args.weights)
    _to_device(model, args.device)
    spec, data_dir = args.dataset, args.data_dir
    if spec is None:
        spec = meta.get("test_dataset") or meta.get("dataset")
        if not isinstance(spec, str) or not spec:
            raise DatasetError(f"the sidecar of {args.weights} names no dataset; pass --dataset")
        data_dir = data_dir if data_dir is not None else meta.get("data_dir")
    dataset, description = resolve_data(spec, args.split, data_dir, allow_import=args.dataset is not None)
    check_model_fits(model, dataset, spec)
    accuracy = evaluate(model, dataset, batch_size=args.batch_size)
    n = len(dataset)
    correct = round(accuracy * n)
    where = f"{spec} ({description['split']} split)" if "split" in description else spec
    print(f"accuracy {accuracy:.4f} ({correct}/{n}) of {args.weights} on {where}")
    if args.out:
        result = {"weights": str(args.weights), "arch": meta.get("arch"), "arch_args": meta.get("arch_args"),
                  "epoch": meta.get("epoch"), "dataset": spec, "split": description.get("split"),
                  "data_dir": data_dir, "accuracy": accuracy, "correct": correct, "n": n}
        out = ensure_writable_dir(args.out)
        with atomic_path(out / "eval.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with the value read as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write KEY=VALUE, e.g. depth=2 or convs=[1,1,1]")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _arch_arg(text: str) -> tuple[str, object]:
    key, value = _key_value(text)
    if key in ("num_classes", "in_channels", "width"):
        raise argparse.ArgumentTypeError(f"pass {key} as --{key.replace('_', '-')}, not --arch-arg")
    return key, value


def _epochs_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write epochs separated by commas, e.g. 50,100") from None


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_real(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _train_description() -> str:
    from layermod.training.train import PAPER_RECIPE, TrainConfig

    def recipe(c: TrainConfig) -> str:
        schedule = (f"x{c.gamma:g} after epochs {','.join(map(str, c.milestones))}" if c.schedule == "step"
                    else f"{c.schedule} schedule")
        return (f"{c.epochs} epochs, batch {c.batch_size}, lr {c.lr:g}, momentum {c.momentum:g}, weight decay "
                f"{c.weight_decay:g}, {schedule}")

    return (f"{cmd_train.__doc__}\n\n"
            f"Defaults (small, for a CPU): {recipe(TrainConfig())}.\n"
            f"--paper (Lu et al. 2022): {recipe(PAPER_RECIPE)}.\n"
            "Flags given explicitly override either. Random crop (padding 4) and flip are on by default where the\n"
            "dataset calls for them (CIFAR). To continue a run, repeat its command with --resume (only --epochs\n"
            "may change).")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    from layermod.data.datasets import DATASETS
    from layermod.training.train import PAPER_RECIPE, TrainConfig

    small, paper = TrainConfig(), PAPER_RECIPE
    train = commands.add_parser("train", help="train a registered architecture with checkpoints and optional "
                                "modularity tracking", description=_train_description(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = train.add_argument_group("model")
    model.add_argument("--model", required=True, help="registered architecture name (see layermod.models)")
    model.add_argument("--num-classes", type=_positive, help="classes (default: the training data's)")
    model.add_argument("--in-channels", type=_positive, help="input channels (default: the training data's)")
    model.add_argument("--width", type=_positive_real, help="width multiplier (default 1)")
    model.add_argument("--arch-arg", type=_arch_arg, action="append", metavar="KEY=VALUE",
                       help="another builder argument, repeatable (e.g. input_size=64, convs=[1,1,1])")
    model.add_argument("--device", default="auto", help="torch device to train on (default auto: cuda when available)")

    data = train.add_argument_group("data")
    data.add_argument("--dataset", required=True, help=f"{', '.join(DATASETS)} or folder:PATH (train split for "
                      "training, test split for evaluation), a .npz file with arrays X and y, or module:function")
    data.add_argument("--test-dataset", help="held-out data (default: the test split of --dataset; required when "
                      "--dataset has no splits)")
    data.add_argument("--data-dir", help="folder holding the dataset files (else $LAYERMOD_DATA, system and cache)")
    data.add_argument("--subset", type=_positive, metavar="N", help="train on a class-balanced subset of N samples "
                      "(N // classes per class, drawn with --seed), for quick CPU runs")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                      help="random crop (padding 4) and horizontal flip of training batches (default: on for the "
                      "datasets that call for it, CIFAR)")

    training = train.add_argument_group("training (SGD)")
    training.add_argument("--paper", action="store_true", help="start from the paper's recipe instead of the small "
                          "CPU defaults (see above)")
    training.add_argument("--epochs", type=_positive, help=f"epochs (default {small.epochs}; --paper {paper.epochs})")
    training.add_argument("--batch-size", type=_positive,
                          help=f"samples per step (default {small.batch_size}; --paper {paper.batch_size})")
    training.add_argument("--lr", type=_positive_real, help=f"peak learning rate (default {small.lr:g}; --paper "
                          f"{paper.lr:g})")
    training.add_argument("--momentum", type=float, help=f"SGD momentum (default {small.momentum:g}; --paper "
                          f"{paper.momentum:g})")
    training.add_argument("--weight-decay", type=float, help=f"L2 weight decay (default {small.weight_decay:g}; "
                          f"--paper {paper.weight_decay:g})")
    training.add_argument("--schedule", choices=["cosine", "step", "constant"],
                          help=f"learning-rate schedule (default {small.schedule}; --paper {paper.schedule}; "
                          "step when only --milestones is given)")
    training.add_argument("--milestones", type=_epochs_list, metavar="E1,E2",
                          help="epochs after which the step schedule multiplies the rate by --gamma (--paper "
                          f"{','.join(map(str, paper.milestones))}); each below --epochs")
    training.add_argument("--gamma", type=float, help=f"factor of the step schedule (default {paper.gamma:g})")
    training.add_argument("--seed", type=int, help=f"seed of the initial weights, shuffling, augmentation and "
                          f"--subset (default {small.seed})")
    training.add_argument("--workers", type=_non_negative, help="DataLoader workers for datasets not held in memory (default 0)")

    tracking = train.add_argument_group("modularity tracking")
    tracking.add_argument("--track-every", type=_non_negative, default=0, metavar="N",
                          help="measure the modularity curve every N epochs (and at epoch 0 and the last epoch) "
                          "into DIR/dynamics.json and dynamics.png (default 0: off)")
    tracking.add_argument("--probe-per-class", type=_positive, default=50,
                          help="probe samples per class from the test split, per draw (default 50)")
    tracking.add_argument("--probe-repeats", type=_positive, default=5, help="class-balanced probe draws (default 5)")
    tracking.add_argument("--k", type=_positive, default=3, help="neighbours per sample (default 3, the paper's)")
    tracking.add_argument("--probe-seed", type=int, default=0, help="seed of the probe draws (default 0)")

    train.add_argument("--out", required=True, help="run directory for metrics.csv, last.*, best.*, dynamics.*")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.* (same settings; "
                       "--epochs may grow)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    train.set_defaults(func=cmd_train)


def _add_eval_parser(commands: argparse._SubParsersAction) -> None:
    evaluation = commands.add_parser("eval", help="accuracy of a layermod checkpoint", description=cmd_eval.__doc__)
    evaluation.add_argument("--weights", required=True, help="checkpoint .safetensors with its JSON sidecar "
                            "(e.g. DIR/best.safetensors written by train)")
    evaluation.add_argument("--dataset", help="dataset (default: the sidecar's held-out data)")
    evaluation.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
    evaluation.add_argument("--data-dir", help="folder holding the dataset files (default: the sidecar's, else "
                            "$LAYERMOD_DATA, system and cache)")
    evaluation.add_argument("--batch-size", type=_positive, default=512, help="samples per forward pass (default 512)")
    evaluation.add_argument("--device", default="auto",
                            help="torch device to run the model on (default auto: cuda when available)")
    evaluation.add_argument("--out", help="also write DIR/eval.json")
    evaluation.set_defaults(func=cmd_eval)


def _add_graph_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("measurement")
    group.add_argument("--layers", type=_layers, default="auto",
                       help="'auto', names, glob patterns or indices into the auto points, comma-separated "
                       "(e.g. 'auto', 'features.*', '0,-1'); see `layermod layers`")
    group.add_argument("--k", type=_positive, default=3, help="neighbours per sample (default 3, the paper's)")
    group.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine", help="similarity (default cosine)")
    group.add_argument("--symmetrize", choices=["mean", "union", "mutual"], default="mean",
                       help="how the directed kNN graph is made undirected (default mean: (A + A^T) / 2)")
    group.add_argument("--binary", action="store_true", help="unit edge weights instead of similarities")
    group.add_argument("--n-per-class", type=_positive, default=50, help="samples per class in each draw (default 50)")
    group.add_argument("--repeats", type=_positive, default=5, help="class-balanced draws (default 5)")
    group.add_argument("--seed", type=int, default=0, help="seed of the draws, the shuffles and an untrained model's "
                       "weights; any integer (default 0)")
    group.add_argument("--null", type=_null, default=0, metavar="P",
                       help="label shuffles per layer and draw for a chance baseline and z-scores (default 0: none)")
    group.add_argument("--batch-size", type=_positive, default=256, help="samples per forward pass (default 256)")
    group.add_argument("--max-memory", type=_memory, default="2G",
                       help="memory for features held at once; layers are extracted in groups that fit (default 2G)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layermod", description="Layer-by-layer graph modularity of a network's "
                                     "features: where classes separate, and which layers are redundant.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    layers = commands.add_parser("layers", help="list a model's layers and the auto measurement points",
                                 description=cmd_layers.__doc__)
    _add_model_args(layers)
    _add_data_args(layers, required=False)
    layers.add_argument("--input-shape", type=_input_shape,
                        help="shape of one input, e.g. 1,28,28 (instead of --dataset)")
    layers.set_defaults(func=cmd_layers)

    curve = commands.add_parser("curve", help="compute a modularity curve", description=cmd_curve.__doc__)
    _add_model_args(curve)
    _add_data_args(curve, required=True)
    _add_graph_args(curve)
    views = curve.add_argument_group("2-D views (for the report)")
    views.add_argument("--views", type=_non_negative, default=3,
                       help="draw a 2-D embedding and the kNN graph of this many evenly spaced layers (default 3; 0: none)")
    views.add_argument("--view-method", choices=["pca", "tsne"], default="pca",
                       help="2-D embedding (default pca; tsne needs scikit-learn)")
    views.add_argument("--view-per-class", type=_positive,
                       help="samples per class in the views (default: --n-per-class, at most 30)")
    curve.add_argument("--out", required=True, help="run directory for curve.json, curve.csv, curve.png")
    curve.add_argument("--quiet", action="store_true", help="no progress bars or table")
    curve.set_defaults(func=cmd_curve)

    attack = commands.add_parser("attack", help="clean vs adversarial (FGSM / PGD) curves on the same samples",
                                 description=cmd_attack.__doc__)
    _add_model_args(attack)
    _add_data_args(attack, required=True)
    _add_graph_args(attack)
    group = attack.add_argument_group("attack")
    group.add_argument("--method", default="pgd",
                       help="fgsm, pgd, or torchattacks:NAME (e.g. torchattacks:CW; pip install --no-deps torchattacks)")
    group.add_argument("--eps", type=float, default=0.3, help="budget in pixel units (default 0.3, the paper's)")
    group.add_argument("--norm", choices=["linf", "l2"], default="linf", help="budget norm (default linf)")
    group.add_argument("--steps", type=_positive, default=40, help="PGD steps (default 40)")
    group.add_argument("--step-size", type=float, default=0.01, help="PGD step in pixel units (default 0.01)")
    group.add_argument("--no-random-start", action="store_true", help="PGD starts at the clean input")
    group.add_argument("--attack-arg", type=_key_value, action="append", metavar="KEY=VALUE",
                       help="keyword argument of a torchattacks class, e.g. c=1 or steps=50 (repeatable)")
    group.add_argument("--keep", choices=["flipped", "all"], default="flipped",
                       help="flipped: only samples classified correctly and then flipped (the paper's filter; default)")
    group.add_argument("--pool-per-class", type=_positive,
                       help="samples attacked per class (default 2 x n-per-class x repeats)")
    group.add_argument("--pixel-range", type=_pixel_range, default=(0.0, 1.0),
                       help="valid pixel range LOW,HIGH before normalisation (default 0,1)")
    attack.add_argument("--out", required=True, help="run directory for attack.json, attack.csv, attack.png")
    attack.add_argument("--quiet", action="store_true", help="no progress bars or table")
    attack.set_defaults(func=cmd_attack)

    compare = commands.add_parser("compare", help="layer difference |Q_i - Q_j| beside linear CKA, as heat maps",
                                  description=cmd_compare.__doc__)
    _add_model_args(compare)
    compare.add_argument("--model-b", help="second model (columns), as --model")
    compare.add_argument("--weights-b", help="weights of the second model, as --weights")
    compare.add_argument("--layers-b", type=_layers, help="layers of the second model (default: as --layers)")
    compare.add_argument("--unbiased", action="store_true", help="unbiased HSIC in the minibatch CKA")
    _add_data_args(compare, required=True)
    _add_graph_args(compare)
    compare.add_argument("--out", required=True, help="run directory for compare.json, d.csv, cka.csv, compare.png")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(func=cmd_compare)

    report = commands.add_parser("report", help="one self-contained HTML page from run directories",
                                 description=cmd_report.__doc__)
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories written by layermod commands")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument("--title", help="page title (default: the run directories' names)")
    report.set_defaults(func=cmd_report)

    listing = commands.add_parser("models", help="list the built-in architectures", description=cmd_models.__doc__)
    listing.set_defaults(func=cmd_models)

    demo = commands.add_parser("demo", help="train a small CNN on Fashion-MNIST and show its curve",
                               description=cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--epochs", type=_positive, default=None, help="training epochs (default: the demo's recipe)")
    demo.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--cache-dir", help="where trained demo weights are kept (default ~/.cache/layermod/demo)")
    demo.add_argument("--retrain", action="store_true", help="train again even if cached weights exist")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    prune = commands.add_parser("prune", help="remove redundant layers, fine-tune, compare with other methods",
                                description=cmd_prune.__doc__)
    prune.add_argument("--weights", required=True, help="a layermod checkpoint (.safetensors with its sidecar)")
    _add_data_args(prune, required=False)
    budget = prune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--remove", type=_positive, help="number of units (layers) to remove")
    budget.add_argument("--target-params", type=float, help="fraction of parameters to remove, e.g. 0.3")
    budget.add_argument("--plan", help="an edited plan.json to apply instead of choosing")
    prune.add_argument("--plan-only", action="store_true", help="write plan.json and stop")
    prune.add_argument("--curve", help="curve.json measured on this checkpoint (default: measure it now)")
    prune.add_argument("--n-per-class", type=_positive, default=50, help="curve: samples per class per draw")
    prune.add_argument("--repeats", type=_positive, default=5, help="curve: draws (default 5)")
    prune.add_argument("--k", type=_positive, default=3, help="curve: neighbours (default 3)")
    prune.add_argument("--z", type=float, default=2.0, help="plateau band in standard errors of the increment")
    prune.add_argument("--min-gain", type=float, default=0.005, help="increments below this are negligible")
    prune.add_argument("--methods", type=lambda t: [m.strip() for m in t.split(",") if m.strip()],
                       default=["none", "modularity", "steepest", "cosine", "random", "first", "last"],
                       help="methods compared at the same budget (default: all)")
    prune.add_argument("--seeds", type=_positive, default=3, help="fine-tuning seeds per method (default 3)")
    prune.add_argument("--finetune-epochs", type=_positive, default=1, help="fine-tuning epochs (default 1)")
    prune.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning learning rate, cosine (default 0.01)")
    prune.add_argument("--finetune-subset", type=int, default=0,
                       help="fine-tune on a class-balanced subset of N training samples (default 0: all)")
    prune.add_argument("--batch-size", type=_positive, default=128, help="fine-tuning batch size (default 128)")
    prune.add_argument("--from-scratch", action="store_true",
                       help="retrain every pruned model from a fresh initialisation instead of fine-tuning")
    prune.add_argument("--out", required=True, help="run directory")
    prune.add_argument("--quiet", action="store_true", help="no progress bars")
    prune.set_defaults(func=cmd_prune)

    _add_train_parser(commands)
    _add_eval_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``layermod`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)  # inside: the train presets in its help import torch
        return args.func(args)
    except LayermodError as err:
        print(f"layermod: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layermod: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early, e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug, not bad input: one line unless asked for more
        if os.environ.get("LAYERMOD_DEBUG"):
            traceback.print_exc()
        print(f"layermod: internal error: {type(err).__name__}: {err} (set LAYERMOD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1

