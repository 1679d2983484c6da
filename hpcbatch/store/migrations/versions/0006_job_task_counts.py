"""Per-job task counters kept by triggers: "Job - Get Task Counts" in O(1).

Adds ``job_task_counts`` (one row per job: tasks and slots in each of the buckets
active, running, succeeded, failed), the triggers on ``tasks`` and ``jobs`` that keep
it (``hpcbatch.store.task_counts``: row-level on SQLite, statement-level PL/pgSQL on
PostgreSQL), and fills it from the existing tasks. The ``ix_tasks_counts`` index, which
only the counting ``GROUP BY`` used, is dropped (one index less to maintain per task
insert and state change).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hpcbatch.store import task_counts

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_task_counts",
        sa.Column("job_key", sa.String(64), primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0"))
          for name in task_counts.COLUMNS),
    )
    op.drop_index("ix_tasks_counts", table_name="tasks")
    conn = op.get_bind()
    conn.exec_driver_sql(task_counts.backfill_statement())
    task_counts.create_triggers(conn)


def downgrade() -> None:
    conn = op.get_bind()
    for stmt in task_counts.drop_statements(conn.dialect.name):
        conn.exec_driver_sql(stmt)
    op.drop_table("job_task_counts")
    op.create_index("ix_tasks_counts", "tasks", ["job_key", "state", "result", "required_slots"])
