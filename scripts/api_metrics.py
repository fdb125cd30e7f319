"""The public API's shape in numbers, measured over src/layermod: prints a Markdown table.

    python scripts/api_metrics.py                    # the table (times `layermod --help`: 5 runs, median)
    python scripts/api_metrics.py --no-time          # the counts alone
    python scripts/api_metrics.py --root OTHER_TREE  # the same of another checkout (its src/layermod)

Positional options are counted by tests/test_signatures.py (which fails on any); the rest here:

* raises of the base class ``LayermodError(`` (each raise names its precise subclass);
* string literals of ``raise`` / ``warn`` calls outside ``layermod/cli/`` that name a CLI flag (``--[a-z]``);
* docstring lines / code lines: lines of module, class and function docstrings over the other non-blank lines;
* module docstrings over 25 lines;
* functions whose body (docstring included) is over 60 lines.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 60
MAX_MODULE_DOC = 25
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _sources(root: Path) -> dict[str, Path]:
    """``{path under root: path}`` of every module of the package."""
    return {str(path.relative_to(root)): path for path in sorted((root / "src" / "layermod").rglob("*.py"))}


def _trees(root: Path) -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in _sources(root).items()}


def _docstrings(tree: ast.Module) -> list[ast.Constant]:
    nodes = [tree, *(n for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return [n.body[0].value for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant) and isinstance(n.body[0].value.value, str)]


def base_class_raises(trees: dict[str, ast.Module]) -> list[str]:
    """``raise LayermodError(...)``: ``file:line`` of each."""
    return [f"{name}:{node.lineno}" for name, tree in trees.items() for node in ast.walk(tree)
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
            and getattr(node.exc.func, "id", getattr(node.exc.func, "attr", None)) == "LayermodError"]


def flags_in_messages(trees: dict[str, ast.Module]) -> list[str]:
    """String literals of raise and warn calls outside the CLI that name a flag: ``file:line`` of each."""
    found = []
    for name, tree in trees.items():
        if name.startswith("src/layermod/cli/"):
            continue
        calls = [node.exc for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None]
        calls += [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and getattr(node.func, "id", getattr(node.func, "attr", None)) == "warn"]
        for call in calls:
            found += [f"{name}:{s.lineno}" for s in ast.walk(call)
                      if isinstance(s, ast.Constant) and isinstance(s.value, str) and FLAG.search(s.value)]
    return found


def doc_ratio(trees: dict[str, ast.Module], root: Path) -> tuple[int, int]:
    """(docstring lines, other non-blank lines) over the package."""
    doc = code = 0
    for name, tree in trees.items():
        lines = (root / name).read_text(encoding="utf-8").splitlines()
        in_doc = set()
        for node in _docstrings(tree):
            in_doc |= set(range(node.lineno, node.end_lineno + 1))
        doc += len(in_doc)
        code += sum(1 for i, line in enumerate(lines, 1) if line.strip() and i not in in_doc)
    return doc, code


def long_module_docs(trees: dict[str, ast.Module]) -> list[str]:
    """Module docstrings over 25 lines: ``file (lines)`` of each."""
    out = []
    for name, tree in trees.items():
        doc = _docstrings(tree)[:1]
        if doc and doc[0] is tree.body[0].value and (n := doc[0].end_lineno - doc[0].lineno + 1) > MAX_MODULE_DOC:
            out.append(f"{name} ({n})")
    return out


def long_functions(trees: dict[str, ast.Module]) -> list[str]:
    """Functions whose body (docstring included) is over 60 lines: ``file::name (lines)`` of each."""
    out = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.body[0].lineno + 1
                if n > MAX_BODY:
                    out.append(f"{name}::{node.name} ({n})")
    return out


def help_seconds(root: Path, runs: int = 5) -> float:
    """Median wall time of ``layermod --help`` (root's .venv/bin/layermod, else this Python's ``-m layermod``)
    over ``runs`` runs, the layermod of ``root/src`` first on the path."""
    exe = root / ".venv" / "bin" / "layermod"
    command = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "layermod", "--help"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")]))}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-time", action="store_true", help="skip timing layermod --help")
    parser.add_argument("-v", "--verbose", action="store_true", help="list what each count counts")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to measure (default: this one)")
    args = parser.parse_args()
    trees = _trees(args.root)
    doc, code = doc_ratio(trees, args.root)
    rows = [("`raise LayermodError(` of the base class", base_class_raises(trees)),
            ("library messages (outside cli/) that name a CLI flag", flags_in_messages(trees)),
            ("module docstrings over 25 lines", long_module_docs(trees)),
            ("functions over 60 lines", long_functions(trees))]
    print("| measure | now |\n|---|---|")
    for label, found in rows:
        print(f"| {label} | {len(found)} |")
    print(f"| docstring lines / code lines | {doc / code:.2f} ({doc} / {code}) |")
    if not args.no_time:
        print(f"| `layermod --help`, median of 5 runs | {help_seconds(args.root):.2f} s |")
    if args.verbose:
        for label, found in rows:
            print(f"\n{label}:", *found, sep="\n  ")


if __name__ == "__main__":
    main()
