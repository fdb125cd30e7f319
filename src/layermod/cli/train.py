"""``layermod train`` (a registered architecture or library model, with checkpoints and optional modularity
tracking) and ``layermod eval`` (the accuracy of a checkpoint).

``train`` builds registered architectures and library models (``torchvision:NAME``, ``timm:NAME``, ``hf:DIR``,
from ``--pretrained`` weights or random), never ``module:function``, so that its checkpoints rebuild from their
sidecars; the number of classes and input channels default to the training data's (a library model gets the
data's channels only for images). A table of texts (or an ``hf:`` set of texts) is tokenised with the ``hf:``
model's tokenizer; the tokenizer, ``--text-column``, ``--label-column``, ``--max-length`` and the class names go
into the sidecar under ``text``, so that ``eval``, ``prune``, ``prune-study`` and ``curve`` rebuild the same
inputs (:func:`layermod.models.spec.text_options`); the held-out table must name the same classes. And ``--arch-arg KEY=VALUE`` passes any other builder argument (the value read
as JSON when it parses, else as a string). Its training flags default to
``None`` so that a flag given explicitly overrides either preset (the small CPU one or ``--paper``). With
``--track-every`` the curve of a fixed test probe is measured during training, with the shared graph and draw
options (the draw seed is ``--probe-seed``: ``--seed`` is the training's). With ``--tensorboard DIR`` every
epoch's ``lr``, ``train_loss``, ``train_acc``, ``test_acc`` and, at tracked epochs, ``modularity/<layer>`` (mean Q)
go to TensorBoard event files in DIR, the step being the epoch (0 = before training, when tracked). They are
written before the epoch's files are committed; a resumed run writes a new event file with ``purge_step`` = the
first epoch it trains, so TensorBoard drops what the interrupted run logged from that epoch on and shows every
epoch once (a new run into a DIR holding older events adds to them: give each run its own DIR). The writer is
created at the first epoch's scalars, so a refused command leaves DIR alone.
``eval`` takes the architecture and, unless given, the dataset from the checkpoint's sidecar.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from layermod.cli.args import (add_library_args, add_measure_args, add_text_args, data_options, non_negative, out_path,
                               positive, positive_real, to_device)
from layermod.errors import DatasetError, ModelError, TrainError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from layermod.training.config import TrainConfig

__all__ = ["add_parsers", "train_config"]

_TRAIN_FLAGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "milestones", "gamma", "seed",
                "optimizer")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The preset (``--paper`` or the small CPU defaults) with every explicitly given flag on top; validated."""
    from dataclasses import replace

    from layermod.training.augment import augmentation_for
    from layermod.training.config import PAPER_RECIPE, TrainConfig

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


def _arch_args(args: argparse.Namespace, train_set: Dataset, library: bool) -> dict:
    """Builder arguments: the flags, else the number of classes and channels of the training data (for a library
    model: no width, and the data's channels only when it holds images)."""
    from layermod.data.arrays import dataset_labels, gather

    num_classes = args.num_classes
    if num_classes is None:
        classes = getattr(train_set, "classes", None)
        num_classes = len(classes) if classes else int(dataset_labels(train_set).max()) + 1
    in_channels = args.in_channels
    if in_channels is None:
        example, _ = gather(train_set, [0])
        if isinstance(example, dict):  # token ids: no channels
            in_channels = None
        else:
            in_channels = int(example.shape[1]) if example.ndim >= 3 else None if library else 1
    width = args.width if args.width is not None or library else 1.0
    given = {"num_classes": num_classes, "in_channels": in_channels, "width": width, "hf_task": args.hf_task}
    return {**{key: value for key, value in given.items() if value is not None}, **dict(args.arch_arg or [])}


