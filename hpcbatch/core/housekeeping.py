"""Housekeeping: jobs' ``maxWallClockTime`` and tasks' ``retentionTime``, once a second."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from hpcbatch.batch.wire import utcnow
from hpcbatch.core.context import ServiceContext
from hpcbatch.execution.environment import task_dir
from hpcbatch.store.database import (
    jobs,
    tasks,
)

if TYPE_CHECKING:
    from hpcbatch.core.files import NodeFiles
    from hpcbatch.core.jobs import Jobs
    from hpcbatch.core.pools import Pools

log = logging.getLogger(__name__)


class Housekeeping:
    """Periodic upkeep of jobs and task directories.

    Parameters
    ----------
    ctx
        The service context.
    jobs
        Ends jobs past their ``maxWallClockTime``.
    pools
        Records pools' ``allocationState`` as it changes.
    files
        Removes task directories on the nodes.
    interval_s
        Seconds between rounds.
    """

    def __init__(self, ctx: ServiceContext, jobs: Jobs, pools: Pools, files: NodeFiles,
                 interval_s: float = 1.0) -> None:
        self.ctx = ctx
        self.files = files
        self.jobs = jobs
        self.pools = pools
        self.interval_s = interval_s

    async def loop(self) -> None:
        """Enforce jobs' maxWallClockTime and tasks' retentionTime, record allocation states."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.jobs.expire()
                self.pools.sync_allocation_states()
                await self._remove_expired_task_dirs()
            except Exception:
                log.exception("housekeeping failed")

    async def _remove_expired_task_dirs(self) -> None:
        """Remove the directories of tasks whose ``retentionTime`` has elapsed."""
        now = utcnow()
        with self.ctx.store.read() as conn:
            rows = conn.execute(sa.select(tasks.c.seq, tasks.c.job_key, tasks.c.id,
                                          tasks.c.pool_key, tasks.c.node_id)
                                .where(tasks.c.cleanup_at <= now).limit(500)).all()
            job_ids = dict(conn.execute(sa.select(jobs.c.key, jobs.c.id).where(
                jobs.c.key.in_({r.job_key for r in rows}))).all()) if rows else {}
        await self.files.remove_dirs(
            (r.pool_key or "", r.node_id or "", task_dir(job_ids[r.job_key], r.id))
            for r in rows if r.job_key in job_ids)
        if rows:
            with self.ctx.store.begin() as conn:
                conn.execute(tasks.update().where(tasks.c.seq.in_([r.seq for r in rows]))
                             .values(cleanup_at=None))
