"""Batch diagnostic events: Batch's event bodies and an append-only event log.

Implements "Log events for diagnostic evaluation and monitoring of Batch
solutions" (Azure Batch documentation, 2017) and today's list of Batch service
log events (Azure Batch monitoring data reference): pool create, pool delete
start, pool delete complete, pool resize start, pool resize complete, pool
autoscale, task start, task complete, task fail, task requeue, task schedule
fail and special task. Batch documents no job, job schedule or compute node
event bodies, so there are none here.

The builders are pure: each takes the service's wire dicts (``CloudPool`` and
``CloudTask`` JSON as the REST API returns them, camelCase) and returns the
event body with Batch's field names, nesting and value formats (times as
``2016-09-08T16:32:23.799Z``, ``resizeTimeout`` in milliseconds as a string,
``vmFillType`` ``Spread``/``Pack``, error categories ``UserError``/``ServerError``).

:class:`EventLog` writes one JSON line per event,
``{"time": "...Z", "name": "TaskStartEvent", "body": {...}}``, to a local file
(rotated at ``max_bytes``) and, batched, to service storage, where Batch keeps
its diagnostic logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from pydantic import TypeAdapter, ValidationError

log = logging.getLogger(__name__)

__all__ = [
    "EVENT_NAMES",
    "POOL_AUTOSCALE",
    "POOL_CREATE",
    "POOL_DELETE_COMPLETE",
    "POOL_DELETE_START",
    "POOL_RESIZE_COMPLETE",
    "POOL_RESIZE_START",
    "SPECIAL_TASK",
    "TASK_COMPLETE",
    "TASK_FAIL",
    "TASK_REQUEUE",
    "TASK_SCHEDULE_FAIL",
    "TASK_START",
    "format_time",
    "pool_autoscale_event",
    "pool_create_event",
    "pool_delete_complete_event",
    "pool_delete_start_event",
    "pool_resize_complete_event",
    "pool_resize_start_event",
    "special_task_event",
    "task_complete_event",
    "task_fail_event",
    "task_requeue_event",
    "task_schedule_fail_event",
    "task_start_event",
]

# ----------------------------------------------------------------------- names

POOL_CREATE: Final = "PoolCreateEvent"
POOL_DELETE_START: Final = "PoolDeleteStartEvent"
POOL_DELETE_COMPLETE: Final = "PoolDeleteCompleteEvent"
POOL_RESIZE_START: Final = "PoolResizeStartEvent"
POOL_RESIZE_COMPLETE: Final = "PoolResizeCompleteEvent"
POOL_AUTOSCALE: Final = "PoolAutoscaleEvent"
TASK_START: Final = "TaskStartEvent"
TASK_COMPLETE: Final = "TaskCompleteEvent"
TASK_FAIL: Final = "TaskFailEvent"
TASK_REQUEUE: Final = "TaskRequeueEvent"
TASK_SCHEDULE_FAIL: Final = "TaskScheduleFailEvent"
SPECIAL_TASK: Final = "SpecialTaskEvent"

EVENT_NAMES: Final[frozenset[str]] = frozenset(
    {
        POOL_CREATE,
        POOL_DELETE_START,
        POOL_DELETE_COMPLETE,
        POOL_RESIZE_START,
        POOL_RESIZE_COMPLETE,
        POOL_AUTOSCALE,
        TASK_START,
        TASK_COMPLETE,
        TASK_FAIL,
        TASK_REQUEUE,
        TASK_SCHEDULE_FAIL,
        SPECIAL_TASK,
    }
)
"""Names of the Batch service log events (the metric names Batch counts them by)."""

DEFAULT_RESIZE_TIMEOUT: Final = timedelta(minutes=15)
"""Batch's default ``resizeTimeout``."""

TaskType = Literal["User", "JobManager"]
"""``taskType`` of task events: ``JobManager`` for the job manager task, else ``User``."""

SpecialTaskType = Literal["JobPrep", "JobRelease", "StartTask"]
"""``taskType`` of special task events (job preparation, job release, start task)."""

_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)

# ------------------------------------------------------------------- formatting


