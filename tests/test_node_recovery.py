"""Nodes recover by themselves: a lost node is restarted over SSH, replaced when its host
stays unreachable; hosts that cannot be reached show it; the scheduler ends with the service."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from hpcbatch.core.node_reachability import NODE_UNREACHABLE
from hpcbatch.core.node_recovery import Action, NodeRecovery, RecoveryPolicy
from hpcbatch.execution import scheduler_guard
from tests.helpers import service_on_testbed, wait_until

FAST = RecoveryPolicy(first_delay_s=0.2, max_delay_s=1.0, slow_delay_s=1.0, replace_after=2)

# ------------------------------------------------------------------ the policy (no I/O)


def test_restarts_back_off_exponentially_up_to_the_cap() -> None:
    rec = NodeRecovery(RecoveryPolicy(first_delay_s=1, max_delay_s=10, slow_delay_s=100,
                                      replace_after=3))
    delays = []
    for _ in range(6):
        delays.append(rec.next_delay())
        assert rec.next_action(free_host=True) is Action.RESTART
        rec.failed(unreachable=False)  # e.g. the worker did not connect: never a replacement
    assert delays == [1, 2, 4, 8, 10, 10]
    assert rec.attempts == 6 and rec.unreachable == 0


def test_an_unreachable_host_is_replaced_after_n_attempts_or_retried_slowly() -> None:
    rec = NodeRecovery(RecoveryPolicy(first_delay_s=1, max_delay_s=10, slow_delay_s=100,
                                      replace_after=3))
    for _ in range(2):
        rec.failed(unreachable=True)
        assert rec.next_action(free_host=True) is Action.RESTART
    rec.failed(unreachable=True)
    assert rec.next_action(free_host=True) is Action.REPLACE
    assert rec.next_action(free_host=False) is Action.RESTART
    assert rec.next_delay(free_host=False) == 100
    assert "no free inventory host" in rec.describe(free_host=False)
    assert "retrying every 100 s" in rec.describe(free_host=False)
    assert "replacing" in rec.describe(free_host=True)
    rec.failed(unreachable=False)  # reached, but failed otherwise: the streak starts again
    assert rec.next_action(free_host=True) is Action.RESTART


def test_policy_from_environment_and_bad_values() -> None:
    env = {"HPCBATCH_NODE_RECOVERY_FIRST_DELAY_S": "0.5",
           "HPCBATCH_NODE_RECOVERY_REPLACE_AFTER": "5"}
    policy = RecoveryPolicy.from_environment(env)
    assert (policy.first_delay_s, policy.replace_after) == (0.5, 5)
    assert RecoveryPolicy.from_environment({}) == RecoveryPolicy()
    with pytest.raises(ValueError, match="HPCBATCH_NODE_RECOVERY_REPLACE_AFTER"):
        RecoveryPolicy.from_environment({"HPCBATCH_NODE_RECOVERY_REPLACE_AFTER": "x"})
    with pytest.raises(ValueError):
        RecoveryPolicy(first_delay_s=5, max_delay_s=1)
    with pytest.raises(ValueError):
        RecoveryPolicy(replace_after=0)


def test_the_scheduler_closes_and_exits_when_the_service_is_gone() -> None:
    checks: list[int] = []
    closed: list[str] = []
    exits: list[int] = []

    class Scheduler:
        async def close(self, reason: str) -> None:
            closed.append(reason)

    def alive() -> bool:
        checks.append(1)
        return len(checks) < 3

    asyncio.run(scheduler_guard.watch_service(Scheduler(), alive, interval_s=0.01,
                                              exit_process=exits.append))
    assert len(checks) == 3 and closed == ["hpcbatch-service-gone"] and exits == [0]


# ------------------------------------------------------------ on the SSH testbed


def _agent_pid(bed: Any, node_id: str) -> int:
    return int(Path(bed.host(node_id).root_dir, "node.pid").read_text())


def _errors(client: Any, pool: str, node_id: str) -> list[Any]:
    return list(client.get_node(pool, node_id).errors or [])


def _details(error: Any) -> dict[str, str]:
    """A ComputeNodeError's errorDetails as {name: value} (the SDK keeps them as wire dicts)."""
    return {(d["name"] if isinstance(d, dict) else d.name): (d["value"] if isinstance(d, dict)
                                                          else d.value)
            for d in error.error_details or []}


