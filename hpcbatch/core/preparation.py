"""Job preparation and release tasks: once per node before a job's tasks, and at the job's end."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import events, identity
from hpcbatch.batch.errors import ConflictError
from hpcbatch.batch.models import (
    RELEASE_MAX_WALL_CLOCK,
    JobPreparationTask,
    JobReleaseTask,
)
from hpcbatch.batch.states import (
    JobPreparationTaskState,
    JobReleaseTaskState,
    Kind,
    TaskExecutionResult,
    TaskState,
)
from hpcbatch.batch.wire import iso, new_etag, utcnow
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.core.rows import job_row
from hpcbatch.core.runs import PreparationFailed, Run, wall_clock_s
from hpcbatch.core.transitions import check, task_moves
from hpcbatch.execution import agent, containers
from hpcbatch.execution.environment import task_dir
from hpcbatch.store.database import (
    Store,
    dumps,
    job_nodes,
    jobs,
    loads,
    mappings,
    tasks,
)

if TYPE_CHECKING:
    from hpcbatch.core.runs import Runs

log = logging.getLogger(__name__)

_PREPARED = task_moves({TaskState.preparing}, {TaskState.running})
"""The job preparation task succeeded on the node: the waiting task runs."""

_JOB_TASK_KINDS = {"preparation": Kind.jobpreparationtask, "release": Kind.jobreleasetask}
"""The state table of each ``job_nodes`` execution-info column."""

PREP_DIR = "jobpreparation"
RELEASE_DIR = "jobrelease"
"""Task directory names of a job's preparation and release tasks (under the job's dir)."""


def job_task_wall_clock(spec: JobPreparationTask | JobReleaseTask) -> timedelta | None:
    """The longest a job preparation or release task may run on a node, from its start.

    Batch (REST ``JobPreparationTask.constraints``, ``TaskConstraints.maxWallClockTime``):
    a preparation task without a ``maxWallClockTime`` has no time limit; a release
    task's ``maxWallClockTime`` defaults to 15 minutes (``JobReleaseTask``).

    Parameters
    ----------
    spec
        The job's preparation or release task.

    Returns
    -------
    datetime.timedelta or None
        The limit; None when unlimited.
    """
    if isinstance(spec, JobReleaseTask):
        return spec.max_wall_clock_time or RELEASE_MAX_WALL_CLOCK
    return spec.constraints.max_wall_clock_time if spec.constraints else None


class JobPreparation:
    """Runs jobs' preparation tasks before their tasks on each node, and release tasks after.

    Parameters
    ----------
    ctx
        The service context.
    runs
        The runs in flight.
    """

    def __init__(self, ctx: ServiceContext, runs: Runs) -> None:
        self.ctx = ctx
        self.runs = runs
        self._preps: dict[tuple[str, str, int], asyncio.Future[bool]] = {}
        self._releases: dict[tuple[str, str], asyncio.Future[Any]] = {}
        """Release task runs in flight, per (job, node): a second caller awaits the first."""
        self.failed_nodes: dict[str, set[str]] = {}
        """Per job: the nodes where its preparation task failed (its tasks stay off them)."""

    async def after_preparation(self, run: Run, job: Mapping[str, Any],
                                 start: Callable[[], Any]) -> agent.Outcome:
        """Run the job preparation task on the run's nodes (once per node), then the run."""
        results = await asyncio.gather(*(self._prepare(job, n) for n in run.nodes))
        if run.key not in self.runs.by_key:
            raise asyncio.CancelledError()
        if not all(results):
            raise PreparationFailed(run.node.node_id)
        now = utcnow()
        with self.ctx.store.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.seq == run.seq, _PREPARED)
                         .values(state=TaskState.running, previous_state=TaskState.preparing,
                                 previous_state_transition_time=tasks.c.state_transition_time,
                                 state_transition_time=now, start_time=now, last_modified=now,
                                 etag=new_etag()))
        return await start()

    async def _prepare(self, job: Mapping[str, Any], node: NodeRuntime) -> bool:
        """Return whether tasks of ``job`` may run on ``node``, running its preparation task once.

        The preparation runs once per node per boot (again after a reboot only
        when ``rerunOnNodeRebootAfterSuccess``); concurrent tasks wait for the
        same run. With ``waitForSuccess`` (the default) a failed preparation
        keeps the job's tasks off the node.
        """
        key = (job["key"], node.node_id, node.generation)
        fut = self._preps.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._run_preparation(job, node))
            self._preps[key] = fut
        return await asyncio.shield(fut)

    def _job_node(self, conn: sa.Connection, job_key: str, node_id: str) -> Mapping[str, Any] | None:
        return Store.fetch_one(conn, job_nodes, job_key=job_key, node_id=node_id)

    def _save_job_node(self, job_key: str, node: NodeRuntime, **info: Any) -> None:
        """Record a job preparation or release task's execution info on a node.

        Each column's ``state`` change is checked against the job preparation
        (``preparation``) or job release (``release``) task table.
        """
        values = {k: dumps(v) for k, v in info.items()}
        with self.ctx.store.begin() as conn:
            row = self._job_node(conn, job_key, node.node_id)
            for column, value in info.items():
                old = loads(row[column]) if row is not None and row[column] else None
                check(_JOB_TASK_KINDS[column], old["state"] if old else None, value["state"])
            if row is None:
                conn.execute(job_nodes.insert().values(job_key=job_key, node_id=node.node_id,
                                                       pool_id=node.pool_id, **values))
            else:
                Store.update(conn, job_nodes, {"job_key": job_key, "node_id": node.node_id},
                             **values)

    async def _run_preparation(self, job: Mapping[str, Any], node: NodeRuntime) -> bool:
        spec = JobPreparationTask.model_validate(loads(job["spec"])["jobPreparationTask"])
        with self.ctx.store.read() as conn:
            row = self._job_node(conn, job["key"], node.node_id)
        previous = loads(row["preparation"]) if row and row["preparation"] else None
        if (previous and previous.get("result") == TaskExecutionResult.success
                and spec.rerun_on_node_reboot_after_success is False):
            return True
        info = await self._run_job_task(job, node, spec, PREP_DIR, "preparation")
        ok = info.get("result") == TaskExecutionResult.success
        if not ok and spec.wait_for_success is not False:
            self.failed_nodes.setdefault(job["key"], set()).add(node.node_id)
            self.ctx.kick()
            return False
        return True

    async def _run_job_task(self, job: Mapping[str, Any], node: NodeRuntime,
                            spec: JobPreparationTask | JobReleaseTask, dirname: str,
                            column: str) -> dict[str, Any]:
        """Run a job preparation or release task on one node, with retries; record its info."""
        job_spec = loads(job["spec"])
        constraints = getattr(spec, "constraints", None)
        retries = (constraints.max_task_retry_count if constraints else None) or 0
        wall = job_task_wall_clock(spec)
        rel = task_dir(job["id"], dirname)
        node_url = self.ctx.node_url(node.pool_id, node.node_id)
        states = JobPreparationTaskState if column == "preparation" else JobReleaseTaskState
        attempt = 0
        while True:
            now = utcnow()
            info: dict[str, Any] = {"state": states.running, "startTime": iso(now), "retryCount": attempt,
                                    "taskRootDirectory": rel,
                                    "taskRootDirectoryUrl": f"{node_url}/files/{rel}"}
            self._save_job_node(job["key"], node, **{column: info})
            run_key = self.ctx.run_key(dirname)
            launch = agent.Launch(
                key=run_key, task_dir=rel,
                run_as=identity.resolve(spec.user_identity,
                                        self.ctx.pool_manager.spec(node.pool_key), run_key),
                command_line=spec.command_line, job_id=job["id"], task_id=spec.id or dirname,
                settings=[*(job_spec.get("commonEnvironmentSettings") or []),
                          *[s.to_wire() for s in spec.environment_settings or []]],
                extra_env=self.ctx.task_storage_env(job["id"], wall_clock_s(wall)),
                max_wall_clock_s=wall_clock_s(wall),
                resource_files=[r.to_wire() for r in spec.resource_files or []],
                storage=self.ctx.storage,
                container=containers.launch_container(
                    spec.container_settings.to_wire() if spec.container_settings else None,
                    pool.virtual_machine_configuration
                    if (pool := self.ctx.pool_manager.spec(node.pool_key)) else None))
            try:
                out: agent.Outcome = await self.ctx.engine.run_launch(node.worker or "", launch)
                failure, code = out.failure_info, out.exit_code
                info.update(startTime=iso(out.start_time.replace(tzinfo=None)),
                            endTime=iso(out.end_time.replace(tzinfo=None)))
            except Exception as exc:  # noqa: BLE001 - node lost or agent error
                failure = {"category": "servererror", "code": "NodeAgentError",
                           "message": f"node {node.node_id}: {exc}"}
                code = None
                info["endTime"] = iso(utcnow())
            ok = code == 0 and failure is None
            info.update(state=states.completed,
                        result=TaskExecutionResult.success if ok else TaskExecutionResult.failure)
            if code is not None:
                info["exitCode"] = code
            if failure:
                info["failureInfo"] = failure
            if not ok and (retries == -1 or attempt < retries) and node.worker:
                attempt += 1
                info["lastRetryTime"] = iso(utcnow())
                continue
            self._save_job_node(job["key"], node, **{column: info})
            self.ctx.emit("SpecialTaskEvent", events.special_task_event(
                job["id"], spec.id or dirname, "JobPrep" if dirname == PREP_DIR else "JobRelease",
                pool_id=node.pool_id, node_id=node.node_id, execution_info=info))
            return info

    async def run_releases(self, job_key: str) -> None:
        """Run the job release task on every node where the job's preparation task ran.

        Implements the release step of "Job - Terminate" and "Job - Delete": the
        release task runs once per node, so a node where it completed already
        (the job was terminated, then deleted) is skipped, and a caller that
        comes while it runs waits for that run. Nodes no longer in the pool, or
        whose worker is not connected, are skipped.
        """
        with self.ctx.store.read() as conn:
            job = Store.fetch_one(conn, jobs, key=job_key)
            rows = conn.execute(sa.select(job_nodes).where(job_nodes.c.job_key == job_key)).all()
        if job is None:
            return
        release = loads(job["spec"]).get("jobReleaseTask")
        if not release:
            return
        spec = JobReleaseTask.model_validate(release)
        runs: list[asyncio.Future[Any]] = []
        for row in rows:
            key = (job_key, row.node_id)
            fut = self._releases.get(key)
            if fut is None:
                done = loads(row.release) if row.release else None
                if done is not None and done.get("state") == JobReleaseTaskState.completed:
                    continue  # ran at Job - Terminate: never a second time (2017 l.4100)
                node = self.ctx.pool_manager.node(row.pool_id.lower(), row.node_id)
                if node is None or not node.worker:
                    continue
                fut = asyncio.ensure_future(
                    self._run_job_task(job, node, spec, RELEASE_DIR, "release"))
                self._releases[key] = fut
                fut.add_done_callback(functools.partial(self._release_done, key))
            runs.append(fut)
        await asyncio.gather(*(asyncio.shield(f) for f in runs), return_exceptions=True)

    def _release_done(self, key: tuple[str, str], _fut: asyncio.Future[Any]) -> None:
        self._releases.pop(key, None)

    def preparation_and_release_status(self, job_id: str) -> list[dict[str, Any]]:
        """List the job's preparation and release task status per node.

        Implements "Job - List Preparation and Release Task Status"
        (``GET /jobs/{jobId}/jobpreparationandreleasetaskstatus``).

        Raises
        ------
        ConflictError
            ``JobPreparationTaskNotSpecified``: the job has no preparation task.
        """
        with self.ctx.store.read() as conn:
            job = job_row(conn, job_id)
            if not loads(job["spec"]).get("jobPreparationTask"):  # a release task needs one too
                raise ConflictError(f"Job {job['id']} has no job preparation task.",
                                    code="JobPreparationTaskNotSpecified")
            rows = mappings(conn.execute(sa.select(job_nodes).where(job_nodes.c.job_key == job["key"])
                                .order_by(job_nodes.c.node_id)))
        out = []
        for r in rows:
            item: dict[str, Any] = {
                "poolId": r["pool_id"], "nodeId": r["node_id"],
                "nodeUrl": self.ctx.node_url(r["pool_id"], r["node_id"])}
            if r["preparation"]:
                item["jobPreparationTaskExecutionInfo"] = loads(r["preparation"])
            if r["release"]:
                item["jobReleaseTaskExecutionInfo"] = loads(r["release"])
            out.append(item)
        return out
