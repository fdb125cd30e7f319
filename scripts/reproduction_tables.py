"""The tables and numbers of REPRODUCTION.md, from the committed result files (docs/reproduction/, docs/evidence/,
docs/adversarial/, docs/pruning/, docs/beyond/), and a check that the document and README.md say what the files
give.

    .venv/bin/python scripts/reproduction_tables.py [--root .]          # print every table and number
    .venv/bin/python scripts/reproduction_tables.py --check [--doc REPRODUCTION.md] [--readme README.md]

REPRODUCTION.md holds the generated tables between ``<!-- tables: NAME -->`` and ``<!-- /tables -->``; ``--check``
exits 1 when one of them differs from what this script prints, or when a decimal number in the rest of the text
(outside code blocks, the headings, rows and ``<!-- quoted -->`` stretches that state the paper's findings, and the stretches between
``<!-- not in the files -->`` and ``<!-- /not -->``, which say why their numbers are not regenerable here) is not among the numbers this script
prints. The prose check is one of membership: a number edited into another that the files also give passes.
README.md is checked the same way: every decimal number outside its code (blocks and inline) and headings must be
one the files give, but for the stretches of ``README_ELSEWHERE``, whose numbers come from elsewhere (each names
its source); editing such a stretch makes its numbers checked again.

Statistics. A cell compares a method with ``modularity`` over 4 budgets x 3 seeds. The seeds of one budget
retrain the same pruned networks, so the budget is the unit: ``p budgets`` is the t-test on the 4 per-budget
mean differences (3 degrees of freedom; the test of the mean in a random-intercept model with budget as the
random effect, the design being balanced), beside the exact sign-flip test over the 12 pairs. Up to 16
comparisons per network: Bonferroni's 0.05 / 16 = 0.003. Bold: both p-values below it.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import layermod as lm
import pruning_evidence  # scripts/pruning_evidence.py, beside this one
from layermod.models.hub import is_library_spec
from layermod.models.spec import resolve_model
from layermod.pruning.pareto import MatchedComparison
from layermod.pruning.study import choice_of

METHODS = ["steepest", "last", "first", "random", "cosine", "angular", "cka", "reinit"]
BEYOND = ["modularity-phase", "modularity-ablation", "ablation-accuracy"]
ALPHA = 0.05 / 16
p_value = pruning_evidence.p_value
PERMUTATIONS = 10_000
README_ELSEWHERE = {  # README stretches whose numbers are not in the result files, and where they come from
    "ceiling for 10 classes, 0.9": "1 - 1/C, the largest Q of C equal classes",
    "took 6.7 s on 2 CPU cores: 3.1 s importing layermod and torchvision, 2.3 s for the curve":
        "benchmarks/first_curve.py, a timing",
    "(`z` 2, `rel_gain` 0.5:": "the defaults of find_redundant",
}
NETWORKS = {"resnet20-w0.25": "ResNet20, width 0.25", "resnet20-w0.5": "ResNet20, width 0.5",
            "resnet56-w0.25": "ResNet56, width 0.25", "resnet110-w0.25": "ResNet110, width 0.25",
            "vgg19-w0.25": "VGG19-BN, width 0.25", "resnet56-w0.25-n2000": "ResNet56, width 0.25, 2,000 images"}


def studies(root: Path) -> dict[str, MatchedComparison]:
    return {path.parent.name.removeprefix("pruning-"): MatchedComparison.load(path)
            for path in sorted((root / "docs/reproduction").glob("pruning-*/matched.json"))}


def versus(root: Path) -> str:
    """Each design network's difference to modularity, pooled over its base networks, budgets and seeds, a column
    per method: the p-values with the budget as the unit, with the base network as the unit (with several), and
    the sign-flip test over the pairs; bold where every one is below the threshold."""
    methods = METHODS + BEYOND
    lines = ["| network | base networks | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for name, study in pruning_evidence.studies(root).items():
        pooled = {p["method"]: p for p in study.pooled() if p["match"] == "flops" and p["retrain"] == "finetune"}
        bases = len({row.get("network", 0) for row in study.rows})
        several = bases > 1
        cells = []
        for method in methods:
            p = pooled.get(method)
            if p is None:
                cells.append("–")
                continue
            tests = [p["p_budget"], p["p_sign"]] + ([p["p_network"]] if several else [])
            bold = "**" if all(t is not None and t < ALPHA for t in tests) else ""
            network = f"{p_value(p['p_network'])}; " if several else ""
            cells.append(f"{bold}{100 * p['mean']:+.1f}{bold} ({p_value(p['p_budget'])}; {network}"
                         f"{p_value(p['p_sign'])})")
        lines.append(f"| {name} | {bases} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def networks(root: Path) -> str:
    """The trained base networks of docs/reproduction/networks/ (their training records): accuracy on the 10,000
    test images, with the recipe each record names."""
    lines = ["| network | seed | parameters | training images | epochs | torch threads | test accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for path in sorted((root / "docs/reproduction/networks").glob("*/best.json")):
        best = json.loads(path.read_text())
        name = path.parent.name.rsplit("-seed", 1)[0]
        if ":" in best["arch"] and not is_library_spec(best["arch"]):  # never import what a file names
            raise SystemExit(f"{path}: arch {best['arch'][:60]!r} is not a registered or library model")
        model, _ = resolve_model(best["arch"], arch_args=best["arch_args"])
        count = sum(p.numel() for p in model.parameters())
        lines.append(f"| {name} | {best['seed']} | {count:,} | {best['train_size']:,} | {best['training']['epochs']} "
                     f"| {best['torch_threads']} | {100 * best['accuracy']:.2f} % |")
    return "\n".join(lines)


def versus_test_split(root: Path) -> str:
    """The first studies' (one base network, layers chosen on the test split) pooled difference to modularity, a
    column per method, with both p-values."""
    lines = ["| network | retrain | matched by | " + " | ".join(METHODS) + " |",
             "|---|---|---|" + "---:|" * len(METHODS)]
    for name, study in studies(root).items():
        pooled = {(p["match"], p["retrain"], p["method"]): p for p in study.pooled()}
        for match, retrain in dict.fromkeys((r["match"], r["retrain"]) for r in study.rows):
            cells = []
            for method in METHODS:
                p = pooled.get((match, retrain, method))
                if p is None:
                    cells.append("–")
                    continue
                both = p["p_budget"] is not None and p["p_budget"] < ALPHA and p["p_sign"] < ALPHA
                bold = "**" if both else ""
                cells.append(f"{bold}{100 * p['mean']:+.1f}{bold} ({p_value(p['p_budget'])}; "
                             f"{p_value(p['p_sign'])})")
            lines.append(f"| {name.rsplit('-', 1)[0]} | {retrain} | {match} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_budget(study: MatchedComparison, match: str = "flops") -> str:
    """One network's differences to modularity budget by budget, with the share of ``match`` each removed;
    "≥" marks a method that removed at least modularity's share (a like-for-like or harder comparison for
    modularity)."""
    cells = {(s["budget"], s["method"]): s for s in study.summary() if s["match"] == match}
    budgets = sorted({b for b, m in cells if m != "none"})
    methods = [m for m in METHODS + BEYOND if any((b, m) in cells for b in budgets)]
    lines = ["| budget | modularity | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for budget in budgets:
        ref = cells[(budget, "modularity")]
        row = [f"{100 * budget:.0f} %", f"{100 * ref['acc_mean']:.1f} ({100 * ref[match + '_removed']:.1f} %)"]
        for method in methods:
            s = cells.get((budget, method))
            if s is None:
                row.append("–")
                continue
            mark = "≥" if s[match + "_removed"] >= ref[match + "_removed"] - 1e-9 else ""
            row.append(f"{100 * s['vs_modularity']['mean']:+.1f} ({mark}{100 * s[match + '_removed']:.1f} %)")
        lines.append("| " + " | ".join(row) + " |")
    like = []
    for method in methods:
        fair = [cells[(b, method)]["vs_modularity"]["mean"] for b in budgets
                if (b, method) in cells and cells[(b, method)][match + "_removed"]
                >= cells[(b, "modularity")][match + "_removed"] - 1e-9]
        worse = sum(d < 0 for d in fair)
        like.append(f"{method} {worse} of {len(fair)}")
    lines += ["", "Budgets at which the method removed at least modularity's share and scored below it: "
              + ", ".join(like) + "."]
    return "\n".join(lines)


def budget_row(study: MatchedComparison, match: str, budget: float) -> str:
    """Every method at one budget of one cost (the paper's ResNet56 row)."""
    n = {s["n"] for s in study.summary() if s["budget"] == budget}
    lines = [f"| method | parameters removed | FLOPs removed | accuracy ({'/'.join(map(str, sorted(n)))} runs) | "
             "Δ vs modularity (p t; p sign) |",
             "|---|---:|---:|---:|---:|"]
    for s in study.summary():
        if s["match"] != match or s["budget"] not in (0.0, budget):
            continue
        test = s["vs_modularity"]
        vs = "" if test is None else f"{100 * test['mean']:+.1f} ({p_value(test['p_t'])}; {p_value(test['p_sign'])})"
        lines.append(f"| {s['method']} | {100 * s['params_removed']:.1f} % | {100 * s['flops_removed']:.1f} % | "
                     f"{100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f} % | {vs} |")
    return "\n".join(lines)


def retraining(root: Path) -> str:
    """The best four methods of the design networks on ResNet56 (base network 0) with one fine-tuning epoch on
    3,000 images (its study over base networks) and with 3 epochs on 20,000 (docs/reproduction/retraining/):
    accuracy and rank at each budget."""
    short = MatchedComparison.load(root / "docs/reproduction/bases/resnet56-w0.25-seed0").summary()
    long = MatchedComparison.load(root / "docs/reproduction/retraining/resnet56-w0.25-seed0").summary()
    methods = [s["method"] for s in long if s["method"] != "none" and s["budget"] == min(x["budget"] for x in long
                                                                                         if x["method"] != "none")]
    budgets = sorted({s["budget"] for s in long if s["method"] != "none"})
    cells = {(s["method"], s["budget"], which): s["acc_mean"] for which, summary in (("short", short), ("long", long))
             for s in summary}
    lines = ["| method | " + " | ".join(f"{100 * b:.0f} %: 1 epoch on 3,000 | {100 * b:.0f} %: 3 epochs on 20,000"
                                       for b in budgets) + " |", "|---|" + "---:|" * (2 * len(budgets))]
    for method in methods:
        row = []
        for budget in budgets:
            for which in ("short", "long"):
                accs = sorted((cells[(m, budget, which)] for m in methods), reverse=True)
                acc = cells[(method, budget, which)]
                row.append(f"{100 * acc:.2f} % ({accs.index(acc) + 1})")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    spread = [f"{100 * b:.0f} %: {100 * (max(a) - min(a)):.2f} and {100 * (max(c) - min(c)):.2f}" for b in budgets
              for a, c in [[[cells[(m, b, which)] for m in methods] for which in ("short", "long")]]]
    unpruned = [cells[("none", 0.0, which)] for which in ("short", "long")]
    lines += ["", f"Unpruned, fine-tuned alike: {100 * unpruned[0]:.2f} % and {100 * unpruned[1]:.2f} %; in brackets "
              "each method's rank at that budget and retraining (ties share the better rank). Best minus worst, in "
              "points, after the short and the long retraining: " + "; ".join(spread) + "."]
    return "\n".join(lines)


def paper_row(root: Path) -> str:
    """The paper's ResNet56 row retrained for longer (docs/reproduction/8c/): per base network the curve's choice
    at 60 % of the FLOPs against the unpruned network, both fine-tuned alike, and the paired test over them."""
    lines = ["| base network | parameters removed | FLOPs removed | unpruned | modularity's choice | difference |",
             "|---:|---:|---:|---:|---:|---:|"]
    pruned, whole = [], []
    for path in sorted((root / "docs/reproduction/8c").glob("*-seed*/matched.json")):
        study = MatchedComparison.load(path.parent)
        rows = {row["method"]: row for row in study.rows}
        a, b = rows["modularity"], rows["none"]
        pruned.append(a["acc"])
        whole.append(b["acc"])
        lines.append(f"| {path.parent.name.rsplit('-seed', 1)[1]} | {100 * study.removed(a, 'params'):.1f} % | "
                     f"{100 * study.removed(a, 'flops'):.1f} % | {100 * b['acc']:.2f} % | {100 * a['acc']:.2f} % | "
                     f"{100 * (a['acc'] - b['acc']):+.2f} |")
    test = lm.measure.stats.paired_test(pruned, whole)
    lines += ["", f"Mean difference {100 * test.mean:+.2f} ± {100 * test.std:.2f} points over {test.n} base networks "
              f"(paired t-test p {p_value(test.p_t)}; sign-flip p {p_value(test.p_sign)})."]
    return "\n".join(lines)


def beyond(root: Path) -> str:
    """The held-out ResNet32's matched.md: every method it ran, at each budget and pooled against modularity."""
    text = pruning_evidence.studies(root, pruning_evidence.HELD_OUT)["resnet32-w0.25"].markdown().strip()
    return text.split("\n", 2)[2]  # without the heading


def size_items(root: Path) -> dict[str, lm.Curve]:
    """The size sweep's curves by network name (runs/repro/NAME/best.safetensors)."""
    out = {}
    for item in sorted((root / "docs/reproduction/sweep-size/items").iterdir()):
        weights = json.loads((item / "item.json").read_text())["options"]["weights"]
        out[Path(weights).parent.name] = lm.Curve.load(item)
    return out


def plateaus(root: Path) -> str:
    """Plateau/drop counts per network under the relative band, at rel_gain 0.25, 0.5 (the default), 0.75, and
    under the old absolute 0.005."""
    curves = size_items(root)
    lines = ["| network | layers | Q first -> last | mean step | plateau or drop (rel_gain 0.25 / 0.5 / 0.75) | "
             "absolute 0.005 |", "|---|---:|---:|---:|---:|---:|"]
    for name, title in NETWORKS.items():
        curve = curves[name]
        counts = [len(lm.find_redundant(curve, rel_gain=g).redundant) for g in (0.25, 0.5, 0.75)]
        old = len(lm.find_redundant(curve, rel_gain=0.0, min_gain=0.005).redundant)
        step = lm.find_redundant(curve).config["step"]
        lines.append(f"| {title} | {len(curve.layers)} | {curve.mean[0]:.3f} -> {curve.mean[-1]:.3f} | {step:.4f} | "
                     f"{counts[0]} / **{counts[1]}** / {counts[2]} | {old} |")
    for name in ("resnet56-w0.25", "resnet110-w0.25", "vgg19-w0.25", "resnet56-w0.25-n2000"):
        flat = lm.find_redundant(curves[name]).redundant
        lines.append(f"\n{NETWORKS[name]}: {', '.join(f'`{layer}`' for layer in flat)}")
    return "\n".join(lines)


def matrix(path: Path) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(path.open()))
    return rows[0][1:], np.array([[float(x) for x in row[1:]] for row in rows[1:]])


