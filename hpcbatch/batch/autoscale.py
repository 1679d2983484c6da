"""Autoscale formulas: Batch's autoscale "language", parsed and evaluated.

This module implements the language of the Batch document "Create an automatic
scaling formula for scaling compute nodes in a Batch pool" (reference/, 2017),
with the additions of today's version of that page ("Create a formula to
automatically scale compute nodes in a Batch pool"): ``$TargetDedicatedNodes``
(``$TargetDedicated`` is its old name), ``$TargetLowPriorityNodes``
(``$TargetLowPriority``), ``$CurrentDedicatedNodes``, ``$CurrentLowPriorityNodes``,
``$UsableNodeCount``, ``$PreemptedNodeCount`` and ``$TaskSlotsPerNode``.

It is pure: no I/O, no clock. The evaluation time and the metric samples come in
a :class:`MetricsSnapshot` (or anything shaped like :class:`Metrics`), and
``rand()`` draws from an injected :class:`random.Random`.

Language, as the document describes it
--------------------------------------
* A formula is at most 8 KB and at most 100 statements. Statements are
  assignments (``$x = expr``) or a bare function call (``stop()``), separated
  by ``;`` and/or line breaks; an expression may itself span lines. ``//``
  (and ``/* */``) comments are allowed.
* Service-defined variables start with ``$``. For user-defined variables the
  ``$`` is optional, and ``x`` and ``$x`` name the same variable.
* Types: double, doubleVec, doubleVecList (a function's comma-separated list of
  doubles and doubleVecs, flattened into one doubleVec), string, timestamp
  (members ``year month day weekday hour minute second``; ``weekday`` counts
  Sunday as 0, Monday as 1) and timeinterval (``TimeInterval_Zero`` ...
  ``TimeInterval_Year``).
* Operations are exactly the document's operations table; anything else is a
  type error. ``&&``, ``||`` and ``?:`` treat a nonzero double as true and
  evaluate only what they need.
* Metric variables (``$CPUPercent``, ``$ActiveTasks``, ...) are objects with the
  methods ``GetSample``, ``GetSamplePercent``, ``GetSamplePeriod``, ``Count``
  and ``HistoryBeginTime``; samples are nominally 30 seconds apart.

Errors
------
:func:`parse_formula` raises :class:`FormulaError` (HTTP 400,
``InvalidAutoScaleFormula``) for syntax errors, unknown functions, methods and
variables, assignments to read-only variables, static type errors and the size
limits; the message names the line, column and offending token.

:func:`evaluate` does not raise for evaluation errors: like Batch's
``autoScaleRun`` it returns them in :attr:`AutoScaleResult.error`, shaped
``{"code", "message", "values": [{"name": "Message", "value": "Line 1, Col 24: ..."}]}``
and leaves the pool's targets unchanged. Too few samples give Batch's documented
``InsufficientSampleData`` error; every other evaluation error uses
``FormulaEvaluationError`` (a code of ours: Batch does not document one).

Targets
-------
``$TargetDedicatedNodes`` and ``$TargetLowPriorityNodes`` start at the pool's
current targets. Their final values are rounded down to whole nodes (Batch
truncates a computed 0.5 node to 0) and negative values become 0.
``$NodeDeallocationOption`` starts at ``requeue``.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.tree import Meta

from .errors import BadRequestError

__all__ = [
    "MAX_FORMULA_BYTES",
    "MAX_NESTING",
    "MAX_STATEMENTS",
    "METRIC_VARIABLES",
    "NODE_DEALLOCATION_OPTIONS",
    "SAMPLE_PERIOD",
    "AutoScaleResult",
    "Formula",
    "FormulaError",
    "Metrics",
    "MetricsSnapshot",
    "Sample",
    "TimeInterval",
    "evaluate",
    "parse_formula",
]

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
_ERROR_MESSAGES = {
    INSUFFICIENT_SAMPLE_DATA: "Autoscale evaluation failed due to insufficient sample data",
    FORMULA_EVALUATION_ERROR: "Autoscale evaluation failed due to an error in the formula",
}

# -- the catalogue of service-defined variables --------------------------------------

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
NODE_DEALLOCATION = "$NodeDeallocationOption"
_RW_CANONICAL = {
    TARGET_DEDICATED: TARGET_DEDICATED,
    "$TargetDedicated": TARGET_DEDICATED,
    TARGET_LOW_PRIORITY: TARGET_LOW_PRIORITY,
    "$TargetLowPriority": TARGET_LOW_PRIORITY,
    NODE_DEALLOCATION: NODE_DEALLOCATION,
}
_RW_ALIAS = {TARGET_DEDICATED: "$TargetDedicated", TARGET_LOW_PRIORITY: "$TargetLowPriority"}
_READ_ONLY_VALUES = {  # plain doubles, read from the snapshot's attributes
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
_SERVICE_NAMES = set(_RW_CANONICAL) | set(_READ_ONLY_VALUES) | METRIC_VARIABLES

# -- values ---------------------------------------------------------------------------

DOUBLE, VEC, STRING, TIMESTAMP, INTERVAL = "double", "doubleVec", "string", "timestamp", "timeinterval"
METRIC, ANY = "metric", "any"  # ANY: not known before evaluation (a ?: with mixed branches)
_TIME = (TIMESTAMP, INTERVAL)


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
_CONSTANTS: dict[str, Value] = {f"TimeInterval_{k}": TimeInterval(v) for k, v in _TICKS.items()}
_CONSTANTS |= {option: option for option in NODE_DEALLOCATION_OPTIONS}  # `= taskcompletion;`

Value = float | tuple[float, ...] | str | datetime | TimeInterval


def _type_of(value: Value) -> str:
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
        run: dict[str, Any] = {"timestamp": _format_timestamp(self.timestamp), "results": self.results_text}
        if self.error is not None:
            run["error"] = self.error
        return run


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


# -- grammar and syntax tree ----------------------------------------------------------

GRAMMAR = r"""
formula: _item*
_item: statement | SEMI
?statement: assign | call

