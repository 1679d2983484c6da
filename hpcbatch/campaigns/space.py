"""Parameter spaces and run plans: every (benchmark, parameter point, repeat) of a campaign.

A parameter's values are a list (``[1, 2, 4]``), a single value, an inclusive
arithmetic range (``{start: 1, stop: 4, step: 1}``) or an inclusive geometric
one (``{start: 1, stop: 1048576, factor: 4}``). Parameters are crossed
(every combination, the first-named parameter varying slowest) except those
named together in a ``zip`` group, whose lists are walked in step (they must
have the same length). A benchmark's parameters extend and override the
campaign's.

Commands are split into words (:func:`shlex.split`) before the placeholders are
filled, so a value never becomes shell syntax; each word is then formatted
with :meth:`str.format` from the campaign's variables, the point's parameters,
``ranks`` (``nodes * ppn``) and ``repeat``.

Examples
--------
>>> expand({"nodes": [1, 2], "ppn": {"start": 1, "stop": 2}})
[{'nodes': 1, 'ppn': 1}, {'nodes': 1, 'ppn': 2}, {'nodes': 2, 'ppn': 1}, {'nodes': 2, 'ppn': 2}]
>>> expand({"a": [1, 2], "b": ["x", "y"]}, zip_groups=[["a", "b"]])
[{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]
>>> values_of({"start": 1, "stop": 64, "factor": 4})
[1, 4, 16, 64]
"""

from __future__ import annotations

import itertools
import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from hpcbatch.campaigns.model import Benchmark, Campaign, CampaignError

__all__ = ["MAX_RUNS", "Run", "expand", "parse_override", "plan_runs", "values_of"]

MAX_RUNS = 10_000
"""Most runs one campaign may plan (a guard against a mistyped range)."""

_MAX_VALUES = 10_000


def _tidy(value: float) -> float:
    """A range value without binary rounding noise (``0.30000000000000004`` -> ``0.3``)."""
    return value if isinstance(value, int) else float(f"{value:.12g}")


def values_of(spec: Any, name: str = "parameter") -> list[Any]:
    """The values of one parameter spec.

    Parameters
    ----------
    spec
        A list, a scalar, ``{start, stop[, step]}`` or ``{start, stop, factor}``
        (inclusive ranges of numbers).
    name
        The parameter's name, for messages.

    Returns
    -------
    list

    Raises
    ------
    CampaignError
        An empty list, a range with bad keys, a step/factor that never reaches
        ``stop``, or more than 10000 values.
    """
    if isinstance(spec, list):
        if not spec:
            raise CampaignError(f"parameter {name}: the list of values is empty")
        return list(spec)
    if not isinstance(spec, dict):
        return [spec]
    keys = set(spec)
    if not ({"start", "stop"} <= keys <= {"start", "stop", "step", "factor"}) or \
            {"step", "factor"} <= keys:
        raise CampaignError(f"parameter {name}: a range is {{start, stop[, step]}} or "
                            f"{{start, stop, factor}}, not {sorted(keys)}")
    start, stop = spec["start"], spec["stop"]
    for key, val in spec.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise CampaignError(f"parameter {name}: range {key} must be a number, not {val!r}")
    out: list[Any] = []
    # a float range's last value may land just past ``stop`` by rounding: allow for it
    exact = all(isinstance(val, int) for val in spec.values())
    if "factor" in spec:
        factor = spec["factor"]
        if factor <= 1 or start <= 0:
            raise CampaignError(f"parameter {name}: a geometric range needs start > 0 and "
                                f"factor > 1 (got start={start}, factor={factor})")
        v = start
        while v <= stop + (0 if exact else abs(stop) * 1e-9) and len(out) <= _MAX_VALUES:
            out.append(_tidy(v))
            v = v * factor
    else:
        step = spec.get("step", 1)
        if step <= 0:
            raise CampaignError(f"parameter {name}: range step must be > 0, not {step}")
        i = 0
        while start + i * step <= stop + (0 if exact else step * 1e-9) and len(out) <= _MAX_VALUES:
            out.append(_tidy(start + i * step))
            i += 1
    if not out:
        raise CampaignError(f"parameter {name}: range {spec} is empty (start > stop)")
    if len(out) > _MAX_VALUES:
        raise CampaignError(f"parameter {name}: range {spec} has more than {_MAX_VALUES} values")
    return out


