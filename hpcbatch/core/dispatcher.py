"""The dispatcher: scheduling passes that record ended runs and fill free task slots.

The loop is woken by events (task added, task ended, node ready) and
coalesces them into passes. A pass (1) records the tasks that ended since the
last pass, in one transaction, and (2) fills free task slots: pools' jobs in
Batch's order (priority, then age), their active tasks first-in first-out
straight from the database index, placed by :mod:`hpcbatch.core.scheduling`, marked
running in one transaction and submitted to the chosen nodes' Dask workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import posixpath
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import dependencies, events, identity, tokens
from hpcbatch.batch.errors import (
    HpcbatchError,
)
from hpcbatch.batch.models import (
    JobManagerTask,
    TaskSpec,
)
from hpcbatch.batch.states import (
    TASK_HOLDS_NODE,
    ComputeNodeState,
    Kind,
    SubtaskState,
    TaskExecutionResult,
    TaskState,
)
from hpcbatch.batch.wire import new_etag, utcnow
from hpcbatch.core import statistics
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.gang_health import GangHealth
from hpcbatch.core.node_runtime import EndedTask, NodeRuntime
from hpcbatch.core.preparation import PREP_DIR
from hpcbatch.core.runs import (
    DEFAULT_RETENTION_S,
    Ended,
    PreparationFailed,
    Run,
    end_subtasks,
    wall_clock_s,
)
from hpcbatch.core.scheduling import NodeSlots, plan_pool, should_retry
from hpcbatch.core.transitions import check, task_moves
from hpcbatch.execution import agent, containers, multiinstance
from hpcbatch.execution.environment import task_dir
from hpcbatch.store.database import (
    BulkStatement,
    Store,
    dumps,
    loads,
    subtasks,
    tasks,
)

if TYPE_CHECKING:
    from hpcbatch.core.applications import Applications
    from hpcbatch.core.jobs import Jobs
    from hpcbatch.core.pools import Pools
    from hpcbatch.core.preparation import JobPreparation
    from hpcbatch.core.runs import Runs
    from hpcbatch.core.tasks import Tasks

log = logging.getLogger(__name__)


TOKEN_LIFETIME = timedelta(days=7)
"""How long a task's ``AZ_BATCH_AUTHENTICATION_TOKEN`` is valid when it has no ``maxWallClockTime``."""

TOKEN_GRACE = timedelta(minutes=15)
"""How long a token outlives its task's ``maxWallClockTime``."""


_END_VALUES = {
    "state": sa.bindparam("b_state"), "previous_state": tasks.c.state,
    "previous_state_transition_time": tasks.c.state_transition_time,
    "state_transition_time": sa.bindparam("b_now"), "exit_code": sa.bindparam("b_exit"),
    "failure_info": sa.bindparam("b_failure"), "end_time": sa.bindparam("b_end"),
    "result": sa.bindparam("b_result"), "retry_count": sa.bindparam("b_retry"),
    "last_retry_time": sa.func.coalesce(sa.bindparam("b_retry_time", type_=sa.DateTime),
                                        tasks.c.last_retry_time),
    "last_modified": sa.bindparam("b_now"), "etag": sa.bindparam("b_etag"),
    "satisfies": sa.bindparam("b_satisfies"), "cleanup_at": sa.bindparam("b_cleanup"),
}
_END_WHERE = (tasks.c.seq == sa.bindparam("b_seq"),
              task_moves(TASK_HOLDS_NODE, {TaskState.active, TaskState.completed}))
_END = BulkStatement(tasks.update().where(*_END_WHERE).values(**_END_VALUES))
_END_WITH_START = BulkStatement(tasks.update().where(*_END_WHERE).values(
    start_time=sa.bindparam("b_start"), **_END_VALUES))
_START = BulkStatement(
    tasks.update().where(tasks.c.seq == sa.bindparam("b_seq"),
                         task_moves({TaskState.active}, TASK_HOLDS_NODE))
    .values(state=sa.bindparam("b_state"), previous_state=TaskState.active,
            previous_state_transition_time=tasks.c.state_transition_time,
            state_transition_time=sa.bindparam("b_now"), start_time=sa.bindparam("b_now"),
            end_time=None, node_id=sa.bindparam("b_node"), pool_key=sa.bindparam("b_pool"),
            last_modified=sa.bindparam("b_now"), etag=sa.bindparam("b_etag")))
