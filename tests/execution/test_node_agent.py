"""The node agent is a Dask WorkerPlugin of the node process, not module state.

A service on a one-host SSH testbed (127.0.12.1; real sshd, real Dask, the node
process started by the ssh provider) runs tasks and serves node files through
the agent that ``python -m hpcbatch.node`` registered on its worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.execution import agent
from tests.helpers import service_on_testbed, wait_until

MODULE_STATE = ("NODE", "_BASE_ENV", "_EXECUTOR", "_WORKER", "_LOOP_THREAD", "_NOTIFY_SCHEDULED",
                "_STREAM_GENERATION", "_RUNNING", "_KILLED", "_LOCK", "_PENDING",
                "_STREAM_WAITERS", "_JOB_DIRS", "_EXECUTOR_LOCK")
"""The module globals the agent kept its state in before it became a plugin."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """A service with one testbed host, a one-node pool on it, ready."""
    with service_on_testbed(tmp_path_factory.mktemp("agent"), 1, "127.0.12.1") as (client, bed,
                                                                                  thread):
        client.create_pool({"id": "agents", "vmSize": "testbed", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 2})
        [node] = client.wait_for_pool("agents", timeout_s=120)
        assert node.state == "idle", (node.state, node.errors)
        yield client, bed, thread, node.id


def worker_of(thread: Any, node_id: str) -> str:
    node = thread.runtime.service.pool_manager.node("agents", node_id)
    assert node is not None and node.worker
    return str(node.worker)


def test_the_node_process_registers_its_agent_plugin(env) -> None:
    _, bed, thread, node_id = env
    engine = thread.runtime.engine
    info = thread.call(engine.call(worker_of(thread, node_id), "node_info"))
    assert info["node_id"] == node_id and info["pool_id"] == "agents"
    assert info["root_dir"] == str(Path(bed.hosts[0].root_dir).resolve())
    assert [n for n in MODULE_STATE if hasattr(agent, n)] == []  # no agent state in module globals


def test_tasks_and_node_files_go_through_the_agent(env) -> None:
    client, _, _, node_id = env
    client.create_job({"id": "agentjob", "poolInfo": {"poolId": "agents"}})
    client.create_tasks("agentjob", [
        {"id": "plain", "commandLine": "/bin/sh -c 'echo $AZ_BATCH_NODE_ID'"},
        {"id": "with-file", "commandLine": "/bin/cat data.txt",  # a thread-pool run
         "resourceFiles": [{"httpUrl": "data:,hi", "filePath": "data.txt"}]},
    ])
    counts = client.wait_for_tasks("agentjob", timeout_s=120)
    plain = client.get_task("agentjob", "plain")
    assert plain.execution_info.exit_code == 0, plain.execution_info
    assert client.download_task_file("agentjob", "plain", "stdout.txt") == f"{node_id}\n".encode()
    assert counts["succeeded"] == 2, counts
    names = {f.name for f in client.list_node_files("agents", node_id, recursive=True)}
    assert "workitems/agentjob/job-1/plain/stdout.txt" in names
    assert client.download_node_file(
        "agents", node_id, "workitems/agentjob/job-1/plain/stdout.txt") == f"{node_id}\n".encode()


def test_engine_calls_reach_the_agent(env) -> None:
    _, bed, thread, node_id = env
    engine = thread.runtime.engine
    worker = worker_of(thread, node_id)
    root = Path(bed.hosts[0].root_dir)
    (root / "shared" / "note.txt").write_bytes(b"0123456789")
    entries = thread.call(engine.list_files(worker, "shared"))
    assert [(e["name"], e["size_bytes"]) for e in entries] == [("note.txt", 10)]
    assert thread.call(engine.read_file(worker, "shared/note.txt", 2, 3)) == b"234"
    assert thread.call(engine.read_file(worker, "../outside", 0, None)) is None
    (root / "workitems" / "gone" / "job-1" / "t").mkdir(parents=True)
    assert thread.call(engine.remove_dirs(worker, ["workitems/gone", "workitems/none"])) == 1
    assert not (root / "workitems" / "gone").exists()
    assert thread.call(engine.kill_run(worker, "no-such-run")) is False


def test_terminating_a_task_kills_it_through_the_agent(env) -> None:
    client, _, _, _ = env
    client.create_job({"id": "killjob", "poolInfo": {"poolId": "agents"}})
    client.create_task("killjob", {"id": "sleeper", "commandLine": "/bin/sleep 60"})
    wait_until(lambda: client.get_task("killjob", "sleeper").state == "running", 60,
               what="the task to run")
    started = time.monotonic()
    client.terminate_task("killjob", "sleeper")
    wait_until(lambda: client.get_task("killjob", "sleeper").state == "completed", 30,
               what="the task to end")
    assert time.monotonic() - started < 30
    info = client.get_task("killjob", "sleeper").execution_info
    assert info.failure_info is not None and info.failure_info.code == "TaskEnded"


def test_the_provider_checks_the_node_process(env) -> None:
    _, _bed, thread, node_id = env
    pm = thread.runtime.service.pool_manager
    node = pm.node("agents", node_id)
    assert node is not None and node.root_dir
    assert pm.provisioning.provider(node.host).check(node.root_dir) is True
