"""The control plane at scale: a 1,000-node simulated pool and jobs of 10k, 100k and 1M tasks.

For each job size N (10,000, 100,000, 1,000,000; ``--quick``: 10,000 and
100,000) a fresh service runs as its own process (``python -m
hpcbatch.api.server``, SQLite store), so that its RSS is its own; this process
is the client. Its inventory gets 1,000 ``provider: simulated`` hosts
(``docs/scale.md``), and then, each figure beside its baseline from the same run:

1. **pool ready**: ``Pool - Add`` of 1,000 nodes x 4 slots to every node
   ``idle``; baseline: a 10-node simulated pool in the same service.
2. **adding N tasks** (``sleep 0.01``, ``create_tasks``, 100 per request, 4
   requests at once) to a disabled job: rate, the service's peak RSS (psutil,
   sampled every 0.1 s), the store's size on disk (database, WAL);
   baseline: the same N rows inserted straight into a fresh ``Store`` with
   ``executemany``.
3. **list page**: ``GET /jobs/{job}/tasks?$filter=state eq 'active'&$select=id,state``,
   first page of 1,000, raw HTTP, median of 5; baseline: the same page without
   ``$filter``/``$select``.
4. **task counts**: "Job - Get Task Counts", median of 5; baseline: the same
   counts by SQL straight on the store file (``GROUP BY state``).
5. **scheduling decisions/s**: the job is enabled; tasks placed, run and
   recorded per second until all N completed (one decision = one task placed
   on a node and its outcome recorded); baseline: the simulator's own ceiling
   (asyncio timers fired per second in this process).
6. **memory per finished task after retention**: the service's RSS once all
   tasks completed and their ``retentionTime`` (PT1S) elapsed, minus its RSS
   with the pool idle and no tasks, per task.

Targets: >= 10,000 decisions/s; <= 2 KB of service RSS per task at 1M; list
page <= 50 ms; nothing O(n) per event: the per-N curve of each figure is
printed, with each figure's ratio to the 10k one.

    python benchmarks/bench_scale.py [--quick] [--sizes 10000,100000,1000000] [--nodes 1000]
                                     [--json PATH] [--profile PATH]
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from _common import (
    environment,
    parse_args,
    start_profile,
    stop_profile,
    table,
    timed,
    write_json,
)

from hpcbatch.batch.wire import new_etag, utcnow
from hpcbatch.client.auth import SharedKeyAuth
from hpcbatch.client.sdk import API_VERSION, BatchClient
from hpcbatch.store.database import Store, dumps, sqlite_url, tasks

SLOTS = 4
COMMAND = "sleep 0.01"
TARGET_DECISIONS_S = 10_000
TARGET_BYTES_PER_TASK = 2048
TARGET_PAGE_S = 0.050
CHUNK = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """The service as its own process, its client and an RSS sampler."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True)
        port = _free_port()
        self.log = open(state_dir.parent / "service.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcbatch.api.server", "--state-dir", str(state_dir),
             "--port", str(port), "--scheduler-host", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=self.log,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            raise RuntimeError((state_dir.parent / "service.log").read_text()[-3000:])
        self.client = BatchClient.from_environment(state_dir)
        creds = json.loads((state_dir / "account.json").read_text())
        self.auth = SharedKeyAuth(self.client.account, creds["key"])
        self.endpoint = f"http://127.0.0.1:{port}"
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0
        self._sampling = False

    def cpu_s(self) -> float:
        """CPU seconds the service process (with its threads) has used."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def sample_peak(self) -> None:
        self.peak = self.rss()
        self._sampling = True

        def loop() -> None:
            while self._sampling:
                try:
                    self.peak = max(self.peak, self.rss())
                except psutil.Error:
                    return
                time.sleep(0.1)
        threading.Thread(target=loop, daemon=True).start()

    def stop_sampling(self) -> int:
        self._sampling = False
        return self.peak

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.state_dir.glob("state.db*"))

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"not done within {timeout_s} s")
        time.sleep(interval_s)
    return time.perf_counter() - t0


def pool_ready(svc: Service, pool: str, nodes: int, label: str) -> float:
    svc.client.add_hosts([{"name": f"{pool}-{i:04d}", "address": "127.0.0.1",
                           "provider": "simulated", "cores": SLOTS, "labels": [label],
                           "root_dir": f"/tmp/hpcbatch-sim/{pool}/{i}"} for i in range(nodes)])
    t0 = time.perf_counter()
    svc.client.create_pool({"id": pool, "vmSize": label, "targetDedicatedNodes": nodes,
                            "taskSlotsPerNode": SLOTS})
    got = svc.client.wait_for_pool(pool, timeout_s=600)
    elapsed = time.perf_counter() - t0
    states = {n.state for n in got}
    assert states == {"idle"} and len(got) == nodes, states
    return elapsed


def add_tasks(svc: Service, job: str, n: int) -> float:
    t0 = time.perf_counter()
    for lo in range(0, n, CHUNK):
        svc.client.create_tasks(job, ({"id": f"t{i:07d}", "commandLine": COMMAND,
                                       "constraints": {"retentionTime": "PT1S"}}
                                      for i in range(lo, min(n, lo + CHUNK))))
    return time.perf_counter() - t0


def baseline_insert(tmp: Path, n: int) -> float:
    """The same N task rows into a fresh SQLite Store, one executemany per chunk."""
    store = Store(sqlite_url(tmp / "baseline.db"))
    try:
        t0 = time.perf_counter()
        for lo in range(0, n, CHUNK):
            now = utcnow()
            rows = [{"job_key": "j", "key": f"t{i:07d}", "id": f"t{i:07d}", "state": "active",
                     "creation_time": now, "state_transition_time": now, "last_modified": now,
                     "etag": new_etag(), "required_slots": 1, "retry_count": 0,
                     "requeue_count": 0,
                     "spec": dumps({"id": f"t{i:07d}", "commandLine": COMMAND})}
                    for i in range(lo, min(n, lo + CHUNK))]
            with store.begin() as conn:
                Store.insert_many(conn, tasks, rows)
        return time.perf_counter() - t0
    finally:
        store.close()
        for p in tmp.glob("baseline.db*"):
            p.unlink()


def first_page(svc: Service, job: str, params: dict[str, str]) -> tuple[float, int]:
    """Time one raw GET of a task list's first page (1,000); return (seconds, items)."""
    with requests.Session() as s:
        def go() -> int:
            r = s.get(f"{svc.endpoint}/jobs/{job}/tasks", auth=svc.auth,
                      params={"api-version": API_VERSION, "maxresults": "1000", **params})
            r.raise_for_status()
            return len(r.json()["value"])
        go()  # warm the connection
        samples = [timed(go) for _ in range(5)]
    return statistics.median(s for s, _ in samples), samples[0][1]


def sql_counts(svc: Service) -> float:
    """Task counts by SQL straight on the store file (read-only): the baseline."""
    conn = sqlite3.connect(f"file:{svc.state_dir / 'state.db'}?mode=ro", uri=True)
    try:
        def go() -> list[Any]:
            return conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall()
        return statistics.median(timed(go)[0] for _ in range(5))
    finally:
        conn.close()


def simulator_ceiling(n: int = 200_000) -> float:
    """Timers fired per second by an asyncio loop in this process: the simulated nodes'
    own limit (each run is one timer and one outcome dict)."""
    async def go() -> float:
        loop = asyncio.get_running_loop()
        out: list[dict[str, Any]] = []
        done = loop.create_future()

        def fire(i: int) -> None:
            out.append({"key": i, "exit_code": 0, "end": time.time()})
            if len(out) == n:
                done.set_result(None)
        t0 = time.perf_counter()
        for i in range(n):
            loop.call_later(0.01, fire, i)
        await done
        return n / (time.perf_counter() - t0)
    return asyncio.run(go())


def profile_service(svc: Service, path: str | None, n: int) -> subprocess.Popen[bytes] | None:
    """``--profile PATH``: py-spy samples the service during the scheduling phase and
    writes collapsed stacks (``PATH.N.txt``, one file per job size)."""
    return start_profile(svc.proc.pid, f"{path}.{n}.txt") if path else None


def run_size(tmp: Path, n: int, nodes: int, skip_run: bool = False,
             profile: str | None = None) -> dict[str, Any]:
    svc = Service(tmp / f"state-{n}")
    r: dict[str, Any] = {"tasks": n, "nodes": nodes, "slots_per_node": SLOTS}
    try:
        r["rss_start_bytes"] = svc.rss()
        r["pool_ready_baseline_10_nodes_s"] = pool_ready(svc, "small", 10, "small")
        r["pool_ready_s"] = pool_ready(svc, "big", nodes, "big")
        svc.client.create_job({"id": "j", "poolInfo": {"poolId": "big"}})
        svc.client.disable_job("j")
        time.sleep(1)
        r["rss_idle_bytes"] = svc.rss()
        svc.sample_peak()
        cpu0 = svc.cpu_s()
        r["add_s"] = add_tasks(svc, "j", n)
        r["add_per_service_cpu_s"] = n / max(svc.cpu_s() - cpu0, 1e-9)
        r["add_rate_per_s"] = n / r["add_s"]
        r["add_baseline_executemany_s"] = baseline_insert(tmp, n)
        r["add_baseline_rate_per_s"] = n / r["add_baseline_executemany_s"]
        r["rss_after_add_bytes"] = svc.rss()
        r["store_bytes_after_add"] = svc.store_bytes()
        r["store_bytes_per_task"] = r["store_bytes_after_add"] / n
        r["page_filtered_s"], items = first_page(
            svc, "j", {"$filter": "state eq 'active'", "$select": "id,state"})
        assert items == min(1000, n), items
        r["page_plain_baseline_s"], _ = first_page(svc, "j", {})
        samples = [timed(lambda: svc.client.get_task_counts("j")) for _ in range(5)]
        r["counts_s"] = statistics.median(s for s, _ in samples)
        assert samples[0][1]["active"] == n, samples[0][1]
        r["counts_baseline_sql_s"] = sql_counts(svc)
        if skip_run:  # --skip-run: the figures above only (no scheduling phase)
            return r
        prof = profile_service(svc, profile, n)
        t0, cpu0 = time.perf_counter(), svc.cpu_s()
        svc.client.enable_job("j")
        # Task counts read the job's counter row (revision 0006): O(1) a call at any N, so
        # polling every 50 ms costs the service ~2% and times the end to 50 ms.
        wait(lambda: svc.client.get_task_counts("j")["completed"] == n, 3 * 3600, 0.05)
        r["run_all_s"] = time.perf_counter() - t0
        r["decisions_per_s"] = n / r["run_all_s"]
        # On a shared machine the service may get a fraction of a core: per CPU-second of
        # the service process is the steadier figure.
        r["decisions_per_service_cpu_s"] = n / max(svc.cpu_s() - cpu0, 1e-9)
        stop_profile(prof)
        r["rss_peak_bytes"] = svc.stop_sampling()
        r["rss_peak_bytes_per_task"] = (r["rss_peak_bytes"] - r["rss_idle_bytes"]) / n
        counts = svc.client.get_task_counts("j")
        assert counts["succeeded"] == n, counts
        time.sleep(3)  # retentionTime PT1S elapses; housekeeping runs once a second
        r["rss_after_retention_bytes"] = svc.rss()
        r["rss_bytes_per_finished_task"] = (r["rss_after_retention_bytes"]
                                            - r["rss_idle_bytes"]) / n
        r["page_filtered_completed_s"], _ = first_page(
            svc, "j", {"$filter": "state eq 'completed'", "$select": "id,state"})
        r["store_bytes_end"] = svc.store_bytes()
        r["service_threads"] = svc.ps.num_threads()
        r["service_open_files"] = len(svc.ps.open_files())
    finally:
        svc.close()
    return r


def main() -> int:
    args = parse_args("bench_scale", __doc__.splitlines()[0], lambda p: (
        p.add_argument("--sizes", default=None, help="job sizes, comma-separated"),
        p.add_argument("--nodes", type=int, default=1000, help="simulated nodes (default 1000)"),
        p.add_argument("--skip-run", action="store_true",
                       help="stop after task counts: no scheduling phase, no summary table"),
        p.add_argument("--profile", metavar="PATH", default=None,
                       help="py-spy the service during the scheduling phase: PATH.N.txt")))
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    results: dict[str, Any] = {"benchmark": "scale", "sizes": sizes, "nodes": args.nodes,
                               "command": COMMAND, "runs": []}
    load_before = list(os.getloadavg())
    results["simulator_ceiling_timers_per_s"] = simulator_ceiling()
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-scale-") as tmpdir:
        for n in sizes:
            r = run_size(Path(tmpdir), n, args.nodes, args.skip_run, args.profile)
            results["runs"].append(r)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in r.items()}), flush=True)
    if args.skip_run:
        write_json(args.json, results)
        return 0
    runs = results["runs"]
    first = runs[0]
    mib = 1024 * 1024
    rows = [
        ("pool of N nodes idle (s)", *(f"{r['pool_ready_s']:.1f}" for r in runs),
         f"10 nodes: {first['pool_ready_baseline_10_nodes_s']:.2f} s"),
        ("add tasks (tasks/s)", *(f"{r['add_rate_per_s']:,.0f}" for r in runs),
         "executemany: " + " / ".join(f"{r['add_baseline_rate_per_s']:,.0f}" for r in runs)),
        ("service peak RSS (MiB)", *(f"{r['rss_peak_bytes'] / mib:.0f}" for r in runs),
         "idle: " + " / ".join(f"{r['rss_idle_bytes'] / mib:.0f}" for r in runs)),
        ("peak RSS per task (B)", *(f"{r['rss_peak_bytes_per_task']:,.0f}" for r in runs),
         f"target <= {TARGET_BYTES_PER_TASK}"),
        ("store on disk (MiB)", *(f"{r['store_bytes_after_add'] / mib:.0f}" for r in runs),
         "per task: " + " / ".join(f"{r['store_bytes_per_task']:.0f} B" for r in runs)),
        ("list page $filter+$select (ms)", *(f"{r['page_filtered_s'] * 1e3:.1f}" for r in runs),
         "plain page: " + " / ".join(f"{r['page_plain_baseline_s'] * 1e3:.1f}" for r in runs)),
        ("task counts (ms)", *(f"{r['counts_s'] * 1e3:.1f}" for r in runs),
         "SQL: " + " / ".join(f"{r['counts_baseline_sql_s'] * 1e3:.1f}" for r in runs)),
        ("scheduling decisions/s", *(f"{r['decisions_per_s']:,.0f}" for r in runs),
         f"simulator: {results['simulator_ceiling_timers_per_s']:,.0f} timers/s"),
        ("decisions per service CPU-s", *(f"{r['decisions_per_service_cpu_s']:,.0f}"
                                          for r in runs), "(shared machine: per CPU)"),
        ("service CPU-s per 1,000 decisions",
         *(f"{1000 / r['decisions_per_service_cpu_s']:.3f}" for r in runs),
         f"at {TARGET_DECISIONS_S:,}/s: <= {1000 / TARGET_DECISIONS_S:.3f} a core"),
        ("adds per service CPU-s", *(f"{r['add_per_service_cpu_s']:,.0f}" for r in runs), ""),
        ("RSS per finished task (B)", *(f"{r['rss_bytes_per_finished_task']:,.0f}" for r in runs),
         f"target <= {TARGET_BYTES_PER_TASK}"),
    ]
    table(f"Scale: {args.nodes} simulated nodes x {SLOTS} slots, '{COMMAND}' tasks "
          f"(load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after)",
          ["figure", *(f"{r['tasks']:,}" for r in runs), "baseline"], rows)
    last = runs[-1]
    results["load_average_before"] = load_before
    results["target_met"] = {
        "decisions_per_s": last["decisions_per_s"] >= TARGET_DECISIONS_S,
        "rss_bytes_per_task": max(last["rss_peak_bytes_per_task"],
                                  last["rss_bytes_per_finished_task"]) <= TARGET_BYTES_PER_TASK,
        "list_page_s": last["page_filtered_s"] <= TARGET_PAGE_S,
    }
    results["curve_vs_first"] = {k: [r[k] / first[k] for r in runs] for k in (
        "page_filtered_s", "counts_s", "decisions_per_s", "decisions_per_service_cpu_s",
        "add_rate_per_s")}
    for k, ok in results["target_met"].items():
        print(f"{k}: {'MET' if ok else 'MISSED'}")
    print("curve vs the first size:", json.dumps({k: [round(x, 2) for x in v] for k, v in
                                                  results["curve_vs_first"].items()}))
    results["environment"] = environment()
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