def cmd_train(args: argparse.Namespace) -> int:
    """Train a registered architecture or library model; write DIR/metrics.csv, last.*, best.* (and dynamics.*
    with --track-every)."""
    import torch

    from layermod import models
    from layermod.analysis.dynamics import TrackConfig
    from layermod.cli.args import measure_configs
    from layermod.coerce import torch_seed
    from layermod.data.draws import balanced_subset
    from layermod.io.files import check_writable_dir
    from layermod.io.rundir import LAST, WEIGHTS_SUFFIX
    from layermod.models import hub
    from layermod.models.checkpoint import read_sidecar
    from layermod.training.fit import fit

    check_writable_dir(args.out)
    if args.tensorboard is not None:
        check_writable_dir(args.tensorboard)
        _summary_writer_class()  # the missing package is one line before any work
    arch, library = _train_arch(args)
    config = train_config(args)
    track = None
    if args.track_every:
        graph, draws = measure_configs(args)
        track = TrackConfig(every=args.track_every, graph=graph, draws=draws)
    train_set, test_set, test_spec, text = _train_data(args, arch)
    normalization = getattr(train_set, "normalization", None) or {}
    if args.subset is not None:
        train_set = balanced_subset(train_set, args.subset, seed=config.seed)
    arch_args = _arch_args(args, train_set, library)
    torch.manual_seed(torch_seed(config.seed, TrainError))
    if library:
        model = hub.create(arch, **arch_args, pretrained=args.pretrained)
    else:
        model = models.create(arch, **arch_args)
    to_device(model, args.device)
    meta = {"arch": arch, "arch_args": arch_args, "dataset": args.dataset, "test_dataset": test_spec,
            "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None, "subset": args.subset,
            "train_size": len(train_set), "test_size": len(test_set), "normalization": normalization,
            "device": args.device, **({"pretrained": True} if args.pretrained else {}),
            **({"text": text} if text is not None else {})}
    last_weights = os.path.join(args.out, LAST + WEIGHTS_SUFFIX)
    resumable = args.resume and os.path.isfile(os.path.join(args.out, LAST + ".json"))
    before = read_sidecar(last_weights).get("epoch", 0) if resumable else 0
    board = _TensorBoard(args.tensorboard, before + 1 if before else None) if args.tensorboard is not None else None
    try:
        history = fit(model, train_set, test_set, config, args.out, meta=meta, track=track, resume=args.resume,
                      progress=not args.quiet, log=board)
    finally:
        if board is not None:
            board.close()
    _print_trained(args, history, before=before, epochs=config.epochs, tracked=track is not None)
    return 0


def _train_arch(args: argparse.Namespace) -> tuple[str, bool]:
    """(the architecture ``--model`` names as a checkpoint records it, whether it is a library model); ModelError
    for a name train cannot build or library flags without a library model."""
    from layermod import models
    from layermod.models import hub

    library = hub.is_library_spec(args.model)
    arch = hub.canonical(args.model) if library else args.model.strip().lower()
    if not library and arch not in models.available():
        if ":" in args.model:
            raise ModelError(f"train builds registered architectures or torchvision:/timm:/hf: models (their "
                             f"checkpoints rebuild from the sidecar), not {args.model!r}; available: "
                             f"{', '.join(models.available())}")
        models.create(arch)  # an unknown name: raises ModelError listing the available ones
    if args.pretrained and not library:
        raise ModelError(f"--pretrained loads the weights of a torchvision:, timm: or hf: model; {arch} has none")
    if args.hf_task and not arch.startswith("hf:"):
        raise ModelError(f"--hf-task is for hf: models, not {arch!r}; drop it")
    return arch, library


def _train_data(args: argparse.Namespace, arch: str) -> tuple[Dataset, Dataset, str, dict | None]:
    """(training set, held-out set, the held-out set's spec, the text options a checkpoint records or None for
    data other than texts); texts are tokenised with ``arch``'s tokenizer, the held-out ones on the training
    set's classes."""
    from layermod.data.spec import resolve_data
    from layermod.data.text import TokenDataset

    options = {**data_options(args), "tokenizer": arch}
    train_set, train_description = resolve_data(args.dataset, split="train", data_dir=args.data_dir, **options)
    if args.test_dataset is not None:
        test_spec = args.test_dataset
    elif "split" in train_description:
        test_spec = args.dataset
    else:
        raise DatasetError(f"{args.dataset} has no test split; pass --test-dataset with held-out data")
    text = {**options, "classes": list(train_set.classes)} if isinstance(train_set, TokenDataset) else None
    test_set, _ = resolve_data(test_spec, split="test", data_dir=args.data_dir, **(text or options))
    return train_set, test_set, test_spec, text


def _print_trained(args: argparse.Namespace, history: list[dict], *, before: int, epochs: int,
                   tracked: bool) -> None:
    """The line that ends ``layermod train``: the epochs trained, their accuracy and the files written."""
    from layermod.io.rundir import BEST, DYNAMICS_JSON, DYNAMICS_PNG, LAST, METRICS_CSV, WEIGHTS_SUFFIX

    last = history[-1]
    if last["epoch"] <= before:
        print(f"nothing to train: {args.out} already holds {last['epoch']} epochs (--epochs {epochs}); "
              "raise --epochs to train longer")
        return
    best = max(history, key=lambda row: row["test_acc"])
    files = f"{LAST}{WEIGHTS_SUFFIX}, {BEST}{WEIGHTS_SUFFIX}, {METRICS_CSV}"
    files += f", {DYNAMICS_JSON}, {DYNAMICS_PNG}" if tracked else ""
    events = f"; TensorBoard events in {args.tensorboard}" if args.tensorboard is not None else ""
    print(f"trained epochs {before + 1}-{last['epoch']}: test accuracy {last['test_acc']:.4f} (best "
          f"{best['test_acc']:.4f} at epoch {best['epoch']}); wrote {files} in {args.out}{events}")


