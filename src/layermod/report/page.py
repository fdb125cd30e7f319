"""Run directories -> one self-contained HTML page (``layermod report``).

The decisions behind it: docs/design.md, section layermod.report.page.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from layermod.adversarial.curves import AdversarialCurves
from layermod.analysis.compare import LayerComparison
from layermod.analysis.curve import Curve
from layermod.analysis.curve_plot import curve_axes
from layermod.analysis.dynamics import Dynamics
from layermod.analysis.redundancy import find_redundant
from layermod.analysis.views import Views
from layermod.errors import LayermodError, ReportError
from layermod.io.files import csv_text, ensure_writable_dir, read_json_file
from layermod.io.rundir import (
    ATTACK_CSV,
    ATTACK_JSON,
    BEST_JSON,
    CKA_CSV,
    COMPARE_JSON,
    COMPARISON_CSV,
    COMPARISON_JSON,
    CURVE_CSV,
    CURVE_JSON,
    D_CSV,
    DYNAMICS_JSON,
    EMBEDDING_JSON,
    EVAL_JSON,
    MATCHED_CSV,
    MATCHED_JSON,
    METRICS_CSV,
    PLAN_JSON,
    REPORT_HTML,
    RESULTS_CSV,
    RUN_JSON,
)
from layermod.io.table import new_axes
from layermod.io.runs import check_run
from layermod.io.validate import MAX_ITEMS, REASON_CHARS, TITLE_CHARS, label, mapping, number, shorten, text
from layermod.measure.config import GraphConfig
from layermod.pruning.pareto import MatchedComparison
from layermod.pruning.plans import Plan
from layermod.pruning.study import PruningComparison
from layermod.report.html import HtmlDocument
from layermod.sweep.results import SweepTable
from layermod.training.evaluation import Evaluation

__all__ = ["KNOWN_FILES", "Section", "write_report"]

T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[T]):
    """What the report does with one file of a run directory.

    Attributes:
        load: the file's result read from the run directory (the result type's loader); raises on a file that
            cannot be.
        show: adds the result's section to the page: ``show(doc, result, run)``.
        downloads: files of the run embedded as downloads below the section, those present.
    """

    load: Callable[[Path], T]
    show: Callable[[HtmlDocument, T, Path], None]
    downloads: tuple[str, ...]


def _download(doc: HtmlDocument, run: Path, *names: str) -> None:
    for name in names:
        if (run / name).is_file():
            doc.download(f"{run.name}-{name}", (run / name).read_bytes(),
                         mime="application/json" if name.endswith(".json") else "text/csv", label=name)


def _sidecar(data: object) -> dict:
    """What the report shows of a checkpoint sidecar, checked: names, the accuracy in [0, 1], the epoch."""
    meta = mapping(data, "the sidecar")
    arguments = ", ".join(f"{key}={value}" for key, value in sorted(mapping(meta.get("arch_args", {}),
                                                                            "arch_args").items()))
    return {
        "model": f"{text(meta.get('arch', 'model'), 'arch')}({shorten(arguments, limit=TITLE_CHARS)})",
        "dataset": text(meta.get("dataset", "?"), "dataset"),
        "accuracy": number(meta.get("best_accuracy", meta.get("accuracy")), "best_accuracy", low=0, high=1),
        "epoch": number(meta.get("best_epoch", meta.get("epoch")), "best_epoch", low=0, integer=True),
    }


def _load_sidecar(run: Path) -> dict:
    return read_json_file(run, BEST_JSON, _sidecar, "a checkpoint sidecar")


def _checkpoint(doc: HtmlDocument, meta: dict, _run: Path) -> None:
    doc.subsection("Model")
    doc.paragraph(f"{meta['model']} trained on {meta['dataset']}: best test accuracy {100 * meta['accuracy']:.2f} % "
                  f"at epoch {meta['epoch']}.")


def _load_metrics(run: Path) -> list[list[str]]:
    """The rows of ``metrics.csv``, header first: at least one row below it and at most ``MAX_ITEMS``, all as
    long as the header."""
    with open(run / METRICS_CSV, newline="", encoding="utf-8") as fh:
        rows = list(itertools.islice(csv.reader(fh), MAX_ITEMS + 2))
    if len(rows) < 2:
        raise ValueError("no rows")
    if len(rows) > MAX_ITEMS + 1:
        raise ValueError(f"more than {MAX_ITEMS:,} rows")
    if any(len(row) != len(rows[0]) for row in rows[1:]):
        raise ValueError("rows of different lengths")
    return rows


def _metrics(doc: HtmlDocument, rows: list[list[str]], _run: Path) -> None:
    header, body = rows[0], rows[1:]
    doc.subsection("Training")
    doc.table([shorten(name) for name in header], [[_number(cell) for cell in row] for row in body],
              caption="per-epoch metrics")


def _number(cell: str) -> object:
    try:
        return int(cell)
    except ValueError:
        try:
            return float(cell)
        except ValueError:
            return shorten(cell)


def _curve(doc: HtmlDocument, curve: Curve, run: Path) -> None:
    verdicts = find_redundant(curve)
    doc.subsection("Modularity curve")
    ax = curve.plot(ax=curve_axes(len(curve.layers)))
    doc.figure(ax.figure, caption="mean Q per layer with a ±1 std band over the draws; dashed: shuffled labels; "
               "dotted: the ceiling 1 - 1/C")
    mean = curve.mean
    redundant = [label(v.layer) for v in verdicts if v.verdict != "keep"]
    top = int(np.nanargmax(mean))
    doc.paragraph(f"Q goes from {mean[0]:.4f} ({label(curve.layers[0])}) to {mean[-1]:.4f} "
                  f"({label(curve.layers[-1])}) over {len(curve.layers)} layers; highest {mean[top]:.4f} at "
                  f"{label(curve.layers[top])}. "
                  + (f"Plateau or drop (redundant): {', '.join(redundant)}." if redundant
                     else "Every layer adds modularity beyond the noise."))
    header = ["#", "layer", "Q mean", "std", "increment", "± se", "verdict"]
    rows = [[i, v.layer, mean[i], curve.std[i], v.increment, v.noise, v.verdict] for i, v in enumerate(verdicts)]
    if curve.z is not None:
        header += ["null Q", "z"]
        rows = [[*row, curve.null_mean[i], curve.z[i]] for i, row in enumerate(rows)]
    doc.table(header, rows, caption=f"per layer: mean Q over {_draws(curve.config, len(curve.values))}, increment "
              "over the previous layer with its paired standard error, and the verdict of find_redundant (band: "
              "max(2 se, half the curve's mean rise per layer))")
    doc.download(f"{run.name}-verdicts.csv", csv_text(header, rows), label="verdicts.csv")


def _views(doc: HtmlDocument, views: Views, _run: Path) -> None:
    method = shorten(str(views.config.get("method", "?")))
    doc.subsection("Samples in 2-D and their kNN graphs")
    doc.figure(views.figure(),
               caption=f"{method} embedding of {len(views.views[0].labels)} samples coloured by class "
                       f"(top) and the k={views.config.get('k', '?')} nearest-neighbour graph on the same positions, "
                       "edges across classes in red (bottom)")
    n = len(views.views[0].labels)
    doc.table(["layer", "Q", "edge weight inside classes"], [[v.layer, v.q, v.intra_fraction] for v in views.views],
              caption=f"Q of each view's graph: one draw of {n} samples, so it differs from the curve's Q, which is "
                      "the mean over its draws of as many samples as the curve's table says")


def _draws(config: dict, repeats: int) -> str:
    """``"5 draws of 1,000 samples (100 per class)"``, from what the curve's config records."""
    size, per_class = config.get("samples_per_draw"), config.get("n_per_class")
    if not isinstance(size, int) or not isinstance(per_class, int):
        return f"{repeats} draws"
    return f"{repeats} draw{'s' if repeats != 1 else ''} of {size:,} samples ({per_class} per class)"