"""Hot statements of the dispatch loop, built once (building them is a pass's largest cost)."""

GC_NOTE = """The cyclic garbage collector is paused while a pass runs. A pass of N runs
allocates some fifty objects per run (rows, runs, launches, events), nearly all
freed by reference counting when it ends; left on, the collector would traverse
the service's whole heap every few thousand allocations (a third of the
service's CPU in a 4,000-run pass, measured with ``gc.callbacks``). Cycles made
during a pass are collected after it, by the collector's next run."""

_SUBTASK_PREPARED = (SubtaskState.preparing,
                     SubtaskState(check(Kind.subtask, SubtaskState.preparing, SubtaskState.running)))
"""The job preparation task succeeded on a gang's nodes: its subtasks run (checked at import)."""


def _preferred_node(task: Mapping[str, Any]) -> str | None:
    """The node a task prefers (``affinityInfo.affinityId``, ``TVM:{nodeId}``), or None."""
    if '"affinityInfo"' not in task["spec"]:
        return None
    affinity = (loads(task["spec"]).get("affinityInfo") or {}).get("affinityId") or ""
    return affinity.removeprefix("TVM:") or None


def _first_state(job: Mapping[str, Any]) -> TaskState:
    """The state a task of ``job`` (and its subtasks) takes when dispatched to nodes:
    ``preparing`` when the job has a job preparation task, else ``running``."""
    return TaskState.preparing if '"jobPreparationTask"' in job["spec"] else TaskState.running


@dataclass(frozen=True)
class _Template:
    """What runs of tasks with the same specification (but for ``id``) share in one pass."""

    spec: TaskSpec | JobManagerTask
    max_retries: int
    settings: list[dict[str, Any]]
    wall_s: float | None
    storage_env: dict[str, str]
    retention_s: float | None
    exit_conditions: dict[str, Any] | None
    kill_job_on_completion: bool
    io: dict[str, Any] | None
    """:meth:`Dispatcher.launch_io` of a single-node task; None for a multi-instance one."""
    run_as: identity.RunAs | None
    """The pool's auto-user, for a task without ``userIdentity``; else resolved per run."""


