"""The per-job task counters kept by triggers (``hpcbatch.store.task_counts``) equal a
``GROUP BY`` over the job's tasks after every commit, on SQLite and on PostgreSQL,
whatever statements changed the tasks: multi-row inserts, single-row and multi-row
updates (within one job and across jobs), deletes, and a job's deletion."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from hpcbatch.batch.wire import new_etag, utcnow
from hpcbatch.store import task_counts
from hpcbatch.store.database import Store, dumps, job_task_counts, jobs, tasks

STATES = ("active", "preparing", "running", "completed")
RESULTS = (None, "success", "failure")


def expected(conn: sa.Connection) -> dict[str, dict[str, int]]:
    """Each job's counters computed the slow way, from its tasks (Batch's rules)."""
    out = {k: dict.fromkeys(task_counts.COLUMNS, 0)
           for k in conn.execute(sa.select(jobs.c.key)).scalars()}
    stmt = sa.select(tasks.c.job_key, tasks.c.state, tasks.c.result, sa.func.count(),
                     sa.func.sum(tasks.c.required_slots)).group_by(
        tasks.c.job_key, tasks.c.state, tasks.c.result)
    for job_key, state, result, n, slots in conn.execute(stmt):
        bucket = {"active": "active", "preparing": "running", "running": "running"}.get(
            state, "succeeded" if result == "success" else "failed")
        if job_key in out:  # tasks whose job row is gone are counted nowhere
            out[job_key][bucket] += n
            out[job_key][f"{bucket}_slots"] += int(slots)
    return out


def stored(conn: sa.Connection) -> dict[str, dict[str, int]]:
    rows = conn.execute(sa.select(job_task_counts)).mappings()
    return {r["job_key"]: {c: int(r[c]) for c in task_counts.COLUMNS} for r in rows}


def add_job(conn: sa.Connection, key: str) -> None:
    now = utcnow()
    conn.execute(jobs.insert().values(
        key=key, id=key.upper(), seq=0, pool_key="p", state="active", priority=0,
        spec="{}", status="{}", creation_time=now, state_transition_time=now))


def task_row(job_key: str, n: int, rng: random.Random) -> dict[str, Any]:
    now = utcnow()
    state = rng.choice(STATES)
    return {"job_key": job_key, "key": f"t{n}", "id": f"t{n}", "state": state,
            "result": rng.choice(RESULTS) if state == "completed" else None,
            "creation_time": now, "state_transition_time": now, "last_modified": now,
            "etag": new_etag(), "required_slots": rng.randint(1, 4), "retry_count": 0,
            "requeue_count": 0, "spec": dumps({"id": f"t{n}"})}


def random_change(conn: sa.Connection, rng: random.Random, job_keys: list[str],
                  serial: list[int]) -> str:
    """One random statement (or executemany) on the tasks; return what it was."""
    seqs = list(conn.execute(sa.select(tasks.c.seq)).scalars())
    kind = rng.choice(("insert", "insert", "update_one", "update_many", "update_bulk",
                       "update_other", "update_across", "delete_some", "update_noop"))
    if kind == "insert" or not seqs:
        job = rng.choice(job_keys)
        rows = []
        for _ in range(rng.randint(1, 40)):
            serial[0] += 1
            rows.append(task_row(job, serial[0], rng))
        Store.insert_many(conn, tasks, rows)
        return f"insert {len(rows)} into {job}"
    pick = rng.sample(seqs, min(len(seqs), rng.randint(1, 25)))
    if kind == "update_one":
        state = rng.choice(STATES)
        conn.execute(tasks.update().where(tasks.c.seq == pick[0]).values(
            state=state, result=rng.choice(RESULTS) if state == "completed" else None))
    elif kind == "update_many":  # executemany of a one-row UPDATE (a pass's shape)
        conn.execute(tasks.update().where(tasks.c.seq == sa.bindparam("b_seq")).values(
            state=sa.bindparam("b_state"), result=sa.bindparam("b_result"),
            required_slots=sa.bindparam("b_slots")),
            [{"b_seq": s, "b_state": rng.choice(STATES), "b_result": rng.choice(RESULTS),
              "b_slots": rng.randint(1, 4)} for s in pick])
    elif kind == "update_bulk":  # one multi-row UPDATE, values computed in SQL
        conn.execute(tasks.update().where(tasks.c.seq.in_(pick)).values(
            state=rng.choice(STATES), result=sa.case(
                (tasks.c.seq % 2 == 0, "success"), else_=rng.choice(RESULTS))))
    elif kind == "update_across":  # every job at once
        conn.execute(tasks.update().where(tasks.c.state == rng.choice(STATES)).values(
            state=rng.choice(STATES)))
    elif kind == "update_other":  # columns that are not counted
        conn.execute(tasks.update().where(tasks.c.seq.in_(pick)).values(
            node_id="n1", retry_count=tasks.c.retry_count + 1))
    elif kind == "update_noop":  # counted columns set to what they are
        conn.execute(tasks.update().where(tasks.c.seq.in_(pick)).values(
            state=tasks.c.state, required_slots=tasks.c.required_slots))
    else:
        conn.execute(tasks.delete().where(tasks.c.seq.in_(pick)))
    return f"{kind} {len(pick)}"


def test_counters_equal_the_group_by_after_every_commit(database_url: str) -> None:
    store = Store(database_url)
    rng = random.Random(17)
    job_keys = ["a", "b", "c"]
    serial = [0]
    try:
        with store.begin() as conn:
            for key in job_keys:
                add_job(conn, key)
        for step in range(120):
            with store.begin() as conn:
                done = [random_change(conn, rng, job_keys, serial)
                        for _ in range(rng.randint(1, 3))]
            with store.read() as conn:
                want = expected(conn)
                assert stored(conn) == want, (step, done)
                assert task_counts.read(conn, job_keys) == want
        with store.read() as conn:
            totals = expected(conn)
        assert all(sum(c[b] for b in task_counts.BUCKETS) for c in totals.values())
        assert any(c["failed"] and c["succeeded"] and c["running"] for c in totals.values())

        # Job - Delete's shape: the job's tasks, then its row; the counters go with it.
        with store.begin() as conn:
            conn.execute(tasks.delete().where(tasks.c.job_key == "a"))
            conn.execute(jobs.delete().where(jobs.c.key == "a"))
        with store.read() as conn:
            assert "a" not in stored(conn)
            assert stored(conn) == expected(conn)
        # A job added again under the same key starts from zero.
        with store.begin() as conn:
            add_job(conn, "a")
        with store.read() as conn:
            assert stored(conn)["a"] == dict.fromkeys(task_counts.COLUMNS, 0)
    finally:
        store.close()


def test_a_rolled_back_change_leaves_the_counters(database_url: str) -> None:
    store = Store(database_url)
    rng = random.Random(5)
    try:
        with store.begin() as conn:
            add_job(conn, "j")
            Store.insert_many(conn, tasks, [task_row("j", i, rng) for i in range(50)])
        with store.read() as conn:
            before: Mapping[str, Any] = stored(conn)
        try:
            with store.begin() as conn:
                conn.execute(tasks.update().values(state="completed", result="success"))
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        with store.read() as conn:
            assert stored(conn) == before == expected(conn)
    finally:
        store.close()
