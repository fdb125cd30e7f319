"""The measuring commands: ``layers`` (what can be measured), ``curve``, ``attack`` and ``compare``.

Each parses its options, calls the library and prints; the graph and draw options are the shared group of
:mod:`layermod.cli.args`. ``--seed`` also draws an untrained built-in model's weights (``compare``'s second
model gets ``seed + 1``) and seeds the attack, so that a rerun is the same run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from layermod.cli.args import (
    add_data_args,
    add_extraction_args,
    add_measure_args,
    add_model_args,
    data_options,
    data_split,
    key_value,
    layer_spec,
    load_model,
    measure_configs,
    non_negative,
    out_path,
    positive,
    to_device,
)
from layermod.errors import DatasetError, LayermodError

if TYPE_CHECKING:
    import torch

    from layermod.adversarial.curves import AdversarialCurves
    from layermod.analysis.curve import Curve

__all__ = ["add_parsers"]

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


def _pixel_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write LOW,HIGH, e.g. 0,1 or 0,255") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return low, high


def _extraction(args: argparse.Namespace) -> dict:
    """The keyword arguments of a measurement that say how features are extracted."""
    return dict(batch_size=args.batch_size, max_bytes=args.max_memory, progress=not args.quiet, pool=args.pool)


def cmd_layers(args: argparse.Namespace) -> int:
    """Print every called module with its type and output shape, marking the auto points."""
    import torch

    from layermod.data.arrays import gather
    from layermod.extract.layers import auto_layers, trace_calls
    from layermod.data.spec import resolve_data

    model, _ = load_model(args)
    if args.dataset:
        dataset, _ = resolve_data(args.dataset, split=data_split(args), data_dir=args.data_dir, **data_options(args))
        example, _ = gather(dataset, list(range(min(2, len(dataset)))))
    elif args.input_shape:
        example = torch.zeros(2, *args.input_shape)
    else:
        raise DatasetError("pass --dataset or --input-shape C,H,W so the model can be run once")
    calls = trace_calls(model, example)  # moved to the model's device and dtype there
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


def cmd_curve(args: argparse.Namespace) -> int:
    """Compute a modularity curve and write DIR/curve.json, curve.csv and curve.png."""
    from layermod.analysis.curve import modularity_curve
    from layermod.analysis.curve_plot import curve_table
    from layermod.io.rundir import CURVE_CSV, CURVE_JSON, CURVE_PNG, EMBEDDING_JSON, EMBEDDING_PNG
    from layermod.io.runs import check_replaceable, staged_run
    from layermod.models.cache import cached_data

    check_replaceable(args.out)
    if args.views:
        from layermod.analysis.views import check_method

        check_method(args.view_method)  # a missing scikit-learn is found before the curve, not after
    graph, draws = measure_configs(args)
    model, model_description = load_model(args, seed=draws.seed)
    dataset, data_description = cached_data(args.dataset, split=data_split(args), data_dir=args.data_dir,
                                            **data_options(args))
    curve = modularity_curve(model, dataset, layers=args.layers, graph=graph, draws=draws, **_extraction(args))
    curve = curve.with_config(**model_description, **data_description, data_dir=args.data_dir)
    with staged_run(args.out) as stage:
        if args.views:
            _save_views(args, model, dataset, curve, stage)
        curve.save(stage)
    if not args.quiet:
        print(curve_table(curve))
    views = f", {EMBEDDING_JSON} and {EMBEDDING_PNG}" if args.views else ""
    print(f"wrote {os.path.join(args.out, CURVE_JSON)}, {CURVE_CSV}, {CURVE_PNG}{views}")
    return 0


def _save_views(args: argparse.Namespace, model: torch.nn.Module, dataset, curve: Curve, out: Path) -> None:
    """2-D views and kNN graphs of a few of the curve's layers, evenly spaced, on the curve's graph, into the run
    directory."""
    from layermod.analysis.views import Views, layer_views, pick_layers
    from layermod.measure.config import GraphConfig

    graph = GraphConfig.from_dict(curve.config)
    per_class = args.view_per_class or min(args.n_per_class, 30)
    views = layer_views(model, dataset, layers=pick_layers(curve.layers, count=args.views), n_per_class=per_class,
                        seed=args.draw_seed, method=args.view_method, batch_size=args.batch_size, graph=graph,
                        pool=curve.config.get("pool", "auto"))
    config = {"method": args.view_method, "n_per_class": per_class, "seed": args.draw_seed, **graph.to_dict()}
    Views(views, class_names=getattr(dataset, "classes", None), config=config).save(out)


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack class-balanced samples (FGSM / PGD), then measure clean and attacked curves on the same draws
    with the true labels as communities; write DIR/attack.json, attack.csv and attack.png."""
    from dataclasses import replace

    from layermod.adversarial.attacks import AttackConfig, PixelSpace
    from layermod.adversarial.curves import adversarial_curves
    from layermod.io.rundir import ATTACK_CSV, ATTACK_JSON, ATTACK_PNG
    from layermod.io.runs import check_replaceable, staged_run
    from layermod.data.spec import resolve_data

    check_replaceable(args.out)
    graph, draws = measure_configs(args)
    config = AttackConfig(method=args.method, eps=args.eps, norm=args.norm, steps=args.steps,
                          step_size=args.step_size, random_start=not args.no_random_start, seed=draws.seed,
                          options=dict(args.attack_arg or []))
    model, model_description = load_model(args, seed=draws.seed)
    dataset, data_description = resolve_data(args.dataset, split=data_split(args), data_dir=args.data_dir,
                                             **data_options(args))
    low, high = args.pixel_range
    space = PixelSpace.from_normalization(getattr(dataset, "normalization", None), low=low, high=high)
    config.validate(space)
    result = adversarial_curves(model, dataset, attack=config, space=space, keep=args.keep,
                                pool_per_class=args.pool_per_class,
                                layers=args.layers, graph=graph, draws=draws, **_extraction(args))
    described = {**model_description, **data_description, "data_dir": args.data_dir}
    result = replace(result, clean=result.clean.with_config(**described),
                     attacked=result.attacked.with_config(**described))
    with staged_run(args.out) as stage:
        result.save(stage)
    summary = result.summary
    print(f"{result.label}: {summary['n_flipped']} of {summary['n_correct']} "
          f"correctly classified samples flipped (success rate {summary['success_rate']:.3f}); "
          f"accuracy {summary['clean_accuracy']:.4f} -> {summary['adversarial_accuracy']:.4f}")
    if not args.quiet:
        print(_attack_table(result))
    index = result.parting_index()
    where = "the curves do not part" if index is None else f"the curves part at layer {index} ({result.clean.layers[index]})"
    print(f"{where}; last layer: clean Q {result.clean.mean[-1]:.4f}, attacked {result.attacked.mean[-1]:.4f}")
    print(f"wrote {os.path.join(args.out, ATTACK_JSON)}, {ATTACK_CSV}, {ATTACK_PNG}")
    return 0


