"""The ``"auto"`` measurement points: the stem, then one point per block of every stage.

The decisions behind it: docs/design.md, section layermod.extract.auto.
"""

from __future__ import annotations

import operator
import warnings
from collections import Counter

import torch
from torch import nn

from layermod.errors import LayerError
from layermod.extract.trace import LayerCall

__all__ = ["auto_layers", "residual_blocks"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}


class _Structure:
    """The traced calls of one model, seen as who called whom."""

    def __init__(self, model: nn.Module, calls: dict[str, LayerCall]):
        self.calls = calls
        self.modules = dict(model.named_modules())
        self.callees: dict[str | None, list[str]] = {}
        for name, call in calls.items():
            self.callees.setdefault(call.caller, []).append(name)
        self._expanded: dict[str, list[str]] = {}
        self._computes: dict[str, bool] = {}

    def module(self, name: str) -> nn.Module:
        return self.modules[self.calls[name].module]

    def is_leaf(self, name: str) -> bool:
        return not any(True for _ in self.module(name).children())

    def is_unit(self, name: str) -> bool:
        """A container whose children are all leaves (``conv -> bn -> act``)."""
        m = self.module(name)
        return isinstance(m, _CONTAINERS) and all(not any(True for _ in c.children()) for c in m.children())

    def is_block(self, name: str) -> bool:
        return not self.is_leaf(name) and not self.is_unit(name)

    def is_deep(self, name: str) -> bool:
        """A module with a grandchild: a block made of blocks or units (a transformer layer), not a wrapper of
        leaves (a conv, norm-activation or squeeze-excitation module)."""
        return any(any(True for _ in child.children()) for child in self.module(name).children())

    def computes(self, name: str) -> bool:
        """Holds a weight matrix or kernel (a parameter with 2+ dimensions)."""
        module = self.calls[name].module
        if module not in self._computes:
            self._computes[module] = any(p.ndim >= 2 for p in self.module(name).parameters())
        return self._computes[module]

    def has_batch(self, name: str) -> bool:
        call = self.calls[name]
        return call.shape is not None and (call.batch_dim is not None or call.ambiguous)

    def chains(self, caller: str | None) -> list[list[str]]:
        runs: list[list[str]] = []
        given: set[int] = set()
        for name in self.callees.get(caller, []):
            call = self.calls[name]
            if runs and call.takes is not None and call.takes in given:
                runs[-1].append(name)
            else:
                runs.append([name])
                given = set()
            if call.gives is not None:
                given.add(call.gives)
        return runs

    def expanded(self, name: str) -> list[str]:
        """``name`` or, seen through (see docs/design.md), the members of the chain it runs."""
        if name not in self._expanded:
            self._expanded[name] = self._expand(name)
        return self._expanded[name]

    def inner(self, name: str) -> list[str] | None:
        """The expanded members of the one chain ``name`` runs from its input to its output, else None."""
        if self.is_leaf(name):
            return None
        runs = self.chains(name)
        call = self.calls[name]
        if len(runs) == 1 and self.calls[runs[0][0]].takes == call.takes and call.gives is not None and any(
            self.calls[m].gives == call.gives for m in runs[0]
        ):
            return [n for member in runs[0] for n in self.expanded(member)]
        return None

    def _expand(self, name: str) -> list[str]:
        inner = self.inner(name)
        if inner is None:
            return [name]
        if isinstance(self.module(name), _CONTAINERS):
            if not all(self.is_leaf(n) for n in inner):
                return inner
        elif max(Counter(type(self.module(n)) for n in inner if self.is_deep(n)).values(), default=0) >= 2:
            return inner
        return [name]

    def members(self, run: list[str]) -> tuple[list[str], int]:
        """``(members, score)`` of a chain: its expanded members, a member that runs only blocks of the most
        repeated class seen through too (RegNet's ``s1``, a stage of one block), and that class's count."""
        members = [n for member in run for n in self.expanded(member)]
        counts = Counter(type(self.module(n)) for n in members if self.is_block(n))
        top = max(counts.values(), default=0)
        kinds = {kind for kind, count in counts.items() if count == top}
        seen = []
        for name in members:
            inner = self.inner(name) if type(self.module(name)) not in kinds else None
            ok = inner and all(self.is_block(n) and type(self.module(n)) in kinds for n in inner)
            seen.extend(inner if ok else [name])
        counts = Counter(type(self.module(n)) for n in seen if self.is_block(n))
        return seen, max(counts.values(), default=0)

    def inside(self, name: str, others: set[str]) -> bool:
        """``name`` is one of ``others`` or runs inside one of them."""
        while name is not None:
            if name in others:
                return True
            name = self.calls[name].caller
        return False

    def best_chains(self) -> tuple[list[list[str]], int]:
        """``(chains, score)``: the expanded chains with the most blocks of one class (ties all kept, e.g. an
        encoder and a decoder; a chain inside an earlier one's members is not a tie)."""
        found: list[tuple[list[str], int]] = []
        for caller in [None, *self.calls]:
            for run in self.chains(caller):
                found.append(self.members(run))
        score = max((top for _, top in found), default=0)
        kept: list[list[str]] = []
        seen: list[set[str]] = []
        for members, top in found:
            if top == score and not any(all(self.inside(n, names) for n in members) for names in seen):
                kept.append(members)
                seen.append(set(members))
        return kept, score