def d_vs_cka(root: Path) -> str:
    """D against linear CKA over the unordered layer pairs, with the layer distance |i - j| held fixed: the
    correlation within each diagonal (values centred per |i - j|), with a permutation test that shuffles D
    within each diagonal (two-sided, PERMUTATIONS shuffles, seed 0), and the linear partial correlation."""
    layers, d = matrix(root / "docs/adversarial/compare/d.csv")
    others, cka = matrix(root / "docs/adversarial/compare/cka.csv")
    assert layers == others, "d.csv and cka.csv hold other layers"
    i, j = np.triu_indices(len(layers), 1)
    distance, x, y = (j - i).astype(float), d[i, j], cka[i, j]

    def centred(v: np.ndarray) -> np.ndarray:
        out = v.copy()
        for k in np.unique(distance):
            out[distance == k] -= v[distance == k].mean()
        return out

    def residual(v: np.ndarray) -> np.ndarray:
        design = np.column_stack([np.ones_like(distance), distance])
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    within = float(np.corrcoef(centred(x), centred(y))[0, 1])
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(PERMUTATIONS):
        shuffled = x.copy()
        for k in np.unique(distance):
            shuffled[distance == k] = rng.permutation(x[distance == k])
        hits += abs(np.corrcoef(centred(shuffled), centred(y))[0, 1]) >= abs(within) - 1e-12
    r = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    return "\n".join([
        f"- {len(layers)} layers, {len(x)} unordered pairs",
        f"- Pearson r: D vs CKA {r(x, y):.2f}, |i - j| vs CKA {r(distance, y):.2f}, |i - j| vs D {r(distance, x):.2f}",
        f"- with |i - j| held fixed: linear partial r {r(residual(x), residual(y)):+.2f}; within-diagonal r "
        f"{within:+.2f}, permutation p {(hits + 1) / (PERMUTATIONS + 1):.3f} (D shuffled within each diagonal, "
        f"{PERMUTATIONS:,} shuffles)"])


