"""The durable store: SQLAlchemy Core over SQLite (default) or PostgreSQL.

Every accepted change is committed before the service replies. Resources keep
their immutable client-given specification as JSON (``spec``) and their
changing state in columns, so that queries (``state eq 'completed'``, the
scheduler's "next active tasks of job J") run in the database on indexed
columns and cost in proportion to what they return: the database is the task
queue, and no per-task state lives in the service's memory.

IDs are unique case-insensitively, as in Batch: each row's key is the lower-cased
ID and the original spelling is kept in ``id``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.dml import UpdateBase

from hpcbatch.store import task_counts

metadata = sa.MetaData()

JSON = sa.Text  # JSON kept as text: portable, and cheap to skip in $select queries.

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("spec", JSON, nullable=False),
    sa.Column("pool_key", sa.String(64), nullable=True, index=True),
)

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("allocation_state", sa.String(16), nullable=False),
    sa.Column("spec", JSON, nullable=False),
    sa.Column("status", JSON, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("pool_key", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host_key", sa.String(64), nullable=False),
    sa.Column("state", sa.String(24), nullable=False),
    sa.Column("status", JSON, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("pool_key", sa.String(64), nullable=True, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("spec", JSON, nullable=False),
    sa.Column("status", JSON, nullable=False),
    # Also in the status document; columns so that $filter on them runs in SQL (rev. 0002).
    sa.Column("creation_time", sa.DateTime, nullable=True),
    sa.Column("state_transition_time", sa.DateTime, nullable=True),
    sa.Index("ix_jobs_state_transition_time", "state_transition_time"),
)

TASK_READY = "state = 'active' AND dep_state = 'ready'"
"""The predicate of the ready queue (``ix_tasks_queue``, a partial index, revision 0007):
a query that reads the queue states it with these literals, so that both SQLite and
PostgreSQL can prove the index covers it (a bound parameter would not do)."""

TASK_TO_CLEAN = "cleanup_at IS NOT NULL"
"""The predicate of ``ix_tasks_cleanup_at`` (revision 0007): only ended tasks have a
cleanup time, so the index holds only them."""

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_key", sa.String(64), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("creation_time", sa.DateTime, nullable=False),
    sa.Column("state_transition_time", sa.DateTime, nullable=False),
    sa.Column("previous_state", sa.String(16), nullable=True),
    sa.Column("previous_state_transition_time", sa.DateTime, nullable=True),
    sa.Column("last_modified", sa.DateTime, nullable=False),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Column("required_slots", sa.Integer, nullable=False, default=1),
    sa.Column("instances", sa.Integer, nullable=False, default=1),
    sa.Column("is_manager", sa.Boolean, nullable=False, default=False),
    sa.Column("int_id", sa.BigInteger, nullable=True),
    sa.Column("dep_state", sa.String(8), nullable=False, default="ready"),
    sa.Column("dep_reason", sa.Text, nullable=True),
    sa.Column("satisfies", sa.Boolean, nullable=True),
    sa.Column("cleanup_at", sa.DateTime, nullable=True),
    sa.Column("pool_key", sa.String(64), nullable=True),
    sa.Column("node_id", sa.String(64), nullable=True),
    sa.Column("start_time", sa.DateTime, nullable=True),
    sa.Column("end_time", sa.DateTime, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("result", sa.String(16), nullable=True),
    sa.Column("retry_count", sa.Integer, nullable=False, default=0),
    sa.Column("requeue_count", sa.Integer, nullable=False, default=0),
    sa.Column("last_retry_time", sa.DateTime, nullable=True),
    sa.Column("last_requeue_time", sa.DateTime, nullable=True),
    sa.Column("failure_info", JSON, nullable=True),
    sa.Column("task_root_dir", sa.String(1024), nullable=True),
    sa.Column("spec", JSON, nullable=False),
    sa.UniqueConstraint("job_key", "key", name="uq_task_job_key"),
    # The ready queue is the partial index itself (0007): a task enters it when it becomes
    # active and ready and leaves it when it starts, so a run moves one entry, not four.
    sa.Index("ix_tasks_queue", "job_key", "seq",
             sqlite_where=sa.text(TASK_READY), postgresql_where=sa.text(TASK_READY)),
    sa.Index("ix_tasks_int_id", "job_key", "int_id"),
    sa.Index("ix_tasks_cleanup_at", "cleanup_at",
             sqlite_where=sa.text(TASK_TO_CLEAN), postgresql_where=sa.text(TASK_TO_CLEAN)),
    # "Task - List" pages in insertion order, whole or by state: a page of a 1M-task job
    # reads its rows from these, instead of sorting the job's tasks (0003).
    sa.Index("ix_tasks_job_seq", "job_key", "seq"),
    sa.Index("ix_tasks_job_state_seq", "job_key", "state", "seq"),
)

job_task_counts = sa.Table(
    "job_task_counts",
    metadata,
    sa.Column("job_key", sa.String(64), primary_key=True),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0"))
      for name in task_counts.COLUMNS),
)
"""Each job's tasks and their ``requiredSlots`` by count bucket (rev. 0006): kept by
triggers on ``tasks`` and ``jobs`` (:mod:`hpcbatch.store.task_counts`), so "Job - Get
Task Counts" reads one row instead of grouping the job's tasks."""


