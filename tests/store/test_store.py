"""The store on SQLite and on a real PostgreSQL server: the same results from both."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import sqlalchemy as sa

from hpcbatch.store import filters
from hpcbatch.store.database import _NEXT_ACTIVE_SQLITE, Store, dumps, jobs, tasks


def _job(store: Store, key: str) -> None:
    with store.begin() as conn:
        conn.execute(jobs.insert().values(
            key=key, id=key.upper(), seq=store.next_seq(conn, "job"), pool_key="p",
            state="active", priority=0, spec="{}", status="{}"))


def _tasks(store: Store, job_key: str, n: int, start: datetime) -> None:
    rows = [{"job_key": job_key, "key": f"t{i:04d}", "id": f"T{i:04d}",
             "state": "completed" if i % 3 == 0 else "active", "creation_time": start,
             "state_transition_time": start + timedelta(seconds=i),
             "last_modified": start, "etag": "e", "required_slots": 1, "instances": 1,
             "is_manager": False, "dep_state": "ready", "retry_count": 0, "requeue_count": 0,
             "exit_code": (i % 2) if i % 3 == 0 else None, "spec": dumps({"id": f"T{i:04d}"})}
            for i in range(n)]
    with store.begin() as conn:
        Store.insert_many(conn, tasks, rows)


def test_counters_are_atomic_under_concurrent_transactions(database_url: str) -> None:
    store = Store(database_url)
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            with store.begin() as conn:
                value = store.next_seq(conn, "job")
            with lock:
                got.append(value)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 201))
    store.close()


def test_queue_and_filters_agree_on_both_databases(database_url: str) -> None:
    store = Store(database_url)
    start = datetime(2026, 1, 1, 12, 0, 0)
    _job(store, "j")
    _tasks(store, "j", 30, start)
    with store.read() as conn:
        queue = Store.next_active_tasks(conn, "j", 5)
        assert [r["id"] for r in queue] == ["T0001", "T0002", "T0004", "T0005", "T0007"]

        def ids(text: str) -> list[str]:
            stmt = (sa.select(tasks.c.id).where(tasks.c.job_key == "j")
                    .where(filters.compile_filter(text, filters.TASK_COLUMNS))
                    .order_by(tasks.c.seq))
            return list(conn.execute(stmt).scalars())

        assert ids("state eq 'COMPLETED' and executionInfo/exitCode eq 1") == [
            "T0003", "T0009", "T0015", "T0021", "T0027"]
        assert ids("id eq 't0007'") == ["T0007"]  # IDs compare case-insensitively
        assert ids("startswith(id, 't002')") == [f"T002{i}" for i in range(10)]
        since = (start + timedelta(seconds=27)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert ids(f"stateTransitionTime gt DateTime'{since}'") == ["T0028", "T0029"]
        assert ids("not (executionInfo/exitCode eq 0)")[:3] == ["T0001", "T0002", "T0003"]
    store.close()


def test_the_ready_queue_is_a_partial_index_that_skips_waiting_tasks(database_url: str) -> None:
    # Revision 0007: ix_tasks_queue holds only active tasks whose dependencies are met, so
    # a job whose first 2,000 active tasks still wait gives its ready ones at once, and a
    # task moves in and out of the queue with its state.
    store = Store(database_url)
    start = datetime(2026, 1, 1, 12, 0, 0)
    _job(store, "j")
    rows = [{"job_key": "j", "key": f"t{i:05d}", "id": f"T{i:05d}", "state": "active",
             "creation_time": start, "state_transition_time": start, "last_modified": start,
             "etag": "e", "required_slots": 1, "instances": 1, "is_manager": False,
             "dep_state": "waiting" if i < 2000 else "ready", "retry_count": 0,
             "requeue_count": 0, "spec": dumps({"id": f"T{i:05d}"})} for i in range(2010)]
    with store.begin() as conn:
        Store.insert_many(conn, tasks, rows)
    with store.read() as conn:
        assert [r["id"] for r in Store.next_active_tasks(conn, "j", 3)] == [
            "T02000", "T02001", "T02002"]
    with store.begin() as conn:  # one starts, one waiting task becomes ready
        conn.execute(tasks.update().where(tasks.c.key == "t02000").values(state="running"))
        conn.execute(tasks.update().where(tasks.c.key == "t00005").values(dep_state="ready"))
    with store.read() as conn:
        assert [r["id"] for r in Store.next_active_tasks(conn, "j", 3)] == [
            "T00005", "T02001", "T02002"]
        if conn.dialect.name == "sqlite":
            sql = str(_NEXT_ACTIVE_SQLITE.compile(dialect=conn.dialect))
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}", ("j", 3)))
            assert "USING INDEX ix_tasks_queue" in plan, plan
        else:  # PostgreSQL's planner picks the partial index once it knows the table
            conn.exec_driver_sql("ANALYZE tasks")
            plan = " ".join(r[0] for r in conn.exec_driver_sql(
                "EXPLAIN SELECT seq FROM tasks WHERE job_key = 'j' AND state = 'active'"
                " AND dep_state = 'ready' ORDER BY seq LIMIT 3"))
            assert "ix_tasks_queue" in plan, plan
    store.close()
