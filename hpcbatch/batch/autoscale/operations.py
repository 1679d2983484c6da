"""The operations and functions tables of the Batch document "Create an automatic
scaling formula for scaling compute nodes in a Batch pool": which operator applies
to which operand types, with its result type and its arithmetic (IEEE 754 doubles
and .NET ``TimeSpan`` timeintervals, as Batch computes them); and the signatures of
the functions, the timestamp members and the metric methods.
:mod:`hpcbatch.batch.autoscale.checker` reads the types,
:mod:`hpcbatch.batch.autoscale.evaluator` runs the arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

from hpcbatch.batch.autoscale.values import (
    ANY,
    DOUBLE,
    INTERVAL,
    STRING,
    TICKS_MAX,
    TIME,
    TIMESTAMP,
    VEC,
    Fault,
    TimeInterval,
)

# -- the operations table -------------------------------------------------------------


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:  # IEEE 754, as .NET doubles: 1/0 = Infinity, 0/0 = NaN
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)
    return a / b


def _scale(interval: TimeInterval, factor: float, divide: bool = False) -> TimeInterval:
    ticks = _arith("/", interval.ticks, factor) if divide else interval.ticks * factor
    if not math.isfinite(ticks):
        raise Fault("the time interval is not finite (division by zero?)")
    return bounded_interval(round(ticks))


def bounded_interval(ticks: int) -> TimeInterval:
    """A timeinterval of ``ticks``, within .NET ``TimeSpan``'s range (signed 64-bit ticks)."""
    if not -TICKS_MAX - 1 <= ticks <= TICKS_MAX:
        raise Fault("TimeSpan overflowed because the duration is too long")
    return TimeInterval(ticks)


def _vec_vec(op: str, a: tuple, b: tuple) -> tuple:
    if len(a) != len(b):
        raise Fault(f"doubleVec {op} doubleVec needs vectors of equal length, not {len(a)} and {len(b)}")
    return tuple(_arith(op, x, y) for x, y in zip(a, b, strict=True))


_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "!=": lambda a, b: a != b,
}
OPERATIONS: dict[tuple[str, str, str], tuple[str, Any]] = {}
for _op in "+-*/":
    OPERATIONS[_op, DOUBLE, DOUBLE] = (DOUBLE, _arith)
    OPERATIONS[_op, VEC, DOUBLE] = (VEC, lambda op, a, b: tuple(_arith(op, x, b) for x in a))
    OPERATIONS[_op, VEC, VEC] = (VEC, _vec_vec)
OPERATIONS["*", DOUBLE, INTERVAL] = (INTERVAL, lambda op, a, b: _scale(b, a))
OPERATIONS["*", INTERVAL, DOUBLE] = (INTERVAL, lambda op, a, b: _scale(a, b))
OPERATIONS["/", INTERVAL, DOUBLE] = (INTERVAL, lambda op, a, b: _scale(a, b, divide=True))
OPERATIONS["+", INTERVAL, INTERVAL] = (INTERVAL, lambda op, a, b: bounded_interval(a.ticks + b.ticks))
OPERATIONS["-", INTERVAL, INTERVAL] = (INTERVAL, lambda op, a, b: bounded_interval(a.ticks - b.ticks))
OPERATIONS["+", INTERVAL, TIMESTAMP] = (TIMESTAMP, lambda op, a, b: b + a.to_timedelta())
OPERATIONS["+", TIMESTAMP, INTERVAL] = (TIMESTAMP, lambda op, a, b: a + b.to_timedelta())
OPERATIONS["-", TIMESTAMP, TIMESTAMP] = (INTERVAL, lambda op, a, b: TimeInterval.of(a - b))
for _op in _COMPARE:
    for _t in (DOUBLE, STRING, TIMESTAMP, INTERVAL):
        OPERATIONS[_op, _t, _t] = (DOUBLE, lambda op, a, b: float(_COMPARE[op](a, b)))
for _op in ("&&", "||"):
    OPERATIONS[_op, DOUBLE, DOUBLE] = (DOUBLE, None)  # evaluated with short-circuit
UNARY = {("-", DOUBLE): DOUBLE, ("!", DOUBLE): DOUBLE, ("-", INTERVAL): INTERVAL}
del _op, _t


def binary_type(op: str, left: str, right: str) -> str | None:
    if ANY in (left, right):
        return ANY
    found = OPERATIONS.get((op, left, right))
    return found[0] if found else None


def operator_error(op: str, left: str, right: str) -> str:
    return f"operator '{op}' cannot be applied to {left} and {right}"


# -- functions and methods ------------------------------------------------------------

LIST_FUNCTIONS = {"avg", "len", "lg", "ln", "log", "max", "min", "norm", "range", "std", "sum"}
FUNCTIONS = LIST_FUNCTIONS | {"percentile", "rand", "stop", "time", "val"}
# function -> (result type, allowed argument-type signatures, how to write them)
FIXED_FUNCTIONS: dict[str, tuple[str, list[tuple[tuple[str, ...], ...]], str]] = {
    "percentile": (DOUBLE, [((VEC,), (DOUBLE,))], "(doubleVec v, double p)"),
    "val": (DOUBLE, [((VEC,), (DOUBLE,))], "(doubleVec v, double i)"),
    "rand": (DOUBLE, [()], "no arguments"),
    "stop": (ANY, [()], "no arguments"),
    "time": (TIMESTAMP, [(), ((STRING,),)], "(string dateTime)"),
}
MEMBERS = ("year", "month", "day", "weekday", "hour", "minute", "second")
# method -> (result type, allowed argument-type signatures, how to write them)
METHODS: dict[str, tuple[str, list[tuple[tuple[str, ...], ...]], str]] = {
    "GetSample": (
        VEC,
        [((DOUBLE,),), (TIME,), (TIME, (DOUBLE,)), (TIME, TIME), (TIME, TIME, (DOUBLE,))],
        ("(double count), (start [, double samplePercent]) or (start, end [, double samplePercent]) "
         "where start and end are timestamps or timeintervals"),
    ),
    "GetSamplePercent": (DOUBLE, [(TIME,), (TIME, TIME)], "(start [, end]), timestamps or timeintervals"),
    "GetSamplePeriod": (INTERVAL, [(), (TIME,), (TIME, TIME)], "() or (start [, end])"),
    "Count": (DOUBLE, [()], "()"),
    "HistoryBeginTime": (TIMESTAMP, [()], "()"),
}

