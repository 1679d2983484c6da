"""A campaign's results: run records, groups of repeats, reference checks, the summary.

The summary (``summary.json``, the campaign job's ``JobOutput``) is one JSON
object::

    {"schema": "hpcbatch.bench/1", "campaign": {...the campaign file...},
     "jobId": "bench-ringtest-20261202-111500", "poolId": "p", "labels": ["testbed"],
     "startTime": "...Z", "endTime": "...Z", "overrides": {...},
     "runs": [{"taskId", "benchmark", "pointIndex", "params", "repeat", "exitCode",
               "failure", "sanity": [problems], "figures": [{"name", "value",
               "unit", "labels"}], "stderrTail", "durationS", "nodes"}, ...],
     "groups": [...], "checks": [...], "passed": true}

A *group* is one figure at one parameter point with one set of labels, over
the repeats whose runs passed their sanity checks (a run's several values of
the same group are averaged first); references are checked against a group's
mean.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpcbatch.campaigns.model import (
    Campaign,
    CampaignError,
    ReferenceKey,
    parse_campaign,
)

__all__ = [
    "SCHEMA",
    "Check",
    "Group",
    "check_references",
    "group_key",
    "groups_of",
    "load_summary",
    "make_summary",
]

SCHEMA = "hpcbatch.bench/1"
"""The ``schema`` of a campaign summary."""


def group_key(benchmark: str, figure: str, params: Mapping[str, Any],
              labels: Mapping[str, Any]) -> str:
    """A stable text key of a group (compares groups across campaigns)."""
    return json.dumps([benchmark, figure, dict(params), dict(labels)], sort_keys=True,
                      default=str)


@dataclass
class Group:
    """One figure at one parameter point with one set of labels, over repeats."""

    benchmark: str
    figure: str
    unit: str
    params: dict[str, Any]
    labels: dict[str, Any]
    values: list[float]

    @property
    def key(self) -> str:
        """:func:`group_key` of the group."""
        return group_key(self.benchmark, self.figure, self.params, self.labels)

    @property
    def mean(self) -> float:
        """Mean over the repeats."""
        return statistics.fmean(self.values)

    @property
    def stdev(self) -> float:
        """Sample standard deviation (0 with one value)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The group with its statistics (``n``, ``mean``, ``stdev``, ``min``, ``max``)."""
        return {"benchmark": self.benchmark, "figure": self.figure, "unit": self.unit,
                "params": self.params, "labels": self.labels, "values": self.values,
                "n": len(self.values), "mean": self.mean, "stdev": self.stdev,
                "min": min(self.values), "max": max(self.values)}


def groups_of(runs: Sequence[Mapping[str, Any]]) -> list[Group]:
    """Group the figures of the sane runs by (benchmark, figure, point, labels).

    Parameters
    ----------
    runs
        Run records of a summary.

    Returns
    -------
    list of Group
        In the order first seen; each value is one run's (mean) value.
    """
    groups: dict[str, Group] = {}
    for run in runs:
        if run.get("sanity"):
            continue
        per_run: dict[str, list[float]] = {}
        meta: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for fig in run.get("figures", []):
            key = group_key(run["benchmark"], fig["name"], run["params"], fig["labels"])
            per_run.setdefault(key, []).append(float(fig["value"]))
            meta[key] = (fig["name"], fig["unit"], dict(fig["labels"]))
        for key, vals in per_run.items():
            name, unit, labels = meta[key]
            if key not in groups:
                groups[key] = Group(run["benchmark"], name, unit, dict(run["params"]), labels, [])
            groups[key].values.append(statistics.fmean(vals))
    return list(groups.values())


@dataclass
class Check:
    """A group's mean against a reference."""

    benchmark: str
    figure: str
    key: str
    unit: str
    params: dict[str, Any]
    labels: dict[str, Any]
    mean: float | None
    reference: list[Any]
    lower_bound: float | None
    upper_bound: float | None
    passed: bool | None

    @property
    def deviation(self) -> float | None:
        """``(mean - value) / |value|`` (None without a mean or with a zero reference)."""
        ref = float(self.reference[0])
        if self.mean is None or ref == 0:
            return None
        return (self.mean - ref) / abs(ref)

    def describe(self) -> str:
        """A sentence: which figure missed which reference by how much."""
        where = " ".join(f"{k}={v}" for k, v in {**self.params, **self.labels}.items())
        value, lower, upper = self.reference[:3]
        if self.mean is None:
            return f"{self.benchmark} {self.figure} [{where}]: no value to check"
        dev = self.deviation
        bound = (f"[{_num(self.lower_bound, '-inf')}, {_num(self.upper_bound, 'inf')}] "
                 f"{self.unit}")
        verdict = "within" if self.passed else "outside"
        return (f"{self.benchmark} {self.figure} [{where}]: {_num(self.mean)} {self.unit} is "
                f"{verdict} {bound} (reference {_num(value)} {self.unit}, tolerance "
                f"{lower}/{upper}{'' if dev is None else f'; {dev:+.1%}'})")

    def to_json(self) -> dict[str, Any]:
        """The check as JSON."""
        return {"benchmark": self.benchmark, "figure": self.figure, "referenceKey": self.key,
                "unit": self.unit, "params": self.params, "labels": self.labels,
                "mean": self.mean, "reference": self.reference,
                "lowerBound": self.lower_bound, "upperBound": self.upper_bound,
                "deviation": self.deviation, "passed": self.passed,
                "message": self.describe()}


