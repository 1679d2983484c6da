"""Job schedules: Batch's timing rules for creating jobs, pure and with an injectable clock.

A job schedule ("Scheduled jobs" in the Batch documentation; REST "Add a job
schedule", ``JobScheduleAddParameter``) pairs a :class:`Schedule` with a job
specification. The rules, from the REST reference of ``Schedule``
(api-version 2025-06-01):

* ``doNotRunUntil`` -- the earliest time any job may be created; without it the
  schedule is ready at once (from its creation time).
* ``recurrenceInterval`` -- the interval between the start times of two
  successive jobs. Without it the schedule does not recur: one job is created
  within ``startWindow`` after ``doNotRunUntil``, and the schedule completes as
  soon as that job finishes. At least 1 minute.
* At most one active job at any time: if a job is due while the previous one
  is still running, the new job is not created until the previous finishes;
  if that does not happen within the ``startWindow`` of the new recurrence, no
  job is created for that interval.
* ``startWindow`` -- the interval, from the time the schedule says a job
  should be created, within which it must be created; otherwise the
  opportunity is lost until the next recurrence. A job due in one recurrence
  interval is never carried into the next, so a ``startWindow`` longer than
  the recurrence interval is the same as an infinite one (the default). At
  least 1 minute.
* ``doNotRunAfter`` -- no job is created after it; the schedule completes as
  soon as it has passed and no job under it is active. Without it a recurring
  schedule stays active until terminated.

So the recurrences of a recurring schedule lie on a fixed grid,
``anchor + k * recurrenceInterval`` (``anchor`` = ``doNotRunUntil`` or the
schedule's creation time), and each one may be served only inside
``[due, min(due + startWindow, next due))``. A job that started late does not
shift the grid. Jobs are named ``{scheduleId}:job-{n}`` (:func:`job_id_for`).

Everything here is pure: the service passes the time (or a
:class:`ScheduleClock`) and the schedule's state, and gets back a
:class:`ScheduleDecision` -- create a job, wait, or complete the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, Field

from hpcbatch.batch.models import (
    BatchId,
    DisplayName,
    IsoString,
    MetadataItem,
    Time,
    WireModel,
    within_unlimited,
)

__all__ = [
    "MIN_INTERVAL",
    "SYSTEM_CLOCK",
    "JobScheduleSpec",
    "ManualClock",
    "Schedule",
    "ScheduleClock",
    "ScheduleDecision",
    "ScheduleState",
    "SystemClock",
    "due",
    "evaluate",
    "job_id_for",
    "next_run_time",
]

MIN_INTERVAL = timedelta(minutes=1)
"""Batch's minimum ``recurrenceInterval`` and ``startWindow`` (1 minute)."""


def _utc(value: datetime) -> datetime:
    """Batch's times are UTC: a naive time is taken as UTC, an aware one converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcTime = Annotated[Time, AfterValidator(_utc)]
def _at_least_a_minute(value: timedelta) -> timedelta:
    if value < MIN_INTERVAL:
        raise ValueError(
            f"must be at least 1 minute (PT1M), not {value}; "
            "Batch rejects a shorter interval with 400 (Bad Request)"
        )
    return value


Interval = Annotated[timedelta, IsoString, Field(strict=False), AfterValidator(_at_least_a_minute),
                     AfterValidator(within_unlimited)]


class Schedule(WireModel):
    """When a job schedule creates jobs (``Schedule``); all times UTC.

    Attributes
    ----------
    do_not_run_until
        ``doNotRunUntil``: earliest time any job may be created (default: at once).
    do_not_run_after
        ``doNotRunAfter``: no job is created after this time.
    start_window
        ``startWindow``: how long after a job is due it may still be created
        (default infinite; at least 1 minute).
    recurrence_interval
        ``recurrenceInterval``: interval between the start times of successive
        jobs (default: no recurrence, one job; at least 1 minute).
    """

    do_not_run_until: UtcTime | None = None
    do_not_run_after: UtcTime | None = None
    start_window: Interval | None = None
    recurrence_interval: Interval | None = None


class JobScheduleSpec(WireModel):
    """The body of "Add a job schedule" (``POST /jobschedules``, ``JobScheduleAddParameter``).

    ``job_specification`` is the ``JobSpecification`` of the jobs the schedule
    creates (``poolInfo``, ``jobManagerTask`` ...); the service validates it as
    a job specification. Unknown properties are an error naming them.
    """

    id: BatchId
    display_name: DisplayName | None = None
    schedule: Schedule
    job_specification: dict[str, Any]
    metadata: list[MetadataItem] | None = None


def job_id_for(schedule_id: str, n: int) -> str:
    """The ID Batch gives the ``n``-th job created by a job schedule: ``{scheduleId}:job-{n}``.

    Parameters
    ----------
    schedule_id
        The job schedule's ID.
    n
        1 for the schedule's first job, 2 for the next ...

    Returns
    -------
    str
        ``"myschedule:job-1"`` for ``("myschedule", 1)``.

    Raises
    ------
    ValueError
        ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"job number must be at least 1, not {n}")
    return f"{schedule_id}:job-{n}"