def expand(parameters: Mapping[str, Any],
           zip_groups: Sequence[Sequence[str]] = ()) -> list[dict[str, Any]]:
    """Every point of a parameter space.

    Parameters
    ----------
    parameters
        ``{name: spec}`` (:func:`values_of`), in the order to vary them
        (first slowest).
    zip_groups
        Groups of parameter names walked in step instead of crossed.

    Returns
    -------
    list of dict
        One ``{name: value}`` per point; an empty space gives one empty point.

    Raises
    ------
    CampaignError
        A zip group names an unknown parameter, a parameter twice, or lists
        of different lengths.
    """
    values = {name: values_of(spec, name) for name, spec in parameters.items()}
    grouped: dict[str, int] = {}
    for gi, group in enumerate(zip_groups):
        for name in group:
            if name not in values:
                raise CampaignError(f"zip group {list(group)} names {name!r}, which is not a "
                                    f"parameter (parameters: {', '.join(values) or 'none'})")
            if name in grouped:
                raise CampaignError(f"parameter {name!r} is in two zip groups")
            grouped[name] = gi
        lengths = {name: len(values[name]) for name in group}
        if len(set(lengths.values())) > 1:
            raise CampaignError(f"zip group {list(group)}: the lists have different lengths "
                                f"{lengths}")
    # axes: a single parameter, or a zip group (at the place of its first member)
    axes: list[list[dict[str, Any]]] = []
    seen_groups: set[int] = set()
    for name, vals in values.items():
        if name in grouped:
            gi = grouped[name]
            if gi in seen_groups:
                continue
            seen_groups.add(gi)
            group = list(zip_groups[gi])
            axes.append([dict(zip(group, combo))
                         for combo in zip(*(values[n] for n in group))])
        else:
            axes.append([{name: v} for v in vals])
    points = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        points.append({name: point[name] for name in values})
    return points


def parse_override(text: str) -> tuple[str, list[Any]]:
    """Parse a ``--set NAME=V1[,V2...]`` override.

    Returns
    -------
    (str, list)
        The name and its values, each read as YAML (``4`` is an int).

    Raises
    ------
    CampaignError
        Not ``NAME=VALUE``, or a value that is not valid YAML (a range such as
        ``{start: 4, stop: 16}`` is split at its commas: give its values).
    """
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not name.isidentifier():
        raise CampaignError(f"--set {text!r}: expected NAME=VALUE[,VALUE...]")
    vals = []
    for v in rest.split(","):
        try:
            vals.append(yaml.safe_load(v) if v.strip() else "")
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise CampaignError(
                f"--set {text!r}: value {v!r} is not valid YAML ({problem}); values are "
                "separated by commas, so give a range's values one by one "
                "(--set NAME=4,8,16)") from None
    return name, vals


@dataclass(frozen=True)
class Run:
    """One run of a campaign: a multi-instance task to add."""

    benchmark: str
    point_index: int
    params: dict[str, Any]
    repeat: int
    task_id: str
    argv: list[str]
    environment: dict[str, str]
    coordination_argv: list[str] | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        """The task's ``numberOfInstances``."""
        return int(self.params["nodes"])

    @property
    def ppn(self) -> int:
        """Ranks per node."""
        return int(self.params["ppn"])


def _format(word: str, context: Mapping[str, Any], where: str) -> str:
    try:
        for _, field_name, _, _ in string.Formatter().parse(word):
            if field_name is not None and field_name.split(".")[0].split("[")[0] not in context:
                raise CampaignError(f"{where}: placeholder {{{field_name}}} is neither a "
                                    f"parameter nor a variable (known: "
                                    f"{', '.join(sorted(context))})")
        return word.format(**context)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise CampaignError(f"{where}: cannot fill {word!r}: {exc}") from None