def format_time(value: datetime | str) -> str:
    """Format a time as Batch events do: UTC, milliseconds, ``Z`` (``2016-09-08T16:32:23.799Z``).

    Parameters
    ----------
    value
        An aware ``datetime`` (a naive one is taken as UTC, as Batch's times
        are), or an ISO 8601 string as found in the REST JSON.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        ``value`` is a string that is not an ISO 8601 time.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)  # the REST JSON's times: the fast path
        except ValueError:
            try:
                value = _DATETIME.validate_python(value)  # the rest of ISO 8601
            except ValidationError:
                raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if value.tzinfo is None:  # UTC already (the dispatcher's times): no conversion
        return value.isoformat(timespec="milliseconds") + "Z"
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def _duration(value: Any, default: timedelta) -> timedelta:
    if value is None:
        return default
    if isinstance(value, timedelta):
        return value
    return _DURATION.validate_python(value)


def _ms(value: timedelta) -> str:
    return str(int(value / timedelta(milliseconds=1)))


def _put_time(out: dict[str, Any], key: str, value: datetime | str | None) -> None:
    if value is not None:
        out[key] = format_time(value)


def _category(value: Any) -> str:
    """``usererror`` (REST ``ErrorCategory``) -> ``UserError`` (event spelling)."""
    text = str(value or "")
    return {"usererror": "UserError", "servererror": "ServerError"}.get(text.lower(), text)


def _details(values: Any) -> list[dict[str, str]]:
    """Error details as ``[{"name", "value"}]`` (REST ``NameValuePair``)."""
    out: list[dict[str, str]] = []
    for item in values or []:
        if isinstance(item, Mapping):
            out.append(
                {
                    "name": str(item.get("name", item.get("key", ""))),
                    "value": str(item.get("value", "")),
                }
            )
    return out


def _scheduling_error(failure: Mapping[str, Any] | None, *, full: bool = True) -> dict[str, Any]:
    """A task's ``failureInfo`` as an event ``schedulingError``."""
    failure = failure or {}
    out: dict[str, Any] = {
        "category": _category(failure.get("category")),
        "code": str(failure.get("code") or ""),
        "message": str(failure.get("message") or ""),
    }
    if full:
        out["details"] = _details(failure.get("details"))
    return out


def _pool_id(pool: Mapping[str, Any] | str) -> str:
    return pool if isinstance(pool, str) else str(pool["id"])


# ------------------------------------------------------------------ pool events


