"""The service core's composition root: builds the parts, recovers from the store, runs the loops.

:class:`BatchService` holds no Batch operation itself. Each resource has its own
part with public methods only, sharing one :class:`~hpcbatch.core.context.ServiceContext`:

============================  ==============================================
``service.inventory``         :class:`~hpcbatch.core.inventory.Inventory` (hosts)
``service.pools``             :class:`~hpcbatch.core.pools.Pools`
``service.nodes``             :class:`~hpcbatch.core.nodes.Nodes`
``service.applications``      :class:`~hpcbatch.core.applications.Applications`
``service.jobs``              :class:`~hpcbatch.core.jobs.Jobs`
``service.tasks``             :class:`~hpcbatch.core.tasks.Tasks`
``service.files``             :class:`~hpcbatch.core.files.NodeFiles`
``service.certificates``      :class:`~hpcbatch.core.certificates.Certificates`
``service.preparation``       :class:`~hpcbatch.core.preparation.JobPreparation`
``service.schedules``         :class:`~hpcbatch.core.job_schedules.JobSchedules`
``service.autoscaler``        :class:`~hpcbatch.core.autoscaler.Autoscaler`
``service.dispatcher``        :class:`~hpcbatch.core.dispatcher.Dispatcher` (scheduling passes)
``service.runs``              :class:`~hpcbatch.core.runs.Runs` (runs in flight)
============================  ==============================================

Every operation validates its input (Batch's rules and error codes), commits
the accepted change to the store and only then returns, so the REST layer
replies after the change is durable. All state changes happen on the event
loop's thread: no locks.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import sqlalchemy as sa

from hpcbatch.batch.models import PoolSpec
from hpcbatch.batch.states import PoolState
from hpcbatch.core.applications import Applications
from hpcbatch.core.auto_pools import AutoPools
from hpcbatch.core.autoscaler import Autoscaler
from hpcbatch.core.certificates import Certificates
from hpcbatch.core.changes import Changes
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.dispatcher import Dispatcher
from hpcbatch.core.files import NodeFiles
from hpcbatch.core.housekeeping import Housekeeping
from hpcbatch.core.inventory import Inventory
from hpcbatch.core.job_schedules import JobSchedules
from hpcbatch.core.jobs import Jobs
from hpcbatch.core.nodes import Nodes
from hpcbatch.core.pool_manager import PoolManager
from hpcbatch.core.pools import Pools
from hpcbatch.core.preparation import JobPreparation
from hpcbatch.core.quotas import Quotas
from hpcbatch.core.runs import Runs
from hpcbatch.core.statistics import Statistics
from hpcbatch.core.tasks import Tasks
from hpcbatch.execution.engine import DaskEngine
from hpcbatch.execution.tls import TlsFiles
from hpcbatch.execution.transfer import StorageRef
from hpcbatch.storage.scoped import JobStorageCredentials
from hpcbatch.store.database import Store, loads, mappings, pools
from hpcbatch.store.events import EventLog

log = logging.getLogger(__name__)

__all__ = ["BatchService", "Quotas"]


class BatchService:
    """The Batch service: its parts, wired together, and their loops.

    Parameters
    ----------
    store
        The durable store.
    engine
        The Dask engine that carries runs to nodes.
    tls
        TLS files the nodes' workers present.
    account_name, account_key
        The account this service answers for; the key never reaches a task
        (tasks that ask get a job-scoped token derived from it).
    base_url
        The service endpoint (``http://host:port``), used in resource URLs.
    storage
        The service's storage: resource files' ``autoStorageContainerName``,
        application packages, conventions outputs and task logs.
    metrics_interval_s, min_autoscale_interval_s
        Autoscale's sample period (Batch: 30 s) and smallest evaluation
        interval (Batch: 5 min); see :mod:`hpcbatch.core.autoscaler`.
    event_log
        Where diagnostic events go; None: nowhere.
    quotas
        Account limits ("Batch service quotas and limits"); default: Batch's defaults.
    """

    def __init__(self, store: Store, engine: DaskEngine, tls: TlsFiles, *, account_name: str,
                 base_url: str, account_key: str = "", storage: StorageRef | None = None,
                 metrics_interval_s: float = 30.0,
                 min_autoscale_interval_s: float | None = None,
                 event_log: EventLog | None = None, quotas: Quotas | None = None) -> None:
        ctx = self.ctx = ServiceContext(
            store=store, engine=engine, account_name=account_name, account_key=account_key,
            base_url=base_url.rstrip("/"), storage=storage,
            storage_credentials=(JobStorageCredentials(storage.url, storage.options)
                                 if storage else None),
            events=event_log, quotas=quotas or Quotas(),
            api_ca_pem=Path(tls.ca_file).read_text() if base_url.startswith("https:") else "")
        if ctx.storage_credentials is not None and ctx.storage_credentials.limitation:
            log.warning("task storage scoping: %s", ctx.storage_credentials.limitation)
        store.on_commit(ctx.changes.notify)
        self.runs = Runs(ctx)
        self.applications = Applications(ctx)
        self.inventory = Inventory(ctx)
        self.files = NodeFiles(ctx)
        self.preparation = JobPreparation(ctx, self.runs)
        self.tasks = Tasks(ctx, self.runs, self.applications, self.files)
        self.autoscaler = Autoscaler(ctx, sample_interval_s=metrics_interval_s,
                                     min_interval_s=min_autoscale_interval_s)
        self.pools = Pools(ctx, self.applications, self.autoscaler, self.inventory)
        self.jobs = Jobs(ctx, self.runs, self.tasks, self.preparation,
                         AutoPools(ctx, self.pools), self.files)
        # Task - Terminate of an active task completes it through the jobs' completion path.
        self.tasks.after_completions = self.jobs.after_completions
        self.nodes = Nodes(ctx, self.runs)
        self.dispatcher = Dispatcher(ctx, self.runs, self.jobs, self.tasks, self.preparation,
                                     self.applications, self.pools)
        self.housekeeping = Housekeeping(ctx, self.jobs, self.pools, self.files)
        self.schedules = JobSchedules(ctx, self.jobs)
        self.statistics = Statistics(ctx)
        ctx.pool_manager = PoolManager(
            store, engine, tls, account_name=account_name, account_url=ctx.base_url,
            on_change=ctx.kick, on_node_lost=self.runs.node_lost, storage=storage,
            packages_for=lambda pool_key: self.dispatcher.launch_io(None, pool_key)["packages"],
            shrink=self.nodes.remove_node, core_quota=ctx.quotas.dedicated_cores,
        )
        self.certificates = Certificates(ctx)
        ctx.pool_manager.before_start_task = self.certificates.install_on_node
        ctx.pool_manager.before_remove = self.nodes.drop_node_users
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def changes(self) -> Changes:
        """Wakes long polls when the store commits (``Prefer: wait`` reads)."""
        return self.ctx.changes

    @property
    def pool_manager(self) -> PoolManager:
        """The pool manager (nodes of every pool)."""
        return self.ctx.pool_manager

    @property
    def store(self) -> Store:
        """The durable store."""
        return self.ctx.store

    def kick(self) -> None:
        """Ask for a scheduling pass soon (coalesced)."""
        self.ctx.kick()

    async def start(self) -> None:
        """Recover from the store and start the loops.

        Tasks recorded as running were running on nodes of an earlier service
        process; they are requeued (``requeueCount`` + 1), as Batch does when a
        node restarts, and every node is started again. Pools left deleting
        are deleted; jobs left terminating, disabling or deleting are finished
        (:meth:`~hpcbatch.core.jobs.Jobs.resume`).
        """
        self.runs.requeue_stored()  # with their TaskRequeueEvents
        with self.ctx.store.read() as conn:
            rows = mappings(conn.execute(sa.select(pools)))
        for row in rows:
            spec = PoolSpec.model_validate(loads(row["spec"]))
            if row["state"] == PoolState.deleting:
                self.ctx.background(self.pools.finish_delete(row["key"]))
                continue
            status = loads(row["status"])
            key = status.get("sshKey")
            self.pool_manager.low_priority_targets[row["key"]] = status.get("targetLowPriority", 0)
            self.pool_manager.recover(row["key"], spec, status["target"],
                                      tuple(key) if key else None, seq=row["seq"])
        self.pool_manager.start()
        self.inventory.learn_soon()  # pools that select hosts by imageReference
        # Jobs left terminating, disabling or deleting are finished (audit M2).
        self.jobs.resume()
        self._loop_task = asyncio.get_running_loop().create_task(self.dispatcher.loop())
        self.ctx.background(self.housekeeping.loop())
        self.ctx.background(self.autoscaler.sample_loop())
        self.ctx.background(self.autoscaler.eval_loop())
        self.ctx.background(self.schedules.loop())
        self.ctx.kick()

    async def close(self, stop_nodes: bool = True) -> None:
        """Stop the loops and, when ``stop_nodes``, the nodes' workers."""
        if self._loop_task:
            self._loop_task.cancel()
        self.ctx.cancel_background()
        await self.pool_manager.close(stop_nodes=stop_nodes)


