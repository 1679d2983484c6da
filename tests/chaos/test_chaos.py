"""Fault campaign: faults injected while thousands of short tasks run on the SSH testbed.

With ``CHAOS_TASKS`` tasks in flight (default 3,000: what finishes, faults
included, in about two minutes on two shared cores; issue 17 asked for 10,000,
``HPCBATCH_CHAOS_TASKS=10000`` runs that by hand), the test

1. SIGKILLs the service and restarts it on the same state dir (the old Dask
   scheduler and node agents must end by themselves before the restart);
2. SIGKILLs a node agent running a task (its task processes must die with it,
   the node must come back ``idle`` by itself);
3. stops a node's sshd and starts it again (the node shows ``NodeUnreachable``
   while it is down, and not afterwards);
4. fills the disk of the service's state dir (a small tmpfs; skipped, and said,
   where this process cannot mount one);

and then checks that every accepted task completed exactly once in the
record (its ``requeueCount``/``retryCount`` explain every extra start event),
that the event log and the store agree, that no process of an old
incarnation is left, and that the service answered throughout or came back
within seconds. The counts are printed (``-s`` shows them; they are also in
the test's captured output on failure).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from hpcbatch.batch.statedir import EVENTS_FILE
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.client.state import operator_key
from hpcbatch.execution.agent import RUN_TAG
from hpcbatch.testing import testbed as tb
from tests.helpers import account_key, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

CHAOS_TASKS = int(os.environ.get("HPCBATCH_CHAOS_TASKS") or 3000)
NODES = 4
SLOTS = 2

FAST_ENV = {
    "HPCBATCH_NODE_PROBE_INTERVAL_S": "0.5",
    "HPCBATCH_NODE_RECOVERY_FIRST_DELAY_S": "0.2",
    "HPCBATCH_NODE_RECOVERY_MAX_DELAY_S": "1",
    "HPCBATCH_NODE_RECOVERY_SLOW_DELAY_S": "1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """The service as its own process (so it can be SIGKILLed), restartable on one state dir."""

    def __init__(self, state: Path, port: int, log: Path) -> None:
        self.state, self.port, self.log = state, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnations = 0

    def start(self) -> None:
        out = self.log.with_suffix(f".out{self.incarnations}")
        env = {**os.environ, **FAST_ENV}
        with open(out, "wb") as stdout, open(self.log, "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hpcbatch.api.server", "--state-dir", str(self.state),
                 "--port", str(self.port)], stdout=stdout, stderr=stderr, env=env)
        self.incarnations += 1
        wait_until(lambda: out.read_text().strip() or self.proc.poll() is not None,
                   timeout_s=120, what="the service to start")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Poller(threading.Thread):
    """Asks the service for the pool every 0.2 s; records the longest time it did not answer."""

    def __init__(self, client: BatchClient) -> None:
        super().__init__(daemon=True)
        self.client, self.stop = client, threading.Event()
        self.requests = self.failures = 0
        self.longest_gap_s = 0.0

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self.stop.is_set():
            self.requests += 1
            try:
                self.client.get_pool("chaos")
                now = time.monotonic()
                self.longest_gap_s = max(self.longest_gap_s, now - last_ok)
                last_ok = now
            except Exception:  # noqa: BLE001 - any failure counts as not answering
                self.failures += 1
            self.stop.wait(0.2)


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _agent_pids(bed: tb.Testbed) -> dict[str, int]:
    pids = {}
    for host in bed.hosts:
        with suppress(OSError, ValueError):
            pids[host.name] = int(Path(host.root_dir, "node.pid").read_text())
    return pids


def _ours(tmp: Path) -> dict[str, list[psutil.Process]]:
    """Processes of this test's service, scheduler, node agents and tasks, by kind."""
    found: dict[str, list[psutil.Process]] = collections.defaultdict(list)
    for proc in psutil.process_iter(["cmdline", "pid"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(tmp) in cmd:
                if "dask_scheduler" in cmd:
                    found["scheduler"].append(proc)
                elif "hpcbatch.node" in cmd:
                    found["agent"].append(proc)
                elif "hpcbatch.api.server" in cmd:
                    found["service"].append(proc)
            if proc.environ().get(RUN_TAG) and str(tmp) in proc.cwd():
                found["task"].append(proc)
        except psutil.Error:
            continue
    return found


def _run_tag(proc: psutil.Process) -> str | None:
    """A process's run tag, or None (also when it exited, or is a zombie, meanwhile)."""
    try:
        return proc.environ().get(RUN_TAG)
    except psutil.Error:
        return None


@contextmanager
def _small_disk(path: Path, size_mb: int) -> Iterator[bool]:
    """Mount a tmpfs of ``size_mb`` on ``path`` when this process may; yield whether it did."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        capture_output=True, check=False).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_faults_lose_nothing_run_nothing_twice_and_leave_no_orphans(tmp_path: Path) -> None:
    faults: collections.Counter[str] = collections.Counter()
    notes: list[str] = []
    state = tmp_path / "state"
    with tb.up(NODES, tmp_path / "testbed", base_address="127.0.88.1") as bed, \
            _small_disk(state, 256) as small_disk:
        service = Service(state, _free_port(), tmp_path / "service.log")
        service.start()
        client = BatchClient(f"http://127.0.0.1:{service.port}", "hpcbatch", account_key(state),
                             operator_key=operator_key(state))
        poller = Poller(client)
        try:
            client.add_hosts([h.model_dump(mode="json") for h in bed.hosts])
            client.create_pool({"id": "chaos", "vmSize": "any", "targetDedicatedNodes": NODES,
                                "taskSlotsPerNode": SLOTS})
            assert {n.state for n in client.wait_for_pool("chaos", timeout_s=180)} == {"idle"}
            poller.start()
            client.create_job({"id": "j", "poolInfo": {"poolId": "chaos"}})
            accepted: set[str] = set()

            def add(ids: list[str], command: str = "/bin/true", job: str = "j") -> int:
                results = client.create_tasks(job, [{"id": i, "commandLine": command}
                                                    for i in ids], raise_on_error=False)
                ok = {r.task_id for r in results if r.status == "success"}
                accepted.update(f"{job}/{i}" for i in ok)
                return len(ok)

            ids = [f"t{i:05d}" for i in range(CHAOS_TASKS)]
            add(ids[: CHAOS_TASKS // 2])

            # 1. SIGKILL the service mid-run; the old scheduler and agents end by themselves.
            wait_until(lambda: client.get_task_counts("j")["completed"] >= CHAOS_TASKS // 10,
                       timeout_s=120, what="a tenth of the tasks done")
            old_sched = int((state / "run" / "dask-scheduler.pid").read_text())
            old_agents = _agent_pids(bed)
            assert _alive(old_sched) and all(map(_alive, old_agents.values()))
            service.kill()
            faults["service SIGKILL"] += 1
            killed = time.monotonic()
            wait_until(lambda: not _alive(old_sched) and not any(map(_alive, old_agents.values())),
                       timeout_s=30, what="the old scheduler and node agents to exit by themselves")
            notes.append(f"old scheduler and {len(old_agents)} node agents exited "
                         f"{time.monotonic() - killed:.1f} s after the service SIGKILL")
            service.start()
            add(ids[CHAOS_TASKS // 2:])  # the rest, to the new incarnation
            client.wait_for_pool("chaos", timeout_s=180)

            # 2. SIGKILL the agent of a node that runs a (longer) task.
            client.create_job({"id": "long", "poolInfo": {"poolId": "chaos"}})
            add(["l0", "l1"], "/bin/sleep 20", job="long")
            task = wait_until(lambda: next((t for t in client.list_tasks("long")
                                            if t.state == "running"), None),
                              timeout_s=120, what="a long task running")
            victim = task.node_info.node_id
            agent = psutil.Process(_agent_pids(bed)[victim])
            wait_until(lambda: [p for p in agent.children(recursive=True) if _run_tag(p)],
                       timeout_s=30, what="its process")
            tree = agent.children(recursive=True)
            agent.kill()
            faults["node agent SIGKILL"] += 1
            wait_until(lambda: client.get_node("chaos", victim).state != "running"
                       or not _alive(agent.pid), timeout_s=30, what="the agent gone")
            leftovers = []
            with suppress(AssertionError):
                wait_until(lambda: not [p for p in tree if _alive(p.pid)], timeout_s=5)
            leftovers = [p.pid for p in tree if _alive(p.pid)]
            wait_until(lambda: client.get_node("chaos", victim).state in ("idle", "running")
                       and _agent_pids(bed).get(victim) != agent.pid, timeout_s=120,
                       what="the node back by itself")

            # 3. Stop a node's sshd, then start it again.
            down = next(h.name for h in bed.hosts if h.name != victim)
            bed.kill(down)
            faults["sshd stopped"] += 1

            def unreachable() -> bool:
                return any(e.code == "NodeUnreachable"
                           for e in client.get_node("chaos", down).errors or [])

            wait_until(unreachable, timeout_s=60, what="NodeUnreachable")
            bed.start(down)
            wait_until(lambda: not unreachable(), timeout_s=60, what="NodeUnreachable cleared")

            # 4. The state dir's disk fills up for a few seconds.
            full_window: tuple[datetime, datetime] | None = None
            if small_disk:
                full_from = datetime.now(UTC)
                stat = os.statvfs(state)
                filler = state / "filler"
                with open(filler, "wb") as f, suppress(OSError):
                    f.write(b"\0" * (stat.f_bavail * stat.f_frsize))
                    f.flush()
                    os.fsync(f.fileno())
                faults["store disk full"] += 1
                refused = 0
                with suppress(BatchError, OSError):
                    refused = 5 - add([f"full{i}" for i in range(5)])
                time.sleep(3)
                filler.unlink()
                full_window = (full_from - timedelta(seconds=5),
                               datetime.now(UTC) + timedelta(seconds=5))
                notes.append(f"disk full: {refused} of 5 task adds refused")
            else:
                notes.append("disk-full fault skipped: this process cannot mount a tmpfs")

            # Everything accepted completes, exactly once in the record.
            for job in ("j", "long"):
                client.wait_for_tasks(job, timeout_s=300)
            poller.stop.set()
            tasks = {f"{job}/{t.id}": t for job in ("j", "long") for t in client.list_tasks(job)}
            assert accepted <= set(tasks), sorted(accepted - set(tasks))[:5]
            bad = [k for k in accepted if tasks[k].state != "completed"
                   or tasks[k].execution_info.result != "success"]
            assert not bad, bad[:5]

            starts: collections.Counter[str] = collections.Counter()
            completes: collections.Counter[str] = collections.Counter()
            for line in (state / EVENTS_FILE).read_text().splitlines():
                event = json.loads(line)
                key = f"{event['body'].get('jobId')}/{event['body'].get('id')}"
                if event["name"] == "TaskStartEvent":
                    starts[key] += 1
                elif event["name"] == "TaskCompleteEvent":
                    completes[key] += 1
                    info = event["body"]["executionInfo"]
                    assert key not in tasks or (
                        info.get("exitCode"), str(info.get("result")).lower()) == (
                        tasks[key].execution_info.exit_code, tasks[key].execution_info.result
                    ), (key, info)  # the event log writes "Success" as Batch's does
            unexplained = {k: starts[k] for k in accepted
                           if starts[k] > 1 + tasks[k].execution_info.requeue_count
                           + tasks[k].execution_info.retry_count}
            assert not unexplained, list(unexplained.items())[:5]
            twice = {k: n for k, n in completes.items() if n != 1 and k in accepted}
            assert not twice, list(twice.items())[:5]
            # A complete event that found the disk full is dropped whole (no torn line);
            # only tasks that ended while it was full may lack one.
            missing = [k for k in accepted if completes[k] == 0]
            unexplained_missing = [k for k in missing if full_window is None or not (
                full_window[0] <= _utc(tasks[k].execution_info.end_time) <= full_window[1])]
            assert not unexplained_missing, unexplained_missing[:5]
            notes.append(f"{len(missing)} complete events lost to the full disk")
            requeued = sum(t.execution_info.requeue_count for t in tasks.values())

            # No process of an old incarnation is left.
            current = _ours(tmp_path)
            live_agents = set(_agent_pids(bed).values())
            sched = int((state / "run" / "dask-scheduler.pid").read_text())
            stale = {"service": [p.pid for p in current["service"] if p.pid != service.proc.pid],
                     "scheduler": [p.pid for p in current["scheduler"] if p.pid != sched],
                     "agent": [p.pid for p in current["agent"] if p.pid not in live_agents],
                     "task": [p.pid for p in current["task"] if p.pid not in leftovers]}
            assert not any(stale.values()), stale

            print(f"\nchaos: faults injected {sum(faults.values())} ({dict(faults)}); "
                  f"tasks checked {len(accepted)} of {len(tasks)} in the store; "
                  f"starts {sum(starts.values())}, requeues {requeued}; "
                  f"poll requests {poller.requests}, failed {poller.failures}, "
                  f"longest gap {poller.longest_gap_s:.1f} s; " + "; ".join(notes))
            assert poller.longest_gap_s < 60, "the service did not come back within a minute"
            # Depends on the `dispatch` branch (task trees die with their agent).
            assert not leftovers, (f"task processes {leftovers} outlived their SIGKILLed agent "
                                   "(needs the dispatch branch: tasks die with their agent)")
        finally:
            poller.stop.set()
            service.stop()