def _summary_writer_class() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainError("--tensorboard needs the tensorboard package; pip install 'layermod[tensorboard]'") from None
    return SummaryWriter


class _TensorBoard:
    """``log(epoch, scalars)`` for :func:`~layermod.training.fit.fit`: the scalars at step ``epoch`` in
    ``directory``'s event files, flushed at once; the writer is made at the first call."""

    def __init__(self, directory: str, purge_step: int | None) -> None:
        self.directory, self.purge_step, self.writer = directory, purge_step, None

    def __call__(self, epoch: int, scalars: dict[str, float]) -> None:
        if self.writer is None:
            self.writer = _summary_writer_class()(self.directory, purge_step=self.purge_step)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def cmd_eval(args: argparse.Namespace) -> int:
    """Accuracy of a layermod checkpoint (architecture from its sidecar; dataset too unless given)."""
    from layermod.io.runs import check_replaceable, staged_run
    from layermod.models.checkpoint import load_checkpoint, sidecar_path, weights_path
    from layermod.models.spec import text_options
    from layermod.training.evaluation import evaluate_checkpoint

    if args.out:
        check_replaceable(args.out)
    model, meta = load_checkpoint(args.weights)
    to_device(model, args.device)
    text = data_options(args, recorded=text_options(meta, sidecar_path(weights_path(args.weights))))
    result = evaluate_checkpoint(model, meta, args.weights, dataset=args.dataset, split=args.split,
                                 data_dir=args.data_dir, batch_size=args.batch_size, text=text)
    where = f"{result.dataset} ({result.split} split)" if result.split else result.dataset
    print(f"accuracy {result.accuracy:.4f} ({result.correct}/{result.n}) of {args.weights} on {where}")
    if args.out:
        with staged_run(args.out) as stage:
            result.save(stage)
    return 0


def _epochs_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write epochs separated by commas, e.g. 50,100") from None


def _train_description() -> str:
    from layermod.training.config import PAPER_RECIPE, TrainConfig

    def recipe(c: TrainConfig) -> str:
        schedule = (f"x{c.gamma:g} after epochs {','.join(map(str, c.milestones))}" if c.schedule == "step"
                    else f"{c.schedule} schedule")
        return (f"{c.epochs} epochs, batch {c.batch_size}, lr {c.lr:g}, momentum {c.momentum:g}, weight decay "
                f"{c.weight_decay:g}, {schedule}, {c.optimizer} optimizer")

    return (f"{cmd_train.__doc__}\n\n"
            f"Defaults (small, for a CPU): {recipe(TrainConfig())}.\n"
            f"--paper (Lu et al. 2022): {recipe(PAPER_RECIPE)}.\n"
            "Flags given explicitly override either. Random crop (padding 4) and flip are on by default where the\n"
            "dataset calls for them (CIFAR). To continue a run, repeat its command with --resume (only --epochs\n"
            "may change).")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a registered architecture or library model with checkpoints "
                                "and optional modularity tracking", description=_train_description(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_inputs(train)
    _add_train_recipe(train)
    tracking = train.add_argument_group("modularity tracking")
    tracking.add_argument("--track-every", type=non_negative, default=0, metavar="N",
                          help="measure the modularity curve every N epochs (and at epoch 0 and the last epoch) "
                          "into DIR/dynamics.json and dynamics.png (default 0: off)")
    add_measure_args(train, probe=True, title="modularity tracking: graph and probe draws (from the test split)")
    tracking.add_argument("--tensorboard", metavar="DIR", help="also write every epoch's lr, train_loss, train_acc, "
                          "test_acc and, when tracked, modularity/<layer> as TensorBoard events in DIR (step = "
                          "epoch; needs layermod[tensorboard])")

    train.add_argument("--out", type=out_path, required=True, help="run directory for metrics.csv, last.*, best.*, dynamics.*")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.* (same settings; "
                       "--epochs may grow)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    train.set_defaults(func=cmd_train)


def _add_train_inputs(train: argparse.ArgumentParser) -> None:
    """The model and data groups of ``layermod train``."""
    model = train.add_argument_group("model")
    model.add_argument("--model", required=True, help="registered architecture name (see `layermod models`), "
                       "torchvision:NAME, timm:NAME or hf:DIR_OR_ID")
    model.add_argument("--num-classes", type=positive, help="classes (default: the training data's)")
    model.add_argument("--in-channels", type=positive, help="input channels (default: the training data's)")
    model.add_argument("--width", type=positive_real, help="width multiplier of a registered architecture (default 1)")
    add_library_args(model)
    model.add_argument("--device", default="auto", help="torch device to train on (default auto: cuda when available)")

    data = train.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="fashion-mnist, mnist, digits, cifar10, cifar100, "
                      "folder:PATH or hf:NAME_OR_DIR (train split for training, test split for evaluation), a .npz "
                      "file with arrays X and y, a .csv/.tsv/.json/.jsonl/.parquet table of texts and labels (for an "
                      "hf: model, with --test-dataset), or module:function")
    data.add_argument("--test-dataset", help="held-out data (default: the test split of --dataset; required when "
                      "--dataset has no splits)")
    data.add_argument("--data-dir", help="folder holding the dataset files (else $LAYERMOD_DATA, system and cache)")
    data.add_argument("--subset", type=positive, metavar="N", help="train on a class-balanced subset of N samples "
                      "(N // classes per class, drawn with --seed), for quick CPU runs")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                      help="random crop (padding 4) and horizontal flip of training batches (default: on for the "
                      "datasets that call for it, CIFAR)")
    add_text_args(data)