def pool_create_event(pool: Mapping[str, Any], *, is_auto_pool: bool = False) -> dict[str, Any]:
    """Body of the *pool create* event (``PoolCreateEvent``).

    Emitted once a pool has been created; if its target size is above zero a
    pool resize start event follows (Log events for diagnostic evaluation and
    monitoring of Batch solutions; "Pool create event").

    Parameters
    ----------
    pool
        The pool's REST JSON (``CloudPool``): ``id``, ``vmSize``,
        ``targetDedicatedNodes``, ``resizeTimeout`` (ISO 8601 duration),
        ``taskSlotsPerNode``/``maxTasksPerNode``,
        ``taskSchedulingPolicy.nodeFillType`` ...
    is_auto_pool
        The pool was made by a job's or job schedule's auto pool specification.

    Returns
    -------
    dict
        ``{"id", "displayName", "vmSize", "imageType", "cloudServiceConfiguration",
        "networkConfiguration", "virtualMachineConfiguration", "resizeTimeout",
        "targetDedicatedNodes", "targetLowPriorityNodes", "maxTasksPerNode",
        "taskSlotsPerNode", "vmFillType", "enableAutoScale",
        "enableInterNodeCommunication", "isAutoPool"}``; ``displayName`` and the
        three configuration objects only when the pool has them. ``imageType``
        is ``CloudServiceConfiguration`` for a cloud service pool, else
        ``VirtualMachineConfiguration``; ``resizeTimeout`` is milliseconds as a
        string (``"900000"`` by default).

    Raises
    ------
    KeyError
        ``pool`` has no ``id``.
    """
    slots = int(pool.get("taskSlotsPerNode") or pool.get("maxTasksPerNode") or 1)
    fill = str((pool.get("taskSchedulingPolicy") or {}).get("nodeFillType") or "spread")
    cloud = pool.get("cloudServiceConfiguration")
    vm = pool.get("virtualMachineConfiguration")
    body: dict[str, Any] = {"id": str(pool["id"])}
    if pool.get("displayName") is not None:
        body["displayName"] = pool["displayName"]
    body["vmSize"] = pool.get("vmSize", "")
    body["imageType"] = (
        "CloudServiceConfiguration" if cloud and not vm else "VirtualMachineConfiguration"
    )
    if cloud:
        body["cloudServiceConfiguration"] = {
            "osFamily": str(cloud.get("osFamily", "")),
            "targetOsVersion": str(
                cloud.get("targetOSVersion")
                or cloud.get("targetOsVersion")
                or cloud.get("osVersion")
                or "*"
            ),
        }
    if pool.get("networkConfiguration"):
        body["networkConfiguration"] = {
            "subnetId": pool["networkConfiguration"].get("subnetId", "")
        }
    if vm:
        image = vm.get("imageReference") or {}
        vm_body: dict[str, Any] = {
            "imageReference": {
                k: image[k] for k in ("publisher", "offer", "sku", "version") if k in image
            },
            "nodeAgentId": vm.get("nodeAgentSKUId") or vm.get("nodeAgentId") or "",
        }
        windows = vm.get("windowsConfiguration")
        if windows:
            vm_body["windowsConfiguration"] = {
                "enableAutomaticUpdates": bool(windows.get("enableAutomaticUpdates", True))
            }
        body["virtualMachineConfiguration"] = vm_body
    body.update(
        {
            "resizeTimeout": _ms(_duration(pool.get("resizeTimeout"), DEFAULT_RESIZE_TIMEOUT)),
            "targetDedicatedNodes": int(pool.get("targetDedicatedNodes") or 0),
            "targetLowPriorityNodes": int(pool.get("targetLowPriorityNodes") or 0),
            "maxTasksPerNode": slots,
            "taskSlotsPerNode": slots,
            "vmFillType": fill[:1].upper() + fill[1:].lower(),
            "enableAutoScale": bool(pool.get("enableAutoScale", False)),
            "enableInterNodeCommunication": bool(pool.get("enableInterNodeCommunication", False)),
            "isAutoPool": is_auto_pool,
        }
    )
    return body


def pool_delete_start_event(pool: Mapping[str, Any] | str) -> dict[str, Any]:
    """Body of the *pool delete start* event (``PoolDeleteStartEvent``): ``{"id"}``.

    Emitted when a pool delete operation has started (Log events for diagnostic
    evaluation and monitoring of Batch solutions; "Pool delete start event").

    Parameters
    ----------
    pool
        The pool's REST JSON, or its ID.
    """
    return {"id": _pool_id(pool)}


def pool_delete_complete_event(
    pool: Mapping[str, Any] | str, *, start_time: datetime | str, end_time: datetime | str
) -> dict[str, Any]:
    """Body of the *pool delete complete* event (``PoolDeleteCompleteEvent``).

    Emitted when a pool delete operation has completed (Log events for
    diagnostic evaluation and monitoring of Batch solutions; "Pool delete
    complete event").

    Parameters
    ----------
    pool
        The pool's REST JSON, or its ID.
    start_time, end_time
        When the delete started and completed.

    Returns
    -------
    dict
        ``{"id", "startTime", "endTime"}``.
    """
    return {
        "id": _pool_id(pool),
        "startTime": format_time(start_time),
        "endTime": format_time(end_time),
    }


