"""Jobs: "Job - Add/Get/List/Patch/Terminate/Disable/Enable/Delete/Get Task Counts" and job actions."""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import defaults, dependencies, identity
from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    HpcbatchError,
    InvalidPropertyValueError,
    exists,
)
from hpcbatch.batch.models import (
    UNLIMITED,
    JobPatch,
    JobSpec,
    check_pool_runs_containers,
)
from hpcbatch.batch.states import (
    JOB_CLOSED,
    JOB_OPEN_FOR_TASKS,
    TASK_HOLDS_NODE,
    TASK_INCOMPLETE,
    JobScheduleState,
    JobState,
    Kind,
    TaskExecutionResult,
    TaskState,
)
from hpcbatch.batch.wire import iso, new_etag, utcnow
from hpcbatch.core import auto_pools
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.rows import job_row, returned_spec
from hpcbatch.core.runs import Completion, Run
from hpcbatch.core.transitions import check
from hpcbatch.store import filters, task_counts
from hpcbatch.store.database import (
    Store,
    dumps,
    job_nodes,
    job_schedules,
    jobs,
    loads,
    mappings,
    subtasks,
    task_dep_ranges,
    task_deps,
    tasks,
)

if TYPE_CHECKING:
    from hpcbatch.core.auto_pools import AutoPools
    from hpcbatch.core.files import NodeFiles
    from hpcbatch.core.preparation import JobPreparation
    from hpcbatch.core.runs import Runs
    from hpcbatch.core.tasks import Tasks

log = logging.getLogger(__name__)

_ACTIVE_JOBS = (sa.select(jobs).where(jobs.c.pool_key == sa.bindparam("b_pool"),
                                       jobs.c.state == JobState.active))


def _check_job_changeable(row: Mapping[str, Any]) -> None:
    """Raise Batch's error for changing a completed or deleting job (Job - Patch, Update,
    Terminate; audit M17).

    Raises
    ------
    ConflictError
        ``JobCompleted`` or ``JobBeingDeleted``.
    """
    if row["state"] == JobState.completed:
        raise ConflictError("The specified job is already in a completed state.",
                            code="JobCompleted")
    if row["state"] == JobState.deleting:
        raise ConflictError("The specified job has been marked for deletion and is being "
                            "deleted.", code="JobBeingDeleted")