def _fill(template: str, context: Mapping[str, Any], where: str) -> list[str]:
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise CampaignError(f"{where}: {template!r} cannot be split into words: {exc}") from None
    return [_format(word, context, where) for word in words]


def _positive_int(value: Any, name: str, bench: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CampaignError(f"benchmark {bench}: parameter {name} must be an integer >= 1, "
                            f"not {value!r}")
    return value


def _task_id(bench: Benchmark, index: int, repeat: int) -> str:
    return f"{bench.name}-{index:03d}-r{repeat}"


def plan_runs(campaign: Campaign, overrides: Mapping[str, list[Any]] | None = None,
              only: Sequence[str] = ()) -> list[Run]:
    """Every run of a campaign, repeats of a point next to each other.

    Parameters
    ----------
    campaign
        The campaign.
    overrides
        ``{name: values}`` replacing a parameter's values, or a variable's
        value (one value), from ``--set``.
    only
        Benchmark names to plan (default: all).

    Returns
    -------
    list of Run
        In order: benchmark, point, repeat. Task IDs are
        ``{benchmark}-{point:03d}-r{repeat}``.

    Raises
    ------
    CampaignError
        A bad parameter space, an unknown placeholder or override name,
        ``nodes``/``ppn`` not positive integers, or more than :data:`MAX_RUNS` runs.
    """
    overrides = dict(overrides or {})
    names = {b.name for b in campaign.benchmarks}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise CampaignError(f"no benchmark {', '.join(unknown)} in campaign {campaign.name} "
                            f"(benchmarks: {', '.join(sorted(names))})")
    variables: dict[str, Any] = dict(campaign.variables)
    known = set(variables) | set(campaign.parameters) | {"nodes", "ppn"}
    for b in campaign.benchmarks:
        known |= set(b.parameters)
    bad = sorted(set(overrides) - known)
    if bad:
        raise CampaignError(f"--set {', '.join(bad)}: not a parameter or variable of campaign "
                            f"{campaign.name} (known: {', '.join(sorted(known))})")
    for name, vals in overrides.items():
        if name in variables:
            if len(vals) != 1:
                raise CampaignError(f"--set {name}: a variable takes one value, not {vals}")
            variables[name] = vals[0]
    runs: list[Run] = []
    for bench in campaign.benchmarks:
        if only and bench.name not in only:
            continue
        params: dict[str, Any] = {"nodes": 1, "ppn": 1}
        params.update(campaign.parameters)
        params.update(bench.parameters)
        for name, vals in overrides.items():
            if name in params or name in ("nodes", "ppn"):
                params[name] = vals
        clash = sorted(set(params) & set(variables))
        if clash:
            raise CampaignError(f"benchmark {bench.name}: {', '.join(clash)} is both a parameter "
                                "and a variable")
        for index, point in enumerate(expand(params, [*campaign.zip, *bench.zip])):
            _positive_int(point["nodes"], "nodes", bench.name)
            _positive_int(point["ppn"], "ppn", bench.name)
            for repeat in range(campaign.repeats):
                context = {**variables, **point, "ranks": point["nodes"] * point["ppn"],
                           "repeat": repeat}
                where = f"benchmark {bench.name}"
                env = {**campaign.environment, **bench.environment}
                env = {k: _format(v, context, f"{where} environment {k}") for k, v in env.items()}
                coord = (_fill(bench.coordination_command, context,
                               f"{where} coordination_command")
                         if bench.coordination_command else None)
                runs.append(Run(benchmark=bench.name, point_index=index, params=point,
                                repeat=repeat, task_id=_task_id(bench, index, repeat),
                                argv=_fill(bench.command, context, f"{where} command"),
                                environment=env, coordination_argv=coord, context=context))
                if len(runs) > MAX_RUNS:
                    raise CampaignError(f"campaign {campaign.name} plans more than {MAX_RUNS} "
                                        "runs; narrow its parameter space")
    return runs
