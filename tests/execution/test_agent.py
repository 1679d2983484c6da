"""NodeAgent on its own (no Dask worker): its state is its own, not the module's."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpcbatch.execution import agent
from hpcbatch.execution.agent import EXIT_CODE_TASK_ENDED, Launch, NodeAgent
from hpcbatch.execution.environment import NodeIdentity

LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def make_agent(root: Path, node_id: str) -> NodeAgent:
    root.mkdir(parents=True, exist_ok=True)
    return NodeAgent(NodeIdentity(node_id=node_id, pool_id="p", root_dir=str(root),
                                  account_name="acct", account_url="http://x"),
                     base_env={b"PATH": b"/usr/bin:/bin", b"KEEP": b"kept"})


def test_the_agent_module_holds_no_mutable_state() -> None:
    mutable = [name for name, value in vars(agent).items()
               if not name.startswith("__")
               and isinstance(value, (dict, list, set, ThreadPoolExecutor, *LOCK_TYPES))]
    assert mutable == []
    assert not hasattr(agent, "NODE")


def test_two_agents_in_one_process_keep_apart(tmp_path: Path) -> None:
    a, b = make_agent(tmp_path / "a", "node-a"), make_agent(tmp_path / "b", "node-b")
    launch = Launch(key="k1", task_dir="workitems/j/job-1/t",
                    command_line="/bin/sh -c 'echo $AZ_BATCH_NODE_ID $KEEP'")
    out_a = a.run_task(launch)
    assert out_a.exit_code == 0 and out_a.node_id == "node-a"
    assert (tmp_path / "a" / launch.task_dir / "stdout.txt").read_text() == "node-a kept\n"
    assert not (tmp_path / "b" / "workitems").exists()
    # Outcomes wait in the agent that produced them (no worker: no stream yet).
    assert [o["key"] for o in a.pending_outcomes()] == ["k1"] and b.pending_outcomes() == []
    assert [e["name"] for e in a.files.list_files("workitems/j/job-1/t")] == [
        "stderr.txt", "stdout.txt", "wd"]
    assert b.files.list_files("workitems/j/job-1/t") == []
    assert a.files.read_file(f"{launch.task_dir}/stdout.txt", 7) == b"kept\n"
    assert b.files.read_file(f"{launch.task_dir}/stdout.txt") is None
    assert a.files.remove_dirs(["workitems/j"]) == 1 and b.files.remove_dirs(["workitems/j"]) == 0


def test_kill_task_ends_only_its_agents_run(tmp_path: Path) -> None:
    a, b = make_agent(tmp_path / "a", "node-a"), make_agent(tmp_path / "b", "node-b")
    launch = Launch(key="sleep", task_dir="workitems/j/job-1/s", command_line="/bin/sleep 30")
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(a.run_task, launch)
        fb = pool.submit(b.run_task, launch)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (a.processes.running() and b.processes.running()):
            time.sleep(0.02)
        assert a.kill_task("sleep") is True
        outcome = fa.result(10)
        assert outcome.exit_code == EXIT_CODE_TASK_ENDED
        assert outcome.failure_info is not None and outcome.failure_info["code"] == "TaskEnded"
        assert not fb.done()  # b's run of the same key lives on
        assert b.kill_all() == 1
        assert fb.result(10).exit_code == EXIT_CODE_TASK_ENDED


def test_the_call_handler_runs_allowlisted_operations_with_plain_values(tmp_path: Path) -> None:
    import asyncio

    import msgpack

    node_agent = make_agent(tmp_path, "node-w")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "f").write_bytes(b"abc")

    def call(op: str, **args: object) -> dict:
        reply = asyncio.run(node_agent.call(op, args))
        assert msgpack.unpackb(msgpack.packb(reply)) == reply  # msgpack only, nothing pickled
        return reply

    assert call("read_file", rel_path="shared/f", offset=1) == {"status": "OK", "result": b"bc"}
    listed = call("list_files", rel_dir="shared")["result"]
    assert [e["name"] for e in listed] == ["f"] and isinstance(listed[0]["mtime"], float)
    assert call("node_info")["result"]["node_id"] == "node-w"
    assert call("kill_task", key="none") == {"status": "OK", "result": False}
    assert set(call("node_sample")["result"]) >= {"CPUPercent", "MemoryBytes"}
    refused = call("run", function=b"...")
    assert refused["status"] == "error" and "unknown node agent operation" in refused["message"]
    bad = call("read_file")  # no rel_path
    assert bad["status"] == "error" and "KeyError" in bad["message"]


def test_the_node_pythons_bin_dir_comes_first_on_the_task_path(tmp_path) -> None:
    import os
    import sys

    from hpcbatch.execution.agent import base_environment, python_first_path

    venv_python = str(tmp_path / "venv" / "bin" / "python")
    assert python_first_path("/usr/bin:/bin", venv_python) == f"{tmp_path}/venv/bin:/usr/bin:/bin"
    # Already there, further down: moved first, not repeated.
    assert python_first_path(f"/usr/bin:{tmp_path}/venv/bin:/bin", venv_python) == \
        f"{tmp_path}/venv/bin:/usr/bin:/bin"
    path = base_environment()[b"PATH"].decode().split(os.pathsep)
    assert path[0] == os.path.dirname(sys.executable)
    assert path.count(path[0]) == 1
