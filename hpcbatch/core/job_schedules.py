"""Job schedules in the service: storage, operations and the loop that creates their jobs.

Implements "Schedule jobs" / "Job Schedule - Add, Get, List, Enable, Disable,
Terminate, Delete" and "Job - List From Job Schedule". The timing rules are
pure (:mod:`hpcbatch.batch.schedules`); this module keeps schedules durable, asks
those rules once a second (the clock is injectable) and creates the jobs,
named ``{scheduleId}:job-{n}`` as Batch names them, through the service's
own job creation.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import defaults, schedules
from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    HpcbatchError,
    exists,
    not_found,
)
from hpcbatch.batch.models import JobSpec
from hpcbatch.batch.states import (
    JOB_SCHEDULE_CLOSED,
    JobScheduleState,
    JobState,
    Kind,
    transition,
)
from hpcbatch.batch.wire import iso, new_etag
from hpcbatch.core import auto_pools
from hpcbatch.core.auto_pools import AutoPools
from hpcbatch.core.rows import returned_spec
from hpcbatch.core.transitions import check
from hpcbatch.store.database import Store, dumps, job_schedules, jobs, loads, mappings

if TYPE_CHECKING:
    from hpcbatch.core.context import ServiceContext
    from hpcbatch.core.jobs import Jobs

log = logging.getLogger(__name__)



def _parse(text: str) -> datetime:
    """Parse a time this module wrote (:func:`hpcbatch.batch.wire.iso`) as an aware UTC datetime."""
    return datetime.fromisoformat(text)


class JobSchedules:
    """The job schedules of a service.

    Parameters
    ----------
    ctx
        The service context.
    jobs
        Creates, terminates and deletes the schedules' jobs.
    clock
        Where "now" comes from; tests pass a :class:`hpcbatch.batch.schedules.ManualClock`.
    """

    def __init__(self, ctx: ServiceContext, jobs: Jobs,
                 clock: schedules.ScheduleClock | None = None) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.auto_pools = jobs.auto_pools
        self.clock = clock or schedules.SystemClock()

    # ------------------------------------------------------------- operations

    def _row(self, conn: sa.Connection, schedule_id: str) -> Mapping[str, Any]:
        row = Store.fetch_one(conn, job_schedules, key=schedule_id.lower())
        if row is None:
            raise not_found("JobSchedule", schedule_id)
        return row

    def add(self, body: Mapping[str, Any]) -> str:
        """Add a job schedule ("Job Schedule - Add").

        Raises
        ------
        BadRequestError
            Invalid schedule or job specification (named property).
        ConflictError
            ``JobScheduleExists``; ``JobWithSameIdExists`` (a job has the ID).
        """
        spec = schedules.JobScheduleSpec.from_wire(body, what="job schedule")
        job_spec = dict(spec.job_specification)
        self.jobs.check_release_task(
            JobSpec.from_wire({**job_spec, "id": "validate"}, what="jobSpecification"),
            "jobSpecification.")
        now = self.clock.now()
        with self.ctx.store.begin() as conn:
            if Store.fetch_one(conn, job_schedules, key=spec.id.lower()) is not None:
                raise exists("JobSchedule", spec.id)
            if Store.fetch_one(conn, jobs, key=spec.id.lower()) is not None:
                raise ConflictError(  # Batch: a job and a job schedule cannot share an ID
                    f"A job with the ID {spec.id} exists; a job and a job schedule cannot "
                    "have the same ID.", code="JobWithSameIdExists",
                    values={"JobScheduleId": spec.id})
            self.jobs.check_job_quota(conn)
            status: dict[str, Any] = {"creationTime": iso(now), "stateTransitionTime": iso(now),
                      "lastModified": iso(now), "eTag": new_etag(), "jobsCreated": 0,
                      "lastRun": None, "executionInfo": {}}
            conn.execute(job_schedules.insert().values(
                key=spec.id.lower(), id=spec.id, seq=self.ctx.store.next_seq(conn, "schedule"),
                state=JobScheduleState.active, spec=dumps(spec.to_wire()), status=dumps(status)))
        self.ctx.background(self.tick())
        return spec.id

    UPDATABLE = ("schedule", "jobSpecification", "metadata")
    """The properties "Job Schedule - Patch/Update" change."""

    def update(self, schedule_id: str, body: Mapping[str, Any], *, replace: bool = False) -> None:
        """Change a schedule ("Job Schedule - Patch"; with ``replace``, "Job Schedule - Update").

        Patch replaces the properties the body names (``schedule``,
        ``jobSpecification``, ``metadata``) and keeps the others. Update (PUT)
        replaces all three: ``schedule`` and ``jobSpecification`` are required and
        an absent ``metadata`` is removed. As in Batch, a change applies to the
        jobs created after it; the schedule's current job is left as it is, and a
        new ``schedule`` is read at the next tick (its ``nextRunTime`` follows).

        Parameters
        ----------
        schedule_id
            The job schedule's ID.
        body
            ``JobSchedulePatchParameter`` / ``JobScheduleUpdateParameter`` wire JSON.
        replace
            PUT semantics (Update) instead of PATCH semantics (Patch).

        Raises
        ------
        BadRequestError
            ``InvalidRequestBody``: another property, a missing required one, or an
            invalid value (named).
        ConflictError
            ``JobScheduleCompleted`` / ``JobScheduleBeingDeleted`` /
            ``JobScheduleBeingTerminated`` for a schedule that can no longer change.
        NotFoundError
            ``JobScheduleNotFound``.
        """
        if not isinstance(body, Mapping):
            raise BadRequestError("The request body must be a JSON object.")
        extra = sorted(set(body) - set(self.UPDATABLE))
        if extra:
            raise BadRequestError(
                f"The property {extra[0]} cannot be updated on a job schedule; updatable: "
                + ", ".join(self.UPDATABLE) + ".", code="InvalidRequestBody",
                values={"PropertyName": extra[0]})
        if replace:
            for name in ("schedule", "jobSpecification"):
                if body.get(name) is None:
                    raise BadRequestError(f"The property {name} is required.",
                                          code="InvalidRequestBody", values={"PropertyName": name})
        with self.ctx.store.begin() as conn:
            row = self._row(conn, schedule_id)
            code = {JobScheduleState.completed: "JobScheduleCompleted",
                    JobScheduleState.deleting: "JobScheduleBeingDeleted",
                    JobScheduleState.terminating: "JobScheduleBeingTerminated"}.get(row["state"])
            if code is not None:
                raise ConflictError(f"The job schedule is {row['state']}.", code=code)
            wire = loads(row["spec"])
            if replace:
                wire.pop("metadata", None)
            wire.update({k: v for k, v in body.items() if v is not None})
            spec = schedules.JobScheduleSpec.from_wire(wire, what="job schedule")
            self.jobs.check_release_task(
                JobSpec.from_wire({**spec.job_specification, "id": "validate"},
                                  what="jobSpecification"), "jobSpecification.")
            status = loads(row["status"])
            now = self.clock.now()
            status.update(lastModified=iso(now), eTag=new_etag())
            if row["state"] == JobScheduleState.disabled and "schedule" in body:
                # An active schedule's next tick follows the new schedule; a disabled one
                # has no tick until enabled, and its nextRunTime must not stay the old
                # schedule's ("if the schedule is disabled, no Job will be created at
                # nextRunTime unless the Job is enabled before then").
                next_run = schedules.due(spec.schedule, self._schedule_state(conn, status),
                                         now).next_run_time
                if next_run is not None:
                    status["executionInfo"]["nextRunTime"] = iso(next_run)
                else:
                    status["executionInfo"].pop("nextRunTime", None)
            Store.update(conn, job_schedules, {"key": row["key"]}, spec=dumps(spec.to_wire()),
                         status=dumps(status))
        self.ctx.background(self.tick())

    def _wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = returned_spec(row)
        if isinstance(out.get("jobSpecification"), dict):  # Batch's defaults filled in
            defaults.fill_job(out["jobSpecification"])
        status = loads(row["status"])
        recent = status["executionInfo"].get("recentJob")
        if recent:  # the service's URL now: a restart may have moved it (another port)
            recent["url"] = f"{self.ctx.base_url}/jobs/{recent['id']}"
        out.update({"url": f"{self.ctx.base_url}/jobschedules/{row['id']}",
                    "eTag": status["eTag"], "lastModified": status["lastModified"],
                    "creationTime": status["creationTime"], "state": row["state"],
                    "stateTransitionTime": status["stateTransitionTime"],
                    "executionInfo": status["executionInfo"]})
        if "previousState" in status:
            out["previousState"] = status["previousState"]
        return out

    def get(self, schedule_id: str) -> dict[str, Any]:
        """Return a job schedule ("Job Schedule - Get"). Raises ``JobScheduleNotFound``."""
        with self.ctx.store.read() as conn:
            return self._wire(self._row(conn, schedule_id))

    def list(self) -> list[dict[str, Any]]:
        """List job schedules ("Job Schedule - List")."""
        with self.ctx.store.read() as conn:
            rows = mappings(conn.execute(sa.select(job_schedules).order_by(job_schedules.c.seq)))
            return [self._wire(r) for r in rows]

    def jobs_of(self, schedule_id: str) -> builtins.list[dict[str, Any]]:
        """List the jobs a schedule created ("Job - List From Job Schedule")."""
        with self.ctx.store.read() as conn:
            row = self._row(conn, schedule_id)
            prefix = f"{row['key']}:job-"
            rows = mappings(conn.execute(sa.select(jobs).where(jobs.c.key.startswith(prefix, autoescape=True))
                                .order_by(jobs.c.seq)))
        return [self.jobs.job_wire(r) for r in rows]

    def _set_state(self, conn: sa.Connection, row: Mapping[str, Any], state: JobScheduleState) -> None:
        """Move a schedule to ``state``; setting the state it has already writes nothing."""
        if row["state"] == state:
            return
        now = iso(self.clock.now())
        status = loads(row["status"])
        status.update(previousState=row["state"], stateTransitionTime=now, lastModified=now,
                      eTag=new_etag())
        if state == JobScheduleState.completed:
            status["executionInfo"]["endTime"] = now
            status["executionInfo"].pop("nextRunTime", None)
        Store.update(conn, job_schedules, {"key": row["key"]},
                     state=check(Kind.jobschedule, row["state"], state), status=dumps(status))

    def disable(self, schedule_id: str) -> None:
        """Disable a schedule ("Job Schedule - Disable"): it creates no job until enabled.

        Disabling a disabled schedule changes nothing (its ``previousState``,
        ``stateTransitionTime`` and eTag stay).

        Raises
        ------
        ConflictError
            ``JobScheduleNotActive`` when the schedule is neither active nor disabled.
        """
        with self.ctx.store.begin() as conn:
            row = self._row(conn, schedule_id)
            if row["state"] not in (JobScheduleState.active, JobScheduleState.disabled):
                raise ConflictError(f"The job schedule is {row['state']}.",
                                    code="JobScheduleNotActive")
            self._set_state(conn, row, JobScheduleState.disabled)

    def enable(self, schedule_id: str) -> None:
        """Enable a disabled schedule ("Job Schedule - Enable")."""
        with self.ctx.store.begin() as conn:
            row = self._row(conn, schedule_id)
            if row["state"] != JobScheduleState.disabled:
                raise ConflictError(f"The job schedule is {row['state']}, not disabled.",
                                    code="JobScheduleNotDisabled")
            self._set_state(conn, row, JobScheduleState.active)
        self.ctx.background(self.tick())

    def terminate(self, schedule_id: str) -> None:
        """Terminate a schedule ("Job Schedule - Terminate"): its active job is terminated
        (``TerminateJobSchedule``); the schedule is ``terminating`` until that job has
        completed, then ``completed`` (REST JobScheduleState.terminating: "the
        termination operation is still in progress"). A schedule already terminating,
        completed or deleting is left as it is."""
        with self.ctx.store.begin() as conn:
            row = self._row(conn, schedule_id)
            if row["state"] in JOB_SCHEDULE_CLOSED:
                return
            self._set_state(conn, row, JobScheduleState.terminating)
            self._end_jobs(conn, row, delete=False)
        if not self._close_if_done(row["key"]):
            self.ctx.background(self._finish_closing(row["key"]))

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule and its jobs ("Job Schedule - Delete").

        The schedule is ``deleting`` until its jobs and their tasks are deleted,
        then its record goes (REST JobScheduleState.deleting: "The Job Schedule
        will be deleted when all Jobs and Tasks under the Job Schedule have been
        deleted"). Deleting a deleting schedule changes nothing.
        """
        with self.ctx.store.begin() as conn:
            row = self._row(conn, schedule_id)
            if row["state"] == JobScheduleState.deleting:
                return
            self._set_state(conn, row, JobScheduleState.deleting)
            self._end_jobs(conn, row, delete=True)
        if not self._close_if_done(row["key"]):
            self.ctx.background(self._finish_closing(row["key"]))

    async def _finish_closing(self, key: str, interval_s: float = 0.1) -> None:
        """Wait until a terminating or deleting schedule's jobs are done, then close it."""
        while not self._close_if_done(key):  # noqa: ASYNC110 - polls the store: its jobs end in other requests
            await asyncio.sleep(interval_s)

    def _close_if_done(self, key: str) -> bool:
        """Complete a terminating schedule whose jobs have all completed (or are gone);
        remove the record of a deleting schedule whose jobs are all deleted.

        Returns
        -------
        bool
            True when nothing is left to wait for: the schedule was closed now, or
            is gone, or is in a state with nothing to finish.
        """
        with self.ctx.store.begin() as conn:
            row = Store.fetch_one(conn, job_schedules, key=key)
            if row is None or row["state"] not in (JobScheduleState.terminating,
                                                   JobScheduleState.deleting):
                return True
            deleting = row["state"] == JobScheduleState.deleting
            prefix = f"{key}:job-"
            waited = sa.select(sa.func.count()).select_from(jobs).where(
                jobs.c.key.startswith(prefix, autoescape=True))
            if not deleting:
                waited = waited.where(jobs.c.state != JobState.completed)
            if conn.execute(waited).scalar():
                return False
            if deleting:
                transition(Kind.jobschedule, row["state"], None)
                conn.execute(job_schedules.delete().where(job_schedules.c.key == key))
            else:
                self._set_state(conn, row, JobScheduleState.completed)
        # A jobschedule-lifetime auto pool ends with its schedule (unless keepAlive).
        self.auto_pools.release(auto_pools.owned(loads(row["status"])))
        return True

    def _end_jobs(self, conn: sa.Connection, row: Mapping[str, Any], *, delete: bool) -> None:
        prefix = f"{row['key']}:job-"
        for job in mappings(conn.execute(sa.select(jobs).where(
                jobs.c.key.startswith(prefix, autoescape=True)))):
            if delete:
                if job["state"] != JobState.deleting:
                    self.jobs.set_state(conn, job, JobState.deleting)
                    self.ctx.background(self.jobs.finish_delete(job["key"]))
            else:
                self.jobs.begin_terminate(conn, job, "TerminateJobSchedule")

    # --------------------------------------------------------------- the loop

    async def loop(self, interval_s: float = 1.0) -> None:
        """Create due jobs, once per ``interval_s``."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.tick()
            except Exception:
                log.exception("job schedule pass failed")

    async def tick(self) -> None:
        """Ask every active schedule whether a job is due now; create it or complete it.

        Also closes the schedules whose termination or deletion has nothing left
        to wait for (after a service restart no other task watches them).
        """
        now = self.clock.now()
        with self.ctx.store.read() as conn:
            closing = conn.execute(sa.select(job_schedules.c.key).where(
                job_schedules.c.state.in_([JobScheduleState.terminating,
                                           JobScheduleState.deleting]))).scalars().all()
            rows = mappings(conn.execute(sa.select(job_schedules).where(
                job_schedules.c.state == JobScheduleState.active)))
        for key in closing:
            self._close_if_done(key)
        for row in rows:
            try:
                self._tick_one(row, now)
            except HpcbatchError as exc:
                log.warning("job schedule %s: %s", row["id"], exc)

    @staticmethod
    def _schedule_state(conn: sa.Connection, status: Mapping[str, Any]) -> schedules.ScheduleState:
        """What the service knows of a schedule's jobs (its status record, and whether its
        most recent job is still active), for :func:`hpcbatch.batch.schedules.due`."""
        recent = status["executionInfo"].get("recentJob")
        active = False
        if recent:
            job = Store.fetch_one(conn, jobs, key=recent["id"].lower())
            active = job is not None and job["state"] != JobState.completed
        last_run = status.get("lastRun")
        return schedules.ScheduleState(created=_parse(status["creationTime"]),
                                       last_run=_parse(last_run) if last_run else None,
                                       jobs_created=status["jobsCreated"], active_job=active)

    def _tick_one(self, row: Mapping[str, Any], now: datetime) -> None:
        spec = schedules.JobScheduleSpec.model_validate(loads(row["spec"]))
        status = loads(row["status"])
        with self.ctx.store.read() as conn:
            state = self._schedule_state(conn, status)
        decision = schedules.due(spec.schedule, state, now)
        if decision.action == "create" and decision.job_number is not None:
            job_id = schedules.job_id_for(spec.id, decision.job_number)
            try:
                self._create_job(spec, status, job_id)
            except HpcbatchError as exc:
                # The job cannot be created (its auto pool cannot, the job quota ...): the
                # schedule records why and this recurrence is spent, as a created job
                # would spend it, instead of failing again every tick.
                self._record_error(spec.id, status, job_id, exc)
                status["lastRun"] = iso(now)
                state = schedules.ScheduleState(created=state.created, last_run=now,
                                                jobs_created=state.jobs_created,
                                                active_job=False)
            else:
                status["executionInfo"].pop("schedulingError", None)
                status["jobsCreated"] = decision.job_number
                status["lastRun"] = iso(now)
                status["executionInfo"]["recentJob"] = {
                    "id": job_id, "url": f"{self.ctx.base_url}/jobs/{job_id}"}
                state = schedules.ScheduleState(created=state.created, last_run=now,
                                                jobs_created=decision.job_number,
                                                active_job=True)
            decision = schedules.due(spec.schedule, state, now)
        if decision.next_run_time is not None:
            status["executionInfo"]["nextRunTime"] = iso(decision.next_run_time)
        else:
            status["executionInfo"].pop("nextRunTime", None)
        with self.ctx.store.begin() as conn:
            Store.update(conn, job_schedules, {"key": row["key"]}, status=dumps(status))
            if decision.action == "complete":
                self._set_state(conn, self._row(conn, row["id"]), JobScheduleState.completed)
        if decision.action == "complete":
            self.auto_pools.release(auto_pools.owned(status))

    def _create_job(self, spec: schedules.JobScheduleSpec, status: dict[str, Any],
                    job_id: str) -> None:
        """Create a schedule's job; first its auto pool of lifetime ``jobschedule``, kept in
        ``status`` for the schedule's lifetime (a new one if its user deleted it).

        Raises
        ------
        HpcbatchError
            The job or its auto pool cannot be created.
        """
        pool_info = spec.job_specification.get("poolInfo") or {}
        auto = AutoPools.parse(pool_info.get("autoPoolSpecification"))
        pool_id = None
        if auto is not None and auto.pool_lifetime_option == "jobschedule":
            owned = auto_pools.owned(status)
            if not self.auto_pools.exists(owned):
                owned = status[auto_pools.AUTO_POOL] = self.auto_pools.create(
                    auto, where="jobSpecification.poolInfo.autoPoolSpecification.pool")
            assert owned is not None
            pool_id = str(owned["poolId"])
        self.jobs.add_job(dict(spec.job_specification), schedule_job_id=job_id,
                          schedule_pool_id=pool_id)

    def _record_error(self, schedule_id: str, status: dict[str, Any], job_id: str,
                      exc: HpcbatchError) -> None:
        """Record why a schedule's job could not be created: ``executionInfo.schedulingError``
        (Batch's ``JobSchedulingError`` shape) and a ``JobScheduleErrorEvent``; logged
        once per distinct error, not per tick."""
        error = auto_pools.scheduling_error(exc)
        previous = status["executionInfo"].get("schedulingError")
        status["executionInfo"]["schedulingError"] = error
        if previous is None or (previous.get("code"), previous.get("message")) != \
                (error["code"], error["message"]):
            log.warning("job schedule %s: job %s not created: %s", schedule_id, job_id,
                        exc.message)
        self.ctx.emit("JobScheduleErrorEvent", {"id": schedule_id, "jobId": job_id,
                                                "schedulingError": error})
