"""Partial task indexes: a run moves one queue entry instead of a dozen index entries.

- ``ix_tasks_queue`` was ``(job_key, state, dep_state, seq)`` over every task; it
  becomes ``(job_key, seq) WHERE state = 'active' AND dep_state = 'ready'``: the
  ready queue itself. A task leaves it when it starts and (when not retried) never
  comes back, where the full index moved its entry on every state change.
- ``ix_tasks_node`` (``node_id, state``) is dropped: no query reads tasks by node
  (the service keeps a node's runs in memory), yet every run moved its entry twice.
- ``ix_tasks_cleanup_at`` holds only tasks with a cleanup time (ended tasks), not
  one NULL entry per active task.

On SQLite, a run's two UPDATEs (start, end) fell from about 40 to 14 us a task
(100,000 tasks, ``benchmarks/bench_scale.py``'s job).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hpcbatch.store.database import TASK_READY, TASK_TO_CLEAN

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.drop_index("ix_tasks_node", table_name="tasks")
    op.drop_index("ix_tasks_cleanup_at", table_name="tasks")
    op.create_index("ix_tasks_queue", "tasks", ["job_key", "seq"],
                    sqlite_where=sa.text(TASK_READY), postgresql_where=sa.text(TASK_READY))
    op.create_index("ix_tasks_cleanup_at", "tasks", ["cleanup_at"],
                    sqlite_where=sa.text(TASK_TO_CLEAN), postgresql_where=sa.text(TASK_TO_CLEAN))


def downgrade() -> None:
    op.drop_index("ix_tasks_cleanup_at", table_name="tasks")
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index("ix_tasks_cleanup_at", "tasks", ["cleanup_at"])
    op.create_index("ix_tasks_node", "tasks", ["node_id", "state"])
    op.create_index("ix_tasks_queue", "tasks", ["job_key", "state", "dep_state", "seq"])
