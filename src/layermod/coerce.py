"""What users pass, made into what the measurement uses: numbers as dense real tensors, seeds as numpy seeds.

The lowest room of the package beside :mod:`layermod.errors`: data, graph and modularity code all call it.

Decisions, on purpose:

* **Autograd.** A tensor that requires grad is detached: measuring never needs its history.
* **Sparse input.** A scipy sparse matrix or a sparse torch tensor is made dense when that takes at most
  ``MAX_DENSE_VALUES`` values (256 MiB as float32); a larger one is refused, asking for a dense array.
* **Complex input** is refused: dropping the imaginary part (numpy's and torch's cast) would be silently wrong.
* **Seeds.** Any integer is a seed. A seed ``s >= 0`` is used as it is (``numpy.random.default_rng(s)`` gives
  the same stream as before); a negative one stands for ``s mod 2**128`` (so ``-1`` and ``2**128 - 1`` give the
  same draws). Whoever records the seed records it as given.
* **Torch's seeds.** ``torch.manual_seed`` takes integers in ``[-2**63, 2**64)``: :func:`torch_seed` passes
  those through unchanged (a seed gives torch's own weights for it) and hashes any other through its SeedSequence into
  ``[0, 2**64)``, so a seed of any size seeds torch too.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

from layermod.errors import LayermodError, one_line

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["MAX_DENSE_VALUES", "MAX_DRAWN", "as_real_tensor", "bar_disabled", "check_seed", "seed_sequence",
           "torch_seed"]

MAX_DENSE_VALUES = 2**26
MAX_DRAWN = 2**26
"""The most sample indices class-balanced draws may hold (:func:`layermod.balanced_draws`, ``DrawConfig``)."""
_NEGATIVE_SEED_MODULUS = 2**128
_TORCH_SEEDS = range(-2**63, 2**64)  # what torch.manual_seed and Generator.manual_seed take


def as_real_tensor(values: object, what: str, error: type[LayermodError]) -> torch.Tensor:
    """``values`` (tensor, array, nested lists, scipy sparse) as a dense real tensor without autograd history.

    The dtype and device are kept (an array becomes a CPU tensor of its dtype); callers convert as they need.

    Args:
        values: the user's numbers.
        what: how to name them in a message, e.g. ``"features"``.
        error: the :class:`LayermodError` subclass to raise.

    Raises:
        error: non-numeric or complex values, or a sparse input too large to make dense.
    """
    import scipy.sparse as sp
    import torch

    if sp.issparse(values):
        _check_dense_size(values.shape, what, error)
        values = values.toarray()
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
        if tensor.layout != torch.strided:
            _check_dense_size(tuple(tensor.shape), what, error)
            tensor = tensor.to_dense()
    else:
        try:
            tensor = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError) as err:
            reason = one_line(err)
            raise error(f"cannot read {what} as numbers ({reason}); pass a numeric array or tensor") from None
    if tensor.is_complex():
        raise error(f"{what} are complex; pass real values (e.g. the magnitude abs(x), or torch.view_as_real(x))")
    return tensor


def _check_dense_size(shape: tuple[int, ...], what: str, error: type[LayermodError]) -> None:
    size = math.prod(shape)
    if size > MAX_DENSE_VALUES:
        raise error(
            f"{what} are sparse with shape {tuple(shape)}, {size:,} values when dense (more than "
            f"{MAX_DENSE_VALUES:,}); pass a dense array of fewer samples or values"
        )


def seed_sequence(seed: int | np.random.SeedSequence, error: type[LayermodError]) -> np.random.SeedSequence:
    """Any integer seed (see the module doc) as a ``numpy.random.SeedSequence``; a SeedSequence passes through.

    Raises:
        error: a seed that is not an integer (floats and bools are refused, not rounded).
    """
    import numpy as np

    if isinstance(seed, np.random.SeedSequence):
        return seed
    value = check_seed(seed, error)
    return np.random.SeedSequence(value % _NEGATIVE_SEED_MODULUS if value < 0 else value)


def check_seed(seed: object, error: type[LayermodError]) -> int:
    """``seed`` as an int, as given (negative ones included); ``error`` unless it is an integer (floats and bools
    are refused, not rounded)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise error(f"seed={seed!r} must be an integer")
    return int(seed)


def torch_seed(seed: object, error: type[LayermodError]) -> int:
    """Any integer seed as one torch takes (see the module doc); ``error`` unless it is an integer."""
    value = check_seed(seed, error)
    if value in _TORCH_SEEDS:
        return value
    return int(seed_sequence(value, error).generate_state(1, "uint64")[0])


def bar_disabled(progress: bool | str) -> bool | None:
    """tqdm's ``disable`` for ``progress``: False or None never shows bars; True and ``"auto"`` show them when
    stderr is a terminal (tqdm's own check), ``"auto"`` also in a Jupyter notebook."""
    if progress == "auto":
        import sys

        shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
        return False if type(shell).__name__ == "ZMQInteractiveShell" else None
    return None if progress else True