assign: (VARIABLE | NAME) "=" expr

?expr: ternary
?ternary: or_expr
        | or_expr "?" ternary ":" ternary              -> ternary
?or_expr: and_expr | or_expr OR and_expr               -> binop
?and_expr: eq_expr | and_expr AND eq_expr              -> binop
?eq_expr: rel_expr | eq_expr (EQ | NE) rel_expr        -> binop
?rel_expr: add_expr | rel_expr (LT | LE | GT | GE) add_expr -> binop
?add_expr: mul_expr | add_expr (PLUS | MINUS) mul_expr -> binop
?mul_expr: unary | mul_expr (STAR | SLASH) unary       -> binop
?unary: postfix | (MINUS | BANG) unary                 -> unop
?postfix: atom
        | postfix "." NAME "(" args ")"                -> method
        | postfix "." NAME                             -> member
?atom: NUMBER                                          -> number
     | STRING                                          -> string
     | VARIABLE                                        -> var
     | NAME                                            -> var
     | call
     | "(" expr ")"
call: NAME "(" args ")"
args: (expr ("," expr)*)?

SEMI: ";"
OR: "||"
AND: "&&"
EQ: "=="
NE: "!="
LT: "<"
LE: "<="
GT: ">"
GE: ">="
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
BANG: "!"
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"[^"\n]*"|'[^'\n]*'/
VARIABLE: /\$[A-Za-z_]\w*/
NAME: /[A-Za-z_]\w*/
COMMENT: /\/\/[^\n]*/ | /\/\*[\s\S]*?\*\//
%ignore COMMENT
%ignore /\s+/
"""


@functools.cache
def _parser() -> Lark:
    """The formula parser, built on first use (node processes import this module for
    :class:`MetricsSnapshot` only and never parse a formula)."""
    return Lark(GRAMMAR, start="formula", parser="lalr", propagate_positions=True)


@dataclass
class _Node:
    line: int
    column: int


@dataclass
class _Num(_Node):
    value: float


@dataclass
class _Str(_Node):
    value: str


@dataclass
class _Ref(_Node):
    text: str  # as written: "$x", "x", "$CPUPercent", "TimeInterval_Minute"
    kind: str = ""  # set by the checker: user | rw | ro | metric | const
    key: str = ""  # user: "$x"; rw: the name written; ro: snapshot attribute; const: ""
    const: Value | None = None


@dataclass
class _Unary(_Node):
    op: str
    operand: _Node


@dataclass
class _Binary(_Node):
    op: str
    left: _Node
    right: _Node


@dataclass
class _Cond(_Node):
    test: _Node
    then: _Node
    other: _Node


@dataclass
class _Call(_Node):
    name: str
    args: list[_Node]
    end_line: int = 0


@dataclass
class _Method(_Node):
    target: _Node
    name: str
    args: list[_Node]


@dataclass
class _Member(_Node):
    obj: _Node
    name: str


@dataclass
class _Assign(_Node):
    target: str
    value: _Node
    end_line: int = 0
    key: str = ""  # set by the checker


def _where(token: Token) -> tuple[int, int]:
    """A token's line and column (lark sets both on every token it lexes)."""
    assert token.line is not None and token.column is not None
    return token.line, token.column


