"""The small context the service's parts share: store, pool manager, engine, events, clock.

Every part of the core (pools, nodes, jobs, tasks, the dispatcher ...) gets one
:class:`ServiceContext` and talks to the others only through their public
methods. All of them run on the service's event loop thread: no locks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from hpcbatch.core.changes import Changes
from hpcbatch.core.quotas import Quotas
from hpcbatch.store.database import Store

if TYPE_CHECKING:
    from hpcbatch.core.pool_manager import PoolManager
    from hpcbatch.execution.engine import DaskEngine
    from hpcbatch.execution.transfer import StorageRef
    from hpcbatch.storage.scoped import JobStorageCredentials
    from hpcbatch.store.events import EventLog

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What the parts of the core share.

    Attributes
    ----------
    store
        The durable store.
    engine
        The Dask engine that carries runs to nodes.
    pool_manager
        Nodes of every pool (set once, when the service builds it).
    account_name, account_key
        The Batch account this service answers for.
    base_url
        The service endpoint (``http://host:port``) used in resource URLs.
    storage
        The service's storage.
    storage_credentials
        Mints each task's storage variables, scoped to its job's container
        (:meth:`task_storage_env`); None without storage.
    events
        Where diagnostic events go; None: nowhere.
    quotas
        Account limits.
    api_ca_pem
        The CA certificate (PEM) of an HTTPS ``base_url``, given to tasks that get
        a token (``HPCBATCH_CA_PEM``); empty for HTTP.
    changes
        Wakes long polls when the store commits (:mod:`hpcbatch.core.changes`).
    """

    store: Store
    engine: DaskEngine
    account_name: str
    base_url: str
    account_key: str = ""
    storage: StorageRef | None = None
    storage_credentials: JobStorageCredentials | None = None
    events: EventLog | None = None
    quotas: Quotas = field(default_factory=Quotas)
    api_ca_pem: str = ""
    pool_manager: PoolManager = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    changes: Changes = field(default_factory=Changes)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _nonce: str = field(default_factory=lambda: secrets.token_hex(4))
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def task_storage_env(self, job_id: str, max_wall_clock_s: float | None = None) -> dict[str, str]:
        """Return the storage variables of a task of ``job_id``: its job's container only.

        Parameters
        ----------
        job_id
            The task's job.
        max_wall_clock_s
            The task's wall-clock limit in seconds (None: unlimited); the
            credential outlives it by an hour.

        Returns
        -------
        dict of str to str
            See :meth:`hpcbatch.storage.scoped.JobStorageCredentials.environment`;
            empty without storage.
        """
        if self.storage_credentials is None:
            return {}
        valid_for = None if max_wall_clock_s is None else timedelta(seconds=max_wall_clock_s)
        return self.storage_credentials.environment(job_id, valid_for=valid_for)

    def kick(self) -> None:
        """Ask for a scheduling pass soon (coalesced)."""
        self.wake.set()

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the service's loop; it is cancelled when the service closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def cancel_background(self) -> None:
        """Cancel every background task (service shutdown)."""
        for t in list(self._background):
            t.cancel()

    def emit(self, name: str, body: dict[str, Any]) -> None:
        """Record a diagnostic event ("Log events for diagnostic evaluation and monitoring")."""
        if self.events is not None:
            try:
                self.events.emit(name, body)
            except Exception as exc:  # noqa: BLE001 - events never break the operation that caused them
                log.warning("cannot record %s: %s", name, exc)

    def run_key(self, prefix: str) -> str:
        """Return a new run key, unique across this service's incarnations (``{prefix}-{nonce}-{n}``)."""
        return f"{prefix}-{self._nonce}-{next(self._counter)}"

    def node_url(self, pool_id: str, node_id: str) -> str:
        """Return a node's URL (``{base}/pools/{pool}/nodes/{node}``)."""
        return f"{self.base_url}/pools/{pool_id}/nodes/{node_id}"


Callback = Callable[..., Any]
