"""What the dashboard's pages show, aggregated on the server from the service core.

Every function here reads through the same core operations the REST API uses
(``service.pools.list_pools``, ``service.nodes.list_nodes``,
``service.tasks.list_tasks`` with its OData ``$filter`` compiled to SQL,
``service.jobs.task_counts`` ...) and returns small JSON-able dicts: a page of
tasks, counts, a pool's node cells, chart buckets. The browser never receives
a whole task list: a job of 100,000 tasks costs the browser one page of
:data:`TASK_PAGE` tasks, its counts and :data:`CHART_BUCKETS` chart points.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from hpcbatch.batch.errors import BadRequestError, HpcbatchError
from hpcbatch.batch.odata import parse_datetime
from hpcbatch.batch.states import TaskState
from hpcbatch.batch.wire import iso, utcnow
from hpcbatch.core.service import BatchService
from hpcbatch.storage.conventions import job_output_container_name
from hpcbatch.storage.fs import open_storage
from hpcbatch.store.database import tasks

log = logging.getLogger(__name__)

TASK_PAGE = 50
"""Tasks per page of a job's task table (at most 1000, Batch's ``maxresults``)."""

JOB_PAGE = 50
"""Jobs per page of the jobs list."""

CHART_BUCKETS = 60
"""Points of a job's charts (completions per second, running tasks)."""

EVENTS_SHOWN = 200
"""Most events the events page shows (the latest that match)."""

MIN_BUCKET_S = 0.1
"""The narrowest chart bucket, in seconds."""

TASK_LIST_SELECT = "id,state,creationTime,executionInfo,nodeInfo"
"""The properties a task row of the job page shows (a ``$select`` of "Task - List")."""


