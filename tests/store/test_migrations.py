"""Schema migrations (Alembic): a database made by hpcbatch 0.1.0 upgrades in place,
and the revisions build exactly the tables the code defines."""

from __future__ import annotations

import json
import random
from datetime import datetime

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from hpcbatch.store import filters
from hpcbatch.store.database import Store, jobs, metadata, tasks
from hpcbatch.store.migrate import FIRST, HEAD, MIGRATIONS, current_revision
from tests.store import test_task_counts as counts_test
from tests.store.test_task_counts import add_job, task_row


def _config(conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def test_head_is_the_newest_revision() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD


def test_revisions_build_the_tables_the_code_defines(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    engine.dispose()


def test_a_database_of_release_0_1_0_upgrades_in_place(database_url: str) -> None:
    # A database as hpcbatch 0.1.0 left it: its tables (revision 0001), no alembic_version.
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), FIRST)
        conn.execute(sa.text("DROP TABLE alembic_version"))
        created = "2026-03-04T05:06:07.123456Z"
        for n, (key, moved) in enumerate((("old", "2026-03-05T00:00:00.000000Z"),
                                          ("older", "2026-03-04T06:00:00.000000Z"))):
            conn.execute(sa.text(
                "INSERT INTO jobs (key, id, seq, pool_key, state, priority, spec, status) "
                "VALUES (:key, :id, :seq, 'p', 'active', 0, '{}', :status)"),
                {"key": key, "id": key.upper(), "seq": n + 1, "status": json.dumps(
                    {"creationTime": created, "stateTransitionTime": moved})})
        assert current_revision(conn) == FIRST
    engine.dispose()

    store = Store(database_url)  # opening it migrates it
    with store.read() as conn:
        assert current_revision(conn) == HEAD
        row = conn.execute(sa.select(jobs).where(jobs.c.key == "old")).mappings().one()
        assert row["creation_time"] == datetime(2026, 3, 4, 5, 6, 7, 123456)
        assert row["state_transition_time"] == datetime(2026, 3, 5)
        assert json.loads(row["status"])["creationTime"] == created  # the document is kept
        # The times the migration filled in are what $filter now reads in SQL.
        since = filters.compile_filter("stateTransitionTime gt DateTime'2026-03-04T12:00:00Z'",
                                       filters.JOB_COLUMNS)
        assert list(conn.execute(sa.select(jobs.c.id).where(since)).scalars()) == ["OLD"]
        # A new job gets its next seq after the old ones.
        with store.begin() as w:
            assert store.next_seq(w, "job") == 1  # counters were empty in this made-up DB
    store.close()
    # Opening an up-to-date store again changes nothing.
    again = Store(database_url)
    with again.read() as conn:
        assert current_revision(conn) == HEAD
    again.close()


def test_a_new_database_starts_at_head(database_url: str) -> None:
    store = Store(database_url)
    with store.read() as conn:
        assert current_revision(conn) == HEAD
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    store.close()


def test_a_database_at_0005_with_tasks_upgrades_to_counters(database_url: str) -> None:
    # Revision 0006 fills job_task_counts from the tasks already there, and from then on
    # the triggers keep it; its downgrade removes table and triggers.
    engine = sa.create_engine(database_url)
    rng = random.Random(6)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0005")
        for key in ("full", "empty"):
            add_job(conn, key)
        conn.execute(tasks.insert(), [task_row("full", i, rng) for i in range(300)])
        conn.execute(tasks.insert(), [task_row("gone", i, rng) for i in range(5)])  # no job
        want = counts_test.expected(conn)
    engine.dispose()
    assert sum(want["full"].values()) > 300

    store = Store(database_url)  # opening it migrates it
    try:
        with store.read() as conn:
            assert current_revision(conn) == HEAD
            assert counts_test.stored(conn) == want
        with store.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.state == "active").values(
                state="completed", result="failure"))
            conn.execute(tasks.insert(), [task_row("empty", 1000 + i, rng) for i in range(7)])
        with store.read() as conn:
            assert counts_test.stored(conn) == counts_test.expected(conn)
            empty = counts_test.stored(conn)["empty"]
            assert sum(empty[b] for b in ("active", "running", "succeeded", "failed")) == 7
    finally:
        store.close()

    with engine.begin() as conn:
        command.downgrade(_config(conn), "0005")
        assert "job_task_counts" not in sa.inspect(conn).get_table_names()
        conn.execute(tasks.update().values(state="active", result=None))  # no trigger left
        command.upgrade(_config(conn), "head")
        assert counts_test.stored(conn) == counts_test.expected(conn)
    engine.dispose()
