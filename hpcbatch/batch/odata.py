"""OData list queries (``$filter``), as in the Batch
document "Create queries to list Batch resources efficiently": the pure half.

Batch list operations (list pools, list jobs, list the tasks of a job, ...) take
three query strings:

``$filter``
    A boolean expression that limits which items are returned, e.g.
    ``(state eq 'running') and startswith(id, 'renderTask')``.
    :func:`parse_filter` checks it against a resource's property catalogue
    (:data:`TASK_PROPERTIES`, :data:`JOB_PROPERTIES`, :data:`POOL_PROPERTIES`)
    and returns a small typed expression tree (:data:`Expression`); the store
    (:mod:`hpcbatch.store.filters`) compiles that tree into SQL, so the filter
    runs in the database. :func:`matches` evaluates it on one wire item.
``$select``, ``$expand``
    Which properties each item carries, and the statistics fetched with it:
    :mod:`hpcbatch.batch.odata_select` (no parser: a client trimming its
    output imports it alone).

This module does no I/O and imports no database code.

Rules kept from the document and today's Batch REST API:

* Property names appear as in the Batch REST API and are case-sensitive
  (``state``, not ``State``); nested properties use ``/``
  (``executionInfo/exitCode``).
* Property *values* are case-insensitive: ``state eq 'Active'`` matches active
  tasks, ``id eq 'TASK1'`` matches task ``task1``.
* Date/time values are written ``DateTime'...'`` in W3C-DTF
  (``DateTime'2011-05-08T08:49:37Z'``) or RFC 1123
  (``DateTime'Sun, 08 May 2011 08:49:37 GMT'``) form; booleans are ``true`` and
  ``false``.
* An invalid property, operator or value is a ``400 (Bad Request)``: Batch's
  ``InvalidQueryParameterValue`` error, whose ``values`` name the query
  parameter (``QueryParameterName``), its value (``QueryParameterValue``) and
  the reason (``Reason``). Every reason names the offending property or token
  and its column (1-based character position in the query string).
* A ``$filter`` longer than :data:`MAX_FILTER_LENGTH` characters, or nested
  (parentheses and ``not``) deeper than :data:`MAX_FILTER_DEPTH`, is refused
  the same way, so no request can exhaust the service's stack.

The ``$filter`` language
------------------------
Comparisons ``eq ne gt ge lt le`` between a property and a literal, in either
order (``5 lt executionInfo/exitCode`` is ``executionInfo/exitCode gt 5``);
``startswith(property, 'prefix')``; ``not``, ``and``, ``or`` (``not`` binds
tightest, then ``and``, then ``or``) and parentheses. Keywords and operators
are lower-case, as in OData. Literals: single-quoted strings (``''`` is a
quote), integers (``-1``), ``true``/``false``, ``null`` (with ``eq``/``ne``:
"the property is absent") and ``DateTime'...'``.

Each property has a kind that fixes which operators and literals it takes:

========  ===================================  ==========================
kind      operators                            literal
========  ===================================  ==========================
string    eq ne gt ge lt le, startswith        ``'text'``
enum      eq ne                                ``'value'`` (one of a set)
int       eq ne gt ge lt le                    ``42``, ``-1``
datetime  eq ne gt ge lt le                    ``DateTime'...'``
bool      eq ne                                ``true``, ``false``
========  ===================================  ==========================

A property a resource lacks (``executionInfo/exitCode`` of a task that has not
run) matches no comparison, so ``executionInfo/exitCode ne 0`` lists only the
tasks that ran and exited non-zero, and ``not (...)`` is the exact complement
of ``(...)``.

The expression tree
-------------------
:func:`parse_filter` returns :class:`Comparison`, :class:`StartsWith`,
:class:`Not`, :class:`And` and :class:`Or` nodes, already checked and
normalised: the property is on the left (``5 lt x`` is ``x gt 5``), enum values
are in their canonical spelling (``'Active'`` is ``'active'``), string values
and prefixes are lower-cased (strings compare case-insensitively), datetimes
are naive UTC, chains of ``and``/``or`` are flat.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeAlias

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from hpcbatch.batch import states
from hpcbatch.batch.odata_select import InvalidQueryParameterError

__all__ = [
    "ALLOCATION_STATES",
    "FILTER_GRAMMAR",
    "JOB_PROPERTIES",
    "JOB_STATES",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "OPERATOR_FUNCTIONS",
    "POOL_PROPERTIES",
    "POOL_STATES",
    "TASK_PROPERTIES",
    "TASK_RESULTS",
    "TASK_STATES",
    "And",
    "Comparison",
    "ComparisonOperator",
    "Expression",
    "InvalidQueryParameterError",
    "Kind",
    "ListFilter",
    "Not",
    "Or",
    "Property",
    "StartsWith",
    "Value",
    "matches",
    "parse_datetime",
    "parse_filter",
    "wire_value",
]

Kind = Literal["string", "int", "datetime", "bool", "enum"]
ComparisonOperator = Literal["eq", "ne", "gt", "ge", "lt", "le"]

COMPARISONS: tuple[ComparisonOperator, ...] = ("eq", "ne", "gt", "ge", "lt", "le")

#: Operators each kind takes when a :class:`Property` does not list its own.
DEFAULT_OPERATORS: dict[str, frozenset[str]] = {
    "string": frozenset((*COMPARISONS, "startswith")),
    "enum": frozenset(("eq", "ne")),
    "int": frozenset(COMPARISONS),
    "datetime": frozenset(COMPARISONS),
    "bool": frozenset(("eq", "ne")),
}

_OPERATOR_ORDER = (*COMPARISONS, "startswith")

#: Longest ``$filter`` accepted, in characters (about what fits in one HTTP
#: request line).
MAX_FILTER_LENGTH = 8192

#: Deepest nesting of parentheses and ``not`` accepted in a ``$filter``.
MAX_FILTER_DEPTH = 32

# ------------------------------------------------------------------ properties


@dataclass(frozen=True)
class Property:
    """A property a list operation can filter on.

    Parameters
    ----------
    wire_name
        The Batch REST name, nested with ``/`` (``"state"``,
        ``"executionInfo/exitCode"``). Case-sensitive in ``$filter``.
    kind
        ``"string"``, ``"int"``, ``"datetime"``, ``"bool"`` or ``"enum"``:
        which literals and operators the property takes (see the module's
        table).
    values
        For ``"enum"``: the allowed values in their canonical spelling
        (``("active", "preparing", ...)``). Literals are matched to them
        case-insensitively.
    operators
        The operators allowed (``"eq"``, ..., ``"startswith"``); empty means the
        kind's defaults (:data:`DEFAULT_OPERATORS`).

    Raises
    ------
    ValueError
        An unknown kind or operator, an enum without values, or
        ``startswith`` on a property that is not a string.
    """

    wire_name: str
    kind: Kind
    values: tuple[str, ...] = ()
    operators: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_OPERATORS:
            raise ValueError(f"property {self.wire_name!r}: unknown kind {self.kind!r}")
        object.__setattr__(self, "values", tuple(self.values))
        if self.kind == "enum" and not self.values:
            raise ValueError(f"enum property {self.wire_name!r} needs its allowed values")
        ops = frozenset(self.operators) or DEFAULT_OPERATORS[self.kind]
        unknown = ops - set(_OPERATOR_ORDER)
        if unknown:
            raise ValueError(f"property {self.wire_name!r}: unknown operators {sorted(unknown)}")
        if "startswith" in ops and self.kind != "string":
            raise ValueError(f"property {self.wire_name!r}: startswith needs a string property")
        object.__setattr__(self, "operators", ops)

    def operator_list(self) -> str:
        """The allowed operators, comma-separated, in a stable order."""
        return ", ".join(op for op in _OPERATOR_ORDER if op in self.operators)


def _catalogue(*properties: Property) -> dict[str, Property]:
    return {p.wire_name: p for p in properties}


TASK_STATES: tuple[str, ...] = tuple(map(str, states.TaskState))
TASK_RESULTS: tuple[str, ...] = tuple(map(str, states.TaskExecutionResult))
JOB_STATES: tuple[str, ...] = tuple(map(str, states.JobState))
POOL_STATES: tuple[str, ...] = tuple(map(str, states.PoolState))
ALLOCATION_STATES: tuple[str, ...] = tuple(map(str, states.AllocationState))

_EQ_NE = frozenset(("eq", "ne"))

#: Filterable properties of "List the tasks associated with a job".
TASK_PROPERTIES: dict[str, Property] = _catalogue(
    Property("id", "string"),
    Property("state", "enum", TASK_STATES),
    Property("creationTime", "datetime"),
    Property("stateTransitionTime", "datetime"),
    Property("previousState", "enum", TASK_STATES),
    Property("previousStateTransitionTime", "datetime"),
    Property("lastModified", "datetime"),
    Property("eTag", "string", operators=_EQ_NE),
    Property("executionInfo/startTime", "datetime"),
    Property("executionInfo/endTime", "datetime"),
    Property("executionInfo/exitCode", "int"),
    Property("executionInfo/result", "enum", TASK_RESULTS),
    Property("executionInfo/retryCount", "int"),
    Property("executionInfo/requeueCount", "int"),
    Property("executionInfo/lastRetryTime", "datetime"),
    Property("executionInfo/lastRequeueTime", "datetime"),
    Property("nodeInfo/nodeId", "string"),
    Property("requiredSlots", "int"),
)

#: Properties of "List the jobs in an account" that the store filters in SQL. The
#: others Batch documents (``lastModified``, ``executionInfo/*``...) are filtered on
#: the jobs' JSON (``hpcbatch.api.filters.JOB_FILTER``).
JOB_PROPERTIES: dict[str, Property] = _catalogue(
    Property("id", "string"),
    Property("state", "enum", JOB_STATES),
    Property("priority", "int"),
    Property("creationTime", "datetime"),
    Property("stateTransitionTime", "datetime"),
)

#: Properties of "List the pools in an account" that the store filters in SQL.
#: The others Batch documents (times, node counts...) live in the pool's status
#: document and are filtered on the pools' JSON (``hpcbatch.api.filters.POOL_FILTER``).
POOL_PROPERTIES: dict[str, Property] = _catalogue(
    Property("id", "string"),
    Property("state", "enum", POOL_STATES),
    Property("allocationState", "enum", ALLOCATION_STATES),
)


# ------------------------------------------------------------ expression tree

#: A comparison's right-hand side: ``str`` (string and enum kinds), ``int``,
#: ``bool``, ``datetime`` (naive UTC), or ``None`` for the ``null`` literal.
Value: TypeAlias = str | int | bool | datetime | None


@dataclass(frozen=True)
class Comparison:
    """``property operator value``.

    Parameters
    ----------
    property
        The property compared (from the resource's catalogue).
    operator
        ``"eq"``, ``"ne"``, ``"gt"``, ``"ge"``, ``"lt"`` or ``"le"``.
    value
        Of the property's kind: a lower-cased ``str`` for a string (strings
        compare case-insensitively), the canonical spelling for an enum,
        ``int``, ``bool``, or a naive UTC ``datetime``. ``None`` (only with
        ``eq``/``ne``) means "the property is absent" / "is present"; any other
        comparison with an absent property is false.
    """

    property: Property
    operator: ComparisonOperator
    value: Value


@dataclass(frozen=True)
class StartsWith:
    """``startswith(property, 'prefix')``, case-insensitive: ``prefix`` is lower-cased."""

    property: Property
    prefix: str


@dataclass(frozen=True)
class Not:
    """``not operand``: the exact complement (absent properties included)."""

    operand: Expression


@dataclass(frozen=True)
class And:
    """``a and b and ...``: two or more operands."""

    operands: tuple[Expression, ...]


@dataclass(frozen=True)
class Or:
    """``a or b or ...``: two or more operands."""

    operands: tuple[Expression, ...]


#: A checked ``$filter``: what :func:`parse_filter` returns.
Expression: TypeAlias = Comparison | StartsWith | Not | And | Or


# --------------------------------------------------------------------- grammar

#: The ``$filter`` grammar (lark, LALR). Keywords carry ``\b`` so that ``and``
#: never eats the start of ``andromeda``, and property names exclude the
#: keywords, so that ``not`` is the keyword and ``notes`` a property.
FILTER_GRAMMAR = r"""
?start: or_expr

