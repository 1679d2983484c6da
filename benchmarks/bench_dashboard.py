"""The web dashboard on a 100,000-task job and a 1,000-node pool: page load, live-update
latency and the bytes sent to the browser.

What is timed (HTTP, as the browser asks; a session signed in with the account key):

* **job page load**: the page's requests after its script has loaded —
  ``/dashboard/api/jobs/{job}`` (job, counts, job manager / preparation /
  release, charts aggregated in SQL) and ``/dashboard/api/jobs/{job}/tasks``
  (one page of 50 tasks through "Task - List"), median of 5;
* **pools page load**: ``/dashboard/api/pools`` with the 1,000-node heat map;
* **live-update latency**: from a change in the service (a task completing,
  written to the store; a node changing state through the pool manager) to the
  server-sent event that carries it arriving at the client, median of 5;
* the page's static files once (HTML, script, stylesheet).

Baselines in the same run: the plain REST "Task - List" of one page of 50
tasks and of 1,000 tasks, and "Compute Node - List" of the 1,000 nodes
(SharedKey-signed, the SDK's transport).

The rows are simulated, as the issue allows: the 100,000 tasks are added
through the SDK (``create_tasks``), then half are marked completed and 1,000
running with start/end times spread over ten minutes, straight in the store;
the 1,000 nodes are ``NodeRuntime`` objects put into the pool manager of a
pool whose inventory is empty (no processes).

    python benchmarks/bench_dashboard.py [--quick] [--json PATH]
"""

from __future__ import annotations

import http.client
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from _common import parse_args, service, stats, table, timed, write_json

from hpcbatch.batch.wire import utcnow
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.providers.inventory import Host
from hpcbatch.store.database import tasks

REPEATS = 5


