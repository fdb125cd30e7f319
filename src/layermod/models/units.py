"""Units removed from a built model: the one way a pruned model is made and rebuilt.

A pruned model is its architecture with some named submodules replaced by ``nn.Identity``; every other module
keeps its name, so the pruned weights load by the same keys. :mod:`layermod.pruning` decides *which* units may
go (shape-preserving units, at least one per stage) and calls :func:`remove_units`; a checkpoint of a pruned
model records ``"plan": {"remove": [names]}`` and :func:`layermod.models.checkpoint.load_checkpoint` rebuilds it
with the same function.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence

from torch import nn

from layermod.errors import PlanError

__all__ = ["remove_units"]


def remove_units(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of ``model`` with each module in ``names`` replaced by ``nn.Identity`` (``model`` is unchanged).

    Raises:
        PlanError: a name listed twice, a name that is not a submodule of ``model`` (with the closest names), or
            more names than the model has modules.
    """
    names = [str(name) for name in names]
    modules = [name for name, _ in model.named_modules() if name]
    if len(names) > len(modules):
        raise PlanError(f"the plan removes {len(names)} units from a model of {len(modules)} modules; fix the plan")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PlanError(f"pruning plan lists {', '.join(repeated)} more than once; list each unit once")
    known = set(modules)
    for name in names:
        if name not in known:
            raise unknown_unit(name, modules)
    pruned = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(pruned.get_submodule(parent_name), child, nn.Identity())
    return pruned


def unknown_unit(name: str, names: list[str]) -> PlanError:
    """The error for ``name``, which is not among ``names`` (the closest ones suggested)."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return PlanError(f"pruning plan names {name[:80]!r}, which is not a removable unit of this model{hint}")
