"""``layermod prune`` and ``layermod prune-study``: parse, call :mod:`layermod.pruning.run` step by step, print.

The plan is printed (with the verdicts behind it) before the fine-tuning starts; ``--plan-only`` stops there.
The curve, when measured now, takes the shared graph and draw options of :mod:`layermod.cli.args`. The data are
the checkpoint's (its training data, and its held-out ``test_dataset``) unless ``--dataset`` /
``--test-dataset`` say otherwise; texts are read as its sidecar records, each text option given overriding it.
"""

from __future__ import annotations

import argparse

from layermod.cli.args import (
    add_backend_args,
    add_data_args,
    add_measure_args,
    check_backend,
    checkpoint_text,
    data_options,
    measure_configs,
    non_negative,
    out_path,
    positive,
    resolve_device,
)

__all__ = ["add_parsers"]


def cmd_prune(args: argparse.Namespace) -> int:
    """Choose layers to remove (by --method: default auto, the method the committed matched-FLOPs studies favour;
    modularity, the curve's plateaus), prune them, fine-tune, and compare against other methods."""
    from dataclasses import replace

    from layermod.analysis.redundancy import verdict_table
    from layermod.io.rundir import COMPARISON_JSON, PLAN_JSON, PRUNED
    from layermod.io.runs import check_replaceable, staged_run
    from layermod.pruning.run import FINETUNE, choice_data, choose_plan, prune_and_compare, target_curve

    check_replaceable(args.out)
    target = _target(args)
    if not target.units:
        print(f"nothing to prune: {args.weights} has no shape-preserving residual block or sequential unit")
        return 0
    graph, draws = measure_configs(args)
    split = choice_data(target, probe=args.probe_split, finetune_subset=args.finetune_subset, draws=draws)
    measured = target_curve(target, curve=args.curve, graph=graph, draws=draws, progress=not args.quiet,
                            data=split.pool)
    split = split.with_curve(measured, measured_here=args.curve is None)
    with staged_run(args.out) as stage:
        plan = choose_plan(target, stage, curve=measured, graph=graph, draws=draws, remove=args.remove,
                           target_params=args.target_params, plan=args.plan, z=args.z, rel_gain=args.rel_gain,
                           min_gain=args.min_gain, progress=not args.quiet, method=args.method,
                           bn_batches=args.bn_batches, data=split.pool)
        print(verdict_table(plan.verdicts))
        print(_method_line(args.method, plan.method))
        print(f"plan: remove {len(plan.remove)} of {len(target.units)} removable units: {', '.join(plan.remove)}")
        if args.plan_only:
            comparison = None
        else:
            finetune = replace(FINETUNE, epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=args.batch_size,
                               optimizer=args.optimizer)
            comparison = prune_and_compare(target, plan, stage, finetune=finetune, methods=args.methods,
                                           seeds=args.seeds, finetune_subset=args.finetune_subset,
                                           from_scratch=args.from_scratch, progress=not args.quiet, curve=measured,
                                           split=split, bn_batches=args.bn_batches)
    if comparison is None:
        print(f"wrote {args.out}/{PLAN_JSON}; edit it and pass it back with --plan")
        return 0
    print(comparison.markdown())
    print(f"wrote {args.out}/{PLAN_JSON}, {COMPARISON_JSON}/.csv/.md/.png, {PRUNED}")
    return 0


def _method_line(asked: str, used: str | None) -> str:
    """What chose the plan, and what the evidence recommends."""
    from layermod.pruning.choices import AUTO

    if asked == "auto" and used == AUTO:
        return (f"method: auto = {AUTO}, the best pooled accuracy of the committed matched-FLOPs studies "
                "(docs/guide/pruning.md); --method modularity for the paper's rule")
    if used == AUTO:
        return f"method: {used}, the one the committed matched-FLOPs studies favour"
    return f"method: {used}; the committed matched-FLOPs studies favour {AUTO} (--method auto)"


