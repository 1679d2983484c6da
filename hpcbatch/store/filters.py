"""Batch ``$filter`` in the database: the checked expression of
:mod:`hpcbatch.batch.odata` compiled into a SQLAlchemy Core condition.

:mod:`hpcbatch.batch.odata` parses and checks a ``$filter`` against a
resource's property catalogue; this module binds each catalogue property to the
store column that holds it (:data:`TASK_COLUMNS`, :data:`JOB_COLUMNS`,
:data:`POOL_COLUMNS`) and turns the expression into a ``WHERE`` condition, so
the filter runs in the database (on indexed columns where there are some) and a
list query costs in proportion to what it returns.

How the SQL stays index-friendly: enum values arrive in the canonical spelling
the store keeps (``'Active'`` became ``'active'``) and are compared to the bare
column; IDs are compared on the store's lower-cased ``key`` column (see
:mod:`hpcbatch.store.database`). Only other strings need ``lower(column)``.

A comparison on a column that may be NULL (a property the resource lacks) is
guarded with ``column IS NOT NULL``, so it is false rather than unknown and
``not (...)`` is the exact complement of ``(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from hpcbatch.batch import odata
from hpcbatch.store import database as store

__all__ = [
    "JOB_COLUMNS",
    "POOL_COLUMNS",
    "TASK_COLUMNS",
    "FilterColumn",
    "bind_columns",
    "compile_filter",
    "to_sql",
]


@dataclass(frozen=True, eq=False)
class FilterColumn:
    """A filterable property and the store column that holds it.

    Parameters
    ----------
    property
        The property as :mod:`hpcbatch.batch.odata` knows it (name, kind,
        allowed values and operators).
    column
        The column compared (``tasks.c.state``).
    key_column
        For IDs: a column holding the value lower-cased (the store's ``key``).
        String comparisons then run on it instead of on ``lower(column)``, so
        they can use the column's index.

    Notes
    -----
    Instances compare by identity: SQLAlchemy columns overload ``==``.
    """

    property: odata.Property
    column: ColumnElement[Any]
    key_column: ColumnElement[Any] | None = None


def bind_columns(
    table: sa.Table,
    catalogue: Mapping[str, odata.Property],
    columns: Mapping[str, str],
    key_columns: Mapping[str, str] | None = None,
) -> dict[str, FilterColumn]:
    """Bind every property of a catalogue to a column of ``table``.

    Parameters
    ----------
    table
        The store table listed (``tasks``).
    catalogue
        Wire name to property (:data:`hpcbatch.batch.odata.TASK_PROPERTIES`).
    columns
        Wire name to column name, for every property of ``catalogue``.
    key_columns
        Wire name to the name of a lower-cased copy of the column
        (``{"id": "key"}``).

    Returns
    -------
    dict[str, FilterColumn]
        By wire name, in the catalogue's order.

    Raises
    ------
    ValueError
        A property without a column, or a column ``table`` does not have.
    """
    keys = dict(key_columns or {})
    out: dict[str, FilterColumn] = {}
    for wire_name, prop in catalogue.items():
        name = columns.get(wire_name)
        if name is None or name not in table.c:
            raise ValueError(f"{table.name}: no column for filterable property {wire_name!r}")
        key = keys.get(wire_name)
        if key is not None and key not in table.c:
            raise ValueError(f"{table.name}: no key column {key!r} for {wire_name!r}")
        out[wire_name] = FilterColumn(
            prop, table.c[name], table.c[key] if key is not None else None
        )
    return out


#: Filterable task properties bound to :data:`hpcbatch.store.database.tasks`.
TASK_COLUMNS: dict[str, FilterColumn] = bind_columns(
    store.tasks,
    odata.TASK_PROPERTIES,
    {
        "id": "id",
        "state": "state",
        "creationTime": "creation_time",
        "stateTransitionTime": "state_transition_time",
        "previousState": "previous_state",
        "previousStateTransitionTime": "previous_state_transition_time",
        "lastModified": "last_modified",
        "eTag": "etag",
        "executionInfo/startTime": "start_time",
        "executionInfo/endTime": "end_time",
        "executionInfo/exitCode": "exit_code",
        "executionInfo/result": "result",
        "executionInfo/retryCount": "retry_count",
        "executionInfo/requeueCount": "requeue_count",
        "executionInfo/lastRetryTime": "last_retry_time",
        "executionInfo/lastRequeueTime": "last_requeue_time",
        "nodeInfo/nodeId": "node_id",
        "requiredSlots": "required_slots",
    },
    {"id": "key"},
)

#: Filterable job properties bound to :data:`hpcbatch.store.database.jobs`.
JOB_COLUMNS: dict[str, FilterColumn] = bind_columns(
    store.jobs,
    odata.JOB_PROPERTIES,
    {
        "id": "id",
        "state": "state",
        "priority": "priority",
        "creationTime": "creation_time",
        "stateTransitionTime": "state_transition_time",
    },
    {"id": "key"},
)

#: Filterable pool properties bound to :data:`hpcbatch.store.database.pools`.
POOL_COLUMNS: dict[str, FilterColumn] = bind_columns(
    store.pools,
    odata.POOL_PROPERTIES,
    {
        "id": "id",
        "state": "state",
        "allocationState": "allocation_state",
    },
    {"id": "key"},
)


def _compared_column(bound: FilterColumn) -> ColumnElement[Any]:
    """The column a value is compared with: the key column for IDs,
    ``lower(column)`` for other strings, else the bare column."""
    if bound.property.kind != "string":
        return bound.column
    if bound.key_column is not None:
        return bound.key_column
    return sa.func.lower(bound.column)


def _guard(bound: FilterColumn, expr: ColumnElement[bool]) -> ColumnElement[bool]:
    """Make a comparison on an absent (NULL) property false, not unknown,
    so that ``not`` is an exact complement."""
    if getattr(bound.column, "nullable", True):  # the property may be absent
        return sa.and_(bound.column.is_not(None), expr)
    return expr


def to_sql(
    expression: odata.Expression, columns: Mapping[str, FilterColumn]
) -> ColumnElement[bool]:
    """Compile a checked ``$filter`` expression into a SQLAlchemy condition.

    Parameters
    ----------
    expression
        From :func:`hpcbatch.batch.odata.parse_filter` (its nesting is bounded
        by :data:`hpcbatch.batch.odata.MAX_FILTER_DEPTH`).
    columns
        The columns of the listed resource by wire name: :data:`TASK_COLUMNS`,
        :data:`JOB_COLUMNS`, :data:`POOL_COLUMNS`; every property the
        expression names must be there.

    Returns
    -------
    sqlalchemy.ColumnElement[bool]
        The ``WHERE`` condition.
    """
    match expression:
        case odata.Comparison(prop, op, value):
            bound = columns[prop.wire_name]
            if value is None:
                return bound.column.is_(None) if op == "eq" else bound.column.is_not(None)
            return _guard(bound, odata.OPERATOR_FUNCTIONS[op](_compared_column(bound), value))
        case odata.StartsWith(prop, prefix):
            bound = columns[prop.wire_name]
            return _guard(bound, _compared_column(bound).startswith(prefix, autoescape=True))
        case odata.Not(operand):
            return sa.not_(to_sql(operand, columns))
        case odata.And(operands):
            return sa.and_(*(to_sql(o, columns) for o in operands))
        case odata.Or(operands):
            return sa.or_(*(to_sql(o, columns) for o in operands))
    raise AssertionError(f"not a $filter expression: {expression!r}")  # pragma: no cover


def compile_filter(text: str, columns: Mapping[str, FilterColumn]) -> ColumnElement[bool]:
    """Compile a Batch ``$filter`` into a SQLAlchemy Core boolean expression.

    Implements the filter strings of the Batch document "Create queries to list
    Batch resources efficiently" (the language: :mod:`hpcbatch.batch.odata`);
    the result goes into ``select(...).where(...)``, so the filter runs in the
    database.

    Parameters
    ----------
    text
        The ``$filter`` value, e.g. ``"(state eq 'running') and startswith(id, 'renderTask')"``.
        Blank text filters nothing (the result is ``true``).
    columns
        The filterable properties of the listed resource and their columns:
        :data:`TASK_COLUMNS`, :data:`JOB_COLUMNS`, :data:`POOL_COLUMNS`.

    Returns
    -------
    sqlalchemy.ColumnElement[bool]
        The ``WHERE`` condition.

    Raises
    ------
    hpcbatch.batch.odata.InvalidQueryParameterError
        HTTP 400 ``InvalidQueryParameterValue`` (``QueryParameterName``
        ``$filter``), as :func:`hpcbatch.batch.odata.parse_filter` raises it.

    Examples
    --------
    >>> from hpcbatch.store.database import tasks
    >>> text = "state eq 'Completed' and executionInfo/exitCode ne 0"
    >>> stmt = sa.select(tasks.c.id).where(compile_filter(text, TASK_COLUMNS))
    """
    catalogue = {name: bound.property for name, bound in columns.items()}
    expression = odata.parse_filter(text, catalogue)
    if expression is None:
        return sa.true()
    return to_sql(expression, columns)
