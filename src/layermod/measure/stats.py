"""Paired statistics: is the difference between two methods measured on the same seeds real?

Two methods compared on the same seeds (same fine-tuning data order, same test set) give paired results
``a_i, b_i``; :func:`paired_test` looks at the differences ``d_i = a_i - b_i``.

Decisions, on purpose:

* **Two tests, both two-sided.** The paired t-test (:func:`scipy.stats.ttest_rel`) assumes the differences are
  roughly normal; the sign-flip permutation test assumes only that, if the methods were alike, each difference
  would be as likely positive as negative. With n <= 16 pairs every one of the 2^n sign patterns is enumerated
  (an exact p-value); beyond that 2^16 patterns are drawn with a fixed seed, so the p-value is reproducible.
  With 3 seeds the smallest possible sign-flip p-value is 2/8 = 0.25: three seeds alone can never be
  "significant" by that test, which is why results are also pooled over budgets.
* **Undefined is NaN, not 0.** With one pair, or all differences equal (zero spread), the t-test is undefined
  and its p-value is NaN; the sign-flip p-value is still defined (1 when every difference is 0).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from layermod.errors import CurveError

__all__ = ["PairedTest", "mean_test", "paired_test"]

_EXACT_MAX = 16
_DRAWS = 1 << 16


@dataclass(frozen=True)
class PairedTest:
    """The differences ``a - b`` over n pairs.

    Attributes:
        n: number of pairs.
        mean: mean difference.
        std: sample standard deviation of the differences (ddof 1; NaN for n = 1).
        p_t: two-sided p-value of the paired t-test (NaN when undefined).
        p_sign: two-sided p-value of the sign-flip permutation test.
    """

    n: int
    mean: float
    std: float
    p_t: float
    p_sign: float

    def to_dict(self) -> dict:
        """JSON-ready: undefined numbers become None."""
        return {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                for key, value in asdict(self).items()}


def mean_test(differences: Sequence[float]) -> float | None:
    """Two-sided p-value of the one-sample t-test of ``differences`` (n,) against 0, e.g. one mean difference per
    budget or per base network, each the unit; None when undefined (fewer than 2 values, or all the same)."""
    if len(differences) < 2 or float(np.std(differences)) == 0.0:
        return None
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(differences, 0.0).pvalue)


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired comparison of ``a`` (n,) and ``b`` (n,), matched by position (e.g. by seed).

    Raises:
        LayermodError: different lengths, no pairs, or non-finite values.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise CurveError(f"a paired test needs two equally long, non-empty lists; got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise CurveError("a paired test needs finite values; drop the failed runs first")
    d = x - y
    n = len(d)
    std = float(np.std(d, ddof=1)) if n > 1 else math.nan
    p_t = math.nan
    if n > 1 and std > 0:
        from scipy.stats import ttest_rel

        p_t = float(ttest_rel(x, y).pvalue)
    return PairedTest(n, float(d.mean()), std, p_t, _sign_flip(d))


def _sign_flip(d: np.ndarray) -> float:
    """Share of sign patterns whose |mean| reaches the observed |mean| (exact up to 2^16 patterns)."""
    if len(d) <= _EXACT_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(_DRAWS, len(d)))
    observed = abs(d.mean())
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))