class Sse:
    """A server-sent event stream read line by line (``http.client``, no buffering surprises)."""

    def __init__(self, endpoint: str, path: str, cookie: str) -> None:
        url = urlsplit(endpoint)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.conn.request("GET", path, headers={"Cookie": cookie, "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status

    def next(self, want: str) -> tuple[Any, int]:
        """The data of the next event named ``want`` and its size in bytes."""
        name, size = None, 0
        while True:
            line = self.resp.fp.readline()
            size += len(line)
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text[7:]
            elif text.startswith("data: ") and name == want:
                return json.loads(text[6:]), size + 1
            elif text == "":
                if name != want:
                    size = 0
                name = None

    def close(self) -> None:
        self.conn.close()


def _get(session: requests.Session, url: str) -> tuple[float, int]:
    s, r = timed(lambda: session.get(url, timeout=60))
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return s, len(r.content)


def main() -> int:
    args = parse_args("bench_dashboard", __doc__.splitlines()[0])
    total = 20_000 if args.quick else 100_000
    n_nodes = 200 if args.quick else 1_000
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-dash-") as tmp, \
            service(Path(tmp) / "state") as (client, thread):
        endpoint = client.endpoint
        svc = thread.runtime.service
        assert svc is not None
        client.create_job({"id": "big", "poolInfo": {"poolId": "wide"}})
        add_s, _ = timed(lambda: client.create_tasks(
            "big", [{"id": f"task-{i:06d}", "commandLine": "/bin/true"} for i in range(total)]))
        t0 = utcnow() - timedelta(minutes=10)
        span_s = 600.0
        with svc.store.begin() as conn:  # half completed, 1,000 running, times spread
            conn.execute(tasks.update().where(tasks.c.seq % 2 == 0).values(
                state="completed", result="success", exit_code=0,
                start_time=sa.literal(t0), end_time=sa.literal(t0)))
            conn.execute(tasks.update().where(tasks.c.seq % (total // 1000) == 1).values(
                state="running", start_time=sa.literal(t0)))
        # spread start/end times over ten minutes (one UPDATE per 100 buckets)
        with svc.store.begin() as conn:
            for b in range(100):
                when = t0 + timedelta(seconds=span_s * b / 100)
                conn.execute(tasks.update().where(
                    tasks.c.state == "completed", (tasks.c.seq // 2) % 100 == b).values(
                    start_time=when - timedelta(seconds=5), end_time=when))
        # 1,000 simulated nodes
        client.create_pool({"id": "wide", "vmSize": "no-such-label", "targetDedicatedNodes": 0})

        async def add_nodes() -> None:
            pm = svc.pool_manager
            pm.targets["wide"] = n_nodes
            pool = pm.pools.setdefault("wide", {})
            for i in range(n_nodes):
                host = Host(name=f"node-{i:04d}", address=f"10.0.{i // 250}.{i % 250 + 1}")
                state = "running" if i % 3 else "idle"
                node = NodeRuntime(pool_key="wide", pool_id="wide", node_id=host.name,
                                   host=host, slots=1, order=i, state=state)
                if state == "running":
                    node.running[f"r{i}"] = ("big", f"task-{i:06d}")
                pool[node.node_id] = node

        thread.call(add_nodes())

        s = requests.Session()
        key = json.loads((Path(tmp) / "state" / "account.json").read_text())["key"]
        r = s.post(f"{endpoint}/dashboard/signin", data={"key": key},
                   allow_redirects=False, timeout=10)
        assert r.status_code == 303
        cookie = f"hpcbatch-dashboard={s.cookies['hpcbatch-dashboard']}"
        static = {name: _get(s, f"{endpoint}/dashboard/{name}")
                  for name in ("", "static/app.js", "static/app.css")}
        job_detail, job_tasks, pools_view = [], [], []
        rest_page50, rest_page1000, rest_nodes = [], [], []
        sizes: dict[str, int] = {}
        for _ in range(REPEATS):
            sec, size = _get(s, f"{endpoint}/dashboard/api/jobs/big")
            job_detail.append(sec)
            sizes["job detail"] = size
            sec, size = _get(s, f"{endpoint}/dashboard/api/jobs/big/tasks")
            job_tasks.append(sec)
            sizes["job tasks page"] = size
            sec, size = _get(s, f"{endpoint}/dashboard/api/pools")
            pools_view.append(sec)
            sizes["pools"] = size
            sec, resp = timed(lambda: client._request("GET", "/jobs/big/tasks",
                                                      params={"maxresults": 50}))
            rest_page50.append(sec)
            sizes["REST tasks 50"] = len(resp.text.encode())
            sec, resp = timed(lambda: client._request("GET", "/jobs/big/tasks",
                                                      params={"maxresults": 1000}))
            rest_page1000.append(sec)
            sizes["REST tasks 1000"] = len(resp.text.encode())
            sec, resp = timed(lambda: client._request("GET", "/pools/wide/nodes"))
            rest_nodes.append(sec)
            sizes["REST nodes"] = len(resp.text.encode())

        # live: a task completes -> the job stream's counts event
        job_stream = Sse(endpoint, "/dashboard/live/jobs/big", cookie)
        _, sizes["job stream first counts"] = job_stream.next("counts")
        job_latency = []
        running_seqs = [row[0] for row in svc.store.engine.connect().execute(
            sa.select(tasks.c.seq).where(tasks.c.job_key == "big", tasks.c.state == "running")
            .limit(REPEATS))]
        for seq in running_seqs:
            start = time.perf_counter()
            with svc.store.begin() as conn:
                conn.execute(tasks.update().where(tasks.c.seq == seq).values(
                    state="completed", result="success", exit_code=0, end_time=utcnow()))
            _, size = job_stream.next("counts")
            job_latency.append(time.perf_counter() - start)
            sizes["job counts event"] = size
        _, sizes["job series event"] = job_stream.next("series")
        job_stream.close()

        # live: a node changes state -> the pools stream's node event
        pools_stream = Sse(endpoint, "/dashboard/live/pools", cookie)
        _, sizes["pools stream snapshot"] = pools_stream.next("snapshot")
        node_latency = []
        for i in range(REPEATS):
            node = svc.pool_manager.pools["wide"][f"node-{3 * i:04d}"]  # idle ones
            start = time.perf_counter()
            thread.loop.call_soon_threadsafe(svc.pool_manager.set_state, node, "running")
            cell, size = pools_stream.next("node")
            assert cell[1] == node.node_id and cell[2] == "running", cell
            node_latency.append(time.perf_counter() - start)
            sizes["node event"] = size
        pools_stream.close()

    jd, jt, pv = stats(job_detail), stats(job_tasks), stats(pools_view)
    r50, r1000, rn = stats(rest_page50), stats(rest_page1000), stats(rest_nodes)
    jl, nl = stats(job_latency), stats(node_latency)
    table(f"dashboard on a {total:,}-task job and a {n_nodes:,}-node pool",
          ["request", "median s", "best s", "bytes"], [
              ["job page: /api/jobs/big (counts, charts)", jd["median_s"], jd["best_s"],
               sizes["job detail"]],
              ["job page: /api/jobs/big/tasks (50 tasks)", jt["median_s"], jt["best_s"],
               sizes["job tasks page"]],
              [f"pools page: /api/pools ({n_nodes} nodes)", pv["median_s"], pv["best_s"],
               sizes["pools"]],
              ["baseline REST Task - List, 50", r50["median_s"], r50["best_s"],
               sizes["REST tasks 50"]],
              ["baseline REST Task - List, 1000", r1000["median_s"], r1000["best_s"],
               sizes["REST tasks 1000"]],
              [f"baseline REST Compute Node - List ({n_nodes})", rn["median_s"], rn["best_s"],
               sizes["REST nodes"]],
              ["live: task completed -> counts event", jl["median_s"], jl["best_s"],
               sizes["job counts event"]],
              ["live: node state -> node event", nl["median_s"], nl["best_s"],
               sizes["node event"]],
          ])
    static_bytes = {name or "index.html": size for name, (_, size) in static.items()}
    print(f"static files (once per page load): {static_bytes}; "
          f"job charts event {sizes['job series event']} B; pools snapshot "
          f"{sizes['pools stream snapshot']} B; adding {total:,} tasks took {add_s:.1f} s")
    write_json(args.json, {"benchmark": "dashboard", "tasks": total, "nodes": n_nodes,
                           "job_detail": jd, "job_tasks_page": jt, "pools": pv,
                           "baseline_rest_tasks_50": r50, "baseline_rest_tasks_1000": r1000,
                           "baseline_rest_nodes": rn, "live_job_counts_latency": jl,
                           "live_node_state_latency": nl, "bytes": sizes,
                           "static_bytes": static_bytes, "add_s": add_s})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
