"""The statistics counters in the store: ``usage_stats``, ``node_usage`` and ``pool_usage``.

Each write is one upsert (``INSERT ... ON CONFLICT DO UPDATE``) that adds the
deltas to the row in the database, so concurrent writers never lose an update and
the cost of recording a run is the same however many tasks a job holds.
:mod:`hpcbatch.core.statistics` decides what the deltas are.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hpcbatch.store.database import BulkStatement, mappings, node_usage, pool_usage, usage_stats

SUMS = ("user_cpu_s", "kernel_cpu_s", "wall_clock_s", "wait_s", "read_ops", "write_ops",
        "read_bytes", "write_bytes", "succeeded", "failed", "retries", "core_s")
"""The ``usage_stats`` counters that add up."""

PEAKS = ("peak_rss_bytes",)
"""The ``usage_stats`` counters that keep their largest value."""


def _insert(conn: Connection, table: sa.Table) -> Any:
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    return dialect.insert(table)


def add_usage(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add counters to ``usage_stats``, one upsert per row (one executemany).

    Parameters
    ----------
    conn
        A connection in the caller's transaction.
    rows
        Each ``{"scope", "key", "seq", "now"}`` and a value for every name of
        :data:`SUMS` and :data:`PEAKS` (numbers; seconds, bytes, counts). A row whose
        ``seq`` differs from the stored one replaces it (the ID was reused by a new
        resource); else the sums are added, the peaks kept at their maximum and
        ``last_update_time`` set to ``now``.
    """
    if not rows:
        return
    stmt = _ADD_USAGE.get(conn.dialect.name)
    if stmt is None:
        stmt = _ADD_USAGE[conn.dialect.name] = BulkStatement(_add_usage_statement(conn))
    stmt.execute(conn, [{"b_scope": r["scope"], "b_key": r["key"], "b_seq": r["seq"],
                         "b_start_time": r["now"], "b_last_update_time": r["now"],
                         **{f"b_{n}": r[n] for n in (*SUMS, *PEAKS)}} for r in rows])


_ADD_USAGE: dict[str, BulkStatement] = {}
"""The upsert of :func:`add_usage` per dialect name, built once: it runs in every
scheduling pass that records ended runs, and building its thirty ``CASE`` clauses
cost more than running it; on SQLite its parameters go to the driver as
:class:`~hpcbatch.store.database.BulkStatement` prepares them (SQLAlchemy's own
parameter processing was a tenth of a small pass)."""


def _add_usage_statement(conn: Connection) -> Any:
    return _upsert(conn, usage_stats, SUMS, PEAKS, keep=("start_time",))


def _upsert(conn: Connection, table: sa.Table, sums: Sequence[str], peaks: Sequence[str],
            keep: Sequence[str] = ()) -> Any:
    """The counters' upsert of ``table`` (keyed ``(scope, key)``, every column a
    ``b_<name>`` parameter): a row of another ``seq`` replaces the stored one; else
    ``sums`` add, ``peaks`` keep their maximum, ``keep`` columns stay as stored."""
    stmt = _insert(conn, table)
    new, old = stmt.excluded, table.c
    same = old.seq == new.seq
    sets: dict[str, Any] = {"seq": new.seq, "last_update_time": new.last_update_time}
    for name in keep:
        sets[name] = sa.case((same, old[name]), else_=new[name])
    for name in sums:
        sets[name] = sa.case((same, old[name] + new[name]), else_=new[name])
    for name in peaks:
        sets[name] = sa.case((sa.and_(same, old[name] > new[name]), old[name]), else_=new[name])
    stmt = stmt.values({c.name: sa.bindparam(f"b_{c.name}") for c in table.c})
    return stmt.on_conflict_do_update(index_elements=[old.scope, old.key], set_=sets)


def read_usage(conn: Connection, scope: str,
               keys: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    """The ``usage_stats`` rows of ``scope`` for ``keys``: ``{key: row}`` (absent keys left out).

    One query per 500 keys (a page of a list).
    """
    return _read(conn, usage_stats, scope, keys)


def _read(conn: Connection, table: sa.Table, scope: str,
          keys: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    keys = list(keys)
    out: dict[str, Mapping[str, Any]] = {}
    for i in range(0, len(keys), 500):
        stmt = sa.select(table).where(table.c.scope == scope, table.c.key.in_(keys[i:i + 500]))
        out.update((r["key"], r) for r in mappings(conn.execute(stmt)))
    return out


NODE_SUMS = ("samples", "memory_bytes", "disk_bytes", "network_read_bytes",
             "network_write_bytes")
"""The ``node_usage`` counters that add up."""

NODE_PEAKS = ("peak_memory_bytes", "peak_disk_bytes")
"""The ``node_usage`` counters that keep their largest value."""


def add_node_usage(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add node samples to ``node_usage``, one upsert per row (one executemany).

    Parameters
    ----------
    conn
        A connection in the caller's transaction.
    rows
        Each ``{"scope", "key", "seq", "now"}`` and a value for every name of
        :data:`NODE_SUMS` and :data:`NODE_PEAKS` (counts and bytes). As in
        :func:`add_usage`: a row whose ``seq`` differs from the stored one replaces it.
    """
    if not rows:
        return
    conn.execute(_upsert(conn, node_usage, NODE_SUMS, NODE_PEAKS),
                 [{"b_scope": r["scope"], "b_key": r["key"], "b_seq": r["seq"],
                   "b_last_update_time": r["now"],
                   **{f"b_{n}": r[n] for n in (*NODE_SUMS, *NODE_PEAKS)}} for r in rows])


def read_node_usage(conn: Connection, scope: str,
                    keys: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    """The ``node_usage`` rows of ``scope`` for ``keys``: ``{key: row}`` (absent keys left
    out); one query per 500 keys."""
    return _read(conn, node_usage, scope, keys)


def add_pool_usage(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add core-seconds to ``pool_usage``: rows ``{"pool_id", "interval_start", "vm_size",
    "core_s"}`` (one executemany of upserts)."""
    if not rows:
        return
    stmt = _insert(conn, pool_usage).values(
        pool_id=sa.bindparam("b_pool"), interval_start=sa.bindparam("b_start"),
        vm_size=sa.bindparam("b_vm"), core_s=sa.bindparam("b_core"))
    stmt = stmt.on_conflict_do_update(
        index_elements=[pool_usage.c.pool_id, pool_usage.c.interval_start, pool_usage.c.vm_size],
        set_={"core_s": pool_usage.c.core_s + stmt.excluded.core_s})
    conn.execute(stmt, [{"b_pool": r["pool_id"], "b_start": r["interval_start"],
                         "b_vm": r["vm_size"], "b_core": r["core_s"]} for r in rows])


def read_pool_usage(conn: Connection, start: datetime, end: datetime,
                    pool_ids: Collection[str] | None = None) -> list[Mapping[str, Any]]:
    """``pool_usage`` rows whose interval starts in ``[start, end)``, optionally of some pools
    (lower-cased IDs compared case-insensitively), by interval then pool."""
    stmt = sa.select(pool_usage).where(pool_usage.c.interval_start >= start,
                                       pool_usage.c.interval_start < end)
    if pool_ids is not None:
        stmt = stmt.where(sa.func.lower(pool_usage.c.pool_id).in_(list(pool_ids)))
    return mappings(conn.execute(stmt.order_by(pool_usage.c.interval_start,
                                               pool_usage.c.pool_id)))
