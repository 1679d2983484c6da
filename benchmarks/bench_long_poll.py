"""What waiting clients cost the service: Task - Get long polls while the store commits.

A service (in this process, REST on loopback) holds W tasks that never change
(a job on a pool with no nodes); W clients long-poll them (Task - Get with
``If-None-Match`` and ``Prefer: wait``, as ``hpcbatch mpi run`` waits for its
task), each in a thread of its own. Meanwhile C "Job - Update"s (PATCH of the
metadata) of another job are made, and this process's CPU time is measured
over them; the store's commits are counted (two an update: the update, and the
scheduling pass it asks for).

Baseline in the same run: the same C updates with no waiter. The difference,
divided by W and by the commits, is what one waiting client costs the service
at each commit. One watcher serves every waiter (``Tasks.watch``): at each
commit it reads the W tasks' versions with one statement and wakes only the
waiters whose task changed; its batched reads during the updates are counted.
The reads themselves are also timed alone on the service's loop, 2,000 of
each: ``Tasks.task_etags`` of the W tasks (the watcher's read a commit),
``Tasks.task_version`` of one (what each waiter read at every commit before
the watcher) and ``Tasks.get_task`` (the whole task, what it read before that).

Target: none (a diagnostic for long polls at scale, issue 14's ``mpi run``).

    python benchmarks/bench_long_poll.py [--quick] [--waiters W] [--commits C] [--json PATH]
"""

from __future__ import annotations

import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import parse_args, service, table, write_json

from hpcbatch.api.server import ServiceThread
from hpcbatch.client.sdk import BatchClient, BatchError

JOB, OTHER = "pollers", "committer"


def cpu_s() -> float:
    """This process's user + system CPU seconds (the service, its clients, the waiters)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def commits(client: BatchClient, n: int, counted: list[int]) -> tuple[float, float, int]:
    """Make ``n`` Job - Updates of the metadata; return (wall s, CPU s, store commits)."""
    before = counted[0]
    t0, c0 = time.perf_counter(), cpu_s()
    for i in range(n):
        client.update_job(OTHER, {"metadata": [{"name": "i", "value": str(i)}]})
    return time.perf_counter() - t0, cpu_s() - c0, counted[0] - before


def read_costs(thread: ServiceThread, waiters: int, calls: int = 2000) -> dict[str, float]:
    """CPU µs of one ``task_etags`` of ``waiters`` tasks, one ``task_version`` and one
    ``get_task`` on the service's loop."""
    tasks = thread.runtime.service.tasks  # type: ignore[union-attr]
    keys = [(JOB, f"t{i}") for i in range(waiters)]

    async def go() -> dict[str, float]:
        out = {}
        for name, read in (("get_task", lambda: tasks.get_task(JOB, "t0")),
                           ("task_version", lambda: tasks.task_version(JOB, "t0")),
                           ("task_etags", lambda: tasks.task_etags(keys))):
            read()
            t0 = time.thread_time()
            for _ in range(calls):
                read()
            out[name] = (time.thread_time() - t0) / calls * 1e6
        return out
    return thread.call(go())  # type: ignore[no-any-return]


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--waiters", type=int, default=None, help="waiting clients (50; --quick 20)")
        p.add_argument("--commits", type=int, default=None,
                   help="Job - Updates (300; --quick 100)")

    args = parse_args("bench_long_poll", __doc__.splitlines()[0], extra)
    waiters = args.waiters or (20 if args.quick else 50)
    n = args.commits or (100 if args.quick else 300)
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-poll-") as tmp, \
            service(Path(tmp) / "state") as (client, thread):
        client.create_job({"id": JOB, "poolInfo": {"poolId": "nonodes"}})
        client.create_job({"id": OTHER, "poolInfo": {"poolId": "nonodes"}})
        client.create_tasks(JOB, [{"id": f"t{i}", "commandLine": "/bin/true"}
                                  for i in range(waiters)])
        etags = {t["id"]: t["eTag"] for t in client.list_tasks_json(JOB)}
        counted = [0]  # the store's commits (each wakes every waiter)
        thread.runtime.service.ctx.store.on_commit(  # type: ignore[union-attr]
            lambda: counted.__setitem__(0, counted[0] + 1))
        commits(client, 20, counted)  # warm-up
        base_wall, base_cpu, base_commits = commits(client, n, counted)

        answered: list[str] = []
        endpoint = client.endpoint

        def wait(task_id: str) -> None:
            with BatchClient.from_environment(Path(tmp) / "state") as own:
                try:
                    if own.wait_task_json(JOB, task_id, etags[task_id], 60) is not None:
                        answered.append(task_id)
                except BatchError:  # the job deleted at the end: the wait is over
                    pass
        threads = [threading.Thread(target=wait, args=(t,), daemon=True) for t in etags]
        for t in threads:
            t.start()
        watch = thread.runtime.service.tasks.watch  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while watch.waiting < waiters and time.monotonic() < deadline:
            time.sleep(0.05)  # every request is waiting in the service
        reads_before = watch.reads
        with_wall, with_cpu, with_commits = commits(client, n, counted)
        watch_reads = watch.reads - reads_before
        costs = read_costs(thread, waiters)
        client.delete_job(JOB)  # ends the waits (TaskNotFound/JobNotFound)
        for t in threads:
            t.join(10)
    if answered:
        raise SystemExit(f"{len(answered)} waits answered although their task never changed")
    per_waiter_us = (with_cpu - base_cpu) / (waiters * with_commits) * 1e6
    results = {"benchmark": "long_poll", "endpoint": endpoint, "waiters": waiters, "updates": n,
               "no_waiters": {"wall_s": base_wall, "cpu_s": base_cpu, "commits": base_commits,
                              "updates_per_s": n / base_wall},
               "with_waiters": {"wall_s": with_wall, "cpu_s": with_cpu, "commits": with_commits,
                                "updates_per_s": n / with_wall},
               "cpu_us_per_waiter_per_commit": per_waiter_us,
               "watcher_reads": watch_reads,
               "read_cpu_us": costs}
    table(f"{n} Job - Updates ({with_commits} store commits), with and without {waiters} "
          "Task - Get long polls waiting",
          ["", "updates/s", "CPU ms an update"],
          [["no waiter (baseline)", f"{n / base_wall:,.0f}", f"{base_cpu / n * 1e3:.2f}"],
           [f"{waiters} waiters", f"{n / with_wall:,.0f}", f"{with_cpu / n * 1e3:.2f}"]])
    print(f"a waiting client costs {per_waiter_us:.1f} CPU µs at each store commit; the "
          f"watcher read the {waiters} tasks' versions {watch_reads} times "
          f"({with_commits} commits)")
    print(f"reads alone: task_etags of {waiters} tasks {costs['task_etags']:.0f} µs; "
          f"task_version of one {costs['task_version']:.0f} µs; get_task, the whole task, "
          f"{costs['get_task']:.0f} µs")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