def _attack_table(result: AdversarialCurves) -> str:
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
    from layermod.io.rundir import CKA_CSV, COMPARE_JSON, COMPARE_PNG, D_CSV
    from layermod.io.runs import check_replaceable, staged_run
    from layermod.data.spec import resolve_data
    from layermod.models.spec import resolve_model

    check_replaceable(args.out)
    graph, draws = measure_configs(args)
    model, description = load_model(args, seed=draws.seed)
    other = None
    names = (args.weights or args.model, args.weights or args.model)
    if args.model_b or args.weights_b:
        arch_args = {"num_classes": args.num_classes, "in_channels": args.in_channels, "width": args.width}
        other, _ = resolve_model(args.model_b, weights=args.weights_b, arch_args=arch_args if args.model_b else None,
                                 seed=draws.seed + 1)
        to_device(other, args.device)
        names = (names[0], args.weights_b or args.model_b)
    dataset, data_description = resolve_data(args.dataset, split=data_split(args), data_dir=args.data_dir,
                                             **data_options(args))
    comparison = compare_layers(model, dataset, model_b=other, layers=args.layers, layers_b=args.layers_b,
                                unbiased=args.unbiased, names=names, graph=graph, draws=draws, **_extraction(args))
    comparison = replace(comparison, config={**comparison.config, **description, **data_description,
                                             "data_dir": args.data_dir})
    with staged_run(args.out) as stage:
        comparison.save(stage)
    print(f"{len(comparison.curve_a.layers)} x {len(comparison.curve_b.layers)} layers: D and CKA on "
          f"{comparison.curve_a.config['samples_per_draw']} samples x {len(comparison.curve_a.values)} draws")
    print(f"wrote {os.path.join(args.out, COMPARE_JSON)}, {D_CSV}, {CKA_CSV}, {COMPARE_PNG}")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``layers``, ``curve``, ``attack`` and ``compare`` commands."""
    layers = commands.add_parser("layers", help="list a model's layers and the auto measurement points",
                                 description=cmd_layers.__doc__)
    add_model_args(layers)
    add_data_args(layers, required=False)
    layers.add_argument("--input-shape", type=_input_shape,
                        help="shape of one input, e.g. 1,28,28 (instead of --dataset)")
    layers.set_defaults(func=cmd_layers)

    curve = commands.add_parser("curve", help="compute a modularity curve", description=cmd_curve.__doc__)
    add_model_args(curve)
    add_data_args(curve, required=True)
    add_extraction_args(curve)
    add_measure_args(curve)
    views = curve.add_argument_group("2-D views (for the report)")
    views.add_argument("--views", type=non_negative, default=3,
                       help="draw a 2-D embedding and the kNN graph of this many evenly spaced layers (default 3; 0: none)")
    views.add_argument("--view-method", choices=["pca", "tsne"], default="pca",
                       help="2-D embedding (default pca; tsne needs scikit-learn)")
    views.add_argument("--view-per-class", type=positive,
                       help="samples per class in the views (default: --n-per-class, at most 30)")
    curve.add_argument("--out", type=out_path, required=True, help="run directory for curve.json, curve.csv, curve.png")
    curve.add_argument("--quiet", action="store_true", help="no progress bars or table")
    curve.set_defaults(func=cmd_curve)
    _add_attack_parser(commands)
    _add_compare_parser(commands)


def _add_attack_parser(commands: argparse._SubParsersAction) -> None:
    attack = commands.add_parser("attack", help="clean vs adversarial (FGSM / PGD) curves on the same samples",
                                 description=cmd_attack.__doc__)
    add_model_args(attack)
    add_data_args(attack, required=True)
    add_extraction_args(attack)
    add_measure_args(attack)
    group = attack.add_argument_group("attack")
    group.add_argument("--method", default="pgd",
                       help="fgsm, pgd, or torchattacks:NAME (e.g. torchattacks:CW; pip install \"layermod[attacks]\")")
    group.add_argument("--eps", type=float, default=0.3, help="budget in pixel units (default 0.3, the paper's)")
    group.add_argument("--norm", choices=["linf", "l2"], default="linf", help="budget norm (default linf)")
    group.add_argument("--steps", type=positive, default=40, help="PGD steps (default 40)")
    group.add_argument("--step-size", type=float, default=0.01, help="PGD step in pixel units (default 0.01)")
    group.add_argument("--no-random-start", action="store_true", help="PGD starts at the clean input")
    group.add_argument("--attack-arg", type=key_value, action="append", metavar="KEY=VALUE",
                       help="keyword argument of a torchattacks class, e.g. c=1 or steps=50 (repeatable)")
    group.add_argument("--keep", choices=["flipped", "all"], default="flipped",
                       help="flipped: only samples classified correctly and then flipped (the paper's filter; default)")
    group.add_argument("--pool-per-class", type=positive,
                       help="samples attacked per class (default 2 x n-per-class x repeats)")
    group.add_argument("--pixel-range", type=_pixel_range, default=(0.0, 1.0),
                       help="valid pixel range LOW,HIGH before normalisation (default 0,1)")
    attack.add_argument("--out", type=out_path, required=True, help="run directory for attack.json, attack.csv, attack.png")
    attack.add_argument("--quiet", action="store_true", help="no progress bars or table")
    attack.set_defaults(func=cmd_attack)


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser("compare", help="layer difference |Q_i - Q_j| beside linear CKA, as heat maps",
                                  description=cmd_compare.__doc__)
    add_model_args(compare)
    compare.add_argument("--model-b", help="second model (columns), as --model")
    compare.add_argument("--weights-b", help="weights of the second model, as --weights")
    compare.add_argument("--layers-b", type=layer_spec, help="layers of the second model (default: as --layers)")
    compare.add_argument("--unbiased", action="store_true", help="unbiased HSIC in the minibatch CKA")
    add_data_args(compare, required=True)
    add_extraction_args(compare)
    add_measure_args(compare)
    compare.add_argument("--out", type=out_path, required=True, help="run directory for compare.json, d.csv, cka.csv, compare.png")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(func=cmd_compare)