def curve_line(name: str, curve: lm.Curve) -> str:
    return f"- {name}: " + ", ".join(f"{layer} {q:.3f} ± {s:.3f}" for layer, q, s in
                                      zip(curve.layers, curve.mean, curve.std))


def study_lines(name: str, study: MatchedComparison) -> list[str]:
    """A study's settings (the split that chose its layers among them), every cell and every pooled difference."""
    summary = study.summary()
    unpruned = {(s["match"], s["retrain"]): s["acc_mean"] for s in summary if s["method"] == "none"}
    choice = choice_of(study.config["networks"][0] if "networks" in study.config else study.config)
    lines = [f"- study {name}: base {study.base['params']:,} parameters; layers chosen on the {choice['split']} "
             f"split ({choice['samples'] or 'size not recorded'}, disjoint from the evaluation: "
             f"{choice['disjoint_from_eval']}); config " + json.dumps(study.config, sort_keys=True)]
    for s in summary:
        lines.append(f"  - {s['match']} {s['retrain']} {100 * s['budget']:.0f} % {s['method']}: "
                     f"{100 * s['acc_mean']:.1f} ± {100 * s['acc_std']:.1f} % / {100 * s['acc_mean']:.2f} ± "
                     f"{100 * s['acc_std']:.2f} %, params {100 * s['params_removed']:.1f} %, FLOPs "
                     f"{100 * s['flops_removed']:.1f} %, vs unpruned "
                     f"{100 * (s['acc_mean'] - unpruned[(s['match'], s['retrain'])]):+.1f}")
    for p in study.pooled():
        lines.append(f"  - pooled {p['match']} {p['retrain']} {p['method']}: {100 * p['mean']:+.1f} ± "
                     f"{100 * (p['std'] or 0):.1f}, p t {p_value(p['p_t'])}, p sign {p_value(p['p_sign'])}, "
                     f"p budgets {p_value(p['p_budget'])}")
    return lines