def _add_train_recipe(train: argparse.ArgumentParser) -> None:
    """The training group of ``layermod train``: the recipe's flags, each with both defaults in its help."""
    from layermod.training.config import OPTIMIZERS, PAPER_RECIPE, SCHEDULES, TrainConfig

    small, paper = TrainConfig(), PAPER_RECIPE
    training = train.add_argument_group("training")
    training.add_argument("--paper", action="store_true", help="start from the paper's recipe instead of the small "
                          "CPU defaults (see above)")
    training.add_argument("--epochs", type=positive, help=f"epochs (default {small.epochs}; --paper {paper.epochs})")
    training.add_argument("--batch-size", type=positive,
                          help=f"samples per step (default {small.batch_size}; --paper {paper.batch_size})")
    training.add_argument("--lr", type=positive_real, help=f"peak learning rate (default {small.lr:g}; --paper "
                          f"{paper.lr:g})")
    training.add_argument("--optimizer", choices=OPTIMIZERS, help=f"sgd (with --momentum) or adamw, which "
                          f"transformers train far better with (default {small.optimizer})")
    training.add_argument("--momentum", type=float, help=f"SGD momentum (default {small.momentum:g}; --paper "
                          f"{paper.momentum:g})")
    training.add_argument("--weight-decay", type=float, help=f"SGD's L2 weight decay, AdamW's decoupled one "
                          f"(default {small.weight_decay:g}; --paper {paper.weight_decay:g})")
    training.add_argument("--schedule", choices=SCHEDULES,
                          help=f"learning-rate schedule (default {small.schedule}; --paper {paper.schedule}; "
                          "step when only --milestones is given)")
    training.add_argument("--milestones", type=_epochs_list, metavar="E1,E2",
                          help="epochs after which the step schedule multiplies the rate by --gamma (--paper "
                          f"{','.join(map(str, paper.milestones))}); each below --epochs")
    training.add_argument("--gamma", type=float, help=f"factor of the step schedule (default {paper.gamma:g})")
    training.add_argument("--seed", type=int, help=f"seed of the initial weights, shuffling, augmentation and "
                          f"--subset (default {small.seed})")
    training.add_argument("--workers", type=non_negative, help="DataLoader workers for datasets not held in memory (default 0)")


def _add_eval_parser(commands: argparse._SubParsersAction) -> None:
    evaluation = commands.add_parser("eval", help="accuracy of a layermod checkpoint", description=cmd_eval.__doc__)
    evaluation.add_argument("--weights", required=True, help="checkpoint .safetensors with its JSON sidecar "
                            "(e.g. DIR/best.safetensors written by train)")
    evaluation.add_argument("--dataset", help="dataset (default: the sidecar's held-out data)")
    evaluation.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
    evaluation.add_argument("--data-dir", help="folder holding the dataset files (default: the sidecar's, else "
                            "$LAYERMOD_DATA, system and cache)")
    add_text_args(evaluation.add_argument_group("texts"))
    evaluation.add_argument("--batch-size", type=positive, default=512, help="samples per forward pass (default 512)")
    evaluation.add_argument("--device", default="auto",
                            help="torch device to run the model on (default auto: cuda when available)")
    evaluation.add_argument("--out", type=out_path, help="also write DIR/eval.json")
    evaluation.set_defaults(func=cmd_eval)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``train`` and ``eval`` commands."""
    _add_train_parser(commands)
    _add_eval_parser(commands)