def test_killed_agent_node_returns_to_idle_by_itself(tmp_path: Path) -> None:
    with service_on_testbed(tmp_path, 3, "127.0.7.1") as (client, bed, thread):
        manager = thread.runtime.service.pool_manager
        manager.health.recovery_policy = FAST
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2})
        nodes = client.wait_for_pool("p", timeout_s=120)
        assert [n.state for n in nodes] == ["idle", "idle"]
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.create_task("j", {"id": "t", "commandLine": "/bin/sleep 3"})
        task = wait_until(lambda: (t := client.get_task("j", "t")).state == "running" and t,
                          what="running")
        victim = task.node_info.node_id
        old_pid = _agent_pid(bed, victim)
        seen: list[str] = []
        manager.state_listeners.append(lambda n: seen.append(n.state) if n.node_id == victim
                                       else None)
        os.kill(old_pid, signal.SIGKILL)  # the node's agent dies
        wait_until(lambda: "unusable" in seen, timeout_s=30, what="the node to be lost")
        # ... and comes back by itself, with a new agent, no reboot asked.
        wait_until(lambda: client.get_node("p", victim).state == "idle"
                   and _agent_pid(bed, victim) != old_pid, timeout_s=90, what="idle again")
        assert seen[0] == "unusable" and "rebooting" in seen and "starting" in seen
        assert _errors(client, "p", victim) == []
        assert client.wait_for_tasks("j", timeout_s=60)["succeeded"] == 1
        task = client.get_task("j", "t")
        assert task.execution_info.requeue_count == 1 and task.execution_info.retry_count == 0
        assert {n.id for n in client.list_nodes("p")} == {n.id for n in nodes}
        assert not manager.health.recovering(manager.node("p", victim))


def test_an_unreachable_host_is_retried_with_a_visible_error_then_replaced(tmp_path: Path
                                                                         ) -> None:
    with service_on_testbed(tmp_path, 3, "127.0.7.11") as (client, bed, thread):
        manager = thread.runtime.service.pool_manager
        manager.health.recovery_policy = FAST
        client.create_pool({"id": "full", "vmSize": "any", "targetDedicatedNodes": 3})
        nodes = client.wait_for_pool("full", timeout_s=120)
        assert {n.state for n in nodes} == {"idle"}
        victim = nodes[0].id
        # Its host goes away (sshd and agent): no free host can replace it, so the pool
        # manager keeps trying, slowly, and says so.
        bed.kill(victim)
        os.kill(_agent_pid(bed, victim), signal.SIGKILL)

        def waiting() -> Any:
            node = client.get_node("full", victim)
            errs = list(node.errors or [])
            return (node.state == "unusable" and errs and errs[0].code == "NodeConnectionFailed"
                    and "no free inventory host" in _details(errs[0]).get("Recovery", "")
                    and errs)

        errs = wait_until(waiting, timeout_s=90, what="a slow-retry error")
        assert victim in errs[0].message
        # Its host comes back: the node returns to idle by itself.
        bed.start(victim)
        wait_until(lambda: client.get_node("full", victim).state == "idle", timeout_s=90,
                   what="idle again")
        assert _errors(client, "full", victim) == []
        # Now a pool with a free host beside it: the dead node is replaced.
        client.resize_pool("full", 2)
        wait_until(lambda: len(client.list_nodes("full")) == 2, timeout_s=90, what="shrunk")
        client.wait_for_pool("full", timeout_s=120)
        [free] = [h["name"] for h in client.list_hosts() if h["poolId"] is None]
        victim = client.list_nodes("full")[0].id
        bed.kill(victim)
        os.kill(_agent_pid(bed, victim), signal.SIGKILL)
        wait_until(lambda: {n.id for n in client.list_nodes("full")}
                   == ({n.id for n in nodes} - {victim}), timeout_s=120,
                   what=f"{victim} replaced by {free}")
        assert {n.state for n in client.wait_for_pool("full", timeout_s=120)} == {"idle"}
        assert client.get_pool("full").current_dedicated_nodes == 2
        bed.start(victim)


