"""Task routes: "Task - Add/Add Collection/List/Get/Delete/Terminate/Reactivate/List Subtasks"."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hpcbatch.api.http import (
    Collection,
    check_expand,
    check_task_collection_size,
    entity_reply,
    json_reply,
    list_reply,
    max_results,
    metadata_url,
    not_modified,
    param,
    prefer_wait_s,
    read_json,
    select,
    service,
)
from hpcbatch.batch.errors import BadRequestError

routes = web.RouteTableDef()

SUBTASK_SELECTABLE = (
    "id", "nodeInfo", "startTime", "endTime", "exitCode", "containerInfo", "failureInfo",
    "state", "stateTransitionTime", "previousState", "previousStateTransitionTime", "result",
)
"""Properties a subtask's ``$select`` may name (Batch REST api-version 2025-06-01)."""


TASKS = Collection("/jobs/{job}/tasks", "task", "tasks",
                   lambda svc, p: svc.tasks.get_task(p["job"], p["task"]))
"""A job's tasks: ``/jobs/{job}/tasks/{task}`` (``$select`` is applied by the store)."""


@routes.post("/jobs/{job}/tasks")
async def add_task(request: web.Request) -> web.Response:
    """"Task - Add"."""
    task_id = service(request).tasks.add_task(param(request, "job"), await read_json(request))
    return TASKS.created(request, task_id)


@routes.post("/jobs/{job}/addtaskcollection")
async def add_task_collection(request: web.Request) -> web.Response:
    """"Task - Add Collection": a ``TaskAddResult`` per task; ``413`` from 1 MiB on."""
    await check_task_collection_size(request)
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"value"}:
        raise BadRequestError("The body must be {\"value\": [task, ...]}.",
                              values={"PropertyName": "value"})
    results = service(request).tasks.add_tasks(param(request, "job"), body.get("value") or [])
    return json_reply({"odata.metadata": metadata_url(request, "taskaddresult"),
                       "value": results})


@routes.get("/jobs/{job}/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """"Task - List": ``$filter``, ``$select`` and paging run in the store."""
    token = request.query.get("$skiptoken")
    check_expand(request)
    items, nxt = service(request).tasks.list_tasks(
        param(request, "job"), filter_=request.query.get("$filter"),
        select=request.query.get("$select"), max_results=max_results(request),
        after_seq=int(token) if token and token.isdigit() else None,
    )
    return list_reply(request, "tasks", items, nxt)


@routes.get("/jobs/{job}/tasks/{task}")
async def get_task(request: web.Request) -> web.Response:
    """"Task - Get" (``$select`` applied by the store), with an optional long poll.

    hpcbatch extension: with ``If-None-Match: <eTag>`` and ``Prefer: wait=N``
    (RFC 7240), a task whose ETag still matches is not answered ``304`` at
    once: the reply waits until the task changes (``200``, the new task) or
    ``N`` seconds pass (``304``), at most 60. Without ``Prefer: wait``, Task -
    Get is Batch's.
    """
    check_expand(request)
    svc = service(request)
    job_id, task_id = param(request, "job"), param(request, "task")
    select_ = request.query.get("$select")

    def read() -> dict[str, Any]:
        return svc.tasks.get_task(job_id, task_id, select_)

    wait_s = prefer_wait_s(request)
    if wait_s and "If-None-Match" in request.headers:
        # The tasks' watcher reads every waited-on task's eTag once a commit and wakes
        # this wait only when this task's changed; the wait then reads its eTag and
        # lastModified (what the conditions compare), and the task itself once, at the end.
        await svc.tasks.watch.wait_while(
            (job_id.lower(), task_id.lower()), lambda: svc.tasks.task_version(job_id, task_id),
            lambda v: not_modified(request, v) is not None, wait_s)
        reply = entity_reply(request, read(), "tasks/@Element")
        reply.headers["Preference-Applied"] = f"wait={wait_s:g}"
        return reply
    return entity_reply(request, read(), "tasks/@Element")


@routes.delete("/jobs/{job}/tasks/{task}")
@TASKS.change(200, etag=False)
async def delete_task(request: web.Request) -> None:
    """"Task - Delete"."""
    service(request).tasks.delete_task(param(request, "job"), param(request, "task"))


@routes.put("/jobs/{job}/tasks/{task}")
@TASKS.change(200)
async def update_task(request: web.Request) -> None:
    """"Task - Update": replace the task's constraints."""
    service(request).tasks.update_task(param(request, "job"), param(request, "task"),
                                       await read_json(request))


@routes.post("/jobs/{job}/tasks/{task}/terminate")
@TASKS.change(204)
async def terminate_task(request: web.Request) -> None:
    """"Task - Terminate"."""
    service(request).tasks.terminate_task(param(request, "job"), param(request, "task"))


@routes.post("/jobs/{job}/tasks/{task}/reactivate")
@TASKS.change(204)
async def reactivate_task(request: web.Request) -> None:
    """"Task - Reactivate"."""
    service(request).tasks.reactivate_task(param(request, "job"), param(request, "task"))


@routes.get("/jobs/{job}/tasks/{task}/subtasksinfo")
async def list_subtasks(request: web.Request) -> web.Response:
    """"Task - List Subtasks": a multi-instance task's subtasks (``$select``)."""
    items = service(request).tasks.list_subtasks(param(request, "job"), param(request, "task"))
    return list_reply(request, "subtaskinfo", select(request, items, SUBTASK_SELECTABLE))
