"""A node agent's task runs wait for free slots: runs the service sends ahead of a free
slot (short runs, ``NodeRuntime.ahead_slots``) start first in, first out, one per slot;
a run still waiting can be ended; outcomes are never lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hpcbatch.execution.agent import EXIT_CODE_TASK_ENDED, Launch, NodeAgent
from hpcbatch.execution.environment import NodeIdentity
from tests.compat._harness import max_overlap


def make_agent(root: Path) -> NodeAgent:
    root.mkdir(parents=True, exist_ok=True)
    return NodeAgent(NodeIdentity(node_id="n1", pool_id="p", root_dir=str(root),
                                  account_name="acct", account_url="http://x"),
                     base_env={b"PATH": b"/usr/bin:/bin"})


def launch(i: int, command: str, node_slots: int, **kw) -> Launch:
    return Launch(key=f"r{i}", task_dir=f"workitems/j/job-1/t{i}", command_line=command,
                  job_id="j", task_id=f"t{i}", slots=1, node_slots=node_slots, **kw)


async def _wait_outcomes(agent: NodeAgent, n: int, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(agent.pending_outcomes()) < n:
        assert time.monotonic() < deadline, agent.pending_outcomes()
        await asyncio.sleep(0.02)
    return agent.pending_outcomes()


def test_runs_sent_ahead_start_one_per_free_slot_in_order(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")

    async def go() -> list[dict]:
        runs = [launch(i, "/bin/sleep 0.2", node_slots=2) for i in range(6)]
        assert agent.enqueue(runs) == 6
        assert len(agent.processes.running()) == 2
        assert agent.queued() == ["r2", "r3", "r4", "r5"]
        return await _wait_outcomes(agent, 6)

    try:
        outcomes = asyncio.run(go())
    finally:
        agent.processes.warden.stop()
    assert [o["exit_code"] for o in outcomes] == [0] * 6
    assert max_overlap([(o["start"], o["end"]) for o in outcomes]) == 2  # never more than the node's slots
    # first in, first out: each waiting run started no earlier than the one before it
    starts = {o["key"]: o["start"] for o in outcomes}
    assert [starts[f"r{i}"] for i in range(2, 6)] == sorted(starts[f"r{i}"] for i in range(2, 6))
    assert agent.queued() == []


def test_a_run_waiting_for_a_slot_is_ended_by_kill_task_and_never_starts(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")

    async def go() -> list[dict]:
        agent.enqueue([launch(i, "/bin/sleep 0.3", node_slots=1) for i in range(3)])
        assert agent.queued() == ["r1", "r2"]
        assert agent.kill_task("r1") is True  # waiting: ended at once
        assert agent.queued() == ["r2"]
        assert agent.kill_task("r1") is False  # gone: nothing more to end
        return await _wait_outcomes(agent, 3)

    try:
        outcomes = {o["key"]: o for o in asyncio.run(go())}
    finally:
        agent.processes.warden.stop()
    assert outcomes["r1"]["exit_code"] == EXIT_CODE_TASK_ENDED
    assert outcomes["r1"]["failure"]["code"] == "TaskEnded"
    assert not (tmp_path / "node" / "workitems/j/job-1/t1").exists()  # it never started
    assert outcomes["r0"]["exit_code"] == 0 and outcomes["r2"]["exit_code"] == 0
    assert outcomes["r2"]["start"] >= outcomes["r0"]["end"]


def test_kill_all_drops_the_waiting_runs(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")

    async def go() -> int:
        agent.enqueue([launch(i, "/bin/sleep 30", node_slots=1) for i in range(4)])
        return agent.kill_all()

    try:
        assert asyncio.run(go()) == 4  # one running, three waiting
    finally:
        agent.processes.warden.stop()
    assert agent.queued() == []


def test_runs_in_threads_also_wait_for_their_slot(tmp_path: Path) -> None:
    """Without an event loop (or with files to move) runs execute in threads; a thread's
    end starts the next waiting run all the same."""
    agent = make_agent(tmp_path / "node")
    try:
        agent.enqueue([launch(i, "/bin/sleep 0.05", node_slots=1) for i in range(4)])
        outcomes = asyncio.run(_wait_outcomes(agent, 4))
    finally:
        agent.processes.warden.stop()
    assert [o["exit_code"] for o in outcomes] == [0] * 4
    assert max_overlap([(o["start"], o["end"]) for o in outcomes]) == 1


def test_a_run_waiting_too_long_behind_longer_runs_is_given_back_unstarted(
        tmp_path: Path, monkeypatch) -> None:
    from hpcbatch.execution import agent as agent_module

    monkeypatch.setattr(agent_module, "GIVE_BACK_S", 0.3)
    agent = make_agent(tmp_path / "node")

    async def go() -> list[dict]:
        agent.enqueue([launch(0, "/bin/sleep 30", node_slots=1),
                       *(launch(i, "/bin/true", node_slots=1) for i in (1, 2))])
        outcomes = await _wait_outcomes(agent, 2, timeout_s=10)
        assert agent.queued() == [] and len(agent.processes.running()) == 1  # r0 runs on
        agent.kill_all()
        return outcomes

    try:
        outcomes = asyncio.run(go())
    finally:
        agent.processes.warden.stop()
    assert sorted(o["key"] for o in outcomes) == ["r1", "r2"]
    for o in outcomes:
        assert o["exit_code"] is None and o["failure"]["code"] == agent_module.RUN_RETURNED
    assert not (tmp_path / "node" / "workitems/j/job-1/t1").exists()  # never started