def _dynamics(doc: HtmlDocument, dynamics: Dynamics, _run: Path) -> None:
    doc.subsection("Training dynamics")
    doc.figure(dynamics.figure(), caption="Q of every layer over the epochs (left) beside the test accuracy (right)")
    header = ["", *(f"epoch {epoch}" for epoch in dynamics.epochs)]
    rows = [["test accuracy", *dynamics.test_acc], *([name, *column] for name, column in
                                                      zip(dynamics.layers, dynamics.mean.T))]
    doc.table(header, rows, caption="test accuracy and mean Q of every layer at each tracked epoch")


def _attack(doc: HtmlDocument, result: AdversarialCurves, _run: Path) -> None:
    summary = result.summary
    attack = shorten(result.label, limit=TITLE_CHARS)
    doc.subsection(f"Clean vs {attack}")
    ax = result.plot(ax=curve_axes(len(result.clean.layers)))
    doc.figure(ax.figure, caption="clean and attacked curves on the same draws, true labels as communities")
    index = result.parting_index()
    parted = ("the curves do not part" if index is None
              else f"the curves part at layer {index} ({label(result.clean.layers[index])})")
    last_clean, last_attacked = result.clean.mean[-1], result.attacked.mean[-1]
    doc.paragraph(f"{attack}: {summary['n_flipped']} of {summary['n_correct']} correctly classified samples "
                  f"flipped (success rate {_percent(summary['success_rate'])}); {parted}. Last layer: clean Q "
                  f"{last_clean:.4f}, attacked {last_attacked:.4f} ({last_attacked - last_clean:+.4f}).")
    header = ["#", "layer", "clean Q", "attacked Q", "gap", "± se"]
    rows = [[i, name, result.clean.mean[i], result.attacked.mean[i], result.gap[i], result.gap_se[i]]
            for i, name in enumerate(result.clean.layers)]
    doc.table(header, rows)