def test_a_host_that_cannot_be_reached_shows_it_until_it_can(tmp_path: Path) -> None:
    with service_on_testbed(tmp_path, 2, "127.0.7.21") as (client, bed, thread):
        manager = thread.runtime.service.pool_manager
        manager.reachability.probe_interval_s = 0.3
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2})
        a, b = (n.id for n in client.wait_for_pool("p", timeout_s=120))
        agent = psutil.Process(_agent_pid(bed, a))
        bed.kill(a)  # its sshd stops; its agent (and Dask connection) lives on

        def unreachable() -> Any:
            errs = [e for e in _errors(client, "p", a) if e.code == NODE_UNREACHABLE]
            return errs and errs[0]

        err = wait_until(unreachable, timeout_s=60, what="a NodeUnreachable error")
        assert a in err.message
        details = _details(err)
        assert details["Host"] == a and details["SshError"]
        node = client.get_node("p", a)
        assert node.state == "idle" and agent.is_running()
        assert _errors(client, "p", b) == []
        # Tasks still run there: its worker is connected.
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.create_tasks("j", [{"id": f"t{i}", "commandLine": "/bin/true"} for i in range(6)])
        assert client.wait_for_tasks("j", timeout_s=60)["succeeded"] == 6
        bed.start(a)
        wait_until(lambda: not unreachable(), timeout_s=60, what="the error cleared")
        assert client.get_node("p", a).state == "idle"


def test_a_node_whose_host_was_down_when_it_joined_recovers_then_is_replaced(tmp_path: Path
                                                                           ) -> None:
    """NodeConnectionFailed at join gets the lost node's recovery (D2): restarts with backoff
    until the host answers; replaced by a free host when it stays down; and that host, known
    unreachable, is taken last when the pool grows."""
    with service_on_testbed(tmp_path, 3, "127.0.7.31") as (client, bed, thread):
        manager = thread.runtime.service.pool_manager
        manager.health.recovery_policy = RecoveryPolicy(first_delay_s=0.2, max_delay_s=1.0,
                                                        slow_delay_s=1.0, replace_after=100)
        a, b, c = sorted(h.name for h in bed.hosts)
        bed.kill(a)  # sshd down when the pool takes the host (the first free one)

        def retried(pool: str) -> Any:
            errs = _errors(client, pool, a)
            return (errs and errs[0].code == "NodeConnectionFailed"
                    and "restart attempt" in _details(errs[0]).get("Recovery", "") and errs)

        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        errs = wait_until(lambda: retried("p"), timeout_s=60, what="restarts of the node")
        assert "refused" in errs[0].message.lower()
        bed.start(a)  # the host answers again: the node joins by itself, no reboot asked
        wait_until(lambda: client.get_node("p", a).state == "idle", timeout_s=60,
                   what="idle by itself")
        assert _errors(client, "p", a) == []
        client.delete_pool("p")
        wait_until(lambda: not client.list_pools(), timeout_s=60, what="pool p gone")

        # It stays down: after replace_after attempts a free host replaces it ...
        manager.health.recovery_policy = FAST
        bed.kill(a)
        client.create_pool({"id": "q", "vmSize": "any", "targetDedicatedNodes": 1})
        wait_until(lambda: [(n.id, n.state) for n in client.list_nodes("q")] == [(b, "idle")],
                   timeout_s=90, what=f"{a} replaced by {b}")
        # ... and growing the pool takes the other free host, not the unreachable one.
        wait_until(lambda: client.get_pool("q").allocation_state == "steady", what="steady")
        client.resize_pool("q", 2)
        nodes = client.wait_for_pool("q", timeout_s=90)
        assert sorted((n.id, n.state) for n in nodes) == [(b, "idle"), (c, "idle")]
        bed.start(a)
