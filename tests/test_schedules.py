"""Job schedule timing, driven by a manual clock.

Scenarios follow Batch's ``Schedule`` reference (doNotRunUntil, doNotRunAfter,
startWindow, recurrenceInterval) and "Scheduled jobs": one-shot schedules,
recurring ones, one active job at a time, start windows that skip a
recurrence, and the end of a schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hpcbatch.batch.errors import BadRequestError, InvalidPropertyValueError
from hpcbatch.batch.schedules import (
    MIN_INTERVAL,
    JobScheduleSpec,
    ManualClock,
    Schedule,
    ScheduleClock,
    ScheduleState,
    SystemClock,
    due,
    evaluate,
    job_id_for,
    next_run_time,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def simulate(
    schedule: Schedule,
    *,
    until: timedelta,
    duration: timedelta | Callable[[int], timedelta] = 10 * M,
    created: datetime = T0,
    step: timedelta = M,
) -> tuple[list[timedelta], timedelta | None]:
    """Run the service's loop minute by minute with jobs lasting ``duration``.

    Returns the jobs' creation times and the time the schedule completed
    (``None`` if it did not), both relative to T0.
    """
    clock = ManualClock(created)
    state = ScheduleState(created=created)
    starts: list[timedelta] = []
    job_end: datetime | None = None
    while clock.now() - T0 <= until:
        now = clock.now()
        state = replace(state, active_job=job_end is not None and job_end > now)
        decision = evaluate(schedule, state, clock)
        if decision.action == "create":
            assert not state.active_job
            assert decision.job_number == len(starts) + 1
            starts.append(now - T0)
            length = duration(len(starts)) if callable(duration) else duration
            job_end = now + length
            state = replace(state, last_run=now, jobs_created=len(starts), active_job=True)
        elif decision.action == "complete":
            return starts, now - T0
        clock.advance(step)
    return starts, None


# ----------------------------------------------------------------------- naming


def test_job_id_for() -> None:
    assert job_id_for("myschedule", 1) == "myschedule:job-1"
    assert job_id_for("nightly_build", 12) == "nightly_build:job-12"
    with pytest.raises(ValueError, match="at least 1"):
        job_id_for("s", 0)


# ------------------------------------------------------------------- validation


def test_spec_reads_and_writes_batch_json() -> None:
    body = {
        "id": "nightly",
        "displayName": "Nightly run",
        "schedule": {
            "doNotRunUntil": "2025-03-01T09:00:00Z",
            "doNotRunAfter": "2025-03-31T09:00:00Z",
            "startWindow": "PT15M",
            "recurrenceInterval": "PT1H",
        },
        "jobSpecification": {
            "poolInfo": {"poolId": "p"},
            "jobManagerTask": {"id": "jm", "commandLine": "/bin/true"},
        },
        "metadata": [{"name": "owner", "value": "me"}],
    }
    spec = JobScheduleSpec.from_wire(body)
    assert spec.schedule.recurrence_interval == H
    assert spec.schedule.start_window == 15 * M
    assert spec.schedule.do_not_run_until == T0
    assert spec.to_wire() == body


def test_schedule_times_are_utc() -> None:
    naive = Schedule(do_not_run_until=datetime(2025, 3, 1, 9, 0))
    assert naive.do_not_run_until == T0 and naive.do_not_run_until.tzinfo is not None
    paris = Schedule.from_wire({"doNotRunUntil": "2025-03-01T10:00:00+01:00"})
    assert paris.do_not_run_until == T0
    assert paris.to_wire() == {"doNotRunUntil": "2025-03-01T09:00:00Z"}


@pytest.mark.parametrize("field", ["recurrenceInterval", "startWindow"])
@pytest.mark.parametrize("value", ["PT59S", "PT0S", "-PT1H"])
def test_intervals_below_one_minute_are_rejected(field: str, value: str) -> None:
    with pytest.raises(InvalidPropertyValueError) as caught:
        JobScheduleSpec.from_wire(
            {
                "id": "s",
                "schedule": {field: value},
                "jobSpecification": {"poolInfo": {"poolId": "p"}},
            }
        )
    err = caught.value
    assert err.status == 400 and err.code == "InvalidPropertyValue"
    assert err.property_name == f"schedule.{field}"
    assert "at least 1 minute" in err.message


def test_one_minute_is_allowed() -> None:
    schedule = Schedule.from_wire({"recurrenceInterval": "PT1M", "startWindow": "PT1M"})
    assert schedule.recurrence_interval == MIN_INTERVAL == schedule.start_window


def test_unknown_properties_are_named() -> None:
    with pytest.raises(BadRequestError) as caught:
        JobScheduleSpec.from_wire(
            {"id": "s", "schedule": {"recurrence": "PT1H"}, "jobSpecification": {}}
        )
    assert caught.value.code == "InvalidRequestBody"
    assert caught.value.values["PropertyName"] == "schedule.recurrence"
    with pytest.raises(BadRequestError) as caught:
        JobScheduleSpec.from_wire({"id": "s", "schedule": {}, "jobSpecification": {}, "pool": "p"})
    assert caught.value.values["PropertyName"] == "pool"


def test_missing_and_bad_properties() -> None:
    with pytest.raises(BadRequestError) as caught:
        JobScheduleSpec.from_wire({"id": "s", "schedule": {}})
    assert caught.value.code == "MissingRequiredProperty"
    assert caught.value.values["PropertyName"] == "jobSpecification"
    with pytest.raises(InvalidPropertyValueError) as bad_id:
        JobScheduleSpec.from_wire({"id": "no spaces", "schedule": {}, "jobSpecification": {}})
    assert bad_id.value.property_name == "id"
    with pytest.raises(InvalidPropertyValueError) as bad_time:
        Schedule.from_wire({"doNotRunUntil": "tomorrow"})
    assert bad_time.value.property_name == "doNotRunUntil"


# ---------------------------------------------------------------- one-shot jobs


def test_one_shot_runs_at_once_and_completes_with_its_job() -> None:
    schedule = Schedule()
    first = due(schedule, ScheduleState(created=T0), T0)
    assert (first.action, first.job_number, first.next_run_time) == ("create", 1, None)
    running = ScheduleState(created=T0, last_run=T0, jobs_created=1, active_job=True)
    assert due(schedule, running, T0 + 5 * M).action == "wait"
    done = due(schedule, replace(running, active_job=False), T0 + 10 * M)
    assert done.action == "complete"
    assert simulate(schedule, until=3 * H) == ([timedelta(0)], 10 * M)


def test_one_shot_waits_for_do_not_run_until() -> None:
    schedule = Schedule(do_not_run_until=T0 + 2 * H)
    early = due(schedule, ScheduleState(created=T0), T0)
    assert early.action == "wait"
    assert early.next_run_time == early.wake_at == T0 + 2 * H
    assert next_run_time(schedule, created=T0, last_run=None, now=T0) == T0 + 2 * H
    assert due(schedule, ScheduleState(created=T0), T0 + 2 * H).action == "create"
    assert simulate(schedule, until=5 * H) == ([2 * H], 2 * H + 10 * M)


def test_one_shot_start_window_missed() -> None:
    schedule = Schedule(do_not_run_until=T0, start_window=10 * M)
    assert due(schedule, ScheduleState(created=T0), T0 + 9 * M).action == "create"
    late = due(schedule, ScheduleState(created=T0), T0 + 10 * M)  # e.g. the service was down
    assert late.action == "complete" and "start window" in late.reason
    assert next_run_time(schedule, created=T0, last_run=None, now=T0 + 10 * M) is None


def test_one_shot_after_do_not_run_after() -> None:
    schedule = Schedule(do_not_run_until=T0 + 2 * H, do_not_run_after=T0 + H)
    assert next_run_time(schedule, created=T0, last_run=None, now=T0) is None
    waiting = due(schedule, ScheduleState(created=T0), T0)  # it can never run ...
    assert (waiting.action, waiting.next_run_time, waiting.wake_at) == ("wait", None, T0 + H)
    assert (
        due(schedule, ScheduleState(created=T0), T0 + H).action == "complete"
    )  # ... ends at the deadline
    assert simulate(schedule, until=5 * H) == ([], H)


# -------------------------------------------------------------------- recurring


def test_recurring_every_hour() -> None:
    schedule = Schedule(recurrence_interval=H)
    starts, completed = simulate(schedule, until=5 * H + 30 * M)
    assert starts == [0 * H, 1 * H, 2 * H, 3 * H, 4 * H, 5 * H]
    assert completed is None  # no doNotRunAfter: active until terminated
    decision = due(schedule, ScheduleState(created=T0), T0)
    assert (decision.action, decision.next_run_time, decision.wake_at) == ("create", T0 + H, T0 + H)


def test_recurring_from_do_not_run_until() -> None:
    schedule = Schedule(do_not_run_until=T0 + 30 * M, recurrence_interval=H)
    starts, _ = simulate(schedule, until=3 * H)
    assert starts == [30 * M, 90 * M, 150 * M]
    assert next_run_time(schedule, created=T0, last_run=T0 + 30 * M, now=T0 + 31 * M) == T0 + 90 * M


def test_do_not_run_after_stops_and_completes_the_schedule() -> None:
    schedule = Schedule(recurrence_interval=H, do_not_run_after=T0 + 2 * H + 30 * M)
    starts, completed = simulate(schedule, until=6 * H)
    assert starts == [0 * H, 1 * H, 2 * H]
    assert completed == 2 * H + 30 * M  # as soon as the deadline passed with no active job
    last = due(
        schedule,
        ScheduleState(created=T0, last_run=T0 + 2 * H, jobs_created=3),
        T0 + 2 * H + 20 * M,
    )
    assert (last.action, last.next_run_time, last.wake_at) == ("wait", None, T0 + 2 * H + 30 * M)


def test_schedule_completes_when_the_last_job_ends_after_the_deadline() -> None:
    schedule = Schedule(recurrence_interval=H, do_not_run_after=T0 + 2 * H + 30 * M)
    starts, completed = simulate(schedule, until=6 * H, duration=50 * M)
    assert starts == [0 * H, 1 * H, 2 * H]
    assert completed == 2 * H + 50 * M


def test_no_job_after_do_not_run_after_even_if_due() -> None:
    # recurrence at 2h is blocked by a job running until 2h40; the deadline is 2h30
    schedule = Schedule(recurrence_interval=H, do_not_run_after=T0 + 2 * H + 30 * M)
    starts, completed = simulate(
        schedule, until=6 * H, duration=lambda n: 100 * M if n == 2 else 10 * M
    )
    assert starts == [0 * H, 1 * H]
    assert completed == 2 * H + 40 * M


def test_previous_job_still_active_delays_the_next() -> None:
    # job 1 runs 80 min: the 1h job waits for it, then the grid goes on at 2h
    schedule = Schedule(recurrence_interval=H)
    starts, _ = simulate(
        schedule, until=3 * H + 30 * M, duration=lambda n: 80 * M if n == 1 else 10 * M
    )
    assert starts == [0 * H, 80 * M, 2 * H, 3 * H]
    blocked = due(
        schedule,
        ScheduleState(created=T0, last_run=T0, jobs_created=1, active_job=True),
        T0 + H + 5 * M,
    )
    assert blocked.action == "wait" and "still active" in blocked.reason
    assert blocked.next_run_time == T0 + H
    assert blocked.wake_at == T0 + 2 * H  # the recurrence lapses at the next one


def test_start_window_skips_a_missed_recurrence() -> None:
    # job 1 runs 80 min; the 1h recurrence may be created only until 1h15
    schedule = Schedule(recurrence_interval=H, start_window=15 * M)
    starts, _ = simulate(
        schedule, until=3 * H + 30 * M, duration=lambda n: 80 * M if n == 1 else 10 * M
    )
    assert starts == [0 * H, 2 * H, 3 * H]
    blocked = due(
        schedule,
        ScheduleState(created=T0, last_run=T0, jobs_created=1, active_job=True),
        T0 + H + 5 * M,
    )
    assert blocked.wake_at == T0 + H + 15 * M
    after = next_run_time(schedule, created=T0, last_run=T0, now=T0 + H + 15 * M)
    assert after == T0 + 2 * H


def test_start_window_longer_than_the_interval_is_infinite() -> None:
    # job 1 runs 2h30: the 1h recurrence is not carried into the next interval;
    # the 2h one is created when job 1 ends, then the grid goes on
    long_window = Schedule(recurrence_interval=H, start_window=3 * H)
    infinite = Schedule(recurrence_interval=H)
    for schedule in (long_window, infinite):
        starts, _ = simulate(
            schedule, until=4 * H + 30 * M, duration=lambda n: 150 * M if n == 1 else 10 * M
        )
        assert starts == [0 * H, 150 * M, 3 * H, 4 * H]


def test_no_catch_up_after_an_outage() -> None:
    # the service was down from 0h10 to 5h10: one job, for the 5h recurrence
    schedule = Schedule(recurrence_interval=H)
    state = ScheduleState(created=T0, last_run=T0, jobs_created=1)
    decision = due(schedule, state, T0 + 5 * H + 10 * M)
    assert (decision.action, decision.job_number, decision.next_run_time) == (
        "create",
        2,
        T0 + 6 * H,
    )
    late = Schedule(recurrence_interval=H, start_window=5 * M)
    assert due(late, state, T0 + 5 * H + 10 * M).action == "wait"
    assert next_run_time(late, created=T0, last_run=T0, now=T0 + 5 * H + 10 * M) == T0 + 6 * H


def test_next_run_time_reports_a_due_job() -> None:
    schedule = Schedule(recurrence_interval=H)
    # due at 1h and not yet created (the previous job still runs): still reported
    assert next_run_time(schedule, created=T0, last_run=T0, now=T0 + H + 20 * M) == T0 + H
    assert (
        next_run_time(schedule, created=T0, last_run=T0 + H + 20 * M, now=T0 + H + 21 * M)
        == T0 + 2 * H
    )


def test_times_in_other_zones() -> None:
    tokyo = timezone(timedelta(hours=9))
    schedule = Schedule(recurrence_interval=H)
    decision = due(
        schedule, ScheduleState(created=T0.astimezone(tokyo)), (T0 + H).astimezone(tokyo)
    )
    assert decision.action == "create" and decision.next_run_time == T0 + 2 * H
    assert decision.next_run_time is not None and decision.next_run_time.utcoffset() == timedelta(0)


# ------------------------------------------------------------------------ clock


def test_clocks() -> None:
    clock = ManualClock(datetime(2025, 3, 1, 9, 0))
    assert clock.now() == T0
    assert clock.advance(H) == T0 + H
    clock.set(T0 + 2 * H)
    with pytest.raises(ValueError):
        clock.advance(-M)
    with pytest.raises(ValueError):
        clock.set(T0)
    assert isinstance(clock, ScheduleClock) and isinstance(SystemClock(), ScheduleClock)
    assert abs(SystemClock().now() - datetime.now(UTC)) < timedelta(seconds=5)
    assert evaluate(Schedule(), ScheduleState(created=T0), clock).action == "create"