def _stem(s: _Structure, members: list[str], first: int, blocks: set[str]) -> str | None:
    for name in reversed(members[:first]):
        if s.computes(name) and s.has_batch(name):
            return name
    for name in reversed(members[:first]):  # a norm right before the blocks (BART's layernorm_embedding)
        if any(True for _ in s.module(name).parameters()) and s.has_batch(name):
            return name
    start = s.calls[members[first]].order
    before = [n for n, c in s.calls.items()
              if c.end < start and s.computes(n) and s.has_batch(n) and not s.inside(n, blocks)]
    return max(before, key=lambda n: s.calls[n].end) if before else None


def _span(s: _Structure, members: list[str], score: int) -> tuple[int, int]:
    """Positions of the first and last block: the last member of the chain's most repeated block class(es), the
    first of them or, when deep members come between the last flat member that computes (a conv or conv unit,
    the stem) and it, the first of those (EfficientNet's first block, of a class of its own)."""
    counts = Counter(type(s.module(n)) for n in members if s.is_block(n))
    kinds = {kind for kind, count in counts.items() if count == score}
    at = [i for i, n in enumerate(members) if s.is_block(n) and type(s.module(n)) in kinds]
    first = at[0]
    flat = [i for i, n in enumerate(members[:first]) if s.computes(n) and s.has_batch(n) and not s.is_deep(n)]
    if flat:
        first = next((i for i in range(flat[-1] + 1, first) if s.is_deep(members[i]) and s.has_batch(members[i])),
                     first)
    return first, at[-1]


def _chain_points(s: _Structure, members: list[str], score: int, blocks: set[str]) -> list[str]:
    first, last = _span(s, members, score)
    points = [n for n in members[first : last + 1] if not s.is_leaf(n) and s.has_batch(n)]
    stem = _stem(s, members, first, blocks)
    if stem is None:
        warnings.warn(f"auto layers: no stem found before {points[0]!r}; the points start at the first block",
                      stacklevel=4)
        return points
    return [stem, *points]


def _block_points(s: _Structure) -> tuple[list[str] | None, int]:
    chains, score = s.best_chains()
    if score < 2:
        return None, score
    spans = [_span(s, members, score) for members in chains]
    blocks = {n for members, (first, last) in zip(chains, spans) for n in members[first : last + 1]}
    return list(dict.fromkeys(p for members in chains for p in _chain_points(s, members, score, blocks))), score


def auto_layers(model: nn.Module, calls: dict[str, LayerCall]) -> list[str]:
    """The default measurement points of ``model`` in forward order (rules in docs/design.md).

    Args:
        model: the network.
        calls: :func:`trace_calls` of the same model.

    Returns:
        The point names, in forward order.

    Raises:
        LayerError: no blocks, convolutions or linear layers to choose from.
    """
    s = _Structure(model, calls)
    points, score = _block_points(s)
    if points:
        return sorted(points, key=lambda n: calls[n].order)
    for kinds, what in ((_CONV, "convolution"), ((nn.Linear,), "nn.Linear")):
        found = [n for n in calls if isinstance(s.module(n), kinds) and s.has_batch(n)]
        if len(found) >= 2:
            if score:  # blocks exist but none repeats: the structure did not decide
                warnings.warn(f"auto layers: no block class repeats in a chain; measuring every {what} "
                              f"({len(found)} points) instead", stacklevel=2)
            return found
    raise LayerError(
        "cannot choose layers automatically for this model (no repeated blocks, convolutions or linear layers "
        "found); pass layer names (see `layermod layers`)"
    )


# ----------------------------------------------------------------------------------------- residual blocks


class _ShallowTracer(torch.fx.Tracer):
    """Traces only a module's own forward: every child stays one opaque call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _has_residual_add(module: nn.Module) -> bool:
    """True if ``module.forward`` adds two tensors that both depend on its first input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _ShallowTracer().trace(module)
    except Exception:  # untraceable code (data-dependent control flow, ...) is simply not recognised
        return False
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if not placeholders:
        return False
    depends = {placeholders[0]}
    for node in graph.nodes:
        if any(arg in depends for arg in node.all_input_nodes):
            depends.add(node)
        is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        )
        if is_add and len(node.args) >= 2 and all(arg in depends for arg in node.args[:2]):
            return True
    return False


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of the innermost modules whose own forward (traced with torch.fx, children opaque) adds two tensors
    that both depend on its input. Not used by :func:`auto_layers`; kept as a diagnostic."""
    found = [name for name, m in model.named_modules()
             if name and any(True for _ in m.children()) and _has_residual_add(m)]
    return [name for name in found if not any(other.startswith(name + ".") for other in found)]
