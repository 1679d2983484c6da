"""The campaign file: benchmarks, parameters, figures, sanity conditions and references.

A campaign is a YAML (or JSON) mapping, validated by :class:`Campaign`::

    name: ringtest-scaling
    pool: bench                   # the pool to run on (``--pool-id`` overrides)
    mpi: mpich                    # mpich | openmpi | intelmpi | none
    repeats: 3                    # runs of every parameter point
    time_limit_s: 120             # per run: the task's maxWallClockTime
    variables: {python: python3}  # constants for the placeholders
    parameters:                   # crossed unless named together in `zip`
      nodes: [1, 2, 4]            # the task's numberOfInstances
      ppn: {start: 1, stop: 2}    # ranks per node; ranges are inclusive
    benchmarks:
      - name: ringtest
        command: "{python} -m mpi4py.bench ringtest -l 100"
        figures:
          - name: time
            regex: 'time for \\d+ loops = (?P<time>\\S+) seconds'
            source_unit: s        # what the program prints
            unit: us              # what is kept and compared
        sanity:
          must_match: ['time for \\d+ loops']
        references:               # ReFrame's (value, lower, upper, unit)
          "*": {time: [50, null, 0.5, us]}
          "pool:bench": {"time[nodes=1]": [20, -0.9, 0.5, us]}

A reference scope is ``*``, ``pool:ID`` or ``label:NAME`` (a host label, the
pool's ``vmSize``); the most specific scope that names a figure wins. A figure
key may select parameter or label values: ``time[nodes=1,msg_size=1024]``.

Units: times (``s``, ``ms``, ``us``, ``µs``, ``ns``) and bandwidths (``B/s``,
``KB/s``, ``MB/s``, ``GB/s``, ``KiB/s``, ``MiB/s``, ``GiB/s``) convert into each
other within their kind (:func:`convert`); any other unit is kept as written and
converts only to itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpcbatch.batch.errors import HpcbatchError

__all__ = [
    "BUILTIN_PREFIX",
    "Benchmark",
    "Campaign",
    "CampaignError",
    "FigureSpec",
    "Reference",
    "ReferenceKey",
    "Sanity",
    "builtin_campaigns",
    "convert",
    "load_campaign",
    "lower_is_better",
    "parse_campaign",
]

BUILTIN_PREFIX = "builtin:"
"""Prefix naming a campaign shipped with hpcbatch (``builtin:mpi4py-ringtest``)."""

MPI_CHOICES = ("mpich", "openmpi", "intelmpi", "none")
"""Values of ``mpi``: an MPI flavor of :mod:`hpcbatch.execution.mpi`, or ``none``
(the command runs as is, on the primary node only)."""

_TIME_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_RATE_B_PER_S = {"B/s": 1.0, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9,
                 "KiB/s": 1024.0, "MiB/s": 1024.0 ** 2, "GiB/s": 1024.0 ** 3}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEY = re.compile(r"(?P<figure>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<where>[^\]]*)\])?\Z")
TASK_TIME = "task_time"
"""The figure ``task_time: true`` adds (ms)."""
RESERVED = ("nodes", "ppn", "ranks", "repeat")
"""Placeholders hpcbatch fills itself: ``nodes`` and ``ppn`` are parameters
(default 1), ``ranks`` is ``nodes * ppn``, ``repeat`` counts from 0."""


class CampaignError(HpcbatchError):
    """A campaign file is invalid; the message names the field (code ``InvalidCampaign``)."""

    code = "InvalidCampaign"
    status = 400


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert ``value`` between two time or two bandwidth units.

    Parameters
    ----------
    value
        The number, in ``from_unit``.
    from_unit, to_unit
        Unit names (``s``, ``us``, ``MB/s`` ...); any other unit converts only
        to itself.

    Returns
    -------
    float
        ``value`` in ``to_unit``.

    Raises
    ------
    ValueError
        The units are of different kinds, or unknown and not equal.

    Examples
    --------
    >>> convert(1.5e-6, "s", "us")
    1.5
    >>> convert(2048.0, "KiB/s", "MiB/s")
    2.0
    """
    if from_unit == to_unit:
        return value
    for table in (_TIME_S, _RATE_B_PER_S):
        if from_unit in table and to_unit in table:
            return value * table[from_unit] / table[to_unit]
    raise ValueError(f"cannot convert {from_unit!r} to {to_unit!r}: convertible units are "
                     f"{', '.join(_TIME_S)} and {', '.join(_RATE_B_PER_S)}, each within its kind")


