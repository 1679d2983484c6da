"""Per-job task counters ("Job - Get Task Counts" in O(1)), kept by the database itself.

The table ``job_task_counts`` (:data:`hpcbatch.store.database.job_task_counts`) has one
row per job: the number of its tasks, and the sum of their ``requiredSlots``, in each of
Batch's four count buckets (:data:`BUCKETS`). Triggers on ``tasks`` keep it equal to a
``GROUP BY state, result`` over the job's tasks after every statement, whatever code
path (or person with a SQL prompt) changed the tasks; triggers on ``jobs`` create a
job's row when the job is added and remove it with the job.

* **SQLite**: row-level triggers (``AFTER INSERT``, ``AFTER UPDATE OF state, result,
  required_slots, job_key ... WHEN`` something counted changed, ``AFTER DELETE``), each
  one ``UPDATE`` of the job's counter row by its primary key.
* **PostgreSQL**: statement-level triggers with transition tables, in PL/pgSQL: one
  ``UPDATE`` of each touched job's row per statement (a multi-row ``INSERT`` of 1,000
  tasks, a bulk ``UPDATE`` of a scheduling pass or the ``DELETE`` of a job's tasks moves
  each counter row once, not once per task: many updates of one row in one transaction
  are what PostgreSQL's MVCC makes expensive).

Both use the same bucket rules (:func:`bucket_expressions`): ``active``; ``preparing``
and ``running`` count as running (:data:`hpcbatch.batch.states.TASK_HOLDS_NODE`);
``completed`` is ``succeeded`` when its result is ``success``, else ``failed``.
Revision 0006 (``migrations/versions/0006_job_task_counts.py``) creates the table and
triggers and fills the rows from existing tasks; a new database gets them from
:data:`hpcbatch.store.database.metadata` (see :func:`create_triggers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpcbatch.batch import states

BUCKETS = ("active", "running", "succeeded", "failed")
"""The counted buckets; ``completed`` is ``succeeded + failed``."""

COLUMNS = (*BUCKETS, *(f"{b}_slots" for b in BUCKETS))
"""The counter columns of ``job_task_counts`` besides ``job_key``: tasks, then slots."""

_T = states.TaskState


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


def bucket_expressions(row: str) -> dict[str, str]:
    """SQL expressions of one task row's contribution to each counter column.

    Parameters
    ----------
    row
        The row's name in the trigger: ``NEW``, ``OLD`` or a transition table's alias.

    Returns
    -------
    dict
        Column of :data:`COLUMNS` -> SQL expression (0, 1, or the row's ``required_slots``).
    """
    when = {
        "active": f"{row}.state = '{_T.active}'",
        "running": f"{row}.state IN ({_quoted(states.TASK_HOLDS_NODE)})",
        "succeeded": (f"{row}.state = '{_T.completed}' "
                      f"AND {row}.result = '{states.TaskExecutionResult.success}'"),
        "failed": (f"{row}.state = '{_T.completed}' AND ({row}.result IS NULL "
                   f"OR {row}.result <> '{states.TaskExecutionResult.success}')"),
    }
    out = {b: f"(CASE WHEN {w} THEN 1 ELSE 0 END)" for b, w in when.items()}
    out.update({f"{b}_slots": f"(CASE WHEN {w} THEN {row}.required_slots ELSE 0 END)"
                for b, w in when.items()})
    return out


def _sqlite_apply(sign: str, row: str, key: str) -> str:
    e = bucket_expressions(row)
    sets = ", ".join(f"{c} = {c} {sign} {e[c]}" for c in COLUMNS)
    return f"UPDATE job_task_counts SET {sets} WHERE job_key = {key};"


def _sqlite_statements() -> list[str]:
    new, old = bucket_expressions("NEW"), bucket_expressions("OLD")
    delta = ", ".join(f"{c} = {c} + {new[c]} - {old[c]}" for c in COLUMNS)
    counted_changed = ("OLD.state IS NOT NEW.state OR OLD.result IS NOT NEW.result "
                       "OR OLD.required_slots IS NOT NEW.required_slots")
    return [
        ("CREATE TRIGGER hpcbatch_jobs_counts_insert AFTER INSERT ON jobs BEGIN "
         "INSERT INTO job_task_counts (job_key) VALUES (NEW.key) "
         "ON CONFLICT (job_key) DO NOTHING; END"),
        ("CREATE TRIGGER hpcbatch_jobs_counts_delete AFTER DELETE ON jobs BEGIN "
         "DELETE FROM job_task_counts WHERE job_key = OLD.key; END"),
        ("CREATE TRIGGER hpcbatch_tasks_counts_insert AFTER INSERT ON tasks BEGIN "
         f"{_sqlite_apply('+', 'NEW', 'NEW.job_key')} END"),
        ("CREATE TRIGGER hpcbatch_tasks_counts_delete AFTER DELETE ON tasks BEGIN "
         f"{_sqlite_apply('-', 'OLD', 'OLD.job_key')} END"),
        ("CREATE TRIGGER hpcbatch_tasks_counts_update "
         "AFTER UPDATE OF state, result, required_slots, job_key ON tasks "
         f"WHEN OLD.job_key = NEW.job_key AND ({counted_changed}) BEGIN "
         f"UPDATE job_task_counts SET {delta} WHERE job_key = NEW.job_key; END"),
        ("CREATE TRIGGER hpcbatch_tasks_counts_move AFTER UPDATE OF job_key ON tasks "
         "WHEN OLD.job_key IS NOT NEW.job_key BEGIN "
         f"{_sqlite_apply('-', 'OLD', 'OLD.job_key')} "
         f"{_sqlite_apply('+', 'NEW', 'NEW.job_key')} END"),
    ]


def _postgresql_apply(sources: list[tuple[str, str]]) -> str:
    """One UPDATE adding each job's summed contributions of the transition tables."""
    parts = []
    for table, sign in sources:
        e = bucket_expressions("r")
        cols = ", ".join(f"{sign}{e[c]} AS {c}" for c in COLUMNS)
        parts.append(f"SELECT r.job_key, {cols} FROM {table} r")
    sums = ", ".join(f"sum({c}) AS {c}" for c in COLUMNS)
    nonzero = " OR ".join(f"sum({c}) <> 0" for c in COLUMNS)
    sets = ", ".join(f"{c} = c.{c} + d.{c}" for c in COLUMNS)
    return (f"UPDATE job_task_counts c SET {sets} FROM (SELECT job_key, {sums} FROM ("
            f"{' UNION ALL '.join(parts)}) u GROUP BY job_key HAVING {nonzero}) d "
            "WHERE c.job_key = d.job_key;")


def _postgresql_function(name: str, body: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body} RETURN NULL; END $$")


def _postgresql_statements() -> list[str]:
    return [
        _postgresql_function(
            "hpcbatch_jobs_counts",
            "IF TG_OP = 'INSERT' THEN INSERT INTO job_task_counts (job_key) VALUES (NEW.key) "
            "ON CONFLICT (job_key) DO NOTHING; "
            "ELSE DELETE FROM job_task_counts WHERE job_key = OLD.key; END IF;"),
        ("CREATE TRIGGER hpcbatch_jobs_counts AFTER INSERT OR DELETE ON jobs "
         "FOR EACH ROW EXECUTE FUNCTION hpcbatch_jobs_counts()"),
        _postgresql_function("hpcbatch_tasks_counts_insert",
                             _postgresql_apply([("new_rows", "+")])),
        _postgresql_function("hpcbatch_tasks_counts_delete",
                             _postgresql_apply([("old_rows", "-")])),
        _postgresql_function("hpcbatch_tasks_counts_update",
                             _postgresql_apply([("new_rows", "+"), ("old_rows", "-")])),
        ("CREATE TRIGGER hpcbatch_tasks_counts_insert AFTER INSERT ON tasks "
         "REFERENCING NEW TABLE AS new_rows "
         "FOR EACH STATEMENT EXECUTE FUNCTION hpcbatch_tasks_counts_insert()"),
        ("CREATE TRIGGER hpcbatch_tasks_counts_delete AFTER DELETE ON tasks "
         "REFERENCING OLD TABLE AS old_rows "
         "FOR EACH STATEMENT EXECUTE FUNCTION hpcbatch_tasks_counts_delete()"),
        # Transition tables allow no column list (UPDATE OF) and no WHEN: the function
        # skips jobs whose sums did not change.
        ("CREATE TRIGGER hpcbatch_tasks_counts_update AFTER UPDATE ON tasks "
         "REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows "
         "FOR EACH STATEMENT EXECUTE FUNCTION hpcbatch_tasks_counts_update()"),
    ]


def trigger_statements(dialect: str) -> list[str]:
    """The DDL creating the counters' triggers (and PostgreSQL's trigger functions).

    Parameters
    ----------
    dialect
        SQLAlchemy dialect name: ``sqlite`` or ``postgresql``.

    Returns
    -------
    list of str
        Statements to run in order, after ``tasks``, ``jobs`` and ``job_task_counts`` exist.

    Raises
    ------
    ValueError
        Another dialect.
    """
    if dialect == "sqlite":
        return _sqlite_statements()
    if dialect == "postgresql":
        return _postgresql_statements()
    raise ValueError(f"task counters: unsupported database dialect {dialect!r} "
                     "(allowed: sqlite, postgresql)")


def drop_statements(dialect: str) -> list[str]:
    """The DDL removing what :func:`trigger_statements` created (revision 0006's downgrade).

    Parameters
    ----------
    dialect
        ``sqlite`` or ``postgresql``.

    Returns
    -------
    list of str
    """
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in (
            "hpcbatch_jobs_counts_insert", "hpcbatch_jobs_counts_delete",
            "hpcbatch_tasks_counts_insert", "hpcbatch_tasks_counts_delete",
            "hpcbatch_tasks_counts_update", "hpcbatch_tasks_counts_move")]
    return [
        "DROP TRIGGER IF EXISTS hpcbatch_jobs_counts ON jobs",
        *(f"DROP TRIGGER IF EXISTS hpcbatch_tasks_counts_{op} ON tasks"
          for op in ("insert", "delete", "update")),
        "DROP FUNCTION IF EXISTS hpcbatch_jobs_counts()",
        *(f"DROP FUNCTION IF EXISTS hpcbatch_tasks_counts_{op}()"
          for op in ("insert", "delete", "update")),
    ]


