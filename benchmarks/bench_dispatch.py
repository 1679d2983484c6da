"""Dispatch throughput of ``/bin/true`` tasks on a 4-node SSH testbed pool.

N tasks (2,000; ``--quick`` 300) are added to a job on a pool of 4 testbed
nodes (``vmSize`` ``testbed``), and the time from the first add until every
task has completed is measured (the SDK's ``wait_for_tasks``: long polls of
Job - Get Task Counts that answer as the last task completes).
``taskSlotsPerNode`` 2 is the headline; 1 and 4 are reported as well. The
headline runs ``--repeat`` times (3), each on a new pool: this VM's speed
drifts by a fifth from one minute to the next (the first pool after the
testbed starts is often the slowest), so the targets are judged on the
median rate and the median CPU of those runs, and every run is printed. The
service runs in this process; the user's side (add, polls) runs as a process
of its own (``_dispatch_client.py``), as a user's script would, and its CPU is
reported apart.

Baseline in the same run: the raw ``subprocess`` spawn rate of this machine,
``/bin/true`` started N times with ``subprocess.run`` in one loop and from 2
threads. Targets (issue 14): dispatch >= 50% of the 2-thread rate, and at
most 1.3 CPU ms per task across the service, the Dask scheduler and the node
processes (tasks and the agents' watchdogs included). Also measured in the
same run: the CPU of one raw spawn (parent and child: what no dispatcher can
save), and the cost of the files every run needs (task directory, ``wd``,
``stdout.txt``, ``stderr.txt``) on the file system of the node roots — on a
slow file system this, not the pipeline, dominates (``TMPDIR`` chooses it).

Diagnostic floor (headline slot count only): the same N launches sent
straight to the pool's node agents through the service's engine
(``engine.launch``), one launch a message and ``slots`` in flight per node,
with no REST, no store and no scheduling pass: what the run path itself costs
when every run travels alone, as it does when a pass starts one run a node.
``--batching K,...`` runs the same path with one lane a node and K launches a
message (so K in flight): what the run path costs when runs and outcomes
travel together; it also times a node's CPU per empty message, sent back to
back and one a millisecond (what a wake-up costs).

    python benchmarks/bench_dispatch.py [--quick] [--tasks N] [--slots 2,1,4] [--repeat 3]
                                        [--base-address 127.0.7.1] [--user-switching]
                                        [--batching K,K,...]
                                        [--profile PATH] [--json PATH]

``--profile PATH`` samples the service process and each node process with
py-spy during the headline pool's timed phase (``PATH.service.txt``,
``PATH.<node>.txt``: collapsed stacks).

``--user-switching`` makes the node roots reachable by task users, so that
the testbed's nodes (running as root) start every task as the pool's
non-admin auto-user; without it tasks share the node agent's identity (the
spawn path without ``setuid``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from _common import (
    node_pids,
    node_python,
    parse_args,
    service,
    start_profile,
    stop_profile,
    table,
    verdict,
    write_json,
)

from hpcbatch.api.server import ServiceThread
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.execution import agent, spawn
from hpcbatch.testing import testbed

TARGET_FRACTION = 0.5
"""Of the two-thread raw spawn rate (issue 14 item 5)."""
TARGET_CPU_MS = 1.3
"""CPU per task across service, Dask scheduler and nodes (tasks included)."""
NODES = 4
BASE_ADDRESS = "127.0.7.1"
CLIENT = Path(__file__).resolve().parent / "_dispatch_client.py"
POLL_S = 0.05
SERVICE = "service"
NODE_OWN_USER = "node processes' own user time"
NODE_OWN_SYSTEM = "node processes' own system time"
NODE_SPLIT = (NODE_OWN_USER, NODE_OWN_SYSTEM)
IDLE_S = 2.0
"""Seconds of the idle pool's background CPU measured before each timed run."""


def raw_spawn(n: int, threads: int) -> float:
    """Seconds to run ``/bin/true`` n times from ``threads`` threads."""
    def worker(count: int) -> None:
        for _ in range(count):
            subprocess.run(["/bin/true"], check=True)

    shares = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    t0 = time.perf_counter()
    if threads == 1:
        worker(n)
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(worker, shares))
    return time.perf_counter() - t0