class Jobs:
    """The account's jobs.

    Parameters
    ----------
    ctx
        The service context.
    runs
        The runs in flight (ended when a job terminates, is disabled or deleted).
    tasks
        The jobs' tasks (a job manager task is queued with its job; dependents resolve).
    preparation
        Runs release tasks when a job ends.
    auto_pools
        Creates the pools of jobs with an ``autoPoolSpecification`` and deletes them
        when the job ends.
    files
        Removes a deleted job's directory (``workitems/{jobId}``) on the nodes.
    """

    def __init__(self, ctx: ServiceContext, runs: Runs, tasks: Tasks,
                 preparation: JobPreparation, auto_pools: AutoPools, files: NodeFiles) -> None:
        self.ctx = ctx
        self.files = files
        self.auto_pools = auto_pools
        self.runs = runs
        self.tasks = tasks
        self.preparation = preparation
        self._active: dict[str, list[Mapping[str, Any]]] = {}
        """Per pool: its active jobs' rows, as the scheduling passes read them; emptied
        by every change to the jobs table (:meth:`forget_active`)."""
        self._hooks: dict[str, bool] = {}
        """Per job: whether a task's completion can affect other tasks or the job
        (dependencies, ``onTaskFailure``, ``onAllTasksComplete``); unknown until first seen."""

    def active_jobs(self, conn: sa.Connection, pool_key: str) -> list[Mapping[str, Any]]:
        """Return a pool's active jobs' rows, kept between scheduling passes until a job changes."""
        rows = self._active.get(pool_key)
        if rows is None:
            rows = self._active[pool_key] = list(
                mappings(conn.execute(_ACTIVE_JOBS, {"b_pool": pool_key})))
        return rows

    def forget_active(self) -> None:
        """Forget the active jobs the passes keep (a job was added, changed or removed)."""
        self._active.clear()

    @staticmethod
    def check_release_task(spec: JobSpec, where: str = "") -> None:
        """Refuse a job release task without a job preparation task (Job - Add, Job
        Schedule - Add/Patch/Update: "A Job Release Task cannot be specified without
        also specifying a Job Preparation Task for the Job"), and a job manager or
        release task with the ID of the job's preparation task, or a job manager task
        with the release task's ("No other Task in the Job can have the same ID as
        the Job Preparation Task", REST JobPreparationTask.id; the same for
        JobReleaseTask.id).

        Parameters
        ----------
        spec
            The job, or a job schedule's ``jobSpecification``.
        where
            The property path's prefix (``"jobSpecification."`` for a schedule).

        Raises
        ------
        BadRequestError
            400 ``InvalidPropertyValue`` naming ``{where}jobReleaseTask``.
        ConflictError
            409 ``TaskIdSameAsJobPreparationTask`` / ``TaskIdSameAsJobReleaseTask``
            naming ``{where}jobManagerTask.id`` or ``{where}jobReleaseTask.id``.
        """
        if spec.job_release_task and not spec.job_preparation_task:
            raise BadRequestError(
                "A job release task cannot be specified without a job preparation task.",
                code="InvalidPropertyValue", values={"PropertyName": f"{where}jobReleaseTask"})
        prep, release, manager = (spec.job_preparation_task, spec.job_release_task,
                                  spec.job_manager_task)
        prep_id = (prep.id or defaults.JOB_PREPARATION_TASK["id"]).lower() if prep else None
        release_id = (release.id or defaults.JOB_RELEASE_TASK["id"]).lower() if release else None
        clash: tuple[str, str, str] | None = None  # (property, its ID, error code)
        if manager is not None and manager.id.lower() == prep_id:
            clash = ("jobManagerTask", manager.id, "TaskIdSameAsJobPreparationTask")
        elif manager is not None and manager.id.lower() == release_id:
            clash = ("jobManagerTask", manager.id, "TaskIdSameAsJobReleaseTask")
        elif release_id is not None and release_id == prep_id:
            clash = ("jobReleaseTask", release_id, "TaskIdSameAsJobPreparationTask")
        if clash is not None:
            name, task_id, code = clash
            special = "jobPreparationTask" if code.endswith("PreparationTask") else "jobReleaseTask"
            raise ConflictError(f"The {name} has the ID {task_id!r} of the job's {special}; "
                                "every task of a job needs its own ID.",
                                code=code, values={"PropertyName": f"{where}{name}.id"})

    def add_job(self, body: Mapping[str, Any], schedule_job_id: str | None = None,
                schedule_pool_id: str | None = None) -> str:
        """Add a job ("Job - Add"). Raises ``JobExists``, or 400 for bad properties.

        The pool need not exist yet (Batch allows that); tasks wait for it. With
        ``poolInfo.autoPoolSpecification`` (lifetime ``job``) the job's pool is
        created now (:class:`~hpcbatch.core.auto_pools.AutoPools`) and deleted when
        the job completes or is deleted, unless ``keepAlive``; its ID is the job's
        ``executionInfo.poolId``. A pool that cannot be created leaves the job
        active without a pool, with Batch's ``executionInfo.schedulingError``.

        Parameters
        ----------
        body
            ``JobAddParameter`` JSON, or a schedule's ``jobSpecification``.
        schedule_job_id
            The job's ID when a job schedule creates it (``{schedule}:job-{n}``).
        schedule_pool_id
            The schedule's own auto pool (``poolLifetimeOption: jobschedule``), which
            the job runs on and does not own.

        Raises
        ------
        BadRequestError
            Invalid properties (named); ``poolLifetimeOption: jobschedule`` on a job
            not created by a schedule.
        ConflictError
            ``JobExists``, ``ActiveJobAndScheduleQuotaReached``.
        HpcbatchError
            For a schedule's job (``schedule_job_id``), why its auto pool could not be
            created: the schedule records it.
        """
        if schedule_job_id is not None:  # Batch names schedules' jobs "{schedule}:job-{n}"
            spec = JobSpec.from_wire({**body, "id": "scheduled"}, what="jobSpecification")
            spec.id = schedule_job_id
        else:
            spec = JobSpec.from_wire(body, what="job")
        auto = spec.pool_info.auto_pool_specification
        if auto is not None and auto.pool_lifetime_option == "jobschedule" and \
                schedule_pool_id is None:
            raise InvalidPropertyValueError(
                "poolInfo.autoPoolSpecification.poolLifetimeOption", "jobschedule",
                "a job's auto pool lives as long as the job (job); jobschedule applies only "
                "to job schedules")
        self.check_release_task(spec)
        now = utcnow()
        owned: dict[str, Any] | None = None
        scheduling_error: dict[str, Any] | None = None
        named = spec.pool_info.pool_id or schedule_pool_id
        pool_id: str | None = named
        if named is not None:
            pool_spec = self.ctx.pool_manager.spec(named.lower())
        else:
            assert auto is not None
            pool_id = auto_pools.auto_pool_id(auto.auto_pool_id_prefix)
            pool_spec = self.auto_pools.pool_spec(auto, pool_id)
        for name, special in (("jobManagerTask", spec.job_manager_task),
                              ("jobPreparationTask", spec.job_preparation_task),
                              ("jobReleaseTask", spec.job_release_task)):
            if special is not None:
                identity.check_user_name(special.user_identity, pool_spec,
                                         f"{name}.userIdentity.username")
                check_pool_runs_containers(special.container_settings, pool_spec, pool_id,
                                           f"{name}.containerSettings")
        if auto is not None and schedule_pool_id is None:
            with self.ctx.store.read() as conn:  # refuse before a pool is made for nothing
                if Store.fetch_one(conn, jobs, key=spec.id.lower()) is not None:
                    raise exists("Job", spec.id)
                self.check_job_quota(conn)
            try:
                owned = self.auto_pools.create(auto, pool_id, where=(
                    "jobSpecification." if schedule_job_id is not None else "")
                    + "poolInfo.autoPoolSpecification.pool")
            except HpcbatchError as exc:
                if schedule_job_id is not None:
                    raise
                scheduling_error = auto_pools.scheduling_error(exc)
                log.warning("job %s: %s", spec.id, exc.message)
                pool_id = None
        try:
            self._insert_job(spec, pool_id, now, owned, scheduling_error)
        except HpcbatchError:
            self.auto_pools.release(owned)
            raise
        self.ctx.kick()
        return spec.id

    def _insert_job(self, spec: JobSpec, pool_id: str | None, now: datetime,
                    owned: dict[str, Any] | None,
                    scheduling_error: dict[str, Any] | None) -> None:
        """Insert a new job's row (and its job manager task) in one transaction."""
        with self.ctx.store.begin() as conn:
            if Store.fetch_one(conn, jobs, key=spec.id.lower()) is not None:
                raise exists("Job", spec.id)
            if Store.fetch_one(conn, job_schedules, key=spec.id.lower()) is not None:
                raise ConflictError(  # Batch: a job and a job schedule cannot share an ID
                    f"A job schedule with the ID {spec.id} exists; a job and a job schedule "
                    "cannot have the same ID.", code="JobScheduleWithSameIdExists",
                    values={"JobId": spec.id})
            self.check_job_quota(conn)
            execution: dict[str, Any] = {"startTime": iso(now)}
            if pool_id is not None:
                execution["poolId"] = pool_id
            if scheduling_error is not None:
                execution["schedulingError"] = scheduling_error
            status: dict[str, Any] = {
                "creationTime": iso(now), "stateTransitionTime": iso(now),
                "lastModified": iso(now), "eTag": new_etag(), "executionInfo": execution}
            if owned is not None:
                status[auto_pools.AUTO_POOL] = owned
            values: dict[str, Any] = {
                "key": spec.id.lower(), "id": spec.id,
                "seq": self.ctx.store.next_seq(conn, "job"),
                "pool_key": pool_id.lower() if pool_id else None, "state": JobState.active,
                "priority": spec.priority or 0, "spec": dumps(spec.to_wire()),
                "status": dumps(status), "creation_time": now, "state_transition_time": now}
            conn.execute(jobs.insert().values(**values))
            self.forget_active()
            jm = spec.job_manager_task
            if jm is not None:
                # Queued first: the job manager gets the job's lowest insertion order.
                row = self.tasks.row_values(jm, values["key"], now)
                if jm.run_exclusive is not False:
                    pool = self.ctx.pool_manager.spec(values["pool_key"] or "")
                    row["required_slots"] = pool.slots if pool else (jm.required_slots or 1)
                conn.execute(tasks.insert().values(row))
            elif spec.on_all_tasks_complete == "terminatejob":
                # Batch: a job without tasks has all its tasks complete.
                self.begin_terminate(conn, {**values, "status": dumps(status)},
                                      "AllTasksComplete")

    def check_job_quota(self, conn: sa.Connection) -> None:
        """Raise ``ActiveJobAndScheduleQuotaReached`` when active jobs and schedules are at quota."""

        active = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
            jobs.c.state != JobState.completed)).scalar() or 0
        active += conn.execute(sa.select(sa.func.count()).select_from(job_schedules).where(
            job_schedules.c.state != JobScheduleState.completed)).scalar() or 0
        if active >= self.ctx.quotas.active_jobs_and_job_schedules:
            raise ConflictError(
                "The account has reached its quota of "
                f"{self.ctx.quotas.active_jobs_and_job_schedules} active jobs and job schedules.",
                code="ActiveJobAndScheduleQuotaReached",
                values={"Quota": str(self.ctx.quotas.active_jobs_and_job_schedules)})

    def job_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A job row as ``CloudJob`` JSON, with Batch's defaults of what its
        specification left out (:func:`hpcbatch.batch.defaults.fill_job`)."""
        out = defaults.fill_job(returned_spec(row))
        status = loads(row["status"])
        out.update({
            "url": f"{self.ctx.base_url}/jobs/{row['id']}", "eTag": status["eTag"],
            "lastModified": status["lastModified"], "creationTime": status["creationTime"],
            "state": row["state"], "stateTransitionTime": status["stateTransitionTime"],
            "priority": row["priority"], "executionInfo": status["executionInfo"],
        })
        if "previousState" in status:
            out["previousState"] = status["previousState"]
            out["previousStateTransitionTime"] = status["previousStateTransitionTime"]
        return out

    def get_job(self, job_id: str) -> dict[str, Any]:
        """Return a job's ``CloudJob`` JSON ("Job - Get"). Raises ``JobNotFound``."""
        with self.ctx.store.read() as conn:
            return self.job_wire(job_row(conn, job_id))

    def list_jobs(self, filter_: str | None = None) -> list[dict[str, Any]]:
        """Return every job's JSON ("Job - List"), optionally OData-filtered."""
        stmt = sa.select(jobs).order_by(jobs.c.seq)
        if filter_:
            stmt = stmt.where(filters.compile_filter(filter_, filters.JOB_COLUMNS))
        with self.ctx.store.read() as conn:
            return [self.job_wire(r) for r in mappings(conn.execute(stmt))]

    def update_job(self, job_id: str, body: Mapping[str, Any]) -> None:
        """Update a job's priority and other mutable properties ("Job - Update/Patch").

        A terminating job may still be changed; a completed or deleting one may not
        (audit M17).

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        ConflictError
            ``JobCompleted`` for a completed job: "the system will not accept any
            more Tasks or any further changes to the Job" (REST JobState.completed);
            ``JobBeingDeleted`` for a deleting one: "All update operations on a Job
            that is in deleting state will fail with status code 409" (REST Job - Delete).
        """
        patch = JobPatch.from_wire(body, what="job update")
        if patch.pool_info is not None and patch.pool_info.auto_pool_specification is not None:
            raise BadRequestError(
                "A job's poolInfo can be changed to another poolId only: give an "
                "autoPoolSpecification when the job is added.", code="InvalidPropertyValue",
                values={"PropertyName": "poolInfo.autoPoolSpecification"})
        with self.ctx.store.begin() as conn:
            row = job_row(conn, job_id)
            _check_job_changeable(row)
            spec = loads(row["spec"])
            spec.update(patch.to_wire())
            status = loads(row["status"])
            status.update(lastModified=iso(utcnow()), eTag=new_etag())
            values: dict[str, Any] = {"spec": dumps(spec), "status": dumps(status)}
            if patch.priority is not None:
                values["priority"] = patch.priority
            if patch.pool_info and patch.pool_info.pool_id:
                values["pool_key"] = patch.pool_info.pool_id.lower()
                status["executionInfo"]["poolId"] = patch.pool_info.pool_id
                values["status"] = dumps(status)
            Store.update(conn, jobs, {"key": row["key"]}, **values)
            self.forget_active()
            # Batch evaluates onAllTasksComplete when it is set, not only when a task
            # completes: a job whose tasks have all completed (or that has none) ends now.
            if (patch.on_all_tasks_complete == "terminatejob"
                    and row["state"] in JOB_OPEN_FOR_TASKS
                    and self._all_tasks_complete(conn, row["key"])):
                self.begin_terminate(conn, {**row, **values}, "AllTasksComplete")
        self._hooks.pop(row["key"], None)
        self.ctx.kick()

    @staticmethod
    def _all_tasks_complete(conn: sa.Connection, job_key: str) -> bool:
        """Whether no task of the job is active, preparing or running (an indexed LIMIT 1)."""
        return conn.execute(sa.select(tasks.c.seq).where(
            tasks.c.job_key == job_key,
            tasks.c.state.in_(sorted(TASK_INCOMPLETE))).limit(1)).first() is None

    def set_state(self, conn: sa.Connection, row: Mapping[str, Any], state: JobState,
                       status_extra: Mapping[str, Any] | None = None, **execution: Any) -> None:
        """Move a job to ``state`` (checked against the job table), in ``conn``'s transaction.

        Parameters
        ----------
        row
            The job's row.
        state
            The new state.
        status_extra
            Service-side facts kept in the job's status (not on the wire), e.g.
            ``disableTasks`` of a disable in progress.
        **execution
            ``executionInfo`` properties to set (``endTime``, ``terminateReason``).
        """
        moment = utcnow()
        now = iso(moment)
        status = loads(row["status"])
        status.update(status_extra or {})
        status.update(previousState=row["state"],
                      previousStateTransitionTime=status["stateTransitionTime"],
                      stateTransitionTime=now, lastModified=now, eTag=new_etag())
        status["executionInfo"].update(execution)
        Store.update(conn, jobs, {"key": row["key"]}, state=check(Kind.job, row["state"], state),
                     status=dumps(status), state_transition_time=moment)
        self.forget_active()

    def terminate_job(self, job_id: str, reason: str | None = None) -> None:
        """Terminate a job ("Job - Terminate").

        Running tasks are ended; active tasks stay active and are never scheduled
        ("If there are any Tasks in the Job in the active state, they will remain
        in the active state", REST Job - Terminate; D5 of docs/architecture.md);
        the job moves to ``terminating`` and then ``completed`` with
        ``executionInfo.terminateReason`` (default ``UserTerminate``).

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        ConflictError
            ``JobCompleted`` when the job has completed already; ``JobBeingDeleted``
            when it is being deleted (audit M17).
        """
        with self.ctx.store.begin() as conn:
            row = job_row(conn, job_id)
            _check_job_changeable(row)
            self.begin_terminate(conn, row, reason or "UserTerminate")

    def begin_terminate(self, conn: sa.Connection, row: Mapping[str, Any], reason: str) -> None:
        """Move a job to ``terminating`` (in ``conn``'s transaction) and end it in the background."""
        if row["state"] in JOB_CLOSED:
            return
        self.set_state(conn, row, JobState.terminating, terminateReason=reason)
        self.ctx.background(self._finish_terminate(row["key"]))

    async def _finish_terminate(self, job_key: str) -> None:
        await self.runs.end_job_runs(job_key)
        await self.preparation.run_releases(job_key)
        with self.ctx.store.begin() as conn:
            row = Store.fetch_one(conn, jobs, key=job_key)
            if row is None or row["state"] != JobState.terminating:
                return
            self.set_state(conn, row, JobState.completed, endTime=iso(utcnow()))
        # An auto pool of lifetime job ends with its job (REST AutoPoolSpecification.keepAlive).
        self.auto_pools.release(auto_pools.owned(loads(row["status"])))

    def disable_job(self, job_id: str, disable_tasks: str = "requeue") -> None:
        """Disable a job ("Job - Disable"): no new task of it starts.

        Parameters
        ----------
        disable_tasks
            What happens to its running tasks: ``requeue`` (ended and put back
            to active, no retry spent), ``terminate`` (ended, completed with
            ``TaskEnded``) or ``wait`` (left to finish).

        Raises
        ------
        ConflictError
            ``JobNotActive`` when the job is not active, disabling or disabled.
            A disabling or disabled job is left as it is (its first disable goes
            on): "If you try to disable a Job that is in any state other than
            active, disabling, or disabled, the request fails with status code
            409" (REST Job - Disable; audit M19).
        InvalidPropertyValueError
            An unknown ``disableTasks``.
        """
        if disable_tasks not in ("requeue", "terminate", "wait"):
            raise InvalidPropertyValueError("disableTasks", disable_tasks,
                                            "allowed values are requeue, terminate, wait")
        with self.ctx.store.begin() as conn:
            row = job_row(conn, job_id)
            if row["state"] in (JobState.disabling, JobState.disabled):
                return
            if row["state"] != JobState.active:
                raise ConflictError(f"The job is {row['state']}; only an active job can be "
                                    "disabled.", code="JobNotActive")
            self.begin_disable(conn, row, disable_tasks)

    def begin_disable(self, conn: sa.Connection, row: Mapping[str, Any], how: str) -> None:
        """Move a job to ``disabling`` (in ``conn``'s transaction) and disable it in the background.

        ``how`` (``disableTasks``) is kept in the job's status so that a
        service restart resumes the disable (:meth:`resume`).
        """
        if row["state"] != JobState.active:
            return
        self.set_state(conn, row, JobState.disabling, status_extra={"disableTasks": how})
        self.ctx.background(self._finish_disable(row["key"], how))

    async def _finish_disable(self, job_key: str, how: str) -> None:
        runs = self.runs.of_job(job_key)
        if how == "requeue":
            self.runs.requeue(runs)
            await asyncio.gather(*(self.runs.kill(r) for r in runs), return_exceptions=True)
        elif how == "terminate":
            await asyncio.gather(*(self.runs.kill(r) for r in runs), return_exceptions=True)
        # Every way (``wait`` too) ends with no task of the job running: the job stays
        # disabling until then (REST Job - Disable, JobState.disabled).
        while self.runs.of_job(job_key):  # noqa: ASYNC110 - polls state that many paths change
            await asyncio.sleep(0.05)
        with self.ctx.store.begin() as conn:
            row = Store.fetch_one(conn, jobs, key=job_key)
            if row is not None and row["state"] == JobState.disabling:
                self.set_state(conn, row, JobState.disabled)

    def resume(self) -> None:
        """Finish the jobs an earlier service process left ``terminating``, ``disabling`` or
        ``deleting`` (its background completions ended with it).

        Called by the service's start, after the tasks it recorded as running
        were requeued: each job takes the same background completion the
        operation that moved it there started (end runs, run release tasks,
        then ``completed``, ``disabled`` or removed). Batch: each of these states
        is an operation in progress that ends (REST JobState.terminating,
        .disabling, .deleting).
        """
        with self.ctx.store.read() as conn:
            rows = mappings(conn.execute(
                sa.select(jobs.c.key, jobs.c.state, jobs.c.status).where(jobs.c.state.in_(
                    [JobState.terminating, JobState.disabling, JobState.deleting]))
                .order_by(jobs.c.seq)))
        for row in rows:
            if row["state"] == JobState.terminating:
                self.ctx.background(self._finish_terminate(row["key"]))
            elif row["state"] == JobState.disabling:
                how = loads(row["status"]).get("disableTasks", "requeue")
                self.ctx.background(self._finish_disable(row["key"], how))
            else:
                self.ctx.background(self.finish_delete(row["key"]))

    def enable_job(self, job_id: str) -> None:
        """Enable a disabled job ("Job - Enable"); its tasks are scheduled again.

        "The Batch service sets a disabled Job to the enabling state. After the
        this operation is completed, the Job moves to the active state" (REST Job
        - Enable): the job goes ``disabled`` -> ``enabling`` -> ``active`` in one
        transaction (nothing to wait for; ``previousState`` reads ``enabling``,
        D4). Enable of an enabling job changes nothing (audit M18).

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        ConflictError
            ``JobNotDisabled`` unless the job is disabled (or enabling): a
            disabling job is not disabled until its running tasks are dealt with.
        """
        with self.ctx.store.begin() as conn:
            row = job_row(conn, job_id)
            if row["state"] == JobState.enabling:
                return
            if row["state"] != JobState.disabled:
                raise ConflictError(f"The job is {row['state']}, not disabled.",
                                    code="JobNotDisabled")
            self.set_state(conn, row, JobState.enabling)
            self.set_state(conn, Store.fetch_one(conn, jobs, key=row["key"]) or row,
                           JobState.active)
        self.ctx.kick()

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its tasks ("Job - Delete"); running tasks are ended first."""
        with self.ctx.store.begin() as conn:
            row = job_row(conn, job_id)
            if row["state"] == JobState.deleting:
                return
            self.set_state(conn, row, JobState.deleting)
        self.ctx.background(self.finish_delete(row["key"]))

    async def finish_delete(self, job_key: str) -> None:
        """Finish Job - Delete: end the job's runs, run its release task, remove the job's
        directory (``workitems/{jobId}``) on the nodes, then its records.

        The directory goes from every node of the job's pool and every node one of its
        tasks, subtasks or preparation tasks last ran on (Batch: deleting a job deletes
        its tasks, and "When a Task is deleted, all of the files in its directory on the
        Compute Node where it ran are also deleted"). Nodes whose worker is not
        connected keep it.

        Parameters
        ----------
        job_key
            The job's key (its lower-cased ID).
        """
        await self.runs.end_job_runs(job_key)
        # Nodes where the release task ran at Job - Terminate are skipped (audit M6).
        await self.preparation.run_releases(job_key)
        with self.ctx.store.read() as conn:
            job = Store.fetch_one(conn, jobs, key=job_key)
            nodes = {(p or "", n) for p, n in conn.execute(
                sa.select(tasks.c.pool_key, tasks.c.node_id).distinct().where(
                    tasks.c.job_key == job_key, tasks.c.node_id.is_not(None)))}
            for table in (subtasks, job_nodes):
                nodes.update((p, n) for p, n in conn.execute(
                    sa.select(table.c.pool_id, table.c.node_id).distinct().where(
                        table.c.job_key == job_key)))
        if job is not None:
            if job["pool_key"]:
                nodes.update((job["pool_key"], n.node_id)
                             for n in self.ctx.pool_manager.nodes_of(job["pool_key"]))
            rel = posixpath.join("workitems", job["id"])
            await self.files.remove_dirs((p, n, rel) for p, n in sorted(nodes))
        with self.ctx.store.begin() as conn:
            row = Store.fetch_one(conn, jobs, key=job_key)
            for table in (tasks, task_deps, task_dep_ranges, subtasks):
                conn.execute(table.delete().where(table.c.job_key == job_key))
            conn.execute(job_nodes.delete().where(job_nodes.c.job_key == job_key))
            conn.execute(jobs.delete().where(jobs.c.key == job_key))
            self.forget_active()
        self.preparation.failed_nodes.pop(job_key, None)
        if row is not None:
            self.auto_pools.release(auto_pools.owned(loads(row["status"])))

    def task_counts(self, job_id: str) -> dict[str, Any]:
        """Return the job's task counts ("Job - Get Task Counts").

        One row read, whatever the job's size: the store keeps the counts as tasks are
        added, change state and are deleted (:mod:`hpcbatch.store.task_counts`).

        Parameters
        ----------
        job_id
            The job's id.

        Returns
        -------
        dict
            ``{"taskCounts": {active, running, completed, succeeded, failed},
            "taskSlotCounts": {...}}``; running includes preparing, completed is
            succeeded + failed (failed: completed with a result other than success).

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        """
        with self.ctx.store.read() as conn:
            got = task_counts.read_one(conn, job_id.lower())  # the job's key
            if got is None:  # no such job (JobNotFound), or a store edited by hand
                key = job_row(conn, job_id)["key"]
                got = self._grouped_counts(conn, key)
        counts = {b: got[b] for b in task_counts.BUCKETS}
        slots = {b: got[f"{b}_slots"] for b in task_counts.BUCKETS}
        for c in (counts, slots):
            c["completed"] = c["succeeded"] + c["failed"]
        return {"taskCounts": counts, "taskSlotCounts": slots}

    @staticmethod
    def _grouped_counts(conn: sa.Connection, job_key: str) -> dict[str, int]:
        """The counters computed from the job's tasks (a GROUP BY: O(tasks))."""
        got = dict.fromkeys(task_counts.COLUMNS, 0)
        stmt = (sa.select(tasks.c.state, tasks.c.result, sa.func.count(),
                          sa.func.sum(tasks.c.required_slots))
                .where(tasks.c.job_key == job_key)
                .group_by(tasks.c.state, tasks.c.result))
        for state, result, n, s in conn.execute(stmt):
            if state in TASK_HOLDS_NODE:
                bucket = "running"
            elif state == TaskState.completed:
                bucket = "succeeded" if result == TaskExecutionResult.success else "failed"
            else:
                bucket = "active"
            got[bucket] += n
            got[f"{bucket}_slots"] += s or 0
        return got

    def after_completions(
            self, conn: sa.Connection,
            ended: Sequence[tuple[Run | Completion, bool, dependencies.Ending]]) -> None:
        """Apply what completed tasks mean for their dependents and their jobs.

        The one completion path: the dispatcher calls it for runs that ended,
        Task - Terminate for an active task it completes. Dependents are
        re-evaluated; then, per job: a job manager's completion
        with ``killJobOnCompletion`` terminates the job (``JMComplete``); a
        failure whose exit condition has a ``jobAction`` acts on the job when
        ``onTaskFailure`` is ``performexitoptionsjobaction`` (``TaskFailed``);
        ``onAllTasksComplete`` ``terminatejob`` terminates a job with no task
        left active or running (``AllTasksComplete``).

        Parameters
        ----------
        conn
            The transaction that recorded the completions (state ``completed``
            and ``satisfies`` written already).
        ended
            ``(task, succeeded, ending)`` per completed task: its run or
            :class:`~hpcbatch.core.runs.Completion`, whether it succeeded, and
            its dependency and job actions (:func:`hpcbatch.batch.dependencies.task_ending`).
        """
        by_job: dict[str, list[tuple[Run | Completion, bool, dependencies.Ending]]] = {}
        for item in ended:
            if self._hooks.get(item[0].job_key) is not False or item[0].is_manager:
                by_job.setdefault(item[0].job_key, []).append(item)
        for job_key, items in by_job.items():
            job = Store.fetch_one(conn, jobs, key=job_key)
            if job is None:
                continue
            spec = loads(job["spec"])
            self._hooks[job_key] = bool(
                spec.get("usesTaskDependencies")
                or spec.get("onTaskFailure") == "performexitoptionsjobaction"
                or spec.get("onAllTasksComplete") == "terminatejob")
            if spec.get("usesTaskDependencies"):
                done = [{"key": r.task_key, "int_id": r.int_id} for r, _, _ in items]
                self.tasks.resolve_dependencies(conn, job_key, self.tasks.dependents(conn, job_key, done))
            if job["state"] not in JOB_OPEN_FOR_TASKS:
                continue
            decided = dependencies.job_action_after(
                ((ok, run.is_manager, run.kill_job_on_completion, ending.job_action)
                 for run, ok, ending in items), on_task_failure=spec.get("onTaskFailure"))
            action, reason = decided or (None, None)
            if (action is None and spec.get("onAllTasksComplete") == "terminatejob"
                    and self._all_tasks_complete(conn, job_key)):
                action, reason = "terminate", "AllTasksComplete"
            if action == "terminate":
                self.begin_terminate(conn, job, reason or "TaskFailed")
            elif action == "disable":
                self.begin_disable(conn, job, "requeue")

    def expire(self) -> None:
        """Terminate jobs past their ``constraints.maxWallClockTime`` (``MaxWallClockTimeExpiry``)."""
        now = utcnow()
        with self.ctx.store.begin() as conn:
            rows = mappings(conn.execute(sa.select(jobs).where(
                jobs.c.state.in_(sorted(JOB_OPEN_FOR_TASKS)))))
            for row in rows:
                limit = (loads(row["spec"]).get("constraints") or {}).get("maxWallClockTime")
                if not limit:
                    continue
                constraints = JobSpec.model_validate(loads(row["spec"])).constraints
                wall = constraints.max_wall_clock_time if constraints else None
                created = datetime.strptime(loads(row["status"])["creationTime"],
                                            "%Y-%m-%dT%H:%M:%S.%fZ")
                if wall is not None and wall < UNLIMITED and now - created >= wall:
                    self.begin_terminate(conn, row, "MaxWallClockTimeExpiry")
