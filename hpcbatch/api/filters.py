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

"Job - List" and "Pool - List" filter in the store when the ``$filter`` names
only the properties the store has as columns (``id``, ``state``, ``priority``,
``allocationState``) and on the wire JSON otherwise (:func:`filter_listed`):
times, ``executionInfo/*``, node counts... every property Batch documents as
filterable on those lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from hpcbatch.batch.odata import (
    InvalidQueryParameterError,
    Kind,
    Property,
    Value,
    matches,
    parse_datetime,
    parse_filter,
)
from hpcbatch.batch.states import (
    AllocationState,
    ComputeNodeState,
    JobScheduleState,
    JobState,
    PoolState,
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

JOB_FILTER = ListFilter([
    ("id", "string", ()), ("displayName", "string", ()),
    ("state", "enum", tuple(map(str, JobState))),
    ("previousState", "enum", tuple(map(str, JobState))), ("priority", "int", ()),
    ("maxParallelTasks", "int", ()), ("allowTaskPreemption", "bool", ()),
    ("creationTime", "datetime", ()), ("stateTransitionTime", "datetime", ()),
    ("previousStateTransitionTime", "datetime", ()), ("lastModified", "datetime", ()),
    ("eTag", "string", ()), ("poolInfo/poolId", "string", ()),
    ("onAllTasksComplete", "enum", ("noaction", "terminatejob")),
    ("onTaskFailure", "enum", ("noaction", "performexitoptionsjobaction")),
    ("usesTaskDependencies", "bool", ()),
    ("executionInfo/startTime", "datetime", ()), ("executionInfo/endTime", "datetime", ()),
    ("executionInfo/poolId", "string", ()), ("executionInfo/terminateReason", "string", ()),
])
"""Filterable properties of "Job - List" (evaluated on the jobs' JSON when the store cannot)."""

POOL_FILTER = ListFilter([
    ("id", "string", ()), ("displayName", "string", ()), ("vmSize", "string", ()),
    ("state", "enum", tuple(map(str, PoolState))),
    ("allocationState", "enum", tuple(map(str, AllocationState))),
    ("creationTime", "datetime", ()), ("stateTransitionTime", "datetime", ()),
    ("allocationStateTransitionTime", "datetime", ()), ("lastModified", "datetime", ()),
    ("eTag", "string", ()),
    ("currentDedicatedNodes", "int", ()), ("targetDedicatedNodes", "int", ()),
    ("currentLowPriorityNodes", "int", ()), ("targetLowPriorityNodes", "int", ()),
    ("taskSlotsPerNode", "int", ()), ("enableAutoScale", "bool", ()),
    ("enableInterNodeCommunication", "bool", ()), ("autoScaleFormula", "string", ()),
])
"""Filterable properties of "Pool - List" (evaluated on the pools' JSON when the store cannot)."""


def filter_listed(text: str | None, in_store: Mapping[str, Property],
                  listing: Callable[[str | None], list[dict[str, Any]]],
                  on_wire: ListFilter) -> list[dict[str, Any]]:
    """Run a list's ``$filter`` in the store when it can, else on the items' JSON.

    Parameters
    ----------
    text
        The ``$filter`` value, or None/blank.
    in_store
        The properties the store filters in SQL (:data:`hpcbatch.batch.odata.JOB_PROPERTIES`...).
    listing
        ``listing(filter)``: the items, filtered in the store by ``filter`` (None: all).
    on_wire
        Every filterable property of the list, evaluated on the items' JSON.

    Returns
    -------
    list[dict]
        The selected items, in the list's order.

    Raises
    ------
    hpcbatch.batch.odata.InvalidQueryParameterError
        ``400 InvalidQueryParameterValue`` for a filter neither can take.
    """
    if not text or not text.strip():
        return listing(None)
    try:
        parse_filter(text, in_store)
    except InvalidQueryParameterError:  # a property only the JSON has (or a bad filter)
        return on_wire.apply(listing(None), text)
    return listing(text)
