"""The pooled evidence of the committed matched-budget pruning studies, and the method ``--method auto`` takes.

    .venv/bin/python scripts/pruning_evidence.py [--root .]          # print the ranking and the target
    .venv/bin/python scripts/pruning_evidence.py --check [--root .]  # exit 1 when the code or the guide disagree

The studies: every ``docs/reproduction/pruning-*/matched.json`` and ``docs/beyond/*/study/matched.json``; of
them, the rows fine-tuned at budgets matched by FLOPs (:func:`layermod.pruning.evidence.pool`, which says how
they are pooled). ``--check`` fails when :data:`layermod.pruning.choices.AUTO` is not the best pooled method or
when the table between ``<!-- evidence: ranking -->`` and ``<!-- /evidence -->`` in docs/guide/pruning.md is
not what this script prints.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from layermod.pruning.choices import AUTO
from layermod.pruning.evidence import Evidence, pool
from layermod.pruning.pareto import MatchedComparison

GUIDE = Path("docs/guide/pruning.md")
_BLOCK = re.compile(r"<!-- evidence: ranking -->\n(?P<body>.*?)\n<!-- /evidence -->", re.S)


def studies(root: Path) -> dict[str, MatchedComparison]:
    """The committed studies with fine-tuned rows at matched FLOPs, by network, read with the loader's checks."""
    out: dict[str, MatchedComparison] = {}
    for path in sorted((root / "docs/reproduction").glob("pruning-*/matched.json")) + \
            sorted((root / "docs/beyond").glob("*/study/matched.json")):
        name = (path.parent.name.removeprefix("pruning-") if path.parent.name != "study"
                else path.parent.parent.name).rsplit("-", 1)[0]
        study = MatchedComparison.load(path.parent)
        if any(row["match"] == "flops" and row["retrain"] == "finetune" for row in study.rows):
            out[name] = study
    return out


def evidence(root: Path) -> Evidence:
    return pool(studies(root))


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
    found = evidence(args.root)
    print(f"networks: {', '.join(found.accuracy)}; common methods: {', '.join(found.common)}; best: {found.best()}\n")
    print(f"<!-- evidence: ranking -->\n{found.markdown()}\n<!-- /evidence -->\n")
    print(target(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
