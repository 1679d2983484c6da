"""The ``simulated`` provider: many lightweight nodes through the service's real paths.

A service (real store, scheduler policy, pool manager, Dask scheduler) gets
200 ``provider: simulated`` hosts; their nodes run tasks as timers, or as real
processes when the command line is not one the simulator reads.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.registry import offers_remote_login, provider_for
from hpcbatch.providers.simulated import FLEET, SimulatedProvider, simulate
from tests.helpers import running_service, wait_until

NODES = 200


def test_simulate_reads_the_short_command_lines() -> None:
    assert simulate("sleep 0.01") == (0.01, 0)
    assert simulate("/bin/sleep 2s") == (2.0, 0)
    assert simulate("/bin/true") == (0.0, 0)
    assert simulate("false") == (0.0, 1)
    assert simulate("exit 7") == (0.0, 7)
    assert simulate("sh -c 'sleep 0.5 && exit 3'") == (0.5, 3)
    assert simulate("/bin/sh -c 'exit 2; sleep 9'") == (0.0, 2)
    # anything else runs as a real process
    assert simulate("python -c 'print(1)'") is None
    assert simulate("sleep -1") is None
    assert simulate("sleep 1 2") is None
    assert simulate("exit 256") is None
    assert simulate("sh -c 'echo hi && exit 0'") is None
    assert simulate("'unbalanced") is None


def test_registry_picks_the_simulated_provider(tmp_path: Path) -> None:
    host = Host(name="sim-a", address="127.0.0.1", provider="simulated",
                root_dir=str(tmp_path / "sim-a"))
    provider = provider_for(host)
    assert type(provider) is SimulatedProvider
    assert not offers_remote_login(host)
    root = provider.prepare()
    assert not provider.check(root)
    provider.start(root, {"node_id": "sim-a", "worker_name": "sim-a@1", "pool_id": "p",
                          "scheduler_address": "tls://127.0.0.1:1", "nthreads": 5})
    assert provider.check(root)
    assert FLEET.nodes(1)["sim-a@1"].slots == 4
    # a new incarnation replaces the old one
    provider.start(root, {"node_id": "sim-a", "worker_name": "sim-a@2", "pool_id": "p",
                          "scheduler_address": "tls://127.0.0.1:1", "nthreads": 5})
    assert list(FLEET.nodes(1)) == ["sim-a@2"]
    assert provider.stop(root) and not provider.check(root) and not provider.stop(root)
    assert FLEET.nodes(1) == {}
    assert provider.setup_identity(root, {})["switching"] is False
    assert provider.install_trust(root, "k", "p", allowed_from=[]) is None


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, Path]]:
    """A service with a ready pool of 200 simulated nodes x 4 slots."""
    tmp = tmp_path_factory.mktemp("sim")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"sim{i:03d}", "address": "127.0.0.1",
                           "provider": "simulated", "cores": 4, "labels": ["sim"],
                           "root_dir": str(tmp / "nodes" / f"sim{i:03d}")}
                          for i in range(NODES)])
        client.create_pool({"id": "simpool", "vmSize": "sim", "targetDedicatedNodes": NODES,
                            "taskSlotsPerNode": 4})
        nodes = client.wait_for_pool("simpool", timeout_s=300)
        assert len(nodes) == NODES
        assert {n.state for n in nodes} == {"idle"}, {(n.id, n.state) for n in nodes}
        yield client, tmp


def _done(client: BatchClient, job: str, n: int) -> dict[str, int]:
    return wait_until(lambda: (c := client.get_task_counts(job))["completed"] == n and c,
                      timeout_s=300, interval_s=0.2, what=f"{n} tasks of {job} completed")


def test_a_job_of_thousands_of_tasks_completes_with_correct_counts(sim: Any) -> None:
    client, _ = sim
    client.create_job({"id": "many", "poolInfo": {"poolId": "simpool"}})
    n = 4000
    client.create_tasks("many", [{"id": f"t{i:05d}",
                                  "commandLine": "exit 3" if i % 20 == 0 else "sleep 0.01",
                                  "constraints": {"maxTaskRetryCount": 2}}
                                 for i in range(n)])
    counts = _done(client, "many", n)
    assert counts["succeeded"] == n - n // 20 and counts["failed"] == n // 20, counts
    failed = client.list_tasks("many", filter="executionInfo/result eq 'failure'")
    assert len(failed) == n // 20
    for task in failed:
        assert task.execution_info.exit_code == 3, (task.id, task.execution_info.failure_info)
        assert task.execution_info.retry_count == 2  # retried as Batch does
        assert task.execution_info.failure_info.code == "FailureExitCode"
    ok = client.get_task("many", "t00001")
    assert ok.execution_info.exit_code == 0 and ok.execution_info.retry_count == 0
    assert ok.node_info.pool_id == "simpool" and ok.node_info.node_id.startswith("sim")
    # the tasks were spread over the pool's nodes
    nodes_used = {t.node_info.node_id for t in client.list_tasks("many", select="id,nodeInfo")}
    assert len(nodes_used) > NODES // 2


def test_wall_clock_limit_and_terminate_end_simulated_runs(sim: Any) -> None:
    client, _ = sim
    client.create_job({"id": "limits", "poolInfo": {"poolId": "simpool"}})
    client.create_tasks("limits", [
        {"id": "slow", "commandLine": "sleep 60", "constraints": {"maxWallClockTime": "PT1S"}},
        {"id": "stopme", "commandLine": "sleep 600"},
    ])
    wait_until(lambda: client.get_task("limits", "stopme").state == "running", 60,
               what="stopme running")
    client.terminate_task("limits", "stopme")
    _done(client, "limits", 2)
    slow = client.get_task("limits", "slow")
    assert slow.execution_info.failure_info.code == "TaskEnded"
    assert "maxWallClockTime" in slow.execution_info.failure_info.message
    stopped = client.get_task("limits", "stopme")
    assert stopped.execution_info.failure_info.code == "TaskEnded"


def test_other_command_lines_run_as_real_processes(sim: Any) -> None:
    client, tmp = sim
    client.create_job({"id": "real", "poolInfo": {"poolId": "simpool"}})
    script = "import os, sys; open('out.txt', 'w').write(os.environ['AZ_BATCH_TASK_ID']); sys.exit(5)"
    client.create_tasks("real", [
        {"id": "py", "commandLine": f'{sys.executable} -c "{script}"'},
        {"id": "missing", "commandLine": "/no/such/program --flag"},
    ])
    _done(client, "real", 2)
    py = client.get_task("real", "py")
    assert py.execution_info.exit_code == 5
    wd = tmp / "nodes" / py.node_info.node_id / py.node_info.task_root_directory / "wd"
    assert (wd / "out.txt").read_text() == "py"
    missing = client.get_task("real", "missing")
    assert missing.execution_info.failure_info.code == "CommandProgramNotFound"


def test_removed_nodes_leave_the_fleet(sim: Any) -> None:
    client, tmp = sim
    client.add_hosts([{"name": f"extra{i}", "address": "127.0.0.1", "provider": "simulated",
                       "cores": 2, "labels": ["extra"], "root_dir": str(tmp / "extra" / str(i))}
                      for i in range(3)])
    client.create_pool({"id": "small", "vmSize": "extra", "targetDedicatedNodes": 3,
                        "taskSlotsPerNode": 2})
    assert {n.state for n in client.wait_for_pool("small", timeout_s=120)} == {"idle"}
    def running() -> set[str]:
        return {f"extra{i}" for i in range(3)
                if FLEET.running(str(tmp / "extra" / str(i)), f"extra{i}")}
    assert running() == {"extra0", "extra1", "extra2"}
    client.resize_pool("small", 1)
    wait_until(lambda: len(client.list_nodes("small")) == 1, 60, what="pool shrunk")
    assert len(running()) == 1
