"""Jobs' creation and state transition times in columns: ``$filter`` on them runs in SQL.

"Job - List" with ``stateTransitionTime gt DateTime'...'`` (the Batch documents'
"changed since" query) and ``creationTime`` comparisons ran on the jobs' JSON; with
the times in indexed columns they run in the database. Existing jobs get the times
from their status document.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 11:30:00
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _naive_utc(text: str | None) -> datetime | None:
    """A status document's time (``2026-01-02T03:04:05.678901Z``) as the store's naive UTC."""
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("creation_time", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("state_transition_time", sa.DateTime(), nullable=True))
        batch.create_index("ix_jobs_state_transition_time", ["state_transition_time"])
    jobs = sa.table("jobs", sa.column("key", sa.String), sa.column("status", sa.Text),
                    sa.column("creation_time", sa.DateTime),
                    sa.column("state_transition_time", sa.DateTime))
    conn = op.get_bind()
    for key, status in conn.execute(sa.select(jobs.c.key, jobs.c.status)).all():
        doc = json.loads(status)
        conn.execute(jobs.update().where(jobs.c.key == key).values(
            creation_time=_naive_utc(doc.get("creationTime")),
            state_transition_time=_naive_utc(doc.get("stateTransitionTime"))))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_state_transition_time")
        batch.drop_column("state_transition_time")
        batch.drop_column("creation_time")
