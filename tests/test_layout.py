"""The package's shape: rooms that follow the data flow, each importing only rooms below it (imports inside
functions included), no import cycle between modules, and no module over 500 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import layermod

PACKAGE = Path(layermod.__file__).parent
# lowest first: a module may import its own room and the rooms before it, never one after it
ROOMS = ["errors", "coerce", "io", "data", "models", "extract", "measure", "analysis", "training", "sweep",
         "adversarial", "pruning", "report", "demo", "cli"]
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["layermod", *parts])


def imports_of(path: Path) -> set[str]:
    """Every layermod module ``path`` imports, at any depth of its code (absolute or relative)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for block in ast.walk(tree):  # imports for type checkers only run nothing
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("layermod")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("layermod"):
                found.add(target)
                found |= {f"{target}.{alias.name}" for alias in node.names}  # `from pkg import module`
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {target for target in found if target in modules and target != name}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {module: imports_of(path) for module, path in MODULES.items()}


def test_every_module_sits_in_a_known_room():
    assert {room(module) for module in MODULES} - {"api", "__main__"} <= set(ROOMS)


def test_no_room_imports_a_higher_one():
    wrong = []
    for module, targets in GRAPH.items():
        if room(module) in ("api", "__main__"):
            continue
        for target in targets:
            if room(target) != "api" and ROOMS.index(room(target)) > ROOMS.index(room(module)):
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycle():
    """Depth-first search over module imports (the lazy top-level API left out); a back edge is a cycle."""
    edges = GRAPH
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if target == "layermod":
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else target)
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_no_module_over_500_lines():
    long = {module: n for module, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_optional_libraries_are_imported_only_inside_functions():
    """The core installs with torch, numpy, scipy, matplotlib, tqdm and safetensors alone."""
    optional = {"torchvision", "timm", "transformers", "ray", "lightning", "tensorboard", "faiss", "sklearn",
                "networkx", "torchattacks", "PIL", "pyarrow"}
    top_level = []
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            top_level += [f"{module}: {name}" for name in names if name.split(".")[0] in optional]
    assert not top_level, top_level


def _messages(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of ``tree`` less its docstrings (a string standing alone as a statement)."""
    alone = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in alone]


def test_library_messages_name_parameters_not_flags():
    """Outside the CLI a message names what a Python caller passes; the CLI rewrites it to its flags."""
    flag = re.compile(r"(?<![\w-])--[a-z]")
    named = [f"{module}:{node.lineno}: {node.value!r}" for module, path in MODULES.items() if room(module) != "cli"
             for node in _messages(ast.parse(path.read_text(encoding="utf-8"))) if flag.search(node.value)]
    assert not named, named


def test_no_raise_of_the_base_error_class():
    """Every raise names the precise subclass of LayermodError, which callers can catch alone."""
    base = [f"{module}:{node.lineno}" for module, path in MODULES.items()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
            and getattr(node.exc.func, "id", getattr(node.exc.func, "attr", None)) == "LayermodError"]
    assert not base, base
