"""OData list queries (``$filter``, ``$select``, ``$expand``), as in the Batch
document "Create queries to list Batch resources efficiently".

Batch list operations (list pools, list jobs, list the tasks of a job, ...) take
three query strings:

``$filter``
    A boolean expression that limits which items are returned, e.g.
    ``(state eq 'running') and startswith(id, 'renderTask')``.
    :func:`compile_filter` compiles it into a SQLAlchemy Core expression, so the
    filter runs in the database (on indexed columns where there are some) and a
    list query costs in proportion to what it returns.
``$select``
    A comma-separated list of property names (``id, state, stateTransitionTime``)
    that limits which properties each returned item carries:
    :func:`parse_select` and :func:`apply_select`.
``$expand``
    Extra data fetched in the same call; Batch supports only ``stats``:
    :func:`parse_expand`.

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

How the SQL stays index-friendly: enum values are checked and turned into the
canonical spelling the store keeps (``'Active'`` becomes ``'active'``), then
compared to the bare column; IDs are compared on the store's lower-cased
``key`` column (see :mod:`hpcbatch.store.database`). Only other strings need
``lower(column)``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from sqlalchemy.sql.elements import ColumnElement

from hpcbatch.batch.errors import BadRequestError
from hpcbatch.store import database as store

__all__ = [
    "FILTER_GRAMMAR",
    "JOB_PROPERTIES",
    "POOL_PROPERTIES",
    "TASK_PROPERTIES",
    "EXPANDABLE",
    "InvalidQueryParameterError",
    "Kind",
    "Property",
    "apply_select",
    "compile_filter",
    "parse_datetime",
    "parse_expand",
    "parse_select",
]

Kind = Literal["string", "int", "datetime", "bool", "enum"]

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")

#: Operators each kind takes when a :class:`Property` does not list its own.
DEFAULT_OPERATORS: dict[str, frozenset[str]] = {
    "string": frozenset((*COMPARISONS, "startswith")),
    "enum": frozenset(("eq", "ne")),
    "int": frozenset(COMPARISONS),
    "datetime": frozenset(COMPARISONS),
    "bool": frozenset(("eq", "ne")),
}

_OPERATOR_ORDER = (*COMPARISONS, "startswith")

#: ``$expand`` values Batch supports ("Currently, it only supports statistics
#: information").
EXPANDABLE: frozenset[str] = frozenset({"stats"})


# --------------------------------------------------------------------- errors


class InvalidQueryParameterError(BadRequestError):
    """HTTP 400 ``InvalidQueryParameterValue``: a ``$filter``, ``$select`` or
    ``$expand`` Batch cannot evaluate.

    The error's ``values`` are Batch's: ``QueryParameterName`` (``"$filter"``),
    ``QueryParameterValue`` (the text as given) and ``Reason``; the message is
    the reason.

    Parameters
    ----------
    parameter
        ``"$filter"``, ``"$select"`` or ``"$expand"``.
    text
        The query parameter's value, as given.
    reason
        A sentence naming the offending property or token and its column.
    column
        1-based character position of the offender in ``text`` (None when the
        whole value is at fault).
    token
        The offending property name or token, when there is one.
    """

    code = "InvalidQueryParameterValue"

    def __init__(
        self,
        parameter: str,
        text: str,
        reason: str,
        *,
        column: int | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(
            reason,
            values={
                "QueryParameterName": parameter,
                "QueryParameterValue": text,
                "Reason": reason,
            },
        )
        self.parameter = parameter
        self.text = text
        self.reason = reason
        self.column = column
        self.token = token


def _at(column: int | None) -> str:
    return "" if column is None else f" at column {column}"


# ------------------------------------------------------------------ properties


@dataclass(frozen=True, eq=False)
class Property:
    """A property a list operation can filter on, and the column that holds it.

    Parameters
    ----------
    wire_name
        The Batch REST name, nested with ``/`` (``"state"``,
        ``"executionInfo/exitCode"``). Case-sensitive in ``$filter``.
    column
        The store column compared (``tasks.c.state``).
    kind
        ``"string"``, ``"int"``, ``"datetime"``, ``"bool"`` or ``"enum"``:
        which literals and operators the property takes (see the module's
        table).
    values
        For ``"enum"``: the allowed values in their canonical spelling, which
        is also what the column stores (``("active", "preparing", ...)``).
        Literals are matched to them case-insensitively.
    operators
        The operators allowed (``"eq"``, ..., ``"startswith"``); empty means the
        kind's defaults (:data:`DEFAULT_OPERATORS`).
    key_column
        For IDs: a column holding the value lower-cased (the store's ``key``).
        String comparisons then run on it, with the literal lower-cased, instead
        of on ``lower(column)``, so they can use the column's index.

    Notes
    -----
    Instances compare by identity: SQLAlchemy columns overload ``==``.
    """

    wire_name: str
    column: ColumnElement[Any]
    kind: Kind
    values: tuple[str, ...] = ()
    operators: frozenset[str] = field(default_factory=frozenset)
    key_column: ColumnElement[Any] | None = None

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

    @property
    def nullable(self) -> bool:
        """Whether the column may hold NULL (the property may be absent)."""
        return bool(getattr(self.column, "nullable", True))

    def operator_list(self) -> str:
        """The allowed operators, comma-separated, in a stable order."""
        return ", ".join(op for op in _OPERATOR_ORDER if op in self.operators)


_Spec = tuple[str, str, Kind, dict[str, Any]]


def _properties(table: sa.Table, specs: Iterable[_Spec]) -> dict[str, Property]:
    """Build ``{wire_name: Property}`` from ``(wire_name, column, kind, options)``,
    leaving out properties whose column ``table`` does not have."""
    out: dict[str, Property] = {}
    for wire_name, column, kind, options in specs:
        if column not in table.c:
            continue
        opts = dict(options)
        key = opts.pop("key_column", None)
        if key is not None:
            if key not in table.c:
                key = None
            else:
                opts["key_column"] = table.c[key]
        out[wire_name] = Property(wire_name, table.c[column], kind, **opts)
    return out


TASK_STATES = ("active", "preparing", "running", "completed")
TASK_RESULTS = ("success", "failure")
JOB_STATES = ("active", "disabling", "disabled", "enabling", "terminating", "completed", "deleting")
POOL_STATES = ("active", "deleting")
ALLOCATION_STATES = ("steady", "resizing", "stopping")

#: Filterable properties of "List the tasks associated with a job".
TASK_PROPERTIES: dict[str, Property] = _properties(
    store.tasks,
    [
        ("id", "id", "string", {"key_column": "key"}),
        ("state", "state", "enum", {"values": TASK_STATES}),
        ("creationTime", "creation_time", "datetime", {}),
        ("stateTransitionTime", "state_transition_time", "datetime", {}),
        ("previousState", "previous_state", "enum", {"values": TASK_STATES}),
        ("previousStateTransitionTime", "previous_state_transition_time", "datetime", {}),
        ("lastModified", "last_modified", "datetime", {}),
        ("eTag", "etag", "string", {"operators": frozenset(("eq", "ne"))}),
        ("executionInfo/startTime", "start_time", "datetime", {}),
        ("executionInfo/endTime", "end_time", "datetime", {}),
        ("executionInfo/exitCode", "exit_code", "int", {}),
        ("executionInfo/result", "result", "enum", {"values": TASK_RESULTS}),
        ("executionInfo/retryCount", "retry_count", "int", {}),
        ("executionInfo/requeueCount", "requeue_count", "int", {}),
        ("executionInfo/lastRetryTime", "last_retry_time", "datetime", {}),
        ("executionInfo/lastRequeueTime", "last_requeue_time", "datetime", {}),
        ("nodeInfo/nodeId", "node_id", "string", {}),
        ("requiredSlots", "required_slots", "int", {}),
    ],
)

#: Filterable properties of "List the jobs in an account".
JOB_PROPERTIES: dict[str, Property] = _properties(
    store.jobs,
    [
        ("id", "id", "string", {"key_column": "key"}),
        ("state", "state", "enum", {"values": JOB_STATES}),
        ("priority", "priority", "int", {}),
        ("creationTime", "creation_time", "datetime", {}),
        ("stateTransitionTime", "state_transition_time", "datetime", {}),
        ("lastModified", "last_modified", "datetime", {}),
    ],
)

#: Filterable properties of "List the pools in an account".
POOL_PROPERTIES: dict[str, Property] = _properties(
    store.pools,
    [
        ("id", "id", "string", {"key_column": "key"}),
        ("state", "state", "enum", {"values": POOL_STATES}),
        ("allocationState", "allocation_state", "enum", {"values": ALLOCATION_STATES}),
        ("creationTime", "creation_time", "datetime", {}),
        ("stateTransitionTime", "state_transition_time", "datetime", {}),
        ("allocationStateTransitionTime", "allocation_state_transition_time", "datetime", {}),
        ("lastModified", "last_modified", "datetime", {}),
    ],
)


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
        | "(" or_expr ")"

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

_PARSER = Lark(FILTER_GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)

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

_SWAPPED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_PY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
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


@dataclass(frozen=True, eq=False)
class _Literal:
    kind: Literal["string", "int", "datetime", "bool", "null"]
    value: Any
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


@dataclass(frozen=True, eq=False)
class _PropRef:
    prop: Property
    token: Token


def _column_of(token: Token) -> int:
    start = getattr(token, "start_pos", None)
    if start is not None:
        return int(start) + 1
    return int(getattr(token, "column", 0) or 0) or 1


class _Compiler(Transformer[Token, Any]):
    """Turns a parsed ``$filter`` into a SQLAlchemy expression, bottom-up."""

    def __init__(self, text: str, properties: Mapping[str, Property]) -> None:
        super().__init__()
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

    # ---- operands

    @v_args(inline=True)
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

    @v_args(inline=True)
    def string(self, token: Token) -> _Literal:
        return _Literal("string", str(token.value)[1:-1].replace("''", "'"), token)

    @v_args(inline=True)
    def integer(self, token: Token) -> _Literal:
        value = int(str(token.value))
        if not -_INT64 <= value < _INT64:
            raise self.error(
                f"integer {token.value} in $filter at column {_column_of(token)} is out of range "
                "(64-bit signed)",
                token,
            )
        return _Literal("int", value, token)

    @v_args(inline=True)
    def true(self, token: Token) -> _Literal:
        return _Literal("bool", True, token)

    @v_args(inline=True)
    def false(self, token: Token) -> _Literal:
        return _Literal("bool", False, token)

    @v_args(inline=True)
    def null(self, token: Token) -> _Literal:
        return _Literal("null", None, token)

    @v_args(inline=True)
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

    def comparison(self, children: list[Any]) -> ColumnElement[bool]:
        left, op_token, right = children
        op = str(op_token.value)
        if isinstance(left, _PropRef) and isinstance(right, _Literal):
            return self._compare(left, op, op_token, right)
        if isinstance(left, _Literal) and isinstance(right, _PropRef):
            return self._compare(right, _SWAPPED[op], op_token, left)
        if isinstance(left, _PropRef):
            raise self.error(
                f"comparison '{op}' at column {_column_of(op_token)} of $filter has a property on "
                f"both sides ('{left.prop.wire_name}' and '{right.prop.wire_name}'); "
                "compare a property with a literal",
                op_token,
            )
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
        self, ref: _PropRef, op: str, op_token: Token, lit: _Literal
    ) -> ColumnElement[bool]:
        prop = ref.prop
        self._check_operator(ref, op, op_token)
        if lit.kind == "null":
            if op == "eq":
                return prop.column.is_(None)
            if op == "ne":
                return prop.column.is_not(None)
            raise self.error(
                f"operator '{op}' cannot compare property '{prop.wire_name}' with null in $filter "
                f"at column {_column_of(op_token)}; use eq or ne",
                op_token,
            )
        column: ColumnElement[Any] = prop.column
        value: Any
        if prop.kind == "string":
            if lit.kind != "string":
                raise self._mismatch(ref, lit)
            value = lit.value.lower()
            column = prop.key_column if prop.key_column is not None else sa.func.lower(prop.column)
        elif prop.kind == "enum":
            if lit.kind != "string":
                raise self._mismatch(ref, lit)
            value = self._enum_value(ref, lit)
        elif prop.kind == "int":
            if lit.kind != "int":
                raise self._mismatch(ref, lit)
            value = lit.value
        elif prop.kind == "datetime":
            if lit.kind != "datetime":
                raise self._mismatch(ref, lit)
            value = lit.value
        else:  # bool
            if lit.kind != "bool":
                raise self._mismatch(ref, lit)
            value = lit.value
        return self._guard(prop, _PY_OPS[op](column, value))

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

    @staticmethod
    def _guard(prop: Property, expr: ColumnElement[bool]) -> ColumnElement[bool]:
        """Make a comparison on an absent (NULL) property false, not unknown,
        so that ``not`` is an exact complement."""
        if prop.nullable:
            return sa.and_(prop.column.is_not(None), expr)
        return expr

    def call(self, children: list[Any]) -> ColumnElement[bool]:
        name_token, *args = children
        name = str(name_token.value)
        if name != "startswith":
            raise self.error(
                f"unknown function '{name}' in $filter at column {_column_of(name_token)}; "
                "supported functions: startswith",
                name_token,
            )
        if len(args) != 2 or not isinstance(args[0], _PropRef) or not isinstance(args[1], _Literal):
            raise self.error(
                f"function 'startswith' at column {_column_of(name_token)} of $filter takes a "
                f"property and a string literal: startswith(id, 'prefix') (got {len(args)} "
                "argument(s))",
                name_token,
            )
        ref, lit = args
        self._check_operator(ref, "startswith", name_token)
        if lit.kind != "string":
            raise self._mismatch(ref, lit)
        prop = ref.prop
        prefix = lit.value.lower()
        column = prop.key_column if prop.key_column is not None else sa.func.lower(prop.column)
        return self._guard(prop, column.startswith(prefix, autoescape=True))

    @v_args(inline=True)
    def and_(self, left: ColumnElement[bool], right: ColumnElement[bool]) -> ColumnElement[bool]:
        return sa.and_(left, right)

    @v_args(inline=True)
    def or_(self, left: ColumnElement[bool], right: ColumnElement[bool]) -> ColumnElement[bool]:
        return sa.or_(left, right)

    @v_args(inline=True)
    def not_(self, inner: ColumnElement[bool]) -> ColumnElement[bool]:
        return sa.not_(inner)


def _syntax_error(text: str, exc: UnexpectedInput) -> InvalidQueryParameterError:
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        names: set[str] = set(exc.expected)
        interactive = getattr(exc, "interactive_parser", None)
        if interactive is not None:
            try:
                names = set(interactive.accepts())
            except Exception:  # pragma: no cover - fall back to the state's lookaheads
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


def compile_filter(text: str, properties: Mapping[str, Property]) -> ColumnElement[bool]:
    """Compile a Batch ``$filter`` into a SQLAlchemy Core boolean expression.

    Implements the filter strings of the Batch document "Create queries to list
    Batch resources efficiently" (see the module documentation for the
    language); the result goes into ``select(...).where(...)``, so the filter
    runs in the database.

    Parameters
    ----------
    text
        The ``$filter`` value, e.g. ``"(state eq 'running') and startswith(id, 'renderTask')"``.
        Blank text filters nothing (the result is ``true``).
    properties
        The filterable properties of the listed resource by wire name:
        :data:`TASK_PROPERTIES`, :data:`JOB_PROPERTIES`, :data:`POOL_PROPERTIES`.

    Returns
    -------
    sqlalchemy.ColumnElement[bool]
        The ``WHERE`` condition.

    Raises
    ------
    InvalidQueryParameterError
        (a :class:`hpcbatch.batch.errors.BadRequestError`, HTTP 400,
        ``InvalidQueryParameterValue``, ``QueryParameterName`` ``$filter``)
        on a syntax error, an unknown property (names are case-sensitive), an
        operator the property does not take, a literal of the wrong type, an
        enum value outside the allowed set or an invalid date. The reason names
        the offending property or token and its column.

    Examples
    --------
    >>> from hpcbatch.store import tasks
    >>> text = "state eq 'Completed' and executionInfo/exitCode ne 0"
    >>> cond = compile_filter(text, TASK_PROPERTIES)
    >>> stmt = sa.select(tasks.c.id).where(cond)
    """
    if not text or not text.strip():
        return sa.true()
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    try:
        result = _Compiler(text, properties).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, InvalidQueryParameterError):
            raise exc.orig_exc from None
        raise
    if isinstance(result, (_Literal, _PropRef)):  # pragma: no cover - the grammar forbids it
        raise InvalidQueryParameterError("$filter", text, "$filter is not a condition")
    return result


# ------------------------------------------------------------ $select, $expand

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")


def _split_list(text: str) -> list[tuple[str, int]]:
    """Split a comma-separated list into ``(item, 1-based column)``, items stripped."""
    items: list[tuple[str, int]] = []
    start = 0
    for part in text.split(","):
        stripped = part.strip()
        lead = len(part) - len(part.lstrip())
        items.append((stripped, start + lead + 1))
        start += len(part) + 1
    return items


def parse_select(text: str, allowed: Iterable[str]) -> list[str]:
    """Parse a Batch ``$select``: comma-separated property names.

    From the Batch document "Create queries to list Batch resources
    efficiently": "The select string consists of a comma-separated list of
    property names", e.g. ``id, state, stateTransitionTime``. Names are
    case-sensitive; nested properties use ``/`` (``executionInfo/exitCode``).

    Parameters
    ----------
    text
        The ``$select`` value; whitespace around names is ignored. Blank text
        returns ``[]`` (callers treat that as "no ``$select``").
    allowed
        The resource's selectable wire names. A nested name is also accepted
        when one of its parents is allowed (``executionInfo/exitCode`` when
        ``executionInfo`` is).

    Returns
    -------
    list[str]
        The names in the order given, without duplicates.

    Raises
    ------
    InvalidQueryParameterError
        ``InvalidQueryParameterValue`` with ``QueryParameterName`` ``$select``,
        naming the unknown or malformed name and its column.
    """
    return _parse_names("$select", text, list(allowed), nested=True)


def _parse_names(parameter: str, text: str, allowed: list[str], *, nested: bool) -> list[str]:
    if not text or not text.strip():
        return []
    allowed_set = set(allowed)
    out: list[str] = []
    seen: set[str] = set()
    for name, column in _split_list(text):
        if not name:
            raise InvalidQueryParameterError(
                parameter,
                text,
                f"empty property name in {parameter} at column {column}",
                column=column,
                token="",
            )
        if not _NAME.fullmatch(name):
            raise InvalidQueryParameterError(
                parameter,
                text,
                f"invalid property name '{name}' in {parameter} at column {column}; "
                "names are comma-separated, nested with '/'",
                column=column,
                token=name,
            )
        ok = name in allowed_set
        if not ok and nested:
            parts = name.split("/")
            ok = any("/".join(parts[:i]) in allowed_set for i in range(1, len(parts)))
        if not ok:
            same = [a for a in allowed if a.lower() == name.lower()]
            hint = (
                f" (property names are case-sensitive: did you mean '{same[0]}'?)" if same else ""
            )
            raise InvalidQueryParameterError(
                parameter,
                text,
                f"unknown property '{name}' in {parameter} at column {column}{hint}; "
                f"known properties: {', '.join(allowed) or 'none'}",
                column=column,
                token=name,
            )
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def apply_select(obj: Mapping[str, Any], selected: Iterable[str]) -> dict[str, Any]:
    """Keep only the selected properties of a wire (camelCase JSON) dict.

    Parameters
    ----------
    obj
        One item as the REST API returns it (a task, job, pool, ...).
    selected
        Names from :func:`parse_select`; ``a/b`` keeps ``obj["a"]["b"]`` inside
        ``{"a": {...}}``. Selecting a parent keeps it whole.

    Returns
    -------
    dict
        A new dict in ``obj``'s key order; selected properties ``obj`` lacks
        are simply absent (as are parents none of whose selected children
        exist). ``obj`` is not modified.
    """
    tree: dict[str, Any] = {}
    for name in selected:
        node = tree
        parts = name.split("/")
        for i, part in enumerate(parts):
            if node.get(part) is True:
                break  # a parent is selected whole
            if i == len(parts) - 1:
                node[part] = True
            else:
                node = node.setdefault(part, {})
    return _pick(obj, tree)


def _pick(obj: Mapping[str, Any], tree: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        want = tree.get(key)
        if want is None:
            continue
        if want is True:
            out[key] = value
        elif isinstance(value, Mapping):
            sub = _pick(value, want)
            if sub:
                out[key] = sub
    return out


def parse_expand(text: str, allowed: Iterable[str] = EXPANDABLE) -> set[str]:
    """Parse a Batch ``$expand``.

    The Batch document "Create queries to list Batch resources efficiently":
    the expand string "is only supported when it is used in listing jobs, job
    schedules, tasks, and pools. Currently, it only supports statistics
    information" -- the one value is ``stats``.

    Parameters
    ----------
    text
        The ``$expand`` value: comma-separated, whitespace ignored; blank text
        returns an empty set.
    allowed
        The values accepted (default :data:`EXPANDABLE`, ``{"stats"}``).

    Returns
    -------
    set[str]

    Raises
    ------
    InvalidQueryParameterError
        ``InvalidQueryParameterValue`` with ``QueryParameterName`` ``$expand``,
        naming the unsupported value and its column.
    """
    allowed_list = sorted(allowed)
    if not text or not text.strip():
        return set()
    out: set[str] = set()
    for name, column in _split_list(text):
        if name not in allowed_list:
            what = "empty value" if not name else f"unsupported value '{name}'"
            raise InvalidQueryParameterError(
                "$expand",
                text,
                f"{what} in $expand at column {column}; supported: {', '.join(allowed_list)}",
                column=column,
                token=name,
            )
        out.add(name)
    return out
