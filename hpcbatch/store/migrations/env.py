"""Alembic environment of the hpcbatch store.

The service runs the migrations itself (:func:`hpcbatch.store.migrate.upgrade`) on
the connection it opened, so this file only hands that connection to Alembic.
A developer adding a revision runs Alembic against a scratch database::

    alembic -c hpcbatch/store/migrations/alembic.ini revision --autogenerate -m "what changed"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from hpcbatch.store.database import metadata

config = context.config


def run() -> None:
    """Run the migrations on the given connection, or on ``sqlalchemy.url`` (developers)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section) or {},
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
