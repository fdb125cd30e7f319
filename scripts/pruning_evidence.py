"""The pooled evidence of the committed matched-budget pruning studies, and the method ``--method auto`` takes.

    .venv/bin/python scripts/pruning_evidence.py [--root .]          # print the rankings, the tests, the target
    .venv/bin/python scripts/pruning_evidence.py --check [--root .]  # exit 1 when the code or the guide disagree

The studies are ``docs/reproduction/bases/NAME-seedS/`` (``scripts/reproduce_bases.sh``): one per trained base
network, those of one architecture pooled with the base network as a unit
(:meth:`~layermod.pruning.pareto.MatchedComparison.over_networks`); of them, the rows fine-tuned at budgets matched
by FLOPs (:func:`layermod.pruning.evidence.pool`, which says how they are pooled). The :data:`DESIGN` networks
choose the default; the :data:`HELD_OUT` ones, on which nothing was chosen, are pooled apart and reported beside
them. ``--check`` fails when :data:`layermod.pruning.choices.AUTO` is not the best pooled method of the design
networks or when the table between ``<!-- evidence: ranking -->`` and ``<!-- /evidence -->`` in
docs/guide/pruning.md is not what this script prints.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

from layermod.pruning.choices import AUTO
from layermod.pruning.evidence import DERIVED, Evidence, pool
from layermod.pruning.pareto import MatchedComparison

GUIDE = Path("docs/guide/pruning.md")
_BLOCK = re.compile(r"<!-- evidence: ranking -->\n(?P<body>.*?)\n<!-- /evidence -->", re.S)
DESIGN = ("vgg19-w0.25", "resnet56-w0.25", "resnet110-w0.25", "vit6")
"""The networks the default (and every threshold of the methods) is chosen on."""
HELD_OUT = ("resnet32-w0.25", "resnet32-w0.5", "vgg16-w0.25")
"""Networks nothing was chosen on, each run once after the choice was written down. ``resnet32-w0.25`` is the
first such run (``docs/beyond/``: 2 budgets x 2 seeds, layers chosen by a curve of the test split)."""
OPPONENTS = ("cosine", "angular", "reinit")
"""The strong baselines every modularity-derived method is tested against."""


def bases(root: Path) -> dict[str, MatchedComparison]:
    """``docs/reproduction/bases/NAME-seedS/`` by NAME, read with the loader's checks; several base networks of
    one NAME pooled, base network by base network."""
    found: dict[str, list[MatchedComparison]] = defaultdict(list)
    for path in sorted((root / "docs/reproduction/bases").glob("*-seed*/matched.json")):
        found[path.parent.name.rsplit("-seed", 1)[0]].append(MatchedComparison.load(path.parent))
    return {name: runs[0] if len(runs) == 1 else MatchedComparison.over_networks(runs) for name, runs in found.items()}


def studies(root: Path, names: tuple[str, ...] = DESIGN) -> dict[str, MatchedComparison]:
    """The committed studies of ``names`` with fine-tuned rows at matched FLOPs, in that order."""
    found = bases(root)
    for path in sorted((root / "docs/beyond").glob("*/study/matched.json")):
        found.setdefault(path.parent.parent.name.removesuffix("-fmnist"), MatchedComparison.load(path.parent))
    return {name: found[name] for name in names if name in found and any(
        row["match"] == "flops" and row["retrain"] == "finetune" for row in found[name].rows)}


def evidence(root: Path, names: tuple[str, ...] = DESIGN) -> Evidence:
    return pool(studies(root, names))


def versus(found: Evidence) -> str:
    """Each modularity-derived method against each strong baseline: pooled over the networks (the network the
    unit, and the sign-flip test over the network-budget cells) and per network (the budget the unit)."""
    networks = list(found.accuracy)
    lines = ["| method | against | pooled (p networks; p sign) | " + " | ".join(networks) + " |",
             "|---|---|---:|" + "---:|" * len(networks)]
    for method in (m for m in DERIVED if m in found.methods()):
        for other in OPPONENTS:
            test = found.versus(method, other)
            cells = [f"{100 * test['per_network'][n]:+.1f} ({p_value(test['p_per_network'][n])})"
                     if n in test["per_network"] else "–" for n in networks]
            lines.append(f"| {method} | {other} | {100 * test['mean']:+.1f} ({p_value(test['p_network'])}; "
                         f"{p_value(test['p_sign'])}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def p_value(value: float | None) -> str:
    """A p-value in two significant digits, n/a when the test is undefined."""
    return "n/a" if value is None else f"{value:.2g}"


def target(found: Evidence) -> str:
    """The target, cell by cell: the best modularity-derived method against the best other one."""
    lines = ["| network | budget | best modularity-derived | best other | difference |", "|---|---:|---|---|---:|"]
    gaps = found.gaps()
    for (network, budget), (ours, a, theirs, b) in gaps.items():
        lines.append(f"| {network} | {100 * budget:.0f} % | {ours} {100 * a:.2f} | {theirs} {100 * b:.2f} | "
                     f"{100 * (a - b):+.2f} |")
    differences = [a - b for _, a, _, b in gaps.values()]
    ahead = sum(d > 0 for d in differences)
    within = sum(d >= -0.01 for d in differences)
    lines += ["", f"Within 1 point of the best other method at {within} of {len(differences)} cells, ahead at "
              f"{ahead}; worst {100 * min(differences):+.2f} points: target "
              f"{'met' if found.target_met() else 'not met'}."]
    return "\n".join(lines)


def check(root: Path) -> list[str]:
    """What disagrees with the files, one line each (empty: nothing)."""
    found = evidence(root)
    problems = []
    if AUTO != found.best():
        problems.append(f"layermod.pruning.choices.AUTO is {AUTO!r}; the committed studies favour {found.best()!r}")
    guide = (root / GUIDE).read_text()
    block = _BLOCK.search(guide)
    if block is None:
        problems.append(f"{GUIDE}: no <!-- evidence: ranking --> block")
    elif block["body"] != found.markdown():
        problems.append(f"{GUIDE}: the ranking table is not what the files give (rerun this script and paste it)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository holding docs/ (default: this script's)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the code or the guide disagree")
    args = parser.parse_args()
    if args.check:
        problems = check(args.root)
        print("\n".join(problems) or f"AUTO = {AUTO!r} and the guide's table agree with the studies")
        return 1 if problems else 0
    for names in (DESIGN, HELD_OUT):
        found = evidence(args.root, names)
        print(f"networks: {', '.join(found.accuracy)}; common methods: {', '.join(found.common)}; "
              f"best: {found.best()}\n")
        print(f"<!-- evidence: ranking -->\n{found.markdown()}\n<!-- /evidence -->\n")
        print(versus(found) + "\n")
        print(target(found) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
