"""Schema migrations of the store, with Alembic: a database from an earlier release
upgrades in place when the service opens it.

Revisions live in :mod:`hpcbatch.store.migrations` (``versions/``). Opening a store:

* a new (empty) database gets today's tables (:data:`hpcbatch.store.database.metadata`)
  and is stamped with :data:`HEAD`, without running the revisions one by one;
* a database at :data:`HEAD` is left as it is (no Alembic import: the common case
  costs one query);
* an older one is upgraded to :data:`HEAD`; a database without an
  ``alembic_version`` table was made by hpcbatch 0.1.0 (which created its tables
  without Alembic) and is stamped with revision ``0001`` first.

A developer who changes the tables adds a revision (``alembic -c
hpcbatch/store/migrations/alembic.ini revision --autogenerate -m ...``), moves
:data:`HEAD` to it, and extends ``tests/store/test_migrations.py``.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hpcbatch.store.database import metadata

HEAD = "0008"
"""The newest revision: the schema of :data:`hpcbatch.store.database.metadata`."""

FIRST = "0001"
"""The schema of hpcbatch 0.1.0, whose databases have no ``alembic_version`` table."""

MIGRATIONS = Path(__file__).with_name("migrations")
"""The Alembic script directory."""

_VERSION = sa.table("alembic_version", sa.column("version_num", sa.String(32)))


def current_revision(conn: Connection) -> str | None:
    """The database's revision: None when it has no tables, :data:`FIRST` for 0.1.0's.

    Parameters
    ----------
    conn
        A connection to the database.

    Returns
    -------
    str or None
    """
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(sa.select(_VERSION.c.version_num)).scalar()
    return FIRST if tables else None


def _alembic(conn: Connection, command_name: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    getattr(command, command_name)(cfg, revision)


def upgrade(engine: Engine) -> str | None:
    """Bring the database to :data:`HEAD`; see the module's description.

    Parameters
    ----------
    engine
        The store's engine (SQLite or PostgreSQL).

    Returns
    -------
    str or None
        The revision the database had before (None for a new database).

    Raises
    ------
    sqlalchemy.exc.SQLAlchemyError
        A migration failed; the transaction is rolled back (PostgreSQL; SQLite
        rolls back what its transactional DDL allows).
    """
    with engine.begin() as conn:
        before = current_revision(conn)
        if before == HEAD:
            return before
        if before is None:
            metadata.create_all(conn)
            sa.Table("alembic_version", sa.MetaData(),
                     sa.Column("version_num", sa.String(32), primary_key=True)).create(conn)
            conn.execute(_VERSION.insert().values(version_num=HEAD))
            return before
        if "alembic_version" not in set(sa.inspect(conn).get_table_names()):
            _alembic(conn, "stamp", FIRST)
        _alembic(conn, "upgrade", HEAD)
        return before