def lower_is_better(unit: str) -> bool:
    """Whether a smaller value of a figure in ``unit`` is better (times yes, rates no).

    Parameters
    ----------
    unit
        The figure's unit.

    Returns
    -------
    bool
        False for units ending in ``/s`` (bandwidths, rates), True otherwise.
    """
    return not unit.endswith("/s")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FigureSpec(_Strict):
    """A figure of merit read from a run's output.

    Every match of ``regex`` (multiline) gives one value: the named group
    ``group`` (default: the group named like the figure, else ``value``),
    converted from ``source_unit`` to ``unit``; the other named groups are the
    value's labels (a message size, a collective's name ...).
    """

    name: str
    regex: str
    unit: str
    source_unit: str | None = None
    group: str | None = None
    stream: Literal["stdout", "stderr"] = "stdout"
    better: Literal["lower", "higher"] | None = None
    required: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"figure name {v!r} must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return v

    @model_validator(mode="after")
    def _check(self) -> FigureSpec:
        try:
            pattern = re.compile(self.regex, re.MULTILINE)
        except re.error as exc:
            raise ValueError(f"figure {self.name}: regex {self.regex!r} does not compile: "
                             f"{exc}") from None
        if self.value_group not in pattern.groupindex:
            raise ValueError(f"figure {self.name}: regex {self.regex!r} has no named group "
                             f"{self.value_group!r} (give `group`, or name the group "
                             f"(?P<{self.name}>...) or (?P<value>...))")
        if self.source_unit is not None:
            convert(1.0, self.source_unit, self.unit)
        return self

    @property
    def value_group(self) -> str:
        """The named group holding the value."""
        if self.group:
            return self.group
        groups = re.compile(self.regex).groupindex
        return self.name if self.name in groups else "value"

    @property
    def lower_is_better(self) -> bool:
        """``better`` when given, else from the unit (:func:`lower_is_better`)."""
        return self.better == "lower" if self.better else lower_is_better(self.unit)


class Sanity(_Strict):
    """Conditions every run must meet (ReFrame's sanity patterns).

    ``exit_code``: the task's exit code (None: any); ``must_match`` /
    ``must_not_match``: regular expressions (multiline) searched in stdout and
    stderr together. Every required figure must also be found.
    """

    exit_code: int | None = 0
    must_match: list[str] = Field(default_factory=list)
    must_not_match: list[str] = Field(default_factory=list)

    @field_validator("must_match", "must_not_match")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {p!r} does not compile: {exc}") from None
        return v


