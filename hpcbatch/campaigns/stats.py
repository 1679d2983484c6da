"""Compare two campaigns group by group, with a significance test over the repeats.

A group (one figure at one parameter point and label set, see
:mod:`hpcbatch.campaigns.results`) of campaign B is a *regression* when it
is worse than A's by more than ``threshold`` (relative change of the means,
in the figure's bad direction: up for times, down for bandwidths) and the
difference is significant: the two-sided p-value of the test over the
repeats is below ``alpha``. Welch's t-test (``scipy.stats.ttest_ind`` with
``equal_var=False``) is the default; Mann-Whitney U
(``scipy.stats.mannwhitneyu``) makes no normality assumption but needs at
least 4 repeats per side to reach p < 0.05. Two groups without spread (every
repeat equal) differ significantly when their means differ. A group with one
repeat on either side is never tested (``p`` is None) and so never flagged: a
single run is no evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hpcbatch.campaigns.model import lower_is_better
from hpcbatch.campaigns.results import group_key

__all__ = ["TESTS", "Comparison", "compare", "p_value"]

Test = Literal["welch", "mannwhitney"]
TESTS: tuple[Test, ...] = ("welch", "mannwhitney")
"""The significance tests :func:`compare` offers."""


def p_value(a: Sequence[float], b: Sequence[float], test: Test = "welch") -> float | None:
    """Two-sided p-value that ``a`` and ``b`` come from the same distribution.

    Parameters
    ----------
    a, b
        The repeats of one group in each campaign.
    test
        ``welch`` or ``mannwhitney``.

    Returns
    -------
    float or None
        None when either side has fewer than 2 values.

    Raises
    ------
    ValueError
        An unknown ``test``.
    """
    from scipy import stats

    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; expected one of: {', '.join(TESTS)}")
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    if test == "welch":
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    else:
        p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


@dataclass
class Comparison:
    """One group in both campaigns."""

    benchmark: str
    figure: str
    unit: str
    params: dict[str, Any]
    labels: dict[str, Any]
    a: list[float]
    b: list[float]
    change: float
    p: float | None
    verdict: Literal["regression", "improvement", "same"]

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON (``meanA``, ``meanB``, ``change``, ``p``, ``verdict`` ...)."""
        return {"benchmark": self.benchmark, "figure": self.figure, "unit": self.unit,
                "params": self.params, "labels": self.labels, "valuesA": self.a,
                "valuesB": self.b, "meanA": _mean(self.a), "meanB": _mean(self.b),
                "change": self.change, "p": self.p, "verdict": self.verdict}


def _mean(v: Sequence[float]) -> float:
    return sum(v) / len(v)


def compare(groups_a: Sequence[Mapping[str, Any]], groups_b: Sequence[Mapping[str, Any]], *,
            alpha: float = 0.05, threshold: float = 0.05, test: Test = "welch",
            better: Mapping[tuple[str, str], bool] | None = None) -> list[Comparison]:
    """Compare the groups two campaigns have in common.

    Parameters
    ----------
    groups_a, groups_b
        The ``groups`` of two summaries (A: the baseline, B: the new one).
    alpha
        Significance level of the two-sided test, in (0, 1).
    threshold
        Smallest relative change of the mean that counts (0.05: 5 %).
    test
        ``welch`` or ``mannwhitney``.
    better
        ``{(benchmark, figure): lower_is_better}``; default from the unit.

    Returns
    -------
    list of Comparison
        In A's group order; groups in only one campaign are left out.

    Raises
    ------
    ValueError
        ``alpha`` not in (0, 1), a negative ``threshold`` or an unknown ``test``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, not {threshold}")
    by_key = {group_key(g["benchmark"], g["figure"], g["params"], g["labels"]): g
              for g in groups_b}
    out = []
    for ga in groups_a:
        gb = by_key.get(group_key(ga["benchmark"], ga["figure"], ga["params"], ga["labels"]))
        if gb is None or ga["unit"] != gb["unit"]:
            continue
        a, b = [float(v) for v in ga["values"]], [float(v) for v in gb["values"]]
        ma, mb = _mean(a), _mean(b)
        change = (mb - ma) / abs(ma) if ma else (0.0 if mb == ma else math.inf)
        p = p_value(a, b, test)
        lower = (better or {}).get((ga["benchmark"], ga["figure"]), lower_is_better(ga["unit"]))
        worse = change > threshold if lower else change < -threshold
        improved = change < -threshold if lower else change > threshold
        significant = p is not None and p < alpha
        verdict: Literal["regression", "improvement", "same"] = (
            "regression" if worse and significant else
            "improvement" if improved and significant else "same")
        out.append(Comparison(ga["benchmark"], ga["figure"], ga["unit"], dict(ga["params"]),
                              dict(ga["labels"]), a, b, change, p, verdict))
    return out
