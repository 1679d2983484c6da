"""Runs: the task runs dispatched to nodes and not yet recorded as ended.

The registry every part consults to end, requeue or wait for a task's run
(job terminate/disable/delete, node reboot/removal, task terminate/delete).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from hpcbatch.batch import events
from hpcbatch.batch.errors import (
    HpcbatchError,
)
from hpcbatch.batch.models import (
    UNLIMITED,
)
from hpcbatch.batch.states import TASK_HOLDS_NODE, Kind, SubtaskState, TaskExecutionResult, TaskState
from hpcbatch.batch.wire import new_etag, utcnow
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.core.transitions import check, task_moves
from hpcbatch.execution import agent
from hpcbatch.store.database import (
    dumps,
    jobs,
    loads,
    pools,
    subtasks,
    tasks,
)

log = logging.getLogger(__name__)

REQUEUE_FROM = task_moves(TASK_HOLDS_NODE, {TaskState.active})
"""Requeue (node lost, removed, rebooted; job disabled; service restart): back to active."""

SUBTASK_LIVE = (SubtaskState.preparing, SubtaskState.running)
"""The subtask states that end in ``completed`` when their run ends."""
for _state in SUBTASK_LIVE:  # checked once, at import
    check(Kind.subtask, _state, SubtaskState.completed)

SUBTASK_REQUEUED = {"category": "servererror", "code": "TaskRequeued",
                    "message": "The multi-instance task was requeued; this instance was ended."}
"""The ``failureInfo`` of a subtask whose task went back to the queue (audit M10)."""


def end_subtasks(conn: sa.Connection, task_keys: Sequence[tuple[str, str]] | None,
                 failure: dict[str, Any], now: Any) -> None:
    """Complete the subtasks still ``preparing`` or ``running`` of some tasks, with a failure.

    Batch: a subtask is completed once its task ended or was requeued
    (REST SubtaskState.completed; 2017 l.5171), so an active task has no
    running subtask (audit M10).

    Parameters
    ----------
    conn
        The transaction that requeues or ends the tasks.
    task_keys
        ``(job key, task key)`` of each task (lower-cased IDs); None: every task.
    failure
        The subtasks' ``failureInfo`` (``category``, ``code``, ``message``).
    now
        The transition and end time (naive UTC ``datetime``).
    """
    live = sa.or_(*(subtasks.c.state == str(s) for s in SUBTASK_LIVE))
    stmt = subtasks.update().values(
        state=str(SubtaskState.completed), state_transition_time=now, end_time=now,
        result=TaskExecutionResult.failure, failure_info=dumps(failure))
    if task_keys is None:
        conn.execute(stmt.where(live))
    elif task_keys:
        conn.execute(stmt.where(live, subtasks.c.job_key == sa.bindparam("b_job"),
                                subtasks.c.task_key == sa.bindparam("b_task")),
                     [{"b_job": j, "b_task": t} for j, t in task_keys])


DEFAULT_RETENTION_S = 7 * 24 * 3600.0
"""Batch's default ``retentionTime``: a task directory is kept 7 days after the task ends."""


@dataclass
class Run:
    """A task run dispatched to a node and not yet recorded as ended."""

    key: str
    seq: int
    job_key: str
    job_id: str
    task_id: str
    nodes: list[NodeRuntime]
    slots: int
    max_retries: int
    retry_count: int
    future: Any = None
    terminated: bool = False
    subtasks: list[Any] = field(default_factory=list)
    task_key: str = ""
    int_id: int | None = None
    exit_conditions: dict[str, Any] | None = None
    is_manager: bool = False
    kill_job_on_completion: bool = False
    retention_s: float | None = None
    requeue_count: int = 0
    """The task's ``requeueCount`` when this run started."""
    job_seq: int | None = None
    """The job's ``seq``: its statistics row (a job deleted and re-created keeps its id, not its seq)."""
    pool_seq: int | None = None
    """The pool's ``seq`` (:meth:`hpcbatch.core.pool_manager.PoolManager.pool_seq`)."""
    created: datetime | str | None = None
    """The task's ``creationTime`` as the store gave it (SQLite: text, parsed only when the
    task completes and its wait time is counted)."""

    @property
    def node(self) -> NodeRuntime:
        """The node the task (its primary, for a multi-instance task) runs on."""
        return self.nodes[0]

    @property
    def instance_keys(self) -> list[tuple[NodeRuntime, str]]:
        """``(node, run key)`` of every process set of this run."""
        if len(self.nodes) == 1:
            return [(self.nodes[0], self.key)]
        return [(self.nodes[0], self.key)] + [(n, f"{self.key}.{i}")
                                              for i, n in enumerate(self.nodes)]



@dataclass(frozen=True)
class Completion:
    """A task that completed without a run (Task - Terminate of an active task).

    It carries what :meth:`hpcbatch.core.jobs.Jobs.after_completions` reads of
    a :class:`Run`, so both kinds of completion take the same path.
    """

    job_key: str
    task_key: str
    int_id: int | None
    is_manager: bool
    kill_job_on_completion: bool


