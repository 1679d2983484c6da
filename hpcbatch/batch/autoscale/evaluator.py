"""Evaluating an autoscale formula, as Batch does at each autoscale interval (Batch
document "Create an automatic scaling formula for scaling compute nodes in a Batch
pool"; REST "Pool - Evaluate Autoscale"): a checked formula walked against one
:class:`~hpcbatch.batch.autoscale.values.Metrics` snapshot, the built-in functions,
the metric methods (``GetSample`` and its percent rule), and the outcome as
Batch's ``autoScaleRun``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from hpcbatch.batch.autoscale.operations import (
    LIST_FUNCTIONS,
    OPERATIONS,
    UNARY,
    bounded_interval,
    operator_error,
)
from hpcbatch.batch.autoscale.parser import Formula, parse_formula
from hpcbatch.batch.autoscale.syntax import Assign, Binary, Call, Cond, Member, Method, Node, Num, Ref, Str, Unary
from hpcbatch.batch.autoscale.values import (
    DOUBLE,
    ERROR_MESSAGES,
    INSUFFICIENT_SAMPLE_DATA,
    NODE_DEALLOCATION,
    NODE_DEALLOCATION_OPTIONS,
    RW_ALIAS,
    RW_CANONICAL,
    TARGET_DEDICATED,
    TARGET_LOW_PRIORITY,
    AutoScaleResult,
    Fault,
    Metrics,
    Sample,
    TimeInterval,
    Value,
    deallocation_error,
    format_double,
    format_value,
    type_of,
    utc,
)


class _Stop(Exception):
    """``stop()`` was called."""


# -- built-in functions ---------------------------------------------------------------


_W3C_DTF = re.compile(
    r"(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?(Z|[+-]\d\d:\d\d))?)?)?"
)


def _parse_time(text: str) -> datetime:
    """Parse a W3C-DTF or RFC 1123 date, as ``time(string)`` accepts."""
    text = text.strip()
    m = _W3C_DTF.fullmatch(text)
    try:
        if m:
            year, month, day, hour, minute, second, fraction, zone = m.groups()
            tz = UTC
            if zone and zone != "Z":
                offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
                tz = timezone(-offset if zone[0] == "-" else offset)
            micro = round(float(fraction) * 1_000_000) if fraction else 0
            return datetime(
                int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
                min(micro, 999_999), tzinfo=tz,
            ).astimezone(UTC)
        return utc(parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError):
        pass
    raise Fault(f"time() cannot read {text!r}: use W3C-DTF (2016-10-13T19:18:47Z) or RFC 1123 "
                 "(Thu, 13 Oct 2016 19:18:47 GMT)")


def _percentile(values: tuple[float, ...], p: float) -> float:
    if not values:
        raise Fault("percentile() of an empty doubleVec")
    if not 0 <= p <= 100:
        raise Fault(f"percentile() takes a percentage between 0 and 100, not {format_double(p)}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))  # nearest-rank: an element of v
    return ordered[rank - 1]


def _log(function: Callable[[float], float]) -> Callable[[float], float]:
    def log(x: float) -> float:  # IEEE 754 at the edges, as .NET: log(0) = -Infinity, log(-1) = NaN
        if x > 0:
            return function(x)
        return -math.inf if x == 0 else math.nan

    return log


def _std(values: list[float]) -> float:
    if len(values) < 2:
        raise Fault(f"std() needs at least 2 values for a sample standard deviation, got {len(values)}")
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _nonempty(name: str, values: list[float]) -> list[float]:
    if not values:
        raise Fault(f"{name}() of an empty doubleVecList")
    return values


_REDUCERS = {
    "avg": lambda v: sum(_nonempty("avg", v)) / len(v),
    "len": lambda v: float(len(v)),
    "max": lambda v: max(_nonempty("max", v)),
    "min": lambda v: min(_nonempty("min", v)),
    "norm": lambda v: math.sqrt(sum(x * x for x in v)),
    "range": lambda v: max(_nonempty("range", v)) - min(v),
    "std": _std,
    "sum": lambda v: float(sum(v)),
}
_LOGS = {"lg": _log(math.log2), "ln": _log(math.log), "log": _log(math.log10)}


# -- evaluation -----------------------------------------------------------------------


class _Evaluator:
    """Walks a checked formula against one metrics snapshot."""

    def __init__(self, metrics: Metrics, rng: random.Random) -> None:
        self.metrics, self.rng = metrics, rng
        self.now = utc(metrics.now)
        self.period = TimeInterval.of(metrics.sample_period)
        self.initial: dict[str, Value] = {
            TARGET_DEDICATED: float(metrics.target_dedicated_nodes),
            TARGET_LOW_PRIORITY: float(metrics.target_low_priority_nodes),
            NODE_DEALLOCATION: "requeue",
        }
        self.rw: dict[str, Value] = {}  # read-write service variables as assigned, by the name written
        self.user: dict[str, Value] = {}
        self._histories: dict[str, list[Sample]] = {}

    def rw_value(self, name: str) -> Value:
        """A read-write variable; a full name assigned takes precedence over its alias."""
        canonical = RW_CANONICAL[name]
        if canonical in self.rw:
            return self.rw[canonical]
        alias = RW_ALIAS.get(canonical)
        return self.rw[alias] if alias in self.rw else self.initial[canonical]

    def run(self, statements: Sequence[Node]) -> None:
        for statement in statements:
            if isinstance(statement, Assign):
                value = self.eval(statement.value)
                try:
                    self.store(statement, value)
                except Fault as fault:
                    fault.line, fault.column = statement.line, statement.column
                    raise
            else:
                self.eval(statement)

    def store(self, node: Assign, value: Value) -> None:
        if node.target not in RW_CANONICAL:
            self.user[node.key] = value
            return
        canonical = RW_CANONICAL[node.target]
        if canonical == NODE_DEALLOCATION:
            if value not in NODE_DEALLOCATION_OPTIONS:
                raise Fault(deallocation_error(value))
        elif not isinstance(value, float):
            raise Fault(f"{node.target} must be assigned a double, not a {type_of(value)}")
        elif not math.isfinite(value):
            raise Fault(f"{node.target} must be a finite number, not {format_double(value)}")
        self.rw[node.target] = value

    def eval(self, node: Node) -> Value:
        try:
            return self._eval(node)
        except Fault as fault:
            if fault.line is None:
                fault.line, fault.column = node.line, node.column
            raise
        except OverflowError:
            # A timestamp or timeinterval out of .NET's range (``time() + TimeInterval_Year *
            # 1e6``): Batch's evaluator fails the same way, as a formula error.
            overflow = Fault("the result is out of range for a timestamp or timeinterval")
            overflow.line, overflow.column = node.line, node.column
            raise overflow from None

    def _eval(self, node: Node) -> Value:
        match node:
            case Num(value=value):
                return value
            case Str(value=value):
                return value
            case Ref(kind="user", key=key):
                return self.user[key]
            case Ref(kind="rw", key=key):
                return self.rw_value(key)
            case Ref(kind="ro", key=key):
                return float(getattr(self.metrics, key))
            case Ref(kind="const", const=const):
                assert const is not None  # the checker set it
                return const
            case Unary(op=op, operand=operand):
                result = self.eval(operand)
                kind = type_of(result)
                if (op, kind) not in UNARY:
                    raise Fault(f"operator '{op}' cannot be applied to a {kind}")
                if isinstance(result, TimeInterval):
                    return bounded_interval(-result.ticks)
                assert isinstance(result, float)  # UNARY takes doubles and timeintervals
                return -result if op == "-" else float(result == 0)
            case Binary(op="&&" | "||" as op, left=left, right=right):
                a = self.eval(left)
                if not isinstance(a, float):
                    raise Fault(operator_error(op, type_of(a), DOUBLE))
                if (op == "&&" and a == 0) or (op == "||" and a != 0):
                    return float(op == "||")
                b = self.eval(right)
                if not isinstance(b, float):
                    raise Fault(operator_error(op, DOUBLE, type_of(b)))
                return float(b != 0)
            case Binary(op=op, left=left, right=right):
                a, b = self.eval(left), self.eval(right)
                found = OPERATIONS.get((op, type_of(a), type_of(b)))
                if found is None:
                    raise Fault(operator_error(op, type_of(a), type_of(b)))
                return found[1](op, a, b)
            case Cond(test=test, then=then, other=other):
                condition = self.eval(test)
                if not isinstance(condition, float):
                    raise Fault(f"the condition of '?:' must be a double, not a {type_of(condition)}")
                return self.eval(then if condition != 0 else other)
            case Member(obj=obj, name=name):
                moment = self.eval(obj)
                if not isinstance(moment, datetime):
                    raise Fault(f"a {type_of(moment)} has no member {name!r}")
                if name == "weekday":
                    return float((moment.weekday() + 1) % 7)  # Sunday 0, Monday 1, ... Saturday 6
                return float(getattr(moment, name))
            case Method(target=target, name=name, args=args):
                assert isinstance(target, Ref)  # the checker allows metric variables only
                return self.method(target.text, name, [self.eval(a) for a in args])
            case Call(name=name, args=args):
                return self.call(name, [self.eval(a) for a in args])
        raise AssertionError(node)  # pragma: no cover

    # functions

    def call(self, name: str, args: list[Value]) -> Value:
        if name in LIST_FUNCTIONS:
            flat: list[float] = []
            for arg in args:
                if isinstance(arg, float):
                    flat.append(arg)
                elif isinstance(arg, tuple):
                    flat.extend(arg)
                else:
                    raise Fault(f"{name}() takes doubles and doubleVecs, not a {type_of(arg)}")
            if name in _LOGS:
                if len(args) == 1 and isinstance(args[0], float):
                    return _LOGS[name](args[0])
                return tuple(_LOGS[name](x) for x in flat)
            return float(_REDUCERS[name](flat))
        if name == "rand":
            return self.rng.random()
        if name == "stop":
            raise _Stop
        if name == "time":
            if not args or args[0] == "":
                return self.now
            if not isinstance(args[0], str):
                raise Fault(f"time() takes a string, not a {type_of(args[0])}")
            return _parse_time(args[0])
        vector, number = args
        if not isinstance(vector, tuple) or not isinstance(number, float):
            raise Fault(f"{name}() takes (doubleVec, double), not ({type_of(vector)}, {type_of(number)})")
        if name == "percentile":
            return _percentile(vector, number)
        index = math.floor(number) if math.isfinite(number) else -1
        if not 0 <= index < len(vector):
            raise Fault(f"val(): index {format_double(number)} is outside the doubleVec of length {len(vector)}")
        return vector[index]

    # metric methods

    def history(self, metric: str) -> list[Sample]:
        if metric not in self._histories:
            raw = self.metrics.samples.get(metric[1:], ())
            samples = [Sample(utc(s.timestamp), float(s.value)) for s in raw]
            self._histories[metric] = sorted((s for s in samples if s.timestamp <= self.now), key=lambda s: s.timestamp)
        return self._histories[metric]

    def moment(self, value: Value) -> datetime:
        """A window edge: a timestamp as is, a timeinterval as that long before now."""
        if isinstance(value, datetime):
            return value
        if isinstance(value, TimeInterval):
            return self.now - value.to_timedelta()
        raise Fault(f"a sample window edge must be a timestamp or a timeinterval, not a {type_of(value)}")

    def window(self, metric: str, edges: list[Value]) -> tuple[list[Sample], float]:
        """The samples in (earliest, latest] and the percentage of the possible samples they are."""
        points = [self.moment(e) for e in edges] + ([self.now] if len(edges) == 1 else [])
        start, end = min(points), max(points)
        found = [s for s in self.history(metric) if start < s.timestamp <= end]
        possible = max(1, math.floor((end - start) / self.metrics.sample_period))
        return found, min(100.0, 100.0 * len(found) / possible)

    def method(self, metric: str, name: str, args: list[Value]) -> Value:
        if name == "Count":
            return float(len(self.history(metric)))
        if name == "HistoryBeginTime":
            history = self.history(metric)
            if not history:
                raise Fault(f"Insufficient data from data set: {metric} has no samples", INSUFFICIENT_SAMPLE_DATA)
            return history[0].timestamp
        if name == "GetSamplePeriod":
            found = self.window(metric, args)[0] if args else self.history(metric)
            if len(found) < 2:
                return self.period
            return TimeInterval.of((found[-1].timestamp - found[0].timestamp) / (len(found) - 1))
        if name == "GetSamplePercent":
            return self.window(metric, args)[1]
        # GetSample
        if len(args) == 1 and isinstance(args[0], float):
            count = args[0]
            if not (math.isfinite(count) and count >= 1):
                raise Fault(f"GetSample() needs a sample count of at least 1, not {format_double(count)}")
            wanted = math.floor(count)
            found = self.history(metric)[-wanted:]
            if len(found) < wanted:
                raise _insufficient(metric, 100.0, 100.0 * len(found) / wanted)
            return tuple(s.value for s in found)
        percent: float | None = None
        if isinstance(args[-1], float):
            percent = args[-1]
            args.pop()
        found, available = self.window(metric, args)
        if percent is not None:
            if not 0 <= percent <= 100:
                raise Fault(f"GetSample() takes a samplePercent between 0 and 100, not {format_double(percent)}")
            if available < percent:
                raise _insufficient(metric, percent, available)
        return tuple(s.value for s in found)


def _insufficient(metric: str, wanted: float, received: float) -> Fault:
    return Fault(
        f"Insufficient data from data set: {metric} wanted {format_double(wanted)}%, "
        f"received {math.floor(received)}%",
        INSUFFICIENT_SAMPLE_DATA,
    )


# -- results --------------------------------------------------------------------------


def _public(value: Value) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, TimeInterval):
        return value.to_timedelta()
    return value


TARGET_MAX = 2**31 - 1
"""The largest target a formula sets: ``targetDedicatedNodes`` is an ``int32`` on the wire."""


def _target(value: Value) -> int:
    assert isinstance(value, float) and math.isfinite(value)
    return max(0, min(TARGET_MAX, math.floor(value)))


def evaluate(formula: Formula | str, metrics: Metrics, *, rng: random.Random | None = None) -> AutoScaleResult:
    """Evaluate an autoscale formula, as Batch does at each autoscale interval.

    Parameters
    ----------
    formula
        A :class:`Formula` from :func:`parse_formula`, or its text.
    metrics
        The evaluation time, the metric samples and the pool's node counts.
    rng
        Source of ``rand()``; a fresh :class:`random.Random` when omitted.

    Returns
    -------
    AutoScaleResult
        The new targets and Batch's ``autoScaleRun`` results. An evaluation error
        (too few samples, a runtime type error, ...) does not raise: it is
        returned in ``error`` and the targets stay the pool's current ones.

    Raises
    ------
    FormulaError
        Only when ``formula`` is text that does not parse.
    """
    if isinstance(formula, str):
        formula = parse_formula(formula)
    run = _Evaluator(metrics, rng or random.Random())
    error: dict[str, Any] | None = None
    stopped = False
    try:
        run.run(formula.statements)
    except _Stop:
        stopped = True
    except Fault as fault:
        error = {
            "code": fault.code,
            "message": ERROR_MESSAGES[fault.code],
            "values": [{"name": "Message", "value": f"Line {fault.line}, Col {fault.column}: {fault.message}"}],
        }
        run.rw.clear()  # no change is made to the pool
    service = {name: run.rw_value(name) for name in (TARGET_DEDICATED, TARGET_LOW_PRIORITY, NODE_DEALLOCATION)}
    ordered = {**service, **{k: run.user[k] for k in sorted(run.user, key=lambda k: (k.lower(), k))}}
    return AutoScaleResult(
        target_dedicated_nodes=_target(service[TARGET_DEDICATED]),
        target_low_priority_nodes=_target(service[TARGET_LOW_PRIORITY]),
        node_deallocation_option=str(service[NODE_DEALLOCATION]),
        variables={name: _public(value) for name, value in ordered.items()},
        results_text=";".join(f"{name}={format_value(value)}" for name, value in ordered.items()),
        error=error,
        timestamp=run.now,
        stopped=stopped,
    )