def raw_spawn_cpu_ms(n: int) -> float:
    """CPU ms per ``/bin/true`` run from one loop, the parent's and the child's together."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    raw_spawn(n, 1)
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
               for a, b in zip(after, before)) / n * 1e3


def task_files_cost(folder: Path, n: int) -> dict[str, float]:
    """CPU and wall ms per task for the files every run makes on the node roots' file system.

    A task directory, its ``wd`` and its ``stdout.txt``/``stderr.txt`` (what the
    agent creates before the process starts), made n times in ``folder``.

    The files are left in place: on an ext4 file system without a journal, every
    new inode is placed past the inodes deleted in the last minute or more
    (``recently_deleted`` in the kernel's inode allocator), so deleting
    thousands of them just before the pools run would make each of the nodes'
    files several times dearer than it is (the caller removes them at the end).
    """
    base = folder / "fs-probe"
    base.mkdir()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        tdir = base / f"t{i}"
        os.mkdir(tdir)
        os.mkdir(tdir / "wd")
        for name in ("stdout.txt", "stderr.txt"):
            os.close(os.open(tdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"cpu_ms": cpu / n * 1e3, "wall_ms": wall / n * 1e3}


def engine_path(thread: ServiceThread, slots: int, n: int, per_message: int = 1) -> float:
    """Seconds to run n launches of /bin/true straight through the engine (no REST, no store).

    Each node gets ``slots`` lanes; a lane sends ``per_message`` launches in one
    message (``engine.launch``, as a scheduling pass sends runs) and waits for
    their outcomes before sending the next. ``per_message=1`` is the diagnostic
    floor: what the run path costs with one run a message each way, as a pass
    that starts one run a node sends it. Dask tasks cannot run on guarded node
    workers (docs/security.md, "Nodes"), so no Dask task is involved.
    """
    engine = thread.runtime.engine
    assert engine is not None
    counter = itertools.count()

    async def go() -> float:
        workers = list((await engine.workers()).values())

        async def lane(worker: str, share: int) -> None:
            while share > 0:
                batch = []
                for _ in range(min(per_message, share)):
                    i = next(counter)
                    batch.append(agent.Launch(
                        key=f"floor-{i}", task_dir=f"workitems/floor/job-1/t{i}",
                        command_line="/bin/true", job_id="floor", task_id=f"t{i}"))
                share -= len(batch)
                await asyncio.gather(*await engine.launch(worker, batch))

        lanes = [w for w in workers for _ in range(slots)]
        shares = [n // len(lanes) + (1 if i < n % len(lanes) else 0) for i in range(len(lanes))]
        t0 = time.perf_counter()
        await asyncio.gather(*(lane(w, k) for w, k in zip(lanes, shares)))
        return time.perf_counter() - t0

    return float(thread.call(go(), 600))


def message_cost(thread: ServiceThread, testbed_dir: Path, n: int = 2000) -> dict[str, float]:
    """The first node's CPU µs per empty ``hpcbatch_exchange`` message: sent back to back,
    and one a millisecond (the node sleeps between two): what a wake-up costs."""
    engine = thread.runtime.engine
    assert engine is not None
    node_id, pid = min(node_pids(testbed_dir).items())
    node = psutil.Process(pid)
    empty = pickle.dumps([], protocol=5)
    out = {}
    for mode, pause in (("back_to_back", None), ("one_a_ms", 0.001)):
        async def send(pause: float | None = pause) -> None:
            workers = await engine.workers()  # by worker name: "{node id}@{incarnation}"
            [worker] = [a for name, a in workers.items() if name.split("@")[0] == node_id]
            rpc = engine.nodes(worker)
            for _ in range(n):
                await rpc.hpcbatch_exchange(launches=empty, reply=False)
                if pause is not None:
                    await asyncio.sleep(pause)
            await asyncio.sleep(0.3)  # the last messages are read

        before = node.cpu_times()
        thread.call(send(), 600)
        after = node.cpu_times()
        out[mode] = (after.user + after.system - before.user - before.system) / n * 1e6
    return out


class CpuMeter:
    """CPU seconds used by the service process, the Dask scheduler and the node processes.

    CPU time is what the pipeline costs per task however loaded the machine
    is (wall-clock figures on a shared 2-core machine are not). Node
    processes include their reaped children: the task processes themselves.
    """

    def __init__(self, thread: ServiceThread, testbed_dir: Path) -> None:
        engine = thread.runtime.engine
        assert engine is not None and engine.proc is not None
        self.groups = {SERVICE: [psutil.Process()],
                       "Dask scheduler": [psutil.Process(engine.proc.pid)],
                       "4 node processes + tasks": [
                           # node processes by the pid each records in its root (they are
                           # forked by `python -m hpcbatch.node --launch`, whose command
                           # line names no root), plus the agents' watchdogs
                           *(psutil.Process(pid) for pid in node_pids(testbed_dir).values()),
                           *(p for p in psutil.process_iter(["cmdline"])
                             if spawn.AGENT_TAG in (p.info["cmdline"] or [])
                             and str(testbed_dir) in " ".join(p.info["cmdline"] or []))]}
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, procs in self.groups.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    pass
            out[name] = total
        # The node group's split: the node processes' own user and system time
        # (their tasks are reaped children, counted in the total above).
        own_user = own_system = 0.0
        for p in self.groups["4 node processes + tasks"]:
            try:
                t = p.cpu_times()
                own_user += t.user
                own_system += t.system
            except psutil.Error:
                pass
        out[NODE_OWN_USER] = own_user
        out[NODE_OWN_SYSTEM] = own_system
        return out

    def per_task_ms(self, n: int) -> dict[str, float]:
        """CPU ms per task of each group since this meter was made (the node split apart)."""
        return {k: v for k, v in self.all_per_task_ms(n).items() if k not in NODE_SPLIT}

    def all_per_task_ms(self, n: int) -> dict[str, float]:
        """As :meth:`per_task_ms`, with the node processes' own user and system time."""
        end = self._read()
        return {k: (end[k] - self.start[k]) / n * 1e3 for k in end}



def _get(obj: Any, attr: str) -> Any:
    """A property of a model, or of its wire dict (camelCase), or None."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        head, *rest = attr.split("_")
        return obj.get(head + "".join(w.title() for w in rest))
    return getattr(obj, attr, None)


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(
        str(value)).timestamp()


def delete_pool(client: BatchClient, thread: ServiceThread, pool: str) -> None:
    """Delete a pool; wait until it is gone and its workers have left the Dask scheduler."""
    client.delete_pool(pool)
    engine = thread.runtime.engine
    assert engine is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            client.get_pool(pool)
        except BatchError:
            if not thread.call(engine.workers()):
                return
        time.sleep(0.2)


def _print_logs(thread: ServiceThread, testbed_dir: Path, node_ids: list[str]) -> None:
    """Print the last lines of the failed nodes' logs and of the Dask scheduler's log."""
    logs = [testbed_dir / "nodes" / nid / "node.log" for nid in node_ids]
    logs.append(thread.runtime.state_dir / "run" / "dask-scheduler.log")
    for path in logs:
        try:
            tail = path.read_text(errors="replace").splitlines()[-12:]
        except OSError as exc:
            tail = [str(exc)]
        print(f"  --- {path}\n" + "\n".join(f"    {line}" for line in tail), flush=True)


def run_pool(client: BatchClient, thread: ServiceThread, slots: int, n: int,
             floor: bool, testbed_dir: Path, profile: str | None = None,
             batching: list[int] | None = None, run: int = 0) -> dict[str, Any]:
    """Create a pool with ``slots`` task slots per node, run n tasks, delete the pool
    (``profile``: py-spy the service and the node processes while the tasks run)."""
    pool_errors: list[str] = []
    for attempt in range(2):
        pool = f"bench-r{run}-s{slots}-{attempt}"
        client.create_pool({"id": pool, "vmSize": "testbed", "targetDedicatedNodes": NODES,
                            "taskSlotsPerNode": slots})
        t_pool = time.perf_counter()
        nodes = client.wait_for_pool(pool, timeout_s=180)
        pool_ready_s = time.perf_counter() - t_pool
        time.sleep(1.5)  # one round of the pool manager's worker watch (1 s)
        nodes = client.list_nodes(pool)
        if all(n_.state == "idle" for n_ in nodes) and len(nodes) == NODES:
            break
        bad = [f"{n_.id}={n_.state}: {_get(n_.errors[0] if n_.errors else None, 'message')}"
               for n_ in nodes if n_.state != "idle"]
        pool_errors.extend(bad)
        print(f"  WARNING pool {pool} did not come up whole ({'; '.join(bad)}); retrying",
              flush=True)
        _print_logs(thread, testbed_dir, [n_.id for n_ in nodes if n_.state != "idle"])
        delete_pool(client, thread, pool)
    else:
        raise RuntimeError(f"pool with {slots} slots did not come up: {pool_errors}")
    # Warm-up (not timed): every slot runs a task once.
    warm = f"warm-r{run}-s{slots}"
    client.create_job({"id": warm, "poolInfo": {"poolId": pool}})
    client.create_tasks(warm, [{"id": f"w{i}", "commandLine": "/bin/true"}
                               for i in range(2 * NODES * slots)])
    client.wait_for_tasks(warm, timeout_s=120, poll_interval_s=POLL_S)

    # Background (not per task): the same processes with the pool idle for IDLE_S.
    idle = CpuMeter(thread, testbed_dir)
    t_idle = time.perf_counter()
    time.sleep(IDLE_S)
    idle_s = time.perf_counter() - t_idle
    idle_ms_per_s = {k: v / idle_s for k, v in idle.per_task_ms(1).items()}

    job = f"job-r{run}-s{slots}"
    client.create_job({"id": job, "poolInfo": {"poolId": pool}})
    # The user's side runs as its own process (_dispatch_client.py): this process
    # then holds the service alone, and the client's CPU is measured apart.
    user = subprocess.Popen(
        [sys.executable, str(CLIENT), str(thread.runtime.state_dir), job, str(n), str(POLL_S)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert user.stdin is not None and user.stdout is not None
    try:
        if user.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the benchmark client did not start (exit {user.wait()})")
        profs = []
        if profile:
            pids = {"service": os.getpid(), **node_pids(testbed_dir)}
            profs = [start_profile(pid, f"{profile}.{name}.txt") for name, pid in pids.items()]
            time.sleep(1.0)  # py-spy attaches
        cpu = CpuMeter(thread, testbed_dir)
        user.stdin.write("go\n")
        user.stdin.flush()
        if user.stdout.readline().strip() != "added":
            raise RuntimeError(f"the benchmark client failed to add the tasks (exit {user.wait()})")
        add_cpu_ms = cpu.per_task_ms(n)[SERVICE]  # dispatch overlaps the add
        report = json.loads(user.stdout.readline() or "{}")
        all_cpu_ms = cpu.all_per_task_ms(n)
    finally:
        user.stdin.close()
        user.wait(60)
    if "wall_s" not in report:
        raise RuntimeError(f"the benchmark client failed: {report}")
    wall_s, added_s, polls = report["wall_s"], report["add_s"], report["polls"]
    counts = report["counts"]
    cpu_ms = {k: v for k, v in all_cpu_ms.items() if k not in NODE_SPLIT}
    node_split_ms = {k: all_cpu_ms[k] for k in NODE_SPLIT}
    for prof in profs:
        stop_profile(prof)
    assert counts["succeeded"] == n, counts
    # Per-task figures from the tasks themselves: process run time as the agent saw it.
    done = client.list_tasks(job, select="id,executionInfo,nodeInfo")
    infos = [t.execution_info for t in done]
    runs = [_ts(_get(i, "end_time")) - _ts(_get(i, "start_time")) for i in infos
            if _get(i, "start_time") and _get(i, "end_time")]
    # Where the wall time goes at its edges: from the first add to the first task's
    # start, and from the last task's end to the client seeing all completed.
    starts = [_ts(_get(i, "start_time")) for i in infos if _get(i, "start_time")]
    ends = [_ts(_get(i, "end_time")) for i in infos if _get(i, "end_time")]
    t0 = report.get("t0_epoch")
    first_start_s = min(starts) - t0 if starts and t0 else None
    last_end_to_seen_s = t0 + wall_s - max(ends) if ends and t0 else None
    per_node: dict[str, int] = {}
    for t in done:
        nid = _get(t.node_info, "node_id") or "?"
        per_node[nid] = per_node.get(nid, 0) + 1
    floor_cpu_ms = None
    floor_node_own_ms = None
    floor_s = None
    if floor:
        meter = CpuMeter(thread, testbed_dir)
        floor_s = engine_path(thread, slots, n)
        floor_all = meter.all_per_task_ms(n)
        floor_cpu_ms = {k: v for k, v in floor_all.items() if k not in NODE_SPLIT}
        floor_node_own_ms = floor_all[NODE_OWN_USER] + floor_all[NODE_OWN_SYSTEM]
    batched = []
    wake_up = message_cost(thread, testbed_dir) if batching else None
    for k in batching or []:  # one lane a node, k launches a message (k in flight)
        meter = CpuMeter(thread, testbed_dir)
        seconds = engine_path(thread, 1, n, per_message=k)
        batched.append({"per_message": k, "s": seconds, "tasks_per_s": n / seconds,
                        "cpu_ms_per_task": meter.all_per_task_ms(n)})
    delete_pool(client, thread, pool)
    return {"pool_errors": pool_errors, "slots_per_node": slots, "total_slots": slots * NODES, "tasks": n,
            "pool_ready_s": pool_ready_s, "add_s": added_s, "wall_s": wall_s,
            "tasks_per_s": n / wall_s, "polls": polls,
            "first_start_s": first_start_s, "last_end_to_seen_s": last_end_to_seen_s,
            "agent_run_time_mean_ms": statistics.mean(runs) * 1e3 if runs else None,
            "agent_run_time_median_ms": statistics.median(runs) * 1e3 if runs else None,
            "tasks_per_node": per_node,
            "cpu_ms_per_task": cpu_ms, "client_cpu_ms_per_task": report["cpu_ms_per_task"],
            "dask_floor_cpu_ms_per_task": floor_cpu_ms,
            "node_own_cpu_ms_per_task": node_split_ms,
            "idle_cpu_ms_per_s": idle_ms_per_s,
            "idle_cpu_ms_per_task": {k: v * wall_s / n for k, v in idle_ms_per_s.items()},
            "service_cpu_ms_per_task_until_added": add_cpu_ms,
            "dask_floor_node_own_cpu_ms_per_task": floor_node_own_ms,
            "batching": batched, "node_cpu_us_per_empty_message": wake_up,
            "dask_floor_s": floor_s, "dask_floor_tasks_per_s": n / floor_s if floor_s else None}


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--slots", default="2,1,4",
                       help="taskSlotsPerNode values to run (first is the headline)")
        p.add_argument("--base-address", default=BASE_ADDRESS,
                       help="loopback address of the first testbed node (default %(default)s)")
        p.add_argument("--repeat", type=int, default=3,
                       help="runs of the headline (first) slots value; the targets are judged "
                            "on their medians (default %(default)s)")
        p.add_argument("--tasks", type=int, default=None,
                       help="tasks a pool (default 2,000; --quick 300)")
        p.add_argument("--profile", metavar="PATH", default=None,
                       help="py-spy the service and the nodes during the headline run")
        p.add_argument("--batching", default="", metavar="K,K,...",
                       help="also run the engine path with one lane a node and K launches "
                            "a message (K in flight), for each K (e.g. 2,8,16)")
        p.add_argument("--user-switching", action="store_true",
                       help="node roots reachable by task users, so that nodes running as "
                            "root run tasks as the pool's auto-user (default: the temporary "
                            "folder is mode 0700, tasks share the node agent's identity)")

    args = parse_args("bench_dispatch", __doc__.splitlines()[0], extra)
    n = args.tasks or (300 if args.quick else 2000)
    slot_values = [int(s) for s in args.slots.split(",")]
    slot_values[1:1] = slot_values[:1] * (max(1, args.repeat) - 1)  # the headline's repeats
    repeats = max(1, args.repeat)
    results: dict[str, Any] = {"benchmark": "dispatch", "tasks": n, "nodes": NODES,
                               "target_fraction_of_raw": TARGET_FRACTION}
    raw_spawn(50, 1)  # warm-up
    raw_before = {"sequential": raw_spawn(n, 1), "2_threads": raw_spawn(n, 2)}
    runs: list[dict[str, Any]] = []
    results["user_switching"] = args.user_switching
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-dispatch-") as tmpdir:
        tmp = Path(tmpdir)
        if args.user_switching:
            tmp.chmod(0o755)
        results["task_files"] = task_files_cost(tmp, n)  # the node roots' file system
        with testbed.up(NODES, tmp / "testbed", base_address=args.base_address) as bed, \
                service(tmp / "state") as (client, thread):
            python = node_python(bed.directory)  # nodes run this checkout too
            client.add_hosts([{**h.model_dump(mode="json"), "python": python}
                              for h in bed.hosts])
            for k, slots in enumerate(slot_values):
                r = run_pool(client, thread, slots, n, floor=k == 0,
                             testbed_dir=bed.directory,
                             profile=args.profile if k == 0 else None,
                             batching=[int(b) for b in args.batching.split(",") if b]
                             if k == 0 else None, run=k)
                runs.append(r)
                print(f"  taskSlotsPerNode={slots}: {n} tasks in {r['wall_s']:.2f} s "
                      f"({r['tasks_per_s']:.0f}/s)", flush=True)
    # The raw rate drifts with the machine: measured before and after the pools,
    # the faster of the two is the baseline (the stricter comparison).
    raw_after = {"sequential": raw_spawn(n, 1), "2_threads": raw_spawn(n, 2)}
    raw = {k: min(raw_before[k], raw_after[k]) for k in raw_before}
    results["raw_spawn_cpu_ms_per_task"] = raw_cpu = raw_spawn_cpu_ms(n)
    results["raw_spawn"] = {k: {"s": v, "per_s": n / v, "s_before": raw_before[k],
                                "s_after": raw_after[k]} for k, v in raw.items()}
    raw_rate = n / raw["sequential"]
    raw_2_threads = n / raw["2_threads"]
    for r in runs:
        r["fraction_of_raw"] = r["tasks_per_s"] / raw_rate
        r["fraction_of_raw_2_threads"] = r["tasks_per_s"] / raw_2_threads
    results["dispatch"] = runs
    headline = runs[0]  # its floor, batching and profile; the targets take the medians
    headline_runs = runs[:repeats]
    headline_fraction = statistics.median(r["fraction_of_raw_2_threads"] for r in headline_runs)
    headline_fraction_1 = statistics.median(r["fraction_of_raw"] for r in headline_runs)
    headline_cpu = statistics.median(sum(r["cpu_ms_per_task"].values()) for r in headline_runs)
    results["headline"] = {"runs": repeats, "slots_per_node": headline["slots_per_node"],
                           "median_tasks_per_s": statistics.median(
                               r["tasks_per_s"] for r in headline_runs),
                           "median_fraction_of_raw_2_threads": headline_fraction,
                           "median_cpu_ms_per_task": headline_cpu}
    results["target_met"] = headline_fraction >= TARGET_FRACTION
    results["cpu_target_met"] = headline_cpu <= TARGET_CPU_MS

    rows = [[f"raw subprocess.run, {k.replace('_', ' ')} (best of before/after)", n, v["s"],
             v["per_s"], "", "", ""] for k, v in results["raw_spawn"].items()]
    def label(k: int, r: dict[str, Any]) -> str:
        again = f", run {k + 1}" if k < repeats and repeats > 1 else ""
        return f"{NODES}x{r['slots_per_node']} slots{again}"

    for k, r in enumerate(runs):
        rows.append([f"hpcbatch, {label(k, r)}", n, r["wall_s"],
                     r["tasks_per_s"], f"{r['fraction_of_raw']:.0%}",
                     f"{r['fraction_of_raw_2_threads']:.0%}",
                     f"{r['agent_run_time_median_ms']:.1f}"])
    if headline["dask_floor_s"]:
        rows.append([f"floor: engine only, 1 run a message, {NODES}x{headline['slots_per_node']} slots",
                     n, headline["dask_floor_s"], headline["dask_floor_tasks_per_s"],
                     f"{headline['dask_floor_tasks_per_s'] / raw_rate:.0%}",
                     f"{headline['dask_floor_tasks_per_s'] / raw_2_threads:.0%}", ""])
    table(f"dispatch of {n:,} /bin/true tasks: first add -> all completed",
          ["", "tasks", "s", "tasks/s", "% raw, 1 loop", "% raw, 2 threads",
           "run ms (median)"], rows)
    print("edges of the wall time: first add -> first task started "
          + ", ".join(f"{r['first_start_s'] * 1e3:.0f}" for r in runs if r["first_start_s"])
          + " ms; last task ended -> the client saw all completed "
          + ", ".join(f"{r['last_end_to_seen_s'] * 1e3:.0f}" for r in runs
                      if r["last_end_to_seen_s"] is not None)
          + " ms (the client's wait is a long poll)")
    print(f"target: {NODES} nodes x {headline['slots_per_node']} slots >= "
          f"{TARGET_FRACTION:.0%} of the 2-thread raw spawn rate ({raw_2_threads:.0f}/s) -> "
          f"{verdict(results['target_met'])} ({headline_fraction:.0%}, the median of {repeats} "
          f"run(s)); {headline_fraction_1:.0%} of the one-loop rate ({raw_rate:.0f}/s)")
    raw_cpu_ms = raw["sequential"] / n * 1e3  # one spawn loop: wall ~ CPU
    cpu_rows = []
    for name in headline["cpu_ms_per_task"]:
        cpu_rows.append([name, *(r["cpu_ms_per_task"][name] for r in runs),
                         headline["dask_floor_cpu_ms_per_task"][name]
                         if headline["dask_floor_cpu_ms_per_task"] else ""])
    cpu_rows.append(["total: service, scheduler, nodes",
                     *(sum(r["cpu_ms_per_task"].values()) for r in runs),
                     sum(headline["dask_floor_cpu_ms_per_task"].values())
                     if headline["dask_floor_cpu_ms_per_task"] else ""])
    cpu_rows.append(["the benchmark client (its own process: add, polls)",
                     *(r["client_cpu_ms_per_task"] for r in runs), ""])
    table(f"CPU ms per task (raw sequential spawn: {raw_cpu_ms:.2f} ms wall per task)",
          ["", *(label(k, r) for k, r in enumerate(runs)), "floor"], cpu_rows)
    own = headline["node_own_cpu_ms_per_task"]
    print(f"of the nodes' CPU, the node processes' (and watchdogs') own: {own[NODE_OWN_USER]:.3f} ms user + "
          f"{own[NODE_OWN_SYSTEM]:.3f} ms system per task (the rest: the tasks they reaped)")
    idle_cpu = headline["idle_cpu_ms_per_task"]
    print("of which background (the idle pool's CPU a second, times the run's "
          "wall time, per task): " + ", ".join(f"{k} {v:.3f} ms" for k, v in idle_cpu.items())
          + f"; total {sum(idle_cpu.values()):.3f} ms")
    if headline["batching"]:
        floor_all = headline["dask_floor_cpu_ms_per_task"]
        brows = [["1 (the floor)", headline["slots_per_node"], headline["dask_floor_tasks_per_s"],
                  headline["dask_floor_node_own_cpu_ms_per_task"],
                  floor_all[SERVICE], sum(floor_all.values())]]
        for b in headline["batching"]:
            c = b["cpu_ms_per_task"]
            brows.append([b["per_message"], b["per_message"], b["tasks_per_s"],
                          c[NODE_OWN_USER] + c[NODE_OWN_SYSTEM], c[SERVICE],
                          sum(v for k_, v in c.items() if k_ not in NODE_SPLIT)])
        table("the run path by launches a message (engine only: no REST, store or pass)",
              ["launches a message", "in flight a node", "tasks/s", "node processes' own CPU ms",
               "service CPU ms", "total CPU ms"], brows)
        wake = headline["node_cpu_us_per_empty_message"]
        print(f"a node's CPU per empty message: {wake['back_to_back']:.0f} µs sent back to back, "
              f"{wake['one_a_ms']:.0f} µs sent one a millisecond (the node sleeps between two: "
              f"the difference is what a wake-up costs)")
    files = results["task_files"]
    print(f"of the service's CPU, {headline['service_cpu_ms_per_task_until_added']:.2f} ms per "
          f"task went by until the add request returned (the REST side of the add, and the "
          f"dispatch that overlapped it)")
    print(f"same-run baselines: raw spawn of /bin/true {raw_cpu:.2f} CPU ms per task (parent and "
          f"child); a task's files (dir, wd, stdout.txt, stderr.txt) on the node roots' file "
          f"system {files['cpu_ms']:.2f} CPU ms, {files['wall_ms']:.2f} wall ms per task")
    print(f"target: CPU per task across service, scheduler and nodes <= {TARGET_CPU_MS} ms -> "
          f"{verdict(results['cpu_target_met'])} ({headline_cpu:.2f} ms, the median of "
          f"{repeats} run(s))")
    results["raw_spawn_ms_per_task_sequential"] = raw_cpu_ms
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