def cmd_prune_study(args: argparse.Namespace) -> int:
    """Compare every pruning method at budgets matched by FLOPs and by parameters, retrained from the trained
    weights and from scratch, over seeds; write matched.json/.csv/.md, the Pareto figures and, when measured
    here, the curve that chose the layers (curve.json/.csv/.png)."""
    from dataclasses import replace

    from layermod.analysis.redundancy import find_redundant
    from layermod.io.rundir import MATCHED_JSON, MATCHED_MD
    from layermod.io.runs import check_replaceable, staged_run
    from layermod.pruning.run import FINETUNE, choice_data, matched_study, target_curve

    check_replaceable(args.out)
    check_backend(args)
    device = resolve_device(args.device)
    target = _target(args)
    if not target.units:
        print(f"nothing to prune: {args.weights} has no shape-preserving residual block or sequential unit")
        return 0
    graph, draws = measure_configs(args)
    split = choice_data(target, probe=args.probe_split, finetune_subset=args.train_subset,
                        test_subset=args.test_subset, draws=draws)
    measured = target_curve(target, curve=args.curve, graph=graph, draws=draws, progress=not args.quiet,
                            data=split.pool)
    split = split.with_curve(measured, measured_here=args.curve is None)
    verdicts = find_redundant(measured, z=args.z, rel_gain=args.rel_gain, min_gain=args.min_gain)
    finetune = replace(FINETUNE, epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=args.batch_size,
                       optimizer=args.optimizer)
    scratch = replace(finetune, epochs=args.scratch_epochs, lr=args.scratch_lr)
    with staged_run(args.out) as stage:
        comparison = matched_study(target, stage, verdicts, finetune=finetune, scratch=scratch,
                                   train_subset=args.train_subset,
                                   test_subset=args.test_subset, backend=args.backend, workers=args.workers,
                                   address=args.address, device=device, progress=not args.quiet,
                                   budgets=args.budgets, matches=args.match, retrains=args.retrain,
                                   methods=args.methods, seeds=args.seeds, curve=measured,
                                   iterative=args.iterative, split=split, bn_batches=args.bn_batches)
        if args.curve is None:
            measured.save(stage)  # the curve that chose the layers, beside the study it chose for
    print(comparison.markdown())
    print(f"wrote {args.out}/{MATCHED_JSON}, {MATCHED_MD}, the Pareto figures"
          + (" and the curve measured here" if args.curve is None else ""))
    return 0


def _target(args: argparse.Namespace):
    """The checkpoint of ``--weights`` to prune, with its data (:func:`layermod.pruning.run.prepare`)."""
    from layermod.pruning.run import prepare

    return prepare(args.weights, dataset=args.dataset, data_dir=args.data_dir, test_dataset=args.test_dataset,
                   text=data_options(args, recorded=checkpoint_text(args.weights)))


def _add_data(parser: argparse.ArgumentParser) -> None:
    """The data options of both commands: the shared ones, --test-dataset and --optimizer."""
    from layermod.pruning.choices import PROBE_SPLITS
    from layermod.training.config import OPTIMIZERS

    add_data_args(parser, required=False, split=False)
    parser.add_argument("--test-dataset", help="held-out data (default: the checkpoint's; with --dataset, its test "
                        "split)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                        help="optimizer of every retraining: sgd or adamw (for transformers; default sgd)")
    parser.add_argument("--probe-split", choices=PROBE_SPLITS, default=PROBE_SPLITS[0],
                        help="where the curve measured now and the scores' probe are drawn: train-heldout "
                             "(class-balanced training images the retraining never sees; default) or test")


def _add_bn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bn-batches", type=non_negative, default=0, metavar="N",
                        help="the removal scores (ablation-accuracy, modularity-ablation) re-estimate batch-norm "
                             "statistics on N batches of 256 training images after removing a unit, then score "
                             "(default 0: the trained statistics)")


def _methods(text: str) -> list[str]:
    return [method.strip() for method in text.split(",") if method.strip()]


