"""``layermod sweep`` (many curves from a TOML spec) and ``layermod dynamics`` (the curve of every checkpoint).

Both run their items through :func:`layermod.sweep.run.run_sweep` on the same backends (``--backend local``
in this process or ``--workers N`` processes, ``--backend ray`` embedded or ``--address`` of a cluster), and
every item is an ordinary ``layermod curve`` run directory under ``DIR/items/ID``.

Decisions, on purpose:

* **The curve command is the schema.** A spec's keys are the long options of ``layermod curve`` (read from its
  parser, so a new curve option is a valid key at once; ``out`` and ``quiet`` are the sweep's own), and every
  item's options are parsed by the curve parser before anything runs: a bad value is one line naming the item.
  Each item then runs the curve command's own code (:func:`curve_item`), so it writes exactly what
  ``layermod curve --out`` writes.
* **A spec is a file, so it runs no code.** A ``module:function`` (or ``file.py:function``) model or dataset
  in a spec is refused unless ``--allow-import`` is given: whoever runs a spec they did not write should not
  run its code by accident, the same rule as for a checkpoint sidecar (:mod:`layermod.models.spec`).
  ``layermod dynamics`` takes its options from the command line, which is the person's own.
* **Exit status.** 0 when every item of this run is ok, 2 when any failed (each failure is recorded in its
  item directory and the table with its one-line error; ``--resume`` runs it again).
* **Dynamics from checkpoints.** ``layermod train`` keeps ``best`` and ``last``; ``dynamics`` takes a run
  directory (every ``*.safetensors`` there with a sidecar) or a glob of checkpoint files, orders them by the
  ``epoch`` in each sidecar (two files of one epoch with the same weights digest count once; different
  weights are refused) and writes ``dynamics.json`` / ``dynamics.png`` in the format ``train --track-every``
  writes, with each sidecar's test ``accuracy``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layermod.cli.args import (
    add_backend_args,
    add_data_args,
    add_extraction_args,
    add_measure_args,
    add_model_args,
    check_backend,
    out_path,
    positive,
)
from layermod.errors import SweepError

if TYPE_CHECKING:
    from layermod.sweep.executor import ItemResult
    from layermod.sweep.spec import OptionKind

__all__ = ["add_parsers", "curve_item"]

_OWN = {"help", "out", "quiet"}  # curve options the sweep sets itself


def _curve_parser() -> argparse.ArgumentParser:
    from layermod.cli.measure import add_parsers as add_measure_parsers

    commands = argparse.ArgumentParser(prog="layermod").add_subparsers()
    add_measure_parsers(commands)
    return commands.choices["curve"]


def curve_options(parser: argparse.ArgumentParser) -> dict[str, OptionKind]:
    """The spec keys of the curve command: its long options without dashes, with how each takes its value."""
    kinds: dict[str, OptionKind] = {}
    for action in parser._actions:
        longs = [s[2:] for s in action.option_strings if s.startswith("--")]
        if not longs or longs[0] in _OWN:
            continue
        kind = ("flag" if action.nargs == 0 else "repeat" if isinstance(action, argparse._AppendAction)
                else "value")
        for name in longs:
            kinds[name] = kind
    return kinds


def _parse_item(parser: argparse.ArgumentParser, argv: list[str], where: str) -> dict:
    """The curve parser's arguments of ``argv`` (less out / quiet / func), or one line naming ``where``."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args([*argv, "--out", ".", "--quiet"])
    except SystemExit:
        reason = errors.getvalue().strip().splitlines()[-1:] or ["cannot be parsed"]
        raise SweepError(f"{where}: {re.sub(r'^.*?error: ', '', reason[0])}") from None
    return {key: value for key, value in vars(args).items() if key not in ("out", "quiet", "func")}


def _runs_code(args: Mapping[str, Any]) -> str | None:
    """The option naming code that layermod would import (``module:function``), or None."""
    from layermod.data.datasets import DATASETS
    from layermod.data.tabular import TABLE_SUFFIXES
    from layermod.models.hub import is_library_spec

    model, dataset = args.get("model"), args.get("dataset") or ""
    if model and ":" in model and not is_library_spec(model):
        return f"model = {model!r}"
    named = (dataset in DATASETS or dataset.startswith(("folder:", "hf:")) or dataset[:12].lower() == "torchvision:"
             or dataset.endswith(".npz") or Path(dataset).suffix.lower() in TABLE_SUFFIXES)
    return None if named or ":" not in dataset else f"dataset = {dataset!r}"


def curve_item(directory: Path, args: Mapping[str, Any]) -> None:
    """Run ``layermod curve`` with the parsed ``args`` into ``directory`` (quietly): the sweep's item maker."""
    from layermod.cli.measure import cmd_curve

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        cmd_curve(argparse.Namespace(**args, out=str(directory), quiet=True))


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write I/N with 1 <= I <= N, e.g. 2/4")
    return int(match.group(1)), int(match.group(2))