?or_expr: and_expr
        | or_expr _OR and_expr          -> or_

?and_expr: unary
         | and_expr _AND unary          -> and_

?unary: _NOT unary                      -> not_
      | primary

?primary: comparison
        | call
        | "(" or_expr ")"               -> group

comparison: operand COMPOP operand

call: PATH "(" [operand ("," operand)*] ")"

?operand: PATH                          -> prop
        | STRING                        -> string
        | INT                           -> integer
        | TRUE                          -> true
        | FALSE                         -> false
        | NULL                          -> null
        | DATETIME                      -> datetime

_OR.3: /or\b/
_AND.3: /and\b/
_NOT.3: /not\b/
TRUE.3: /true\b/
FALSE.3: /false\b/
NULL.3: /null\b/
COMPOP.3: /(eq|ne|gt|ge|lt|le)\b/
DATETIME.2: /datetime'[^']*'/i
PATH: /(?!(and|or|not|eq|ne|gt|ge|lt|le|true|false|null)\b)[A-Za-z_][A-Za-z0-9_]*(\/[A-Za-z_][A-Za-z0-9_]*)*/
STRING: /'([^']|'')*'/
INT: /[-+]?[0-9]+/

%ignore /[ \t\r\n]+/
"""

# The LALR parser keeps its stack in a list, so deep input cannot overflow
# Python's stack while parsing; positions give each node its column.
_PARSER = Lark(
    FILTER_GRAMMAR,
    parser="lalr",
    lexer="contextual",
    maybe_placeholders=False,
    propagate_positions=True,
)

_EXPECTED_NAMES = {
    "_OR": "'or'",
    "_AND": "'and'",
    "_NOT": "'not'",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "COMPOP": "a comparison operator (eq, ne, gt, ge, lt, le)",
    "DATETIME": "a DateTime'...' literal",
    "PATH": "a property name",
    "STRING": "a string literal",
    "INT": "an integer",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "$END": "the end of $filter",
}
_KEYWORDS = {"and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null"}

_SWAPPED: dict[ComparisonOperator, ComparisonOperator] = {
    "eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge",
}
_INT64 = 2**63


# ------------------------------------------------------------------- datetimes

_W3C_DTF = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?)?)?)?",
    re.IGNORECASE,
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RFC_1123 = re.compile(
    r"(?:(?P<wd>mon|tue|wed|thu|fri|sat|sun),\s*)?(?P<d>\d{1,2})\s+(?P<mo>[a-z]{3})\s+"
    r"(?P<y>\d{4})\s+(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?\s+(?P<tz>gmt|utc|ut|z|[+-]\d{4})",
    re.IGNORECASE,
)


def _offset(tz: str | None) -> timedelta:
    if tz is None or tz.upper() in ("Z", "GMT", "UTC", "UT"):
        return timedelta(0)
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad time zone offset {tz!r}")
    return sign * timedelta(hours=hours, minutes=minutes)


def parse_datetime(text: str) -> datetime:
    """Parse a Batch date/time value into a naive UTC datetime.

    Accepts the two forms of the Batch document "Create queries to list Batch
    resources efficiently": W3C-DTF (``2017-05-16T02:45:01.5Z``, also with a
    ``+hh:mm`` offset, or only a date) and RFC 1123
    (``Tue, 16 May 2017 02:45:01 GMT``). A value without a zone is UTC.
    Fractions of a second beyond microseconds (Batch writes 7 digits) are cut.

    Parameters
    ----------
    text
        The value inside ``DateTime'...'``.

    Returns
    -------
    datetime
        Naive, in UTC (the store's time format).

    Raises
    ------
    ValueError
        When ``text`` is in neither form or names no real instant.
    """
    text = text.strip()
    m = _W3C_DTF.fullmatch(text)
    if m:
        g = m.groupdict()
        frac = (g["f"] or "0")[:6].ljust(6, "0")
        value = datetime(
            int(g["y"]),
            int(g["mo"] or 1),
            int(g["d"] or 1),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int(frac),
        )
        return value - _offset(g["tz"])
    m = _RFC_1123.fullmatch(text)
    if m:
        g = m.groupdict()
        month = g["mo"].lower()
        if month not in _MONTHS:
            raise ValueError(f"unknown month {g['mo']!r}")
        value = datetime(
            int(g["y"]),
            _MONTHS.index(month) + 1,
            int(g["d"]),
            int(g["h"]),
            int(g["mi"]),
            int(g["s"] or 0),
        )
        return value - _offset(g["tz"])
    raise ValueError("neither W3C-DTF nor RFC 1123")


# ------------------------------------------------------------------ the filter

_LiteralKind = Literal["string", "int", "datetime", "bool", "null"]


@dataclass(frozen=True)
class _Literal:
    kind: _LiteralKind
    value: Value
    token: Token

    def describe(self) -> str:
        names = {
            "string": "string literal",
            "int": "integer literal",
            "datetime": "DateTime literal",
            "bool": "boolean literal",
            "null": "null",
        }
        if self.kind == "null":
            return "null"
        article = "an" if self.kind == "int" else "a"
        return f"{article} {names[self.kind]} {self.token.value}"


@dataclass(frozen=True)
class _PropRef:
    prop: Property
    token: Token


def _column_of(token: Token) -> int:
    start = getattr(token, "start_pos", None)
    if start is not None:
        return int(start) + 1
    return int(getattr(token, "column", 0) or 0) or 1


def _node_column(tree: Tree[Token]) -> int:
    return int(getattr(tree.meta, "start_pos", 0)) + 1


class _Checker:
    """Turns a parsed ``$filter`` into an :data:`Expression`, checking every
    property, operator and literal against the catalogue.

    Errors come in the order a bottom-up, left-to-right walk meets them.
    """

    def __init__(self, text: str, properties: Mapping[str, Property]) -> None:
        self.text = text
        self.properties = properties

    def error(self, reason: str, token: Token | None) -> InvalidQueryParameterError:
        column = None if token is None else _column_of(token)
        return InvalidQueryParameterError(
            "$filter",
            self.text,
            reason,
            column=column,
            token=None if token is None else str(token.value),
        )

    # ---- nesting

    def check_depth(self, tree: Tree[Token]) -> None:
        """Refuse nesting (parentheses and ``not``) deeper than
        :data:`MAX_FILTER_DEPTH`; iterative, so it cannot overflow the stack."""
        stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            if node.data in ("group", "not_"):
                depth += 1
                if depth > MAX_FILTER_DEPTH:
                    column = _node_column(node)
                    raise InvalidQueryParameterError(
                        "$filter",
                        self.text,
                        f"$filter nests parentheses and 'not' deeper than {MAX_FILTER_DEPTH} "
                        f"levels at column {column}",
                        column=column,
                        token="(" if node.data == "group" else "not",
                    )
            stack.extend((child, depth) for child in node.children if isinstance(child, Tree))

    # ---- boolean structure (depth is bounded before this runs)

    def expression(self, tree: Tree[Token]) -> Expression:
        name = tree.data
        if name == "group":
            (inner,) = tree.children
            assert isinstance(inner, Tree)
            return self.expression(inner)
        if name == "not_":
            (inner,) = tree.children
            assert isinstance(inner, Tree)
            return Not(self.expression(inner))
        if name in ("and_", "or_"):
            # Left-deep chains (a or b or c ...) are walked in a loop: a long
            # flat chain needs no stack.
            right_operands: list[Tree[Token]] = []
            node = tree
            while node.data == name:
                left, right = node.children
                assert isinstance(left, Tree) and isinstance(right, Tree)
                right_operands.append(right)
                node = left
            parts = [node, *reversed(right_operands)]
            operands = tuple(self.expression(part) for part in parts)
            return And(operands) if name == "and_" else Or(operands)
        if name == "comparison":
            return self.comparison(tree.children)
        if name == "call":
            return self.call(tree.children)
        raise AssertionError(f"unexpected $filter node {name!r}")  # pragma: no cover

    # ---- operands

    def operand(self, node: Tree[Token] | Token) -> _PropRef | _Literal:
        assert isinstance(node, Tree)
        (token,) = node.children
        assert isinstance(token, Token)
        kind = node.data
        if kind == "prop":
            return self.prop(token)
        if kind == "string":
            return _Literal("string", str(token.value)[1:-1].replace("''", "'"), token)
        if kind == "integer":
            return self.integer(token)
        if kind == "true":
            return _Literal("bool", True, token)
        if kind == "false":
            return _Literal("bool", False, token)
        if kind == "null":
            return _Literal("null", None, token)
        if kind == "datetime":
            return self.datetime(token)
        raise AssertionError(f"unexpected $filter operand {kind!r}")  # pragma: no cover

    def prop(self, token: Token) -> _PropRef:
        name = str(token.value)
        found = self.properties.get(name)
        if found is None:
            hint = ""
            same = [n for n in self.properties if n.lower() == name.lower()]
            if same:
                hint = f" (property names are case-sensitive: did you mean '{same[0]}'?)"
            known = ", ".join(self.properties) or "none"
            raise self.error(
                f"unknown property '{name}' in $filter at column {_column_of(token)}{hint}; "
                f"known properties: {known}",
                token,
            )
        return _PropRef(found, token)

    def integer(self, token: Token) -> _Literal:
        value = int(str(token.value))
        if not -_INT64 <= value < _INT64:
            raise self.error(
                f"integer {token.value} in $filter at column {_column_of(token)} is out of range "
                "(64-bit signed)",
                token,
            )
        return _Literal("int", value, token)

    def datetime(self, token: Token) -> _Literal:
        raw = str(token.value)
        inner = raw[raw.index("'") + 1 : -1]
        try:
            value = parse_datetime(inner)
        except (ValueError, OverflowError) as exc:
            raise self.error(
                f"invalid DateTime literal '{inner}' in $filter at column {_column_of(token)} "
                f"({exc}); use W3C-DTF (DateTime'2017-05-16T02:45:01.5Z') or RFC 1123 "
                "(DateTime'Tue, 16 May 2017 02:45:01 GMT')",
                token,
            ) from None
        return _Literal("datetime", value, token)

    # ---- predicates

    def comparison(self, children: list[Tree[Token] | Token]) -> Comparison:
        left_node, op_token, right_node = children
        left, right = self.operand(left_node), self.operand(right_node)
        assert isinstance(op_token, Token)
        op = _comparison_operator(str(op_token.value))
        if isinstance(left, _PropRef) and isinstance(right, _Literal):
            return self._compare(left, op, op_token, right)
        if isinstance(left, _Literal) and isinstance(right, _PropRef):
            return self._compare(right, _SWAPPED[op], op_token, left)
        if isinstance(left, _PropRef) and isinstance(right, _PropRef):
            raise self.error(
                f"comparison '{op}' at column {_column_of(op_token)} of $filter has a property on "
                f"both sides ('{left.prop.wire_name}' and '{right.prop.wire_name}'); "
                "compare a property with a literal",
                op_token,
            )
        assert isinstance(left, _Literal) and isinstance(right, _Literal)
        raise self.error(
            f"comparison '{op}' at column {_column_of(op_token)} of $filter has no property "
            f"({left.describe()} and {right.describe()}); compare a property with a literal",
            op_token,
        )

    def _check_operator(self, ref: _PropRef, op: str, op_token: Token) -> None:
        prop = ref.prop
        if op not in prop.operators:
            raise self.error(
                f"operator '{op}' is not valid for property '{prop.wire_name}' (kind {prop.kind}) "
                f"in $filter at column {_column_of(op_token)}; valid operators: "
                f"{prop.operator_list()}",
                op_token,
            )

    def _mismatch(self, ref: _PropRef, lit: _Literal) -> InvalidQueryParameterError:
        prop = ref.prop
        want = {
            "string": "a string literal ('text')",
            "enum": "a string literal ('value')",
            "int": "an integer literal",
            "datetime": "a DateTime'...' literal",
            "bool": "true or false",
        }[prop.kind]
        return self.error(
            f"property '{prop.wire_name}' (kind {prop.kind}) cannot be compared with "
            f"{lit.describe()} in $filter at column {_column_of(lit.token)}; it takes {want}",
            lit.token,
        )

    def _compare(
        self, ref: _PropRef, op: ComparisonOperator, op_token: Token, lit: _Literal
    ) -> Comparison:
        prop = ref.prop
        self._check_operator(ref, op, op_token)
        if lit.kind == "null":
            if op in ("eq", "ne"):
                return Comparison(prop, op, None)
            raise self.error(
                f"operator '{op}' cannot compare property '{prop.wire_name}' with null in $filter "
                f"at column {_column_of(op_token)}; use eq or ne",
                op_token,
            )
        wanted_literal = "string" if prop.kind in ("string", "enum") else prop.kind
        if lit.kind != wanted_literal:
            raise self._mismatch(ref, lit)
        value: Value = lit.value
        if prop.kind == "string":
            value = str(lit.value).lower()
        elif prop.kind == "enum":
            value = self._enum_value(ref, lit)
        return Comparison(prop, op, value)

    def _enum_value(self, ref: _PropRef, lit: _Literal) -> str:
        wanted = str(lit.value).lower()
        for allowed in ref.prop.values:
            if allowed.lower() == wanted:
                return allowed
        raise self.error(
            f"invalid value '{lit.value}' for property '{ref.prop.wire_name}' in $filter at column "
            f"{_column_of(lit.token)}; allowed values: {', '.join(ref.prop.values)}",
            lit.token,
        )

    def call(self, children: list[Tree[Token] | Token]) -> StartsWith:
        name_token, *arg_nodes = children
        assert isinstance(name_token, Token)
        args = [self.operand(node) for node in arg_nodes]
        name = str(name_token.value)
        if name != "startswith":
            raise self.error(
                f"unknown function '{name}' in $filter at column {_column_of(name_token)}; "
                "supported functions: startswith",
                name_token,
            )
        ref = args[0] if len(args) == 2 else None
        lit = args[1] if len(args) == 2 else None
        if not isinstance(ref, _PropRef) or not isinstance(lit, _Literal):
            raise self.error(
                f"function 'startswith' at column {_column_of(name_token)} of $filter takes a "
                f"property and a string literal: startswith(id, 'prefix') (got {len(args)} "
                "argument(s))",
                name_token,
            )
        self._check_operator(ref, "startswith", name_token)
        if lit.kind != "string":
            raise self._mismatch(ref, lit)
        return StartsWith(ref.prop, str(lit.value).lower())


def _comparison_operator(text: str) -> ComparisonOperator:
    for op in COMPARISONS:
        if op == text:
            return op
    raise AssertionError(f"not a comparison operator: {text!r}")  # pragma: no cover


def _syntax_error(text: str, exc: UnexpectedInput) -> InvalidQueryParameterError:
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        names: set[str] = set(exc.expected)
        interactive = getattr(exc, "interactive_parser", None)
        if interactive is not None:
            try:
                names = set(interactive.accepts())
            except Exception:  # noqa: BLE001 - the parser's lookahead failed: fall back to the state's  # pragma: no cover
                names = set(exc.expected)
        if "_OR" in names:
            # LALR reduced the last and-expression before it saw the bad token;
            # wherever 'or' may follow, 'and' could have followed as well.
            names.add("_AND")
        expected = sorted(
            {_EXPECTED_NAMES.get(name, name) for name in names}, key=lambda s: (s[0] != "'", s)
        )
        expects = f"; expected {' or '.join(expected)}" if expected else ""
        if token.type == "$END":
            column = len(text.rstrip()) + 1
            return InvalidQueryParameterError(
                "$filter",
                text,
                f"syntax error in $filter at column {column}: unexpected end of $filter{expects}",
                column=column,
                token="",
            )
        column = _column_of(token)
        value = str(token.value)
        hint = ""
        if value.lower() in _KEYWORDS and value != value.lower():
            hint = f" (keywords and operators are lower-case: '{value.lower()}')"
        return InvalidQueryParameterError(
            "$filter",
            text,
            f"syntax error in $filter at column {column}: unexpected token '{value}'"
            f"{hint}{expects}",
            column=column,
            token=value,
        )
    pos = getattr(exc, "pos_in_stream", None)
    column = (pos + 1) if isinstance(pos, int) else int(getattr(exc, "column", 1) or 1)
    char = text[column - 1] if 0 < column <= len(text) else ""
    if isinstance(exc, UnexpectedCharacters) and char == "'":
        reason = f"syntax error in $filter at column {column}: unterminated string literal"
    else:
        reason = f"syntax error in $filter at column {column}: unexpected character '{char}'"
    return InvalidQueryParameterError("$filter", text, reason, column=column, token=char)


def parse_filter(text: str, properties: Mapping[str, Property]) -> Expression | None:
    """Parse and check a Batch ``$filter`` against a resource's properties.

    Implements the filter strings of the Batch document "Create queries to list
    Batch resources efficiently" (see the module documentation for the
    language). The result is backend-neutral: :func:`hpcbatch.store.filters.compile_filter`
    turns it into SQL, :func:`matches` evaluates it on a wire item.

    Parameters
    ----------
    text
        The ``$filter`` value, e.g. ``"(state eq 'running') and startswith(id, 'renderTask')"``;
        at most :data:`MAX_FILTER_LENGTH` characters.
    properties
        The filterable properties of the listed resource by wire name:
        :data:`TASK_PROPERTIES`, :data:`JOB_PROPERTIES`, :data:`POOL_PROPERTIES`.

    Returns
    -------
    Expression or None
        The checked, normalised expression; None when ``text`` is blank (the
        filter keeps everything).

    Raises
    ------
    InvalidQueryParameterError
        (a :class:`hpcbatch.batch.errors.BadRequestError`, HTTP 400,
        ``InvalidQueryParameterValue``, ``QueryParameterName`` ``$filter``)
        on a syntax error, an unknown property (names are case-sensitive), an
        operator the property does not take, a literal of the wrong type, an
        enum value outside the allowed set, an invalid date, a text longer than
        :data:`MAX_FILTER_LENGTH` or nesting deeper than
        :data:`MAX_FILTER_DEPTH`. The reason names the offending property or
        token and its column.

    Examples
    --------
    >>> parse_filter("state eq 'Completed'", TASK_PROPERTIES)  # doctest: +ELLIPSIS
    Comparison(property=Property(wire_name='state', ...), operator='eq', value='completed')
    """
    if not text or not text.strip():
        return None
    tree = _parse_tree(text)
    checker = _Checker(text, properties)
    checker.check_depth(tree)
    return checker.expression(tree)


def check_filter_syntax(text: str) -> None:
    """Check a ``$filter``'s length, syntax and nesting, not its properties.

    For a filter applied to a list whose properties are not known, such as an
    empty list whose properties :class:`ListFilter` would read off its items.

    Raises
    ------
    InvalidQueryParameterError
        As :func:`parse_filter`, but never for a property.
    """
    if text and text.strip():
        _Checker(text, {}).check_depth(_parse_tree(text))


def _parse_tree(text: str) -> Any:
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidQueryParameterError(
            "$filter",
            text,
            f"$filter is {len(text)} characters long; the limit is {MAX_FILTER_LENGTH}",
        )
    try:
        return _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None


# ------------------------------------------------------------------ evaluation

#: The Python operator of each comparison: ``a OP b``. It serves
#: :func:`matches` and, applied to SQLAlchemy columns, the SQL compiler.
OPERATOR_FUNCTIONS: dict[ComparisonOperator, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def matches(expression: Expression | None, value_of: Callable[[Property], Value]) -> bool:
    """Evaluate a parsed ``$filter`` on one item, with the store's semantics.

    For list operations whose items are not rows of the store (nodes, job
    schedules): string values compare case-insensitively, a comparison with
    an absent (``None``) property is false except ``eq null``, and ``not`` is
    the exact complement.

    Parameters
    ----------
    expression
        From :func:`parse_filter`; None keeps every item.
    value_of
        Returns the item's value of a property: ``str`` for string and enum
        kinds, ``int``, ``bool``, a naive UTC ``datetime``, or None when the
        item lacks it.

    Returns
    -------
    bool
        Whether the item passes the filter.
    """
    if expression is None:
        return True
    return _evaluate(expression, value_of)


def _evaluate(expression: Expression, value_of: Callable[[Property], Value]) -> bool:
    match expression:
        case Comparison(prop, op, wanted):
            actual = value_of(prop)
            if wanted is None:
                return (actual is None) == (op == "eq")
            if actual is None:
                return False
            if prop.kind == "string":
                actual = str(actual).lower()
            return bool(OPERATOR_FUNCTIONS[op](actual, wanted))
        case StartsWith(prop, prefix):
            actual = value_of(prop)
            return actual is not None and str(actual).lower().startswith(prefix)
        case Not(operand):
            return not _evaluate(operand, value_of)
        case And(operands):
            return all(_evaluate(o, value_of) for o in operands)
        case Or(operands):
            return any(_evaluate(o, value_of) for o in operands)
    raise AssertionError(f"not a $filter expression: {expression!r}")  # pragma: no cover


# ------------------------------------------------------------ lists of wire JSON


class ListFilter:
    """The filterable properties of one list operation, and its ``$filter`` over wire dicts.

    Parameters
    ----------
    properties
        ``(wire name, kind, enum values)`` per property; kind is ``"string"``,
        ``"enum"``, ``"int"``, ``"datetime"`` or ``"bool"`` (the operators and
        literals of :mod:`hpcbatch.batch.odata`). A nested name
        (``startTaskInfo/state``) reads the nested value.
    """

    def __init__(self, properties: Iterable[tuple[str, Kind, tuple[str, ...]]]) -> None:
        self.properties = {name: Property(name, kind, values) for name, kind, values in properties}

    def apply(self, items: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
        """Return the items ``text`` selects, in their order.

        Parameters
        ----------
        items
            Wire JSON of the listed resources (``ComputeNode``, ``CloudJobSchedule``, ...).
        text
            The ``$filter`` value; blank keeps every item.

        Returns
        -------
        list[dict]
            The items that pass (the same objects).

        Raises
        ------
        hpcbatch.batch.odata.InvalidQueryParameterError
            ``400 InvalidQueryParameterValue``: a syntax error, an unknown
            property, an operator or literal the property does not take.
        """
        expression = parse_filter(text, self.properties)
        return [item for item in items if matches(expression, partial(wire_value, item))]


def wire_value(item: Mapping[str, Any], prop: Property) -> Value:
    """The value of ``prop`` in a wire dict, as :func:`~hpcbatch.batch.odata.matches` takes it.

    Parameters
    ----------
    item
        One resource's wire JSON.
    prop
        The property; ``a/b`` reads ``item["a"]["b"]``.

    Returns
    -------
    str, int, bool, datetime or None
        ``str`` for string and enum kinds, ``int``, ``bool``, a naive UTC
        ``datetime`` (parsed from the wire time); None when the item lacks the
        property or holds a value of another type.
    """
    value: Any = item
    for part in prop.wire_name.split("/"):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return None
    if prop.kind in ("string", "enum"):
        return str(value)
    if prop.kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if prop.kind == "bool":
        return value if isinstance(value, bool) else None
    try:  # datetime
        return parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None