def _percent(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f} %"


def _compare(doc: HtmlDocument, comparison: LayerComparison, _run: Path) -> None:
    doc.subsection("Layer difference D beside linear CKA")
    doc.figure(comparison.figure(), caption="D_ij = |Q_i - Q_j| (left; small = alike) and linear CKA (right; high = "
               "alike) between all pairs of layers, on the same samples")
    d, cka = comparison.d, comparison.cka
    pairs = ~np.eye(*d.shape, dtype=bool) if comparison.same_model else np.ones(d.shape, dtype=bool)
    if pairs.sum() > 2 and np.std(d[pairs]) > 0 and np.std(cka[pairs]) > 0:
        r = np.corrcoef(d[pairs], cka[pairs])[0, 1]
        doc.paragraph(f"Across {int(pairs.sum())} layer pairs, D and CKA correlate with r = {r:.3f} (negative: "
                      "pairs with similar modularity also have similar representations).")


def _pruning(doc: HtmlDocument, comparison: PruningComparison, _run: Path) -> None:
    doc.subsection("Pruning: methods compared at the same budget")
    ax = comparison.plot(ax=new_axes((6.4, 4.2), interactive=False))
    doc.figure(ax.figure, caption="test accuracy after fine-tuning (mean ± std over seeds) against the "
               "FLOPs each method removed")
    header = ["method", "removed", "params", "MACs", "FLOPs", "latency (ms)", "acc. pruned", "acc. fine-tuned",
              "± std", "layers removed"]
    table = [[r["method"], r["n_removed"], r["params"], r["macs"], r["flops"], r["latency_ms"], r["acc_pruned_mean"],
              r["acc_mean"], r["acc_std"], " ".join(r["layers_removed"])] for r in comparison.rows]
    doc.table(header, table)


