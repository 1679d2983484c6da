"""The old import path of the OData helpers, kept while their callers move.

TODO(issue 11): lead -- delete this module once ``hpcbatch/core/service.py``
and ``hpcbatch/api/rest.py`` import from the two halves it was split into:

* :mod:`hpcbatch.batch.odata` (pure): ``parse_filter``, ``parse_select``,
  ``apply_select``, ``parse_expand``, ``parse_datetime``, the property
  catalogues ``TASK_PROPERTIES``/``JOB_PROPERTIES``/``POOL_PROPERTIES``,
  ``InvalidQueryParameterError``, ``Kind``, ``matches``;
* :mod:`hpcbatch.store.filters` (SQL): ``compile_filter`` with the bound
  catalogues ``TASK_COLUMNS``/``JOB_COLUMNS``/``POOL_COLUMNS``,
  ``FilterColumn``.

Here ``TASK_PROPERTIES``, ``JOB_PROPERTIES`` and ``POOL_PROPERTIES`` are the
*bound* catalogues (what :func:`compile_filter` takes), as they were before the
split, and :func:`Property` builds a bound property with the old signature.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql.elements import ColumnElement

from hpcbatch.batch import odata as _pure
from hpcbatch.batch.odata import (
    EXPANDABLE,
    InvalidQueryParameterError,
    Kind,
    apply_select,
    parse_datetime,
    parse_expand,
    parse_select,
)
from hpcbatch.store.filters import (
    JOB_COLUMNS,
    POOL_COLUMNS,
    TASK_COLUMNS,
    FilterColumn,
    compile_filter,
)

__all__ = [
    "EXPANDABLE",
    "JOB_PROPERTIES",
    "POOL_PROPERTIES",
    "TASK_PROPERTIES",
    "InvalidQueryParameterError",
    "Kind",
    "Property",
    "apply_select",
    "compile_filter",
    "parse_datetime",
    "parse_expand",
    "parse_select",
]

TASK_PROPERTIES: dict[str, FilterColumn] = TASK_COLUMNS
JOB_PROPERTIES: dict[str, FilterColumn] = JOB_COLUMNS
POOL_PROPERTIES: dict[str, FilterColumn] = POOL_COLUMNS


class Property(FilterColumn):
    """A filterable property bound to a column, built with the pre-split signature.

    Parameters
    ----------
    wire_name, kind, values, operators
        As :class:`hpcbatch.batch.odata.Property`.
    column, key_column
        As :class:`hpcbatch.store.filters.FilterColumn`.
    """

    def __init__(
        self,
        wire_name: str,
        column: ColumnElement[Any],
        kind: Kind,
        values: tuple[str, ...] = (),
        operators: frozenset[str] = frozenset(),
        key_column: ColumnElement[Any] | None = None,
    ) -> None:
        super().__init__(_pure.Property(wire_name, kind, values, operators), column, key_column)
