"""Job routes: "Job - Add/List/Get/Patch/Update/Delete/Terminate/Disable/Enable/
Get Task Counts/List Preparation And Release Task Status"."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from hpcbatch.api.filters import JOB_FILTER, filter_listed
from hpcbatch.api.http import (
    Collection,
    json_reply,
    metadata_url,
    page_reply,
    param,
    prefer_wait_s,
    read_json,
    read_object,
    require,
    service,
)
from hpcbatch.batch import odata
from hpcbatch.batch.errors import BadRequestError
from hpcbatch.batch.models import JobDisable, JobTerminate

routes = web.RouteTableDef()

JOB_SELECTABLE = (
    "id", "displayName", "usesTaskDependencies", "url", "eTag", "lastModified", "creationTime",
    "state", "stateTransitionTime", "previousState", "previousStateTransitionTime", "priority",
    "allowTaskPreemption", "maxParallelTasks", "constraints", "jobManagerTask",
    "jobPreparationTask", "jobReleaseTask", "commonEnvironmentSettings", "poolInfo",
    "onAllTasksComplete", "onTaskFailure", "networkConfiguration", "metadata", "executionInfo",
    "stats",
)
"""Properties a job's ``$select`` may name (Batch REST api-version 2025-06-01)."""

PREP_RELEASE_SELECTABLE = (
    "poolId", "nodeId", "nodeUrl", "jobPreparationTaskExecutionInfo",
    "jobReleaseTaskExecutionInfo",
)
"""Properties a preparation and release task status's ``$select`` may name."""

JOB_REPLACE_DEFAULTS: dict[str, Any] = {
    "priority": 0, "maxParallelTasks": -1, "allowTaskPreemption": False,
    "constraints": {}, "metadata": [], "onAllTasksComplete": "noaction",
}
"""What "Job - Update" (PUT) resets a property to when the body leaves it out."""


JOBS = Collection("/jobs", "job", "jobs", lambda svc, p: svc.jobs.get_job(p["job"]),
                  JOB_SELECTABLE, lambda svc, items: svc.statistics.expand_jobs(items))
"""The jobs: ``/jobs/{job}``."""


@routes.post("/jobs")
async def add_job(request: web.Request) -> web.Response:
    """"Job - Add"."""
    return JOBS.created(request, service(request).jobs.add_job(await read_json(request)))


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """"Job - List" (``$filter`` in the store, or on the JSON: :func:`~hpcbatch.api.filters.filter_listed`)."""
    return JOBS.page(request, filter_listed(request.query.get("$filter"), odata.JOB_PROPERTIES,
                                           service(request).jobs.list_jobs, JOB_FILTER),
                     expand=True)


@routes.get("/jobs/{job}")
async def get_job(request: web.Request) -> web.Response:
    """"Job - Get"."""
    return JOBS.entity(request)


@routes.patch("/jobs/{job}")
@JOBS.change(200)
async def patch_job(request: web.Request) -> None:
    """"Job - Patch": change the properties the body names."""
    service(request).jobs.update_job(param(request, "job"), await read_json(request))


