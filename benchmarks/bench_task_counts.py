"""Job - Get Task Counts from the trigger-kept counters, and what the triggers cost.

For each job size N (10,000, 100,000, 1,000,000; ``--quick``: 10,000 and 100,000)
a fresh SQLite ``Store`` gets one job of N tasks (``Store.insert_many``, 1,000 per
transaction), then, in this process (CPU seconds: the machine is shared):

1. **counts**: the job's counters read (``hpcbatch.store.task_counts.read``: one
   primary-key lookup), median of 20; baseline: the ``GROUP BY state, result`` over
   the job's tasks that "Job - Get Task Counts" ran before revision 0006, median of 3
   (through ``ix_tasks_queue``: 0006 dropped the covering ``ix_tasks_counts``, which
   made it about 5 times faster and cost every insert and state change).
2. **the triggers' cost on adding tasks**: CPU per task of inserting 50,000 tasks
   (100 per transaction, as "Task - Add Collection" does), with the triggers and
   with them dropped, as multi-row statements (``Store.insert_many`` on SQLite) and
   as a one-row-per-statement executemany (what ``insert_many`` did before).
3. **the triggers' cost on state changes**: CPU per task of moving 20,000 tasks to
   running, as one UPDATE of 1,000 rows per statement and as an executemany of a
   one-row UPDATE (today's scheduling pass), with and without the triggers.

Target: counts O(1): the same at 10k and 1M, <= 1 ms.

    python benchmarks/bench_task_counts.py [--quick] [--json PATH]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import parse_args, table, write_json

from hpcbatch.batch.wire import new_etag, utcnow
from hpcbatch.store import task_counts
from hpcbatch.store.database import Store, dumps, jobs, sqlite_url, tasks


def cpu(fn: Callable[[], Any]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def rows(job_key: str, lo: int, hi: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"job_key": job_key, "key": f"t{i:07d}", "id": f"t{i:07d}", "state": "active",
             "creation_time": now, "state_transition_time": now, "last_modified": now,
             "etag": new_etag(), "required_slots": 1, "retry_count": 0, "requeue_count": 0,
             "spec": dumps({"id": f"t{i:07d}", "commandLine": "sleep 0.01"})}
            for i in range(lo, hi)]


def new_store(path: Path, job_key: str, triggers: bool = True) -> Store:
    store = Store(sqlite_url(path))
    now = utcnow()
    with store.begin() as conn:
        if not triggers:
            for stmt in task_counts.drop_statements("sqlite"):
                conn.exec_driver_sql(stmt)
        conn.execute(jobs.insert().values(
            key=job_key, id=job_key, seq=1, pool_key="p", state="active", priority=0,
            spec="{}", status="{}", creation_time=now, state_transition_time=now))
    return store


def counts_at(tmp: Path, n: int) -> dict[str, Any]:
    store = new_store(tmp / f"counts-{n}.db", "j")
    try:
        for lo in range(0, n, 1000):
            with store.begin() as conn:
                Store.insert_many(conn, tasks, rows("j", lo, min(n, lo + 1000)))
        with store.read() as conn:
            got = task_counts.read(conn, ["j"])["j"]
            assert got["active"] == n, got
            read_s = statistics.median(cpu(lambda: task_counts.read(conn, ["j"]))
                                       for _ in range(20))
            group = (sa.select(tasks.c.state, tasks.c.result, sa.func.count(),
                               sa.func.sum(tasks.c.required_slots))
                     .where(tasks.c.job_key == "j").group_by(tasks.c.state, tasks.c.result))
            group_s = statistics.median(cpu(lambda: conn.execute(group).all()) for _ in range(3))
        return {"tasks": n, "counters_read_s": read_s, "group_by_s": group_s}
    finally:
        store.close()


def insert_cost(tmp: Path, triggers: bool, multi_row: bool, n: int = 50_000) -> float:
    store = new_store(tmp / f"ins-{triggers}-{multi_row}.db", "j", triggers)
    try:
        batches = [rows("j", lo, lo + 100) for lo in range(0, n, 100)]

        def go() -> None:
            for batch in batches:
                with store.begin() as conn:
                    if multi_row:
                        Store.insert_many(conn, tasks, batch)
                    else:
                        conn.execute(tasks.insert(), batch)
        return cpu(go) / n
    finally:
        store.close()


def update_cost(tmp: Path, triggers: bool, bulk: bool, n: int = 20_000) -> float:
    store = new_store(tmp / f"upd-{triggers}-{bulk}.db", "j", triggers)
    try:
        with store.begin() as conn:
            Store.insert_many(conn, tasks, rows("j", 0, n))
            seqs = list(conn.execute(sa.select(tasks.c.seq)).scalars())
        one = tasks.update().where(tasks.c.seq == sa.bindparam("b_seq")).values(
            state="running", node_id="n1")

        def go() -> None:
            for lo in range(0, n, 1000):
                with store.begin() as conn:
                    if bulk:
                        conn.execute(tasks.update().where(tasks.c.seq.in_(seqs[lo:lo + 1000]))
                                     .values(state="running", node_id="n1"))
                    else:
                        conn.execute(one, [{"b_seq": s} for s in seqs[lo:lo + 1000]])
        return cpu(go) / n
    finally:
        store.close()


def main() -> int:
    args = parse_args("bench_task_counts", __doc__.splitlines()[0])
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    results: dict[str, Any] = {"benchmark": "task_counts", "sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-counts-") as d:
        tmp = Path(d)
        results["counts"] = [counts_at(tmp, n) for n in sizes]
        results["insert_cpu_s_per_task"] = {
            f"{'triggers' if t else 'no_triggers'}_{'multi_row' if m else 'executemany'}":
            insert_cost(tmp, t, m) for t in (False, True) for m in (True, False)}
        results["update_cpu_s_per_task"] = {
            f"{'triggers' if t else 'no_triggers'}_{'bulk' if b else 'executemany'}":
            update_cost(tmp, t, b) for t in (False, True) for b in (True, False)}
    table("Job - Get Task Counts (CPU ms, SQLite)", ["tasks", "counters", "GROUP BY"],
          [(f"{r['tasks']:,}", f"{r['counters_read_s'] * 1e3:.3f}", f"{r['group_by_s'] * 1e3:.1f}")
           for r in results["counts"]])
    table("Cost per task (CPU us, SQLite)", ["operation", "value"],
          [(f"insert {k}", f"{v * 1e6:.1f}") for k, v in results["insert_cpu_s_per_task"].items()]
          + [(f"to running {k}", f"{v * 1e6:.1f}")
             for k, v in results["update_cpu_s_per_task"].items()])
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
