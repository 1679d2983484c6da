"""Task processes never outlive the node agent that started them (issue 17 item 4, node side).

On a one-host SSH testbed (127.0.18.1; real sshd, the node process started by
the ssh provider), tasks that leave grandchildren behind (in their process
group, and in a session of their own) are running when the node's agent
process is killed with SIGKILL: every one of their processes is gone within
seconds (polled with psutil). Without a testbed: a new agent incarnation of a
node root kills what an earlier one left; outcomes carry the task's resource
usage through the wire format.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from hpcbatch.execution import agent, spawn
from hpcbatch.execution.agent import Launch, NodeAgent
from hpcbatch.execution.environment import NodeIdentity
from hpcbatch.execution.node import PID_FILE as NODE_PID_FILE
from tests.helpers import service_on_testbed, wait_until


def task_processes(root: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose environment says they are tasks of node root ``root``."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
            if env.get("AZ_BATCH_NODE_ROOT_DIR") == root and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def node_process(root: str) -> psutil.Process:
    """The node process serving node root ``root``, by the pid it records in ``root/node.pid``."""
    try:
        return psutil.Process(int((Path(root) / NODE_PID_FILE).read_text().strip()))
    except (OSError, ValueError, psutil.NoSuchProcess) as exc:
        raise AssertionError(f"no node process for {root}: {exc}") from exc


def test_a_killed_agent_takes_its_tasks_and_their_grandchildren_along(tmp_path: Path) -> None:
    with service_on_testbed(tmp_path, 1, "127.0.18.1") as (client, bed, _):
        client.create_pool({"id": "mortal", "vmSize": "testbed", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 3})
        [node] = client.wait_for_pool("mortal", timeout_s=120)
        assert node.state == "idle", (node.state, node.errors)
        root = str(Path(bed.hosts[0].root_dir).resolve())
        client.create_job({"id": "j", "poolInfo": {"poolId": "mortal"}})
        client.create_tasks("j", [
            # grandchildren in the task's process group
            {"id": "group", "commandLine": "/bin/sh -c 'sleep 300 & sleep 300 & wait'"},
            # a grandchild in a session of its own (left the group), and one more level down
            {"id": "session", "commandLine":
                "/bin/sh -c 'setsid /bin/sh -c \"sleep 300 & sleep 300\" & sleep 300'"},
            # a keep-alive that ignores SIGTERM and SIGHUP
            {"id": "stubborn", "commandLine": "/bin/sh -c 'trap \"\" TERM HUP; sleep 300'"},
        ])

        def all_started() -> list[psutil.Process] | None:
            # 3 shells and 6 sleeps at least (the setsid'd shell may exec its last sleep),
            # in 4 sessions: one of them left its task's session
            ps = task_processes(root)
            sessions = set()
            for p in ps:
                try:
                    sessions.add(os.getsid(p.pid))
                except OSError:
                    return None
            return ps if len(ps) >= 8 and len(sessions) >= 4 else None

        procs = wait_until(all_started, timeout_s=60, what="the tasks' processes")
        assert {p.environ().get("AZ_BATCH_TASK_ID") for p in procs} == {
            "group", "session", "stubborn"}
        agent_proc = node_process(root)
        agent_proc.send_signal(signal.SIGKILL)
        agent_proc.wait(10)
        wait_until(lambda: not task_processes(root), timeout_s=10, interval_s=0.05,
                   what="every task process to end after the agent's SIGKILL")
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)


def test_a_new_incarnation_kills_what_an_earlier_one_left(tmp_path: Path) -> None:
    root = str(tmp_path / "node")
    other_root = str(tmp_path / "node-2")
    leftover = subprocess.Popen(["/bin/sleep", "300"], start_new_session=True, env={
        **os.environ, spawn.AGENT_TAG: f"1.2@{root}"})
    bystander = subprocess.Popen(["/bin/sleep", "300"], start_new_session=True, env={
        **os.environ, spawn.AGENT_TAG: f"1.2@{other_root}"})
    try:
        warden = spawn.Warden(root)
        assert warden.start() == 1
        assert leftover.wait(10) == -signal.SIGKILL
        assert bystander.poll() is None  # another node root's task lives on
        warden.stop()
        assert warden.watchdog is not None and warden.watchdog.wait(10) == 0
    finally:
        bystander.kill()
        bystander.wait()


def test_outcomes_carry_the_tasks_resource_usage(tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    a = NodeAgent(NodeIdentity(node_id="n", pool_id="p", root_dir=str(root),
                               account_name="acct", account_url="http://x"),
                  base_env={b"PATH": os.fsencode(os.defpath)})
    try:
        out = a.run_task(Launch(key="busy", task_dir="workitems/j/job-1/busy", command_line=(
            f"{sys.executable} -c \"b = bytearray(64 << 20); open('f', 'wb').write(b'x' * 4096)\"")))
        assert out.exit_code == 0, out.failure_info
        usage = out.usage
        assert usage is not None and set(usage) == {
            "user_cpu_s", "kernel_cpu_s", "read_bytes", "write_bytes", "read_ops", "write_ops",
            "max_rss_bytes"}
        assert usage["user_cpu_s"] + usage["kernel_cpu_s"] > 0
        assert usage["max_rss_bytes"] >= 64 << 20
        back = agent.outcome_from_wire(agent.outcome_to_wire(out))
        assert back.usage == usage
        # a run whose program cannot start has no usage
        missing = a.run_task(Launch(key="none", task_dir="workitems/j/job-1/none",
                                    command_line="/no/such/program"))
        assert missing.exit_code is None and missing.usage is None
    finally:
        a.teardown(None)


def test_the_wire_refuses_malformed_usage() -> None:
    now = datetime.now(UTC)
    wire = agent.outcome_to_wire(agent.Outcome(0, now, now, None, "/t", "n", None))
    assert agent.outcome_from_wire(wire).usage is None
    assert agent.outcome_from_wire({k: v for k, v in wire.items() if k != "usage"}).usage is None
    for bad in ({"user_cpu_s": "1"}, {"user_cpu_s": True}, [1.0], "x"):
        with pytest.raises(TypeError):
            agent.outcome_from_wire({**wire, "usage": bad})


def test_an_agent_teardown_stops_its_watchdog(tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    a = NodeAgent(NodeIdentity(node_id="n", pool_id="p", root_dir=str(root),
                               account_name="acct", account_url="http://x"),
                  base_env={b"PATH": os.fsencode(os.defpath)})
    out = a.run_task(Launch(key="daemon", task_dir="workitems/j/job-1/d", keep_background=True,
                            command_line="/bin/sh -c 'sleep 300 & exit 0'"))
    assert out.exit_code == 0
    left = wait_until(lambda: [p for p in psutil.process_iter(["pid"]) if _run_key(p) == "daemon"],
                      timeout_s=10, what="the background process")
    a.teardown(None)
    watchdog = a.processes.warden.watchdog
    assert watchdog is not None and watchdog.wait(10) == 0
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left):
        assert time.monotonic() < deadline, "the background process outlived its agent"
        time.sleep(0.05)


def _run_key(p: psutil.Process) -> str | None:
    try:
        return p.environ().get(agent.RUN_TAG)
    except psutil.Error:
        return None
