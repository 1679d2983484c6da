"""Figures of merit and sanity checks of one run, read from its stdout and stderr.

Examples
--------
>>> from hpcbatch.campaigns.model import FigureSpec
>>> spec = FigureSpec(name="time", regex=r"time = (?P<time>\\S+) s", source_unit="s", unit="us")
>>> extract([spec], "time = 2.5e-06 s\\n", "")
[Figure(name='time', value=2.5, unit='us', labels={})]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hpcbatch.campaigns.model import FigureSpec, Sanity, convert

__all__ = ["Figure", "check_sanity", "extract", "label_value"]


@dataclass(frozen=True)
class Figure:
    """One value of a figure in one run.

    Attributes
    ----------
    name
        The figure's name.
    value
        The value, in ``unit``.
    unit
        The figure's unit.
    labels
        The other named groups of the match (numbers as numbers).
    """

    name: str
    value: float
    unit: str
    labels: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"name", "value", "unit", "labels"}``."""
        return asdict(self)


def label_value(text: str | None) -> Any:
    """A label as a number when it reads as one (``"1024"`` -> 1024), else the text."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def extract(specs: Sequence[FigureSpec], stdout: str, stderr: str) -> list[Figure]:
    """Every value of every figure in a run's output.

    Parameters
    ----------
    specs
        The benchmark's figures.
    stdout, stderr
        The run's output (the primary's ``stdout.txt`` and ``stderr.txt``).

    Returns
    -------
    list of Figure
        In figure order, then match order. A match whose value group is
        empty or not a finite number is skipped.
    """
    out = []
    for spec in specs:
        text = stdout if spec.stream == "stdout" else stderr
        group = spec.value_group
        for m in re.finditer(spec.regex, text, re.MULTILINE):
            raw = m.group(group)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue
            if spec.source_unit is not None:
                value = convert(value, spec.source_unit, spec.unit)
            labels = {k: label_value(v) for k, v in m.groupdict().items() if k != group}
            out.append(Figure(spec.name, value, spec.unit, labels))
    return out


def check_sanity(sanity: Sanity, specs: Sequence[FigureSpec], figures: Sequence[Figure],
                 stdout: str, stderr: str, exit_code: int | None,
                 failure: str | None = None) -> list[str]:
    """Why a run fails its sanity conditions (ReFrame's sanity patterns).

    Parameters
    ----------
    sanity
        The benchmark's conditions.
    specs
        Its figures: a required figure with no value fails.
    figures
        The values :func:`extract` found.
    stdout, stderr
        The run's output.
    exit_code
        The task's exit code (None when it has none).
    failure
        The task's failure information (``code: message``), if any.

    Returns
    -------
    list of str
        One sentence per failed condition; empty when the run is sane.
    """
    problems = []
    if failure:
        problems.append(f"task failed: {failure}")
    if sanity.exit_code is not None and exit_code != sanity.exit_code:
        problems.append(f"exit code {exit_code}, expected {sanity.exit_code}")
    both = stdout + ("\n" if stdout and not stdout.endswith("\n") else "") + stderr
    for pattern in sanity.must_match:
        if not re.search(pattern, both, re.MULTILINE):
            problems.append(f"pattern {pattern!r} not found in the output")
    for pattern in sanity.must_not_match:
        m = re.search(pattern, both, re.MULTILINE)
        if m:
            problems.append(f"pattern {pattern!r} found in the output: {m.group(0)!r}")
    found = {f.name for f in figures}
    for spec in specs:
        if spec.required and spec.name not in found:
            problems.append(f"figure {spec.name} not found in {spec.stream} "
                            f"(regex {spec.regex!r})")
    return problems