def _resize_body(
    pool: Mapping[str, Any], node_deallocation_option: str | None, is_auto_pool: bool
) -> dict[str, Any]:
    current = int(pool.get("currentDedicatedNodes") or 0)
    target = int(pool.get("targetDedicatedNodes") or 0)
    current_lp = int(pool.get("currentLowPriorityNodes") or 0)
    target_lp = int(pool.get("targetLowPriorityNodes") or 0)
    if node_deallocation_option is None:
        shrinking = target < current or target_lp < current_lp
        node_deallocation_option = "requeue" if shrinking else "invalid"
    return {
        "id": str(pool["id"]),
        "nodeDeallocationOption": node_deallocation_option,
        "currentDedicatedNodes": current,
        "targetDedicatedNodes": target,
        "currentLowPriorityNodes": current_lp,
        "targetLowPriorityNodes": target_lp,
        "enableAutoScale": bool(pool.get("enableAutoScale", False)),
        "isAutoPool": is_auto_pool,
    }


def pool_resize_start_event(
    pool: Mapping[str, Any],
    *,
    node_deallocation_option: str | None = None,
    is_auto_pool: bool = False,
) -> dict[str, Any]:
    """Body of the *pool resize start* event (``PoolResizeStartEvent``).

    Emitted when a pool resize has started; a pool resize complete event
    follows when it ends (Log events for diagnostic evaluation and monitoring
    of Batch solutions; "Pool resize start event").

    Parameters
    ----------
    pool
        The pool's REST JSON as the resize starts: ``currentDedicatedNodes``
        (nodes it has) and ``targetDedicatedNodes`` (the new target).
    node_deallocation_option
        ``requeue``, ``terminate``, ``taskcompletion`` or ``retaineddata`` for a
        shrinking pool. Default: ``requeue`` (Batch's default) when the pool
        shrinks, ``invalid`` when it grows, as Batch reports it.
    is_auto_pool
        The pool was made by an auto pool specification.

    Returns
    -------
    dict
        ``{"id", "nodeDeallocationOption", "currentDedicatedNodes",
        "targetDedicatedNodes", "currentLowPriorityNodes",
        "targetLowPriorityNodes", "enableAutoScale", "isAutoPool"}``.
    """
    return _resize_body(pool, node_deallocation_option, is_auto_pool)


def pool_resize_complete_event(
    pool: Mapping[str, Any],
    *,
    start_time: datetime | str,
    end_time: datetime | str,
    error: Mapping[str, Any] | None = None,
    node_deallocation_option: str | None = None,
    is_auto_pool: bool = False,
) -> dict[str, Any]:
    """Body of the *pool resize complete* event (``PoolResizeCompleteEvent``).

    Emitted when a pool resize has completed or failed (Log events for
    diagnostic evaluation and monitoring of Batch solutions; "Pool resize
    complete event").

    Parameters
    ----------
    pool
        The pool's REST JSON as the resize ends. When ``error`` is not given
        and the pool has ``resizeErrors``, the first one is the result.
    start_time, end_time
        When the resize started and ended.
    error
        The resize error (``ResizeError``: ``code``, ``message``), e.g.
        ``{"code": "AllocationTimedOut", ...}``; ``None`` for success.
    node_deallocation_option
        As given for the resize start event (same default).
    is_auto_pool
        The pool was made by an auto pool specification.

    Returns
    -------
    dict
        The resize start body plus ``startTime``, ``endTime``, ``resultCode``
        (``"Success"`` or the error code) and ``resultMessage`` (``"The
        operation succeeded"`` or the error message).
    """
    if error is None and pool.get("resizeErrors"):
        error = pool["resizeErrors"][0]
    body = _resize_body(pool, node_deallocation_option, is_auto_pool)
    body["startTime"] = format_time(start_time)
    body["endTime"] = format_time(end_time)
    if error is None:
        body["resultCode"] = "Success"
        body["resultMessage"] = "The operation succeeded"
    else:
        body["resultCode"] = str(error.get("code") or "")
        body["resultMessage"] = str(error.get("message") or "")
    return body