def _shares(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.1,0.2,0.3")
    if not values or not all(0 < value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"budgets are shares in (0, 1), e.g. 0.1,0.2,0.3,0.4; got {text!r}")
    return values


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``prune`` and ``prune-study`` commands."""
    _add_prune(commands)
    _add_study(commands)


def _add_band(parser: argparse.ArgumentParser) -> None:
    """The plateau band of find_redundant: a layer is a plateau when its increment lies within
    max(z x noise, rel_gain x step, min_gain) of 0."""
    band = parser.add_argument_group(
        "plateau band", "a layer is a plateau when its increment of mean Q lies within max(Z x noise, REL_GAIN x "
        "step, MIN_GAIN) of 0 (a drop below it): noise is the paired standard error of the increment over the "
        "draws, step the curve's mean rise per layer, (max Q - min Q) / (layers - 1), so a straight line is never "
        "a plateau and a flat stretch is one whatever the curve's scale")
    band.add_argument("--z", type=float, default=2.0, help="standard errors of the increment (default 2)")
    band.add_argument("--rel-gain", type=float, default=0.5,
                      help="share of the curve's mean step a layer must add to be kept (default 0.5)")
    band.add_argument("--min-gain", type=float, default=0.0, help="an absolute floor in units of Q (default 0)")


def _add_study(commands: argparse._SubParsersAction) -> None:
    from layermod.pruning.choices import BUDGETS, DEFAULT_METHODS, FINETUNE, MATCHES, METHODS, RETRAINS

    study = commands.add_parser("prune-study", help="every pruning method at matched FLOPs / parameter budgets",
                                description=cmd_prune_study.__doc__)
    study.add_argument("--weights", required=True, help="a layermod checkpoint (.safetensors with its sidecar)")
    _add_data(study)
    study.add_argument("--curve", help="curve.json measured on this checkpoint (default: measure it now)")
    add_measure_args(study, title="graph and draws of the curve measured now")
    _add_band(study)
    study.add_argument("--budgets", type=_shares, default=list(BUDGETS),
                       help=f"shares of the cost to remove (default {','.join(map(str, BUDGETS))})")
    study.add_argument("--match", type=_methods, default=list(MATCHES),
                       help=f"costs the budgets are shares of: {','.join(MATCHES)} (default both)")
    study.add_argument("--retrain", type=_methods, default=list(RETRAINS),
                       help=f"{','.join(RETRAINS)}: from the trained weights and/or from scratch (default both)")
    study.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                       help=f"methods compared, of {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})")
    study.add_argument("--iterative", action="store_true",
                       help="re-score the remaining units after each removal (every score-based method)")
    _add_bn(study)
    study.add_argument("--seeds", type=positive, default=3, help="seeds per network and retraining (default 3)")
    study.add_argument("--finetune-epochs", type=positive, default=FINETUNE.epochs,
                       help=f"epochs of retraining from the trained weights (default {FINETUNE.epochs})")
    study.add_argument("--finetune-lr", type=float, default=FINETUNE.lr,
                       help=f"its learning rate, {FINETUNE.schedule} schedule (default {FINETUNE.lr:g})")
    study.add_argument("--scratch-epochs", type=positive, default=3, help="epochs of training from scratch (default 3)")
    study.add_argument("--scratch-lr", type=float, default=0.05, help="its learning rate (default 0.05)")
    study.add_argument("--batch-size", type=positive, default=FINETUNE.batch_size,
                       help=f"retraining batch size (default {FINETUNE.batch_size})")
    study.add_argument("--train-subset", type=int, default=0,
                       help="retrain on a class-balanced subset of N training samples (default 0: all)")
    study.add_argument("--test-subset", type=int, default=0,
                       help="evaluate on a class-balanced subset of N test samples (default 0: all)")
    study.add_argument("--device", default="auto", help="where the networks are retrained: cpu, cuda, cuda:1, ... "
                       "(default auto: cuda when available)")
    add_backend_args(study, "retraining jobs")
    study.add_argument("--out", type=out_path, required=True, help="run directory")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    study.set_defaults(func=cmd_prune_study)


def _add_prune(commands: argparse._SubParsersAction) -> None:
    """The ``prune`` command."""
    from layermod.pruning.choices import AUTO, DEFAULT_METHODS, FINETUNE, METHODS

    prune = commands.add_parser("prune", help="remove redundant layers, fine-tune, compare with other methods",
                                description=cmd_prune.__doc__)
    prune.add_argument("--weights", required=True, help="a layermod checkpoint (.safetensors with its sidecar)")
    _add_data(prune)
    budget = prune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--remove", type=positive, help="number of units (layers) to remove")
    budget.add_argument("--target-params", type=float, help="fraction of parameters to remove, e.g. 0.3")
    budget.add_argument("--plan", help="an edited plan.json to apply instead of choosing")
    prune.add_argument("--plan-only", action="store_true", help="write plan.json and stop")
    prune.add_argument("--method", choices=["auto", *(m for m in METHODS if m != "none")], default="auto",
                       help=f"the method that chooses the plan (default auto: {AUTO}, the best pooled result of "
                            "the committed matched-FLOPs studies; modularity: the paper's rule, the curve's "
                            "smallest increments first)")
    _add_bn(prune)
    prune.add_argument("--curve", help="curve.json measured on this checkpoint (default: measure it now, with the "
                       "graph and draw options below)")
    add_measure_args(prune, title="graph and draws of the curve measured now")
    _add_band(prune)
    prune.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                       help=f"methods compared at the same budget, of {','.join(METHODS)} (default: "
                            f"{','.join(DEFAULT_METHODS)})")
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
    prune.add_argument("--out", type=out_path, required=True, help="run directory")
    prune.add_argument("--quiet", action="store_true", help="no progress bars")
    prune.set_defaults(func=cmd_prune)