@routes.put("/jobs/{job}")
@JOBS.change(200)
async def replace_job(request: web.Request) -> None:
    """"Job - Update" (PUT): replace the job's updatable properties; absent ones are reset
    (:data:`JOB_REPLACE_DEFAULTS`)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    require(body, "poolInfo")  # JobUpdateParameter
    service(request).jobs.update_job(param(request, "job"), {**JOB_REPLACE_DEFAULTS, **body})


@routes.delete("/jobs/{job}")
@JOBS.change(202, etag=False)
async def delete_job(request: web.Request) -> None:
    """"Job - Delete": the job answers ``state: deleting`` until it is gone."""
    service(request).jobs.delete_job(param(request, "job"))


@routes.post("/jobs/{job}/terminate")
@JOBS.change(202)
async def terminate_job(request: web.Request) -> None:
    """"Job - Terminate" (``terminateReason``)."""
    body = JobTerminate.from_wire(await read_object(request), what="job terminate")
    service(request).jobs.terminate_job(param(request, "job"), body.terminate_reason)


@routes.post("/jobs/{job}/disable")
@JOBS.change(202)
async def disable_job(request: web.Request) -> None:
    """"Job - Disable" (``disableTasks``: requeue, terminate or wait)."""
    body = await read_object(request)  # disableTasks is required (JobDisableParameter)
    disable = JobDisable.from_wire(body, what="job disable")
    service(request).jobs.disable_job(param(request, "job"), disable.disable_tasks)


@routes.post("/jobs/{job}/enable")
@JOBS.change(202)
async def enable_job(request: web.Request) -> None:
    """"Job - Enable"."""
    service(request).jobs.enable_job(param(request, "job"))


_NODE_ID_FILTER = re.compile(r"\s*nodeId\s+eq\s+'([^']*)'\s*")


def _filter_by_node(items: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    m = _NODE_ID_FILTER.fullmatch(text)
    if not m:
        raise odata.InvalidQueryParameterError(
            "$filter", text, "only nodeId eq '...' is supported on this list")
    return [i for i in items if i.get("nodeId") == m.group(1)]


@routes.get("/jobs/{job}/jobpreparationandreleasetaskstatus")
async def prep_release_status(request: web.Request) -> web.Response:
    """"Job - List Preparation And Release Task Status" (``$filter``: ``nodeId eq '...'``)."""
    items = service(request).preparation.preparation_and_release_status(param(request, "job"))
    if request.query.get("$filter"):
        items = _filter_by_node(items, request.query["$filter"])
    return page_reply(request, "jobpreparationandreleasetaskstatus", items,
                      PREP_RELEASE_SELECTABLE)


@routes.get("/jobs/{job}/taskcounts")
async def task_counts(request: web.Request) -> web.Response:
    """"Job - Get Task Counts", with an optional wait for the job's tasks to complete.

    hpcbatch extension: with ``Prefer: wait=N`` (RFC 7240) the reply waits
    until the job has no active or running task (every task completed), or
    ``N`` seconds pass (at most 60), and carries ``Preference-Applied:
    wait=N``; the counts are those of that moment either way. Without
    ``Prefer: wait``, Job - Get Task Counts is Batch's.
    """
    svc = service(request)
    job_id = param(request, "job")

    def read() -> dict[str, Any]:
        return svc.jobs.task_counts(job_id)

    wait_s = prefer_wait_s(request)
    headers = {}
    if wait_s:
        counts = await svc.changes.wait_while(read, _unfinished, wait_s, pause_s=_cannot_finish_s)
        headers["Preference-Applied"] = f"wait={wait_s:g}"
    else:
        counts = read()
    return json_reply({"odata.metadata": metadata_url(request, "taskcountsresult/@Element"),
                       **counts}, headers=headers)


def _unfinished(counts: dict[str, Any]) -> bool:
    """Whether a job's task counts still hold active or running tasks."""
    return bool(counts["taskCounts"]["active"] or counts["taskCounts"]["running"])


COMPLETIONS_PER_S = 10_000.0
"""The completions a second a task counts wait assumes a job can reach at most (the
service's scheduling rate, ``benchmarks/bench_scale.py``): a job with ``n`` tasks left
cannot complete within ``n / COMPLETIONS_PER_S`` s, so the wait reads its counts
again only then, not at every commit meanwhile."""

MAX_COUNTS_PAUSE_S = 0.05
"""Longest pause between two reads of a waited-for job's counts: a job that completes
faster than :data:`COMPLETIONS_PER_S` is answered at most this late."""


def _cannot_finish_s(counts: dict[str, Any]) -> float:
    """Seconds in which a job with these counts cannot complete (``pause_s`` of the wait)."""
    left = counts["taskCounts"]["active"] + counts["taskCounts"]["running"]
    return min(left / COMPLETIONS_PER_S, MAX_COUNTS_PAUSE_S)
