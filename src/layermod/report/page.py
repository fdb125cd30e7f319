"""Run directories -> one self-contained HTML page (``layermod report``).

Every layermod command writes one run directory with JSON as the source of truth. The report reads what each
directory holds, redraws every figure from the JSON (so pictures and numbers agree), and embeds the files the
numbers came from as downloads, so the page needs no network and nothing beside it. A JSON block
(``<script type="application/json" id="data-contents">``) lists what each run showed and what was left out.

What is recognised, in the order shown: the checkpoint sidecar (``best.json``) and ``metrics.csv``, the curve
with its redundancy verdicts (``curve.json``), 2-D views and kNN graphs (``embedding.json``), training
dynamics (``dynamics.json``), clean vs attacked curves (``attack.json``), D and CKA heat maps
(``compare.json``), pruning (``plan.json``, ``comparison.json``) and ``eval.json``.

Bad input, on purpose: a run directory that is missing or holds none of these files, and any file that cannot
be read, is reported (a notice in the page and one line in the returned list) while everything readable is
still shown. Only when nothing at all is readable is no page written (:class:`ReportError`).

* **Checked by the loaders.** Every file is read by its result type's loader, which refuses what cannot be
  (Q outside modularity's range, lengths that disagree, accuracies above 1, absurd sizes; see
  :mod:`layermod.validate`) in one line naming the file; the sidecar and ``eval.json`` are checked here.
* **One file fails alone.** Each file is added inside :meth:`HtmlDocument.all_or_nothing`, and *any* exception
  (a memory error while drawing included) leaves that file out whole, with a notice, and goes on with the next;
  a reason from outside layermod is cut to :data:`~layermod.validate.REASON_CHARS` characters.
* **Names as they are.** Figures draw layer and class names literally, shortened; tables show them whole.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from layermod.adversarial.curves import AdversarialCurves
from layermod.analysis.compare import LayerComparison
from layermod.analysis.curve import Curve
from layermod.analysis.dynamics import Dynamics
from layermod.analysis.views import load_views, plot_views
from layermod.errors import LayermodError, ReportError
from layermod.io.files import csv_text, ensure_writable_dir, read_json_file
from layermod.report.html import HtmlDocument
from layermod.pruning.study import plot_comparison, read_comparison
from layermod.analysis.redundancy import find_redundant, read_plan
from layermod.analysis.curve_plot import curve_axes, plot_curves
from layermod.io.validate import MAX_ITEMS, REASON_CHARS, TITLE_CHARS, label, mapping, number, required, shorten, text

__all__ = ["KNOWN_FILES", "write_report"]


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
        "model": f"{text(meta.get('arch', 'model'), 'arch')}({shorten(arguments, TITLE_CHARS)})",
        "dataset": text(meta.get("dataset", "?"), "dataset"),
        "accuracy": number(meta.get("best_accuracy", meta.get("accuracy")), "best_accuracy", 0, 1),
        "epoch": number(meta.get("best_epoch", meta.get("epoch")), "best_epoch", 0, integer=True),
    }


def _checkpoint(doc: HtmlDocument, run: Path) -> None:
    meta = read_json_file(run, "best.json", _sidecar, "a checkpoint sidecar")
    doc.subsection("Model")
    doc.paragraph(f"{meta['model']} trained on {meta['dataset']}: best test accuracy {100 * meta['accuracy']:.2f} % "
                  f"at epoch {meta['epoch']}.")
    _download(doc, run, "best.json")


def _metrics(doc: HtmlDocument, run: Path) -> None:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = list(itertools.islice(csv.reader(fh), MAX_ITEMS + 2))
    if len(rows) < 2:
        raise ValueError("no rows")
    if len(rows) > MAX_ITEMS + 1:
        raise ValueError(f"more than {MAX_ITEMS:,} rows")
    header, body = rows[0], rows[1:]
    if any(len(row) != len(header) for row in body):
        raise ValueError("rows of different lengths")
    doc.subsection("Training")
    doc.table([shorten(name) for name in header], [[_number(cell) for cell in row] for row in body],
              caption="per-epoch metrics")
    _download(doc, run, "metrics.csv")


def _number(cell: str) -> object:
    try:
        return int(cell)
    except ValueError:
        try:
            return float(cell)
        except ValueError:
            return shorten(cell)


def _curve(doc: HtmlDocument, run: Path) -> None:
    curve = Curve.load(run)
    verdicts = find_redundant(curve)
    doc.subsection("Modularity curve")
    ax = plot_curves([curve], ax=curve_axes(len(curve.layers)))
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
    doc.table(header, rows, caption="per layer: mean Q, increment over the previous layer with its paired standard "
              "error, and the verdict of find_redundant (z = 2, min gain 0.005)")
    doc.download(f"{run.name}-verdicts.csv", csv_text(header, rows), label="verdicts.csv")
    _download(doc, run, "curve.json", "curve.csv")


def _views(doc: HtmlDocument, run: Path) -> None:
    views, class_names, config = load_views(run)
    method = shorten(str(config.get("method", "?")))
    doc.subsection("Samples in 2-D and their kNN graphs")
    doc.figure(plot_views(views, class_names=class_names),
               caption=f"{method} embedding of {len(views[0].labels)} samples coloured by class "
                       f"(top) and the k={config.get('k', '?')} nearest-neighbour graph on the same positions, "
                       "edges across classes in red (bottom)")
    doc.table(["layer", "Q", "edge weight inside classes"], [[v.layer, v.q, v.intra_fraction] for v in views])
    _download(doc, run, "embedding.json")


def _dynamics(doc: HtmlDocument, run: Path) -> None:
    dynamics = Dynamics.load(run)
    doc.subsection("Training dynamics")
    doc.figure(dynamics.plot(), caption="Q of every layer over the epochs (left) beside the test accuracy (right)")
    header = ["", *(f"epoch {epoch}" for epoch in dynamics.epochs)]
    rows = [["test accuracy", *dynamics.test_acc], *([name, *column] for name, column in
                                                      zip(dynamics.layers, dynamics.mean.T))]
    doc.table(header, rows, caption="test accuracy and mean Q of every layer at each tracked epoch")
    _download(doc, run, "dynamics.json")


def _attack(doc: HtmlDocument, run: Path) -> None:
    result = AdversarialCurves.load(run)
    summary = result.summary
    attack = shorten(result.label, TITLE_CHARS)
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
    _download(doc, run, "attack.json", "attack.csv")


def _percent(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f} %"


def _compare(doc: HtmlDocument, run: Path) -> None:
    comparison = LayerComparison.load(run)
    doc.subsection("Layer difference D beside linear CKA")
    doc.figure(comparison.plot(), caption="D_ij = |Q_i - Q_j| (left; small = alike) and linear CKA (right; high = "
               "alike) between all pairs of layers, on the same samples")
    d, cka = comparison.d, comparison.cka
    pairs = ~np.eye(*d.shape, dtype=bool) if comparison.same_model else np.ones(d.shape, dtype=bool)
    if pairs.sum() > 2 and np.std(d[pairs]) > 0 and np.std(cka[pairs]) > 0:
        r = np.corrcoef(d[pairs], cka[pairs])[0, 1]
        doc.paragraph(f"Across {int(pairs.sum())} layer pairs, D and CKA correlate with r = {r:.3f} (negative: "
                      "pairs with similar modularity also have similar representations).")
    _download(doc, run, "compare.json", "d.csv", "cka.csv")


def _pruning(doc: HtmlDocument, run: Path) -> None:
    rows = read_comparison(run)
    doc.subsection("Pruning: methods compared at the same budget")
    doc.figure(plot_comparison(rows), caption="test accuracy after fine-tuning (mean ± std over seeds) against the "
               "FLOPs each method removed")
    header = ["method", "removed", "params", "MACs", "FLOPs", "latency (ms)", "acc. pruned", "acc. fine-tuned",
              "± std", "layers removed"]
    table = [[r["method"], r["n_removed"], r["params"], r["macs"], r["flops"], r["latency_ms"], r["acc_pruned_mean"],
              r["acc_mean"], r["acc_std"], " ".join(r["layers_removed"])] for r in rows]
    doc.table(header, table)
    _download(doc, run, "comparison.json", "comparison.csv")


def _plan(doc: HtmlDocument, run: Path) -> None:
    plan = read_plan(run)
    doc.subsection("Pruning plan")
    doc.paragraph(f"{label(plan.get('method', '?'))}: remove {len(plan['remove'])} unit(s): "
                  f"{', '.join(map(label, plan['remove'])) or 'none'}.")
    _download(doc, run, "plan.json")


def _eval_result(data: object) -> dict:
    """An ``eval.json`` checked: the accuracy in [0, 1] is ``correct / n`` of integers 0 <= correct <= n."""
    result = mapping(data, "the evaluation")
    accuracy = number(required(result, "accuracy"), "accuracy", 0, 1)
    correct = number(required(result, "correct"), "correct", 0, integer=True)
    n = number(required(result, "n"), "n", 1, integer=True)
    if correct > n or abs(accuracy - correct / n) > 1e-9:
        raise ValueError(f"accuracy {accuracy:g} with {correct} correct of {n} samples cannot be")
    return result


def _evaluation(doc: HtmlDocument, run: Path) -> None:
    result = read_json_file(run, "eval.json", _eval_result, "an evaluation")
    shown = {key: shorten(str(result.get(key))) for key in ("weights", "dataset", "split")}
    doc.subsection("Evaluation")
    doc.paragraph(f"accuracy {100 * result['accuracy']:.2f} % ({result['correct']}/{result['n']}) of "
                  f"{shown['weights']} on {shown['dataset']} ({shown['split']} split)")
    _download(doc, run, "eval.json")


KNOWN_FILES: dict[str, Callable[[HtmlDocument, Path], None]] = {
    "best.json": _checkpoint,
    "metrics.csv": _metrics,
    "curve.json": _curve,
    "embedding.json": _views,
    "dynamics.json": _dynamics,
    "attack.json": _attack,
    "compare.json": _compare,
    "plan.json": _plan,
    "comparison.json": _pruning,
    "eval.json": _evaluation,
}


def _add_run(doc: HtmlDocument, run: Path, problems: list[str]) -> list[str]:
    """Add one run directory's section; returns the names of the files shown."""
    if not run.is_dir():
        problems.append(f"{run}: no such directory")
        return []
    present = [name for name in KNOWN_FILES if (run / name).is_file()]
    if not present:
        problems.append(f"{run}: holds none of {', '.join(KNOWN_FILES)}")
        return []
    doc.section(f"Run {run.name}")
    doc.paragraph(f"{run} — found: {', '.join(present)}")
    shown = []
    for name in present:
        try:
            with doc.all_or_nothing():
                KNOWN_FILES[name](doc, run)
            shown.append(name)
        except Exception as err:  # whatever one file does, the others are still shown; it is listed, not hidden
            reason = _reason(err)
            problems.append(f"{run / name}: unreadable ({reason})")
            doc.notice(f"{name} could not be read and is left out: {reason}", kind="error")
    return shown


