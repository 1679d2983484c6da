"""BulkStatement: the scheduling pass's UPDATEs write what ``conn.execute`` writes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hpcbatch.store.database import BulkStatement, Store, dumps, tasks

T0 = datetime(2026, 1, 2, 3, 4, 5)  # microsecond 0: the text form that differs most easily


def _add(store: Store, job: str, n: int) -> list[int]:
    rows = [{"job_key": job, "key": f"t{i}", "id": f"t{i}", "state": "active",
             "creation_time": T0, "state_transition_time": T0, "last_modified": T0,
             "etag": "e0", "required_slots": 1, "retry_count": 0, "requeue_count": 0,
             "spec": "{}"} for i in range(n)]
    with store.begin() as conn:
        Store.insert_many(conn, tasks, rows)
        return list(conn.execute(sa.select(tasks.c.seq).where(tasks.c.job_key == job)
                                 .order_by(tasks.c.seq)).scalars())


STATEMENT = (tasks.update()
             .where(tasks.c.seq == sa.bindparam("b_seq"),
                    sa.or_(tasks.c.state == "active", tasks.c.state == "running"))
             .values(state=sa.bindparam("b_state"), previous_state=tasks.c.state,
                     state_transition_time=sa.bindparam("b_now"),
                     last_modified=sa.bindparam("b_now"), start_time=sa.bindparam("b_start"),
                     end_time=None, exit_code=sa.bindparam("b_exit"),
                     satisfies=sa.bindparam("b_ok"), failure_info=sa.bindparam("b_failure"),
                     last_retry_time=sa.func.coalesce(sa.bindparam("b_retry", type_=sa.DateTime),
                                                      tasks.c.last_retry_time),
                     etag=sa.bindparam("b_etag")))


def _rows(seqs: list[int]) -> list[dict[str, Any]]:
    return [{"b_seq": s, "b_state": "running" if i % 2 else "completed", "b_now": T0,
             "b_start": T0 + timedelta(microseconds=i * 7), "b_exit": i if i % 3 else None,
             "b_ok": None if i % 4 == 0 else bool(i % 2),
             "b_failure": dumps({"code": "X", "n": i}) if i % 2 else None,
             "b_retry": T0 + timedelta(seconds=i) if i % 2 else None, "b_etag": f"e{i}"}
            for i, s in enumerate(seqs)]


def _table(store: Store, job: str) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        cols = [c for c in tasks.c if c.name not in ("seq", "job_key")]
        return [tuple(r) for r in conn.execute(
            sa.select(*cols).where(tasks.c.job_key == job).order_by(tasks.c.seq))]


def test_bulk_statement_writes_what_execute_writes(database_url: str) -> None:
    store = Store(database_url)
    try:
        slow, fast = _add(store, "slow", 9), _add(store, "fast", 9)
        with store.begin() as conn:
            conn.execute(STATEMENT, _rows(slow))
            BulkStatement(STATEMENT).execute(conn, _rows(fast))
        got, want = _table(store, "fast"), _table(store, "slow")
        assert got == want
        assert {r[2] for r in got} == {"running", "completed"}  # the rows did change
        # a row whose state the WHERE clause excludes is left alone, as by execute()
        with store.begin() as conn:
            BulkStatement(STATEMENT).execute(conn, _rows(fast)[:1])  # "completed" now
        assert _table(store, "fast")[0] == got[0]
    finally:
        store.close()


def test_bulk_statement_needs_every_value(database_url: str) -> None:
    store = Store(database_url)
    try:
        seqs = _add(store, "j", 1)
        rows = _rows(seqs)
        del rows[0]["b_etag"]
        with pytest.raises((KeyError, sa.exc.StatementError)), store.begin() as conn:
            BulkStatement(STATEMENT).execute(conn, rows)
        BulkStatement(STATEMENT).execute(store.engine.connect(), [])  # nothing to do
    finally:
        store.close()
