"""Job schedule routes: "Job Schedule - Add/List/Get/Exists/Patch/Update/Delete/Disable/
Enable/Terminate" and "Job - List From Job Schedule".
"""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.filters import JOB_SCHEDULE_FILTER, SCHEDULE_JOB_FILTER
from hpcbatch.api.http import Collection, param, read_json, service
from hpcbatch.api.routes.jobs import JOBS

routes = web.RouteTableDef()

SCHEDULE_SELECTABLE = (
    "id", "displayName", "url", "eTag", "lastModified", "creationTime", "state",
    "stateTransitionTime", "previousState", "previousStateTransitionTime", "schedule",
    "jobSpecification", "executionInfo", "metadata", "stats",
)
"""Properties a job schedule's ``$select`` may name (Batch REST api-version 2025-06-01)."""


JOB_SCHEDULES = Collection("/jobschedules", "schedule", "jobschedules",
                           lambda svc, p: svc.schedules.get(p["schedule"]), SCHEDULE_SELECTABLE,
                           lambda svc, items: svc.statistics.expand_schedules(items))
"""The job schedules: ``/jobschedules/{schedule}``."""


@routes.post("/jobschedules")
async def add_job_schedule(request: web.Request) -> web.Response:
    """"Job Schedule - Add"."""
    return JOB_SCHEDULES.created(request,
                                 service(request).schedules.add(await read_json(request)))


@routes.get("/jobschedules")
async def list_job_schedules(request: web.Request) -> web.Response:
    """"Job Schedule - List" (``$filter`` evaluated on the schedules' JSON)."""
    items = service(request).schedules.list()
    if request.query.get("$filter"):
        items = JOB_SCHEDULE_FILTER.apply(items, request.query["$filter"])
    return JOB_SCHEDULES.page(request, items, expand=True)


@routes.get("/jobschedules/{schedule}")
async def get_job_schedule(request: web.Request) -> web.Response:
    """"Job Schedule - Get", and "Job Schedule - Exists" (``HEAD``)."""
    return JOB_SCHEDULES.entity(request)


@routes.patch("/jobschedules/{schedule}")
@JOB_SCHEDULES.change(200)
async def patch_job_schedule(request: web.Request) -> None:
    """"Job Schedule - Patch": replace the properties the body names."""
    service(request).schedules.update(param(request, "schedule"), await read_json(request))


@routes.put("/jobschedules/{schedule}")
@JOB_SCHEDULES.change(200)
async def update_job_schedule(request: web.Request) -> None:
    """"Job Schedule - Update": replace schedule, jobSpecification and metadata."""
    service(request).schedules.update(param(request, "schedule"), await read_json(request),
                                      replace=True)


@routes.delete("/jobschedules/{schedule}")
@JOB_SCHEDULES.change(202, etag=False)
async def delete_job_schedule(request: web.Request) -> None:
    """"Job Schedule - Delete": the schedule and its jobs."""
    service(request).schedules.delete(param(request, "schedule"))


@routes.post("/jobschedules/{schedule}/disable")
@JOB_SCHEDULES.change(204)
async def disable_job_schedule(request: web.Request) -> None:
    """"Job Schedule - Disable"."""
    service(request).schedules.disable(param(request, "schedule"))


@routes.post("/jobschedules/{schedule}/enable")
@JOB_SCHEDULES.change(204)
async def enable_job_schedule(request: web.Request) -> None:
    """"Job Schedule - Enable"."""
    service(request).schedules.enable(param(request, "schedule"))


@routes.post("/jobschedules/{schedule}/terminate")
@JOB_SCHEDULES.change(202)
async def terminate_job_schedule(request: web.Request) -> None:
    """"Job Schedule - Terminate"."""
    service(request).schedules.terminate(param(request, "schedule"))


@routes.get("/jobschedules/{schedule}/jobs")
async def list_jobs_from_schedule(request: web.Request) -> web.Response:
    """"Job - List From Job Schedule" (``$filter`` evaluated on the jobs' JSON)."""
    items = service(request).schedules.jobs_of(param(request, "schedule"))
    if request.query.get("$filter"):
        items = SCHEDULE_JOB_FILTER.apply(items, request.query["$filter"])
    return JOBS.page(request, items, expand=True)