def node_cells(nodes: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """A pool's heat map cells: ``[id, state, runningTasksCount, first error code]`` per node.

    Parameters
    ----------
    nodes
        ``ComputeNode`` wire JSON ("Compute Node - List").

    Returns
    -------
    list of list
        One compact row per node, in pool order (a 1,000-node pool is ~30 kB).
    """
    return [[n["id"], n["state"], n.get("runningTasksCount", 0),
             (n.get("errors") or [{}])[0].get("code", "")] for n in nodes]


def pool_summary(svc: BatchService, pool: Mapping[str, Any]) -> dict[str, Any]:
    """One pool's card: allocation, current/target nodes, autoscale, node cells and counts.

    Parameters
    ----------
    svc
        The service.
    pool
        The pool's wire JSON ("Pool - Get").

    Returns
    -------
    dict
        ``id``, ``state``, ``allocationState``, ``vmSize``, ``currentDedicatedNodes``,
        ``targetDedicatedNodes``, ``taskSlotsPerNode``, ``enableAutoScale``,
        ``autoScaleFormula``, ``autoScaleRun``, ``nodes`` (:func:`node_cells`) and
        ``stateCounts`` (``{node state: count}``).
    """
    try:
        nodes = svc.nodes.list_nodes(pool["id"])
    except HpcbatchError:  # deleted meanwhile
        nodes = []
    cells = node_cells(nodes)
    keys = ("id", "state", "allocationState", "vmSize", "currentDedicatedNodes",
            "targetDedicatedNodes", "taskSlotsPerNode", "enableAutoScale", "autoScaleFormula",
            "autoScaleEvaluationInterval", "autoScaleRun", "resizeErrors")
    out = {k: pool[k] for k in keys if k in pool}
    out["nodes"] = cells
    out["stateCounts"] = dict(Counter(c[1] for c in cells))
    return out


def pools_overview(svc: BatchService) -> list[dict[str, Any]]:
    """Every pool's :func:`pool_summary`, in the order of "Pool - List"."""
    return [pool_summary(svc, p) for p in svc.pools.list_pools()]


def recent_node_tasks(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tasks that run or last ran on a node: its ``recentTasks`` (running first, then the
    latest that ended), from its ``ComputeNode`` JSON: no query of the store (a scan of the
    tasks table at a million tasks).

    Parameters
    ----------
    node
        The node's ``ComputeNode`` JSON ("Compute Node - Get").

    Returns
    -------
    list of dict
        ``jobId``, ``taskId``, ``state``, ``exitCode``, ``startTime``, ``endTime``.
    """
    out = []
    for t in node.get("recentTasks") or []:
        info = t.get("executionInfo") or {}
        out.append({"jobId": t["jobId"], "taskId": t["taskId"], "state": t["taskState"],
                    "exitCode": info.get("exitCode"), "startTime": info.get("startTime"),
                    "endTime": info.get("endTime")})
    return out


async def node_detail(svc: BatchService, pool_id: str, node_id: str,
                      path: str = "") -> dict[str, Any]:
    """A node's page: its ``ComputeNode`` JSON (start task result, errors), recent tasks,
    its files under ``path`` and the pool's metric history.

    Raises
    ------
    HpcbatchError
        ``PoolNotFound`` / ``NodeNotFound``.
    """
    node = svc.nodes.get_node(pool_id, node_id)
    try:
        files: list[dict[str, Any]] | str = await svc.files.list_node_files(pool_id, node_id, path)
    except HpcbatchError as exc:
        files = exc.message
    except Exception as exc:  # noqa: BLE001 - the node may be gone mid-call
        files = f"cannot list files: {exc}"
    return {"node": node, "recentTasks": recent_node_tasks(node),
            "files": files, "path": path}


def job_row(svc: BatchService, job: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the jobs list: state, priority, pool and task counts."""
    try:
        counts = svc.jobs.task_counts(job["id"])["taskCounts"]
    except HpcbatchError:
        counts = {}
    return {"id": job["id"], "state": job["state"], "priority": job.get("priority", 0),
            "poolId": (job.get("poolInfo") or {}).get("poolId"),
            "creationTime": job.get("creationTime"), "counts": counts}


def jobs_page(svc: BatchService, skip: int = 0, top: int = JOB_PAGE,
              filter_: str | None = None) -> dict[str, Any]:
    """A page of the jobs list ("Job - List", ``$filter`` in the store), newest first.

    Returns
    -------
    dict
        ``jobs`` (:func:`job_row` each), ``total``, ``skip``, ``top``.
    """
    if not 1 <= top <= 1000 or skip < 0:
        raise BadRequestError("top must be 1..1000 and skip at least 0.",
                              code="InvalidQueryParameterValue")
    found = svc.jobs.list_jobs(filter_ or None)
    found.sort(key=lambda j: j.get("creationTime") or "", reverse=True)
    return {"jobs": [job_row(svc, j) for j in found[skip:skip + top]], "total": len(found),
            "skip": skip, "top": top}


def _epoch_s(store_is_sqlite: bool, column: Any) -> Any:
    """SQL seconds since the epoch of a DateTime column (SQLite or PostgreSQL)."""
    if store_is_sqlite:
        return (sa.func.julianday(column) - 2440587.5) * 86400.0
    return sa.extract("epoch", column)


def job_series(svc: BatchService, job_id: str,
               buckets: int = CHART_BUCKETS) -> dict[str, Any]:
    """A job's charts, aggregated in SQL: tasks completed per second and running tasks.

    The window runs from the job's first task start to its last task end (or
    now while tasks run), cut into ``buckets`` equal buckets. A task counts as
    running from its (latest) ``startTime`` to its ``endTime``, so a retried
    task shows its last attempt only.

    Returns
    -------
    dict
        ``start`` (wire time), ``bucketSeconds``, ``completedPerSecond`` and
        ``running`` (``buckets`` numbers each); empty lists before any task started.
    """
    job = svc.jobs.get_job(job_id)
    key = str(job["id"]).lower()
    epoch_start = _epoch_s(svc.store.is_sqlite, tasks.c.start_time)
    epoch_end = _epoch_s(svc.store.is_sqlite, tasks.c.end_time)
    mine = tasks.c.job_key == key
    epoch = datetime(1970, 1, 1)
    with svc.store.read() as conn:
        first_at, last_end_at, open_runs = conn.execute(
            sa.select(sa.func.min(tasks.c.start_time), sa.func.max(tasks.c.end_time),
                      sa.func.count().filter(sa.and_(tasks.c.start_time.is_not(None),
                                                     tasks.c.end_time.is_(None))))
            .where(mine)).one()
        if first_at is None:
            return {"start": None, "bucketSeconds": 0, "completedPerSecond": [], "running": []}
        first = (first_at - epoch).total_seconds()
        now = (utcnow() - epoch).total_seconds()
        last = now if open_runs or last_end_at is None else \
            max((last_end_at - epoch).total_seconds(), first)
        width = max(MIN_BUCKET_S, (last - first) / buckets)

        def histogram(column: Any) -> list[int]:
            index = sa.cast((column - first) / width, sa.Integer)
            counts = [0] * buckets
            for i, n in conn.execute(sa.select(index, sa.func.count()).where(
                    mine, column.is_not(None)).group_by(index)):
                counts[min(max(int(i), 0), buckets - 1)] += n
            return counts

        starts, ends = histogram(epoch_start), histogram(epoch_end)
    running, level = [], 0
    for s, e in zip(starts, ends, strict=True):
        level += s - e
        running.append(max(level, 0))
    start = epoch + timedelta(seconds=first)
    return {"start": iso(start), "bucketSeconds": width,
            "completedPerSecond": [round(e / width, 3) for e in ends], "running": running}


def _job_manager(svc: BatchService, job: Mapping[str, Any]) -> dict[str, Any] | None:
    jm = job.get("jobManagerTask")
    if not jm:
        return None
    try:
        task = svc.tasks.get_task(job["id"], jm["id"])
    except HpcbatchError:
        return {"id": jm["id"], "state": "not created"}
    return {"id": task["id"], "state": task["state"],
            "exitCode": (task.get("executionInfo") or {}).get("exitCode")}


def job_detail(svc: BatchService, job_id: str) -> dict[str, Any]:
    """A job's page: its JSON, task counts, job manager / preparation / release status, charts.

    Raises
    ------
    HpcbatchError
        ``JobNotFound``.
    """
    job = svc.jobs.get_job(job_id)
    return {"job": job, "counts": svc.jobs.task_counts(job_id)["taskCounts"],
            "jobManager": _job_manager(svc, job),
            "preparationAndRelease": (  # Batch's 409 for a job without them: none to show
                svc.preparation.preparation_and_release_status(job_id)
                if job.get("jobPreparationTask") else []),
            "series": job_series(svc, job_id)}


def task_page(svc: BatchService, job_id: str, filter_: str | None = None,
              after: int | None = None, top: int = TASK_PAGE) -> dict[str, Any]:
    """One page of a job's tasks through "Task - List" (OData ``$filter`` compiled to SQL).

    Parameters
    ----------
    filter_
        The ``$filter``, e.g. ``state eq 'completed' and executionInfo/exitCode eq 1``.
    after
        The continuation token of the previous page (None: the first page).
    top
        Page size, 1..1000.

    Returns
    -------
    dict
        ``tasks`` (``id``, ``state``, ``exitCode``, ``nodeId``, ``startTime``,
        ``endTime``, ``result``) and ``next`` (token, or None at the end).

    Raises
    ------
    hpcbatch.batch.odata.InvalidQueryParameterError
        A bad ``$filter`` (``400 InvalidQueryParameterValue`` naming it).
    """
    items, nxt = svc.tasks.list_tasks(job_id, filter_=filter_ or None, select=TASK_LIST_SELECT,
                                      max_results=top, after_seq=after)
    rows = []
    for t in items:
        info = t.get("executionInfo") or {}
        rows.append({"id": t["id"], "state": t["state"], "exitCode": info.get("exitCode"),
                     "result": info.get("result"), "startTime": info.get("startTime"),
                     "endTime": info.get("endTime"),
                     "nodeId": (t.get("nodeInfo") or {}).get("nodeId")})
    return {"tasks": rows, "next": nxt}


def _outputs(svc: BatchService, job_id: str, task_id: str) -> list[dict[str, Any]]:
    """A task's File Conventions outputs in the service's storage (``{container}/{task}/``)."""
    ref = svc.ctx.storage
    if ref is None:
        return []
    storage = open_storage(ref.url, ref.options)
    prefix = f"{job_output_container_name(job_id)}/{task_id}/"
    return [{"path": o.key[len(prefix):], "sizeBytes": o.size_bytes,
             "lastModified": o.last_modified.isoformat() if o.last_modified else None}
            for o in storage.list(prefix)]


def task_history(task: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A task's state history: creation, its ``TaskStartEvent``/``TaskCompleteEvent``/
    ``TaskFailEvent``/``TaskRequeueEvent`` events, and its current state.

    Returns
    -------
    list of dict
        ``time``, ``what`` and ``detail``, oldest first.
    """
    out: list[dict[str, Any]] = [{"time": task.get("creationTime"), "what": TaskState.active,
                                  "detail": "created"}]
    for e in events:
        body = e.get("body") or {}
        info = body.get("executionInfo") or {}
        detail = f"node {(body.get('nodeInfo') or {}).get('nodeId', '')}".strip()
        if "exitCode" in info:
            detail += f", exit code {info['exitCode']}"
        out.append({"time": e.get("time"), "what": e.get("name"), "detail": detail})
    out.append({"time": task.get("stateTransitionTime"), "what": task.get("state"),
                "detail": f"current (previous: {task.get('previousState', '-')})"})
    return out


async def task_detail(svc: BatchService, job_id: str, task_id: str) -> dict[str, Any]:
    """A task's page: its JSON (command line, execution and failure info, dependencies),
    state history, subtasks, files on its node and File Conventions outputs.

    Raises
    ------
    HpcbatchError
        ``JobNotFound`` / ``TaskNotFound``.
    """
    task = svc.tasks.get_task(job_id, task_id)
    subtasks = svc.tasks.list_subtasks(job_id, task_id) if task.get("multiInstanceSettings") \
        else []
    events = [e for e in read_events(svc, job=job_id)
              if (e.get("body") or {}).get("id") == task["id"]]
    try:
        files: list[dict[str, Any]] | str = await svc.files.list_task_files(job_id, task_id)
    except HpcbatchError as exc:
        files = exc.message
    except Exception as exc:  # noqa: BLE001 - the node may be gone mid-call
        files = f"cannot list files: {exc}"
    try:
        outputs = await asyncio.to_thread(_outputs, svc, job_id, task_id)
    except Exception as exc:  # noqa: BLE001 - storage errors are shown, not raised
        log.info("dashboard: cannot list outputs of %s/%s: %s", job_id, task_id, exc)
        outputs = []
    return {"task": task, "history": task_history(task, events), "subtasks": subtasks,
            "files": files, "outputs": outputs}


def _matches(event: Mapping[str, Any], pool: str | None, job: str | None,
             name: str | None) -> bool:
    body = event.get("body") or {}
    if name and str(event.get("name", "")).lower() != name.lower():
        return False
    if pool and str(body.get("poolId", "")).lower() != pool.lower():
        return False
    return not job or str(body.get("jobId", "")).lower() == job.lower()


def read_events(svc: BatchService, *, pool: str | None = None, job: str | None = None,
                name: str | None = None, limit: int = EVENTS_SHOWN,
                since: str | None = None) -> list[dict[str, Any]]:
    """The latest diagnostic events that match, oldest first.

    Parameters
    ----------
    pool, job
        Keep events whose body's ``poolId`` / ``jobId`` is this (any case).
    name
        Keep events of this name (``TaskFailEvent``).
    limit
        Most events returned (the latest).
    since
        Keep events after this wire time.

    Returns
    -------
    list of dict
        ``{"time", "name", "body"}`` records.
    """
    log_ = svc.ctx.events
    if log_ is None:
        return []
    cutoff = parse_datetime(since) if since else None
    found = [e for e in log_.read() if _matches(e, pool, job, name)
             and (cutoff is None or _after(e, cutoff))]
    return found[-limit:]


def _after(event: Mapping[str, Any], cutoff: datetime) -> bool:
    try:
        return parse_datetime(str(event.get("time"))) > cutoff
    except ValueError:
        return False
