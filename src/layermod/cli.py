"""Command-line interface: a thin shell over the library.

Every command reports bad input as one line on stderr and exits with status 2 (1 for an unexpected internal
error, 130 when interrupted); set ``LAYERMOD_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

import torch

from .errors import LayermodError

__all__ = ["main", "build_parser"]


def _memory(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read memory size {text!r}; write e.g. 512M or 4G")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def _layers(text: str) -> list[str | int]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [int(item) if re.fullmatch(r"-?\d+", item) else item for item in items]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="architecture name (see layermod.models), or module:function / file.py:function "
                       "returning an nn.Module; optional when --weights has a layermod sidecar")
    group.add_argument("--weights", help=".safetensors weights to load")
    group.add_argument("--num-classes", type=int, help="classes of a built-in architecture (default 10)")
    group.add_argument("--in-channels", type=int, help="input channels of a built-in architecture (default 1)")
    group.add_argument("--width", type=float, help="width multiplier of a built-in architecture (default 1)")
    group.add_argument("--device", default="cpu", help="torch device to run the model on (default cpu)")


def _add_data_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=required,
                       help="fashion-mnist, mnist, digits, a .npz file with arrays X and y, or module:function")
    group.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
    group.add_argument("--data-dir", help="folder holding the dataset files (else $LAYERMOD_DATA, system and cache)")


def _load_model(args: argparse.Namespace):
    from .resolve import resolve_model

    arch_args = {"num_classes": args.num_classes, "in_channels": args.in_channels, "width": args.width}
    model, description = resolve_model(args.model, args.weights, arch_args)
    try:
        device = torch.device(args.device)
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise LayermodError(f"cannot use device {args.device!r} ({err}); pass --device cpu") from None
    return model, description


def cmd_layers(args: argparse.Namespace) -> int:
    """Print every called module with its type and output shape, marking the auto points."""
    from .data import gather
    from .features import model_device
    from .layers import auto_layers, trace_calls
    from .resolve import resolve_data

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
    from .curve import modularity_curve
    from .fileio import check_writable_dir
    from .report import curve_table, save_curve
    from .resolve import resolve_data

    check_writable_dir(args.out)
    model, model_description = _load_model(args)
    dataset, data_description = resolve_data(args.dataset, args.split, args.data_dir)
    curve = modularity_curve(model, dataset, progress=not args.quiet, **_curve_options(args))
    curve = curve.with_config(**model_description, **data_description, data_dir=args.data_dir)
    save_curve(curve, args.out)
    if not args.quiet:
        print(curve_table(curve))
    print(f"wrote {os.path.join(args.out, 'curve.json')} and curve.png")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or reuse) a small CNN on Fashion-MNIST and measure its modularity curve."""
    from .demo import run_demo

    run_demo(out=args.out, epochs=args.epochs, data_dir=args.data_dir, cache_dir=args.cache_dir,
             retrain=args.retrain, progress=not args.quiet)
    return 0


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
    group.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    group.add_argument("--null", type=int, default=0, metavar="P",
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
    layers.add_argument("--input-shape", type=lambda t: tuple(_positive(v) for v in t.split(",")),
                        help="shape of one input, e.g. 1,28,28 (instead of --dataset)")
    layers.set_defaults(func=cmd_layers)

    curve = commands.add_parser("curve", help="compute a modularity curve", description=cmd_curve.__doc__)
    _add_model_args(curve)
    _add_data_args(curve, required=True)
    _add_graph_args(curve)
    curve.add_argument("--out", required=True, help="run directory for curve.json, curve.csv, curve.png")
    curve.add_argument("--quiet", action="store_true", help="no progress bars or table")
    curve.set_defaults(func=cmd_curve)

    demo = commands.add_parser("demo", help="train a small CNN on Fashion-MNIST and show its curve",
                               description=cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--epochs", type=_positive, default=None, help="training epochs (default: the demo's recipe)")
    demo.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--cache-dir", help="where trained demo weights are kept (default ~/.cache/layermod/demo)")
    demo.add_argument("--retrain", action="store_true", help="train again even if cached weights exist")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``layermod`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LayermodError as err:
        print(f"layermod: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layermod: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not bad input: one line unless asked for more
        if os.environ.get("LAYERMOD_DEBUG"):
            traceback.print_exc()
        print(f"layermod: internal error: {type(err).__name__}: {err} (set LAYERMOD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
