"""The counts of scripts/api_metrics.py that must stay 0 are 0, and each counter finds what it counts."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("api_metrics", ROOT / "scripts" / "api_metrics.py")
metrics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(metrics)
TREES = metrics._trees(ROOT)


def planted(source: str, name: str = "src/layermod/measure/planted.py") -> dict[str, ast.Module]:
    return {name: ast.parse(source)}


def test_no_raise_of_the_base_class():
    assert metrics.base_class_raises(TREES) == []
    found = metrics.base_class_raises(planted("def f():\n    raise LayermodError('x')\n"
                                              "def g():\n    raise errors.LayermodError('x')\n"
                                              "def h():\n    raise GraphError('x')\n"))
    assert found == ["src/layermod/measure/planted.py:2", "src/layermod/measure/planted.py:4"]


def test_no_library_message_names_a_flag():
    assert metrics.flags_in_messages(TREES) == []
    source = ("def f(k):\n    raise GraphError(f'k={k} is too large; lower --k')\n"
              "def g():\n    warnings.warn('pass --n-per-class', RuntimeWarning)\n"
              "def h():\n    raise GraphError('k must be 1 or more; lower k')\n")
    assert metrics.flags_in_messages(planted(source)) == ["src/layermod/measure/planted.py:2",
                                                          "src/layermod/measure/planted.py:4"]
    assert metrics.flags_in_messages(planted(source, "src/layermod/cli/planted.py")) == []  # the CLI names flags


def test_no_function_over_60_lines_outside_pruning():
    long = [entry for entry in metrics.long_functions(TREES)
            if not entry.startswith(("src/layermod/pruning/", "src/layermod/cli/prune"))]
    assert long == []
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    assert metrics.long_functions(planted(f"def f():\n{body}\n")) == ["src/layermod/measure/planted.py::f (61)"]
    assert metrics.long_functions(planted(f"def f():\n{body[:body.rindex(chr(10))]}\n")) == []
