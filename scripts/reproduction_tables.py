"""Print the tables of REPRODUCTION.md from the result files under docs/reproduction/ (run after the
scripts/reproduce_*.sh scripts): every number there comes from this script's output.

    .venv/bin/python scripts/reproduction_tables.py [docs/reproduction]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import layermod as lm
from layermod.pruning.pareto import MatchedComparison


def pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}"


def p_value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def row_at(study: MatchedComparison, match: str, budget: float) -> None:
    """The paper's ResNet56 row: every method at one budget of one cost."""
    print(f"\n#### {match} budget {pct(budget, 0)} %\n")
    print("| method | retrain | params removed | FLOPs removed | accuracy (3 seeds) | Δ vs modularity (p t; p sign) |")
    print("|---|---|---:|---:|---:|---:|")
    for s in study.summary():
        if s["match"] != match or s["budget"] not in (0.0, budget):
            continue
        test = s["vs_modularity"]
        vs = "reference" if s["method"] == "modularity" else "–" if test is None else (
            f"{100 * test['mean']:+.2f} ({p_value(test['p_t'])}; {p_value(test['p_sign'])})")
        print(f"| {s['method']} | {s['retrain']} | {pct(s['params_removed'])} % | {pct(s['flops_removed'])} % | "
              f"{pct(s['acc_mean'], 2)} ± {pct(s['acc_std'], 2)} % | {vs} |")


def pooled(study: MatchedComparison) -> None:
    print("\n| match | retrain | method | pairs | Δ vs modularity (points) | p t-test | p sign-flip |")
    print("|---|---|---|---:|---:|---:|---:|")
    for p in sorted(study.pooled(), key=lambda p: (p["match"], p["retrain"], -p["mean"])):
        print(f"| {p['match']} | {p['retrain']} | {p['method']} | {p['n']} | {100 * p['mean']:+.2f} ± "
              f"{100 * (p['std'] or 0):.2f} | {p_value(p['p_t'])} | {p_value(p['p_sign'])} |")


def sweep(directory: Path, option: str) -> None:
    """Q per layer for every value of ``option`` in a sweep's results.csv, and the verdicts of each item."""
    import csv

    rows = list(csv.DictReader((directory / "results.csv").open()))
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        table[row[option]][row["layer"]] = float(row["q_mean"])
    print(f"\n{directory.name}: {option} -> first, middle, last Q; plateau/drop verdicts (find_redundant)\n")
    for value, layers in table.items():
        names = list(layers)
        item = next(r["item"] for r in rows if r[option] == value)
        verdicts = lm.find_redundant(lm.Curve.load(directory / "items" / item))
        flat = [v.layer for v in verdicts if v.verdict != "keep"]
        print(f"- {option}={value}: {len(names)} layers, Q {layers[names[0]]:.3f} -> {layers[names[len(names) // 2]]:.3f}"
              f" -> {layers[names[-1]]:.3f}; {len(flat)} plateau/drop: {', '.join(flat)}")


def versus(root: Path) -> None:
    """Every network's pooled difference to modularity, a column per method (bold: p t-test < 0.003)."""
    methods = ["steepest", "last", "first", "random", "cosine", "angular", "cka", "reinit"]
    print("\n| network | retrain | matched by | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---:|" * len(methods))
    for path in sorted(root.glob("pruning-*/matched.json")):
        study = MatchedComparison.load(path)
        pooled = {(p["match"], p["retrain"], p["method"]): p for p in study.pooled()}
        for match, retrain in dict.fromkeys((r["match"], r["retrain"]) for r in study.rows):
            cells = []
            for method in methods:
                p = pooled.get((match, retrain, method))
                bold = "**" if p is not None and p["p_t"] is not None and p["p_t"] < 0.003 else ""
                cells.append("–" if p is None else f"{bold}{100 * p['mean']:+.1f}{bold}")
            name = path.parent.name.removeprefix("pruning-").rsplit("-", 1)[0]
            print(f"| {name} | {retrain} | {match} | " + " | ".join(cells) + " |")


def main(root: Path) -> None:
    versus(root)
    for path in sorted(root.glob("pruning-*/matched.json")):
        study = MatchedComparison.load(path)
        print(f"\n### {path.parent.name}\n")
        print(f"base: {study.base['params']:,} parameters, {study.base['flops']:,} FLOPs per image")
        pooled(study)
        for match in dict.fromkeys(row["match"] for row in study.rows):
            row_at(study, match, max(study.config["budgets"]))
    for name, option in (("sweep-size", "weights"), ("sweep-sensitivity-k", "k"), ("sweep-sensitivity-n", "n-per-class")):
        if (root / name / "results.csv").is_file():
            sweep(root / name, option)
    for path in sorted(root.glob("curves/*/curve.json")):
        curve = json.loads(path.read_text())
        print(f"\ncurve {path.parent.name}: " + ", ".join(f"{layer} {q:.3f}" for layer, q in
                                                      zip(curve["layers"], curve["mean"])))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reproduction"))