class _ToAst(Transformer[Token, list[Any]]):
    """Turns lark's parse tree into the small syntax tree the checker and evaluator walk.

    Each method gets the node's children: tokens, nodes already turned, and
    argument lists (lark types them ``Any``).
    """

    def number(self, c: list[Token]) -> _Num:
        return _Num(*_where(c[0]), float(c[0]))

    def string(self, c: list[Token]) -> _Str:
        return _Str(*_where(c[0]), str(c[0])[1:-1])

    def var(self, c: list[Token]) -> _Ref:
        return _Ref(*_where(c[0]), str(c[0]))

    def args(self, c: list[_Node]) -> list[_Node]:
        return list(c)

    def binop(self, c: list[Any]) -> _Binary:
        left, op, right = c
        return _Binary(op.line, op.column, str(op), left, right)

    def unop(self, c: list[Any]) -> _Unary:
        op, operand = c
        return _Unary(op.line, op.column, str(op), operand)

    def ternary(self, c: list[_Node]) -> _Cond:
        return _Cond(c[0].line, c[0].column, *c)

    def method(self, c: list[Any]) -> _Method:
        target, name, args = c
        return _Method(name.line, name.column, target, str(name), args)

    def member(self, c: list[Any]) -> _Member:
        obj, name = c
        return _Member(name.line, name.column, obj, str(name))

    @v_args(meta=True)
    def call(self, meta: Meta, c: list[Any]) -> _Call:
        return _Call(c[0].line, c[0].column, str(c[0]), c[1], end_line=meta.end_line)

    @v_args(meta=True)
    def assign(self, meta: Meta, c: list[Any]) -> _Assign:
        return _Assign(c[0].line, c[0].column, str(c[0]), c[1], end_line=meta.end_line)

    def formula(self, c: list[_Node | Token]) -> list[_Node | Token]:
        return list(c)


@dataclass(frozen=True)
class Formula:
    """A parsed, checked autoscale formula; evaluate it any number of times.

    Attributes
    ----------
    text
        The formula as written.
    statements
        Its statements (syntax tree nodes), in order.
    """

    text: str
    statements: tuple[_Node, ...]

    def __str__(self) -> str:
        return self.text


# -- parsing --------------------------------------------------------------------------

@functools.cache
def _terminal_names() -> dict[str, str]:
    names = {"NUMBER": "a number", "STRING": "a string", "VARIABLE": "a $variable", "NAME": "a name"}
    names |= {t.name: f"'{t.pattern.value}'" for t in _parser().terminals if t.pattern.type == "str"}
    names["$END"] = "end of formula"
    return names


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _syntax_error(text: str, exc: UnexpectedInput) -> FormulaError:
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream is not None else ""
        return FormulaError(f"unexpected character {char!r}", exc.line, exc.column)
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    expected = sorted({_terminal_names().get(name, name) for name in exc.expected})
    hint = f"; expected {_one_of(expected)}" if expected else ""
    if token.type == "$END":
        line, column = _position(text, len(text.rstrip()))
        return FormulaError(f"unexpected end of formula{hint}", line, column)
    return FormulaError(f"unexpected token '{token.value}'{hint}", token.line, token.column)