@sa.event.listens_for(metadata, "after_create")
def _create_counter_triggers(_target: sa.MetaData, connection: Connection, **_kw: Any) -> None:
    task_counts.create_triggers(connection)


task_deps = sa.Table(
    "task_deps",
    metadata,
    sa.Column("job_key", sa.String(64), primary_key=True),
    sa.Column("upstream_key", sa.String(64), primary_key=True),
    sa.Column("task_key", sa.String(64), primary_key=True),
)
"""Explicit dependencies: ``task_key`` waits for ``upstream_key`` (which may not exist yet)."""

task_dep_ranges = sa.Table(
    "task_dep_ranges",
    metadata,
    sa.Column("job_key", sa.String(64), nullable=False),
    sa.Column("task_key", sa.String(64), nullable=False),
    sa.Column("start", sa.BigInteger, nullable=False),
    sa.Column("end", sa.BigInteger, nullable=False),
    sa.Index("ix_dep_ranges", "job_key", "start"),
)
"""Range dependencies: ``task_key`` waits for every task whose integer ID is in [start, end]."""

job_nodes = sa.Table(
    "job_nodes",
    metadata,
    sa.Column("job_key", sa.String(64), primary_key=True),
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("pool_id", sa.String(64), nullable=False),
    sa.Column("preparation", JSON, nullable=True),
    sa.Column("release", JSON, nullable=True),
)
"""Nodes that ran tasks of a job, with its preparation/release task execution info there."""

