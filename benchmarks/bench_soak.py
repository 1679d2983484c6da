"""Endurance: steady load for a bounded time; the service's RSS, open files, threads and store size.

A service runs as its own process (``python -m hpcbatch.api.server``, SQLite
store) with a pool of simulated nodes (``provider: simulated``,
``docs/scale.md``; default 100 nodes x 4 slots). Every second this process adds
``--rate`` short tasks (``sleep 0.01``, ``retentionTime`` PT1S) to the current
job; every ``--job-span`` seconds it opens a new job (``onAllTasksComplete``:
``terminatejob``) and deletes the jobs older than ``--keep-jobs`` spans, so
the service holds a bounded amount of work: retention is reached after about
``keep_jobs x job_span`` seconds, and from then on nothing should grow.

Every ``--interval`` seconds it samples the service process (psutil): RSS,
open file descriptors, threads, and the store's size on disk (database and
WAL), with the tasks completed so far. The verdict compares the last third of
the run with the middle third (the first third is warm-up): RSS growth <=
max(10 %, 16 MiB), open files growth <= 8, threads growth <= 4, store growth
<= max(25 %, 4 MiB). Baseline in the same run: the service's figures with its
pool idle, before any load.

    python benchmarks/bench_soak.py [--minutes 30] [--quick] [--rate 200] [--nodes 100]
                                    [--interval 5] [--json PATH]

``--quick`` is 2 minutes (the CI-sized run, ``tests/test_soak.py``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from _common import environment, parse_args, table, write_json
from bench_scale import Service, pool_ready

COMMAND = "sleep 0.01"
MIB = 1024 * 1024


def sample(svc: Service, t0: float, completed: int) -> dict[str, Any]:
    """One sample of the service process."""
    ps = svc.ps
    return {"t_s": round(time.perf_counter() - t0, 2), "rss_bytes": ps.memory_info().rss,
            "open_files": ps.num_fds(), "threads": ps.num_threads(),
            "store_bytes": svc.store_bytes(), "completed": completed}


def growth(samples: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """(mean of the last third - mean of the middle third, mean of the middle third)."""
    n = len(samples)
    mid = [s[key] for s in samples[n // 3: 2 * n // 3]]
    last = [s[key] for s in samples[2 * n // 3:]]
    if not mid or not last:
        return 0.0, 0.0
    base = statistics.fmean(mid)
    return statistics.fmean(last) - base, base


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether RSS, open files, threads and store size stayed flat after warm-up."""
    out: dict[str, Any] = {}
    limits = {"rss_bytes": lambda base: max(0.10 * base, 16 * MIB),
              "open_files": lambda base: 8, "threads": lambda base: 4,
              "store_bytes": lambda base: max(0.25 * base, 4 * MIB)}
    for key, limit in limits.items():
        grew, base = growth(samples, key)
        out[key] = {"growth": grew, "middle_third_mean": base, "limit": limit(base),
                    "flat": grew <= limit(base)}
    out["flat"] = all(v["flat"] for v in out.values() if isinstance(v, dict))
    return out


def soak(tmp: Path, *, seconds: float, rate: int, nodes: int, interval_s: float,
         job_span_s: float, keep_jobs: int) -> dict[str, Any]:
    """Run the load and return the samples and the verdict."""
    svc = Service(tmp / "state")
    result: dict[str, Any] = {"seconds": seconds, "rate_per_s": rate, "nodes": nodes,
                              "interval_s": interval_s, "job_span_s": job_span_s,
                              "keep_jobs": keep_jobs}
    samples: list[dict[str, Any]] = []
    done = threading.Event()
    completed = [0]
    try:
        result["pool_ready_s"] = pool_ready(svc, "soak", nodes, "soak")
        time.sleep(1)
        t0 = time.perf_counter()
        result["baseline_idle"] = sample(svc, t0, 0)

        def sampler() -> None:
            while not done.wait(interval_s):
                try:
                    samples.append(sample(svc, t0, completed[0]))
                except psutil.Error:
                    return
        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        jobs: list[str] = []
        made = 0
        added = 0
        seq = 0
        while time.perf_counter() - t0 < seconds:
            tick = time.perf_counter()
            if tick - t0 >= made * job_span_s:
                job = f"soak-{made:05d}"
                made += 1
                svc.client.create_job({"id": job, "poolInfo": {"poolId": "soak"}})
                if jobs:  # the previous job ends once its tasks complete
                    svc.client.update_job(jobs[-1], {"onAllTasksComplete": "terminatejob"})
                jobs.append(job)
                for old in jobs[:-keep_jobs - 1]:
                    counts = svc.client.get_task_counts(old)
                    completed[0] += counts["completed"]
                    svc.client.delete_job(old)
                del jobs[:-keep_jobs - 1]
            svc.client.create_tasks(jobs[-1], [
                {"id": f"t{seq + i:07d}", "commandLine": COMMAND,
                 "constraints": {"retentionTime": "PT1S"}} for i in range(rate)])
            seq += rate
            added += rate
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
        done.set()
        thread.join()
        result["tasks_added"] = added
        result["jobs_made"] = made
    finally:
        done.set()
        svc.close()
    result["samples"] = samples
    result["verdict"] = verdict(samples)
    return result


def main() -> int:
    args = parse_args("bench_soak", __doc__.splitlines()[0], lambda p: (
        p.add_argument("--minutes", type=float, default=30.0, help="run length (default 30)"),
        p.add_argument("--rate", type=int, default=200, help="tasks added per second"),
        p.add_argument("--nodes", type=int, default=100, help="simulated nodes (4 slots each)"),
        p.add_argument("--interval", type=float, default=5.0, help="seconds between samples"),
        p.add_argument("--job-span", type=float, default=None,
                       help="seconds each job takes new tasks (default: run / 12)"),
        p.add_argument("--keep-jobs", type=int, default=2,
                       help="finished jobs kept before they are deleted")))
    seconds = 120.0 if args.quick else args.minutes * 60
    span = args.job_span or seconds / 12
    interval = min(args.interval, seconds / 30)
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-soak-") as tmpdir:
        result = soak(Path(tmpdir), seconds=seconds, rate=args.rate, nodes=args.nodes,
                      interval_s=interval, job_span_s=span, keep_jobs=args.keep_jobs)
    result["benchmark"] = "soak"
    result["target_met"] = result["verdict"]["flat"]
    base = result["baseline_idle"]
    rows = [(f"{s['t_s']:.0f}", f"{s['rss_bytes'] / MIB:.1f}", s["open_files"], s["threads"],
             f"{s['store_bytes'] / MIB:.1f}", s["completed"])
            for s in result["samples"][:: max(1, len(result["samples"]) // 20)]]
    table(f"Soak: {result['tasks_added']:,} tasks at {args.rate}/s on {args.nodes} simulated "
          f"nodes; idle baseline RSS {base['rss_bytes'] / MIB:.1f} MiB, "
          f"{base['open_files']} files, {base['threads']} threads, "
          f"store {base['store_bytes'] / MIB:.1f} MiB",
          ["t (s)", "RSS (MiB)", "open files", "threads", "store (MiB)", "completed"], rows)
    for key, v in result["verdict"].items():
        if isinstance(v, dict):
            print(f"{key}: last third vs middle third {v['growth']:+,.0f} "
                  f"(limit {v['limit']:,.0f}) {'flat' if v['flat'] else 'GROWS'}")
    print("flat after warm-up:", "MET" if result["target_met"] else "MISSED")
    result["environment"] = environment()
    write_json(args.json, result)
    print(json.dumps({"flat": result["target_met"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