def _check_nesting(tree: Tree) -> None:
    stack = [(statement, 0) for statement in tree.children if isinstance(statement, Tree)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise FormulaError(
                f"the expression nests more than {MAX_NESTING} levels deep", node.meta.line, node.meta.column
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def parse_formula(text: str) -> Formula:
    """Parse and check an autoscale formula.

    Parameters
    ----------
    text
        The formula (a pool's ``autoScaleFormula``).

    Returns
    -------
    Formula
        Ready for :func:`evaluate`.

    Raises
    ------
    FormulaError
        For a syntax error, an unknown function, method or variable, an assignment
        to a read-only variable, a type error the operations table rules out, a
        formula over 8 KB or over 100 statements, or an expression nested more
        than :data:`MAX_NESTING` levels deep. The message reads
        ``"line 2, column 17: unexpected token ')'; expected ..."``.
    """
    if not isinstance(text, str):
        raise FormulaError("the formula must be a string", 1, 1)
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_FORMULA_BYTES:
        index = len(encoded[:MAX_FORMULA_BYTES].decode("utf-8", errors="ignore"))
        line, column = _position(text, index)
        raise FormulaError(
            f"the formula is {len(encoded)} bytes long; a formula cannot exceed {MAX_FORMULA_BYTES} bytes (8 KB)",
            line,
            column,
        )
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    _check_nesting(tree)
    items = _ToAst().transform(tree)
    statements: list[_Node] = []
    separated, previous_end = True, 0
    for item in items:
        if isinstance(item, Token):  # a ';'
            separated = True
            continue
        assert isinstance(item, (_Assign, _Call))  # the grammar's two statements
        first = item.target if isinstance(item, _Assign) else item.name
        if not separated and item.line == previous_end:
            raise FormulaError(
                f"unexpected token '{first}'; expected ';' or a line break between statements",
                item.line,
                item.column,
            )
        if len(statements) == MAX_STATEMENTS:
            raise FormulaError(
                f"a formula can include at most {MAX_STATEMENTS} statements", item.line, item.column
            )
        statements.append(item)
        separated, previous_end = False, item.end_line
    if not statements:
        raise FormulaError("the formula contains no statements", 1, 1)
    _Checker().check(statements)
    return Formula(text, tuple(statements))


# -- the operations table -------------------------------------------------------------


class _Fault(Exception):
    """An evaluation error; the evaluator fills in the position of the node at fault."""

    def __init__(self, message: str, code: str = FORMULA_EVALUATION_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code
        self.line: int | None = None
        self.column: int | None = None


class _Stop(Exception):
    """``stop()`` was called."""


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
        raise _Fault("the time interval is not finite (division by zero?)")
    return _interval(round(ticks))


def _interval(ticks: int) -> TimeInterval:
    """A timeinterval of ``ticks``, within .NET ``TimeSpan``'s range (signed 64-bit ticks)."""
    if not -TICKS_MAX - 1 <= ticks <= TICKS_MAX:
        raise _Fault("TimeSpan overflowed because the duration is too long")
    return TimeInterval(ticks)


def _vec_vec(op: str, a: tuple, b: tuple) -> tuple:
    if len(a) != len(b):
        raise _Fault(f"doubleVec {op} doubleVec needs vectors of equal length, not {len(a)} and {len(b)}")
    return tuple(_arith(op, x, y) for x, y in zip(a, b, strict=True))


_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "!=": lambda a, b: a != b,
}
_OPERATIONS: dict[tuple[str, str, str], tuple[str, Any]] = {}
for _op in "+-*/":
    _OPERATIONS[_op, DOUBLE, DOUBLE] = (DOUBLE, _arith)
    _OPERATIONS[_op, VEC, DOUBLE] = (VEC, lambda op, a, b: tuple(_arith(op, x, b) for x in a))
    _OPERATIONS[_op, VEC, VEC] = (VEC, _vec_vec)
_OPERATIONS["*", DOUBLE, INTERVAL] = (INTERVAL, lambda op, a, b: _scale(b, a))
_OPERATIONS["*", INTERVAL, DOUBLE] = (INTERVAL, lambda op, a, b: _scale(a, b))
_OPERATIONS["/", INTERVAL, DOUBLE] = (INTERVAL, lambda op, a, b: _scale(a, b, divide=True))
_OPERATIONS["+", INTERVAL, INTERVAL] = (INTERVAL, lambda op, a, b: _interval(a.ticks + b.ticks))
_OPERATIONS["-", INTERVAL, INTERVAL] = (INTERVAL, lambda op, a, b: _interval(a.ticks - b.ticks))
_OPERATIONS["+", INTERVAL, TIMESTAMP] = (TIMESTAMP, lambda op, a, b: b + a.to_timedelta())
_OPERATIONS["+", TIMESTAMP, INTERVAL] = (TIMESTAMP, lambda op, a, b: a + b.to_timedelta())
_OPERATIONS["-", TIMESTAMP, TIMESTAMP] = (INTERVAL, lambda op, a, b: TimeInterval.of(a - b))
for _op in _COMPARE:
    for _t in (DOUBLE, STRING, TIMESTAMP, INTERVAL):
        _OPERATIONS[_op, _t, _t] = (DOUBLE, lambda op, a, b: float(_COMPARE[op](a, b)))
for _op in ("&&", "||"):
    _OPERATIONS[_op, DOUBLE, DOUBLE] = (DOUBLE, None)  # evaluated with short-circuit
_UNARY = {("-", DOUBLE): DOUBLE, ("!", DOUBLE): DOUBLE, ("-", INTERVAL): INTERVAL}
del _op, _t


def _binary_type(op: str, left: str, right: str) -> str | None:
    if ANY in (left, right):
        return ANY
    found = _OPERATIONS.get((op, left, right))
    return found[0] if found else None


def _operator_error(op: str, left: str, right: str) -> str:
    return f"operator '{op}' cannot be applied to {left} and {right}"


# -- functions and methods ------------------------------------------------------------

_LIST_FUNCTIONS = {"avg", "len", "lg", "ln", "log", "max", "min", "norm", "range", "std", "sum"}
_FUNCTIONS = _LIST_FUNCTIONS | {"percentile", "rand", "stop", "time", "val"}
# function -> (result type, allowed argument-type signatures, how to write them)
_FIXED_FUNCTIONS: dict[str, tuple[str, list[tuple[tuple[str, ...], ...]], str]] = {
    "percentile": (DOUBLE, [((VEC,), (DOUBLE,))], "(doubleVec v, double p)"),
    "val": (DOUBLE, [((VEC,), (DOUBLE,))], "(doubleVec v, double i)"),
    "rand": (DOUBLE, [()], "no arguments"),
    "stop": (ANY, [()], "no arguments"),
    "time": (TIMESTAMP, [(), ((STRING,),)], "(string dateTime)"),
}
_MEMBERS = ("year", "month", "day", "weekday", "hour", "minute", "second")
# method -> (result type, allowed argument-type signatures, how to write them)
_METHODS: dict[str, tuple[str, list[tuple[tuple[str, ...], ...]], str]] = {
    "GetSample": (
        VEC,
        [((DOUBLE,),), (_TIME,), (_TIME, (DOUBLE,)), (_TIME, _TIME), (_TIME, _TIME, (DOUBLE,))],
        ("(double count), (start [, double samplePercent]) or (start, end [, double samplePercent]) "
         "where start and end are timestamps or timeintervals"),
    ),
    "GetSamplePercent": (DOUBLE, [(_TIME,), (_TIME, _TIME)], "(start [, end]), timestamps or timeintervals"),
    "GetSamplePeriod": (INTERVAL, [(), (_TIME,), (_TIME, _TIME)], "() or (start [, end])"),
    "Count": (DOUBLE, [()], "()"),
    "HistoryBeginTime": (TIMESTAMP, [()], "()"),
}


def _matches(types: list[str], signature: tuple[tuple[str, ...], ...]) -> bool:
    return len(types) == len(signature) and all(t == ANY or t in s for t, s in zip(types, signature, strict=True))


class _Checker:
    """Resolves names and checks types before any evaluation, as Batch validates a formula."""

    def __init__(self) -> None:
        self.user: dict[str, str] = {}  # "$name" -> type of its latest assignment

    @staticmethod
    def fail(node: _Node, reason: str) -> FormulaError:
        return FormulaError(reason, node.line, node.column)

    def check(self, statements: list[_Node]) -> None:
        for statement in statements:
            if isinstance(statement, _Assign):
                self.assign(statement)
            else:
                self.expr(statement)

    def assign(self, node: _Assign) -> None:
        target = node.target
        if target in _RW_CANONICAL:
            node.key = target
            kind = self.value(node.value)
            want = STRING if _RW_CANONICAL[target] == NODE_DEALLOCATION else DOUBLE
            if kind not in (want, ANY):
                raise self.fail(node.value, f"{target} must be assigned a {want}, not a {kind}")
            literal = node.value
            if isinstance(literal, _Str) or (isinstance(literal, _Ref) and literal.kind == "const"):
                value = literal.value if isinstance(literal, _Str) else literal.const
                if want == STRING and value not in NODE_DEALLOCATION_OPTIONS:
                    raise self.fail(literal, _deallocation_error(value))
            return
        if target in _SERVICE_NAMES:
            raise self.fail(node, f"cannot assign to the read-only service-defined variable {target}")
        if target in _CONSTANTS:
            raise self.fail(node, f"cannot assign to the constant {target}")
        key = _user_key(target)
        if key in _SERVICE_NAMES:
            raise self.fail(node, f"{target!r} is the name of a service-defined variable; write {key}")
        self.user[key] = self.value(node.value)
        node.key = key

    def ref(self, node: _Ref) -> str:
        text = node.text
        if text in _RW_CANONICAL:
            node.kind, node.key = "rw", text
            return STRING if _RW_CANONICAL[text] == NODE_DEALLOCATION else DOUBLE
        if text in _READ_ONLY_VALUES:
            node.kind, node.key = "ro", _READ_ONLY_VALUES[text]
            return DOUBLE
        if text in METRIC_VARIABLES:
            node.kind, node.key = "metric", text
            return METRIC
        if text in _CONSTANTS:
            node.kind, node.const = "const", _CONSTANTS[text]
            return _type_of(node.const)
        key = _user_key(text)
        if key in self.user:
            node.kind, node.key = "user", key
            return self.user[key]
        if key in _SERVICE_NAMES:
            raise self.fail(node, f"unknown variable {text!r}; service-defined variables start with '$': {key}")
        raise self.fail(node, f"unknown variable {text!r}")

    def expr(self, node: _Node) -> str:
        match node:
            case _Num():
                return DOUBLE
            case _Str():
                return STRING
            case _Ref():
                return self.ref(node)
            case _Unary(op=op, operand=operand):
                kind = self.value(operand)
                if kind == ANY:
                    return ANY
                if (op, kind) not in _UNARY:
                    raise self.fail(node, f"operator '{op}' cannot be applied to a {kind}")
                return _UNARY[op, kind]
            case _Binary(op=op, left=left, right=right):
                lt, rt = self.value(left), self.value(right)
                result = _binary_type(op, lt, rt)
                if result is None:
                    raise self.fail(node, _operator_error(op, lt, rt))
                return result
            case _Cond(test=test, then=then, other=other):
                kind = self.value(test)
                if kind not in (DOUBLE, ANY):
                    raise self.fail(test, f"the condition of '?:' must be a double, not a {kind}")
                a, b = self.value(then), self.value(other)
                return a if a == b else ANY
            case _Member(obj=obj, name=name):
                kind = self.value(obj)
                if kind not in (TIMESTAMP, ANY):
                    raise self.fail(node, f"a {kind} has no member {name!r}; only timestamps have members")
                if name not in _MEMBERS:
                    raise self.fail(node, f"unknown timestamp member {name!r}; members are {', '.join(_MEMBERS)}")
                return DOUBLE
            case _Method(target=target, name=name, args=args):
                if not (isinstance(target, _Ref) and self.ref(target) == METRIC):
                    raise self.fail(node, f"{name}() is a method of metric variables such as $CPUPercent")
                if name not in _METHODS:
                    raise self.fail(node, f"unknown method {name!r}; methods are {', '.join(_METHODS)}")
                result, signatures, spelled = _METHODS[name]
                types = [self.value(a) for a in args]
                if not any(_matches(types, s) for s in signatures):
                    raise self.fail(node, f"{name} takes {spelled}; got ({', '.join(types)})")
                return result
            case _Call(name=name, args=args):
                return self.call(node, name, [self.value(a) for a in args])
        raise AssertionError(node)  # pragma: no cover

    def value(self, node: _Node) -> str:
        kind = self.expr(node)
        if kind == METRIC:
            raise self.fail(node, _metric_value_error(node))
        return kind

    def call(self, node: _Call, name: str, types: list[str]) -> str:
        if name not in _FUNCTIONS:
            raise self.fail(node, f"unknown function {name!r}")
        if name in _LIST_FUNCTIONS:
            for t in types:
                if t not in (DOUBLE, VEC, ANY):
                    raise self.fail(node, f"{name}() takes a doubleVecList (doubles and doubleVecs), not a {t}")
            if name in ("lg", "ln", "log"):
                return types[0] if len(types) == 1 and types[0] != VEC else VEC
            return DOUBLE
        result, signatures, spelled = _FIXED_FUNCTIONS[name]
        if not any(_matches(types, signature) for signature in signatures):
            raise self.fail(node, f"{name}() takes {spelled}; got ({', '.join(types)})")
        return result


def _user_key(text: str) -> str:
    return text if text.startswith("$") else "$" + text


def _metric_value_error(node: _Node) -> str:
    name = node.text if isinstance(node, _Ref) else "a metric"
    return f"{name} is a metric: read its samples with a method, e.g. {name}.GetSample(TimeInterval_Minute * 5)"


def _deallocation_error(value: object) -> str:
    return f"$NodeDeallocationOption must be one of {', '.join(NODE_DEALLOCATION_OPTIONS)}, not {value!r}"


# -- evaluation -----------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
        return _utc(parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError):
        pass
    raise _Fault(f"time() cannot read {text!r}: use W3C-DTF (2016-10-13T19:18:47Z) or RFC 1123 "
                 "(Thu, 13 Oct 2016 19:18:47 GMT)")


def _percentile(values: tuple[float, ...], p: float) -> float:
    if not values:
        raise _Fault("percentile() of an empty doubleVec")
    if not 0 <= p <= 100:
        raise _Fault(f"percentile() takes a percentage between 0 and 100, not {_format_double(p)}")
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
        raise _Fault(f"std() needs at least 2 values for a sample standard deviation, got {len(values)}")
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _nonempty(name: str, values: list[float]) -> list[float]:
    if not values:
        raise _Fault(f"{name}() of an empty doubleVecList")
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


class _Evaluator:
    """Walks a checked formula against one metrics snapshot."""

    def __init__(self, metrics: Metrics, rng: random.Random) -> None:
        self.metrics, self.rng = metrics, rng
        self.now = _utc(metrics.now)
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
        canonical = _RW_CANONICAL[name]
        if canonical in self.rw:
            return self.rw[canonical]
        alias = _RW_ALIAS.get(canonical)
        return self.rw[alias] if alias in self.rw else self.initial[canonical]

    def run(self, statements: Sequence[_Node]) -> None:
        for statement in statements:
            if isinstance(statement, _Assign):
                value = self.eval(statement.value)
                try:
                    self.store(statement, value)
                except _Fault as fault:
                    fault.line, fault.column = statement.line, statement.column
                    raise
            else:
                self.eval(statement)

    def store(self, node: _Assign, value: Value) -> None:
        if node.target not in _RW_CANONICAL:
            self.user[node.key] = value
            return
        canonical = _RW_CANONICAL[node.target]
        if canonical == NODE_DEALLOCATION:
            if value not in NODE_DEALLOCATION_OPTIONS:
                raise _Fault(_deallocation_error(value))
        elif not isinstance(value, float):
            raise _Fault(f"{node.target} must be assigned a double, not a {_type_of(value)}")
        elif not math.isfinite(value):
            raise _Fault(f"{node.target} must be a finite number, not {_format_double(value)}")
        self.rw[node.target] = value

    def eval(self, node: _Node) -> Value:
        try:
            return self._eval(node)
        except _Fault as fault:
            if fault.line is None:
                fault.line, fault.column = node.line, node.column
            raise
        except OverflowError:
            # A timestamp or timeinterval out of .NET's range (``time() + TimeInterval_Year *
            # 1e6``): Batch's evaluator fails the same way, as a formula error.
            overflow = _Fault("the result is out of range for a timestamp or timeinterval")
            overflow.line, overflow.column = node.line, node.column
            raise overflow from None

    def _eval(self, node: _Node) -> Value:
        match node:
            case _Num(value=value):
                return value
            case _Str(value=value):
                return value
            case _Ref(kind="user", key=key):
                return self.user[key]
            case _Ref(kind="rw", key=key):
                return self.rw_value(key)
            case _Ref(kind="ro", key=key):
                return float(getattr(self.metrics, key))
            case _Ref(kind="const", const=const):
                assert const is not None  # the checker set it
                return const
            case _Unary(op=op, operand=operand):
                result = self.eval(operand)
                kind = _type_of(result)
                if (op, kind) not in _UNARY:
                    raise _Fault(f"operator '{op}' cannot be applied to a {kind}")
                if isinstance(result, TimeInterval):
                    return _interval(-result.ticks)
                assert isinstance(result, float)  # _UNARY takes doubles and timeintervals
                return -result if op == "-" else float(result == 0)
            case _Binary(op="&&" | "||" as op, left=left, right=right):
                a = self.eval(left)
                if not isinstance(a, float):
                    raise _Fault(_operator_error(op, _type_of(a), DOUBLE))
                if (op == "&&" and a == 0) or (op == "||" and a != 0):
                    return float(op == "||")
                b = self.eval(right)
                if not isinstance(b, float):
                    raise _Fault(_operator_error(op, DOUBLE, _type_of(b)))
                return float(b != 0)
            case _Binary(op=op, left=left, right=right):
                a, b = self.eval(left), self.eval(right)
                found = _OPERATIONS.get((op, _type_of(a), _type_of(b)))
                if found is None:
                    raise _Fault(_operator_error(op, _type_of(a), _type_of(b)))
                return found[1](op, a, b)
            case _Cond(test=test, then=then, other=other):
                condition = self.eval(test)
                if not isinstance(condition, float):
                    raise _Fault(f"the condition of '?:' must be a double, not a {_type_of(condition)}")
                return self.eval(then if condition != 0 else other)
            case _Member(obj=obj, name=name):
                moment = self.eval(obj)
                if not isinstance(moment, datetime):
                    raise _Fault(f"a {_type_of(moment)} has no member {name!r}")
                if name == "weekday":
                    return float((moment.weekday() + 1) % 7)  # Sunday 0, Monday 1, ... Saturday 6
                return float(getattr(moment, name))
            case _Method(target=target, name=name, args=args):
                assert isinstance(target, _Ref)  # the checker allows metric variables only
                return self.method(target.text, name, [self.eval(a) for a in args])
            case _Call(name=name, args=args):
                return self.call(name, [self.eval(a) for a in args])
        raise AssertionError(node)  # pragma: no cover

    # functions

    def call(self, name: str, args: list[Value]) -> Value:
        if name in _LIST_FUNCTIONS:
            flat: list[float] = []
            for arg in args:
                if isinstance(arg, float):
                    flat.append(arg)
                elif isinstance(arg, tuple):
                    flat.extend(arg)
                else:
                    raise _Fault(f"{name}() takes doubles and doubleVecs, not a {_type_of(arg)}")
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
                raise _Fault(f"time() takes a string, not a {_type_of(args[0])}")
            return _parse_time(args[0])
        vector, number = args
        if not isinstance(vector, tuple) or not isinstance(number, float):
            raise _Fault(f"{name}() takes (doubleVec, double), not ({_type_of(vector)}, {_type_of(number)})")
        if name == "percentile":
            return _percentile(vector, number)
        index = math.floor(number) if math.isfinite(number) else -1
        if not 0 <= index < len(vector):
            raise _Fault(f"val(): index {_format_double(number)} is outside the doubleVec of length {len(vector)}")
        return vector[index]

    # metric methods

    def history(self, metric: str) -> list[Sample]:
        if metric not in self._histories:
            raw = self.metrics.samples.get(metric[1:], ())
            samples = [Sample(_utc(s.timestamp), float(s.value)) for s in raw]
            self._histories[metric] = sorted((s for s in samples if s.timestamp <= self.now), key=lambda s: s.timestamp)
        return self._histories[metric]

    def moment(self, value: Value) -> datetime:
        """A window edge: a timestamp as is, a timeinterval as that long before now."""
        if isinstance(value, datetime):
            return value
        if isinstance(value, TimeInterval):
            return self.now - value.to_timedelta()
        raise _Fault(f"a sample window edge must be a timestamp or a timeinterval, not a {_type_of(value)}")

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
                raise _Fault(f"Insufficient data from data set: {metric} has no samples", INSUFFICIENT_SAMPLE_DATA)
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
                raise _Fault(f"GetSample() needs a sample count of at least 1, not {_format_double(count)}")
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
                raise _Fault(f"GetSample() takes a samplePercent between 0 and 100, not {_format_double(percent)}")
            if available < percent:
                raise _insufficient(metric, percent, available)
        return tuple(s.value for s in found)


def _insufficient(metric: str, wanted: float, received: float) -> _Fault:
    return _Fault(
        f"Insufficient data from data set: {metric} wanted {_format_double(wanted)}%, "
        f"received {math.floor(received)}%",
        INSUFFICIENT_SAMPLE_DATA,
    )


# -- results --------------------------------------------------------------------------


def _format_double(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def _format_timestamp(moment: datetime) -> str:
    moment = _utc(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _format(value: Value) -> str:
    match value:
        case float():
            return _format_double(value)
        case tuple():
            return "[" + ",".join(_format_double(x) for x in value) + "]"
        case datetime():
            return _format_timestamp(value)
        case _:
            return str(value)


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
    except _Fault as fault:
        error = {
            "code": fault.code,
            "message": _ERROR_MESSAGES[fault.code],
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
        results_text=";".join(f"{name}={_format(value)}" for name, value in ordered.items()),
        error=error,
        timestamp=run.now,
        stopped=stopped,
    )