class PreparationFailed(HpcbatchError):
    """The job preparation task failed on a node: the task goes back to the queue."""



@dataclass
class Ended:
    run: Run
    outcome: agent.Outcome | None
    error: str | None = None



def wall_clock_s(value: timedelta | None) -> float | None:
    """Return a ``maxWallClockTime`` in seconds; None when unlimited or not given."""
    if value is None or value >= UNLIMITED:
        return None
    return value.total_seconds()



class Runs:
    """The runs in flight, by run key and by task.

    Parameters
    ----------
    ctx
        The service context.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.by_key: dict[str, Run] = {}
        self.by_task: dict[tuple[str, str], str] = {}
        self._per_job: dict[str, int] = {}

    def add(self, run: Run) -> None:
        """Register a run that was just dispatched."""
        if run.key not in self.by_key:
            self._per_job[run.job_key] = self._per_job.get(run.job_key, 0) + 1
        self.by_key[run.key] = run
        self.by_task[(run.job_key, run.task_key)] = run.key

    def running_of_job(self, job_key: str) -> int:
        """Return how many of a job's tasks hold nodes now (for ``maxParallelTasks``), in O(1)."""
        return self._per_job.get(job_key, 0)

    def of_task(self, job_key: str, task_key: str) -> Run | None:
        """Return the run of a task (lower-cased keys), or None when it is not running."""
        key = self.by_task.get((job_key, task_key))
        return self.by_key.get(key) if key else None

    def of_job(self, job_key: str) -> list[Run]:
        """Return the runs of a job's tasks."""
        return [r for r in self.by_key.values() if r.job_key == job_key]

    def of_node(self, node: NodeRuntime) -> list[Run]:
        """Return the runs that hold a node."""
        return [self.by_key[k] for k in list(node.running) if k in self.by_key]

    def requeue(self, lost: Sequence[Run], *, schedule_error: dict[str, Any] | None = None,
                counted: bool = True) -> None:
        """Put runs' tasks back to ``active`` (``requeueCount`` + 1) and cancel the runs.

        Each requeued task gets a ``TaskRequeueEvent``; with ``schedule_error``
        (the run never started its command: its job preparation task failed on
        the node) a ``TaskScheduleFailEvent`` carrying that error as well.

        Parameters
        ----------
        lost
            The runs whose tasks go back to the queue (node lost or removed, job
            disabled with ``requeue``, preparation failed).
        schedule_error
            ``{"category", "code", "message"}`` when the tasks could not be scheduled.
        counted
            False for runs a node gave back unstarted (sent ahead to it, they
            waited too long for a slot): their tasks go back to ``active`` with
            neither a ``requeueCount`` nor a ``TaskRequeueEvent``, which Batch
            keeps for requeues its users see (node lost, job disabled, ...).
        """
        if not lost:
            return
        now = utcnow()
        with self.ctx.store.begin() as conn:
            conn.execute(
                tasks.update().where(tasks.c.seq == sa.bindparam("b_seq"), REQUEUE_FROM)
                .values(state=TaskState.active, previous_state=tasks.c.state,
                        previous_state_transition_time=tasks.c.state_transition_time,
                        state_transition_time=now, last_modified=now, etag=new_etag(),
                        **({"requeue_count": tasks.c.requeue_count + 1,
                            "last_requeue_time": now} if counted else {})),
                [{"b_seq": r.seq} for r in lost],
            )
            end_subtasks(conn, [(r.job_key, r.task_key) for r in lost if len(r.nodes) > 1],
                         SUBTASK_REQUEUED, now)
            if self.ctx.events is not None and counted:
                counts = dict(conn.execute(sa.select(tasks.c.seq, tasks.c.requeue_count).where(
                    tasks.c.seq.in_([r.seq for r in lost]))).all())
                for r in lost:
                    self._emit_requeue(r, counts.get(r.seq, 0), schedule_error)
        for r in lost:
            self.forget(r)
            self.ctx.engine.forget(r.key)
            if r.future is not None:
                cancelled = r.future.cancel()
                if asyncio.iscoroutine(cancelled):  # an asynchronous Dask future
                    self.ctx.background(cancelled)
        self.ctx.kick()

    def _emit_requeue(self, run: Run, requeue_count: int,
                      schedule_error: dict[str, Any] | None) -> None:
        task = {"id": run.task_id, "requiredSlots": run.slots,
                "nodeInfo": {"poolId": run.node.pool_id, "nodeId": run.node.node_id},
                "multiInstanceSettings": {"numberOfInstances": len(run.nodes)},
                "constraints": {"maxTaskRetryCount": run.max_retries},
                "executionInfo": {"retryCount": run.retry_count, "requeueCount": requeue_count}}
        task_type: events.TaskType = "JobManager" if run.is_manager else "User"
        if schedule_error is not None:
            self.ctx.emit("TaskScheduleFailEvent", events.task_schedule_fail_event(
                run.job_id, task, error=schedule_error, task_type=task_type,
                pool_id=run.node.pool_id))
        self.ctx.emit("TaskRequeueEvent", events.task_requeue_event(
            run.job_id, task, task_type=task_type, pool_id=run.node.pool_id))

    def requeue_stored(self) -> None:
        """Requeue the tasks the store holds as running: after a service restart.

        They were running on nodes of an earlier service process: each goes back to
        ``active`` (``requeueCount`` + 1), as Batch does when a node restarts, with a
        ``TaskRequeueEvent`` as every counted requeue (:meth:`requeue`); their
        subtasks end with them (audit M10). No run of this process holds them.
        """
        now = utcnow()
        with self.ctx.store.begin() as conn:
            lost = conn.execute(sa.select(
                tasks.c.job_key, tasks.c.id, tasks.c.required_slots, tasks.c.instances,
                tasks.c.is_manager, tasks.c.pool_key, tasks.c.node_id, tasks.c.retry_count,
                tasks.c.requeue_count, tasks.c.spec).where(REQUEUE_FROM)).mappings().all() \
                if self.ctx.events is not None else []
            conn.execute(
                tasks.update().where(REQUEUE_FROM).values(
                    state=TaskState.active, previous_state=tasks.c.state,
                    previous_state_transition_time=tasks.c.state_transition_time,
                    state_transition_time=now, requeue_count=tasks.c.requeue_count + 1,
                    last_requeue_time=now, last_modified=now, etag=new_etag(),
                )
            )
            end_subtasks(conn, None, SUBTASK_REQUEUED, now)
            job_rows = {r.key: r for r in conn.execute(
                sa.select(jobs.c.key, jobs.c.id, jobs.c.spec)
                .where(jobs.c.key.in_({t["job_key"] for t in lost})))} if lost else {}
            pool_ids = dict(conn.execute(sa.select(pools.c.key, pools.c.id)).all()) \
                if lost else {}
        for t in lost:
            job = job_rows.get(t["job_key"])
            if job is None:
                continue
            retries = (loads(t["spec"]).get("constraints") or {}).get("maxTaskRetryCount")
            if retries is None:
                retries = (loads(job.spec).get("constraints") or {}).get("maxTaskRetryCount")
            pool_id = pool_ids.get(t["pool_key"], t["pool_key"])
            task = {"id": t["id"], "requiredSlots": t["required_slots"],
                    "nodeInfo": {"poolId": pool_id, "nodeId": t["node_id"]},
                    "multiInstanceSettings": {"numberOfInstances": t["instances"]},
                    "constraints": {"maxTaskRetryCount": retries or 0},
                    "executionInfo": {"retryCount": t["retry_count"],
                                      "requeueCount": t["requeue_count"] + 1}}
            self.ctx.emit("TaskRequeueEvent", events.task_requeue_event(
                job.id, task, task_type="JobManager" if t["is_manager"] else "User",
                pool_id=pool_id))

    def forget(self, run: Run) -> None:
        if self.by_key.pop(run.key, None) is not None:
            left = self._per_job.get(run.job_key, 0) - 1
            if left > 0:
                self._per_job[run.job_key] = left
            else:
                self._per_job.pop(run.job_key, None)
        self.by_task.pop((run.job_key, run.task_id.lower()), None)
        for node in run.nodes:
            self.ctx.pool_manager.release_run(node, run.key, run.slots)

    async def kill(self, run: Run) -> None:
        run.terminated = True
        for node, key in run.instance_keys:
            if not node.worker:
                continue
            try:
                await self.ctx.engine.kill_run(node.worker, key)
            except Exception as exc:  # noqa: BLE001 - logged: the node may be gone
                log.warning("cannot end task %s on node %s: %s", run.task_id, node.node_id, exc)

    async def end_job_runs(self, job_key: str) -> None:
        runs = [r for r in self.by_key.values() if r.job_key == job_key]
        await asyncio.gather(*(self.kill(r) for r in runs), return_exceptions=True)
        while any(r.job_key == job_key for r in self.by_key.values()):  # noqa: ASYNC110 - polls state that many paths change
            await asyncio.sleep(0.05)

    async def drain(self, node: NodeRuntime, option: str) -> None:
        """Deal with a node's running tasks before it reboots, reimages or leaves.

        ``requeue``: end them and put them back to active (no retry spent);
        ``terminate``: end them (completed with ``TaskEnded``);
        ``taskcompletion``/``retaineddata``: let them finish (no new task starts).
        """
        runs = [self.by_key[k] for k in list(node.running) if k in self.by_key]
        if option == "requeue":
            self.requeue(runs)
            await asyncio.gather(*(self.kill(r) for r in runs), return_exceptions=True)
        elif option == "terminate":
            await asyncio.gather(*(self.kill(r) for r in runs), return_exceptions=True)
        while any(k in self.by_key for k in list(node.running)):  # noqa: ASYNC110 - polls state that many paths change
            await asyncio.sleep(0.05)

    def node_lost(self, node: NodeRuntime) -> None:
        """Requeue the tasks of a node that left or was lost, without spending retries.

        A multi-instance task with an instance on the node fails as a gang: it
        is requeued and its other instances are ended.
        """
        self.requeue([self.by_key[k] for k in list(node.running) if k in self.by_key])
