"""The result of a matched-budget pruning study: accuracy against the share of FLOPs or parameters removed.

A :class:`MatchedComparison` holds one row per (method, matched cost, budget, retraining, seed), as
:func:`layermod.pruning.budgets.matched_comparison` measured them, and derives everything else from the rows:

* :meth:`~MatchedComparison.summary`: per (match, retrain, budget, method) the mean and std over seeds of the
  accuracy and of the shares removed, and the paired difference to ``modularity`` seed by seed
  (:func:`layermod.measure.stats.paired_test`);
* :meth:`~MatchedComparison.pooled`: per (match, retrain, method) the paired difference to ``modularity`` over
  every budget and seed at once (pairs matched by budget and seed): the answer to "does the curve beat this rule
  on this network". The seeds of one budget retrain the same pruned networks, so they share whatever that
  budget's choice of layers does and are not independent of each other; ``p_budget`` therefore tests with the
  budget as the unit: a one-sample t-test on the per-budget mean differences (B budgets, B - 1 degrees of
  freedom), which is the test of the mean in a random-intercept model with budget as the random effect when
  every budget has the same seeds and that model's budget variance is not estimated as 0. The t-test and the
  sign-flip test over all pairs stay beside it;
* :meth:`~MatchedComparison.over_networks`: the studies of several independently trained base networks of one
  architecture as one comparison, each row tagged with its ``network``; pairs are matched by network and seed, and
  ``p_network`` tests with the base network as the unit;
* :meth:`~MatchedComparison.plot`: one figure per matched cost, a panel per retraining, a line per method
  (mean accuracy with std bars against the share actually removed), the unpruned reference dotted and the
  Pareto front (the points no other point beats in both accuracy and share removed) in grey.

Written as ``matched.json`` (rows, the model's cost, the settings; the source of truth), ``matched.csv`` (the
rows), ``matched.md`` (the summary tables) and ``pareto-flops.png`` / ``pareto-params.png``.
:meth:`MatchedComparison.load` checks every row and recomputes the summaries: nothing derived is read from the
file.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layermod.errors import PlanError
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png, write_csv, write_json
from layermod.io.rundir import MATCHED_CSV, MATCHED_JSON, MATCHED_MD, PARETO_PNG
from layermod.io.table import TableResult, new_axes
from layermod.io.validate import MAX_ITEMS, literal_text, mapping, number, required, shorten
from layermod.measure.stats import PairedTest, mean_test, paired_test
from layermod.pruning.choices import MATCHES, METHODS, RETRAINS
from layermod.pruning.study import check_removed

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MATCHES", "RETRAINS", "MatchedComparison"]

_REFERENCE = "modularity"
_COLUMNS = ["method", "match", "budget", "retrain", "seed", "n_removed", "params", "flops", "params_removed",
            "flops_removed", "acc_pruned", "acc"]


@dataclass(frozen=True, repr=False)
class MatchedComparison(TableResult):
    """Methods compared at matched budgets (see the module doc).

    Attributes:
        rows: dicts with method, match, budget, retrain, seed, layers_removed, n_removed, params, flops (of the
            pruned model, per sample), acc_pruned (before retraining) and acc (after).
        base: the unpruned model's ``{"params", "flops", "macs"}``.
        config: the settings (budgets, matches, retrains, seeds, the training configs, ...), recorded as given.
    """

    rows: list[dict]
    base: dict
    config: dict

    def removed(self, row: dict, cost: str) -> float:
        """Share of the unpruned model's ``cost`` that ``row``'s network lacks.

        Args:
            row: one of :attr:`rows`.
            cost: ``"flops"`` or ``"params"``.

        Returns:
            The share, at most 1.
        """
        return 1.0 - row[cost] / self.base[cost]

    def _groups(self) -> dict[tuple, list[dict]]:
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for row in self.rows:
            groups[(row["match"], row["retrain"], row["budget"], row["method"])].append(row)
        return groups

    def summary(self) -> list[dict]:
        """Per (match, retrain, budget, method), in the rows' order, the seeds' statistics.

        Returns:
            One dict per group: n, acc_mean, acc_std (ddof 1, 0 for one seed), n_removed, flops_removed and
                params_removed (means), and ``vs_modularity``: the paired difference ``acc - acc of modularity`` seed by
                seed (None for modularity itself or without it).
        """
        groups = self._groups()
        out = []
        for (match, retrain, budget, method), rows in groups.items():
            acc = [row["acc"] for row in rows]
            reference = groups.get((match, retrain, budget, _REFERENCE))
            test = None
            if method != _REFERENCE and reference is not None:
                test = _paired(rows, reference)
            out.append({"match": match, "retrain": retrain, "budget": budget, "method": method, "n": len(rows),
                        "acc_mean": float(np.mean(acc)), "acc_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                        "n_removed": float(np.mean([row["n_removed"] for row in rows])),
                        "flops_removed": float(np.mean([self.removed(row, "flops") for row in rows])),
                        "params_removed": float(np.mean([self.removed(row, "params") for row in rows])),
                        "vs_modularity": None if test is None else test.to_dict()})
        return out

    def pooled(self) -> list[dict]:
        """Per (match, retrain, method other than none and modularity): the paired difference to modularity.

        Pooled over every budget, base network and seed.

        Returns:
            One dict per group, ``{"match", "retrain", "method", **PairedTest.to_dict(), "budgets", "p_budget",
                "networks", "p_network"}``: ``budgets`` is the number of budgets with pairs, ``p_budget`` the two-sided
                p-value of the t-test on their mean differences; ``networks`` and ``p_network`` the same with the base
                network as the unit (None with fewer than 2 units or no spread between them).
        """
        groups = self._groups()
        pairs: dict[tuple, tuple[list, list]] = {}
        per_budget: dict[tuple, list[float]] = defaultdict(list)
        per_network: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for (match, retrain, budget, method), rows in groups.items():
            reference = groups.get((match, retrain, budget, _REFERENCE))
            if method in ("none", _REFERENCE) or reference is None:
                continue
            by_key = {_pair_key(row): row["acc"] for row in reference}
            mine, theirs = pairs.setdefault((match, retrain, method), ([], []))
            differences = []
            for row in rows:
                if _pair_key(row) in by_key:
                    mine.append(row["acc"])
                    theirs.append(by_key[_pair_key(row)])
                    differences.append(mine[-1] - theirs[-1])
                    per_network[(match, retrain, method)][row.get("network", 0)].append(differences[-1])
            if differences:
                per_budget[(match, retrain, method)].append(float(np.mean(differences)))
        out = []
        for (m, r, method), (a, b) in pairs.items():
            if not a:
                continue
            networks = [float(np.mean(d)) for d in per_network[(m, r, method)].values()]
            out.append({"match": m, "retrain": r, "method": method, **paired_test(a, b).to_dict(),
                        "budgets": len(per_budget[(m, r, method)]), "p_budget": mean_test(per_budget[(m, r, method)]),
                        "networks": len(networks), "p_network": mean_test(networks)})
        return out

    @classmethod
    def over_networks(cls, studies: Sequence[MatchedComparison]) -> MatchedComparison:
        """Studies of independently trained base networks of one architecture, as one comparison.

        Args:
            studies: one study per base network, each of one network, with the same base cost.

        Returns:
            The rows of every study, study ``i``'s tagged ``network: i``; the base cost they share; config
                ``{"networks": [each study's config]}``.

        Raises:
            PlanError: no studies, a study already pooled, or base costs that differ (not one architecture).
        """
        if not studies:
            raise PlanError("no studies to pool; pass one study per base network")
        first = studies[0].base
        rows = []
        for i, study in enumerate(studies):
            if any("network" in row for row in study.rows):
                raise PlanError(f"study {i} already pools several base networks; pass one study per network")
            if (study.base["params"], study.base["flops"]) != (first["params"], first["flops"]):
                raise PlanError(f"study {i} prunes a network of {study.base['params']:,} parameters and "
                                f"{study.base['flops']:,} FLOPs, study 0 one of {first['params']:,} and "
                                f"{first['flops']:,}; pool base networks of one architecture")
            rows += [{**row, "network": i} for row in study.rows]
        return cls(rows, dict(first), {"networks": [dict(study.config) for study in studies]})

    def markdown(self) -> str:
        """``matched.md``: a table per (match, retrain).

        Returns:
            The Markdown text: a row per method, a column per budget with the accuracy (mean ± std over seeds, %)
                and the share of the matched cost actually removed, then the difference to modularity pooled over
                budgets and seeds with its p-values (paired t-test and sign flip over all pairs; t-test with the budget
                as the unit, and with the base network as the unit when the rows hold several).
        """
        summary, pooled = self.summary(), {(p["match"], p["retrain"], p["method"]): p for p in self.pooled()}
        budgets = sorted({row["budget"] for row in self.rows if row["method"] != "none"})
        scoring = self.config.get("scoring")  # per method: what its scores took (studies that record it)
        several = len({row.get("network", 0) for row in self.rows}) > 1
        lines = []
        for match in dict.fromkeys(row["match"] for row in self.rows):
            for retrain in dict.fromkeys(row["retrain"] for row in self.rows):
                cells = {(s["method"], s["budget"]): s for s in summary
                         if s["match"] == match and s["retrain"] == retrain}
                base = cells.get(("none", 0.0))
                lines += [f"### {retrain}, budgets matched by {match}", ""]
                if base is not None:
                    lines += [f"Unpruned: {_pct(base['acc_mean'])} ± {_pct(base['acc_std'])} % "
                              f"(n = {base['n']}).", ""]
                lines.append("| method | " + " | ".join(f"{_pct(b, 0)} % of {match}" for b in budgets)
                             + " | Δ vs modularity, all budgets (p t-test; p sign-flip; p budgets"
                             + ("; p networks) |" if several else ") |")
                             + (" scoring |" if isinstance(scoring, dict) else ""))
                lines.append("|---|" + "---:|" * (len(budgets) + 1 + isinstance(scoring, dict)))
                for method in dict.fromkeys(m for m, b in cells if m != "none"):
                    row = [f"{_pct(c['acc_mean'])} ± {_pct(c['acc_std'])} ({_pct(c[match + '_removed'], 0)} %)"
                           if (c := cells.get((method, b))) else "–" for b in budgets]
                    p = pooled.get((match, retrain, method))
                    row.append("reference" if method == _REFERENCE else "–" if p is None else
                               f"{_signed(p['mean'])} ± {_pct(p['std'] or 0.0)} ({_p(p['p_t'])}; {_p(p['p_sign'])}; "
                               f"{_p(p['p_budget'])}" + (f"; {_p(p['p_network'])})" if several else ")"))
                    if isinstance(scoring, dict):
                        row.append(_cost(scoring.get(method)))
                    lines.append(f"| {method} | " + " | ".join(row) + " |")
                lines.append("")
        return "\n".join(lines)

    @literal_text
    def plot(self, *, ax: Axes | None = None, match: str = "flops", retrain: str | None = None) -> Axes:
        """Accuracy against the share of ``match`` removed, a line per method with the Pareto front.

        See the module doc for the front.

        Args:
            ax: the Axes to draw into (default: a new figure's).
            match: the cost matched, one of :data:`MATCHES`.
            retrain: the retraining (default: the first).

        Returns:
            The Axes.

        Raises:
            PlanError: no panel for ``match`` and ``retrain``.
        """
        retrains = list(dict.fromkeys(row["retrain"] for row in self.rows))
        retrain = retrains[0] if retrain is None else retrain
        if match not in MATCHES or retrain not in retrains:
            raise PlanError(f"no panel for match={match!r}, retrain={retrain!r}; match is one of "
                            f"{', '.join(MATCHES)}, retrain one of {', '.join(retrains)}")
        ax = ax if ax is not None else new_axes((5.2, 4.2))
        cells = [s for s in self.summary() if s["match"] == match and s["retrain"] == retrain]
        for method in dict.fromkeys(s["method"] for s in cells if s["method"] != "none"):
            points = sorted((s for s in cells if s["method"] == method), key=lambda s: s["budget"])
            ax.errorbar([100 * s[match + "_removed"] for s in points], [100 * s["acc_mean"] for s in points],
                        yerr=[100 * s["acc_std"] for s in points], marker="o", ms=4, capsize=2,
                        lw=2.2 if method == _REFERENCE else 1.0, label=method)
        for s in cells:
            if s["method"] == "none":
                ax.axhline(100 * s["acc_mean"], color="black", ls=":", lw=1, label="unpruned")
        front = _front([(100 * s[match + "_removed"], 100 * s["acc_mean"]) for s in cells if s["method"] != "none"])
        ax.plot(*zip(*front), color="grey", lw=4, alpha=0.3, label="Pareto front")
        ax.set_xlabel(f"{'FLOPs' if match == 'flops' else 'parameters'} removed (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{retrain}, matched by {match}")
        ax.grid(alpha=0.3)
        return ax

    @literal_text
    def figure(self, match: str) -> Figure:
        """The whole picture ``PARETO_PNG[match]`` holds: :meth:`plot` of ``match``, a panel per retraining.

        Args:
            match: the cost matched, one of :data:`MATCHES`.

        Returns:
            A plain matplotlib Figure with one legend.
        """
        from matplotlib.figure import Figure

        retrains = list(dict.fromkeys(row["retrain"] for row in self.rows))
        figure = Figure(figsize=(5.2 * len(retrains), 4.2))
        for i, retrain in enumerate(retrains):
            self.plot(ax=figure.add_subplot(1, len(retrains), i + 1), match=match, retrain=retrain)
        figure.axes[-1].legend(fontsize=7, loc="lower left")
        figure.tight_layout()
        return figure

    def _table(self) -> tuple[list[str], list[list]]:
        return _COLUMNS, [[*(row[c] for c in _COLUMNS[:8]), self.removed(row, "params"), self.removed(row, "flops"),
                           row["acc_pruned"], row["acc"]] for row in self.rows]

    def to_dict(self) -> dict:
        """JSON-ready ``{"rows", "base", "config", "summary", "pooled"}`` (the last two for readers only).

        Returns:
            The dict.
        """
        return {"rows": list(self.rows), "base": dict(self.base), "config": dict(self.config),
                "summary": self.summary(), "pooled": self.pooled()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write matched.csv, .md, the Pareto figures and, last, matched.json into ``path``.

        Args:
            path: the run directory (created).

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        write_csv(out / MATCHED_CSV, [*_COLUMNS, "layers_removed"],
                  ([row["method"], row["match"], row["budget"], row["retrain"], row["seed"], row["n_removed"],
                    row["params"], row["flops"], self.removed(row, "params"), self.removed(row, "flops"),
                    row["acc_pruned"], row["acc"], " ".join(row["layers_removed"])] for row in self.rows))
        with atomic_path(out / MATCHED_MD) as tmp:
            tmp.write_text(self.markdown())
        for match in dict.fromkeys(row["match"] for row in self.rows):
            save_png(self.figure(match), out / PARETO_PNG[match])
        write_json(out / MATCHED_JSON, self.to_dict())
        return out

    @classmethod
    def from_dict(cls, data: object) -> MatchedComparison:
        """A comparison read from a file: the rows and the base cost, checked.

        At most MAX_ITEMS rows, each checked: known method, match and retraining, budget in [0, 1), seed and
        counts integers >= 0, as many names as n_removed, params and flops positive integers, accuracies in [0, 1].

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`MatchedComparison`.

        Raises:
            ValueError: naming the first problem.
        """
        data = mapping(data, "the matched comparison")
        rows = required(data, "rows")
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ITEMS:
            raise ValueError(f"rows is not a list of 1 to {MAX_ITEMS:,} rows")
        base = mapping(required(data, "base"), "base")
        for key in ("params", "flops"):
            number(required(base, key), f"base.{key}", low=1, integer=True)
        config = mapping(data.get("config", {}), "config")
        return cls([_row(i, row) for i, row in enumerate(rows)], dict(base), dict(config))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MatchedComparison:
        """Read ``matched.json`` (or the one inside a run directory), checked by :meth:`from_dict`.

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`MatchedComparison`.

        Raises:
            ReportError: the file is missing, unreadable or malformed (one line naming it).
        """
        return read_json_file(path, MATCHED_JSON, cls.from_dict, "a matched pruning comparison")


def _pair_key(row: dict) -> tuple[int, int]:
    """What pairs two methods' rows of one budget: the base network and the retraining seed."""
    return row.get("network", 0), row["seed"]


def _paired(rows: list[dict], reference: list[dict]) -> PairedTest | None:
    by_key = {_pair_key(row): row["acc"] for row in reference}
    pairs = [(row["acc"], by_key[_pair_key(row)]) for row in rows if _pair_key(row) in by_key]
    return paired_test(*zip(*pairs)) if pairs else None


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (removed, accuracy) that no other point beats in both, by increasing share removed."""
    front = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front[::-1]


def _pct(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2g}"


def _row(i: int, row: object) -> dict:
    """``rows[i]`` of a matched comparison, checked (see :meth:`MatchedComparison.from_dict`)."""
    where = f"rows[{i}]"
    row = mapping(row, where)
    for key, known in (("method", METHODS), ("match", MATCHES), ("retrain", RETRAINS)):
        if required(row, key) not in known:
            raise ValueError(f"{where}.{key} is {shorten(repr(row[key]))}, not one of {', '.join(known)}")
    number(required(row, "budget"), f"{where}.budget", low=0, high=1)
    if row["budget"] >= 1:
        raise ValueError(f"{where}.budget is {row['budget']}, not below 1")
    number(required(row, "seed"), f"{where}.seed", low=0, integer=True)
    if "network" in row:
        number(row["network"], f"{where}.network", low=0, integer=True)
    check_removed(row, where)
    for key in ("params", "flops"):
        number(required(row, key), f"{where}.{key}", low=1, integer=True)
    for key in ("acc_pruned", "acc"):
        number(required(row, key), f"{where}.{key}", low=0, high=1)
    return dict(row)


def _cost(spent: object) -> str:
    """``"3.0 s, 1 pass"``: a method's scoring time and probe passes, or "–" for a method with no scores."""
    if not isinstance(spent, dict) or not isinstance(spent.get("seconds"), (int, float)):
        return "–"
    passes = spent.get("probe_passes", 0)
    return f"{spent['seconds']:.1f} s, {passes:g} pass{'es' if passes != 1 else ''}"
