"""Job and job schedule operations of :class:`~hpcbatch.client.sdk.BatchClient`: Job - *,
Job Schedule - *, and waiting for a job's tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hpcbatch.client.rest import Json, RestClient, parse_model, wire_models

if TYPE_CHECKING:
    from hpcbatch.batch.models import Job


JOB_STATE_CHECK_S = 1.0
"""How often :meth:`JobOperations.wait_for_tasks` looks, while no task runs and some are
active, whether the job has completed or its active tasks are all blocked (then they never
run)."""

NEVER_RUN_PAGE = 100
"""Tasks a page while :meth:`JobOperations.tasks_that_never_run` reads a job's active tasks
(it stops at the first that may still run)."""


class JobOperations(RestClient):
    """Job and job schedule operations (a mixin of ``BatchClient``)."""

    # --------------------------------------------------------------------- jobs

    def create_job(self, job: Any) -> None:
        """Add a job ("Job - Add"); ``job`` is a :class:`~hpcbatch.batch.models.JobSpec`
        or its JSON."""
        self._request("POST", "/jobs", body=job)

    def get_job(self, job_id: str) -> Job:
        """Return a job ("Job - Get")."""
        return parse_model(wire_models().Job, self.get_job_json(job_id))

    def get_job_json(self, job_id: str) -> Json:
        """:meth:`get_job` as wire JSON."""
        return self._get(f"/jobs/{self._q(job_id)}")

    def list_jobs(self, filter: str | None = None) -> list[Job]:
        """Return jobs ("Job - List")."""
        return [parse_model(wire_models().Job, j) for j in self.list_jobs_json(filter)]

    def list_jobs_json(self, filter: str | None = None,
                       select: str | None = None) -> list[Json]:
        """:meth:`list_jobs` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list("/jobs", {"$filter": filter, "$select": select}))

    def update_job(self, job_id: str, patch: Mapping[str, Any]) -> None:
        """Update a job's mutable properties, e.g. ``{"priority": 100}`` ("Job - Patch")."""
        self._request("PATCH", f"/jobs/{self._q(job_id)}", body=patch)

    def terminate_job(self, job_id: str, terminate_reason: str | None = None) -> None:
        """Terminate a job ("Job - Terminate")."""
        body = {"terminateReason": terminate_reason} if terminate_reason else None
        self._request("POST", f"/jobs/{self._q(job_id)}/terminate", body=body)

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its tasks ("Job - Delete")."""
        self._request("DELETE", f"/jobs/{self._q(job_id)}")

    def disable_job(self, job_id: str, disable_tasks: str = "requeue") -> None:
        """Disable a job ("Job - Disable"); ``disable_tasks``: requeue, terminate or wait."""
        self._request("POST", f"/jobs/{self._q(job_id)}/disable",
                      body={"disableTasks": disable_tasks})

    def enable_job(self, job_id: str) -> None:
        """Enable a disabled job ("Job - Enable")."""
        self._request("POST", f"/jobs/{self._q(job_id)}/enable")

    def list_job_preparation_and_release_task_status(
            self, job_id: str, filter: str | None = None,
            select: str | None = None) -> list[dict[str, Any]]:
        """Per node, the job preparation and release task execution info
        ("Job - List Preparation and Release Task Status"; ``$filter``: ``nodeId eq '...'``)."""
        return list(self._list(f"/jobs/{self._q(job_id)}/jobpreparationandreleasetaskstatus",
                               {"$filter": filter, "$select": select}))

    def get_task_counts(self, job_id: str) -> dict[str, int]:
        """Return ``{active, running, completed, succeeded, failed}`` ("Job - Get Task Counts")."""
        return self._request("GET", f"/jobs/{self._q(job_id)}/taskcounts").json()["taskCounts"]

    def wait_task_counts(self, job_id: str, wait_s: float) -> tuple[dict[str, int], bool]:
        """Return the job's task counts once its tasks have all completed, or after ``wait_s``.

        A long poll (hpcbatch extension of "Job - Get Task Counts": ``Prefer:
        wait=N``): the service answers as soon as the job has no active or
        running task, or after ``wait_s`` seconds with the counts of that moment.

        Parameters
        ----------
        job_id
            The job.
        wait_s
            Seconds the service waits at most (it caps them at 60).

        Returns
        -------
        tuple
            The counts (as :meth:`get_task_counts`), and whether the service
            waited: False from a service that answers at once (it ignores the
            preference), whose caller then paces its own polls.

        Raises
        ------
        BatchError
            ``JobNotFound``.
        """
        resp = self._request("GET", f"/jobs/{self._q(job_id)}/taskcounts",
                             headers={"Prefer": f"wait={wait_s:g}"})
        return resp.json()["taskCounts"], "Preference-Applied" in resp.headers

    # ------------------------------------------------------------ job schedules

    def create_job_schedule(self, job_schedule: Any) -> None:
        """Add a job schedule ("Job Schedule - Add"): ``id``, ``schedule``, ``jobSpecification``."""
        self._request("POST", "/jobschedules", body=job_schedule)

    def patch_job_schedule(self, job_schedule_id: str, patch: Mapping[str, Any]) -> None:
        """Change a schedule's ``schedule``, ``jobSpecification`` or ``metadata``
        ("Job Schedule - Patch"); the jobs it creates from now on follow the change."""
        self._request("PATCH", f"/jobschedules/{self._q(job_schedule_id)}", body=patch)

    def update_job_schedule(self, job_schedule_id: str, update: Mapping[str, Any]) -> None:
        """Replace a schedule's ``schedule``, ``jobSpecification`` and ``metadata``
        ("Job Schedule - Update"; the first two are required, absent metadata is removed)."""
        self._request("PUT", f"/jobschedules/{self._q(job_schedule_id)}", body=update)

    def get_job_schedule(self, job_schedule_id: str) -> dict[str, Any]:
        """Return a job schedule ("Job Schedule - Get")."""
        return self._get(f"/jobschedules/{self._q(job_schedule_id)}")

    def list_job_schedules(self, filter: str | None = None,
                           select: str | None = None) -> list[dict[str, Any]]:
        """List job schedules ("Job Schedule - List"), with optional OData ``$filter`` and
        ``$select``."""
        return list(self._list("/jobschedules", {"$filter": filter, "$select": select}))

    def list_jobs_from_schedule(self, job_schedule_id: str) -> list[Job]:
        """List the jobs a schedule created ("Job - List From Job Schedule")."""
        return [parse_model(wire_models().Job, j)
                for j in self.list_jobs_from_schedule_json(job_schedule_id)]

    def list_jobs_from_schedule_json(self, job_schedule_id: str,
                                     filter: str | None = None,
                                     select: str | None = None) -> list[Json]:
        """:meth:`list_jobs_from_schedule` as wire JSON (OData ``$filter``, ``$select``)."""
        return list(self._list(f"/jobschedules/{self._q(job_schedule_id)}/jobs",
                               {"$filter": filter, "$select": select}))

    def disable_job_schedule(self, job_schedule_id: str) -> None:
        """Disable a job schedule ("Job Schedule - Disable")."""
        self._request("POST", f"/jobschedules/{self._q(job_schedule_id)}/disable")

    def enable_job_schedule(self, job_schedule_id: str) -> None:
        """Enable a job schedule ("Job Schedule - Enable")."""
        self._request("POST", f"/jobschedules/{self._q(job_schedule_id)}/enable")

    def terminate_job_schedule(self, job_schedule_id: str) -> None:
        """Terminate a job schedule and its active job ("Job Schedule - Terminate")."""
        self._request("POST", f"/jobschedules/{self._q(job_schedule_id)}/terminate")

    def delete_job_schedule(self, job_schedule_id: str) -> None:
        """Delete a job schedule and its jobs ("Job Schedule - Delete")."""
        self._request("DELETE", f"/jobschedules/{self._q(job_schedule_id)}")

    def tasks_that_never_run(self, job_id: str) -> list[Json] | None:
        """A job's active tasks when none of them can ever run, else None.

        Batch leaves a task ``active`` for good when a task it depends on ended
        with ``dependencyAction`` ``block`` (its ``dependencyState`` is
        ``blocked``), and so the tasks waiting for it (``waiting``). Call this
        when no task of the job runs: if every active task is blocked or
        waiting, and one at least blocked, none will ever run. The active tasks
        are read a page of :data:`NEVER_RUN_PAGE` at a time, and the reading
        stops at the first that may still run: a long queue costs one page.

        Parameters
        ----------
        job_id
            The job.

        Returns
        -------
        list of dict or None
            Every active task (wire JSON, with its ``dependencyState``: ``state``
            and ``reason``); None when one of them may still run.

        Raises
        ------
        BatchError
            ``JobNotFound``.
        """
        left: list[Json] = []
        for task in self._list(f"/jobs/{self._q(job_id)}/tasks",
                               {"$filter": "state eq 'active'", "maxresults": NEVER_RUN_PAGE}):
            if (task.get("dependencyState") or {}).get("state") not in ("blocked", "waiting"):
                return None
            left.append(task)
        if any(t["dependencyState"]["state"] == "blocked" for t in left):
            return left
        return None

    def wait_for_tasks(self, job_id: str, timeout_s: float = 3600.0, poll_interval_s: float = 0.2,
                       progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
        """Wait until every task of a job has completed, or the job has.

        Each request is a long poll (:meth:`wait_task_counts`): the call returns
        as soon as the job's last task completes, not at the next poll. A job
        that completes (terminated by Job - Terminate, a task's ``jobAction``,
        its ``maxWallClockTime`` ...) with tasks still active never runs them
        (REST "Job - Terminate": "they will remain in the active state"): the
        call then returns with ``active`` above 0 instead of waiting for them; so
        it does when nothing runs and every active task is blocked by a
        dependency or waits for such tasks (:meth:`tasks_that_never_run`).

        Parameters
        ----------
        job_id
            The job.
        timeout_s
            Seconds to wait at most.
        poll_interval_s
            Longest wait of one request (seconds): ``progress`` is called at
            least this often. Against a service without the long poll, the
            pause between two polls.
        progress
            Called with the task counts after every request (for progress bars).

        Returns
        -------
        dict
            Final task counts (``succeeded``, ``failed`` ...); ``active`` is above
            0 only when those tasks will never run: the job completed, or they
            are blocked.

        Raises
        ------
        TimeoutError
            After ``timeout_s`` seconds, naming the counts.
        BatchError
            ``JobNotFound``.
        """
        from hpcbatch.batch.states import JobState

        deadline = time.monotonic() + timeout_s
        job_looked = -JOB_STATE_CHECK_S
        while True:
            # The service answers as the last task completes, or after one interval
            # (progress is called at least that often).
            remaining = deadline - time.monotonic()
            counts, waited = self.wait_task_counts(
                job_id, max(0.001, min(poll_interval_s, remaining)))
            if progress:
                progress(counts)
            if counts["active"] == 0 and counts["running"] == 0:
                return counts
            if counts["running"] == 0 and time.monotonic() - job_looked >= JOB_STATE_CHECK_S:
                job_looked = time.monotonic()  # nothing runs: has the job ended?
                job = self._get(f"/jobs/{self._q(job_id)}", {"$select": "state"})
                if job.get("state") == JobState.completed:
                    return counts
                if self.tasks_that_never_run(job_id) is not None:
                    return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: tasks still not complete after {timeout_s:g} s: "
                                   f"{counts}")
            if not waited:  # a service without the long poll: pace the polls here
                time.sleep(poll_interval_s)
