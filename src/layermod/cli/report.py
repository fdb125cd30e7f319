"""The commands that show rather than measure: ``report`` (one HTML page from run directories), ``models`` (the
zoo) and ``demo`` (a small model trained and measured end to end)."""

from __future__ import annotations

import argparse
import re

from layermod.cli.args import out_path, positive
from layermod.errors import ReportError

__all__ = ["add_parsers"]


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


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or reuse) a small CNN on Fashion-MNIST and measure its modularity curve."""
    from layermod.demo import run_demo

    run_demo(out=args.out, epochs=args.epochs, data_dir=args.data_dir, cache_dir=args.cache_dir,
             retrain=args.retrain, progress=not args.quiet)
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``report``, ``models`` and ``demo`` commands."""
    report = commands.add_parser("report", help="one self-contained HTML page from run directories",
                                 description=cmd_report.__doc__)
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories written by layermod commands")
    report.add_argument("--out", type=out_path, required=True, help="the HTML file to write")
    report.add_argument("--title", help="page title (default: the run directories' names)")
    report.set_defaults(func=cmd_report)

    listing = commands.add_parser("models", help="list the built-in architectures", description=cmd_models.__doc__,
                                  epilog="--model also takes torchvision:NAME (torchvision.models.get_model), "
                                  "timm:NAME (timm.create_model), hf:DIR_OR_ID (a transformers save_pretrained "
                                  "directory or hub id), random weights unless --pretrained, and module:function")
    listing.set_defaults(func=cmd_models)

    demo = commands.add_parser("demo", help="train a small CNN on Fashion-MNIST and show its curve",
                               description=cmd_demo.__doc__)
    demo.add_argument("--out", type=out_path, default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--epochs", type=positive, default=None, help="training epochs (default: the demo's recipe)")
    demo.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--cache-dir", help="where trained demo weights are kept (default $XDG_CACHE_HOME/layermod/demo, "
                      "with XDG_CACHE_HOME defaulting to ~/.cache)")
    demo.add_argument("--retrain", action="store_true", help="train again even if cached weights exist")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
