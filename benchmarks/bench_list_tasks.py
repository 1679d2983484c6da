"""Listing the completed tasks of a 5,000-task job, with $filter and $select.

Target: ``client.list_tasks(job, filter="state eq 'completed'", select="id,state")``
returns in <= 50 ms (median of 5) when half of 5,000 tasks are completed.

Baseline in the same run: the unfiltered, unselected ``client.list_tasks(job)``.
Each query is also timed as raw HTTP (``requests`` + ``SharedKeyAuth``, pages
followed, JSON decoded but no pydantic models built) to separate the service's
time from the SDK's parsing.

Tasks are made completed quickly by writing the store directly (every other
task: ``state='completed'``, ``result``, ``exit_code``, times), through the
service runtime's store.

    python benchmarks/bench_list_tasks.py [--quick] [--json PATH]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from _common import parse_args, service, stats, table, timed, verdict, write_json

from hpcbatch.batch.wire import new_etag, utcnow
from hpcbatch.client.auth import SharedKeyAuth
from hpcbatch.client.sdk import API_VERSION
from hpcbatch.store.database import tasks

TARGET_S = 0.050
JOB = "listjob"
FILTER = "state eq 'completed'"
SELECT = "id,state"


def complete_half(thread: Any) -> int:
    """Mark every other task completed (1 in 10 of them failed) straight in the store."""
    store = thread.runtime.store
    now = utcnow()
    with store.begin() as conn:
        seqs = conn.execute(sa.select(tasks.c.seq).order_by(tasks.c.seq)).scalars().all()
        rows = [{"b_seq": s, "b_exit": 1 if i % 20 == 0 else 0,
                 "b_result": "failure" if i % 20 == 0 else "success"}
                for i, s in enumerate(seqs) if i % 2 == 0]
        conn.execute(
            tasks.update().where(tasks.c.seq == sa.bindparam("b_seq")).values(
                state="completed", previous_state="running",
                previous_state_transition_time=now, state_transition_time=now,
                start_time=now, end_time=now, exit_code=sa.bindparam("b_exit"),
                result=sa.bindparam("b_result"), node_id="node-1", pool_key="nonodes",
                last_modified=now, etag=new_etag()),
            rows)
    return len(rows)


def raw_list(session: requests.Session, auth: SharedKeyAuth, endpoint: str,
             params: dict[str, str]) -> tuple[int, int, int]:
    """GET every page without the SDK; return (items, pages, bytes)."""
    resp = session.get(f"{endpoint}/jobs/{JOB}/tasks",
                       params={"api-version": API_VERSION, **params}, auth=auth)
    items = pages = size = 0
    while True:
        resp.raise_for_status()
        size += len(resp.content)
        body = resp.json()
        items += len(body["value"])
        pages += 1
        nxt = body.get("odata.nextLink")
        if not nxt:
            return items, pages, size
        resp = session.get(nxt, auth=auth)


def main() -> int:
    args = parse_args("bench_list_tasks", __doc__.splitlines()[0])
    n = 1000 if args.quick else 5000
    repeats = 5
    results: dict[str, Any] = {"benchmark": "list_tasks", "tasks": n, "repeats": repeats,
                               "filter": FILTER, "select": SELECT, "target_s": TARGET_S}
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-list-") as tmpdir, \
            service(Path(tmpdir) / "state") as (client, thread):
        client.create_job({"id": JOB, "poolInfo": {"poolId": "nonodes"}})
        client.create_tasks(JOB, [{"id": f"task-{i:05d}", "commandLine": f"/bin/echo {i}"}
                                  for i in range(n)])
        completed = complete_half(thread)
        counts = client.get_task_counts(JOB)
        assert counts["completed"] == completed, counts
        results["completed_tasks"] = completed
        creds = thread.runtime.credentials
        assert creds is not None
        auth = SharedKeyAuth(creds.account_name, creds.key)
        session = requests.Session()
        endpoint = thread.runtime.endpoint

        def sdk_filtered() -> list[Any]:
            return client.list_tasks(JOB, filter=FILTER, select=SELECT)

        def sdk_all() -> list[Any]:
            return client.list_tasks(JOB)

        def raw_filtered() -> tuple[int, int, int]:
            return raw_list(session, auth, endpoint, {"$filter": FILTER, "$select": SELECT})

        def raw_all() -> tuple[int, int, int]:
            return raw_list(session, auth, endpoint, {})

        cases = {"sdk_filtered_selected": sdk_filtered, "raw_http_filtered_selected": raw_filtered,
                 "baseline_sdk_unfiltered": sdk_all, "baseline_raw_http_unfiltered": raw_all}
        for fn in cases.values():  # warm-up, not timed
            fn()
        samples: dict[str, list[float]] = {k: [] for k in cases}
        shape: dict[str, Any] = {}
        for _ in range(repeats):  # interleaved, so that drift affects every case alike
            for name, fn in cases.items():
                seconds, out = timed(fn, collect=True)
                samples[name].append(seconds)
                if isinstance(out, list):  # keep a summary, not 5,000 models
                    assert name != "sdk_filtered_selected" or all(
                        t.state == "completed" for t in out)
                    out = [None] * len(out)
                shape[name] = out
                del out
        assert len(shape["sdk_filtered_selected"]) == completed
        assert len(shape["baseline_sdk_unfiltered"]) == n
        session.close()
    for name, s in samples.items():
        entry = stats(s)
        out = shape[name]
        if isinstance(out, tuple):
            entry.update(items=out[0], pages=out[1], response_bytes=out[2])
        else:
            entry["items"] = len(out)
        results[name] = entry
    med = results["sdk_filtered_selected"]["median_s"]
    target = TARGET_S  # per-request costs do not scale with n: --quick keeps the 50 ms target
    results["target_met"] = med <= target
    results["speedup_vs_unfiltered_x"] = results["baseline_sdk_unfiltered"]["median_s"] / med
    results["sdk_parse_share_filtered"] = 1 - results["raw_http_filtered_selected"]["median_s"] / med

    labels = {"sdk_filtered_selected": "SDK list_tasks $filter+$select",
              "raw_http_filtered_selected": "  raw HTTP (no pydantic), same query",
              "baseline_sdk_unfiltered": "baseline: SDK list_tasks, all",
              "baseline_raw_http_unfiltered": "  raw HTTP (no pydantic), all"}
    rows = []
    for name, label in labels.items():
        r = results[name]
        pages = r.get("pages", "")
        size = f"{r['response_bytes'] / 1024:,.0f}" if "response_bytes" in r else ""
        rows.append([label, r["items"], pages, size, r["best_s"] * 1e3, r["median_s"] * 1e3])
    table(f"list tasks of a {n:,}-task job, {completed:,} completed (median of {repeats})",
          ["", "tasks", "pages", "KiB", "best ms", "median ms"], rows)
    print(f"target: filtered+selected median <= {target * 1e3:.0f} ms -> "
          f"{verdict(results['target_met'])} ({results['speedup_vs_unfiltered_x']:.1f}x faster "
          f"than unfiltered; SDK parsing is {results['sdk_parse_share_filtered']:.0%} of it)")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
