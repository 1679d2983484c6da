"""Node resource counters of pools: ``node_usage``.

``resourceStats`` of "Pool - Get" with ``$expand=stats`` (and of the account's
lifetime pool statistics) gains the nodes' average and peak memory and disk use
and their network reads and writes, from the node samples the service takes
every sample period. A database from before starts them at zero samples.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_usage",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("last_update_time", sa.DateTime(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("memory_bytes", sa.Float(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_bytes", sa.Float(), nullable=False),
        sa.Column("peak_disk_bytes", sa.BigInteger(), nullable=False),
        sa.Column("network_read_bytes", sa.BigInteger(), nullable=False),
        sa.Column("network_write_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )


def downgrade() -> None:
    op.drop_table("node_usage")