subtasks = sa.Table(
    "subtasks",
    metadata,
    sa.Column("job_key", sa.String(64), primary_key=True),
    sa.Column("task_key", sa.String(64), primary_key=True),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("pool_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("state_transition_time", sa.DateTime, nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=True),
    sa.Column("end_time", sa.DateTime, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("result", sa.String(16), nullable=True),
    sa.Column("failure_info", JSON, nullable=True),
)
"""Subtasks (instances 1..N-1) of the current run of each multi-instance task."""

applications = sa.Table(
    "applications",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("display_name", sa.String(1024), nullable=True),
    sa.Column("default_version", sa.String(64), nullable=True),
)
"""Applications of the account (``Application``)."""

app_packages = sa.Table(
    "app_packages",
    metadata,
    sa.Column("app_key", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("storage_key", sa.String(512), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("last_activation_time", sa.DateTime, nullable=False),
)
"""Application package versions; the zip lives in the service storage at ``storage_key``."""

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", JSON, nullable=False),
    sa.Column("status", JSON, nullable=False),
)
"""Certificates of the account ("Certificate - Add"): key ``{algorithm}-{thumbprint}``
(lower case); ``spec`` holds the data (base64), format and pfx password."""

counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
)


usage_stats = sa.Table(
    "usage_stats",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=False),
    sa.Column("last_update_time", sa.DateTime, nullable=False),
    sa.Column("user_cpu_s", sa.Float, nullable=False),
    sa.Column("kernel_cpu_s", sa.Float, nullable=False),
    sa.Column("wall_clock_s", sa.Float, nullable=False),
    sa.Column("wait_s", sa.Float, nullable=False),
    sa.Column("read_ops", sa.BigInteger, nullable=False),
    sa.Column("write_ops", sa.BigInteger, nullable=False),
    sa.Column("read_bytes", sa.BigInteger, nullable=False),
    sa.Column("write_bytes", sa.BigInteger, nullable=False),
    sa.Column("peak_rss_bytes", sa.BigInteger, nullable=False),
    sa.Column("succeeded", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("core_s", sa.Float, nullable=False),
)
"""Statistics counters (rev. 0003), one row per ``(scope, key)``: ``scope`` ``job`` or
``pool`` (``key`` the resource's key, ``seq`` its creation ``seq``: a row whose ``seq``
differs belongs to an earlier resource of the same ID and is reset), or ``jobs``/``pools``
(``key`` ``""``: the account's lifetime totals). Task runs add to them as they end; nodes
add ``core_s`` (core-seconds in a pool) as they leave it."""

pool_usage = sa.Table(
    "pool_usage",
    metadata,
    sa.Column("pool_id", sa.String(64), primary_key=True),
    sa.Column("interval_start", sa.DateTime, primary_key=True),
    sa.Column("vm_size", sa.String(64), primary_key=True),
    sa.Column("core_s", sa.Float, nullable=False),
    sa.Index("ix_pool_usage_interval", "interval_start"),
)
"""Pool usage metrics (rev. 0003): core-seconds of nodes that left a pool, per
aggregation interval and ``vmSize`` (the nodes still in a pool are counted when read)."""

node_usage = sa.Table(
    "node_usage",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("last_update_time", sa.DateTime, nullable=False),
    sa.Column("samples", sa.BigInteger, nullable=False),
    sa.Column("memory_bytes", sa.Float, nullable=False),
    sa.Column("peak_memory_bytes", sa.BigInteger, nullable=False),
    sa.Column("disk_bytes", sa.Float, nullable=False),
    sa.Column("peak_disk_bytes", sa.BigInteger, nullable=False),
    sa.Column("network_read_bytes", sa.BigInteger, nullable=False),
    sa.Column("network_write_bytes", sa.BigInteger, nullable=False),
)
"""Node resource counters of pools (rev. 0008), one row per ``(scope, key)`` as in
``usage_stats`` (``pool`` and the pool's key, or ``pools`` and ``""``): the nodes'
sampled memory and disk use (``samples`` node samples; ``memory_bytes`` and
``disk_bytes`` their sums, for averages; their peaks) and the network bytes the nodes
read and wrote between samples. Apart from ``usage_stats``: a scheduling pass never
writes it."""


job_schedules = sa.Table(
    "job_schedules",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
)
"""Job schedules (``CloudJobSchedule``): spec as given, status as the service keeps it."""


def dumps(value: Any) -> str:
    """Serialise JSON compactly for a text column."""
    return json.dumps(value, separators=(",", ":"))


def loads(value: str | None) -> Any:
    """Parse a JSON text column (None stays None)."""
    return None if value is None else json.loads(value)


def sqlite_url(path: Path) -> str:
    """Return the SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{os.fspath(path)}"


QUEUE_COLUMNS = ("seq", "job_key", "key", "id", "spec", "required_slots", "instances",
                 "is_manager", "int_id", "retry_count", "requeue_count", "creation_time")
"""The columns :meth:`Store.next_active_tasks` returns: what a scheduling pass reads of a
candidate. ``creation_time`` comes as the driver gives it (SQLite: text, which a
``DATETIME`` would parse for every row read; it is parsed only for the statistics
of a task that completes)."""


def _queue_column(name: str) -> Any:
    column = tasks.c[name]
    return sa.type_coerce(column, sa.String).label(name) if name == "creation_time" else column


_NEXT_ACTIVE = (sa.select(*(_queue_column(name) for name in QUEUE_COLUMNS))
                .where(tasks.c.job_key == sa.bindparam("b_job"), sa.text(TASK_READY))
                .order_by(tasks.c.seq)
                .limit(sa.bindparam("b_limit", type_=sa.Integer)))
"""Statement of :meth:`Store.next_active_tasks`, built once (it runs in every scheduling pass)."""

_NEXT_ACTIVE_SQLITE = sa.text(
    "SELECT " + ", ".join(f'tasks."{name}"' for name in QUEUE_COLUMNS) +
    f" FROM tasks INDEXED BY ix_tasks_queue WHERE tasks.job_key = :b_job AND {TASK_READY}"
    " ORDER BY tasks.seq LIMIT :b_limit").columns(*(_queue_column(name) for name in QUEUE_COLUMNS))
""":data:`_NEXT_ACTIVE` on SQLite, which reads the ready queue's partial index by name:
with no statistics its planner takes ``(job_key, state, seq)`` for its two equalities,
and would then step over every active task still waiting on dependencies, in every pass
(SQLAlchemy renders no ``INDEXED BY``)."""


class BulkStatement:
    """A statement run for many rows at once (executemany) in every scheduling pass.

    On SQLite its parameters go to the driver as tuples, prepared here once per
    distinct value instead of once per row and occurrence by SQLAlchemy (a
    pass's recorded runs share their transition time, and a ``DATETIME``
    costs a string format each time); the SQL is compiled once. What reaches
    the database is what ``conn.execute(statement, rows)`` sends; other
    databases take that path.

    Parameters
    ----------
    statement
        An INSERT, UPDATE or DELETE whose per-row values are bind parameters;
        parameters with a value (literals of the statement) are fixed.
    """

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._sqlite: tuple[str, list[tuple[str, Any, Callable[[Any], Any] | None, bool]]] | None = None
        self._required: dict[str, bool] = {}

    def _compile_sqlite(self, dialect: Any) -> tuple[
            str, list[tuple[str, Any, Callable[[Any], Any] | None, bool]]]:
        compiled = self.statement.compile(dialect=dialect)
        assert compiled.positiontup is not None  # SQLite's paramstyle is positional
        slots: list[tuple[str, Any, Callable[[Any], Any] | None, bool]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            self._required[name] = bind.required
            impl = bind.type.dialect_impl(dialect)
            process = cast("Callable[[Any], Any] | None", impl.bind_processor(dialect))
            slots.append((name, None if bind.required else bind.value, process,
                          isinstance(bind.type, sa.DateTime)))
        return compiled.string, slots

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per row of ``rows`` (one executemany).

        Parameters
        ----------
        conn
            The transaction.
        rows
            ``{bind parameter name: value}`` per row; every parameter without a
            value in the statement must be given.
        """
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            conn.execute(self.statement, list(rows))
            return
        if self._sqlite is None:
            self._sqlite = self._compile_sqlite(conn.dialect)
        sql, slots = self._sqlite
        done: dict[Any, Any] = {}  # value -> what the driver gets, shared by the rows

        def prepare(value: Any, process: Callable[[Any], Any] | None, is_time: bool) -> Any:
            if value is None or process is None:
                return value
            if is_time and type(value) is datetime and value.tzinfo is None:
                got = done.get(value)
                if got is None:  # SQLAlchemy's SQLite DATETIME text, in C
                    got = done[value] = value.isoformat(" ", "microseconds")
                return got
            return process(value)

        given = rows[0].keys()
        # a parameter without a value in the statement is taken from each row (KeyError if not)
        live = [(i, name, process, is_time)
                for i, (name, _, process, is_time) in enumerate(slots)
                if name in given or self._required[name]]
        taken = {i for i, *_ in live}
        fixed = [(i, prepare(value, process, is_time))
                 for i, (_, value, process, is_time) in enumerate(slots) if i not in taken]
        base: list[Any] = [None] * len(slots)
        for i, value in fixed:
            base[i] = value
        plain = [(i, name) for i, name, process, _ in live if process is None]
        other = [(i, name, process, is_time) for i, name, process, is_time in live
                 if process is not None]
        params = []
        for row in rows:
            values = base.copy()
            for i, name in plain:
                values[i] = row[name]
            for i, name, process, is_time in other:
                value = row[name]
                if value is not None:
                    values[i] = (done.get(value) or prepare(value, process, is_time)
                                 if is_time else process(value))
            params.append(tuple(values))
        conn.exec_driver_sql(sql, params)


def mappings(result: sa.Result[Any]) -> list[Mapping[str, Any]]:
    """Return a result's rows as mappings of column name to value."""
    # SQLAlchemy types a RowMapping's keys as str | Column; its keys are column names.
    return cast("list[Mapping[str, Any]]", list(result.mappings()))


class Store:
    """The service's durable store.

    Parameters
    ----------
    url
        SQLAlchemy URL: ``sqlite:///path/state.db`` (default of the service) or
        ``postgresql+psycopg://user:pw@host/db``.

    Notes
    -----
    SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed change
    survives the service process being killed (SIGKILL); an operating-system
    crash may lose the last commits.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._commit_listeners: list[Callable[[], None]] = []
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        from hpcbatch.store.migrate import upgrade  # it imports this module's tables

        upgrade(self.engine)

    def close(self) -> None:
        """Release every database connection."""
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """Open a transaction, committed when the block ends without error.

        After the commit, every listener given to :meth:`on_commit` is called.
        """
        with self.engine.begin() as conn:
            yield conn
        for listener in self._commit_listeners:
            listener()

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every transaction :meth:`begin` commits.

        It runs in the committing thread, after the commit; it must be quick
        and must not raise (the service's long polls use it:
        :class:`hpcbatch.core.changes.Changes`).
        """
        self._commit_listeners.append(listener)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Open a connection for reads."""
        with self.engine.connect() as conn:
            yield conn

    # ---------------------------------------------------------------- counters

    def next_seq(self, conn: Connection, name: str) -> int:
        """Return the next value of a named counter (creation order of pools and jobs).

        One atomic upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), so two
        transactions never get the same value, on PostgreSQL as on SQLite.
        """
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = sqlite if self.is_sqlite else postgresql
        stmt = (dialect.insert(counters).values(name=name, value=1)
                .on_conflict_do_update(index_elements=[counters.c.name],
                                       set_={"value": counters.c.value + 1})
                .returning(counters.c.value))
        return int(conn.execute(stmt).scalar_one())

    # ------------------------------------------------------------------- generic

    @staticmethod
    def fetch_one(conn: Connection, table: sa.Table, **where: Any) -> Mapping[str, Any] | None:
        """Return the row of ``table`` matching every ``column=value``, or None."""
        stmt = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        row = conn.execute(stmt).mappings().first()
        # SQLAlchemy types a RowMapping's keys as str | Column; its keys are column names.
        return cast("Mapping[str, Any] | None", row)

    @staticmethod
    def update(conn: Connection, table: sa.Table, where: Mapping[str, Any], **values: Any) -> int:
        """Update rows of ``table`` matching ``where``; return how many changed."""
        stmt = table.update().where(*(table.c[k] == v for k, v in where.items())).values(**values)
        return conn.execute(stmt).rowcount

    @staticmethod
    def insert_many(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows``: on SQLite a page of rows per statement, else an executemany.

        On SQLite, ``RETURNING`` the primary key makes SQLAlchemy send a page of rows
        per ``INSERT`` ("insertmanyvalues") instead of one statement per row: a statement
        that fires a trigger (``tasks``: :mod:`hpcbatch.store.task_counts`) keeps a
        statement journal of the pages it touches, about 15 us per one-row statement on
        ``tasks``, about 1 us per row in a multi-row one. On PostgreSQL the driver's
        executemany (pipelined) costs the client a third of what the pages would.
        """
        if not rows:
            return
        key = list(table.primary_key.columns)
        if conn.dialect.name == "sqlite" and key:
            conn.execute(table.insert().returning(*key), list(rows)).all()
        else:
            conn.execute(table.insert(), list(rows))

    # --------------------------------------------------------------------- tasks

    @staticmethod
    def existing_task_keys(conn: Connection, job_key: str, keys: Iterable[str]) -> set[str]:
        """Return which of ``keys`` (lower-cased task IDs) exist already in job ``job_key``."""
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            stmt = sa.select(tasks.c.key).where(tasks.c.job_key == job_key, tasks.c.key.in_(chunk))
            found.update(conn.execute(stmt).scalars())
        return found

    @staticmethod
    def next_active_tasks(conn: Connection, job_key: str, limit: int) -> list[Mapping[str, Any]]:
        """Return up to ``limit`` active tasks of a job whose dependencies are met, FIFO.

        Each row holds the :data:`QUEUE_COLUMNS` only.

        Reads the ready queue (``ix_tasks_queue``, a partial index on active tasks whose
        dependencies are met): the cost is in proportion to ``limit``, however many tasks
        the job holds and however many of them wait.
        """
        stmt = _NEXT_ACTIVE_SQLITE if conn.dialect.name == "sqlite" else _NEXT_ACTIVE
        rows = conn.execute(stmt, {"b_job": job_key, "b_limit": limit}).mappings()
        return cast("list[Mapping[str, Any]]", list(rows))  # as in fetch_one

    @staticmethod
    def count_tasks_by_state(conn: Connection, job_key: str) -> dict[str, int]:
        """Return ``{state: count}`` for a job's tasks."""
        stmt = (
            sa.select(tasks.c.state, sa.func.count())
            .where(tasks.c.job_key == job_key)
            .group_by(tasks.c.state)
        )
        return dict(conn.execute(stmt).all())
