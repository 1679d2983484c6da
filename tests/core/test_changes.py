"""The server side of long polls (:mod:`hpcbatch.core.changes`): who wakes, and how often a
waiter reads (policy on a real event loop; the store's commits are stood in for by notify,
and the store's versions by a dict)."""

from __future__ import annotations

import asyncio
import threading

from hpcbatch.api.routes.jobs import MAX_COUNTS_PAUSE_S, _cannot_finish_s
from hpcbatch.core.changes import Changes, VersionWatch


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


class _Versions:
    """Resources' versions, as the store holds them; ``changes.notify`` stands in for a commit."""

    def __init__(self, count: int, min_interval_s: float = 0.0) -> None:
        self.changes = Changes()
        self.now = {f"r{i}": 0 for i in range(count)}
        self.batched_keys: list[int] = []
        self.full_reads: dict[str, int] = {}
        self.fail = False
        self.watch: VersionWatch[str, int, int] = VersionWatch(
            self.changes, self.read_versions, lambda v: v, min_interval_s=min_interval_s)

    def read_versions(self, keys: list[str]) -> dict[str, int]:
        if self.fail:
            raise RuntimeError("database is locked")
        self.batched_keys.append(len(keys))
        return {k: self.now[k] for k in keys if k in self.now}

    def read(self, key: str) -> int:  # the waiter's own read, by the full path
        self.full_reads[key] = self.full_reads.get(key, 0) + 1
        if key not in self.now:
            raise KeyError(key)
        return self.now[key]

    def wait(self, key: str, timeout_s: float = 30) -> asyncio.Future[int]:
        held = self.now[key]
        return asyncio.ensure_future(self.watch.wait_while(
            key, lambda: self.read(key), lambda v: v == held, timeout_s))

    def commit(self, key: str | None = None) -> None:
        if key is not None:
            self.now[key] += 1
        self.changes.notify()


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_commit_is_one_batched_read_and_wakes_only_the_changed_resources_waiter() -> None:
    async def go() -> None:
        v = _Versions(50)
        waiting = {k: v.wait(k) for k in v.now}
        await _turns()
        assert v.watch.waiting == 50
        reads_before = len(v.batched_keys)
        for _ in range(20):  # commits that touch none of the waited-on resources
            v.commit()
            await _turns()
        assert len(v.batched_keys) - reads_before == 20  # one read a commit, not one a waiter
        assert set(v.batched_keys) == {50}  # every waited-on resource in that one read
        assert v.full_reads == dict.fromkeys(v.now, 1)  # no waiter woke
        v.commit("r7")
        assert await waiting["r7"] == 1
        await _turns()
        assert v.full_reads["r7"] == 2 and sum(v.full_reads.values()) == 51
        assert not any(f.done() for k, f in waiting.items() if k != "r7")
        assert v.watch.waiting == 49
        for f in waiting.values():
            f.cancel()
        await _turns()
        assert v.watch.waiting == 0
    asyncio.run(go())


def test_two_waiters_on_one_resource_holding_different_versions() -> None:
    async def go() -> None:
        v = _Versions(1)
        old = v.wait("r0")
        await _turns()
        v.commit("r0")  # ``old`` wakes; a new client now holds version 1
        assert await old == 1
        new = v.wait("r0")
        await _turns()
        v.commit()  # a commit elsewhere: the new client's version is still current
        await _turns()
        assert not new.done()
        v.commit("r0")
        assert await new == 2
    asyncio.run(go())


def test_a_deleted_resource_wakes_its_waiter_whose_own_read_raises() -> None:
    async def go() -> None:
        v = _Versions(3)
        waiting = v.wait("r1")
        await _turns()
        del v.now["r1"]
        v.commit()
        try:
            await waiting
        except KeyError as e:
            assert e.args == ("r1",)
        else:
            raise AssertionError("the wait should have raised")
    asyncio.run(go())


def test_a_failed_batched_read_wakes_every_waiter_to_read_for_itself() -> None:
    async def go() -> None:
        v = _Versions(4)
        waiting = [v.wait(k) for k in v.now]
        await _turns()
        v.fail = True
        v.commit()
        await _turns()
        # each waiter read again by the full path, found its version unchanged, waits again
        assert v.full_reads == dict.fromkeys(v.now, 2)
        assert not any(f.done() for f in waiting)
        v.fail = False
        v.commit("r3")
        assert await waiting[3] == 1
        for f in waiting[:3]:
            f.cancel()
    asyncio.run(go())


def test_a_watched_wait_times_out_and_a_commit_from_another_thread_wakes_it() -> None:
    async def go() -> None:
        v = _Versions(2)
        assert await v.wait("r0", timeout_s=0.05) == 0  # no change: the held version
        waiting = v.wait("r1")
        await asyncio.sleep(0.01)
        threading.Thread(target=v.commit, args=("r1",)).start()
        assert await asyncio.wait_for(waiting, 10) == 1
        await asyncio.sleep(0)
        assert v.watch.waiting == 0
    asyncio.run(go())


def test_the_commits_of_the_least_interval_wake_one_read() -> None:
    async def go() -> None:
        v = _Versions(3, min_interval_s=0.05)
        waiting = v.wait("r2")
        await _turns()
        reads = len(v.batched_keys)
        for _ in range(200):  # a storm: one commit a loop turn, all within 50 ms
            v.commit()
            await asyncio.sleep(0)
        assert len(v.batched_keys) - reads <= 2
        v.commit("r2")
        assert await asyncio.wait_for(waiting, 10) == 1  # still heard, at most 50 ms late
    asyncio.run(go())