def _num(x: float | None, unbounded: str = "-") -> str:
    """``x`` to 4 significant digits; ``unbounded`` (``-inf``, ``inf``) when None."""
    return unbounded if x is None else f"{x:.4g}"


def check_references(campaign: Campaign, groups: Sequence[Group], pool_id: str,
                     labels: Sequence[str]) -> list[Check]:
    """Check every group against the references that apply on the pool.

    Parameters
    ----------
    campaign
        The campaign (its benchmarks' ``references``).
    groups
        :func:`groups_of` of its runs.
    pool_id, labels
        The pool it ran on and that pool's host labels (its ``vmSize``).

    Returns
    -------
    list of Check
        One per (reference, matching group); a reference that matches no
        group gives one check with no mean and ``passed`` None.
    """
    checks = []
    for bench in campaign.benchmarks:
        for key_text, ref in bench.references_for(pool_id, list(labels)).items():
            key = ReferenceKey.parse(key_text)
            lo, hi = ref.bounds()
            matched = [g for g in groups if g.benchmark == bench.name and g.figure == key.figure
                       and key.matches({**g.params, **g.labels})]
            unit = next((f.unit for f in bench.figures if f.name == key.figure), "")
            if not matched:
                checks.append(Check(bench.name, key.figure, key_text, unit, {}, dict(key.where),
                                    None, ref.as_tuple(), lo, hi, None))
            for g in matched:
                mean = g.mean
                passed = (lo is None or mean >= lo) and (hi is None or mean <= hi)
                checks.append(Check(bench.name, key.figure, key_text, unit, g.params, g.labels,
                                    mean, ref.as_tuple(), lo, hi, passed))
    return checks


def make_summary(campaign: Campaign, *, job_id: str, pool_id: str, labels: Sequence[str],
                 runs: Sequence[Mapping[str, Any]], start_time: str, end_time: str,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build a campaign's summary (see the module documentation).

    Parameters
    ----------
    campaign
        The campaign run.
    job_id, pool_id, labels
        Its job, pool and the pool's host labels.
    runs
        The run records.
    start_time, end_time
        ISO 8601 UTC times of its first task's addition and its last task's end.
    overrides
        The ``--set`` overrides it ran with.

    Returns
    -------
    dict
        The summary; ``passed`` is True when every run is sane and no check failed.
    """
    groups = groups_of(runs)
    checks = check_references(campaign, groups, pool_id, labels)
    passed = all(not r.get("sanity") for r in runs) and all(c.passed is not False
                                                            for c in checks)
    return {"schema": SCHEMA, "campaign": campaign.model_dump(mode="json"),
            "jobId": job_id, "poolId": pool_id, "labels": list(labels),
            "startTime": start_time, "endTime": end_time, "overrides": dict(overrides or {}),
            "runs": [dict(r) for r in runs], "groups": [g.to_json() for g in groups],
            "checks": [c.to_json() for c in checks], "passed": passed}


def load_summary(data: Any, source: str = "<summary>") -> tuple[Campaign, dict[str, Any]]:
    """Validate a summary read back from JSON; return its campaign and the summary.

    Raises
    ------
    CampaignError
        Not a summary of this schema, or its campaign is invalid.
    """
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise CampaignError(f"{source} is not a campaign summary (schema {SCHEMA})")
    return parse_campaign(data.get("campaign"), f"{source} (campaign)"), data