def everything_else(root: Path) -> str:
    """The numbers the text quotes that no table holds: the curves, the sweeps, the studies' settings, the
    evidence runs, the attacks."""
    lines = []
    raw = lm.Curve.load(root / "docs/reproduction/raw-pixels")
    lines.append(f"- raw pixels: Q {raw.mean[0]:.3f} ± {raw.std[0]:.3f}")
    for name, curve in size_items(root).items():
        lines.append(curve_line(name, curve) + f"; width {curve.config['arch_args']['width']}")
    for sweep, option in (("sweep-sensitivity-k", "k"), ("sweep-sensitivity-n", "n-per-class")):
        rows = list(csv.DictReader((root / "docs/reproduction" / sweep / "results.csv").open()))
        table: dict[str, dict[str, float]] = defaultdict(dict)
        for row in rows:
            table[row[option]][row["layer"]] = float(row["q_mean"])
        table = dict(sorted(table.items(), key=lambda item: float(item[0])))
        base = next(iter(table.values()))
        for value, q in table.items():
            lines.append(f"- {sweep} {option}={value}: " + ", ".join(f"{layer} {v:.3f}" for layer, v in q.items()))
            lines.append(f"  - change from {option}={next(iter(table))}: "
                         + ", ".join(f"{layer} {v - base[layer]:+.3f}" for layer, v in q.items()))
            rho = spearmanr(np.diff(list(q.values())), np.diff(list(base.values()))).statistic
            lines.append(f"  - rank correlation of the increments with {option}={next(iter(table))}'s: {rho:.2f}")
        if option == "k":
            curve = lm.Curve.load(next((root / "docs/reproduction" / sweep / "items").glob("k-3-*")))
            lines.append(f"  - k=3 draw-to-draw std, last layer: {curve.std[-1]:.3f}")
    for name, study in studies(root).items():
        lines += study_lines(name, study)
    for name, study in pruning_evidence.bases(root).items():
        lines += study_lines(f"bases {name}", study)
    for path in sorted((root / "docs/reproduction/bases").glob("*/curve.json")):
        curve = lm.Curve.load(path.parent)
        verdicts = lm.find_redundant(curve)
        lines.append(curve_line(f"bases curve {path.parent.name}", curve) + "; plateau or drop: "
                     + ", ".join(verdicts.redundant) + f" ({len(verdicts.redundant)} of {len(curve.layers) - 1})")
    for beyond in sorted((root / "docs/beyond").glob("*/study/matched.json")):
        name = beyond.parent.parent.name
        lines += study_lines(f"beyond {name}", MatchedComparison.load(beyond.parent))
        curve = lm.Curve.load(beyond.parent.parent / "curve")
        lines.append(curve_line(f"beyond {name} curve", curve))
    for name in ("vgg11", "resnet20"):
        curve = lm.Curve.load(root / "docs/evidence" / name)
        lines.append(curve_line(f"evidence {name}", curve) + "; z " + ", ".join(f"{z:.0f}" for z in curve.z))
        best = json.loads((root / "docs/evidence" / name / "best.json").read_text())
        lines.append(f"  - width {best['arch_args']['width']}; test accuracy {100 * best['accuracy']:.2f} %, by epoch "
                     + ", ".join(f"{100 * h['test_acc']:.1f} %" for h in best["history"]))
        dynamics = json.loads((root / "docs/evidence" / name / "dynamics.json").read_text())
        for layer, means in zip(dynamics["layers"], np.array(dynamics["mean"]).T):
            lines.append(f"  - dynamics {layer}: " + ", ".join(f"{q:.2f}" for q in means))
    best = json.loads((root / "docs/adversarial/train/best.json").read_text())
    lines.append(f"- adversarial {best['arch']}: test accuracy {100 * best['accuracy']:.2f} %")
    for attack in sorted((root / "docs/adversarial").glob("*-eps*/attack.json")):
        data = json.loads(attack.read_text())
        clean, attacked = (np.array(data[key]["mean"]) for key in ("clean", "attacked"))
        lines.append(f"- attack {attack.parent.name}: last layer {clean[-1]:.3f} -> {attacked[-1]:.3f}; first "
                     f"layers' largest gap {np.abs(attacked[:3] - clean[:3]).max():.2f}")
    rows = json.loads((root / "docs/pruning/comparison.json").read_text())["rows"]
    lines.append("- equal-count pruning: " + ", ".join(f"{r['method']} {100 * r['acc_mean']:.2f} %" for r in rows))
    for name in NETWORKS:
        model, width = name.split("-")[0], float(name.split("-")[1].removeprefix("w"))
        count = sum(p.numel() for p in lm.models.create(model, width=width, num_classes=10,
                                                         in_channels=1).parameters())
        lines.append(f"- {name}: {count / 1e3:.1f}K / {count / 1e6:.2f}M parameters")
    verdicts = lm.find_redundant(size_items(root)["vgg19-w0.25"])
    lines.append("- vgg19 increments: " + ", ".join(f"{v.layer} {v.increment:.4f}" for v in verdicts[1:]))
    return "\n".join(lines)