def pool_autoscale_event(
    pool: Mapping[str, Any], run: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Body of the *pool autoscale* event.

    Emitted once a pool's autoscale formula has been evaluated ("Pool autoscale
    event" of today's Batch service log events).

    Parameters
    ----------
    pool
        The pool's REST JSON: ``id``, ``autoScaleFormula`` and, unless ``run``
        is given, ``autoScaleRun``.
    run
        The evaluation (``AutoScaleRun``: ``timestamp``, ``results``,
        ``error`` with ``code``, ``message``, ``values``).

    Returns
    -------
    dict
        ``{"id", "timestamp", "formula", "results"}`` and, when the evaluation
        failed, ``"error": {"code", "message", "values": [{"name", "value"}]}``.

    Raises
    ------
    KeyError
        No ``run`` and no ``autoScaleRun`` in ``pool``.
    """
    run = run if run is not None else pool["autoScaleRun"]
    body: dict[str, Any] = {"id": str(pool["id"])}
    _put_time(body, "timestamp", run.get("timestamp"))
    body["formula"] = str(pool.get("autoScaleFormula") or "")
    body["results"] = str(run.get("results") or "")
    error = run.get("error")
    if error:
        body["error"] = {
            "code": str(error.get("code") or ""),
            "message": str(error.get("message") or ""),
            "values": _details(error.get("values")),
        }
    return body


# ------------------------------------------------------------------ task events


def _task_head(
    job_id: str,
    task: Mapping[str, Any],
    task_type: str,
    system_task_version: int,
    pool_id: str | None,
) -> dict[str, Any]:
    node = task.get("nodeInfo") or {}
    multi = task.get("multiInstanceSettings") or {}
    constraints = task.get("constraints") or {}
    return {
        "jobId": job_id,
        "id": str(task["id"]),
        "taskType": task_type,
        "systemTaskVersion": system_task_version,
        "requiredSlots": int(task.get("requiredSlots") or 1),
        "nodeInfo": {
            "poolId": str(node.get("poolId") or pool_id or ""),
            "nodeId": str(node.get("nodeId") or ""),
        },
        "multiInstanceSettings": {"numberOfInstances": int(multi.get("numberOfInstances") or 1)},
        "constraints": {"maxTaskRetryCount": int(constraints.get("maxTaskRetryCount") or 0)},
    }


def _run_info(info: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put_time(out, "startTime", info.get("startTime"))
    _put_time(out, "endTime", info.get("endTime"))
    if info.get("exitCode") is not None:
        out["exitCode"] = int(info["exitCode"])
    out["retryCount"] = int(info.get("retryCount") or 0)
    out["requeueCount"] = int(info.get("requeueCount") or 0)
    return out


def task_start_event(
    job_id: str,
    task: Mapping[str, Any],
    *,
    task_type: TaskType = "User",
    system_task_version: int = 0,
    pool_id: str | None = None,
    scheduled_time: datetime | str | None = None,
) -> dict[str, Any]:
    """Body of the *task start* event (``TaskStartEvent``).

    Emitted once the scheduler has started a task on a compute node, again on
    every retry or requeue (Log events for diagnostic evaluation and
    monitoring of Batch solutions; "Task start event").

    Parameters
    ----------
    job_id
        The task's job.
    task
        The task's REST JSON (``CloudTask``): ``id``, ``nodeInfo`` (``poolId``,
        ``nodeId``), ``requiredSlots``, ``multiInstanceSettings``,
        ``constraints.maxTaskRetryCount``, ``executionInfo.retryCount``.
    task_type
        ``"JobManager"`` for the job's job manager task, else ``"User"``.
    system_task_version
        The service's internal retry counter for the task.
    pool_id
        Pool to report when ``task["nodeInfo"]`` has no ``poolId``.
    scheduled_time
        When the scheduler placed the task (``executionInfo.scheduledTime``);
        omitted when ``None``.

    Returns
    -------
    dict
        ``{"jobId", "id", "taskType", "systemTaskVersion", "requiredSlots",
        "nodeInfo": {"poolId", "nodeId"}, "multiInstanceSettings":
        {"numberOfInstances"}, "constraints": {"maxTaskRetryCount"},
        "executionInfo": {"retryCount"}}``.
    """
    body = _task_head(job_id, task, task_type, system_task_version, pool_id)
    info = task.get("executionInfo") or {}
    execution: dict[str, Any] = {"retryCount": int(info.get("retryCount") or 0)}
    _put_time(execution, "scheduledTime", scheduled_time)
    body["executionInfo"] = execution
    return body


def task_complete_event(
    job_id: str,
    task: Mapping[str, Any],
    *,
    task_type: TaskType = "User",
    system_task_version: int = 0,
    pool_id: str | None = None,
) -> dict[str, Any]:
    """Body of the *task complete* event (``TaskCompleteEvent``).

    Emitted once a task has completed, whatever its exit code (Log events for
    diagnostic evaluation and monitoring of Batch solutions; "Task complete
    event"). A failed task gets a task fail event too.

    Parameters
    ----------
    job_id
        The task's job.
    task
        The completed task's REST JSON; ``executionInfo`` gives ``startTime``,
        ``endTime``, ``exitCode``, ``retryCount``, ``requeueCount``, ``result``
        and ``failureInfo``.
    task_type, system_task_version, pool_id
        As for :func:`task_start_event`.

    Returns
    -------
    dict
        The task start body's head with ``"executionInfo": {"startTime",
        "endTime", "exitCode", "retryCount", "requeueCount", "result",
        "schedulingError": {"category", "code", "message", "details"}}``;
        ``result`` is ``"Success"`` or ``"Failure"``, ``schedulingError`` holds
        empty strings when the task did not fail.
    """
    info = task.get("executionInfo") or {}
    failed = str(info.get("result") or "").lower() == "failure" or bool(info.get("failureInfo"))
    return _finished_body(job_id, task, task_type, system_task_version, pool_id, failed=failed)


def task_fail_event(
    job_id: str,
    task: Mapping[str, Any],
    *,
    task_type: TaskType = "User",
    system_task_version: int = 0,
    pool_id: str | None = None,
) -> dict[str, Any]:
    """Body of the *task fail* event (``TaskFailEvent``).

    Emitted, in addition to the task complete event, when a task completes with
    a failure; every nonzero exit code is a failure (Log events for diagnostic
    evaluation and monitoring of Batch solutions; "Task fail event").

    Parameters
    ----------
    job_id
        The task's job.
    task
        The failed task's REST JSON (``executionInfo`` with ``failureInfo``).
    task_type, system_task_version, pool_id
        As for :func:`task_start_event`.

    Returns
    -------
    dict
        Like :func:`task_complete_event` with ``"result": "Failure"`` and the
        task's ``failureInfo`` as ``schedulingError`` (category ``UserError`` or
        ``ServerError``); without ``failureInfo``, Batch's
        ``{"category": "UserError", "code": "FailureExitCode", "message": "The
        task exited with an exit code representing a failure", "details": []}``.
    """
    return _finished_body(job_id, task, task_type, system_task_version, pool_id, failed=True)


def _finished_body(
    job_id: str,
    task: Mapping[str, Any],
    task_type: str,
    system_task_version: int,
    pool_id: str | None,
    *,
    failed: bool,
) -> dict[str, Any]:
    body = _task_head(job_id, task, task_type, system_task_version, pool_id)
    info = task.get("executionInfo") or {}
    execution = _run_info(info)
    if failed:
        execution["result"] = "Failure"
        execution["schedulingError"] = _scheduling_error(
            info.get("failureInfo")
            or {
                "category": "usererror",
                "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure",
            }
        )
    else:
        execution["result"] = "Success"
        execution["schedulingError"] = _scheduling_error(None)
    body["executionInfo"] = execution
    return body


def task_requeue_event(
    job_id: str,
    task: Mapping[str, Any],
    *,
    task_type: TaskType = "User",
    system_task_version: int = 0,
    pool_id: str | None = None,
) -> dict[str, Any]:
    """Body of the *task requeue* event (``TaskRequeueEvent``).

    Emitted when Batch requeues a task so that it can be scheduled again (node
    removed, job disabled with requeue, service recovery); a new task start
    event follows when it starts again ("Task requeue event" of today's Batch
    service log events).

    Parameters
    ----------
    job_id
        The task's job.
    task
        The task's REST JSON as it was requeued: ``nodeInfo`` of the node it
        most recently ran on, ``executionInfo`` with ``requeueCount`` already
        counting this requeue.
    task_type, system_task_version, pool_id
        As for :func:`task_start_event`.

    Returns
    -------
    dict
        The task event head with ``executionInfo`` holding ``startTime``,
        ``endTime``, ``exitCode``, ``result`` (REST spelling, ``failure``) and
        ``schedulingError`` only when the task has them, and always
        ``retryCount`` and ``requeueCount``.
    """
    body = _task_head(job_id, task, task_type, system_task_version, pool_id)
    info = task.get("executionInfo") or {}
    execution = _run_info(info)
    if info.get("result"):
        execution["result"] = str(info["result"])
    if info.get("failureInfo"):
        execution["schedulingError"] = _scheduling_error(info["failureInfo"])
    body["executionInfo"] = execution
    return body


def task_schedule_fail_event(
    job_id: str,
    task: Mapping[str, Any],
    *,
    error: Mapping[str, Any],
    task_type: TaskType = "User",
    system_task_version: int = 0,
    pool_id: str | None = None,
) -> dict[str, Any]:
    """Body of the *task schedule fail* event (``TaskScheduleFailEvent``).

    Emitted when a task could not be scheduled and will be retried later, a
    temporary failure such as no node with enough free slots for its
    ``requiredSlots`` ("Task schedule fail event" of today's Batch service log
    events).

    Parameters
    ----------
    job_id
        The task's job.
    task
        The task's REST JSON.
    error
        Why it could not be scheduled: ``category`` (``usererror`` or
        ``UserError``, ``servererror``), ``code``, ``message``.
    task_type, system_task_version
        As for :func:`task_start_event`.
    pool_id
        The job's pool (the task has no node yet: ``nodeId`` is empty).

    Returns
    -------
    dict
        The task event head and ``"schedulingError": {"category", "code",
        "message"}`` (no ``executionInfo``).
    """
    body = _task_head(job_id, task, task_type, system_task_version, pool_id)
    body["schedulingError"] = _scheduling_error(error, full=False)
    return body


def special_task_event(
    job_id: str | None,
    task_name: str,
    task_type: SpecialTaskType,
    *,
    pool_id: str,
    node_id: str,
    execution_info: Mapping[str, Any],
) -> dict[str, Any]:
    """Body of the *special task* event, for job preparation, job release and start tasks.

    Emitted when Batch reports a special task as completed or failed ("Special
    task event" of today's Batch service log events).

    Parameters
    ----------
    job_id
        The job of a job preparation or release task; ``None`` for a pool's
        start task (the field is then empty).
    task_name
        The special task's ID (``jobPreparationTask.id`` ...).
    task_type
        ``"JobPrep"``, ``"JobRelease"`` or ``"StartTask"``.
    pool_id, node_id
        Where it ran.
    execution_info
        Its REST execution information (``JobPreparationTaskExecutionInformation``,
        ``JobReleaseTaskExecutionInformation`` or ``StartTaskInformation``):
        ``startTime``, ``endTime``, ``exitCode``, ``result``, ``failureInfo``.

    Returns
    -------
    dict
        ``{"jobId", "taskName", "taskType", "nodeInfo": {"poolId", "nodeId"},
        "executionInfo": {"startTime", "endTime", "exitCode", "result",
        "schedulingError"}}``; ``schedulingError`` is ``{"details": []}`` when
        the task did not fail (no retry or requeue counts, as Batch).
    """
    execution: dict[str, Any] = {}
    _put_time(execution, "startTime", execution_info.get("startTime"))
    _put_time(execution, "endTime", execution_info.get("endTime"))
    if execution_info.get("exitCode") is not None:
        execution["exitCode"] = int(execution_info["exitCode"])
    failure = execution_info.get("failureInfo")
    result = execution_info.get("result") or ("failure" if failure else "success")
    execution["result"] = str(result).lower()
    execution["schedulingError"] = _scheduling_error(failure) if failure else {"details": []}
    return {
        "jobId": job_id or "",
        "taskName": task_name,
        "taskType": task_type,
        "nodeInfo": {"poolId": pool_id, "nodeId": node_id},
        "executionInfo": execution,
    }


# -------------------------------------------------------------------- event log