class Reference(_Strict):
    """A performance reference: ``value`` with relative tolerances, as ReFrame's tuple.

    The figure passes when ``value + lower * |value| <= x <= value + upper * |value|``;
    ``None`` leaves that side open.
    """

    value: float
    lower: float | None
    upper: float | None
    unit: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_tuple(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            if len(data) not in (3, 4):
                raise ValueError(f"a reference is (value, lower, upper[, unit]), not {list(data)!r}")
            return dict(zip(("value", "lower", "upper", "unit"), data))
        return data

    @model_validator(mode="after")
    def _bounds(self) -> Reference:
        if self.lower is not None and self.lower > 0:
            raise ValueError(f"reference lower tolerance {self.lower} must be <= 0 (or null)")
        if self.upper is not None and self.upper < 0:
            raise ValueError(f"reference upper tolerance {self.upper} must be >= 0 (or null)")
        return self

    def bounds(self) -> tuple[float | None, float | None]:
        """The lowest and highest passing values (None: open)."""
        scale = abs(self.value)
        return (None if self.lower is None else self.value + self.lower * scale,
                None if self.upper is None else self.value + self.upper * scale)

    def as_tuple(self) -> list[Any]:
        """``[value, lower, upper, unit]``."""
        return [self.value, self.lower, self.upper, self.unit]


class ReferenceKey(_Strict):
    """A figure name with the parameter and label values it applies to (``time[nodes=1]``)."""

    figure: str
    where: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ReferenceKey:
        """Parse ``figure`` or ``figure[name=value,...]``.

        Raises
        ------
        ValueError
            Not of that form.
        """
        m = _KEY.match(text.strip())
        if not m:
            raise ValueError(f"reference key {text!r} is not `figure` or `figure[name=value,...]`")
        where: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in (m["where"] or "").split(","))):
            name, eq, value = part.partition("=")
            if not eq or not _IDENT.match(name.strip()):
                raise ValueError(f"reference key {text!r}: {part!r} is not name=value")
            where[name.strip()] = value.strip()
        return cls(figure=m["figure"], where=where)

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether every ``where`` condition holds in ``values`` (parameters and labels)."""
        return all(k in values and str(values[k]) == v for k, v in self.where.items())


ParameterValues = list[Any] | dict[str, Any] | str | int | float | bool


class Benchmark(_Strict):
    """One benchmark of a campaign: a command over a parameter space.

    With ``task_time``, every run also gets the figure ``task_time`` (ms): the
    task's ``executionInfo`` start to end time, as the service measured it.
    """

    name: str
    command: str
    description: str = ""
    coordination_command: str | None = None
    task_time: bool = False
    parameters: dict[str, ParameterValues] = Field(default_factory=dict)
    zip: list[list[str]] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    figures: list[FigureSpec] = Field(default_factory=list)
    sanity: Sanity = Field(default_factory=Sanity)
    references: dict[str, dict[str, Reference]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"benchmark name {v!r} must be 1-40 characters of letters, digits, "
                             "'-' and '_' (it becomes part of task IDs)")
        return v

    @field_validator("references")
    @classmethod
    def _scopes(cls, v: dict[str, dict[str, Reference]]) -> dict[str, dict[str, Reference]]:
        for scope, refs in v.items():
            kind, sep, name = scope.partition(":")
            if scope != "*" and not (sep and kind in ("pool", "label") and name):
                raise ValueError(f"reference scope {scope!r} must be '*', 'pool:ID' or "
                                 "'label:NAME'")
            for key in refs:
                ReferenceKey.parse(key)
        return v

    @model_validator(mode="after")
    def _check(self) -> Benchmark:
        names = [f.name for f in self.figures]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark {self.name}: figure names repeat: {', '.join(dupes)}")
        units = {f.name: f.unit for f in self.figures}
        if self.task_time:
            if TASK_TIME in units:
                raise ValueError(f"benchmark {self.name}: figure {TASK_TIME} is taken by "
                                 "task_time: true")
            units[TASK_TIME] = "ms"
        for scope, refs in self.references.items():
            for key, ref in refs.items():
                fig = ReferenceKey.parse(key).figure
                if fig not in units:
                    raise ValueError(f"benchmark {self.name}: reference {scope} {key} names no "
                                     f"figure (figures: {', '.join(units) or 'none'})")
                if ref.unit is not None and ref.unit != units[fig]:
                    raise ValueError(f"benchmark {self.name}: reference {scope} {key} is in "
                                     f"{ref.unit!r}, the figure in {units[fig]!r}")
        return self

    def references_for(self, pool_id: str, labels: list[str]) -> dict[str, Reference]:
        """The references that apply on a pool: per figure key, the most specific scope's.

        Parameters
        ----------
        pool_id
            The pool the campaign ran on.
        labels
            Host labels of the pool (its ``vmSize``).

        Returns
        -------
        dict
            ``{figure key: Reference}``; ``pool:ID`` beats ``label:NAME`` beats ``*``.
        """
        scopes = ["*", *(f"label:{lb}" for lb in labels), f"pool:{pool_id}"]
        out: dict[str, Reference] = {}
        for scope in scopes:
            out.update(self.references.get(scope, {}))
        return out


class Campaign(_Strict):
    """A campaign file (see the module documentation for an example)."""

    name: str
    description: str = ""
    pool: str | None = None
    mpi: Literal["mpich", "openmpi", "intelmpi", "none"] = "mpich"
    repeats: int = Field(default=1, ge=1, le=1000)
    time_limit_s: float = Field(default=600.0, gt=0)
    retries: int = Field(default=0, ge=0, le=100)
    concurrency: int = Field(default=1, ge=1, le=1000)
    variables: dict[str, str | int | float] = Field(default_factory=dict)
    parameters: dict[str, ParameterValues] = Field(default_factory=dict)
    zip: list[list[str]] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    benchmarks: list[Benchmark] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"campaign name {v!r} must be 1-40 characters of letters, digits, "
                             "'-' and '_' (it becomes part of the job ID)")
        return v

    @field_validator("variables")
    @classmethod
    def _variables(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not _IDENT.match(name) or name in RESERVED:
                raise ValueError(f"variable {name!r} must be an identifier and not one of "
                                 f"{', '.join(RESERVED)}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Campaign:
        names = [b.name for b in self.benchmarks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark names repeat: {', '.join(dupes)}")
        return self

    def benchmark(self, name: str) -> Benchmark:
        """The benchmark called ``name``.

        Raises
        ------
        KeyError
            No such benchmark.
        """
        for b in self.benchmarks:
            if b.name == name:
                return b
        raise KeyError(name)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return f"campaign {source} is invalid:\n  " + "\n  ".join(lines)


def parse_campaign(data: Any, source: str = "<data>") -> Campaign:
    """Validate a campaign given as a mapping (a loaded YAML document).

    Parameters
    ----------
    data
        The document.
    source
        Where it came from, for messages.

    Returns
    -------
    Campaign

    Raises
    ------
    CampaignError
        The document is not a valid campaign; the message lists each field at
        fault (``benchmarks.0.figures.1.regex: ...``).
    """
    if not isinstance(data, Mapping):
        raise CampaignError(f"campaign {source} must be a mapping, not {type(data).__name__}")
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        raise CampaignError(_format_errors(exc, source)) from None


def builtin_campaigns() -> dict[str, str]:
    """The campaigns shipped with hpcbatch: ``{name: description}``.

    Returns
    -------
    dict
        Names usable as ``builtin:NAME``.
    """
    out = {}
    for entry in sorted(resources.files("hpcbatch.campaigns").joinpath("builtin").iterdir(),
                        key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
            out[entry.name.removesuffix(".yaml")] = str(doc.get("description", "")).strip()
    return out


def load_campaign(source: str | Path) -> Campaign:
    """Load a campaign file, or a built-in campaign (``builtin:NAME``).

    Parameters
    ----------
    source
        A path to a ``.yaml``/``.yml``/``.json`` file, or ``builtin:NAME``.

    Returns
    -------
    Campaign

    Raises
    ------
    CampaignError
        Unknown built-in (the message lists them), unreadable file, bad YAML,
        or an invalid campaign.
    """
    text_source = str(source)
    if text_source.startswith(BUILTIN_PREFIX):
        name = text_source[len(BUILTIN_PREFIX):]
        known = builtin_campaigns()
        if name not in known:
            raise CampaignError(f"no built-in campaign {name!r}; built-in campaigns: "
                                f"{', '.join(known)}")
        text = resources.files("hpcbatch.campaigns").joinpath(f"builtin/{name}.yaml").read_text(
            encoding="utf-8")
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CampaignError(f"cannot read campaign {text_source}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text_source.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CampaignError(f"campaign {text_source} is not valid YAML/JSON: {exc}") from None
    return parse_campaign(data, text_source)
