"""Batch's server-side defaults, as Get and List return them.

The store keeps what the client sent. Batch answers a Get with the defaults of
what was left out filled in (``onAllTasksComplete`` ``noaction``, a job's
``constraints`` with an unlimited ``maxWallClockTime``, a task's
``requiredSlots`` 1 ...), so that a client reading ``job.constraints.max_task_retry_count``
gets 0, not None. The values are those of the Batch REST reference's
``CloudJob``, ``CloudTask``, ``JobPreparationTask``, ``JobReleaseTask`` and
``JobManagerTask`` descriptions ("The default value is ...").
"""

from __future__ import annotations

from typing import Any

UNLIMITED_DURATION = "P10675199DT2H48M5.4775807S"
"""Batch's "unlimited" duration on the wire (.NET ``TimeSpan.MaxValue``)."""

DEFAULT_TASK_RETENTION = "P7D"
"""A task's directory is kept 7 days after it completes, unless ``retentionTime`` says."""

JOB_DEFAULTS: dict[str, Any] = {
    "usesTaskDependencies": False, "onAllTasksComplete": "noaction",
    "onTaskFailure": "noaction", "maxParallelTasks": -1, "allowTaskPreemption": False,
}
JOB_CONSTRAINTS: dict[str, Any] = {"maxWallClockTime": UNLIMITED_DURATION, "maxTaskRetryCount": 0}
JOB_PREPARATION_TASK: dict[str, Any] = {
    "id": "jobpreparation", "waitForSuccess": True, "rerunOnNodeRebootAfterSuccess": True}
JOB_RELEASE_TASK: dict[str, Any] = {
    "id": "jobrelease", "maxWallClockTime": "PT15M", "retentionTime": DEFAULT_TASK_RETENTION}
JOB_MANAGER_TASK: dict[str, Any] = {
    "killJobOnCompletion": True, "runExclusive": True, "allowLowPriorityNode": True,
    "requiredSlots": 1}


def _given(value: Any) -> dict[str, Any]:
    """The properties a client gave (a null one is left out: its default applies)."""
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else {}


def _fill(target: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, value in defaults.items():
        target.setdefault(key, value)


def fill_job(out: dict[str, Any]) -> dict[str, Any]:
    """Fill a job's (or a job schedule's ``jobSpecification``'s) defaults in place.

    Parameters
    ----------
    out
        The job's wire JSON, as stored (a copy: it is changed).

    Returns
    -------
    dict
        ``out``.
    """
    _fill(out, JOB_DEFAULTS)
    out["constraints"] = {**JOB_CONSTRAINTS, **_given(out.get("constraints"))}
    for name, defaults in (("jobPreparationTask", JOB_PREPARATION_TASK),
                           ("jobReleaseTask", JOB_RELEASE_TASK),
                           ("jobManagerTask", JOB_MANAGER_TASK)):
        if isinstance(out.get(name), dict):
            out[name] = {**defaults, **out[name]}
    return out


def fill_task(out: dict[str, Any], job_max_retries: int) -> dict[str, Any]:
    """Fill a task's defaults in place: ``requiredSlots`` and ``constraints``.

    Parameters
    ----------
    out
        The task's wire JSON (a copy: it is changed).
    job_max_retries
        The job's ``constraints.maxTaskRetryCount``: what a task that gives none
        is retried up to (as the service runs it).

    Returns
    -------
    dict
        ``out``.
    """
    out.setdefault("requiredSlots", 1)
    given = _given(out.get("constraints"))
    out["constraints"] = {"maxWallClockTime": UNLIMITED_DURATION,
                          "retentionTime": DEFAULT_TASK_RETENTION,
                          "maxTaskRetryCount": job_max_retries, **given}
    return out