def backfill_statement() -> str:
    """SQL filling ``job_task_counts`` (empty) with one row per job, counted from ``tasks``."""
    e = bucket_expressions("t")
    sums = ", ".join(f"COALESCE(sum({e[c]}), 0)" for c in COLUMNS)
    return (f"INSERT INTO job_task_counts (job_key, {', '.join(COLUMNS)}) "
            f"SELECT j.key, {sums} FROM jobs j LEFT JOIN tasks t ON t.job_key = j.key "
            "GROUP BY j.key")


def create_triggers(conn: Connection) -> None:
    """Run :func:`trigger_statements` for the connection's dialect.

    Parameters
    ----------
    conn
        A connection in a transaction, on a database with the three tables.
    """
    for stmt in trigger_statements(conn.dialect.name):
        conn.exec_driver_sql(stmt)


_TABLE = sa.table("job_task_counts", sa.column("job_key"), *(sa.column(c) for c in COLUMNS))


def read(conn: Connection, job_keys: Sequence[str]) -> dict[str, dict[str, int]]:
    """The counters of some jobs: one primary-key lookup per job, whatever its task count.

    Parameters
    ----------
    conn
        A connection (a read transaction is enough: the counters change with the tasks, in
        the same transactions).
    job_keys
        The jobs' store keys (``jobs.key``).

    Returns
    -------
    dict
        Job key -> {column of :data:`COLUMNS`: int}; a job without a counter row (none
        exists after revision 0006 has run) is absent.
    """
    out: dict[str, dict[str, int]] = {}
    for i in range(0, len(job_keys), 500):
        rows = conn.execute(sa.select(_TABLE).where(_TABLE.c.job_key.in_(job_keys[i:i + 500])))
        for row in rows.mappings():
            out[row["job_key"]] = {c: int(row[c]) for c in COLUMNS}
    return out


_JOBS = sa.table("jobs", sa.column("key"))
_ONE = (sa.select(*(_TABLE.c[c] for c in COLUMNS))
        .join_from(_TABLE, _JOBS, _JOBS.c.key == _TABLE.c.job_key)
        .where(_TABLE.c.job_key == sa.bindparam("job_key")))


def read_one(conn: Connection, job_key: str) -> dict[str, int] | None:
    """The counters of one existing job, in one statement built once (Job - Get Task Counts,
    and every long poll of it re-reads them at each commit).

    Parameters
    ----------
    conn
        A connection.
    job_key
        The job's store key (``jobs.key``).

    Returns
    -------
    dict or None
        Column of :data:`COLUMNS` -> int; None when the job or its counter row is missing.
    """
    row = conn.execute(_ONE, {"job_key": job_key}).first()
    return None if row is None else {c: int(v) for c, v in zip(COLUMNS, row, strict=True)}