# ------------------------------------------------------------------------ clock


@runtime_checkable
class ScheduleClock(Protocol):
    """Where the schedule evaluator gets the time from (inject one in tests)."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)``."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to, for tests and simulations.

    Parameters
    ----------
    start
        Its initial time (a naive time is taken as UTC).
    """

    def __init__(self, start: datetime) -> None:
        self._now = _utc(start)

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` (must not be negative); returns the new time."""
        if delta < timedelta(0):
            raise ValueError(f"a clock cannot go back ({delta})")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not earlier than now)."""
        when = _utc(when)
        if when < self._now:
            raise ValueError(f"a clock cannot go back (from {self._now} to {when})")
        self._now = when


SYSTEM_CLOCK = SystemClock()


# ------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class ScheduleState:
    """What the service knows of a job schedule's jobs.

    Attributes
    ----------
    created
        The schedule's ``creationTime``.
    last_run
        When the schedule's most recent job was created (``None``: none yet).
    jobs_created
        How many jobs the schedule has created (the next is ``jobs_created + 1``).
    active_job
        A job created by the schedule has not completed yet.
    """

    created: datetime
    last_run: datetime | None = None
    jobs_created: int = 0
    active_job: bool = False


@dataclass(frozen=True)
class ScheduleDecision:
    """What to do with a job schedule now.

    Attributes
    ----------
    action
        ``"create"`` a job now (``job_number``), ``"wait"``, or ``"complete"``
        the schedule (move it to the completed state).
    next_run_time
        The schedule's ``executionInfo.nextRunTime`` after this decision: when
        the next job is due (``None``: no further job).
    job_number
        With ``"create"``: the new job's number, for :func:`job_id_for`.
    wake_at
        When the decision may change with nothing else happening (evaluate
        again then); ``None``: only a job's completion can change it.
    reason
        Why, in words (for logs).
    """

    action: Literal["create", "wait", "complete"]
    next_run_time: datetime | None
    job_number: int | None = None
    wake_at: datetime | None = None
    reason: str = ""


def _window(
    schedule: Schedule, *, created: datetime, last_run: datetime | None, now: datetime
) -> tuple[datetime, datetime | None] | None:
    """The earliest recurrence not yet served whose window is open at (or after) ``now``.

    Returns ``(due, window_end)`` (``window_end`` ``None`` = never closes), or
    ``None`` when the schedule will create no further job. ``doNotRunAfter`` is
    applied by the callers.
    """
    anchor = _utc(schedule.do_not_run_until) if schedule.do_not_run_until else _utc(created)
    window = schedule.start_window
    interval = schedule.recurrence_interval
    if interval is None:  # one job, within startWindow after doNotRunUntil
        if last_run is not None:
            return None
        end = anchor + window if window is not None else None
        if end is not None and now >= end:
            return None
        return anchor, end
    # recurring: recurrence k is due at anchor + k * interval and may be served
    # until min(due + startWindow, next due); an unserved one is never carried on
    k = 0
    if last_run is not None and _utc(last_run) >= anchor:
        k = math.floor((_utc(last_run) - anchor) / interval) + 1
    if now >= anchor:
        k = max(k, math.floor((now - anchor) / interval))
    span = interval if window is None else min(window, interval)
    due_at = anchor + k * interval
    if now >= due_at + span:  # this one's window closed unserved
        due_at += interval
    return due_at, due_at + span


def next_run_time(
    schedule: Schedule, *, created: datetime, last_run: datetime | None, now: datetime
) -> datetime | None:
    """When the schedule's next job is due (its ``executionInfo.nextRunTime``).

    Implements the timing of ``Schedule`` (Batch REST reference): the next
    recurrence not yet served whose ``startWindow`` has not closed at ``now``,
    ignoring the one-active-job rule (see :func:`due`).

    Parameters
    ----------
    schedule
        The job schedule's schedule.
    created
        The job schedule's creation time (the anchor without ``doNotRunUntil``).
    last_run
        When its most recent job was created; ``None`` if none yet.
    now
        The current time.

    Returns
    -------
    datetime or None
        The due time, UTC; at or before ``now`` when a job is due now (its
        window still open). ``None`` when no further job will be created: the
        one job of a non-recurring schedule was created or its window missed,
        or ``doNotRunAfter`` is past or earlier than the next recurrence.
    """
    now = _utc(now)
    found = _window(schedule, created=created, last_run=last_run, now=now)
    if found is None:
        return None
    due_at, _end = found
    deadline = schedule.do_not_run_after
    if deadline is not None and (now > deadline or due_at > deadline):
        return None
    return due_at


def due(schedule: Schedule, state: ScheduleState, now: datetime) -> ScheduleDecision:
    """Decide what a job schedule does at ``now``: create a job, wait, or complete.

    Implements Batch's rules for ``Schedule`` (REST reference; "Scheduled jobs"):
    a job is created when one is due, its ``startWindow`` is open, ``now`` is
    not after ``doNotRunAfter`` and no job of the schedule is active; a due job
    blocked by an active one is created when that job completes, if still
    within the window, else that recurrence is skipped. A non-recurring
    schedule completes when its job completes (or its window passes unserved);
    any schedule completes once ``doNotRunAfter`` has passed and no job is
    active.

    Parameters
    ----------
    schedule
        The job schedule's schedule.
    state
        What the service knows of its jobs.
    now
        The current time (naive = UTC).

    Returns
    -------
    ScheduleDecision
    """
    now = _utc(now)
    deadline = schedule.do_not_run_after
    found = _window(schedule, created=state.created, last_run=state.last_run, now=now)
    if found is not None and deadline is not None and found[0] > deadline:
        found = None
    if found is not None and deadline is not None and now > deadline:
        found = None
    recurring = schedule.recurrence_interval is not None

    if state.active_job:
        if found is None:
            return ScheduleDecision("wait", None, reason="waiting for the active job to complete")
        due_at, end = found
        if due_at > now:
            return ScheduleDecision("wait", due_at, wake_at=due_at, reason="next job not due yet")
        wake = end if deadline is None or end is None else min(end, deadline)
        return ScheduleDecision(
            "wait",
            due_at,
            wake_at=wake,
            reason="a job is due but the previous job is still active",
        )

    if found is None:
        if not recurring and state.last_run is not None:
            return ScheduleDecision("complete", None, reason="its job has completed")
        if deadline is not None and now >= deadline:
            return ScheduleDecision("complete", None, reason="doNotRunAfter has passed")
        anchor = _utc(schedule.do_not_run_until or state.created)
        if (
            not recurring
            and schedule.start_window is not None
            and now >= anchor + schedule.start_window
        ):
            # the one chance went by
            return ScheduleDecision(
                "complete", None, reason="the start window passed without a job"
            )
        # no job can come before doNotRunAfter: the schedule completes then
        return ScheduleDecision(
            "wait", None, wake_at=deadline, reason="no job due before doNotRunAfter"
        )

    due_at, _end = found
    if due_at > now:
        return ScheduleDecision("wait", due_at, wake_at=due_at, reason="next job not due yet")
    # after this job, the next recurrence is strictly later: the grid moves on
    following = next_run_time(schedule, created=state.created, last_run=now, now=now)
    wake = (
        following
        if following is not None
        else (deadline if deadline is not None and recurring else None)
    )
    return ScheduleDecision(
        "create", following, job_number=state.jobs_created + 1, wake_at=wake, reason="a job is due"
    )


def evaluate(
    schedule: Schedule, state: ScheduleState, clock: ScheduleClock = SYSTEM_CLOCK
) -> ScheduleDecision:
    """:func:`due` at the time ``clock`` says (the service's entry point).

    Parameters
    ----------
    schedule, state
        As for :func:`due`.
    clock
        The time source (:class:`ManualClock` in tests).
    """
    return due(schedule, state, clock.now())
