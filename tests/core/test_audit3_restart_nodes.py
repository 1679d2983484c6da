"""A service restart keeps its nodes' allocation time and restarts them (audit M23).

Batch: allocationTime "is the time when the Compute Node was initially
allocated and doesn't change once set" (REST ComputeNode.allocationTime);
``creating`` is a node that has "not yet started to join the Pool" (REST
ComputeNodeState.creating). The second service, on the same state directory,
restarts the node it recovers, as a node reboot does (its start task runs
again); the node is in its pool all along.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service


def test_restart_keeps_allocation_time_and_reboots_the_nodes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mark = tmp_path / "start-task-runs"
    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.85", "provider": "local",
                           "root_dir": str(tmp_path / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1,
                            "startTask": {"commandLine": f"/bin/sh -c 'echo x >> {mark}'"}})
        (before,) = client.wait_for_pool("p", timeout_s=120)
        assert before.state == "idle"

    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        (after,) = client.wait_for_pool("p", timeout_s=120)
        assert after.state == "idle"
        assert after.allocation_time == before.allocation_time
        assert after.last_boot_time > before.last_boot_time  # restarted: booted again
        assert after.state_transition_time > before.state_transition_time
        assert mark.read_text() == "x\nx\n"  # the start task ran again, as at a reboot
