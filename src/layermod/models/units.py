"""Units removed from a built model: the one way a pruned model is made and rebuilt.

A pruned model is its architecture with some named submodules replaced by a :class:`PassThrough` (an
``nn.Identity`` that takes the arguments the unit took and hands back the unit's input in the structure the unit
returned); every other module keeps its name, so the pruned weights load by the same keys.
:mod:`layermod.pruning` decides *which* units may go (units the model runs without, at least one per stage) and
calls :func:`remove_units`; a checkpoint of a pruned model records ``"plan": {"remove": [names]}`` (and
``"outputs": {name: n}`` for units that returned a tuple of ``n``) and
:func:`layermod.models.checkpoint.load_checkpoint` rebuilds it with the same function.

Decisions, on purpose:

* **The hidden state is the input.** A transformer block is called as ``block(hidden_states, mask, ...,
  key=value, ...)``; its stand-in returns the first positional argument, else the ``hidden_states`` keyword.
* **The structure is recorded, not guessed.** Whether the unit returned its tensor or a tuple (the hidden state,
  then what the caller may read: attention weights, present key-values) is seen on an example pass by
  :mod:`layermod.pruning.units` and given here as ``outputs``; the tuple's other entries come back as ``None``.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from layermod.errors import PlanError

__all__ = ["PassThrough", "check_outputs", "remove_units", "removed_outputs"]

_MAX_OUTPUTS = 64  # entries of a tuple a unit may return


class PassThrough(nn.Identity):
    """What a removed unit becomes: called with any arguments, it returns its hidden-state input.

    Args:
        outputs: the structure the unit returned: None for the tensor itself, ``n`` for a tuple of ``n``: the
            hidden state then ``n - 1`` ``None`` placeholders.

    ``forward(hidden_states (B, ...), *args, **kwargs)`` (or ``forward(hidden_states=..., ...)``) returns
    ``hidden_states`` unchanged, or ``(hidden_states, None, ...)``.
    """

    def __init__(self, *, outputs: int | None = None) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            hidden = args[0]
        elif "hidden_states" in kwargs:
            hidden = kwargs["hidden_states"]
        else:
            raise TypeError("a removed unit was called without a positional input or hidden_states")
        if self.outputs is None:
            return hidden
        return (hidden, *(None,) * (self.outputs - 1))

    def extra_repr(self) -> str:
        return "" if self.outputs is None else f"outputs={self.outputs}"


def remove_units(model: nn.Module, names: Sequence[str], *, outputs: Mapping[str, int] | None = None) -> nn.Module:
    """A copy of ``model`` with each module in ``names`` replaced by a :class:`PassThrough` (``model`` is unchanged).

    Args:
        model: the network.
        names: module names, e.g. ``["layer3.4"]``.
        outputs: ``{name: n}`` for the units that returned a tuple of ``n`` (see :func:`check_outputs`); the
            others returned their tensor.

    Returns:
        The pruned copy.

    Raises:
        PlanError: a name listed twice, a name that is not a submodule of ``model`` (with the closest names),
            more names than the model has modules, or ``outputs`` that do not fit ``names``.
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
    outputs = check_outputs(outputs or {}, names)
    pruned = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(pruned.get_submodule(parent_name), child, PassThrough(outputs=outputs.get(name)))
    return pruned


def check_outputs(outputs: object, names: Sequence[str]) -> dict[str, int]:
    """``outputs`` as ``{unit name: tuple length >= 1}`` over units among ``names``.

    Args:
        outputs: the plan's ``"outputs"`` entry.
        names: the units the plan removes.

    Returns:
        ``{unit name: tuple length}``.

    Raises:
        PlanError: not such a mapping, or a key that is not among ``names``.
    """
    if not isinstance(outputs, Mapping) or not all(
        isinstance(key, str) and isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= _MAX_OUTPUTS
        for key, n in outputs.items()
    ):
        raise PlanError(f"a plan's outputs must map unit names to tuple lengths 1..{_MAX_OUTPUTS}; fix the plan")
    stray = sorted(set(outputs) - set(names))
    if stray:
        raise PlanError(f"a plan's outputs name {', '.join(stray)[:80]}, which it does not remove; fix the plan")
    return dict(outputs)


def removed_outputs(model: nn.Module) -> dict[str, int]:
    """The removed units of ``model`` that stand in for a tuple (for a plan record).

    Args:
        model: a network pruned by :func:`remove_units`.

    Returns:
        ``{name: n}``, n the tuple's length.
    """
    return {name: module.outputs for name, module in model.named_modules()
            if isinstance(module, PassThrough) and module.outputs is not None}


def unknown_unit(name: str, names: list[str]) -> PlanError:
    """The error for ``name``, which is not among ``names`` (the closest ones suggested)."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return PlanError(f"pruning plan names {name[:80]!r}, which is not a removable unit of this model{hint}")
