"""The values of the autoscale formula language: its limits, service-defined variables,
types, the data an evaluation reads and returns, and its errors.

From the Batch document "Create an automatic scaling formula for scaling compute
nodes in a Batch pool" (and today's "Create a formula to automatically scale
compute nodes in a Batch pool"): the size limits; the catalogue of
service-defined variables (the read-write targets, the read-only node counts and
the sampled metrics); the types (double, doubleVec, string, timestamp,
timeinterval) and their constants; :class:`MetricsSnapshot`, what an evaluation
reads, and :class:`AutoScaleResult`, Batch's ``autoScaleRun``, with the way Batch
writes values in it; :class:`FormulaError` (a formula Batch rejects) and
:class:`Fault` (an evaluation that fails, with Batch's error codes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from hpcbatch.batch.errors import BadRequestError

MAX_FORMULA_BYTES = 8 * 1024
"""A formula "cannot exceed 8 KB in size"."""
MAX_STATEMENTS = 100
"""A formula "can include up to 100 statements"."""
MAX_NESTING = 100
"""How deeply an expression may nest (ours: keeps the tree walkers off Python's recursion limit)."""
SAMPLE_PERIOD = timedelta(seconds=30)
"""Batch records a sample of every metric every 30 seconds."""
NODE_DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")

INSUFFICIENT_SAMPLE_DATA = "InsufficientSampleData"
FORMULA_EVALUATION_ERROR = "FormulaEvaluationError"
ERROR_MESSAGES = {
    INSUFFICIENT_SAMPLE_DATA: "Autoscale evaluation failed due to insufficient sample data",
    FORMULA_EVALUATION_ERROR: "Autoscale evaluation failed due to an error in the formula",
}

# -- the catalogue of service-defined variables --------------------------------------

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
NODE_DEALLOCATION = "$NodeDeallocationOption"
RW_CANONICAL = {
    TARGET_DEDICATED: TARGET_DEDICATED,
    "$TargetDedicated": TARGET_DEDICATED,
    TARGET_LOW_PRIORITY: TARGET_LOW_PRIORITY,
    "$TargetLowPriority": TARGET_LOW_PRIORITY,
    NODE_DEALLOCATION: NODE_DEALLOCATION,
}
RW_ALIAS = {TARGET_DEDICATED: "$TargetDedicated", TARGET_LOW_PRIORITY: "$TargetLowPriority"}
READ_ONLY_VALUES = {  # plain doubles, read from the snapshot's attributes
    "$CurrentDedicatedNodes": "current_dedicated_nodes",
    "$CurrentDedicated": "current_dedicated_nodes",
    "$CurrentLowPriorityNodes": "current_low_priority_nodes",
    "$TaskSlotsPerNode": "task_slots_per_node",
}
METRIC_VARIABLES = frozenset(
    "$" + n
    for n in (
        "CPUPercent", "WallClockSeconds", "MemoryBytes", "DiskBytes", "DiskReadBytes", "DiskWriteBytes",
        "DiskReadOps", "DiskWriteOps", "NetworkInBytes", "NetworkOutBytes", "SampleNodeCount",
        "UsableNodeCount", "PreemptedNodeCount", "ActiveTasks", "RunningTasks", "PendingTasks",
        "SucceededTasks", "FailedTasks",
    )
)
"""Sampled service-defined variables; a snapshot keys their series without the ``$``."""
SERVICE_NAMES = set(RW_CANONICAL) | set(READ_ONLY_VALUES) | METRIC_VARIABLES

# -- values ---------------------------------------------------------------------------

DOUBLE, VEC, STRING, TIMESTAMP, INTERVAL = "double", "doubleVec", "string", "timestamp", "timeinterval"
METRIC, ANY = "metric", "any"  # ANY: not known before evaluation (a ?: with mixed branches)
TIME = (TIMESTAMP, INTERVAL)


@dataclass(frozen=True, order=True)
class TimeInterval:
    """A Batch ``timeinterval``: a signed count of 100-nanosecond ticks (.NET ``TimeSpan``:
    at most :data:`TICKS_MAX` either way)."""

    ticks: int

    @classmethod
    def of(cls, delta: timedelta) -> TimeInterval:
        return cls((delta // timedelta(microseconds=1)) * 10)

    def to_timedelta(self) -> timedelta:
        return timedelta(microseconds=self.ticks / 10)

    def __str__(self) -> str:  # .NET TimeSpan "c" format: [-][d.]hh:mm:ss[.fffffff]
        sign, ticks = ("-" if self.ticks < 0 else ""), abs(self.ticks)
        seconds, fraction = divmod(ticks, 10_000_000)
        minutes, s = divmod(seconds, 60)
        hours, m = divmod(minutes, 60)
        days, h = divmod(hours, 24)
        text = f"{sign}{f'{days}.' if days else ''}{h:02d}:{m:02d}:{s:02d}"
        return text + (f".{fraction:07d}" if fraction else "")


TICKS_MAX = 2**63 - 1
"""The most ticks a timeinterval holds (.NET ``TimeSpan.MaxValue``)."""

_TICKS = {"Zero": 0, "100ns": 1, "Microsecond": 10, "Millisecond": 10_000, "Second": 10_000_000}
_TICKS |= {"Minute": 60 * _TICKS["Second"]}
_TICKS |= {"Hour": 60 * _TICKS["Minute"]}
_TICKS |= {"Day": 24 * _TICKS["Hour"]}
_TICKS |= {"Week": 7 * _TICKS["Day"], "Year": 365 * _TICKS["Day"]}
CONSTANTS: dict[str, Value] = {f"TimeInterval_{k}": TimeInterval(v) for k, v in _TICKS.items()}
CONSTANTS |= {option: option for option in NODE_DEALLOCATION_OPTIONS}  # `= taskcompletion;`

Value = float | tuple[float, ...] | str | datetime | TimeInterval


def type_of(value: Value) -> str:
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, tuple):
        return VEC
    if isinstance(value, str):
        return STRING
    if isinstance(value, datetime):
        return TIMESTAMP
    return INTERVAL


# -- public data types ----------------------------------------------------------------


@dataclass
class Sample:
    """One metric sample: the value Batch recorded at ``timestamp``."""

    timestamp: datetime
    value: float


class Metrics(Protocol):
    """What an evaluation reads: the time and the pool's metrics.

    ``samples`` maps a metric variable's name without ``$`` (``"ActiveTasks"``,
    ``"CPUPercent"``) to its history; a missing name is an empty history.
    Read-only: an evaluation never changes them (so a ``dict`` of ``list``
    samples, as :class:`MetricsSnapshot` holds, qualifies).
    """

    @property
    def now(self) -> datetime: ...
    @property
    def samples(self) -> Mapping[str, Sequence[Sample]]: ...
    @property
    def current_dedicated_nodes(self) -> int: ...
    @property
    def current_low_priority_nodes(self) -> int: ...
    @property
    def target_dedicated_nodes(self) -> int: ...
    @property
    def target_low_priority_nodes(self) -> int: ...
    @property
    def task_slots_per_node(self) -> int: ...
    @property
    def sample_period(self) -> timedelta: ...


@dataclass
class MetricsSnapshot:
    """The metrics of one pool at one evaluation time (see :class:`Metrics`).

    ``target_dedicated_nodes``/``target_low_priority_nodes`` are the pool's
    current targets: the values ``$TargetDedicatedNodes`` and
    ``$TargetLowPriorityNodes`` have until the formula assigns them, and keep
    when evaluation fails.
    """

    now: datetime
    samples: Mapping[str, Sequence[Sample]] = field(default_factory=dict)
    current_dedicated_nodes: int = 0
    current_low_priority_nodes: int = 0
    target_dedicated_nodes: int = 0
    target_low_priority_nodes: int = 0
    task_slots_per_node: int = 1
    sample_period: timedelta = SAMPLE_PERIOD


@dataclass
class AutoScaleResult:
    """The outcome of one evaluation, as Batch's ``autoScaleRun`` reports it.

    Attributes
    ----------
    target_dedicated_nodes, target_low_priority_nodes
        Whole, non-negative node counts; the pool's current targets when
        ``error`` is set.
    node_deallocation_option
        ``requeue``, ``terminate``, ``taskcompletion`` or ``retaineddata``.
    variables
        Every variable's value (``$`` names): the three read-write service
        variables, then each user variable the formula assigned. doubles are
        ``float``, doubleVecs ``list[float]``, timestamps ``datetime``,
        timeintervals ``timedelta``.
    results_text
        Batch's ``autoScaleRun.results`` string, e.g.
        ``$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$curTime=...``
    error
        Batch's ``autoScaleRun.error`` (``code``, ``message``, ``values``), or None.
    stopped
        True when ``stop()`` ended the evaluation (statements before it count).
    timestamp
        The evaluation time.
    """

    target_dedicated_nodes: int
    target_low_priority_nodes: int
    node_deallocation_option: str
    variables: dict[str, Any]
    results_text: str
    error: dict[str, Any] | None
    timestamp: datetime
    stopped: bool = False

    def to_wire(self) -> dict[str, Any]:
        """Return Batch's ``autoScaleRun`` JSON object."""
        run: dict[str, Any] = {"timestamp": format_timestamp(self.timestamp), "results": self.results_text}
        if self.error is not None:
            run["error"] = self.error
        return run


# -- errors ---------------------------------------------------------------------------


class FormulaError(BadRequestError):
    """An autoscale formula Batch rejects (HTTP 400, ``InvalidAutoScaleFormula``).

    Attributes
    ----------
    line, column
        1-based position of the offending token.
    reason
        The message without the position.
    """

    code = "InvalidAutoScaleFormula"

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(
            f"line {line}, column {column}: {reason}",
            values={"Line": str(line), "Column": str(column), "Reason": reason},
        )
        self.line, self.column, self.reason = line, column, reason


class Fault(Exception):
    """An evaluation error; the evaluator fills in the position of the node at fault."""

    def __init__(self, message: str, code: str = FORMULA_EVALUATION_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code
        self.line: int | None = None
        self.column: int | None = None


def deallocation_error(value: object) -> str:
    """Why ``value`` cannot be ``$NodeDeallocationOption`` (the checker and the evaluator say the same)."""
    return f"$NodeDeallocationOption must be one of {', '.join(NODE_DEALLOCATION_OPTIONS)}, not {value!r}"


# -- how Batch writes values ----------------------------------------------------------


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_double(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def format_timestamp(moment: datetime) -> str:
    moment = utc(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def format_value(value: Value) -> str:
    match value:
        case float():
            return format_double(value)
        case tuple():
            return "[" + ",".join(format_double(x) for x in value) + "]"
        case datetime():
            return format_timestamp(value)
        case _:
            return str(value)
