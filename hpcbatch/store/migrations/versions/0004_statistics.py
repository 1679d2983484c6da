"""Statistics counters and pool usage metrics: ``usage_stats`` and ``pool_usage``.

Job and pool statistics (``$expand=stats``, the account's lifetime statistics) and
"Pool - List Usage Metrics" read counters the service adds to as task runs end and
nodes leave pools. A database from before starts them at zero.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_stats",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("last_update_time", sa.DateTime(), nullable=False),
        sa.Column("user_cpu_s", sa.Float(), nullable=False),
        sa.Column("kernel_cpu_s", sa.Float(), nullable=False),
        sa.Column("wall_clock_s", sa.Float(), nullable=False),
        sa.Column("wait_s", sa.Float(), nullable=False),
        sa.Column("read_ops", sa.BigInteger(), nullable=False),
        sa.Column("write_ops", sa.BigInteger(), nullable=False),
        sa.Column("read_bytes", sa.BigInteger(), nullable=False),
        sa.Column("write_bytes", sa.BigInteger(), nullable=False),
        sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("core_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    op.create_table(
        "pool_usage",
        sa.Column("pool_id", sa.String(length=64), nullable=False),
        sa.Column("interval_start", sa.DateTime(), nullable=False),
        sa.Column("vm_size", sa.String(length=64), nullable=False),
        sa.Column("core_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pool_id", "interval_start", "vm_size"),
    )
    op.create_index("ix_pool_usage_interval", "pool_usage", ["interval_start"])


def downgrade() -> None:
    op.drop_index("ix_pool_usage_interval", table_name="pool_usage")
    op.drop_table("pool_usage")
    op.drop_table("usage_stats")
