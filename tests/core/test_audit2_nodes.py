"""Compute node states against the Batch documents: offline (M9), a reboot's allocation
state (M15), Disable/Enable Scheduling of a node already there (M21).

A real service with one local node (docs/architecture.md, "States", audit M9, M15, M21).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from hpcbatch.client.sdk import BatchClient, BatchError
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchClient]:
    tmp = tmp_path_factory.mktemp("audit2nodes")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.171", "provider": "local",
                           "root_dir": str(tmp / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        yield client


def node_state(client: BatchClient) -> str:
    return str(client.get_node("p", "n0").state)


def test_m9_a_node_with_scheduling_disabled_and_no_task_is_offline(client: BatchClient) -> None:
    # "offline: The Compute Node is not currently running a Task, and scheduling of new
    # Tasks to the Compute Node is disabled" (REST ComputeNodeState.offline).
    assert node_state(client) == "idle"
    client.disable_node_scheduling("p", "n0")
    node = client.get_node("p", "n0")
    assert (node.state, node.scheduling_state) == ("offline", "disabled")
    client.enable_node_scheduling("p", "n0")
    node = client.get_node("p", "n0")
    assert (node.state, node.scheduling_state) == ("idle", "enabled")

    # A running node whose scheduling is disabled keeps running its task
    # (taskcompletion), then goes offline, not idle, when the task ends.
    client.create_job({"id": "m9", "poolInfo": {"poolId": "p"}})
    client.create_task("m9", {"id": "t", "commandLine": "sleep 2"})
    wait_until(lambda: node_state(client) == "running", timeout_s=30, what="node running")
    client.disable_node_scheduling("p", "n0", "taskcompletion")
    assert node_state(client) == "running"
    wait_until(lambda: client.get_task("m9", "t").state == "completed", timeout_s=30,
               what="task completed")
    wait_until(lambda: node_state(client) != "running", timeout_s=10, what="task released")
    assert node_state(client) == "offline"
    # An offline node takes no task; enabling scheduling brings it back online.
    client.create_task("m9", {"id": "u", "commandLine": "/bin/true"})
    time.sleep(1)
    assert client.get_task("m9", "u").state == "active"
    client.enable_node_scheduling("p", "n0")
    wait_until(lambda: client.get_task("m9", "u").state == "completed", timeout_s=30,
               what="the task runs once the node is online")
    wait_until(lambda: node_state(client) == "idle", timeout_s=10, what="node idle")


def test_m21_scheduling_already_in_the_target_state_is_a_conflict(client: BatchClient) -> None:
    # "You can disable Task scheduling on a Compute Node only if its current scheduling
    # state is enabled" (REST Compute Node - Disable Scheduling); Batch answers 409
    # NodeAlreadyInTargetSchedulingState, for Enable Scheduling of an enabled node too.
    with pytest.raises(BatchError) as info:
        client.enable_node_scheduling("p", "n0")
    assert (info.value.status, info.value.code) == (409, "NodeAlreadyInTargetSchedulingState")
    client.disable_node_scheduling("p", "n0")
    before = client.get_node("p", "n0")
    with pytest.raises(BatchError) as info:
        client.disable_node_scheduling("p", "n0", "terminate")
    assert (info.value.status, info.value.code) == (409, "NodeAlreadyInTargetSchedulingState")
    after = client.get_node("p", "n0")
    assert after.scheduling_state == "disabled"
    assert after.state_transition_time == before.state_transition_time
    client.enable_node_scheduling("p", "n0")
    assert client.get_node("p", "n0").scheduling_state == "enabled"


def test_m15_a_reboot_leaves_the_pool_steady(client: BatchClient) -> None:
    # The allocation state is about "Compute Nodes being added to or removed from the
    # Pool" (REST AllocationState.resizing): a reboot adds and removes none.
    assert client.get_pool("p").allocation_state == "steady"
    client.reboot_node("p", "n0")
    seen_nodes, seen_pools = set(), set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen_pools.add(str(client.get_pool("p").allocation_state))
        state = node_state(client)
        seen_nodes.add(state)
        if state == "idle" and "starting" in seen_nodes:
            break
        time.sleep(0.02)
    assert "starting" in seen_nodes, seen_nodes  # the node did restart
    assert node_state(client) == "idle"
    assert seen_pools == {"steady"}
    assert [p.id for p in client.list_pools(filter="allocationState eq 'steady'")] == ["p"]
