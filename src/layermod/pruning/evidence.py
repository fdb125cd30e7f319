"""Which layer-choice method matched-FLOPs studies favour, pooled over networks: the method ``auto`` resolves to.

From studies (:class:`~layermod.pruning.pareto.MatchedComparison`, one per network), the rows fine-tuned at budgets
matched by FLOPs:

* **Accuracy.** Per network, budget and method: the mean accuracy over seeds (the seeds are the same for every
  method, so a difference of means is the mean of the paired differences).
* **Common set.** The methods run on *every* network (``none`` aside). Only they can become the default, and
  they are the opponents everywhere, so every method's margin is measured against the same field on every
  network whatever else was run there. A method run on some networks only is still scored on those (and says
  on how many), never ranked for the default.
* **Margin.** Per network and budget: a method's accuracy minus each common method's (itself aside), averaged;
  per network: the mean over its budgets; pooled: the mean over the networks it ran on. Points, not ranks: a
  choice that loses 30 points somewhere should weigh more than one that loses 0.3.
* **Target.** Per network and budget: the best modularity-derived method (:data:`DERIVED`) minus the best other
  method (``none`` aside) run there, in accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from layermod.errors import PlanError
from layermod.measure.stats import mean_test, paired_test
from layermod.pruning.pareto import MatchedComparison

__all__ = ["DERIVED", "Evidence", "pool"]

DERIVED = ("modularity", "modularity-phase", "modularity-ablation")
"""The methods derived from the modularity curve that aim to keep accuracy (``steepest``, the opposite choice,
is a control, counted with the others)."""


def _accuracies(study: MatchedComparison, match: str, retrain: str) -> dict[float, dict[str, float]]:
    """``{budget: {method: mean accuracy}}`` of the ``match``/``retrain`` rows, ``none`` aside."""
    out: dict[float, dict[str, float]] = {}
    for s in study.summary():
        if s["match"] == match and s["retrain"] == retrain and s["method"] != "none":
            out.setdefault(s["budget"], {})[s["method"]] = s["acc_mean"]
    return out


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """The pooled comparison of :func:`pool`.

    Attributes:
        accuracy: ``{network: {budget: {method: mean accuracy}}}``.
        common: the methods run on every network, in the first network's order.
    """

    accuracy: dict[str, dict[float, dict[str, float]]]
    common: list[str]

    def methods(self) -> list[str]:
        """Every method run on some network, the common ones first."""
        seen = [m for budgets in self.accuracy.values() for accs in budgets.values() for m in accs]
        return self.common + [m for m in dict.fromkeys(seen) if m not in self.common]

    def margin(self, method: str, network: str, budget: float) -> float:
        """``method``'s accuracy minus each common method's run there (itself aside), averaged, at one network and
        budget."""
        accs = self.accuracy[network][budget]
        others = [other for other in self.common if other != method and other in accs]
        return float(np.mean([accs[method] - accs[other] for other in others]))

    def per_network(self, method: str) -> dict[str, float]:
        """``{network: mean margin over its budgets}``, for the networks ``method`` ran on."""
        return {network: float(np.mean([self.margin(method, network, b) for b, accs in budgets.items()
                                        if method in accs]))
                for network, budgets in self.accuracy.items()
                if any(method in accs for accs in budgets.values())}

    def pooled(self, method: str) -> float:
        """The mean over networks of :meth:`per_network`."""
        return float(np.mean(list(self.per_network(method).values())))

    def ranking(self) -> list[str]:
        """The common methods, best pooled margin first (ties by name), then the others the same way."""
        def key(method: str) -> tuple[float, str]:
            return -self.pooled(method), method

        return sorted(self.common, key=key) + sorted((m for m in self.methods() if m not in self.common), key=key)

    def versus(self, method: str, other: str) -> dict:
        """``method`` against ``other`` where both ran: paired by network and budget, the network the unit.

        Args:
            method: the method tested.
            other: its opponent.

        Returns:
            ``{"cells", "mean", "per_network", "p_per_network", "per_budget", "p_network", "p_sign"}``: the number
                of (network, budget) cells; the mean over networks of each network's mean accuracy difference; those
                per-network means; per network the two-sided p-value of the t-test on its budgets' differences (the
                budget the unit; None with fewer than 2 budgets or no spread); ``{budget: (mean over networks,
                networks)}``; the p-value of the t-test on the per-network means (the network the unit); the
                sign-flip p-value over the cells.

        Raises:
            PlanError: no network ran both.
        """
        cells = {(network, budget): accs[method] - accs[other] for network, budgets in self.accuracy.items()
                 for budget, accs in budgets.items() if method in accs and other in accs}
        if not cells:
            raise PlanError(f"no network ran both {method!r} and {other!r}; pick two methods one study compared")
        per_network = {n: float(np.mean([d for (net, _), d in cells.items() if net == n]))
                       for n in dict.fromkeys(net for net, _ in cells)}
        per_budget = {b: (float(np.mean(d)), len(d)) for b in sorted({b for _, b in cells})
                      if (d := [v for (_, budget), v in cells.items() if budget == b])}
        p_per_network = {n: mean_test([d for (net, _), d in cells.items() if net == n]) for n in per_network}
        differences = list(cells.values())
        return {"cells": len(cells), "mean": float(np.mean(list(per_network.values()))), "per_network": per_network,
                "p_per_network": p_per_network, "per_budget": per_budget,
                "p_network": mean_test(list(per_network.values())),
                "p_sign": paired_test(differences, [0.0] * len(differences)).p_sign}

    def best(self) -> str:
        """The common method with the best pooled margin: what ``auto`` resolves to."""
        return self.ranking()[0]

    def gaps(self) -> dict[tuple[str, float], tuple[str, float, str, float]]:
        """``{(network, budget): (best derived method, its accuracy, best other method, its accuracy)}`` where
        both kinds were run."""
        out = {}
        for network, budgets in self.accuracy.items():
            for budget, accs in budgets.items():
                ours = [m for m in accs if m in DERIVED]
                theirs = [m for m in accs if m not in DERIVED]
                if ours and theirs:
                    a, b = (max(group, key=lambda m: accs[m]) for group in (ours, theirs))
                    out[(network, budget)] = (a, accs[a], b, accs[b])
        return out

    def target_met(self, *, behind: float = 0.01) -> bool:
        """Whether a derived method is never more than ``behind`` (accuracy, 0.01: a point) below the best other
        method at any network and budget, and ahead at half of them or more."""
        gaps = [ours - theirs for _, ours, _, theirs in self.gaps().values()]
        return bool(gaps) and min(gaps) >= -behind and 2 * sum(g > 0 for g in gaps) >= len(gaps)

    def markdown(self) -> str:
        """The ranking as a Markdown table: pooled margin and per network, in points."""
        networks = list(self.accuracy)
        lines = ["| method | pooled | " + " | ".join(networks) + " | networks |",
                 "|---|---:|" + "---:|" * len(networks) + "---:|"]
        for method in self.ranking():
            per = self.per_network(method)
            name = f"**{method}**" if method == self.best() else method
            cells = [f"{100 * per[n]:+.1f}" if n in per else "–" for n in networks]
            common = "" if method in self.common else " (not in every study)"
            lines.append(f"| {name} | {100 * self.pooled(method):+.1f} | " + " | ".join(cells)
                         + f" | {len(per)}{common} |")
        return "\n".join(lines)


def pool(studies: Mapping[str, MatchedComparison], *, match: str = "flops", retrain: str = "finetune") -> Evidence:
    """The :class:`Evidence` of ``studies`` (``{network: study}``), from their ``match``/``retrain`` rows; a study
    without such rows is left out.

    Raises:
        PlanError: no study has such rows, or no two methods were run on every network.
    """
    accuracy = {name: accs for name, study in studies.items() if (accs := _accuracies(study, match, retrain))}
    if not accuracy:
        raise PlanError(f"no study has rows retrained by {retrain!r} at budgets matched by {match!r}")
    run = [{m for accs in budgets.values() for m in accs} for budgets in accuracy.values()]
    first = next(iter(accuracy.values()))
    order = list(dict.fromkeys(m for accs in first.values() for m in accs))
    common = [m for m in order if all(m in methods for methods in run)]
    if len(common) < 2:
        raise PlanError(f"only {len(common)} method was run on every one of the {len(accuracy)} networks; "
                        "pool studies that share at least two methods")
    return Evidence(accuracy=accuracy, common=common)