class Dispatcher:
    """Scheduling passes: what runs where, and what ended.

    Parameters
    ----------
    ctx
        The service context.
    runs
        The runs in flight.
    jobs, tasks
        Job actions and dependencies applied when tasks complete.
    preparation
        Job preparation before a job's first task on a node.
    applications
        Resolves the packages a task or its pool references.
    pools
        Told after each pass, to finish resizes whose allocation became steady.
    """

    def __init__(self, ctx: ServiceContext, runs: Runs, jobs: Jobs, tasks: Tasks,
                 preparation: JobPreparation, applications: Applications, pools: Pools) -> None:
        self.ctx = ctx
        self.pools = pools
        self.runs = runs
        self.jobs = jobs
        self.tasks = tasks
        self.preparation = preparation
        self.applications = applications
        self._ended: list[Ended] = []
        self.gangs = GangHealth(lambda node, code, message:  # noqa: PLW0108 - pool_manager read at call time
                                self.ctx.pool_manager.quarantine(node, code, message))
        """Nodes that failed multi-instance tasks: retries avoid them."""

    async def loop(self) -> None:
        while True:
            await self.ctx.wake.wait()
            await asyncio.sleep(0)  # outcomes already delivered join this pass
            self.ctx.wake.clear()
            try:
                self.run_pass()
                self.pools.finish_resizes()
            except Exception:
                log.exception("scheduling pass failed")
                await asyncio.sleep(0.5)
                self.ctx.kick()

    async def _watch(self, run: Run) -> None:
        try:
            outcome = await run.future
            if self._requeue_given_back(run, outcome):
                return
            self._ended.append(Ended(run, outcome))
        except PreparationFailed as exc:
            if run.key in self.runs.by_key:
                self.runs.requeue([run], schedule_error={
                    "category": "usererror", "code": "JobPreparationTaskFailed",
                    "message": f"The job preparation task failed on node {exc}; the task "
                               "goes back to the queue for another node."})
        except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - any failure of the run is the task's
            # (a run whose node was lost is requeued, not failed)
            if run.key in self.runs.by_key and await self._nodes_alive(run):
                self._ended.append(Ended(run, None, f"{type(exc).__name__}: {exc}"
                                         if str(exc) else type(exc).__name__))
        self.ctx.kick()

    async def _nodes_alive(self, run: Run) -> bool:
        """Check that the run's nodes still have their workers; report the lost ones."""
        try:
            workers = await self.ctx.engine.workers()
        except Exception:  # noqa: BLE001 - the scheduler cannot say: take the nodes as alive
            return True
        alive = True
        for node in run.nodes:
            if node.worker and workers.get(node.worker_name) != node.worker:
                self.ctx.pool_manager.lost(node)
                alive = False
        return alive

    def run_pass(self) -> None:
        """One scheduling pass in one transaction: record ended runs, then fill free slots.

        The events the transaction emitted (``TaskCompleteEvent``, ...) are written
        to the event log in one write right after its commit, before anything else:
        a SIGKILL between the two is the only way the log can miss what the store
        holds. The new runs are then sent to their nodes (their ``TaskStartEvent``
        in a second write).
        """
        collect = gc.isenabled()
        if collect:  # see :data:`GC_NOTE`
            gc.disable()
        held = self.ctx.events.held if self.ctx.events is not None else contextlib.nullcontext
        try:
            with held():
                plans = self._record_and_plan()
            if plans:
                with held():
                    self._start_runs(plans)
            self.ctx.engine.flush()
        except BaseException:
            self.jobs.forget_active()  # what this pass read may have been rolled back
            raise
        finally:
            if collect:
                gc.enable()

    def _record_and_plan(self) -> list[tuple[Mapping[str, Any], Mapping[str, Any],
                                             list[NodeRuntime]]]:
        """The pass's transaction: record ended runs, plan and mark the new ones; the plans."""
        with self.ctx.store.begin() as conn:
            self._record_ended(conn)
            try:
                plans = self._plan(conn)
            except Exception:  # what ended is recorded all the same
                log.exception("cannot plan new runs")
                plans = []
            if plans:
                self._mark_started(conn, plans)
        return plans

    def _record_ended(self, conn: sa.Connection) -> None:
        """Record every run that ended since the last pass."""
        if not self._ended:
            return
        batch, self._ended = self._ended, []
        now = utcnow()
        etag = new_etag()  # each task's new eTag; one per pass, as for the runs it starts
        updates = []
        ended: list[tuple[Run, bool, dependencies.Ending]] = []
        gangs: list[Ended] = []
        for e in batch:
            run = e.run
            if run.key not in self.runs.by_key:
                continue  # requeued meanwhile (node lost); this result is void
            self.runs.forget(run)
            if len(run.nodes) > 1:
                gangs.append(e)
            out = e.outcome
            failure: dict[str, Any] | None
            if out is None:
                failure = {"category": "servererror", "code": "NodeAgentError",
                           "message": f"node {run.node.node_id}: {e.error}"}
                exit_code, start, end = None, None, now
            else:
                failure, exit_code = out.failure_info, out.exit_code
                start, end = out.start_time.replace(tzinfo=None), out.end_time.replace(tzinfo=None)
            ok = exit_code == 0 and failure is None
            if start is not None and len(run.nodes) == 1:
                run.node.note_run_time((end - start).total_seconds())  # NodeRuntime.ahead_slots
            run.node.total_tasks_run += 1
            run.node.total_tasks_succeeded += ok
            retry = should_retry(ok, run.terminated, run.max_retries, run.retry_count)
            result = TaskExecutionResult.success if ok else TaskExecutionResult.failure
            for i, node in enumerate(run.nodes):  # a gang's subtasks are 1..n-1 (its primary: 0)
                self.ctx.pool_manager.note_ended(node, EndedTask(
                    run.job_id, run.task_id, i or None,
                    TaskState.active if retry else TaskState.completed, start, end, exit_code,
                    run.retry_count + retry, run.requeue_count, None if retry else result, failure))
            ending = dependencies.task_ending(run.exit_conditions, exit_code,
                                              failure.get("code") if failure else None)
            if not retry:
                ended.append((run, ok, ending))
            if len(run.nodes) > 1:
                self.gangs.ended(run, failure if not ok else None, retry)
            if self.ctx.events is not None:
                task = {"id": run.task_id, "nodeInfo": {"poolId": run.node.pool_id,
                                                        "nodeId": run.node.node_id},
                        "requiredSlots": run.slots,
                        "multiInstanceSettings": {"numberOfInstances": len(run.nodes)},
                        "constraints": {"maxTaskRetryCount": run.max_retries},
                        "executionInfo": {"startTime": start, "endTime": end,
                                          "exitCode": exit_code, "retryCount": run.retry_count,
                                          "failureInfo": failure,
                                          "result": result}}
                if ok:
                    self.ctx.emit("TaskCompleteEvent", events.task_complete_event(run.job_id, task))
                else:
                    self.ctx.emit("TaskFailEvent", events.task_fail_event(run.job_id, task))
            row = {
                "b_seq": run.seq, "b_exit": exit_code, "b_failure": dumps(failure) if failure else None,
                "b_end": end, "b_now": now, "b_etag": etag,
                "b_result": None if retry else result,
                "b_state": TaskState.active if retry else TaskState.completed,
                "b_retry": run.retry_count + (1 if retry else 0),
                "b_retry_time": now if retry else None,
                "b_satisfies": None if retry else ending.dependency_action == "satisfy",
                "b_cleanup": None if retry else end + timedelta(
                    seconds=run.retention_s if run.retention_s is not None
                    else DEFAULT_RETENTION_S),
            }
            if start is not None:
                row["b_start"] = start
            updates.append(row)
        statistics.record_ended(conn, batch, updates)  # stats helper: job/pool counters
        if not updates:
            return
        with_start = [u for u in updates if "b_start" in u]
        without = [u for u in updates if "b_start" not in u]
        sub_rows = [
            {"b_job": e.run.job_key, "b_task": e.run.task_id.lower(), "b_id": r.instance,
             "b_end": now, "b_exit": r.outcome.exit_code if r.outcome else None,
             "b_result": TaskExecutionResult.success if r.outcome and r.outcome.exit_code == 0
             and not r.outcome.failure_info
             else (TaskExecutionResult.failure if r.outcome or r.error else TaskExecutionResult.success),
             "b_failure": dumps(r.outcome.failure_info) if r.outcome and r.outcome.failure_info
             else (dumps({"category": "servererror", "code": "NodeAgentError",
                          "message": r.error}) if r.error else None)}
            for e in gangs for r in e.run.subtasks]
        if sub_rows:
            conn.execute(subtasks.update().where(
                subtasks.c.job_key == sa.bindparam("b_job"),
                subtasks.c.task_key == sa.bindparam("b_task"),
                subtasks.c.id == sa.bindparam("b_id"),
            ).values(state=SubtaskState.completed, state_transition_time=sa.bindparam("b_end"),
                     end_time=sa.bindparam("b_end"), exit_code=sa.bindparam("b_exit"),
                     result=sa.bindparam("b_result"), failure_info=sa.bindparam("b_failure")),
                sub_rows)
        # Instances that reported nothing (the gang failed before returning) end with the
        # run's error, so no subtask of an ended run stays running (audit M10).
        for e in gangs:
            end_subtasks(conn, [(e.run.job_key, e.run.task_key)], {
                "category": "servererror", "code": "NodeAgentError",
                "message": e.error or "the multi-instance run ended before this instance "
                                      "reported"}, now)
        _END_WITH_START.execute(conn, with_start)
        _END.execute(conn, without)
        if ended:
            self.jobs.after_completions(conn, ended)

    def _plan(self, conn: sa.Connection) -> list[tuple[Mapping[str, Any], Mapping[str, Any],
                                                      list[NodeRuntime]]]:
        """Choose the tasks that fill free task slots of every pool: ``[(job, task row, nodes)]``.

        Candidates are taken in Batch's order. A multi-instance task takes its
        whole gang of nodes at once or waits; while it waits at the head of
        its pool's queue, nothing behind it is started there (no backfill), so
        a stream of single-node tasks cannot starve it and it never holds a
        partial set of nodes.
        """
        plans: list[tuple[Mapping[str, Any], Mapping[str, Any], list[NodeRuntime]]] = []
        failed = self.preparation.failed_nodes
        pm = self.ctx.pool_manager
        for pool_key in pm.pool_keys():
            spec = pm.spec(pool_key)
            if spec is None:
                continue
            active = self.jobs.active_jobs(conn, pool_key)  # kept between passes
            if not active:
                continue  # no node scan for a pool without work
            room = [(n, n.free_slots, n.ahead_slots) for n in pm.nodes_of(pool_key)]
            ready = {n.node_id: n for n, free, ahead in room if free or ahead}
            if not ready:
                continue
            fill = (spec.task_scheduling_policy.node_fill_type
                    if spec.task_scheduling_policy else "spread")
            chosen = plan_pool(
                [NodeSlots(n.node_id, free, n.order, ahead) for n, free, ahead in room
                 if free or ahead],
                ((j, j["priority"], j["seq"]) for j in active),
                lambda job, budget: Store.next_active_tasks(conn, job["key"], budget),
                lambda c: (c["instances"], c["required_slots"]),
                lambda job: failed.get(job["key"], ()), fill,
                allowance=self._allowance, prefer=_preferred_node,
                avoid=self._gang_avoid(pool_key))
            plans += [(job, cand, [ready[nid] for nid in nids]) for job, cand, nids in chosen]
        return plans

    def _gang_avoid(self, pool_key: str) -> Callable[[Mapping[str, Any]], Collection[str]]:
        """``avoid(task)`` for a pool's pass: the nodes a retried gang stays off."""
        live: list[str] | None = None

        def avoid(task: Mapping[str, Any]) -> Collection[str]:
            nonlocal live
            if task["instances"] <= 1:
                return ()
            if live is None:  # built once per pass, and only when a gang is a candidate
                live = [n.node_id for n in self.ctx.pool_manager.nodes_of(pool_key)
                        if not n.removing and n.state != ComputeNodeState.leavingpool]
            return self.gangs.avoid(task["job_key"], task["key"], task["instances"], live)
        return avoid

    def _allowance(self, job: Mapping[str, Any]) -> int | None:
        """How many more of a job's tasks may start (``maxParallelTasks``), or None: no limit."""
        if '"maxParallelTasks"' not in job["spec"]:
            return None
        limit = loads(job["spec"]).get("maxParallelTasks", -1)
        if limit is None or limit < 0:
            return None
        return int(limit) - self.runs.running_of_job(job["key"])

    def _mark_started(self, conn: sa.Connection, plans: Sequence[tuple[
            Mapping[str, Any], Mapping[str, Any], list[NodeRuntime]]]) -> None:
        """Record planned tasks as running (or preparing), and a gang's subtasks.

        A gang's subtasks take their primary's state: ``preparing`` while the
        job preparation task runs on their nodes (REST SubtaskState.preparing;
        audit M20), with no ``startTime`` until they run (:meth:`_run_gang`).
        """
        now = utcnow()
        etag = new_etag()
        _START.execute(conn, [
            {"b_seq": c["seq"], "b_node": ns[0].node_id, "b_pool": ns[0].pool_id,
             "b_now": now, "b_etag": etag, "b_state": _first_state(job)}
            for job, c, ns in plans])
        gangs = [(job, c, ns) for job, c, ns in plans if len(ns) > 1]
        for job, c, _ in gangs:
            conn.execute(subtasks.delete().where(subtasks.c.job_key == job["key"],
                                                 subtasks.c.task_key == c["key"]))
        Store.insert_many(conn, subtasks, [
            {"job_key": job["key"], "task_key": c["key"], "id": i, "node_id": n.node_id,
             "pool_id": n.pool_id, "state": check(Kind.subtask, None, _first_state(job)),
             "state_transition_time": now,
             "start_time": None if _first_state(job) == TaskState.preparing else now,
             "end_time": None, "exit_code": None, "result": None, "failure_info": None}
            for job, c, ns in gangs for i, n in enumerate(ns) if i > 0])

    def _start_runs(self, plans: Sequence[tuple[Mapping[str, Any], Mapping[str, Any],
                                                list[NodeRuntime]]]) -> None:
        """Start the planned runs: one message per node for the plain ones."""
        batches: dict[str, tuple[NodeRuntime, list[tuple[Run, agent.Launch]]]] = {}
        job_specs: dict[str, dict[str, Any]] = {}
        templates: dict[tuple[str, str, bool, str], _Template] = {}
        for job, cand, nodes_ in plans:
            job_spec = job_specs.get(job["key"])
            if job_spec is None:
                job_spec = job_specs[job["key"]] = loads(job["spec"])
            run, launch = self._launch(job, cand, nodes_, job_spec, templates)
            if launch is not None:
                batches.setdefault(nodes_[0].node_id, (nodes_[0], []))[1].append((run, launch))
        for node, batch in batches.values():
            self.ctx.engine.post(node.worker or "", [lc for _, lc in batch], sink=self.ran,
                             on_error=self._not_sent)

    def _token_env(self, job_id: str, spec: TaskSpec | JobManagerTask,
                   job_seq: int) -> dict[str, str]:
        """``AZ_BATCH_AUTHENTICATION_TOKEN`` for a task whose ``authenticationTokenSettings``
        ask for ``job`` access; nothing otherwise.

        The token (:func:`hpcbatch.batch.tokens.issue_job_token`) allows every
        operation on job ``job_id`` (the incarnation ``job_seq``: not a job re-created
        under that ID) and nothing else; it expires
        :data:`TOKEN_GRACE` after the task's ``maxWallClockTime``, or after
        :data:`TOKEN_LIFETIME` when the task has none. Each run gets a new one.
        """
        settings = spec.authentication_token_settings
        if settings is None or "job" not in (settings.access or []):
            return {}
        wall = spec.constraints.max_wall_clock_time if spec.constraints else None
        expires = utcnow() + (wall + TOKEN_GRACE if wall is not None else TOKEN_LIFETIME)
        token = tokens.issue_job_token(self.ctx.account_key, self.ctx.account_name, job_id,
                                       ["job"], expires, job_seq=job_seq)
        env = {tokens.TOKEN_ENV: token}
        if self.ctx.api_ca_pem:  # an HTTPS service: the task's client trusts its CA
            env[tokens.CA_PEM_ENV] = self.ctx.api_ca_pem
        return env

    def _template(self, job: Mapping[str, Any], row: Mapping[str, Any], pool_key: str,
                  job_spec: dict[str, Any],
                  templates: dict[tuple[str, str, bool, str], _Template]) -> _Template:
        """What a run of ``row`` takes from its specification, shared by the pass's tasks
        that differ only in ``id`` (a parameter sweep's tasks).

        Built once per pass and key: the task's wire validated by its model, retries,
        environment settings, limits, storage variables and the launch's file and
        package fields. A multi-instance task is never shared (its launches name it).
        """
        text: str = row["spec"]
        key = None
        head = f'{{"id":"{row["id"]}",'  # the stored wire (``to_wire``) starts with the id
        if (row["instances"] <= 1 and text.startswith(head)
                and '"multiInstanceSettings"' not in text):
            key = (job["key"], pool_key, bool(row["is_manager"]), text[len(head):])
            got = templates.get(key)
            if got is not None:
                return got
        task_wire = loads(text)
        spec: TaskSpec | JobManagerTask = (JobManagerTask.model_validate(task_wire)
                                           if row["is_manager"] else
                                           TaskSpec.model_validate(task_wire))
        constraints = spec.constraints
        job_retries = (job_spec.get("constraints") or {}).get("maxTaskRetryCount")
        wall_s = wall_clock_s(constraints.max_wall_clock_time if constraints else None)
        retention = constraints.retention_time if constraints else None
        single = row["instances"] <= 1 and getattr(spec, "multi_instance_settings", None) is None
        made = _Template(
            spec=spec,
            max_retries=(constraints.max_task_retry_count if constraints and
                         constraints.max_task_retry_count is not None else job_retries or 0),
            settings=[*(job_spec.get("commonEnvironmentSettings") or []),
                      *[s.to_wire() for s in spec.environment_settings or []]],
            wall_s=wall_s, storage_env=self.ctx.task_storage_env(job["id"], wall_s),
            retention_s=retention.total_seconds() if retention else None,
            exit_conditions=task_wire.get("exitConditions"),
            kill_job_on_completion=bool(row["is_manager"]) and getattr(
                spec, "kill_job_on_completion", None) is not False,
            io=self.launch_io(spec, pool_key) if single else None,
            run_as=(identity.resolve(None, self.ctx.pool_manager.spec(pool_key), "")
                    if spec.user_identity is None else None))
        if key is not None:
            templates[key] = made
        return made

    def _launch(self, job: Mapping[str, Any], row: Mapping[str, Any],
                nodes_: list[NodeRuntime], job_spec: dict[str, Any],
                templates: dict[tuple[str, str, bool, str], _Template] | None = None,
                ) -> tuple[Run, agent.Launch | None]:
        """Register a run; start it, or return its launch for :meth:`_start_runs` to post."""
        tpl = self._template(job, row, nodes_[0].pool_key, job_spec,
                             {} if templates is None else templates)
        spec = tpl.spec
        extra_env: dict[str, str] = {}
        if row["is_manager"]:
            # the endpoint, never the account key: a token only when asked (below)
            extra_env = {"AZURE_BATCH_ENDPOINT": self.ctx.base_url,
                         "AZURE_BATCH_ACCOUNT": self.ctx.account_name}
        extra_env.update(self._token_env(job["id"], spec, job["seq"]))
        max_retries = tpl.max_retries
        key = self.ctx.run_key("run")
        tdir = task_dir(job["id"], row["id"])
        settings = tpl.settings
        wall_s = tpl.wall_s
        extra_env.update(tpl.storage_env)  # its job's container only
        run = Run(key=key, seq=row["seq"], job_key=job["key"], job_id=job["id"],
                  task_id=row["id"], nodes=nodes_, slots=row["required_slots"],
                  max_retries=max_retries, retry_count=row["retry_count"],
                  task_key=row["key"], int_id=row["int_id"],
                  exit_conditions=tpl.exit_conditions,
                  is_manager=bool(row["is_manager"]),
                  kill_job_on_completion=tpl.kill_job_on_completion,
                  retention_s=tpl.retention_s, requeue_count=row["requeue_count"],
                  job_seq=job["seq"],
                  pool_seq=self.ctx.pool_manager.pool_seq(nodes_[0].pool_key),
                  created=row["creation_time"])
        self.runs.add(run)
        if self.ctx.events is not None:
            self.ctx.emit("TaskStartEvent", events.task_start_event(job["id"], {
                "id": row["id"], "requiredSlots": row["required_slots"],
                "nodeInfo": {"poolId": nodes_[0].pool_id, "nodeId": nodes_[0].node_id},
                "multiInstanceSettings": {"numberOfInstances": row["instances"]},
                "constraints": {"maxTaskRetryCount": max_retries},
                "executionInfo": {"retryCount": row["retry_count"],
                                  "requeueCount": row["requeue_count"]}}))
        for node in nodes_:
            self.ctx.pool_manager.assign_run(node, key, job["id"], row["id"], run.slots)
        if job_spec.get("jobPreparationTask"):
            prep_dir = posixpath.join(nodes_[0].root_dir or "", task_dir(job["id"], PREP_DIR))
            extra_env.update(AZ_BATCH_JOB_PREP_DIR=prep_dir,
                             AZ_BATCH_JOB_PREP_WORKING_DIR=posixpath.join(prep_dir, "wd"))
        mis = getattr(spec, "multi_instance_settings", None)
        run_as = tpl.run_as or identity.resolve(
            spec.user_identity, self.ctx.pool_manager.spec(nodes_[0].pool_key), key)
        if len(nodes_) == 1 and mis is None:
            assert tpl.io is not None
            launch = agent.Launch(key=key, task_dir=tdir, command_line=spec.command_line,
                                  job_id=job["id"], task_id=row["id"], settings=settings,
                                  extra_env=extra_env, max_wall_clock_s=wall_s, run_as=run_as,
                                  slots=run.slots, node_slots=nodes_[0].slots, **tpl.io)
            if not job_spec.get("jobPreparationTask"):
                return run, launch  # sent with the other runs of this pass to the node

            def start() -> Any:
                return asyncio.ensure_future(self.ctx.engine.run_launch(nodes_[0].worker or "",
                                                                    launch))
        else:
            assert isinstance(spec, TaskSpec)
            gang = [n.gang_node() for n in nodes_]
            pool_key = self.ctx.pool_manager.keys.key_path(nodes_[0])
            local = self.ctx.pool_manager.mpi_local_launch(nodes_)
            coordination, app = multiinstance.launches(
                spec, key=key, job_id=job["id"], task_dir=tdir, nodes=gang,
                settings=settings, max_wall_clock_s=wall_s, identity_file=pool_key,
                local_python=nodes_[0].host.python if local else None,
                extra_env=extra_env, io=self.launch_io(spec, nodes_[0].pool_key),
                storage=self.ctx.storage, run_as=run_as)

            def start() -> Any:
                return asyncio.ensure_future(self._run_gang(run, gang, coordination, app))
        if job_spec.get("jobPreparationTask"):
            run.future = asyncio.ensure_future(self.preparation.after_preparation(run, job, start))
        else:
            run.future = start()
        self.ctx.background(self._watch(run))
        return run, None

    def _not_sent(self, launches: list[agent.Launch], exc: BaseException) -> None:
        """Runs posted to a node could not be sent: they end with the error (see :meth:`_watch`)."""
        for launch in launches:
            run = self.runs.by_key.get(launch.key)
            if run is not None:
                run.future = asyncio.get_running_loop().create_future()
                run.future.set_exception(exc)
                self.ctx.background(self._watch(run))

    def _requeue_given_back(self, run: Run, outcome: agent.Outcome) -> bool:
        """Requeue the task of a run its node gave back unstarted (it waited too long
        for a slot, :data:`~hpcbatch.execution.agent.RUN_RETURNED`); whether it was one."""
        failure = outcome.failure_info
        if outcome.exit_code is not None or not failure or failure.get("code") != agent.RUN_RETURNED:
            return False
        if run.key in self.runs.by_key:
            self.runs.requeue([run], counted=False)  # never started: not a Batch requeue
        return True

    def ran(self, key: str, outcome: agent.Outcome) -> None:
        """A run posted by :meth:`_start_runs` ended: record it in the next pass (a run
        its node gave back unstarted, :data:`~hpcbatch.execution.agent.RUN_RETURNED`:
        its task goes back to the queue now)."""
        run = self.runs.by_key.get(key)
        if run is None or self._requeue_given_back(run, outcome):
            return
        self._ended.append(Ended(run, outcome))
        self.ctx.kick()

    def launch_io(self, spec: Any, pool_key: str = "") -> dict[str, Any]:
        """Launch fields for a task's packages, resource files, output files and logs."""
        pool = self.ctx.pool_manager.spec(pool_key)
        refs = [r.to_wire() for r in (pool.application_package_references if pool else None) or []]
        refs += [r.to_wire() for r in getattr(spec, "application_package_references", None) or []]
        try:
            pkgs = self.applications.resolve_packages(refs, "applicationPackageReferences")
        except HpcbatchError:
            pkgs = []  # deleted since the task was added: the agent reports nothing to install
        return {
            "packages": pkgs,
            "resource_files": [r.to_wire() for r in getattr(spec, "resource_files", None) or []],
            "output_files": [o.to_wire() for o in getattr(spec, "output_files", None) or []],
            "storage": self.ctx.storage, "persist_logs": self.ctx.storage is not None,
            "container": containers.launch_container(
                cs.to_wire() if (cs := getattr(spec, "container_settings", None)) else None,
                pool.virtual_machine_configuration if pool else None),
        }

    async def _run_gang(self, run: Run, gang: list[multiinstance.GangNode],
                        coordination: list[agent.Launch], app: agent.Launch) -> agent.Outcome:
        """Run a multi-instance task on its gang; return the primary's outcome.

        Its subtasks still ``preparing`` (the job preparation task has succeeded on
        every node of the gang by now) move to ``running`` first (audit M20).

        Raises
        ------
        HpcbatchError
            The gang produced no outcome.
        """
        now = utcnow()
        with self.ctx.store.begin() as conn:
            conn.execute(subtasks.update().where(
                subtasks.c.job_key == run.job_key, subtasks.c.task_key == run.task_key,
                subtasks.c.state == _SUBTASK_PREPARED[0],
            ).values(state=_SUBTASK_PREPARED[1], state_transition_time=now, start_time=now))
        outcome, error, run.subtasks = await multiinstance.run_gang(
            self.ctx.engine, gang, coordination, app)
        if outcome is None:
            raise HpcbatchError(error or "the multi-instance task produced no outcome")
        return outcome


