"""Indexes for "Task - List" pages in insertion order, whole or filtered by state.

A page (``ORDER BY seq LIMIT 1001``) of a job's tasks, or of its tasks in one
state, was sorted from all the job's tasks (SQLite's temporary B-tree: 0.8 s
for the first page of a 1,000,000-task job); with ``(job_key, seq)`` and
``(job_key, state, seq)`` it reads the page's rows only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_job_seq", "tasks", ["job_key", "seq"])
    op.create_index("ix_tasks_job_state_seq", "tasks", ["job_key", "state", "seq"])


def downgrade() -> None:
    op.drop_index("ix_tasks_job_state_seq", table_name="tasks")
    op.drop_index("ix_tasks_job_seq", table_name="tasks")