def _matched(doc: HtmlDocument, study: MatchedComparison, _run: Path) -> None:
    doc.subsection("Pruning: methods compared at matched budgets")
    for match in dict.fromkeys(row["match"] for row in study.rows):
        doc.figure(study.figure(match), caption=f"test accuracy (mean ± std over seeds) against the share of "
                   f"{match} actually removed, budgets matched by {match}; grey: the Pareto front")
    header = ["match", "retrain", "budget", "method", "n", "acc. mean", "± std", "FLOPs removed", "params removed",
              "Δ vs modularity", "p (t-test)", "p (sign flip)"]
    rows = []
    for s in study.summary():
        test = s["vs_modularity"] or {}
        rows.append([s["match"], s["retrain"], s["budget"], s["method"], s["n"], s["acc_mean"], s["acc_std"],
                     s["flops_removed"], s["params_removed"], test.get("mean"), test.get("p_t"), test.get("p_sign")])
    doc.table(header, rows, caption="per budget: accuracy over seeds and the paired difference to modularity")
    pooled = [[p["match"], p["retrain"], p["method"], p["n"], p["mean"], p["std"], p["p_t"], p["p_sign"],
               p["budgets"], p["p_budget"]] for p in study.pooled()]
    doc.table(["match", "retrain", "method", "pairs", "Δ vs modularity", "± std", "p (t-test)", "p (sign flip)",
               "budgets", "p (budget as unit)"],
              pooled, caption="over every budget and seed: the paired difference to modularity; last column: the "
              "t-test on the per-budget mean differences")


def _plan(doc: HtmlDocument, plan: Plan, _run: Path) -> None:
    doc.subsection("Pruning plan")
    doc.paragraph(f"{label('?' if plan.method is None else plan.method)}: remove {len(plan.remove)} unit(s): "
                  f"{', '.join(map(label, plan.remove)) or 'none'}.")


def _evaluation(doc: HtmlDocument, result: Evaluation, _run: Path) -> None:
    shown = {key: shorten(str(getattr(result, key))) for key in ("weights", "dataset", "split")}
    doc.subsection("Evaluation")
    doc.paragraph(f"accuracy {100 * result.accuracy:.2f} % ({result.correct}/{result.n}) of "
                  f"{shown['weights']} on {shown['dataset']} ({shown['split']} split)")


def _sweep(doc: HtmlDocument, table: SweepTable, _run: Path) -> None:
    items: dict[str, list[dict]] = {}
    for row in table.rows:
        items.setdefault(row["item"], []).append(row)
    failed = table.failed
    doc.subsection("Sweep")
    if len(failed) < len(items):
        n_layers = 1 + max(row["index"] for row in table.rows if row["index"] is not None)
        doc.figure(table.plot(ax=curve_axes(n_layers)).figure,
                   caption="mean Q per layer of every group of items (varying options other than the seed), "
                   "with a band of ±1 std across the group's items")
    doc.paragraph(f"{len(items)} items, {len(failed)} failed; varying: {', '.join(table.options) or 'nothing'}.")
    header = ["item", *table.options, "status", "layers", "Q first", "Q last", "Q max", "error"]
    rows = []
    for item, item_rows in items.items():
        q = [row["q_mean"] for row in item_rows if row["q_mean"] is not None]
        first = item_rows[0]
        rows.append([item, *(first[key] for key in table.options), first["status"],
                     sum(row["layer"] is not None for row in item_rows), q[0] if q else None, q[-1] if q else None,
                     max(q) if q else None, first["error"]])
    doc.table(header, rows, caption="per item: the first, last and highest mean Q over its layers")


# Every file the report recognises, in the order shown: its result type's loader, its section, its downloads.
KNOWN_FILES: dict[str, Section[Any]] = {
    BEST_JSON: Section(_load_sidecar, _checkpoint, (BEST_JSON,)),
    METRICS_CSV: Section(_load_metrics, _metrics, (METRICS_CSV,)),
    CURVE_JSON: Section(Curve.load, _curve, (CURVE_JSON, CURVE_CSV)),
    EMBEDDING_JSON: Section(Views.load, _views, (EMBEDDING_JSON,)),
    DYNAMICS_JSON: Section(Dynamics.load, _dynamics, (DYNAMICS_JSON,)),
    ATTACK_JSON: Section(AdversarialCurves.load, _attack, (ATTACK_JSON, ATTACK_CSV)),
    COMPARE_JSON: Section(LayerComparison.load, _compare, (COMPARE_JSON, D_CSV, CKA_CSV)),
    PLAN_JSON: Section(Plan.load, _plan, (PLAN_JSON,)),
    COMPARISON_JSON: Section(PruningComparison.load, _pruning, (COMPARISON_JSON, COMPARISON_CSV)),
    MATCHED_JSON: Section(MatchedComparison.load, _matched, (MATCHED_JSON, MATCHED_CSV)),
    EVAL_JSON: Section(Evaluation.load, _evaluation, (EVAL_JSON,)),
    RESULTS_CSV: Section(SweepTable.load, _sweep, (RESULTS_CSV,)),
}