def blocks(root: Path) -> dict[str, str]:
    design = pruning_evidence.studies(root)
    found, held_out = pruning_evidence.evidence(root), pruning_evidence.evidence(root, pruning_evidence.HELD_OUT)
    return {"networks": networks(root), "versus": versus(root), "versus-test-split": versus_test_split(root),
            "vgg19-budgets": per_budget(design["vgg19-w0.25"]),
            "resnet56-60": budget_row(design["resnet56-w0.25"], "flops", 0.6),
            "plateaus": plateaus(root), "d-vs-cka": d_vs_cka(root), "beyond-resnet32": beyond(root),
            "pooled": found.markdown(), "derived-versus": pruning_evidence.versus(found),
            "target": pruning_evidence.target(found), "held-out-pooled": held_out.markdown(),
            "held-out-versus": pruning_evidence.versus(held_out), "held-out-target": pruning_evidence.target(held_out),
            "retraining": retraining(root), "paper-row": paper_row(root)}


_BLOCK = re.compile(r"<!-- tables: (?P<name>[\w-]+) -->\n(?P<body>.*?)\n<!-- /tables -->", re.S)
_EXEMPT = re.compile(r"```.*?```|<!-- (not in the files|quoted) -->.*?<!-- /(not|quoted) -->|arXiv \S+"
                     r"|^\| (paper|rerun|with the data) \|.*?$|^#+ .*?$", re.S | re.M)
_NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:,\d{3})*\.\d+(?![\w.]*\d)")


def numbers(text: str) -> set[str]:
    """Decimal numbers in ``text``, their sign and thousands separators dropped."""
    return {m.group().lstrip("+-−").replace(",", "") for m in _NUMBER.finditer(text)}


def check(doc: Path, root: Path, readme: Path | None = None) -> list[str]:
    """What in ``doc`` (and in ``readme``, when given) the files do not give, one line each (empty: both
    agree)."""
    text = doc.read_text()
    made = blocks(root)
    problems = []
    found = {m["name"]: m["body"] for m in _BLOCK.finditer(text)}
    for name, body in made.items():
        if name not in found:
            problems.append(f"{doc}: no <!-- tables: {name} --> block")
        elif found[name] != body:
            problems.append(f"{doc}: the {name} table is not what the files give (rerun this script and paste it)")
    known = numbers("\n".join(made.values()) + "\n" + everything_else(root))
    problems += unknown(doc, text, _EXEMPT.sub("", _BLOCK.sub("", text)), known)
    if readme is not None:
        quoted = readme.read_text()
        prose = _INLINE_CODE.sub("", _EXEMPT.sub("", quoted))
        for stretch in README_ELSEWHERE:
            prose = prose.replace(stretch, "")
        problems += unknown(readme, quoted, prose, known)
    return problems


_INLINE_CODE = re.compile(r"`[^`\n]*`")


def unknown(doc: Path, text: str, prose: str, known: set[str]) -> list[str]:
    """``"doc:line: N is in no result file"`` for every number of ``prose`` (``text`` with what is exempt removed)
    that is not ``known``."""
    problems = []
    for number in sorted(numbers(prose) - known, key=float):
        line = next(i for i, row in enumerate(text.splitlines(), 1) if number in row.replace(",", ""))
        problems.append(f"{doc}:{line}: {number} is in no result file")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository holding docs/ (default: this script's)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the document disagrees with the files")
    parser.add_argument("--doc", type=Path, help="the document to check (default ROOT/REPRODUCTION.md)")
    parser.add_argument("--readme", type=Path, help="the README to check (default ROOT/README.md)")
    args = parser.parse_args()
    if args.check:
        problems = check(args.doc or args.root / "REPRODUCTION.md", args.root, args.readme or args.root / "README.md")
        print("\n".join(problems) or "REPRODUCTION.md and README.md agree with the result files")
        return 1 if problems else 0
    for name, body in blocks(args.root).items():
        print(f"<!-- tables: {name} -->\n{body}\n<!-- /tables -->\n")
    print(everything_else(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
