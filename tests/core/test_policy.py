"""Scheduling policy as pure functions: placement, priority, gangs, retries, dependencies, job actions.

No SSH, no Dask, no database: each case runs in microseconds. The sshd-testbed
tests (tests/test_scheduling.py) keep one realistic case per behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hpcbatch.batch.dependencies import dependency_state, job_action_after, task_ending
from hpcbatch.core.scheduling import NodeSlots, plan_pool, should_retry


@dataclass(frozen=True)
class T:
    """A candidate task: ID, numberOfInstances, requiredSlots."""

    id: str
    instances: int = 1
    slots: int = 1


@dataclass(frozen=True)
class J:
    """A job: ID, priority, creation order, active tasks FIFO."""

    id: str
    priority: int
    seq: int
    tasks: tuple[T, ...]


def plan(nodes: list[NodeSlots], jobs: list[J], fill: str = "spread",
         excluded: dict[str, set[str]] | None = None,
         allowance: dict[str, int] | None = None,
         prefer: dict[str, str] | None = None) -> list[tuple[str, str, list[str]]]:
    calls: list[str] = []

    def next_tasks(job: J, budget: int) -> list[T]:
        calls.append(job.id)
        return list(job.tasks[:budget])

    out = plan_pool(nodes, [(j, j.priority, j.seq) for j in jobs], next_tasks,
                    lambda t: (t.instances, t.slots),
                    lambda j: (excluded or {}).get(j.id, set()), fill,  # type: ignore[arg-type]
                    allowance=lambda j: (allowance or {}).get(j.id),
                    prefer=lambda t: (prefer or {}).get(t.id))
    assert len(calls) == len(set(calls)), "a job's tasks are read once per pass"
    return [(j.id, t.id, nids) for j, t, nids in out]


def nodes(*free: int) -> list[NodeSlots]:
    return [NodeSlots(f"n{i}", f, i) for i, f in enumerate(free)]


def test_higher_priority_job_first_then_oldest_then_fifo() -> None:
    low = J("low", 0, 1, (T("l1"), T("l2")))
    high = J("high", 100, 3, (T("h1"), T("h2")))
    old_high = J("old", 100, 2, (T("o1"),))
    got = plan(nodes(1, 1, 1, 1), [low, high, old_high])
    assert [t for _, t, _ in got] == ["o1", "h1", "h2", "l1"]


def test_spread_takes_the_emptiest_node_pack_fills_one_first() -> None:
    job = J("j", 0, 1, tuple(T(f"t{i}") for i in range(4)))
    spread = plan(nodes(4, 4), [job], "spread")
    assert [n[0] for _, _, n in spread] == ["n0", "n1", "n0", "n1"]
    pack = plan(nodes(4, 4), [job], "pack")
    assert [n[0] for _, _, n in pack] == ["n0", "n0", "n0", "n0"]


def test_required_slots_a_big_task_that_does_not_fit_does_not_stop_smaller_ones() -> None:
    job = J("j", 0, 1, (T("big", slots=4), T("small", slots=1), T("mid", slots=2)))
    got = plan(nodes(3, 1), [job])
    assert {t: n for _, t, n in got} == {"small": ["n0"], "mid": ["n0"]}


def test_budget_never_exceeds_free_slots() -> None:
    job = J("j", 0, 1, tuple(T(f"t{i}") for i in range(100)))
    got = plan(nodes(2, 3), [job])
    assert len(got) == 5
    assert sorted(n[0] for _, _, n in got).count("n1") == 3


def test_gang_takes_distinct_nodes_master_first_all_at_once() -> None:
    job = J("j", 0, 1, (T("mpi", instances=3),))
    got = plan([NodeSlots("c", 1, 2), NodeSlots("a", 1, 0), NodeSlots("b", 1, 1),
                NodeSlots("d", 1, 3)], [job])
    assert got == [("j", "mpi", ["a", "b", "c"])]


def test_waiting_gang_holds_nothing_and_blocks_everything_behind_it() -> None:
    gang = J("gang", 10, 1, (T("mpi", instances=3), T("after")))
    other = J("other", 0, 2, (T("o1"), T("o2")))
    got = plan(nodes(1, 1), [gang, other])
    assert got == []  # no partial gang, no backfill behind it, not even a lower-priority job


def test_tasks_ahead_of_a_gang_still_start() -> None:
    job = J("j", 0, 1, (T("first"), T("mpi", instances=2), T("after")))
    got = plan(nodes(1, 1), [job])
    assert [t for _, t, _ in got] == ["first"]


def test_gang_is_not_starved_by_a_stream_of_small_tasks() -> None:
    # Four nodes busy; they free up one per pass while new small tasks keep arriving
    # behind the gang. Without head-of-line blocking the small tasks would take each
    # freed node and the gang would never find four at once.
    free = [0, 0, 0, 0]
    started = []
    for step in range(8):
        if step < 4:
            free[step] = 1
        small = tuple(T(f"s{step}-{i}") for i in range(3))
        got = plan(nodes(*free), [J("j", 0, 1, (T("mpi", instances=4), *small))])
        for _, t, ns in got:
            started.append(t)
            for n in ns:
                free[int(n[1:])] -= 1
        if "mpi" in started:
            break
    assert started[0] == "mpi"


def test_two_gangs_cannot_deadlock() -> None:
    a = J("a", 0, 1, (T("a", instances=2),))
    b = J("b", 0, 2, (T("b", instances=2),))
    assert plan(nodes(1, 1, 1), [a, b]) == [("a", "a", ["n0", "n1"])]
    assert plan(nodes(1, 1, 1, 1), [a, b]) == [("a", "a", ["n0", "n1"]), ("b", "b", ["n2", "n3"])]


def test_a_job_stays_off_the_nodes_where_its_preparation_failed() -> None:
    job = J("j", 0, 1, (T("t1"), T("t2"), T("t3")))
    got = plan(nodes(2, 2), [job], excluded={"j": {"n0"}})
    assert [n for _, _, n in got] == [["n1"], ["n1"]]


@pytest.mark.parametrize(("ok", "terminated", "max_retries", "count", "retry"), [
    (True, False, 3, 0, False),      # success completes
    (False, False, 0, 0, False),     # Batch's default: no retry
    (False, False, 2, 1, True),      # retries left
    (False, False, 2, 2, False),     # retries spent
    (False, False, -1, 500, True),   # -1: retry without limit
    (False, True, 5, 0, False),      # ended by request: no retry
])
def test_retry_or_complete(ok: bool, terminated: bool, max_retries: int, count: int,
                           retry: bool) -> None:
    assert should_retry(ok, terminated, max_retries, count) is retry


def test_dependency_state_ready_waiting_blocked() -> None:
    done_ok = ("a", "a", "completed", True)
    done_block = ("b", "b", "completed", False)
    running = ("c", "c", "running", None)
    assert dependency_state([done_ok], {"a"}) == ("ready", None)
    assert dependency_state([done_ok, running], {"a", "c"})[0] == "waiting"
    state, reason = dependency_state([done_ok], {"a", "later"})  # named, not added yet
    assert state == "waiting" and reason is not None and "later" in reason
    state, reason = dependency_state([running, done_block], {"b", "c"})
    assert state == "blocked" and reason is not None and "task b" in reason
    many = [(f"t{i}", f"t{i}", "active", None) for i in range(8)]
    assert dependency_state(many, set())[1] == (
        "waiting for task(s) t0, t1, t2, t3, t4 and 3 more to complete")


def test_exit_conditions_choose_dependency_and_job_actions() -> None:
    cond = {"exitCodes": [{"code": 3, "exitOptions": {"jobAction": "terminate",
                                                      "dependencyAction": "block"}}],
            "exitCodeRanges": [{"start": 10, "end": 20,
                                "exitOptions": {"jobAction": "disable"}}],
            "default": {"dependencyAction": "satisfy"}}
    assert task_ending(cond, 3, None).job_action == "terminate"
    assert task_ending(cond, 3, None).dependency_action == "block"
    assert task_ending(cond, 15, None).job_action == "disable"
    assert task_ending(cond, 1, None).dependency_action == "satisfy"
    assert task_ending(None, 0, None).dependency_action == "satisfy"
    assert task_ending(None, 1, None).dependency_action == "block"  # Batch: failure blocks
    # default covers failures only: a success it does not name takes Batch's defaults
    blocking = {"default": {"dependencyAction": "block", "jobAction": "disable"}}
    success = task_ending(blocking, 0, None)
    assert (success.dependency_action, success.job_action) == ("satisfy", "none")
    failure = task_ending(blocking, 7, None)
    assert (failure.dependency_action, failure.job_action) == ("block", "disable")
    assert task_ending({**blocking, "exitCodes": [{"code": 0, "exitOptions": {
        "dependencyAction": "block"}}]}, 0, None).dependency_action == "block"


def test_job_actions_after_completions() -> None:
    failed_terminate = (False, False, False, "terminate")
    assert job_action_after([failed_terminate], on_task_failure="noaction") is None
    assert job_action_after([failed_terminate], on_task_failure="performexitoptionsjobaction") \
        == ("terminate", "TaskFailed")
    assert job_action_after([(True, False, False, "terminate")],
                            on_task_failure="performexitoptionsjobaction") is None
    assert job_action_after([(True, True, True, "none")], on_task_failure=None) \
        == ("terminate", "JMComplete")
    assert job_action_after([(True, True, False, "none")], on_task_failure=None) is None
    assert job_action_after([(False, False, False, "disable")],
                            on_task_failure="performexitoptionsjobaction") == ("disable", "TaskFailed")


def test_max_parallel_tasks_caps_a_job_and_the_jobs_behind_it_go_on() -> None:
    many = J("capped", 10, 0, tuple(T(f"c{i}") for i in range(6)))
    other = J("other", 0, 1, tuple(T(f"o{i}") for i in range(6)))
    out = plan(nodes(4, 4), [many, other], allowance={"capped": 2})
    assert [t for j, t, _ in out if j == "capped"] == ["c0", "c1"]
    assert [t for j, t, _ in out if j == "other"] == ["o0", "o1", "o2", "o3", "o4", "o5"]
    # A job at its limit starts nothing; a negative allowance (more running than the
    # limit after a PATCH lowered it) is the same.
    for left in (0, -3):
        assert plan(nodes(4), [many], allowance={"capped": left}) == []


def test_affinity_is_a_preference_taken_when_the_node_has_room() -> None:
    job = J("j", 0, 0, (T("a"), T("b"), T("c", slots=2)))
    # spread would put "a" on n0 (most free, first); its affinity sends it to n1.
    out = plan(nodes(3, 1, 1), [job], prefer={"a": "n1", "c": "n2"})
    placed = {t: nids[0] for _, t, nids in out}
    assert placed["a"] == "n1"
    # "c" needs 2 slots; n2 has 1, so it goes where it fits.
    assert placed["c"] == "n0"
    # A preferred node that is not in the pool's free list (busy, offline) is ignored.
    out = plan(nodes(1), [J("k", 0, 0, (T("x"),))], prefer={"x": "n9"})
    assert out == [("k", "x", ["n0"])]


def test_short_runs_fill_the_room_ahead_but_a_gang_takes_only_free_slots() -> None:
    # n0: 1 free slot and room for 2 more runs ahead; n1: busy, room for 2 ahead.
    room = [NodeSlots("n0", 1, 0, ahead=2), NodeSlots("n1", 0, 1, ahead=2)]
    small = J("small", 0, 1, tuple(T(f"s{i}") for i in range(8)))
    got = plan(room, [small])
    assert sorted(t for _, t, _ in got) == [f"s{i}" for i in range(5)]  # 1 free + 4 ahead
    assert sorted(n for _, _, (n,) in got) == ["n0"] * 3 + ["n1"] * 2
    # A gang of 2 needs two free slots: n1 has none, whatever its room ahead.
    gang = J("gang", 10, 1, (T("mpi", instances=2),))
    assert plan(room, [gang, small]) == []
    assert plan([NodeSlots("n0", 1, 0, ahead=2), NodeSlots("n1", 1, 1, ahead=2)],
                [gang]) == [("gang", "mpi", ["n0", "n1"])]


def test_a_run_placed_ahead_uses_up_the_free_slot_first() -> None:
    # n0's one free slot goes to the first small task; the gang behind it then finds
    # no free slot on n0, though n0 still has room ahead.
    job = J("j", 0, 1, (T("first"), T("mpi", instances=2)))
    got = plan([NodeSlots("n0", 1, 0, ahead=4), NodeSlots("n1", 1, 1, ahead=4)], [job])
    assert got == [("j", "first", ["n0"])]