def _show(doc: HtmlDocument, run: Path, name: str) -> None:
    """The section of file ``name`` of ``run``: read by its loader, shown, its files offered for download."""
    section = KNOWN_FILES[name]
    section.show(doc, section.load(run), run)
    _download(doc, run, *section.downloads)


def _add_run(doc: HtmlDocument, run: Path, problems: list[str]) -> list[str]:
    """Add one run directory's section; returns the names of the files shown."""
    if not run.is_dir():
        problems.append(f"{run}: no such directory")
        return []
    present = [name for name in KNOWN_FILES if (run / name).is_file()]
    if not present:
        problems.append(f"{run}: holds none of {', '.join(KNOWN_FILES)}")
        return []
    try:
        _check_together(run, present)
    except ReportError as err:
        problems.append(str(err))
        return []
    doc.section(f"Run {run.name}")
    doc.paragraph(f"{run} — found: {', '.join(present)}")
    shown = []
    for name in present:
        try:
            with doc.all_or_nothing():
                _show(doc, run, name)
            shown.append(name)
        except Exception as err:  # whatever one file does, the others are still shown; it is listed, not hidden
            reason = _reason(err)
            problems.append(f"{run / name}: unreadable ({reason})")
            doc.notice(f"{name} could not be read and is left out: {reason}", kind="error")
    return shown


def _check_together(run: Path, present: list[str]) -> None:
    """ReportError unless ``run``'s files come from one run: those its run record lists, with their bytes
    (:func:`~layermod.io.runs.check_run`); without a record, a curve and 2-D views on the same graph and seed."""
    check_run(run)
    if CURVE_JSON not in present or EMBEDDING_JSON not in present or (run / RUN_JSON).exists():
        return
    try:
        curve, views = Curve.load(run), Views.load(run)
    except LayermodError:  # each is reported on its own
        return
    for key in [*GraphConfig().to_dict(), "seed"]:
        if key in curve.config and key in views.config and curve.config[key] != views.config[key]:
            raise ReportError(f"{run}: {EMBEDDING_JSON} and {CURVE_JSON} come from different runs ({key} "
                              f"{views.config[key]!r} vs {curve.config[key]!r}); run the command that wrote it again")


def _reason(err: Exception) -> str:
    """One line on why an item failed: a :class:`LayermodError`'s message (whose quotes of file content are
    already cut), else the error's type and its message cut to :data:`~layermod.io.validate.REASON_CHARS`."""
    if isinstance(err, LayermodError):
        return str(err)
    message = shorten(str(err), limit=REASON_CHARS)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, title: str | None = None) -> list[str]:
    """Write one HTML page gathering ``runs`` into ``out``; returns the problems (one line each) met on the way.

    Raises:
        ReportError: when no run directory holds anything readable (nothing is written then).
    """
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"out={out} is a directory; give the HTML file to write, e.g. {out / REPORT_HTML}")
    paths = [Path(run) for run in runs]
    doc = HtmlDocument(title or "layermod report: " + ", ".join(path.name or str(path) for path in paths),
                       subtitle="Layer-by-layer graph modularity: where classes separate, where layers stop helping.")
    problems: list[str] = []
    shown = [_add_run(doc, path, problems) for path in paths]
    if not any(shown):
        raise ReportError(f"nothing to report: {'; '.join(problems)}; point at directories written by layermod "
                          "commands (curve, attack, compare, train, prune, sweep)")
    if problems:
        doc.section("Left out")
        for problem in problems:
            doc.notice(problem, kind="error")
    doc.data("contents", {"runs": [{"path": str(path), "shown": names} for path, names in zip(paths, shown)],
                          "left_out": problems})
    ensure_writable_dir(out.parent)
    doc.write(out)
    return problems
