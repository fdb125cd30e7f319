"""The docstrings the API reference renders are in one style (Google): an ``Args:`` section that names exactly
the parameters of the signature, a ``Returns:`` (or ``Yields:``) section where something is returned, and no
NumPy-style sections. The callables are those docs/api/*.md reference with ``::: dotted.path``: a referenced
function, every public method defined on a referenced class, and every function in a referenced module's
``__all__`` (only the ``members`` the reference lists, where it lists them)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Yields|Raises|Examples|Attributes|Note|Notes):\s*$")
ENTRY = re.compile(r"^(\*{0,2}\w+(?:, \*{0,2}\w+)*)(?: \([^)]*\))?:(?:\s|$)")
NUMPY = re.compile(r"^(Parameters|Returns|Yields|Raises|Other Parameters|See Also)\n-{3,}\s*$", re.MULTILINE)


def references() -> list[tuple[str, list[str] | None]]:
    """Every ``::: dotted.path`` of docs/api/*.md, with the ``members`` its options list (None: all)."""
    found = []
    for path in sorted((ROOT / "docs" / "api").glob("*.md")):
        for match in re.finditer(r"^::: (\S+)\n((?:[ \t]+\S.*\n?)*)", path.read_text(encoding="utf-8"), re.MULTILINE):
            options = match.group(2)
            members = re.search(r"^\s*members:\s*\n((?:\s*- \S+\n?)+)", options, re.MULTILINE)
            found.append((match.group(1), re.findall(r"- (\S+)", members.group(1)) if members else None))
    return found


def resolve(reference: str) -> object:
    try:
        return importlib.import_module(reference)
    except ImportError:
        module, _, name = reference.rpartition(".")
        return getattr(importlib.import_module(module), name)


def rendered_callables() -> dict[str, object]:
    """The callables the API reference renders, by dotted name."""
    found = {}
    for reference, members in references():
        obj = resolve(reference)
        if inspect.ismodule(obj):
            names = [name for name in getattr(obj, "__all__", ()) if members is None or name in members]
            found.update({f"{reference}.{name}": getattr(obj, name) for name in names
                          if inspect.isfunction(inspect.unwrap(getattr(obj, name)))})
        elif inspect.isclass(obj):
            for name, value in vars(obj).items():
                value = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                if not name.startswith("_") and inspect.isfunction(inspect.unwrap(value)):
                    found[f"{reference}.{name}"] = value
        else:
            found[reference] = obj
    return found


def section(lines: list[str], title: str) -> list[str] | None:
    """The lines of the ``title:`` section (None without one), up to the next line at the left margin."""
    if f"{title}:" not in lines:
        return None
    body = []
    for line in lines[lines.index(f"{title}:") + 1:]:
        if line.strip() and not line[0].isspace():
            break
        body.append(line)
    return body


def arg_names(body: list[str]) -> tuple[list[str], list[str]]:
    """The names the entries of an ``Args:`` section give, and the lines at its indentation that are no entry."""
    lines = [line for line in body if line.strip()]
    if not lines:
        return [], []
    indent = len(lines[0]) - len(lines[0].lstrip())
    names, malformed = [], []
    for line in lines:
        if len(line) - len(line.lstrip()) != indent:
            continue
        entry = ENTRY.match(line[indent:])
        if entry:
            names += [name.lstrip("*") for name in entry.group(1).split(", ")]
            if ", " in entry.group(1):  # griffe reads it as one parameter named "a, b" (the strict build fails)
                malformed.append(line.strip())
        else:
            malformed.append(line.strip())
    return names, malformed


def problems(function) -> list[str]:
    """What is wrong with ``function``'s docstring, one line each (empty: nothing)."""
    doc = inspect.getdoc(function)
    if not doc:
        return ["no docstring"]
    found = [f"NumPy-style {match.group(1)!r} section" for match in NUMPY.finditer(doc)]
    signature = inspect.signature(function)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = [name for name, param in signature.parameters.items()
              if name not in ("self", "cls") and param.kind not in variadic]
    allowed = set(params) | {name for name, param in signature.parameters.items() if param.kind in variadic}
    lines = doc.splitlines()
    args = section(lines, "Args")
    if args is None and params:
        found.append(f"no Args: section (parameters {', '.join(params)})")
    elif args is not None:
        names, malformed = arg_names(args)
        found += [f"Args: does not name {name!r}" for name in params if name not in names]
        found += [f"Args: names {name!r}, not a parameter" for name in names if name not in allowed]
        found += [f"Args: {name!r} twice" for name in sorted({n for n in names if names.count(n) > 1})]
        found += [f"Args: line is no 'name: text' entry of one name: {line!r}" for line in malformed]
    returns = section(lines, "Returns") or section(lines, "Yields")
    if signature.return_annotation not in (None, "None", inspect.Signature.empty) and not returns:
        found.append(f"no Returns: or Yields: section (returns {signature.return_annotation})")
    if returns and len(arg_names(returns)[1]) > 1:  # griffe makes each line at the section's indentation an item
        found.append("Returns: text continued at the section's indentation (indent the lines after the first)")
    return found


CALLABLES = rendered_callables()


def test_the_reference_renders_the_callables_it_should():
    assert len(CALLABLES) > 100
    assert "layermod.analysis.curve.Curve.load" in CALLABLES  # a classmethod of a referenced class
    assert "layermod.pruning.units.apply_plan" in CALLABLES  # a function of a referenced module's __all__
    assert "layermod.data.as_dataset" in CALLABLES and "layermod.data.gather" not in CALLABLES  # its members only


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_the_docstring_has_its_sections(name):
    assert problems(CALLABLES[name]) == [], f"{name}: " + "; ".join(problems(CALLABLES[name]))


def planted(features, labels, *, k: int = 10) -> float:
    """A planted docstring.

    Args:
        features: (N, D) tensor.
        classes: stale name.

    Returns:
        A number,
        continued at the section's indentation.
    """
    return 0.0


def planted_numpy(features) -> float:
    """A planted docstring.

    Parameters
    ----------
    features : tensor
    """
    return 0.0


def planted_pair(features, labels) -> float:
    """Two names in one entry.

    Args:
        features, labels: (N, D) tensor and (N,) ints.

    Returns:
        A number.
    """
    return 0.0


def planted_bare(features, *, k: int = 10) -> float:
    """No sections at all."""
    return 0.0


def test_the_checker_reports_planted_faults():
    assert problems(planted) == ["Args: does not name 'labels'", "Args: does not name 'k'",
                                 "Args: names 'classes', not a parameter",
                                 "Returns: text continued at the section's indentation "
                                 "(indent the lines after the first)"]
    assert "NumPy-style 'Parameters' section" in problems(planted_numpy)
    assert problems(planted_pair) == ["Args: line is no 'name: text' entry of one name: "
                                      "'features, labels: (N, D) tensor and (N,) ints.'"]
    assert problems(planted_bare) == ["no Args: section (parameters features, k)",
                                      "no Returns: or Yields: section (returns float)"]


def test_the_checker_accepts_a_good_docstring():
    def good(features, labels, *args, k: int = 10, **kwargs) -> float:
        """A good docstring.

        Args:
            features: (N, D) tensor; the second line of the entry
                is indented further.
            labels: (N,) ints.
            k: neighbours.
            **kwargs: passed on.

        Returns:
            A number, the description
                continued further in.
        """
        return 0.0

    assert problems(good) == []
