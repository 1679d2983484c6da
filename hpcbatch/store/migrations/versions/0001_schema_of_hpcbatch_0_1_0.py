"""The schema of hpcbatch 0.1.0: the tables a state dir made by that release holds.

A database without an ``alembic_version`` table was made by 0.1.0 (which created its
tables without Alembic); :func:`hpcbatch.store.migrate.upgrade` stamps it with this
revision and upgrades it from here. Frozen: never edit a released revision.

Revision ID: 0001
Revises:
Create Date: 2026-12-02 11:24:37.023523
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_packages',
    sa.Column('app_key', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=512), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('last_activation_time', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('app_key', 'version')
    )
    op.create_table('applications',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=1024), nullable=True),
    sa.Column('default_version', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('counters',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('hosts',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('pool_key', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_pool_key'), ['pool_key'], unique=False)

    op.create_table('job_nodes',
    sa.Column('job_key', sa.String(length=64), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('pool_id', sa.String(length=64), nullable=False),
    sa.Column('preparation', sa.Text(), nullable=True),
    sa.Column('release', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('job_key', 'node_id')
    )
    op.create_table('job_schedules',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('jobs',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('pool_key', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_pool_key'), ['pool_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_state'), ['state'], unique=False)

    op.create_table('nodes',
    sa.Column('pool_key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('host_key', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pool_key', 'id')
    )
    op.create_table('pools',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('allocation_state', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('subtasks',
    sa.Column('job_key', sa.String(length=64), nullable=False),
    sa.Column('task_key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('pool_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_transition_time', sa.DateTime(), nullable=False),
    sa.Column('start_time', sa.DateTime(), nullable=True),
    sa.Column('end_time', sa.DateTime(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('result', sa.String(length=16), nullable=True),
    sa.Column('failure_info', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('job_key', 'task_key', 'id')
    )
    op.create_table('task_dep_ranges',
    sa.Column('job_key', sa.String(length=64), nullable=False),
    sa.Column('task_key', sa.String(length=64), nullable=False),
    sa.Column('start', sa.BigInteger(), nullable=False),
    sa.Column('end', sa.BigInteger(), nullable=False)
    )
    with op.batch_alter_table('task_dep_ranges', schema=None) as batch_op:
        batch_op.create_index('ix_dep_ranges', ['job_key', 'start'], unique=False)

    op.create_table('task_deps',
    sa.Column('job_key', sa.String(length=64), nullable=False),
    sa.Column('upstream_key', sa.String(length=64), nullable=False),
    sa.Column('task_key', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('job_key', 'upstream_key', 'task_key')
    )
    op.create_table('tasks',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_key', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('creation_time', sa.DateTime(), nullable=False),
    sa.Column('state_transition_time', sa.DateTime(), nullable=False),
    sa.Column('previous_state', sa.String(length=16), nullable=True),
    sa.Column('previous_state_transition_time', sa.DateTime(), nullable=True),
    sa.Column('last_modified', sa.DateTime(), nullable=False),
    sa.Column('etag', sa.String(length=32), nullable=False),
    sa.Column('required_slots', sa.Integer(), nullable=False),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.Column('is_manager', sa.Boolean(), nullable=False),
    sa.Column('int_id', sa.BigInteger(), nullable=True),
    sa.Column('dep_state', sa.String(length=8), nullable=False),
    sa.Column('dep_reason', sa.Text(), nullable=True),
    sa.Column('satisfies', sa.Boolean(), nullable=True),
    sa.Column('cleanup_at', sa.DateTime(), nullable=True),
    sa.Column('pool_key', sa.String(length=64), nullable=True),
    sa.Column('node_id', sa.String(length=64), nullable=True),
    sa.Column('start_time', sa.DateTime(), nullable=True),
    sa.Column('end_time', sa.DateTime(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('result', sa.String(length=16), nullable=True),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('requeue_count', sa.Integer(), nullable=False),
    sa.Column('last_retry_time', sa.DateTime(), nullable=True),
    sa.Column('last_requeue_time', sa.DateTime(), nullable=True),
    sa.Column('failure_info', sa.Text(), nullable=True),
    sa.Column('task_root_dir', sa.String(length=1024), nullable=True),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('job_key', 'key', name='uq_task_job_key')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_cleanup_at'), ['cleanup_at'], unique=False)
        batch_op.create_index('ix_tasks_counts', ['job_key', 'state', 'result', 'required_slots'], unique=False)
        batch_op.create_index('ix_tasks_int_id', ['job_key', 'int_id'], unique=False)
        batch_op.create_index('ix_tasks_node', ['node_id', 'state'], unique=False)
        batch_op.create_index('ix_tasks_queue', ['job_key', 'state', 'dep_state', 'seq'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_queue')
        batch_op.drop_index('ix_tasks_node')
        batch_op.drop_index('ix_tasks_int_id')
        batch_op.drop_index('ix_tasks_counts')
        batch_op.drop_index(batch_op.f('ix_tasks_cleanup_at'))

    op.drop_table('tasks')
    op.drop_table('task_deps')
    with op.batch_alter_table('task_dep_ranges', schema=None) as batch_op:
        batch_op.drop_index('ix_dep_ranges')

    op.drop_table('task_dep_ranges')
    op.drop_table('subtasks')
    op.drop_table('pools')
    op.drop_table('nodes')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_state'))
        batch_op.drop_index(batch_op.f('ix_jobs_pool_key'))

    op.drop_table('jobs')
    op.drop_table('job_schedules')
    op.drop_table('job_nodes')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_pool_key'))

    op.drop_table('hosts')
    op.drop_table('counters')
    op.drop_table('applications')
    op.drop_table('app_packages')
