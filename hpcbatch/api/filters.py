"""OData ``$filter`` over wire dicts, for the lists the service core returns whole.

The store filters tasks, jobs and pools in SQL (:mod:`hpcbatch.store.filters`).
"Compute Node - List" (nodes live in the pool manager), "Job Schedule - List"
and "Job - List From Job Schedule" come from the core as lists of wire JSON, so
:class:`ListFilter` filters those in Python: the same parser and checks
(:func:`hpcbatch.batch.odata.parse_filter`, so the same ``400
InvalidQueryParameterValue`` errors) and the same results as the SQL
(:func:`hpcbatch.batch.odata.matches`):

* string values compare case-insensitively (``id eq 'NODE1'`` matches
  ``node1``); enum literals are matched to their allowed values
  case-insensitively and compared with the item's value as it is;
* a property the item lacks (``startTaskInfo/exitCode`` of a node whose start
  task has not run) matches no comparison but ``eq null``, so ``not (...)``
  is the exact complement of ``(...)``;
* ``DateTime'...'`` literals and the items' wire times compare as UTC instants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from hpcbatch.batch.odata import (
    Kind,
    Property,
    Value,
    matches,
    parse_datetime,
    parse_filter,
)
from hpcbatch.batch.states import (
    ComputeNodeState,
    JobScheduleState,
    JobState,
    SchedulingState,
    StartTaskState,
)


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


NODE_FILTER = ListFilter([
    ("id", "string", ()), ("state", "enum", tuple(map(str, ComputeNodeState))),
    ("schedulingState", "enum", tuple(map(str, SchedulingState))), ("ipAddress", "string", ()),
    ("vmSize", "string", ()), ("affinityId", "string", ()), ("isDedicated", "bool", ()),
    ("totalTasksRun", "int", ()), ("totalTasksSucceeded", "int", ()),
    ("runningTasksCount", "int", ()), ("runningTaskSlotsCount", "int", ()),
    ("stateTransitionTime", "datetime", ()), ("allocationTime", "datetime", ()),
    ("lastBootTime", "datetime", ()),
    ("startTaskInfo/state", "enum", tuple(map(str, StartTaskState))),
    ("startTaskInfo/exitCode", "int", ()),
])
"""Filterable properties of "Compute Node - List"."""

JOB_SCHEDULE_FILTER = ListFilter([
    ("id", "string", ()), ("state", "enum", tuple(map(str, JobScheduleState))),
    ("creationTime", "datetime", ()), ("stateTransitionTime", "datetime", ()),
    ("lastModified", "datetime", ()), ("displayName", "string", ()),
])
"""Filterable properties of "Job Schedule - List"."""

SCHEDULE_JOB_FILTER = ListFilter([
    ("id", "string", ()), ("state", "enum", tuple(map(str, JobState))),
    ("priority", "int", ()), ("creationTime", "datetime", ()),
    ("stateTransitionTime", "datetime", ()), ("lastModified", "datetime", ()),
    ("executionInfo/startTime", "datetime", ()), ("executionInfo/endTime", "datetime", ()),
])
"""Filterable properties of "Job - List From Job Schedule"."""