def _reason(err: Exception) -> str:
    """One line on why an item failed: a :class:`LayermodError`'s message (whose quotes of file content are
    already cut), else the error's type and its message cut to :data:`~layermod.validate.REASON_CHARS`."""
    if isinstance(err, LayermodError):
        return str(err)
    message = shorten(str(err), REASON_CHARS)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, title: str | None = None) -> list[str]:
    """Write one HTML page gathering ``runs`` into ``out``; returns the problems (one line each) met on the way.

    Raises:
        ReportError: when no run directory holds anything readable (nothing is written then).
    """
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"--out {out} is a directory; give the HTML file to write, e.g. {out / 'report.html'}")
    paths = [Path(run) for run in runs]
    doc = HtmlDocument(title or "layermod report: " + ", ".join(path.name or str(path) for path in paths),
                       subtitle="Layer-by-layer graph modularity: where classes separate, where layers stop helping.")
    problems: list[str] = []
    shown = [_add_run(doc, path, problems) for path in paths]
    if not any(shown):
        raise ReportError(f"nothing to report: {'; '.join(problems)}; point at directories written by layermod "
                          "commands (curve, attack, compare, train, prune)")
    if problems:
        doc.section("Left out")
        for problem in problems:
            doc.notice(problem, kind="error")
    doc.data("contents", {"runs": [{"path": str(path), "shown": names} for path, names in zip(paths, shown)],
                          "left_out": problems})
    ensure_writable_dir(out.parent)
    doc.write(out)
    return problems