def _reporter(total: int):
    """Prints one line per finished item: ``[n/total] ok|failed ID (seconds)``."""
    done = [0]

    def report(result: ItemResult) -> None:
        done[0] += 1
        state = "ok" if result.ok else f"failed: {result.error}"
        print(f"[{done[0]}/{total}] {result.id} {state} ({result.seconds:.1f} s)", flush=True)

    return report


def _check_backend(args: argparse.Namespace) -> None:
    from layermod.io.files import check_writable_dir

    check_writable_dir(args.out)
    check_backend(args)


def _execute(args: argparse.Namespace, work: list, resources=None, threads=None):
    from layermod.sweep.run import run_sweep

    return run_sweep(work, args.out, curve_item, resume=args.resume, backend=args.backend, workers=args.workers,
                     address=args.address, resources=resources, threads=args.threads or threads,
                     on_result=_reporter(len(work)), progress=False)  # its lines are the progress


def _tally(run) -> str:
    return f"{len(run.computed)} computed, {len(run.skipped)} already complete, {len(run.failed)} failed"


def _failed(run, total: int, out: str) -> int:
    if not run.failed:
        return 0
    first, error = next(iter(run.failed.items()))
    print(f"layermod: error: {len(run.failed)} of {total} items failed (e.g. {first}: {error}); see "
          f"{out}; --resume runs them again", file=sys.stderr)
    return 2


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run `layermod curve` over every item of a TOML spec (a [defaults] table, a [grid] of lists expanded as
    a product, [[run]] entries) into DIR/items/ID, then write DIR/results.csv (a row per item and layer),
    results.parquet (with pyarrow) and summary.png."""
    from layermod.sweep.results import SweepTable
    from layermod.sweep.spec import load_spec, to_argv

    _check_backend(args)
    parser = _curve_parser()
    kinds = curve_options(parser)
    spec = load_spec(args.spec, kinds)
    parsed = {item.id: _parse_item(parser, to_argv(item.options, kinds), f"item {item.id} of {args.spec}")
              for item in spec.items}
    if not args.allow_import:
        for item in spec.items:
            code = _runs_code(parsed[item.id])
            if code:
                raise SweepError(f"item {item.id} of {args.spec} names code ({code}), which layermod never runs "
                                    "from a file; pass --allow-import if you trust the spec")
    shard = spec.shard(*args.shard)
    part = f", shard {args.shard[0]}/{args.shard[1]}: {len(shard)}" if args.shard != (1, 1) else ""
    print(f"{len(spec.items)} items{part}; varying: {', '.join(spec.varying) or 'nothing'}")
    run = _execute(args, [(item, parsed[item.id]) for item in shard], spec.resources, spec.threads)
    table = SweepTable.collect(spec.items, spec.varying, args.out)
    out = table.save(args.out)
    pending = len(spec.items) - len({row["item"] for row in table.rows})
    print(_tally(run) + (f"; {pending} items of other shards pending" if pending else "")
          + f"; wrote the table into {out}")
    return _failed(run, len(shard), args.out)


def _checkpoints(source: str) -> list[tuple[int, float | None, str]]:
    """(epoch, accuracy, path) of the checkpoints of a run directory or glob, ordered by epoch (see the module
    doc)."""
    from layermod.io.rundir import SIDECAR_SUFFIX, WEIGHTS_SUFFIX
    from layermod.models.commit import read_sidecar

    if Path(source).is_dir():
        files = Path(source).glob(f"*{WEIGHTS_SUFFIX}")
        paths = sorted(str(p) for p in files if p.with_suffix(SIDECAR_SUFFIX).is_file())
    else:
        paths = sorted(glob.glob(source))
    if not paths:
        raise SweepError(f"{source} holds or matches no checkpoint (.safetensors with its .json sidecar); "
                            "point at a `layermod train` run directory or a glob of checkpoints")
    found: dict[int, tuple[float | None, str, object]] = {}
    for path in paths:
        meta = read_sidecar(path)
        epoch, accuracy = meta.get("epoch"), meta.get("accuracy")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise SweepError(f"the sidecar of {path} records no epoch; give checkpoints saved by `layermod train`")
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
            accuracy = None
        if epoch in found and found[epoch][2] != meta.get("weights_sha256"):
            raise SweepError(f"{found[epoch][1]} and {path} are both epoch {epoch} with different weights; "
                                "pass a glob that picks one of them")
        found.setdefault(epoch, (accuracy, path, meta.get("weights_sha256")))
    return [(epoch, accuracy, path) for epoch, (accuracy, path, _) in sorted(found.items())]


def cmd_dynamics(args: argparse.Namespace) -> int:
    """The modularity curve of every checkpoint of a training run (a run directory or a glob of checkpoint
    files, ordered by the epoch in their sidecars), each an item run like a sweep's; writes DIR/dynamics.json and
    dynamics.png as `layermod train --track-every` does, and the curves under DIR/items."""
    from layermod.analysis.curve import Curve
    from layermod.analysis.dynamics import Dynamics
    from layermod.io.rundir import DYNAMICS_JSON, DYNAMICS_PNG, ITEMS_DIR
    from layermod.sweep.run import read_record
    from layermod.sweep.spec import Item, item_hash

    _check_backend(args)
    if args.weights:
        raise SweepError("dynamics measures the checkpoints given as its argument; drop --weights")
    parser = _curve_parser()
    defaults = _parse_item(parser, ["--dataset", args.dataset], "the curve options")
    base = {**defaults, **{key: value for key, value in vars(args).items() if key in defaults}, "views": 0}
    work = []
    for epoch, _, path in (checkpoints := _checkpoints(args.checkpoints)):
        curve_args = {**base, "weights": path}
        digest = item_hash(json.loads(json.dumps(curve_args, default=str)))
        work.append((Item(f"epoch-{epoch:04d}-{digest}", {"epoch": epoch, "weights": path}), curve_args))
    print(f"{len(work)} checkpoints, epochs {', '.join(str(epoch) for epoch, _, _ in checkpoints)}")
    run = _execute(args, work)
    dynamics = None
    for (epoch, accuracy, _), (item, _) in zip(checkpoints, work):
        directory = Path(args.out) / ITEMS_DIR / item.id
        if (read_record(directory) or {}).get("status") != "ok":
            continue
        curve = Curve.load(directory)
        try:
            dynamics = (dynamics.record(epoch, curve, accuracy) if dynamics else Dynamics.start(
                epoch, curve, accuracy, config=_dynamics_config(curve, args.checkpoints)))
        except ValueError as err:
            raise SweepError(f"{err}; measure checkpoints of one architecture with the same options") from None
    print(_tally(run))
    if dynamics is not None:
        dynamics.save(args.out)
        print(f"wrote {os.path.join(args.out, DYNAMICS_JSON)}, {DYNAMICS_PNG} ({len(dynamics.epochs)} epochs)")
    return _failed(run, len(work), args.out)


def _dynamics_config(curve, source: str) -> dict:
    """The dynamics config, as ``train --track-every`` writes it, from a checkpoint's curve."""
    c = curve.config
    keys = ("k", "metric", "symmetrize", "weighted", "resolution", "n_per_class", "repeats", "seed",
            "null_permutations", "layers", "n_classes", "samples_per_draw", "disjoint_draws", "dataset", "split")
    return {**{key: c[key] for key in keys if key in c}, "checkpoints": source}


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
    group = add_backend_args(parser)
    group.add_argument("--threads", type=positive, help="torch threads per item (default: the spec's threads, else one "
                       "per CPU of a Ray actor or process)")
    group.add_argument("--resume", action="store_true", help="skip items already complete in DIR and run the rest "
                       "(failed ones again)")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``sweep`` and ``dynamics`` commands."""
    sweep = commands.add_parser("sweep", help="many curves from a TOML spec, locally or on a Ray cluster",
                                description=cmd_sweep.__doc__)
    sweep.add_argument("spec", help="TOML file: [defaults], [grid], [[run]] with curve options (no dashes), "
                       "[resources] num-cpus, num-gpus, threads")
    sweep.add_argument("--out", type=out_path, required=True, help="sweep directory: items/ID/, results.csv, summary.png")
    _add_backend_args(sweep)
    sweep.add_argument("--shard", type=_shard, default=(1, 1), metavar="I/N",
                       help="run only shard I of N (every N-th item by id), e.g. for a job array (default 1/1)")
    sweep.add_argument("--allow-import", action="store_true",
                       help="run a module:function model or dataset named in the spec (refused by default)")
    sweep.set_defaults(func=cmd_sweep)

    dynamics = commands.add_parser("dynamics", help="the curve of every checkpoint of a training run",
                                   description=cmd_dynamics.__doc__)
    dynamics.add_argument("checkpoints", help="a `layermod train` run directory or a glob of checkpoint files")
    add_model_args(dynamics)
    for action in dynamics._actions:  # the checkpoints are the weights: --weights is refused, so not shown
        if action.dest == "weights":
            action.help = argparse.SUPPRESS
    add_data_args(dynamics, required=True)
    add_extraction_args(dynamics)
    add_measure_args(dynamics)
    dynamics.add_argument("--out", type=out_path, required=True, help="directory for dynamics.json, dynamics.png and items/")
    _add_backend_args(dynamics)
    dynamics.set_defaults(func=cmd_dynamics)
