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

:class:`~hpcbatch.batch.odata.ListFilter` itself is pure and lives in
:mod:`hpcbatch.batch.odata` (the command line filters with it too); this module holds the
lists' catalogues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hpcbatch.batch.odata import (
    InvalidQueryParameterError,
    ListFilter,
    Property,
    parse_filter,
    wire_value,
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

__all__ = [  # ListFilter and wire_value live in hpcbatch.batch.odata; re-exported here
    "JOB_FILTER", "JOB_SCHEDULE_FILTER", "NODE_FILTER", "POOL_FILTER", "SCHEDULE_JOB_FILTER",
    "ListFilter", "filter_listed", "wire_value",
]

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
