"""The server side of long polls (:mod:`hpcbatch.core.changes`): who wakes, and how often a
waiter reads (policy on a real event loop; the store's commits are stood in for by notify)."""

from __future__ import annotations

import asyncio
import threading

from hpcbatch.api.routes.jobs import MAX_COUNTS_PAUSE_S, _cannot_finish_s
from hpcbatch.core.changes import Changes


def _wait_while_commits(commits: int, pause_s: object) -> tuple[int, int]:
    """Wait for a counter to reach 0 while ``commits`` commits each take one off it;
    return (the value the wait returned, the reads it made)."""
    async def go() -> tuple[int, int]:
        changes = Changes()
        state = {"left": commits, "reads": 0}

        def read() -> int:
            state["reads"] += 1
            return state["left"]

        async def commit_all() -> None:
            for _ in range(commits):
                state["left"] -= 1
                changes.notify()
                await asyncio.sleep(0)  # one commit a loop turn: the waiter may run between

        waiting = asyncio.ensure_future(
            changes.wait_while(read, lambda left: left > 0, 30, pause_s=pause_s))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the waiter reads first
        await commit_all()
        return await waiting, state["reads"]
    return asyncio.run(go())


def test_every_commit_wakes_a_read_without_a_pause() -> None:
    value, reads = _wait_while_commits(200, None)
    assert value == 0
    assert reads > 100  # about one read a commit


def test_a_pause_folds_the_commits_of_its_time_into_one_read() -> None:
    # 200 left cannot finish within 200 / 10,000 s = 20 ms: the commits of those 20 ms
    # (all of them, on any machine that runs 200 loop turns in 20 ms) wake one read.
    value, reads = _wait_while_commits(200, lambda left: left / 10_000)
    assert value == 0
    assert reads < 20


def test_a_commit_from_another_thread_ends_the_wait() -> None:
    async def go() -> int:
        changes = Changes()
        state = {"left": 1}
        waiting = asyncio.ensure_future(changes.wait_while(
            lambda: state["left"], lambda left: left > 0, 30, pause_s=lambda left: 0.001))
        await asyncio.sleep(0.01)

        def commit() -> None:
            state["left"] = 0
            changes.notify()
        threading.Thread(target=commit).start()
        return await waiting
    assert asyncio.run(go()) == 0


def test_a_timed_out_wait_returns_the_last_value() -> None:
    async def go() -> int:
        return await Changes().wait_while(lambda: 7, lambda v: True, 0.05,
                                          pause_s=lambda v: 10.0)  # the pause ends at the deadline
    assert asyncio.run(go()) == 7


def test_the_task_counts_pause_grows_with_the_tasks_left_and_is_capped() -> None:
    def counts(active: int, running: int) -> dict[str, dict[str, int]]:
        return {"taskCounts": {"active": active, "running": running}}
    assert _cannot_finish_s(counts(0, 1)) == 1 / 10_000
    assert _cannot_finish_s(counts(30, 20)) == 50 / 10_000
    assert _cannot_finish_s(counts(1_000_000, 8)) == MAX_COUNTS_PAUSE_S
