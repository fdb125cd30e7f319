"""``layermod prune``: parse, call :mod:`layermod.pruning.run` step by step, print.

The plan is printed (with the verdicts behind it) before the fine-tuning starts; ``--plan-only`` stops there.
The curve, when measured now, takes the shared graph and draw options of :mod:`layermod.cli.args`.
"""

from __future__ import annotations

import argparse

from layermod.cli.args import add_data_args, add_measure_args, measure_configs, positive

__all__ = ["add_parser"]


def cmd_prune(args: argparse.Namespace) -> int:
    """Find redundant layers from the curve, prune them, fine-tune, and compare against other methods."""
    from dataclasses import replace

    from layermod.analysis.redundancy import verdict_table
    from layermod.io.files import check_writable_dir
    from layermod.io.rundir import COMPARISON_JSON, PLAN_JSON, PRUNED
    from layermod.pruning.run import FINETUNE, choose_plan, prepare, prune_and_compare

    check_writable_dir(args.out)
    target = prepare(args.weights, args.dataset, args.data_dir)
    if not target.units:
        print(f"nothing to prune: {args.weights} has no shape-preserving residual block or sequential unit")
        return 0
    graph, draws = measure_configs(args)
    plan = choose_plan(target, args.out, curve=args.curve, graph=graph, draws=draws, remove=args.remove,
                       target_params=args.target_params, plan=args.plan, z=args.z, min_gain=args.min_gain,
                       progress=not args.quiet)
    print(verdict_table(plan.verdicts))
    print(f"plan: remove {len(plan.remove)} of {len(target.units)} removable units: {', '.join(plan.remove)}")
    if args.plan_only:
        print(f"wrote {args.out}/{PLAN_JSON}; edit it and pass it back with --plan")
        return 0
    finetune = replace(FINETUNE, epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=args.batch_size)
    comparison = prune_and_compare(target, plan, args.out, finetune, methods=args.methods, seeds=args.seeds,
                                   finetune_subset=args.finetune_subset, from_scratch=args.from_scratch,
                                   progress=not args.quiet)
    print(comparison.markdown())
    pruned = f", {PRUNED}" if "modularity" in args.methods else ""
    print(f"wrote {args.out}/{PLAN_JSON}, {COMPARISON_JSON}/.csv/.md/.png{pruned}")
    return 0


def _methods(text: str) -> list[str]:
    return [method.strip() for method in text.split(",") if method.strip()]


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``prune`` command."""
    from layermod.pruning.plans import METHODS
    from layermod.pruning.run import FINETUNE

    prune = commands.add_parser("prune", help="remove redundant layers, fine-tune, compare with other methods",
                                description=cmd_prune.__doc__)
    prune.add_argument("--weights", required=True, help="a layermod checkpoint (.safetensors with its sidecar)")
    add_data_args(prune, required=False)
    budget = prune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--remove", type=positive, help="number of units (layers) to remove")
    budget.add_argument("--target-params", type=float, help="fraction of parameters to remove, e.g. 0.3")
    budget.add_argument("--plan", help="an edited plan.json to apply instead of choosing")
    prune.add_argument("--plan-only", action="store_true", help="write plan.json and stop")
    prune.add_argument("--curve", help="curve.json measured on this checkpoint (default: measure it now, with the "
                       "graph and draw options below)")
    add_measure_args(prune, title="graph and draws of the curve measured now")
    prune.add_argument("--z", type=float, default=2.0, help="plateau band in standard errors of the increment")
    prune.add_argument("--min-gain", type=float, default=0.005, help="increments below this are negligible")
    prune.add_argument("--methods", type=_methods, default=list(METHODS),
                       help="methods compared at the same budget (default: all)")
    prune.add_argument("--seeds", type=positive, default=3, help="fine-tuning seeds per method (default 3)")
    prune.add_argument("--finetune-epochs", type=positive, default=FINETUNE.epochs,
                       help=f"fine-tuning epochs (default {FINETUNE.epochs})")
    prune.add_argument("--finetune-lr", type=float, default=FINETUNE.lr,
                       help=f"fine-tuning learning rate, {FINETUNE.schedule} schedule (default {FINETUNE.lr:g})")
    prune.add_argument("--finetune-subset", type=int, default=0,
                       help="fine-tune on a class-balanced subset of N training samples (default 0: all)")
    prune.add_argument("--batch-size", type=positive, default=FINETUNE.batch_size,
                       help=f"fine-tuning batch size (default {FINETUNE.batch_size})")
    prune.add_argument("--from-scratch", action="store_true",
                       help="retrain every pruned model from a fresh initialisation instead of fine-tuning")
    prune.add_argument("--out", required=True, help="run directory")
    prune.add_argument("--quiet", action="store_true", help="no progress bars")
    prune.set_defaults(func=cmd_prune)
