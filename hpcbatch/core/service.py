"""The service core: Batch operations on pools, jobs and tasks, and the dispatch loop.

Every operation validates its input (Batch's rules and error codes), commits
the accepted change to the store and only then returns, so the REST layer
replies after the change is durable. All state changes happen on the event
loop's thread: no locks.

The dispatch loop is woken by events (task added, task ended, node ready) and
coalesces them into passes. A pass (1) records the tasks that ended since the
last pass, in one transaction, and (2) fills free task slots: pools' jobs in
Batch's order (priority, then age), their active tasks first-in first-out
straight from the database index, placed by :mod:`hpcbatch.core.scheduling`, marked
running in one transaction and submitted to the chosen nodes' Dask workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import posixpath
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from hpcbatch.execution import agent
from hpcbatch.batch import dependencies
from hpcbatch.batch import events
from hpcbatch.execution import multiinstance
from hpcbatch.store import odata
from hpcbatch.core.autoscaler import Autoscaler
from hpcbatch.execution.environment import task_dir
from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    HpcbatchError,
    InvalidPropertyValueError,
    NotFoundError,
    exists,
    not_found,
)
from hpcbatch.store.events import EventLog
from hpcbatch.providers.inventory import Host
from hpcbatch.core.job_schedules import JobSchedules
from hpcbatch.batch.models import (
    MAX_TASKS_PER_COLLECTION,
    UNLIMITED,
    ComputeNodeInformation,
    JobManagerTask,
    JobPatch,
    JobPreparationTask,
    JobReleaseTask,
    JobSpec,
    PoolResize,
    PoolSpec,
    Task,
    TaskExecutionInformation,
    TaskSpec,
    validate_id,
    wire_error,
)
from hpcbatch.execution.packages import PackageRef
from hpcbatch.core.pool_manager import NodeRuntime, PoolManager, _iso
from hpcbatch.core.scheduling import NodeSlots, job_order, place, place_gang
from hpcbatch.providers.trust import pool_ssh_key
from hpcbatch.storage.fs import Storage, open_storage, storage_environment
from hpcbatch.store.database import (
    Store,
    app_packages,
    applications,
    dumps,
    hosts,
    job_nodes,
    jobs,
    loads,
    new_etag,
    pools,
    subtasks,
    task_dep_ranges,
    task_deps,
    tasks,
    utcnow,
)
from hpcbatch.execution.transfer import StorageRef

log = logging.getLogger(__name__)

_RUN_STATES = sa.or_(tasks.c.state == "running", tasks.c.state == "preparing")
"""A task that holds a node: running, or preparing (its job preparation task runs first)."""

_END_VALUES = dict(
    state=sa.bindparam("b_state"), previous_state=tasks.c.state,
    previous_state_transition_time=tasks.c.state_transition_time,
    state_transition_time=sa.bindparam("b_now"), exit_code=sa.bindparam("b_exit"),
    failure_info=sa.bindparam("b_failure"), end_time=sa.bindparam("b_end"),
    result=sa.bindparam("b_result"), retry_count=sa.bindparam("b_retry"),
    last_retry_time=sa.func.coalesce(sa.bindparam("b_retry_time"), tasks.c.last_retry_time),
    last_modified=sa.bindparam("b_now"), etag=sa.bindparam("b_etag"),
    satisfies=sa.bindparam("b_satisfies"), cleanup_at=sa.bindparam("b_cleanup"),
)
_END_WHERE = (tasks.c.seq == sa.bindparam("b_seq"), _RUN_STATES)
_END = tasks.update().where(*_END_WHERE).values(**_END_VALUES)
_END_WITH_START = tasks.update().where(*_END_WHERE).values(start_time=sa.bindparam("b_start"),
                                                           **_END_VALUES)
_START = (tasks.update().where(tasks.c.seq == sa.bindparam("b_seq"), tasks.c.state == "active")
          .values(state=sa.bindparam("b_state"), previous_state="active",
                  previous_state_transition_time=tasks.c.state_transition_time,
                  state_transition_time=sa.bindparam("b_now"), start_time=sa.bindparam("b_now"),
                  end_time=None, node_id=sa.bindparam("b_node"), pool_key=sa.bindparam("b_pool"),
                  last_modified=sa.bindparam("b_now"), etag=sa.bindparam("b_etag")))
_ACTIVE_JOBS = (sa.select(jobs).where(jobs.c.pool_key == sa.bindparam("b_pool"),
                                       jobs.c.state == "active"))
"""Hot statements of the dispatch loop, built once (building them is a pass's largest cost)."""

PREP_DIR = "jobpreparation"
RELEASE_DIR = "jobrelease"
"""Task directory names of a job's preparation and release tasks (under the job's dir)."""

DEFAULT_RETENTION_S = 7 * 24 * 3600.0
"""Batch's default ``retentionTime``: a task directory is kept 7 days after the task ends."""

DEFAULT_MAX_RESULTS = 1000
"""Batch's page size for list operations."""

TASK_COLUMN_PROPERTIES = frozenset({
    "id", "url", "eTag", "lastModified", "creationTime", "state", "stateTransitionTime",
    "previousState", "previousStateTransitionTime", "executionInfo", "nodeInfo", "requiredSlots",
})
"""Top-level ``CloudTask`` properties served from columns, without reading the task's spec."""

_TASK_PLAIN = {
    "id": tasks.c.id, "state": tasks.c.state, "eTag": tasks.c.etag,
    "creationTime": tasks.c.creation_time, "lastModified": tasks.c.last_modified,
    "stateTransitionTime": tasks.c.state_transition_time, "previousState": tasks.c.previous_state,
    "previousStateTransitionTime": tasks.c.previous_state_transition_time,
    "requiredSlots": tasks.c.required_slots,
}
"""Task properties that are one column each: a ``$select`` of only these reads no spec."""

TASK_SELECTABLE = frozenset(
    {f.alias or name for name, f in Task.model_fields.items()}
    | {f"executionInfo/{f.alias or n}" for n, f in TaskExecutionInformation.model_fields.items()}
    | {f"nodeInfo/{f.alias or n}" for n, f in ComputeNodeInformation.model_fields.items()}
)
"""Property paths a task ``$select`` may name."""


@dataclass
class Quotas:
    """Account limits ("Batch service quotas and limits").

    Attributes
    ----------
    pools
        Pools in the account (Batch's default: 100).
    active_jobs_and_job_schedules
        Jobs not completed plus job schedules not completed (default: 300).
    dedicated_cores
        Cores (inventory ``cores``) that all pools' nodes may hold together;
        None: unlimited. A pool that would exceed it stops growing with the
        resize error ``AccountCoreQuotaReached``.
    """

    pools: int = 100
    active_jobs_and_job_schedules: int = 300
    dedicated_cores: int | None = None


@dataclass
class Run:
    """A task run dispatched to a node and not yet recorded as ended."""

    key: str
    seq: int
    job_key: str
    job_id: str
    task_id: str
    nodes: list[NodeRuntime]
    slots: int
    max_retries: int
    retry_count: int
    future: Any = None
    terminated: bool = False
    subtasks: list[Any] = field(default_factory=list)
    task_key: str = ""
    int_id: int | None = None
    exit_conditions: dict[str, Any] | None = None
    is_manager: bool = False
    kill_job_on_completion: bool = False
    retention_s: float | None = None

    @property
    def node(self) -> NodeRuntime:
        """The node the task (its primary, for a multi-instance task) runs on."""
        return self.nodes[0]

    @property
    def instance_keys(self) -> list[tuple[NodeRuntime, str]]:
        """``(node, run key)`` of every process set of this run."""
        if len(self.nodes) == 1:
            return [(self.nodes[0], self.key)]
        return [(self.nodes[0], self.key)] + [(n, f"{self.key}.{i}")
                                              for i, n in enumerate(self.nodes)]


class PreparationFailed(HpcbatchError):
    """The job preparation task failed on a node: the task goes back to the queue."""


@dataclass
class Ended:
    run: Run
    outcome: agent.Outcome | None
    error: str | None = None


def _wall_clock_s(value: timedelta | None) -> float | None:
    if value is None or value >= UNLIMITED:
        return None
    return value.total_seconds()


class BatchService:
    """The Batch service: operations, scheduling loop, pool manager.

    Parameters
    ----------
    store
        The durable store.
    pool_manager_factory
        Builds the :class:`PoolManager` given this service's callbacks.
    quotas
        Account limits ("Batch service quotas and limits"); default: Batch's defaults.
    event_log
        Where diagnostic events go (:class:`hpcbatch.store.events.EventLog`); None: nowhere.
    metrics_interval_s, min_autoscale_interval_s
        Autoscale's sample period (Batch: 30 s) and smallest evaluation
        interval (Batch: 5 min); see :mod:`hpcbatch.core.autoscaler`.
    storage
        The service's storage: resource files' ``autoStorageContainerName``,
        application packages, conventions outputs and task logs.
    account_name, account_key
        The account this service answers for; the key reaches job manager
        tasks (``AZURE_BATCH_ACCESS_KEY``) so they can add tasks.
    base_url
        The service endpoint (``http://host:port``), used in resource URLs.
    """

    def __init__(self, store: Store, engine: Any, tls: Any, *, account_name: str,
                 base_url: str, account_key: str = "", storage: StorageRef | None = None,
                 metrics_interval_s: float = 30.0,
                 min_autoscale_interval_s: float | None = None,
                 event_log: EventLog | None = None, quotas: Quotas | None = None) -> None:
        self.store = store
        self.storage = storage
        self.storage_env = storage_environment(storage.url, storage.options) if storage else {}
        self.engine = engine
        self.account_name = account_name
        self.account_key = account_key
        self.base_url = base_url.rstrip("/")
        self.pool_manager = PoolManager(
            store, engine, tls, account_name=account_name, account_url=self.base_url,
            on_change=self.kick, on_node_lost=self._node_lost, storage=storage,
        )
        self.pool_manager.packages_for = lambda pool_key: self._io(None, pool_key)["packages"]
        self.pool_manager.shrink = self._remove_node
        self.autoscaler = Autoscaler(self, sample_interval_s=metrics_interval_s,
                                     min_interval_s=min_autoscale_interval_s)
        self.events = event_log
        self.quotas = quotas or Quotas()
        self.pool_manager.core_quota = self.quotas.dedicated_cores
        self.schedules = JobSchedules(self)
        self._resizing: dict[str, datetime] = {}
        self.runs: dict[str, Run] = {}
        self._runs_by_task: dict[tuple[str, str], str] = {}
        self._ended: list[Ended] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._nonce = secrets.token_hex(4)
        self._counter = itertools.count()
        self._background: set[asyncio.Task[Any]] = set()
        self._preps: dict[tuple[str, str, int], asyncio.Future[bool]] = {}
        self.housekeeping_interval_s = 1.0
        self._apps: dict[str, dict[str, Any]] | None = None
        self._prep_failed: dict[str, set[str]] = {}
        self._active_jobs: dict[str, list[Mapping[str, Any]]] = {}
        """Per pool: its active jobs' rows, as the scheduling passes read them; emptied
        by every change to the jobs table (:meth:`_jobs_changed`)."""
        self._job_hooks: dict[str, bool] = {}
        """Per job: whether a task's completion can affect other tasks or the job
        (dependencies, ``onTaskFailure``, ``onAllTasksComplete``); unknown until first seen."""

    # ================================================================ lifecycle

    async def start(self) -> None:
        """Recover from the store and start the loops.

        Tasks recorded as running were running on nodes of an earlier service
        process; they are requeued (``requeueCount`` + 1), as Batch does when a
        node restarts, and every node is started again.
        """
        now = utcnow()
        with self.store.begin() as conn:
            conn.execute(
                tasks.update().where(_RUN_STATES).values(
                    state="active", previous_state=tasks.c.state,
                    previous_state_transition_time=tasks.c.state_transition_time,
                    state_transition_time=now, requeue_count=tasks.c.requeue_count + 1,
                    last_requeue_time=now, last_modified=now, etag=new_etag(),
                )
            )
            rows = conn.execute(sa.select(pools)).mappings().all()
        for row in rows:
            spec = PoolSpec.model_validate(loads(row["spec"]))
            if row["state"] == "deleting":
                self._background_task(self._finish_pool_delete(row["key"]))
                continue
            status = loads(row["status"])
            key = status.get("sshKey")
            self.pool_manager.recover(row["key"], spec, status["target"],
                                      tuple(key) if key else None)
        self.pool_manager.start()
        self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop())
        self._background_task(self._housekeeping_loop())
        self._background_task(self.autoscaler.sample_loop())
        self._background_task(self.autoscaler.eval_loop())
        self._background_task(self.schedules.loop())
        self.kick()

    async def close(self, stop_nodes: bool = True) -> None:
        """Stop the loops and, when ``stop_nodes``, the nodes' workers."""
        if self._loop_task:
            self._loop_task.cancel()
        for t in list(self._background):
            t.cancel()
        await self.pool_manager.close(stop_nodes=stop_nodes)

    def _background_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def emit(self, name: str, body: dict[str, Any]) -> None:
        """Record a diagnostic event ("Log events for diagnostic evaluation and monitoring")."""
        if self.events is not None:
            try:
                self.events.emit(name, body)
            except Exception as exc:  # events never break the operation that caused them
                log.warning("cannot record %s: %s", name, exc)

    def kick(self) -> None:
        """Ask for a scheduling pass soon (coalesced)."""
        self._wake.set()

    # ================================================================ inventory

    def add_hosts(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add or replace inventory hosts (hpcbatch extension: ``POST /inventory/hosts``).

        Parameters
        ----------
        items
            Host dicts as :class:`hpcbatch.providers.inventory.Host` fields.

        Raises
        ------
        InvalidPropertyValueError, BadRequestError
            A host is invalid (the message names it and the field).
        ConflictError
            A host being replaced belongs to a pool (code ``HostInUse``).
        """
        parsed: list[Host] = []
        for i, item in enumerate(items):
            try:
                parsed.append(Host.model_validate(item))
            except ValidationError as exc:
                err = wire_error(exc)
                err.message = f"hosts[{i}]: {err.message}"
                raise err from None
        with self.store.begin() as conn:
            for host in parsed:
                row = Store.fetch_one(conn, hosts, key=host.name.lower())
                if row is not None and row["pool_key"] is not None:
                    raise ConflictError(
                        f"Host {host.name} belongs to pool {row['pool_key']} and cannot be "
                        "replaced; remove it from the pool first.", code="HostInUse")
                if row is not None:
                    conn.execute(hosts.delete().where(hosts.c.key == host.name.lower()))
                conn.execute(hosts.insert().values(
                    key=host.name.lower(), name=host.name,
                    spec=dumps(host.model_dump(mode="json")), pool_key=None))
        for key in list(self.pool_manager.specs):
            self.pool_manager.reconcile(key)
        return [self._host_wire(h.model_dump(mode="json"), None) for h in parsed]

    @staticmethod
    def _host_wire(spec: dict[str, Any], pool_key: str | None) -> dict[str, Any]:
        return {**spec, "poolId": pool_key}

    def list_hosts(self) -> list[dict[str, Any]]:
        """Return the inventory: each host with the pool it belongs to (or None)."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(hosts).order_by(hosts.c.key)).mappings().all()
            pool_ids = dict(conn.execute(sa.select(pools.c.key, pools.c.id)).all())
        return [self._host_wire(loads(r["spec"]), pool_ids.get(r["pool_key"], r["pool_key"]))
                for r in rows]

    def remove_host(self, name: str) -> None:
        """Remove a host from the inventory.

        Raises
        ------
        NotFoundError
            ``HostNotFound``.
        ConflictError
            ``HostInUse`` when the host belongs to a pool.
        """
        with self.store.begin() as conn:
            row = Store.fetch_one(conn, hosts, key=name.lower())
            if row is None:
                raise not_found("Host", name)
            if row["pool_key"] is not None:
                raise ConflictError(f"Host {name} belongs to pool {row['pool_key']}.",
                                    code="HostInUse")
            conn.execute(hosts.delete().where(hosts.c.key == name.lower()))

    # ==================================================================== pools

    def _pool_row(self, conn: sa.Connection, pool_id: str) -> Mapping[str, Any]:
        row = Store.fetch_one(conn, pools, key=pool_id.lower())
        if row is None:
            raise not_found("Pool", pool_id)
        return row

    def add_pool(self, body: Mapping[str, Any]) -> str:
        """Add a pool (``POST /pools``, "Pool - Add").

        Parameters
        ----------
        body
            ``PoolAddParameter`` JSON.

        Returns
        -------
        str
            The pool ID.

        Raises
        ------
        BadRequestError
            Invalid or unknown properties (the message names them).
        ConflictError
            ``PoolExists``.
        """
        spec = PoolSpec.from_wire(body, what="pool")
        self.autoscaler.check(spec)
        if spec.enable_auto_scale and spec.target_dedicated_nodes is not None:
            raise InvalidPropertyValueError(
                "targetDedicatedNodes", spec.target_dedicated_nodes,
                "targetDedicatedNodes must not be given when enableAutoScale is true")
        target = spec.target_dedicated_nodes or 0
        self.resolve_packages([r.to_wire() for r in spec.application_package_references or []],
                              "applicationPackageReferences")
        now = utcnow()
        with self.store.begin() as conn:
            if Store.fetch_one(conn, pools, key=spec.id.lower()) is not None:
                raise exists("Pool", spec.id)
            count = conn.execute(sa.select(sa.func.count()).select_from(pools)).scalar() or 0
            if count >= self.quotas.pools:
                raise ConflictError(
                    f"The account has reached its pool quota of {self.quotas.pools}.",
                    code="PoolQuotaReached", values={"Quota": str(self.quotas.pools)})
            status = {"creationTime": _iso(now), "stateTransitionTime": _iso(now),
                      "allocationStateTransitionTime": _iso(now), "lastModified": _iso(now),
                      "eTag": new_etag(), "target": target}
            if spec.enable_inter_node_communication:
                status["sshKey"] = list(pool_ssh_key(spec.id))
            conn.execute(pools.insert().values(
                key=spec.id.lower(), id=spec.id, seq=self.store.next_seq(conn, "pool"),
                state="active", allocation_state="resizing",
                spec=dumps(spec.to_wire()), status=dumps(status)))
        key = status.get("sshKey")
        self.pool_manager.set_pool(spec.id.lower(), spec, target, tuple(key) if key else None)
        if spec.enable_auto_scale:
            self._background_task(self.autoscaler.evaluate_due())
        pool_json = self.get_pool(spec.id)
        self.emit("PoolCreateEvent", events.pool_create_event(pool_json))
        self._start_resize(spec.id.lower(), pool_json)
        return spec.id

    def _pool_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        spec = loads(row["spec"])
        status = loads(row["status"])
        key = row["key"]
        nodes_ = self.pool_manager.nodes_of(key)
        out = dict(spec)
        out.update({
            "url": f"{self.base_url}/pools/{row['id']}",
            "eTag": status["eTag"], "lastModified": status["lastModified"],
            "creationTime": status["creationTime"], "state": row["state"],
            "stateTransitionTime": status["stateTransitionTime"],
            "allocationState": self.pool_manager.allocation_state(key)
            if row["state"] == "active" else "stopping",
            "allocationStateTransitionTime": status["allocationStateTransitionTime"],
            "targetDedicatedNodes": status["target"],
            "currentDedicatedNodes": len(nodes_),  # leaving nodes count until they are gone
            "currentLowPriorityNodes": 0,
            "targetLowPriorityNodes": 0,
            "taskSlotsPerNode": PoolSpec.model_validate(spec).slots,
        })
        if "autoScaleRun" in status:
            out["autoScaleRun"] = status["autoScaleRun"]
        short = status["target"] - out["currentDedicatedNodes"]
        if row["state"] == "active" and short > 0 and not self.pool_manager._can_grow(key):
            if not any(n.state in ("creating", "starting") for n in nodes_):
                out["resizeErrors"] = [{
                    "code": "InsufficientInventory",
                    "message": f"The inventory has no free host matching vmSize "
                               f"'{spec['vmSize']}' for {short} more node(s).",
                }]
        if row["state"] == "active" and short > 0 and key in self.pool_manager.quota_blocked:
            out["resizeErrors"] = [{
                "code": "AccountCoreQuotaReached",
                "message": f"The account's dedicated core quota ({self.quotas.dedicated_cores}) "
                           f"leaves no room for {short} more node(s).",
            }]
        return out

    def get_pool(self, pool_id: str) -> dict[str, Any]:
        """Return a pool's ``CloudPool`` JSON ("Pool - Get"). Raises ``PoolNotFound``."""
        with self.store.read() as conn:
            return self._pool_wire(self._pool_row(conn, pool_id))

    def list_pools(self, filter_: str | None = None) -> list[dict[str, Any]]:
        """Return every pool's JSON ("Pool - List"), optionally OData-filtered."""
        stmt = sa.select(pools).order_by(pools.c.seq)
        if filter_:
            stmt = stmt.where(odata.compile_filter(filter_, odata.POOL_PROPERTIES))
        with self.store.read() as conn:
            return [self._pool_wire(r) for r in conn.execute(stmt).mappings()]

    def update_pool(self, pool_id: str, body: Mapping[str, Any], replace: bool = False) -> None:
        """Update a pool's mutable properties ("Pool - Patch"; with ``replace``,
        "Pool - Update Properties", which clears what the body leaves out).

        Mutable: ``startTask``, ``metadata``, ``applicationPackageReferences``,
        ``targetNodeCommunicationMode``. A new start task runs on nodes that join
        or restart from now on, as in Batch.

        Raises
        ------
        BadRequestError
            Another property, or an invalid value (named).
        """
        mutable = {"startTask", "metadata", "applicationPackageReferences",
                   "targetNodeCommunicationMode"}
        if not isinstance(body, Mapping):
            raise BadRequestError("The request body must be a JSON object.")
        extra = set(body) - mutable
        if extra:
            name = sorted(extra)[0]
            raise BadRequestError(f"The property {name} cannot be updated on a pool; updatable: "
                                  + ", ".join(sorted(mutable)) + ".",
                                  code="InvalidRequestBody", values={"PropertyName": name})
        with self.store.begin() as conn:
            row = self._pool_row(conn, pool_id)
            spec = loads(row["spec"])
            if replace:
                for k in mutable - {"targetNodeCommunicationMode"}:
                    spec.pop(k, None)
            spec.update({k: v for k, v in body.items() if v is not None})
            parsed = PoolSpec.from_wire(spec, what="pool")
            self.resolve_packages([r.to_wire() for r in parsed.application_package_references
                                   or []], "applicationPackageReferences")
            status = loads(row["status"])
            status.update(lastModified=_iso(utcnow()), eTag=new_etag())
            Store.update(conn, pools, {"key": row["key"]}, spec=dumps(parsed.to_wire()),
                         status=dumps(status))
        self.pool_manager.specs[row["key"]] = parsed

    def replace_pool_properties(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """"Pool - Update Properties": replace the mutable properties; see :meth:`update_pool`."""
        self.update_pool(pool_id, body, replace=True)

    def resize_pool(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """Resize a pool ("Pool - Resize"): take or give back inventory hosts.

        Raises
        ------
        NotFoundError
            ``PoolNotFound``.
        ConflictError
            ``PoolBeingDeleted``.
        """
        resize = PoolResize.from_wire(body, what="resize")
        with self.store.begin() as conn:
            row = self._pool_row(conn, pool_id)
            if row["state"] == "deleting":
                raise ConflictError("The specified pool is being deleted.", code="PoolBeingDeleted")
            if loads(row["spec"]).get("enableAutoScale"):
                raise ConflictError("The pool has autoscale enabled; disable it to resize by hand.",
                                    code="AutoScaleEnabled")
            status = loads(row["status"])
            status["target"] = resize.target_dedicated_nodes or 0
            status["lastModified"] = _iso(utcnow())
            status["eTag"] = new_etag()
            Store.update(conn, pools, {"key": row["key"]}, status=dumps(status))
        self.pool_manager.targets[row["key"]] = status["target"]
        self.pool_manager.deallocation[row["key"]] = resize.node_deallocation_option or "requeue"
        self.pool_manager.reconcile(row["key"])
        self._start_resize(row["key"], self.get_pool(pool_id), resize.node_deallocation_option)

    def _start_resize(self, pool_key: str, pool_json: dict[str, Any],
                      option: str | None = None) -> None:
        """Emit PoolResizeStartEvent; PoolResizeCompleteEvent follows once allocation is steady."""
        self._resizing[pool_key] = utcnow()
        self.emit("PoolResizeStartEvent",
                  events.pool_resize_start_event(pool_json, node_deallocation_option=option))

    def _finish_resizes(self) -> None:
        for key, started in list(self._resizing.items()):
            if key not in self.pool_manager.specs:
                self._resizing.pop(key)
            elif self.pool_manager.allocation_state(key) == "steady":
                self._resizing.pop(key)
                pool = self.get_pool(self.pool_manager.specs[key].id)
                self.emit("PoolResizeCompleteEvent", events.pool_resize_complete_event(
                    pool, start_time=started, end_time=utcnow()))

    def delete_pool(self, pool_id: str) -> None:
        """Delete a pool ("Pool - Delete"): stop its nodes, give their hosts back.

        The pool is ``deleting`` until its nodes are gone. Raises ``PoolNotFound``.
        """
        with self.store.begin() as conn:
            row = self._pool_row(conn, pool_id)
            if row["state"] == "deleting":
                return
            Store.update(conn, pools, {"key": row["key"]}, state="deleting")
        self.emit("PoolDeleteStartEvent", events.pool_delete_start_event(row["id"]))
        self._background_task(self._finish_pool_delete(row["key"]))

    async def _finish_pool_delete(self, key: str) -> None:
        started = utcnow()
        await self.pool_manager.delete_pool(key)
        self.autoscaler.forget(key)
        with self.store.read() as conn:
            row = Store.fetch_one(conn, pools, key=key)
        if row is not None:
            self.emit("PoolDeleteCompleteEvent", events.pool_delete_complete_event(
                row["id"], start_time=started, end_time=utcnow()))
        with self.store.begin() as conn:
            conn.execute(pools.delete().where(pools.c.key == key))
            conn.execute(hosts.update().where(hosts.c.pool_key == key).values(pool_key=None))

    def list_nodes(self, pool_id: str) -> list[dict[str, Any]]:
        """Return a pool's ``ComputeNode`` JSON list ("Compute Node - List")."""
        with self.store.read() as conn:
            row = self._pool_row(conn, pool_id)
        return [n.to_wire(self.base_url) for n in self.pool_manager.nodes_of(row["key"])]

    def get_node(self, pool_id: str, node_id: str) -> dict[str, Any]:
        """Return one node's JSON ("Compute Node - Get"). Raises ``PoolNotFound``/``NodeNotFound``."""
        with self.store.read() as conn:
            row = self._pool_row(conn, pool_id)
        node = self.pool_manager.node(row["key"], node_id)
        if node is None:
            raise not_found("Node", node_id)
        return node.to_wire(self.base_url)

    # ===================================================== application packages

    def _load_apps(self) -> dict[str, dict[str, Any]]:
        if self._apps is None:
            apps: dict[str, dict[str, Any]] = {}
            with self.store.read() as conn:
                for r in conn.execute(sa.select(applications)).mappings():
                    apps[r["key"]] = {"id": r["id"], "displayName": r["display_name"],
                                      "default": r["default_version"], "versions": {}}
                for r in conn.execute(sa.select(app_packages)).mappings():
                    apps[r["app_key"]]["versions"][r["version"]] = dict(r)
            self._apps = apps
        return self._apps

    def _app_storage(self) -> Storage:
        if self.storage is None:
            raise ConflictError("This service has no storage for application packages.",
                                code="AutoStorageNotConfigured")
        return open_storage(self.storage.url, self.storage.options)

    def create_application_package(self, application_id: str, version: str, data: bytes) -> None:
        """Upload an application package version (a zip); replaces an existing one.

        Mirrors the Batch management operations "Application Package - Create"
        and "- Activate" in one step. The first version becomes the default.

        Raises
        ------
        InvalidPropertyValueError
            A bad application ID or version, or data that is not a zip archive.
        """
        validate_id(application_id, "applicationName")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", version):
            raise InvalidPropertyValueError("version", version, "a version holds letters, digits, "
                                            "'.', '-' and '_', at most 64 characters")
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise InvalidPropertyValueError("package", f"{len(data)} bytes",
                                            "an application package must be a zip archive")
        key = application_id.lower()
        storage_key = f"applications/{key}/{version}.zip"
        self._app_storage().put_bytes(data, storage_key)
        with self.store.begin() as conn:
            app = Store.fetch_one(conn, applications, key=key)
            if app is None:
                conn.execute(applications.insert().values(key=key, id=application_id,
                                                          default_version=version))
            conn.execute(app_packages.delete().where(app_packages.c.app_key == key,
                                                     app_packages.c.version == version))
            conn.execute(app_packages.insert().values(
                app_key=key, version=version, storage_key=storage_key, size_bytes=len(data),
                last_activation_time=utcnow()))
        self._apps = None

    def set_default_version(self, application_id: str, version: str | None) -> None:
        """Set (or clear, with None) an application's default version ("Application - Update")."""
        app = self._application(application_id)
        if version is not None and version not in app["versions"]:
            raise not_found("ApplicationPackage", f"{application_id} {version}")
        with self.store.begin() as conn:
            Store.update(conn, applications, {"key": application_id.lower()},
                         default_version=version)
        self._apps = None

    def delete_application_package(self, application_id: str, version: str) -> None:
        """Delete a package version ("Application Package - Delete")."""
        app = self._application(application_id)
        if version not in app["versions"]:
            raise not_found("ApplicationPackage", f"{application_id} {version}")
        self._app_storage().delete(app["versions"][version]["storage_key"])
        with self.store.begin() as conn:
            conn.execute(app_packages.delete().where(
                app_packages.c.app_key == application_id.lower(), app_packages.c.version == version))
            if app["default"] == version:
                Store.update(conn, applications, {"key": application_id.lower()},
                             default_version=None)
        self._apps = None

    def _application(self, application_id: str) -> dict[str, Any]:
        app = self._load_apps().get(application_id.lower())
        if app is None:
            raise not_found("Application", application_id)
        return app

    @staticmethod
    def _application_wire(app: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": app["id"], "displayName": app["displayName"] or app["id"],
                "versions": sorted(app["versions"]), "defaultVersion": app["default"]}

    def list_applications(self) -> list[dict[str, Any]]:
        """List applications ("Application - List"): id, displayName, versions."""
        return [self._application_wire(a) for _, a in sorted(self._load_apps().items())]

    def get_application(self, application_id: str) -> dict[str, Any]:
        """Return one application ("Application - Get"). Raises ``ApplicationNotFound``."""
        return self._application_wire(self._application(application_id))

    def resolve_packages(self, refs: Iterable[Mapping[str, Any]], field: str
                         ) -> list[PackageRef]:
        """Resolve ``applicationPackageReferences`` to package versions.

        Raises
        ------
        ConflictError
            ``InvalidApplicationPackageReferences`` naming the unknown
            application, version, or an application without a default version.
        """
        out = []
        for ref in refs:
            app = self._load_apps().get(str(ref.get("applicationId", "")).lower())
            version = ref.get("version") or (app["default"] if app else None)
            if app is None or version is None or version not in app["versions"]:
                what = ("no default version" if app is not None and not ref.get("version")
                        else "does not exist")
                raise ConflictError(
                    f"{field}: application {ref.get('applicationId')}"
                    f"{' version ' + str(ref.get('version')) if ref.get('version') else ''} "
                    f"{what}.", code="InvalidApplicationPackageReferences",
                    values={"PropertyName": field})
            out.append(PackageRef(app["id"], version, app["versions"][version]["storage_key"],
                                  is_default=not ref.get("version")))
        return out

    # ========================================================== node operations

    def _node(self, pool_id: str, node_id: str) -> NodeRuntime:
        with self.store.read() as conn:
            row = self._pool_row(conn, pool_id)
        node = self.pool_manager.node(row["key"], node_id)
        if node is None:
            raise not_found("Node", node_id)
        return node

    async def _drain(self, node: NodeRuntime, option: str) -> None:
        """Deal with a node's running tasks before it reboots, reimages or leaves.

        ``requeue``: end them and put them back to active (no retry spent);
        ``terminate``: end them (completed with ``TaskEnded``);
        ``taskcompletion``/``retaineddata``: let them finish (no new task starts).
        """
        runs = [self.runs[k] for k in list(node.running) if k in self.runs]
        if option == "requeue":
            self._requeue(runs)
            await asyncio.gather(*(self._kill_run(r) for r in runs), return_exceptions=True)
        elif option == "terminate":
            await asyncio.gather(*(self._kill_run(r) for r in runs), return_exceptions=True)
        while any(k in self.runs for k in list(node.running)):
            await asyncio.sleep(0.05)

    @staticmethod
    def _option(name: str, value: str | None, allowed: Sequence[str], default: str) -> str:
        value = value or default
        if value not in allowed:
            raise InvalidPropertyValueError(name, value, "allowed values are " + ", ".join(allowed))
        return value

    def reboot_node(self, pool_id: str, node_id: str, option: str | None = None,
                    reimage: bool = False) -> None:
        """Reboot ("Compute Node - Reboot") or reimage ("Compute Node - Reimage") a node.

        Its running tasks are handled by ``option`` (requeue, terminate,
        taskcompletion, retaineddata; default requeue); then the node's worker
        restarts and its start task runs again. A reimage also wipes the node's
        root dir first.

        Raises
        ------
        ConflictError
            ``NodeNotReady`` when the node is not idle, running or failed.
        """
        node = self._node(pool_id, node_id)
        name = "nodeReimageOption" if reimage else "nodeRebootOption"
        option = self._option(name, option, ("requeue", "terminate", "taskcompletion",
                                             "retaineddata"), "requeue")
        if node.state in ("creating", "starting", "rebooting", "reimaging", "leavingpool"):
            raise ConflictError(f"Node {node_id} is {node.state} and cannot be "
                                f"{'reimaged' if reimage else 'rebooted'} now.",
                                code="NodeNotReady")
        self.pool_manager.set_state(node, "reimaging" if reimage else "rebooting")
        self._background_task(self._restart_node(node, option, reimage))

    async def _restart_node(self, node: NodeRuntime, option: str, reimage: bool) -> None:
        await self._drain(node, option)
        await self.pool_manager.restart(node, wipe=reimage)

    def set_node_scheduling(self, pool_id: str, node_id: str, enabled: bool,
                            option: str | None = None) -> None:
        """Disable ("Compute Node - Disable Scheduling") or enable scheduling on a node.

        ``option`` (``nodeDisableSchedulingOption``): requeue (default),
        terminate or taskcompletion, for the tasks running there.
        """
        node = self._node(pool_id, node_id)
        if enabled:
            node.scheduling_state = "enabled"
            self.kick()
            return
        option = self._option("nodeDisableSchedulingOption", option,
                              ("requeue", "terminate", "taskcompletion"), "requeue")
        node.scheduling_state = "disabled"
        self._background_task(self._drain(node, option))

    def remove_nodes(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """Remove nodes from a pool ("Pool - Remove Nodes"); the pool's target drops with them.

        Parameters
        ----------
        body
            ``{"nodeList": [ids], "nodeDeallocationOption": ...}`` (requeue by default).
        """
        node_list = body.get("nodeList") if isinstance(body, Mapping) else None
        if not isinstance(node_list, list) or not node_list or len(node_list) > 100:
            raise InvalidPropertyValueError("nodeList", node_list,
                                            "give 1 to 100 node IDs of the pool")
        option = self._option("nodeDeallocationOption", body.get("nodeDeallocationOption"),
                              ("requeue", "terminate", "taskcompletion", "retaineddata"),
                              "requeue")
        nodes_ = [self._node(pool_id, n) for n in node_list]
        with self.store.begin() as conn:
            row = self._pool_row(conn, pool_id)
            status = loads(row["status"])
            status["target"] = max(0, status["target"] - len(nodes_))
            Store.update(conn, pools, {"key": row["key"]}, status=dumps(status))
        self.pool_manager.targets[row["key"]] = status["target"]
        for node in nodes_:
            node.scheduling_state = "disabled"
            self._background_task(self._remove_node(node, option))

    async def _remove_node(self, node: NodeRuntime, option: str) -> None:
        node.removing = True
        node.scheduling_state = "disabled"
        await self._drain(node, option)
        await self.pool_manager.remove_node(node)

    # ===================================================================== jobs

    def _job_row(self, conn: sa.Connection, job_id: str) -> Mapping[str, Any]:
        row = Store.fetch_one(conn, jobs, key=job_id.lower())
        if row is None:
            raise not_found("Job", job_id)
        return row

    def add_job(self, body: Mapping[str, Any], schedule_job_id: str | None = None) -> str:
        """Add a job ("Job - Add"). Raises ``JobExists``, or 400 for bad properties.

        The pool need not exist yet (Batch allows that); tasks wait for it.
        """
        if schedule_job_id is not None:  # Batch names schedules' jobs "{schedule}:job-{n}"
            spec = JobSpec.from_wire({**body, "id": "scheduled"}, what="jobSpecification")
            spec.id = schedule_job_id
        else:
            spec = JobSpec.from_wire(body, what="job")
        if spec.pool_info.pool_id is None:
            raise BadRequestError(
                "poolInfo.poolId is required: auto pools (autoPoolSpecification) are not "
                "supported by this service.", code="FeatureNotSupported",
                values={"PropertyName": "poolInfo.autoPoolSpecification"})
        if spec.job_release_task and not spec.job_preparation_task:
            raise BadRequestError(
                "A job release task cannot be specified without a job preparation task.",
                code="InvalidPropertyValue", values={"PropertyName": "jobReleaseTask"})
        now = utcnow()
        with self.store.begin() as conn:
            if Store.fetch_one(conn, jobs, key=spec.id.lower()) is not None:
                raise exists("Job", spec.id)
            self.check_job_quota(conn)
            status = {"creationTime": _iso(now), "stateTransitionTime": _iso(now),
                      "lastModified": _iso(now), "eTag": new_etag(),
                      "executionInfo": {"startTime": _iso(now), "poolId": spec.pool_info.pool_id}}
            values = dict(key=spec.id.lower(), id=spec.id, seq=self.store.next_seq(conn, "job"),
                          pool_key=spec.pool_info.pool_id.lower(), state="active",
                          priority=spec.priority or 0, spec=dumps(spec.to_wire()),
                          status=dumps(status))
            conn.execute(jobs.insert().values(**values))
            self._jobs_changed()
            jm = spec.job_manager_task
            if jm is not None:
                # Queued first: the job manager gets the job's lowest insertion order.
                row = self._task_row_values(jm, values["key"], now)
                if jm.run_exclusive is not False:
                    pool = self.pool_manager.specs.get(values["pool_key"])
                    row["required_slots"] = pool.slots if pool else (jm.required_slots or 1)
                conn.execute(tasks.insert().values(row))
            elif spec.on_all_tasks_complete == "terminatejob":
                # Batch: a job without tasks has all its tasks complete.
                self._begin_terminate(conn, {**values, "status": dumps(status)},
                                      "AllTasksComplete")
        self.kick()
        return spec.id

    def check_job_quota(self, conn: sa.Connection) -> None:
        """Raise ``ActiveJobAndScheduleQuotaReached`` when active jobs and schedules are at quota."""
        from hpcbatch.core.job_schedules import job_schedules

        active = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
            jobs.c.state != "completed")).scalar() or 0
        active += conn.execute(sa.select(sa.func.count()).select_from(job_schedules).where(
            job_schedules.c.state != "completed")).scalar() or 0
        if active >= self.quotas.active_jobs_and_job_schedules:
            raise ConflictError(
                "The account has reached its quota of "
                f"{self.quotas.active_jobs_and_job_schedules} active jobs and job schedules.",
                code="ActiveJobAndScheduleQuotaReached",
                values={"Quota": str(self.quotas.active_jobs_and_job_schedules)})

    def _job_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = loads(row["spec"])
        status = loads(row["status"])
        out.update({
            "url": f"{self.base_url}/jobs/{row['id']}", "eTag": status["eTag"],
            "lastModified": status["lastModified"], "creationTime": status["creationTime"],
            "state": row["state"], "stateTransitionTime": status["stateTransitionTime"],
            "priority": row["priority"], "executionInfo": status["executionInfo"],
        })
        if "previousState" in status:
            out["previousState"] = status["previousState"]
            out["previousStateTransitionTime"] = status["previousStateTransitionTime"]
        return out

    def get_job(self, job_id: str) -> dict[str, Any]:
        """Return a job's ``CloudJob`` JSON ("Job - Get"). Raises ``JobNotFound``."""
        with self.store.read() as conn:
            return self._job_wire(self._job_row(conn, job_id))

    def list_jobs(self, filter_: str | None = None) -> list[dict[str, Any]]:
        """Return every job's JSON ("Job - List"), optionally OData-filtered."""
        stmt = sa.select(jobs).order_by(jobs.c.seq)
        if filter_:
            stmt = stmt.where(odata.compile_filter(filter_, odata.JOB_PROPERTIES))
        with self.store.read() as conn:
            return [self._job_wire(r) for r in conn.execute(stmt).mappings()]

    def update_job(self, job_id: str, body: Mapping[str, Any]) -> None:
        """Update a job's priority and other mutable properties ("Job - Update/Patch")."""
        patch = JobPatch.from_wire(body, what="job update")
        with self.store.begin() as conn:
            row = self._job_row(conn, job_id)
            spec = loads(row["spec"])
            spec.update(patch.to_wire())
            status = loads(row["status"])
            status.update(lastModified=_iso(utcnow()), eTag=new_etag())
            values: dict[str, Any] = {"spec": dumps(spec), "status": dumps(status)}
            if patch.priority is not None:
                values["priority"] = patch.priority
            if patch.pool_info and patch.pool_info.pool_id:
                values["pool_key"] = patch.pool_info.pool_id.lower()
            Store.update(conn, jobs, {"key": row["key"]}, **values)
            self._jobs_changed()
        self._job_hooks.pop(row["key"], None)
        self.kick()

    def _set_job_state(self, conn: sa.Connection, row: Mapping[str, Any], state: str,
                       **execution: Any) -> None:
        now = _iso(utcnow())
        status = loads(row["status"])
        status.update(previousState=row["state"],
                      previousStateTransitionTime=status["stateTransitionTime"],
                      stateTransitionTime=now, lastModified=now, eTag=new_etag())
        status["executionInfo"].update(execution)
        Store.update(conn, jobs, {"key": row["key"]}, state=state, status=dumps(status))
        self._jobs_changed()

    def terminate_job(self, job_id: str, reason: str | None = None) -> None:
        """Terminate a job ("Job - Terminate").

        Running tasks are ended; active tasks stay active, as Batch documents;
        the job moves to ``terminating`` and then ``completed`` with
        ``executionInfo.terminateReason`` (default ``UserTerminate``).

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        ConflictError
            ``JobCompleted`` when the job has completed already.
        """
        with self.store.begin() as conn:
            row = self._job_row(conn, job_id)
            if row["state"] == "completed":
                raise ConflictError("The specified job is already in a completed state.",
                                    code="JobCompleted")
            self._begin_terminate(conn, row, reason or "UserTerminate")

    def _begin_terminate(self, conn: sa.Connection, row: Mapping[str, Any], reason: str) -> None:
        """Move a job to ``terminating`` (in ``conn``'s transaction) and end it in the background."""
        if row["state"] in ("terminating", "deleting", "completed"):
            return
        self._set_job_state(conn, row, "terminating", terminateReason=reason)
        self._background_task(self._finish_terminate(row["key"]))

    async def _end_job_runs(self, job_key: str) -> None:
        runs = [r for r in self.runs.values() if r.job_key == job_key]
        await asyncio.gather(*(self._kill_run(r) for r in runs), return_exceptions=True)
        while any(r.job_key == job_key for r in self.runs.values()):
            await asyncio.sleep(0.05)

    async def _finish_terminate(self, job_key: str) -> None:
        await self._end_job_runs(job_key)
        await self._run_releases(job_key)
        with self.store.begin() as conn:
            row = Store.fetch_one(conn, jobs, key=job_key)
            if row is not None and row["state"] == "terminating":
                self._set_job_state(conn, row, "completed", endTime=_iso(utcnow()))

    def disable_job(self, job_id: str, disable_tasks: str = "requeue") -> None:
        """Disable a job ("Job - Disable"): no new task of it starts.

        Parameters
        ----------
        disable_tasks
            What happens to its running tasks: ``requeue`` (ended and put back
            to active, no retry spent), ``terminate`` (ended, completed with
            ``TaskEnded``) or ``wait`` (left to finish).

        Raises
        ------
        ConflictError
            ``JobNotActive`` when the job is not active.
        InvalidPropertyValueError
            An unknown ``disableTasks``.
        """
        if disable_tasks not in ("requeue", "terminate", "wait"):
            raise InvalidPropertyValueError("disableTasks", disable_tasks,
                                            "allowed values are requeue, terminate, wait")
        with self.store.begin() as conn:
            row = self._job_row(conn, job_id)
            if row["state"] != "active":
                raise ConflictError(f"The job is {row['state']}; only an active job can be "
                                    "disabled.", code="JobNotActive")
            self._begin_disable(conn, row, disable_tasks)

    def _begin_disable(self, conn: sa.Connection, row: Mapping[str, Any], how: str) -> None:
        if row["state"] != "active":
            return
        self._set_job_state(conn, row, "disabling")
        self._background_task(self._finish_disable(row["key"], how))

    async def _finish_disable(self, job_key: str, how: str) -> None:
        runs = [r for r in self.runs.values() if r.job_key == job_key]
        if how == "requeue":
            self._requeue(runs)
            await asyncio.gather(*(self._kill_run(r) for r in runs), return_exceptions=True)
        elif how == "terminate":
            await asyncio.gather(*(self._kill_run(r) for r in runs), return_exceptions=True)
        while how != "wait" and any(r.job_key == job_key for r in self.runs.values()):
            await asyncio.sleep(0.05)
        with self.store.begin() as conn:
            row = Store.fetch_one(conn, jobs, key=job_key)
            if row is not None and row["state"] == "disabling":
                self._set_job_state(conn, row, "disabled")

    def enable_job(self, job_id: str) -> None:
        """Enable a disabled job ("Job - Enable"); its tasks are scheduled again.

        Raises ``JobNotDisabled`` (409) unless the job is disabled or disabling.
        """
        with self.store.begin() as conn:
            row = self._job_row(conn, job_id)
            if row["state"] not in ("disabled", "disabling"):
                raise ConflictError(f"The job is {row['state']}, not disabled.",
                                    code="JobNotDisabled")
            self._set_job_state(conn, row, "active")
        self.kick()

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its tasks ("Job - Delete"); running tasks are ended first."""
        with self.store.begin() as conn:
            row = self._job_row(conn, job_id)
            if row["state"] == "deleting":
                return
            self._set_job_state(conn, row, "deleting")
        self._background_task(self._finish_delete(row["key"]))

    async def _finish_delete(self, job_key: str) -> None:
        await self._end_job_runs(job_key)
        with self.store.read() as conn:
            job = Store.fetch_one(conn, jobs, key=job_key)
        if job is not None and loads(job["status"]).get("previousState") != "terminating":
            await self._run_releases(job_key)
        with self.store.begin() as conn:
            for table in (tasks, task_deps, task_dep_ranges, subtasks):
                conn.execute(table.delete().where(table.c.job_key == job_key))
            conn.execute(job_nodes.delete().where(job_nodes.c.job_key == job_key))
            conn.execute(jobs.delete().where(jobs.c.key == job_key))
            self._jobs_changed()
        self._prep_failed.pop(job_key, None)

    def task_counts(self, job_id: str) -> dict[str, Any]:
        """Return the job's task counts ("Job - Get Task Counts").

        Returns
        -------
        dict
            ``{"taskCounts": {active, running, completed, succeeded, failed},
            "taskSlotCounts": {...}}``.
        """
        with self.store.read() as conn:
            row = self._job_row(conn, job_id)
            stmt = (sa.select(tasks.c.state, tasks.c.result, sa.func.count(),
                              sa.func.sum(tasks.c.required_slots))
                    .where(tasks.c.job_key == row["key"])
                    .group_by(tasks.c.state, tasks.c.result))
            counts = {k: 0 for k in ("active", "running", "completed", "succeeded", "failed")}
            slots = dict(counts)
            for state, result, n, s in conn.execute(stmt):
                key = "running" if state == "preparing" else state
                counts[key] += n
                slots[key] += s or 0
                if state == "completed":
                    counts["succeeded" if result == "success" else "failed"] += n
                    slots["succeeded" if result == "success" else "failed"] += s or 0
        return {"taskCounts": counts, "taskSlotCounts": slots}

    # ==================================================================== tasks

    def _task_row(self, conn: sa.Connection, job_key: str, task_id: str) -> Mapping[str, Any]:
        row = Store.fetch_one(conn, tasks, job_key=job_key, key=task_id.lower())
        if row is None:
            raise not_found("Task", task_id)
        return row

    def _check_job_open(self, row: Mapping[str, Any]) -> None:
        if row["state"] == "completed":
            raise ConflictError("The specified job is already in a completed state.",
                                code="JobCompleted")
        if row["state"] in ("terminating", "deleting"):
            raise ConflictError(f"The specified job is in the {row['state']} state.",
                                code="JobBeingTerminated" if row["state"] == "terminating"
                                else "JobBeingDeleted")

    def _check_task(self, spec: TaskSpec, job: Mapping[str, Any]) -> None:
        """Reject a task its job can never run: dependencies and multi-instance rules."""
        if spec.depends_on is not None:
            if not loads(job["spec"]).get("usesTaskDependencies"):
                raise BadRequestError(
                    f"Task {spec.id} has dependsOn, but job {job['id']} does not set "
                    "usesTaskDependencies.", code="TaskDependenciesNotSpecifiedOnJob",
                    values={"PropertyName": "dependsOn"})
            ids, ranges = dependencies.upstream(spec.depends_on)
            if spec.id.lower() in ids or any(
                    a <= (dependencies.integer_id(spec.id) or -1) <= b for a, b in ranges):
                raise InvalidPropertyValueError("dependsOn", spec.id,
                                                "a task cannot depend on itself")
            if any(a > b for a, b in ranges):
                raise InvalidPropertyValueError("dependsOn.taskIdRanges", ranges,
                                                "each range needs start <= end")
        if spec.application_package_references:
            self.resolve_packages([r.to_wire() for r in spec.application_package_references],
                                  "applicationPackageReferences")
        if spec.multi_instance_settings is not None:
            pool = self.pool_manager.specs.get(job["pool_key"] or "")
            capacity = self.pool_manager.capacity(job["pool_key"]) if pool else None
            multiinstance.validate(spec, pool, capacity)

    def _task_row_values(self, spec: TaskSpec | JobManagerTask, job_key: str,
                         now: datetime) -> dict[str, Any]:
        mis = getattr(spec, "multi_instance_settings", None)
        waits = getattr(spec, "depends_on", None) is not None
        return {
            "job_key": job_key, "key": spec.id.lower(), "id": spec.id, "state": "active",
            "creation_time": now, "state_transition_time": now, "last_modified": now,
            "etag": new_etag(), "required_slots": spec.required_slots or 1,
            "instances": (mis.number_of_instances or 1) if mis else 1,
            "is_manager": isinstance(spec, JobManagerTask),
            "int_id": dependencies.integer_id(spec.id),
            "dep_state": "waiting" if waits else "ready",
            "retry_count": 0, "requeue_count": 0, "spec": dumps(spec.to_wire()),
        }

    def _insert_tasks(self, conn: sa.Connection, job: Mapping[str, Any],
                      specs: Sequence[TaskSpec], now: datetime) -> dict[str, HpcbatchError]:
        """Insert tasks of one job in one executemany; return the rejected ones by ID.

        Tasks with ``dependsOn`` get their dependency rows and their initial
        dependency state (their upstream tasks may be complete already).
        """
        errors: dict[str, HpcbatchError] = {}
        taken = Store.existing_task_keys(conn, job["key"], [s.id.lower() for s in specs])
        rows, deps, dep_ranges, waiting = [], [], [], []
        for spec in specs:
            key = spec.id.lower()
            if key in taken:
                errors[spec.id] = exists("Task", spec.id)
                continue
            try:
                self._check_task(spec, job)
            except HpcbatchError as exc:
                errors[spec.id] = exc
                continue
            taken.add(key)
            rows.append(self._task_row_values(spec, job["key"], now))
            if spec.depends_on is not None:
                ids, ranges = dependencies.upstream(spec.depends_on)
                deps += [{"job_key": job["key"], "task_key": key, "upstream_key": u} for u in ids]
                dep_ranges += [{"job_key": job["key"], "task_key": key, "start": a, "end": b}
                               for a, b in ranges]
                waiting.append(key)
        Store.insert_many(conn, tasks, rows)
        Store.insert_many(conn, task_deps, deps)
        Store.insert_many(conn, task_dep_ranges, dep_ranges)
        self._resolve_dependencies(conn, job["key"], waiting)
        return errors

    def add_task(self, job_id: str, body: Mapping[str, Any]) -> str:
        """Add one task ("Task - Add").

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        ConflictError
            ``TaskExists``; ``JobCompleted`` for a completed job.
        BadRequestError
            Invalid or unknown properties; ``TaskDependenciesNotSpecifiedOnJob``;
            a multi-instance task its pool can never run.
        """
        spec = TaskSpec.from_wire(body, what="task")
        with self.store.begin() as conn:
            job = self._job_row(conn, job_id)
            self._check_job_open(job)
            errors = self._insert_tasks(conn, job, [spec], utcnow())
        if errors:
            raise errors[spec.id]
        self.kick()
        return spec.id

    def add_tasks(self, job_id: str, items: Sequence[Any]) -> list[dict[str, Any]]:
        """Add up to 100 tasks at once ("Task - Add Collection").

        Each task succeeds or fails on its own: the reply lists a
        ``TaskAddResult`` per task, in request order (``status``
        success|clienterror, with Batch's error for a bad or duplicate task).
        All accepted tasks are committed in one transaction before the reply.

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        BadRequestError
            More than 100 tasks (``RequestBodyTooLarge``) or an empty list.
        """
        if not isinstance(items, list) or not items:
            raise BadRequestError("The request body must hold a non-empty 'value' list of tasks.",
                                  values={"PropertyName": "value"})
        if len(items) > MAX_TASKS_PER_COLLECTION:
            raise BadRequestError(
                f"A task collection may hold at most {MAX_TASKS_PER_COLLECTION} tasks; "
                f"this one holds {len(items)}.", code="RequestBodyTooLarge", status=413)
        now = utcnow()
        parsed: list[TaskSpec | HpcbatchError] = []
        for i, item in enumerate(items):
            try:
                parsed.append(TaskSpec.from_wire(item, what=f"value[{i}]"))
            except HpcbatchError as exc:
                parsed.append(exc)
        first: dict[str, TaskSpec] = {}
        for p in parsed:
            if isinstance(p, TaskSpec):
                first.setdefault(p.id.lower(), p)
        with self.store.begin() as conn:
            job = self._job_row(conn, job_id)
            self._check_job_open(job)
            errors = self._insert_tasks(conn, job, list(first.values()), now)
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item, p in zip(items, parsed):
            if isinstance(p, HpcbatchError):
                tid = item.get("id", "") if isinstance(item, dict) else ""
                results.append(_add_error(tid, p))
            elif p.id.lower() in seen:  # the same ID earlier in this request
                results.append(_add_error(p.id, exists("Task", p.id)))
            elif p.id in errors:
                results.append(_add_error(p.id, errors[p.id]))
            else:
                results.append({"status": "success", "taskId": p.id, "eTag": new_etag(),
                                "lastModified": _iso(now),
                                "location": f"{self.base_url}/jobs/{job['id']}/tasks/{p.id}"})
            if not isinstance(p, HpcbatchError):
                seen.add(p.id.lower())
        if any(r["status"] == "success" for r in results):
            self.kick()
        return results

    # ------------------------------------------------------------ dependencies

    def _resolve_dependencies(self, conn: sa.Connection, job_key: str,
                              task_keys: Iterable[str]) -> None:
        """Recompute the dependency state of waiting tasks (``ready``, ``waiting``, ``blocked``).

        A task is ready when every task it names has completed with a
        ``satisfy`` dependency action, and every existing task in its ID
        ranges has too; blocked as soon as one of them completed with ``block``.
        """
        for key in task_keys:
            ids = conn.execute(sa.select(task_deps.c.upstream_key).where(
                task_deps.c.job_key == job_key, task_deps.c.task_key == key)).scalars().all()
            ranges = conn.execute(sa.select(task_dep_ranges.c.start, task_dep_ranges.c.end).where(
                task_dep_ranges.c.job_key == job_key, task_dep_ranges.c.task_key == key)).all()
            conds = ([tasks.c.key.in_(ids)] if ids else []) + [
                tasks.c.int_id.between(a, b) for a, b in ranges]
            rows = conn.execute(sa.select(tasks.c.id, tasks.c.key, tasks.c.state,
                                          tasks.c.satisfies)
                                .where(tasks.c.job_key == job_key, sa.or_(*conds))).all() \
                if conds else []
            blocking = [r for r in rows if r.state == "completed" and r.satisfies is False]
            pending = [r.id for r in rows if r.state != "completed"]
            missing = sorted(set(ids) - {r.key for r in rows})
            if blocking:
                state = "blocked"
                reason = (f"task {blocking[0].id} completed with an exit condition whose "
                          "dependencyAction is block")
            elif pending or missing:
                state = "waiting"
                names = (pending + missing)[:5]
                more = len(pending) + len(missing) - len(names)
                reason = ("waiting for task(s) " + ", ".join(names)
                          + (f" and {more} more" if more else "") + " to complete")
            else:
                state, reason = "ready", None
            conn.execute(tasks.update().where(tasks.c.job_key == job_key, tasks.c.key == key,
                                              tasks.c.state == "active")
                         .values(dep_state=state, dep_reason=reason))

    def _dependents(self, conn: sa.Connection, job_key: str,
                    completed: Sequence[Mapping[str, Any]]) -> set[str]:
        """Return the keys of tasks that depend on any of ``completed`` (rows with key, int_id)."""
        keys = [c["key"] for c in completed]
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            out.update(conn.execute(sa.select(task_deps.c.task_key).where(
                task_deps.c.job_key == job_key,
                task_deps.c.upstream_key.in_(keys[i:i + 500]))).scalars())
        ints = [c["int_id"] for c in completed if c["int_id"] is not None]
        if ints:
            lo, hi = min(ints), max(ints)
            for key, a, b in conn.execute(sa.select(
                    task_dep_ranges.c.task_key, task_dep_ranges.c.start, task_dep_ranges.c.end)
                    .where(task_dep_ranges.c.job_key == job_key, task_dep_ranges.c.start <= hi,
                           task_dep_ranges.c.end >= lo)):
                if any(a <= x <= b for x in ints):
                    out.add(key)
        return out

    def task_wire(self, row: Mapping[str, Any], job_id: str,
                  select: Sequence[str] | None = None) -> dict[str, Any]:
        """Return a task row as ``CloudTask`` JSON, limited to ``select`` when given."""
        needs_spec = select is None or any(
            s.split("/")[0] not in TASK_COLUMN_PROPERTIES for s in select)
        out: dict[str, Any] = loads(row["spec"]) if needs_spec else {"id": row["id"]}
        out.update({
            "id": row["id"],
            "url": f"{self.base_url}/jobs/{job_id}/tasks/{row['id']}",
            "eTag": row["etag"], "lastModified": _iso(row["last_modified"]),
            "creationTime": _iso(row["creation_time"]), "state": row["state"],
            "stateTransitionTime": _iso(row["state_transition_time"]),
        })
        if row["required_slots"] != 1 or "requiredSlots" in out:
            out["requiredSlots"] = row["required_slots"]
        if row["dep_state"] and row["dep_state"] != "ready" and row["state"] == "active":
            out["dependencyState"] = {"state": row["dep_state"], "reason": row["dep_reason"]}
        if row["previous_state"]:
            out["previousState"] = row["previous_state"]
            out["previousStateTransitionTime"] = _iso(row["previous_state_transition_time"])
        info: dict[str, Any] = {"retryCount": row["retry_count"],
                                "requeueCount": row["requeue_count"]}
        for wire, col in (("startTime", "start_time"), ("endTime", "end_time"),
                          ("lastRetryTime", "last_retry_time"),
                          ("lastRequeueTime", "last_requeue_time")):
            if row[col] is not None:
                info[wire] = _iso(row[col])
        if row["exit_code"] is not None:
            info["exitCode"] = row["exit_code"]
        if row["result"]:
            info["result"] = row["result"]
        if row["failure_info"]:
            info["failureInfo"] = loads(row["failure_info"])
        out["executionInfo"] = info
        if row["node_id"]:
            pool_id = row["pool_key"]
            node_url = f"{self.base_url}/pools/{pool_id}/nodes/{row['node_id']}"
            out["nodeInfo"] = {
                "affinityId": f"TVM:{row['node_id']}", "nodeUrl": node_url,
                "poolId": pool_id, "nodeId": row["node_id"],
                "taskRootDirectory": task_dir(job_id, row["id"]),
                "taskRootDirectoryUrl": f"{node_url}/files/{task_dir(job_id, row['id'])}",
            }
        return odata.apply_select(out, list(select)) if select else out

    def get_task(self, job_id: str, task_id: str, select: str | None = None) -> dict[str, Any]:
        """Return a task's JSON ("Task - Get"). Raises ``JobNotFound``/``TaskNotFound``."""
        sel = odata.parse_select(select, TASK_SELECTABLE) if select else None
        with self.store.read() as conn:
            job = self._job_row(conn, job_id)
            return self.task_wire(self._task_row(conn, job["key"], task_id), job["id"], sel)

    def list_tasks(self, job_id: str, *, filter_: str | None = None, select: str | None = None,
                   max_results: int = DEFAULT_MAX_RESULTS,
                   after_seq: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """List a job's tasks ("Task - List") with OData ``$filter`` and ``$select``.

        The filter runs in the database; pages are keyset-paged on insertion order.

        Parameters
        ----------
        job_id
            The job.
        filter_, select
            OData ``$filter`` and ``$select`` strings.
        max_results
            Page size, 1..1000 (``maxresults``).
        after_seq
            Continuation token from the previous page.

        Returns
        -------
        (list of dict, int or None)
            The page and the token of the next page (None at the end).
        """
        if not 1 <= max_results <= 1000:
            raise BadRequestError("maxresults must be between 1 and 1000.",
                                  code="InvalidQueryParameterValue",
                                  values={"QueryParameterName": "maxresults"})
        sel = odata.parse_select(select, TASK_SELECTABLE) if select else None
        plain = sel is not None and all(s in _TASK_PLAIN for s in sel)
        with self.store.read() as conn:
            job = self._job_row(conn, job_id)
            if plain:  # every selected property is a column: no per-row object building
                assert sel is not None
                stmt = sa.select(tasks.c.seq, *(_TASK_PLAIN[s] for s in sel)).where(
                    tasks.c.job_key == job["key"])
                if filter_:
                    stmt = stmt.where(odata.compile_filter(filter_, odata.TASK_PROPERTIES))
                if after_seq is not None:
                    stmt = stmt.where(tasks.c.seq > after_seq)
                rows = conn.execute(stmt.order_by(tasks.c.seq).limit(max_results + 1)).all()
                more = len(rows) > max_results
                rows = rows[:max_results]
                items = [{k: (_iso(v) if isinstance(v, datetime) else v)
                          for k, v in zip(sel, row[1:]) if v is not None} for row in rows]
                return items, (rows[-1][0] if more else None)
            cols = list(tasks.c) if sel is None or any(
                s.split("/")[0] not in TASK_COLUMN_PROPERTIES for s in sel) else [
                c for c in tasks.c if c.name != "spec"]
            stmt = sa.select(*cols).where(tasks.c.job_key == job["key"])
            if filter_:
                stmt = stmt.where(odata.compile_filter(filter_, odata.TASK_PROPERTIES))
            if after_seq is not None:
                stmt = stmt.where(tasks.c.seq > after_seq)
            rows = conn.execute(stmt.order_by(tasks.c.seq).limit(max_results + 1)).mappings().all()
        more = len(rows) > max_results
        rows = rows[:max_results]
        wires = [self.task_wire(_RowWithSpec(r), job["id"], sel) for r in rows]
        return wires, (rows[-1]["seq"] if more else None)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        """Terminate a task ("Task - Terminate"): a running task's process tree is killed.

        The task completes with failureInfo code ``TaskEnded``; a completed
        task is left as it is.
        """
        with self.store.begin() as conn:
            job = self._job_row(conn, job_id)
            row = self._task_row(conn, job["key"], task_id)
            if row["state"] == "active":
                now = utcnow()
                Store.update(conn, tasks, {"seq": row["seq"]}, state="completed",
                             previous_state="active",
                             previous_state_transition_time=row["state_transition_time"],
                             state_transition_time=now, end_time=now, result="failure",
                             exit_code=None, last_modified=now, etag=new_etag(),
                             failure_info=dumps({"category": "usererror", "code": "TaskEnded",
                                                 "message": "The task was ended by user request."}))
                return
        run_key = self._runs_by_task.get((job["key"], row["key"]))
        if run_key and run_key in self.runs:
            self._background_task(self._kill_run(self.runs[run_key]))

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        """Reactivate a failed task ("Task - Reactivate"): it may run again, retries reset.

        Raises
        ------
        ConflictError
            ``TaskNotCompleted`` for a task that has not completed, or
            ``TaskCompletedSuccessfully`` for one that succeeded; ``JobCompleted``.
        """
        with self.store.begin() as conn:
            job = self._job_row(conn, job_id)
            self._check_job_open(job)
            row = self._task_row(conn, job["key"], task_id)
            if row["state"] != "completed":
                raise ConflictError(f"Task {task_id} is {row['state']}; only a completed task "
                                    "can be reactivated.", code="TaskNotCompleted")
            if row["result"] == "success":
                raise ConflictError(f"Task {task_id} completed successfully and cannot be "
                                    "reactivated.", code="TaskCompletedSuccessfully")
            now = utcnow()
            Store.update(conn, tasks, {"seq": row["seq"]}, state="active",
                         previous_state="completed",
                         previous_state_transition_time=row["state_transition_time"],
                         state_transition_time=now, retry_count=0, last_retry_time=None,
                         exit_code=None, result=None, failure_info=None, start_time=None,
                         end_time=None, node_id=None, satisfies=None, cleanup_at=None,
                         last_modified=now, etag=new_etag())
        self.kick()

    def delete_task(self, job_id: str, task_id: str) -> None:
        """Delete a task ("Task - Delete"); a running task is ended first."""
        with self.store.begin() as conn:
            job = self._job_row(conn, job_id)
            row = self._task_row(conn, job["key"], task_id)
            conn.execute(tasks.delete().where(tasks.c.seq == row["seq"]))
        run_key = self._runs_by_task.get((job["key"], row["key"]))
        if run_key and run_key in self.runs:
            self._background_task(self._kill_run(self.runs[run_key]))

    async def _kill_run(self, run: Run) -> None:
        run.terminated = True
        for node, key in run.instance_keys:
            if not node.worker:
                continue
            try:
                await self.engine.run_on(node.worker, agent.kill_task, key)
            except Exception as exc:
                log.warning("cannot end task %s on node %s: %s", run.task_id, node.node_id, exc)

    def list_subtasks(self, job_id: str, task_id: str) -> list[dict[str, Any]]:
        """List the subtasks of a multi-instance task ("Task - List Subtasks").

        Returns
        -------
        list of dict
            ``SubtaskInformation`` JSON for instances 1..N-1 of the task's
            latest run (empty for an ordinary task or one that has not run).
        """
        with self.store.read() as conn:
            job = self._job_row(conn, job_id)
            row = self._task_row(conn, job["key"], task_id)
            subs = conn.execute(sa.select(subtasks).where(
                subtasks.c.job_key == job["key"], subtasks.c.task_key == row["key"])
                .order_by(subtasks.c.id)).mappings().all()
        out = []
        tdir = task_dir(job["id"], row["id"])
        for r in subs:
            node_url = f"{self.base_url}/pools/{r['pool_id']}/nodes/{r['node_id']}"
            item: dict[str, Any] = {
                "id": r["id"], "state": r["state"],
                "stateTransitionTime": _iso(r["state_transition_time"]),
                "startTime": _iso(r["start_time"]),
                "nodeInfo": {"affinityId": f"TVM:{r['node_id']}", "nodeUrl": node_url,
                             "poolId": r["pool_id"], "nodeId": r["node_id"],
                             "taskRootDirectory": tdir,
                             "taskRootDirectoryUrl": f"{node_url}/files/{tdir}"},
            }
            if r["state"] == "completed":
                item["previousState"] = "running"
            for k, col in (("endTime", "end_time"),):
                if r[col] is not None:
                    item[k] = _iso(r[col])
            if r["exit_code"] is not None:
                item["exitCode"] = r["exit_code"]
            if r["result"]:
                item["result"] = r["result"]
            if r["failure_info"]:
                item["failureInfo"] = loads(r["failure_info"])
            out.append(item)
        return out

    # ============================================================== node files

    def _node_worker(self, pool_id: str, node_id: str) -> NodeRuntime:
        with self.store.read() as conn:
            row = self._pool_row(conn, pool_id)
        node = self.pool_manager.node(row["key"], node_id)
        if node is None:
            raise not_found("Node", node_id)
        if not node.worker:
            raise ConflictError(f"Node {node_id} is {node.state}; its files cannot be read.",
                                code="NodeNotReady")
        return node

    async def list_node_files(self, pool_id: str, node_id: str, path: str = "",
                              recursive: bool = False) -> list[dict[str, Any]]:
        """List files under a node's root dir ("File - List From Compute Node")."""
        node = self._node_worker(pool_id, node_id)
        rel = _safe_rel(path) if path else ""
        entries = await self.engine.run_on(node.worker, agent.list_files, rel, recursive)
        base = f"{self.base_url}/pools/{pool_id}/nodes/{node_id}/files"
        return [_file_wire(e, f"{rel}/{e['name']}".lstrip("/"), base) for e in entries]

    async def get_node_file(self, pool_id: str, node_id: str, path: str, offset: int = 0,
                            length: int | None = None) -> bytes:
        """Return a file under a node's root dir ("File - Get From Compute Node")."""
        node = self._node_worker(pool_id, node_id)
        data = await self.engine.run_on(node.worker, agent.read_file, _safe_rel(path),
                                        offset, length)
        if data is None:
            raise not_found("File", path)
        return data

    # ============================================================== task files

    def _task_location(self, job_id: str, task_id: str) -> tuple[NodeRuntime, str]:
        with self.store.read() as conn:
            job = self._job_row(conn, job_id)
            row = self._task_row(conn, job["key"], task_id)
        if not row["node_id"]:
            raise ConflictError(
                f"Task {task_id} has not run on a node yet, so it has no files.",
                code="OperationInvalidForCurrentState")
        node = self.pool_manager.node((row["pool_key"] or "").lower(), row["node_id"])
        if node is None or not node.worker:
            raise NotFoundError(
                f"The node {row['node_id']} that ran task {task_id} is not available "
                "(it left the pool or is not running).", code="NodeNotFound",
                values={"NodeId": row["node_id"]})
        return node, task_dir(job["id"], row["id"])

    async def list_task_files(self, job_id: str, task_id: str,
                              recursive: bool = False) -> list[dict[str, Any]]:
        """List the files of a task's directory on its node ("File - List From Task")."""
        node, tdir = self._task_location(job_id, task_id)
        entries = await self.engine.run_on(node.worker, agent.list_files, tdir, recursive)
        base = f"{self.base_url}/jobs/{job_id}/tasks/{task_id}/files"
        return [_file_wire(e, e["name"], base) for e in entries]

    async def get_task_file(self, job_id: str, task_id: str, path: str, offset: int = 0,
                            length: int | None = None) -> bytes:
        """Return a file of a task's directory ("File - Get From Task").

        Raises
        ------
        NotFoundError
            ``FileNotFound`` (also for a path that leaves the task directory).
        """
        node, tdir = self._task_location(job_id, task_id)
        data = await self.engine.run_on(node.worker, agent.read_file,
                                        f"{tdir}/{_safe_rel(path)}", offset, length)
        if data is None:
            raise not_found("File", path)
        return data

    # ================================================================ dispatch

    async def _housekeeping_loop(self) -> None:
        """Enforce jobs' maxWallClockTime and tasks' retentionTime, once a second."""
        while True:
            await asyncio.sleep(self.housekeeping_interval_s)
            try:
                self._expire_jobs()
                await self._remove_expired_task_dirs()
            except Exception:
                log.exception("housekeeping failed")

    def _expire_jobs(self) -> None:
        """Terminate jobs past their ``constraints.maxWallClockTime`` (``MaxWallClockTimeExpiry``)."""
        now = utcnow()
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(jobs).where(
                jobs.c.state.in_(("active", "disabling", "disabled", "enabling")))).mappings().all()
            for row in rows:
                limit = (loads(row["spec"]).get("constraints") or {}).get("maxWallClockTime")
                if not limit:
                    continue
                wall = JobSpec.model_validate(loads(row["spec"])).constraints.max_wall_clock_time
                created = datetime.strptime(loads(row["status"])["creationTime"],
                                            "%Y-%m-%dT%H:%M:%S.%fZ")
                if wall is not None and wall < UNLIMITED and now - created >= wall:
                    self._begin_terminate(conn, row, "MaxWallClockTimeExpiry")

    async def _remove_expired_task_dirs(self) -> None:
        """Remove the directories of tasks whose ``retentionTime`` has elapsed."""
        now = utcnow()
        with self.store.read() as conn:
            rows = conn.execute(sa.select(tasks.c.seq, tasks.c.job_key, tasks.c.id,
                                          tasks.c.pool_key, tasks.c.node_id)
                                .where(tasks.c.cleanup_at <= now).limit(500)).all()
            job_ids = dict(conn.execute(sa.select(jobs.c.key, jobs.c.id).where(
                jobs.c.key.in_({r.job_key for r in rows}))).all()) if rows else {}
        by_node: dict[str, tuple[NodeRuntime, list[str]]] = {}
        for r in rows:
            node = self.pool_manager.node((r.pool_key or "").lower(), r.node_id or "")
            if node is not None and node.worker and r.job_key in job_ids:
                by_node.setdefault(node.node_id, (node, []))[1].append(
                    task_dir(job_ids[r.job_key], r.id))
        for node, dirs in by_node.values():
            try:
                await self.engine.run_on(node.worker, agent.remove_dirs, dirs)
            except Exception as exc:
                log.warning("cannot remove task dirs on node %s: %s", node.node_id, exc)
        if rows:
            with self.store.begin() as conn:
                conn.execute(tasks.update().where(tasks.c.seq.in_([r.seq for r in rows]))
                             .values(cleanup_at=None))

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # outcomes already delivered join this pass
            self._wake.clear()
            try:
                self._pass()
                if self._resizing:
                    self._finish_resizes()
            except Exception:
                log.exception("scheduling pass failed")
                await asyncio.sleep(0.5)
                self.kick()

    def _node_lost(self, node: NodeRuntime) -> None:
        """Requeue the tasks of a node that left or was lost, without spending retries.

        A multi-instance task with an instance on the node fails as a gang: it
        is requeued and its other instances are ended.
        """
        self._requeue([self.runs[k] for k in list(node.running) if k in self.runs])

    def _requeue(self, lost: Sequence[Run]) -> None:
        """Put runs' tasks back to ``active`` (``requeueCount`` + 1) and cancel the runs."""
        if not lost:
            return
        now = utcnow()
        with self.store.begin() as conn:
            conn.execute(
                tasks.update().where(tasks.c.seq == sa.bindparam("b_seq"),
                                     _RUN_STATES)
                .values(state="active", previous_state=tasks.c.state,
                        previous_state_transition_time=tasks.c.state_transition_time,
                        state_transition_time=now, requeue_count=tasks.c.requeue_count + 1,
                        last_requeue_time=now, last_modified=now, etag=new_etag()),
                [{"b_seq": r.seq} for r in lost],
            )
        for r in lost:
            self._forget(r)
            self.engine.forget(r.key)
            if r.future is not None:
                cancelled = r.future.cancel()
                if asyncio.iscoroutine(cancelled):  # an asynchronous Dask future
                    self._background_task(cancelled)
        self.kick()

    def _forget(self, run: Run) -> None:
        self.runs.pop(run.key, None)
        self._runs_by_task.pop((run.job_key, run.task_id.lower()), None)
        for node in run.nodes:
            if node.running.pop(run.key, None) is not None:
                node.used_slots -= run.slots
                if not node.running and node.state == "running":
                    node.state = "idle"
                    node.state_transition_time = utcnow()

    async def _watch(self, run: Run) -> None:
        try:
            outcome = await run.future
            self._ended.append(Ended(run, outcome))
        except PreparationFailed:
            if run.key in self.runs:
                self._requeue([run])
        except (asyncio.CancelledError, Exception) as exc:
            if run.key in self.runs:
                if await self._nodes_alive(run):
                    self._ended.append(Ended(run, None, f"{type(exc).__name__}: {exc}"
                                             if str(exc) else type(exc).__name__))
                # else: the node was lost; its runs are requeued, not failed.
        self.kick()

    async def _nodes_alive(self, run: Run) -> bool:
        """Check that the run's nodes still have their workers; report the lost ones."""
        try:
            workers = await self.engine.workers()
        except Exception:
            return True
        alive = True
        for node in run.nodes:
            if node.worker and workers.get(node.worker_name) != node.worker:
                self.pool_manager.lost(node)
                alive = False
        return alive

    def _jobs_changed(self) -> None:
        """Forget the active jobs the passes keep (a job was added, changed or removed)."""
        self._active_jobs.clear()

    def _pass(self) -> None:
        """One scheduling pass in one transaction: record ended runs, then fill free slots.

        The new runs are sent to their nodes once the transaction is committed.
        """
        try:
            with self.events.held() if self.events is not None else contextlib.nullcontext():
                self._pass_held()
        except BaseException:
            self._jobs_changed()  # what this pass read may have been rolled back
            raise

    def _pass_held(self) -> None:
        with self.store.begin() as conn:
            self._record_ended(conn)
            try:
                plans = self._plan(conn)
            except Exception:  # what ended is recorded all the same
                log.exception("cannot plan new runs")
                plans = []
            if plans:
                self._mark_started(conn, plans)
        if plans:
            self._start_runs(plans)
        self.engine.flush()

    def _record_ended(self, conn: sa.Connection) -> None:
        """Record every run that ended since the last pass."""
        if not self._ended:
            return
        batch, self._ended = self._ended, []
        now = utcnow()
        updates = []
        ended: list[tuple[Run, bool, dependencies.Ending]] = []
        for e in batch:
            run = e.run
            if run.key not in self.runs:
                continue  # requeued meanwhile (node lost); this result is void
            self._forget(run)
            out = e.outcome
            if out is None:
                failure = {"category": "servererror", "code": "NodeAgentError",
                           "message": f"node {run.node.node_id}: {e.error}"}
                exit_code, start, end = None, None, now
            else:
                failure, exit_code = out.failure_info, out.exit_code
                start, end = out.start_time.replace(tzinfo=None), out.end_time.replace(tzinfo=None)
            ok = exit_code == 0 and failure is None
            run.node.total_tasks_run += 1
            run.node.total_tasks_succeeded += ok
            retry = (not ok and not run.terminated
                     and (run.max_retries == -1 or run.retry_count < run.max_retries))
            ending = dependencies.task_ending(run.exit_conditions, exit_code,
                                              failure.get("code") if failure else None)
            if not retry:
                ended.append((run, ok, ending))
            if self.events is not None:
                task = {"id": run.task_id, "nodeInfo": {"poolId": run.node.pool_id,
                                                        "nodeId": run.node.node_id},
                        "requiredSlots": run.slots,
                        "multiInstanceSettings": {"numberOfInstances": len(run.nodes)},
                        "constraints": {"maxTaskRetryCount": run.max_retries},
                        "executionInfo": {"startTime": start, "endTime": end,
                                          "exitCode": exit_code, "retryCount": run.retry_count,
                                          "failureInfo": failure,
                                          "result": "success" if ok else "failure"}}
                if ok:
                    self.emit("TaskCompleteEvent", events.task_complete_event(run.job_id, task))
                else:
                    self.emit("TaskFailEvent", events.task_fail_event(run.job_id, task))
            row = {
                "b_seq": run.seq, "b_exit": exit_code, "b_failure": dumps(failure) if failure else None,
                "b_end": end, "b_now": now, "b_etag": new_etag(),
                "b_result": None if retry else ("success" if ok else "failure"),
                "b_state": "active" if retry else "completed",
                "b_retry": run.retry_count + (1 if retry else 0),
                "b_retry_time": now if retry else None,
                "b_satisfies": None if retry else ending.dependency_action == "satisfy",
                "b_cleanup": None if retry else end + timedelta(
                    seconds=run.retention_s if run.retention_s is not None
                    else DEFAULT_RETENTION_S),
            }
            if start is not None:
                row["b_start"] = start
            updates.append(row)
        if not updates:
            return
        with_start = [u for u in updates if "b_start" in u]
        without = [u for u in updates if "b_start" not in u]
        sub_rows = [
            {"b_job": e.run.job_key, "b_task": e.run.task_id.lower(), "b_id": r.instance,
             "b_end": now, "b_exit": r.outcome.exit_code if r.outcome else None,
             "b_result": "success" if r.outcome and r.outcome.exit_code == 0
             and not r.outcome.failure_info else ("failure" if r.outcome or r.error else "success"),
             "b_failure": dumps(r.outcome.failure_info) if r.outcome and r.outcome.failure_info
             else (dumps({"category": "servererror", "code": "NodeAgentError",
                          "message": r.error}) if r.error else None)}
            for e in batch for r in e.run.subtasks]
        if sub_rows:
            conn.execute(subtasks.update().where(
                subtasks.c.job_key == sa.bindparam("b_job"),
                subtasks.c.task_key == sa.bindparam("b_task"),
                subtasks.c.id == sa.bindparam("b_id"),
            ).values(state="completed", state_transition_time=sa.bindparam("b_end"),
                     end_time=sa.bindparam("b_end"), exit_code=sa.bindparam("b_exit"),
                     result=sa.bindparam("b_result"), failure_info=sa.bindparam("b_failure")),
                sub_rows)
        if with_start:
            conn.execute(_END_WITH_START, with_start)
        if without:
            conn.execute(_END, without)
        if ended:
            self._after_completions(conn, ended)

    def _after_completions(self, conn: sa.Connection,
                            ended: Sequence[tuple[Run, bool, dependencies.Ending]]) -> None:
        """Apply what completed tasks mean for their dependents and their jobs.

        Dependents are re-evaluated; then, per job: a job manager's completion
        with ``killJobOnCompletion`` terminates the job (``JMComplete``); a
        failure whose exit condition has a ``jobAction`` acts on the job when
        ``onTaskFailure`` is ``performexitoptionsjobaction`` (``TaskFailed``);
        ``onAllTasksComplete`` ``terminatejob`` terminates a job with no task
        left active or running (``AllTasksComplete``).
        """
        by_job: dict[str, list[tuple[Run, bool, dependencies.Ending]]] = {}
        for item in ended:
            if self._job_hooks.get(item[0].job_key) is not False or item[0].is_manager:
                by_job.setdefault(item[0].job_key, []).append(item)
        for job_key, items in by_job.items():
            job = Store.fetch_one(conn, jobs, key=job_key)
            if job is None:
                continue
            spec = loads(job["spec"])
            self._job_hooks[job_key] = bool(
                spec.get("usesTaskDependencies")
                or spec.get("onTaskFailure") == "performexitoptionsjobaction"
                or spec.get("onAllTasksComplete") == "terminatejob")
            if spec.get("usesTaskDependencies"):
                done = [{"key": r.task_key, "int_id": r.int_id} for r, _, _ in items]
                self._resolve_dependencies(conn, job_key, self._dependents(conn, job_key, done))
            if job["state"] not in ("active", "disabling", "disabled"):
                continue
            action, reason = None, None
            for run, ok, ending in items:
                if run.is_manager and run.kill_job_on_completion:
                    action, reason = "terminate", "JMComplete"
                elif (not ok and spec.get("onTaskFailure") == "performexitoptionsjobaction"
                      and ending.job_action != "none"):
                    action, reason = ending.job_action, "TaskFailed"
            if action is None and spec.get("onAllTasksComplete") == "terminatejob":
                open_task = conn.execute(sa.select(tasks.c.seq).where(
                    tasks.c.job_key == job_key,
                    tasks.c.state.in_(("active", "preparing", "running"))).limit(1)).first()
                if open_task is None:
                    action, reason = "terminate", "AllTasksComplete"
            if action == "terminate":
                self._begin_terminate(conn, job, reason or "TaskFailed")
            elif action == "disable":
                self._begin_disable(conn, job, "requeue")

    def _plan(self, conn: sa.Connection) -> list[tuple[Mapping[str, Any], Mapping[str, Any],
                                                      list[NodeRuntime]]]:
        """Choose the tasks that fill free task slots of every pool: ``[(job, task row, nodes)]``.

        Candidates are taken in Batch's order. A multi-instance task takes its
        whole gang of nodes at once or waits; while it waits at the head of
        its pool's queue, nothing behind it is started there (no backfill), so
        a stream of single-node tasks cannot starve it and it never holds a
        partial set of nodes.
        """
        plans: list[tuple[Mapping[str, Any], Mapping[str, Any], list[NodeRuntime]]] = []
        for pool_key, spec in self.pool_manager.specs.items():
            ready = [n for n in self.pool_manager.nodes_of(pool_key) if n.free_slots > 0]
            if not ready:
                continue
            free = {n.node_id: n.free_slots for n in ready}
            node_by_id = {n.node_id: n for n in ready}
            job_rows = self._active_jobs.get(pool_key)
            if job_rows is None:
                job_rows = self._active_jobs[pool_key] = list(
                    conn.execute(_ACTIVE_JOBS, {"b_pool": pool_key}).mappings().all())
            fill = (spec.task_scheduling_policy.node_fill_type
                    if spec.task_scheduling_policy else "spread")
            blocked = False
            for job in job_order((j, j["priority"], j["seq"]) for j in job_rows):
                excluded = self._prep_failed.get(job["key"], set())
                budget = sum(f for nid, f in free.items() if nid not in excluded)
                if budget <= 0 or blocked:
                    if blocked:
                        break
                    continue
                candidates = Store.next_active_tasks(conn, job["key"], budget)
                for segment in _segments(candidates):
                    slots = [NodeSlots(nid, f, node_by_id[nid].order)
                             for nid, f in free.items() if f > 0 and nid not in excluded]
                    if segment[0]["instances"] > 1:
                        gang = place_gang(segment[0]["instances"], slots)
                        if gang is None:
                            blocked = True
                            break
                        for nid in gang:
                            free[nid] -= 1
                        plans.append((job, segment[0], [node_by_id[nid] for nid in gang]))
                        continue
                    chosen = place([c["required_slots"] for c in segment], slots, fill)
                    for cand, nid in zip(segment, chosen):
                        if nid is not None:
                            free[nid] -= cand["required_slots"]
                            plans.append((job, cand, [node_by_id[nid]]))
        return plans

    def _mark_started(self, conn: sa.Connection, plans: Sequence[tuple[
            Mapping[str, Any], Mapping[str, Any], list[NodeRuntime]]]) -> None:
        """Record planned tasks as running (or preparing), and a gang's subtasks."""
        now = utcnow()
        etag = new_etag()
        conn.execute(_START, [
            {"b_seq": c["seq"], "b_node": ns[0].node_id, "b_pool": ns[0].pool_id,
             "b_now": now, "b_etag": etag,
             "b_state": "preparing" if '"jobPreparationTask"' in job["spec"] else "running"}
            for job, c, ns in plans])
        gangs = [(job, c, ns) for job, c, ns in plans if len(ns) > 1]
        for job, c, _ in gangs:
            conn.execute(subtasks.delete().where(subtasks.c.job_key == job["key"],
                                                 subtasks.c.task_key == c["key"]))
        Store.insert_many(conn, subtasks, [
            {"job_key": job["key"], "task_key": c["key"], "id": i, "node_id": n.node_id,
             "pool_id": n.pool_id, "state": "running", "state_transition_time": now,
             "start_time": now, "end_time": None, "exit_code": None, "result": None,
             "failure_info": None}
            for job, c, ns in gangs for i, n in enumerate(ns) if i > 0])

    def _start_runs(self, plans: Sequence[tuple[Mapping[str, Any], Mapping[str, Any],
                                                list[NodeRuntime]]]) -> None:
        """Start the planned runs: one message per node for the plain ones."""
        batches: dict[str, tuple[NodeRuntime, list[tuple[Run, agent.Launch]]]] = {}
        job_specs: dict[str, dict[str, Any]] = {}
        for job, cand, nodes_ in plans:
            job_spec = job_specs.get(job["key"])
            if job_spec is None:
                job_spec = job_specs[job["key"]] = loads(job["spec"])
            run, launch = self._launch(job, cand, nodes_, job_spec)
            if launch is not None:
                batches.setdefault(nodes_[0].node_id, (nodes_[0], []))[1].append((run, launch))
        for node, batch in batches.values():
            self.engine.post(node.worker or "", [lc for _, lc in batch], sink=self._ran,
                             on_error=self._not_sent)

    def _launch(self, job: Mapping[str, Any], row: Mapping[str, Any],
                nodes_: list[NodeRuntime], job_spec: dict[str, Any]) -> tuple[Run, agent.Launch | None]:
        """Register a run; start it, or return its launch for :meth:`_start_runs` to post."""
        task_wire = loads(row["spec"])
        spec: TaskSpec | JobManagerTask
        extra_env: dict[str, str] = dict(self.storage_env)
        if row["is_manager"]:
            spec = JobManagerTask.model_validate(task_wire)
            extra_env = {"AZURE_BATCH_ENDPOINT": self.base_url,
                         "AZURE_BATCH_ACCOUNT": self.account_name,
                         "AZURE_BATCH_ACCESS_KEY": self.account_key}
        else:
            spec = TaskSpec.model_validate(task_wire)
        constraints = spec.constraints
        job_retries = (job_spec.get("constraints") or {}).get("maxTaskRetryCount")
        max_retries = (constraints.max_task_retry_count if constraints and
                       constraints.max_task_retry_count is not None else job_retries or 0)
        key = f"run-{self._nonce}-{next(self._counter)}"
        tdir = task_dir(job["id"], row["id"])
        settings = [*(job_spec.get("commonEnvironmentSettings") or []),
                    *[s.to_wire() for s in spec.environment_settings or []]]
        wall_s = _wall_clock_s(constraints.max_wall_clock_time if constraints else None)
        retention = constraints.retention_time if constraints else None
        run = Run(key=key, seq=row["seq"], job_key=job["key"], job_id=job["id"],
                  task_id=row["id"], nodes=nodes_, slots=row["required_slots"],
                  max_retries=max_retries, retry_count=row["retry_count"],
                  task_key=row["key"], int_id=row["int_id"],
                  exit_conditions=task_wire.get("exitConditions"),
                  is_manager=bool(row["is_manager"]),
                  kill_job_on_completion=bool(row["is_manager"]) and getattr(
                      spec, "kill_job_on_completion", None) is not False,
                  retention_s=retention.total_seconds() if retention else None)
        self.runs[key] = run
        self._runs_by_task[(job["key"], row["key"])] = key
        if self.events is not None:
            self.emit("TaskStartEvent", events.task_start_event(job["id"], {
                "id": row["id"], "requiredSlots": row["required_slots"],
                "nodeInfo": {"poolId": nodes_[0].pool_id, "nodeId": nodes_[0].node_id},
                "multiInstanceSettings": {"numberOfInstances": row["instances"]},
                "constraints": {"maxTaskRetryCount": max_retries},
                "executionInfo": {"retryCount": row["retry_count"],
                                  "requeueCount": row["requeue_count"]}}))
        for node in nodes_:
            node.running[key] = (job["id"], row["id"])
            node.used_slots += run.slots
            if node.state == "idle":
                node.state = "running"
                node.state_transition_time = utcnow()
        if job_spec.get("jobPreparationTask"):
            prep_dir = posixpath.join(nodes_[0].root_dir or "", task_dir(job["id"], PREP_DIR))
            extra_env.update(AZ_BATCH_JOB_PREP_DIR=prep_dir,
                             AZ_BATCH_JOB_PREP_WORKING_DIR=posixpath.join(prep_dir, "wd"))
        mis = getattr(spec, "multi_instance_settings", None)
        if len(nodes_) == 1 and mis is None:
            launch = agent.Launch(key=key, task_dir=tdir, command_line=spec.command_line,
                                  job_id=job["id"], task_id=row["id"], settings=settings,
                                  extra_env=extra_env, max_wall_clock_s=wall_s,
                                  **self._io(spec, nodes_[0].pool_key))
            if not job_spec.get("jobPreparationTask"):
                return run, launch  # sent with the other runs of this pass to the node

            def start() -> Any:
                return asyncio.ensure_future(self.engine.run_launch(nodes_[0].worker or "",
                                                                    launch))
        else:
            assert isinstance(spec, TaskSpec)
            gang = [multiinstance.GangNode(
                node_id=n.node_id, address=n.host.address, port=n.host.port, user=n.ssh_user,
                root_dir=n.root_dir or "", worker=n.worker or "", host_key=n.host_key)
                for n in nodes_]
            pool_key = self.pool_manager.pool_key_path(nodes_[0])
            local = all(n.host.provider == "local" for n in nodes_)
            coordination, app = multiinstance.launches(
                spec, key=key, job_id=job["id"], task_dir=tdir, nodes=gang,
                settings=settings, max_wall_clock_s=wall_s, identity_file=pool_key,
                local_python=nodes_[0].host.python if local else None,
                extra_env=extra_env, io=self._io(spec, nodes_[0].pool_key),
                storage=self.storage)

            def start() -> Any:
                return asyncio.ensure_future(self._run_gang(run, gang, coordination, app))
        if job_spec.get("jobPreparationTask"):
            run.future = asyncio.ensure_future(self._after_preparation(run, job, start))
        else:
            run.future = start()
        self._background_task(self._watch(run))
        return run, None

    def _not_sent(self, launches: list[agent.Launch], exc: BaseException) -> None:
        """Runs posted to a node could not be sent: they end with the error (see :meth:`_watch`)."""
        for launch in launches:
            run = self.runs.get(launch.key)
            if run is not None:
                run.future = asyncio.get_running_loop().create_future()
                run.future.set_exception(exc)
                self._background_task(self._watch(run))

    def _ran(self, key: str, outcome: agent.Outcome) -> None:
        """A run posted by :meth:`_start_runs` ended: record it in the next pass."""
        run = self.runs.get(key)
        if run is not None:
            self._ended.append(Ended(run, outcome))
            self.kick()

    # ------------------------------------------------- job preparation and release

    async def _after_preparation(self, run: Run, job: Mapping[str, Any],
                                 start: Callable[[], Any]) -> agent.Outcome:
        """Run the job preparation task on the run's nodes (once per node), then the run."""
        results = await asyncio.gather(*(self._prepare(job, n) for n in run.nodes))
        if run.key not in self.runs:
            raise asyncio.CancelledError()
        if not all(results):
            raise PreparationFailed(run.node.node_id)
        now = utcnow()
        with self.store.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.seq == run.seq,
                                              tasks.c.state == "preparing")
                         .values(state="running", previous_state="preparing",
                                 previous_state_transition_time=tasks.c.state_transition_time,
                                 state_transition_time=now, start_time=now, last_modified=now,
                                 etag=new_etag()))
        return await start()

    async def _prepare(self, job: Mapping[str, Any], node: NodeRuntime) -> bool:
        """Return whether tasks of ``job`` may run on ``node``, running its preparation task once.

        The preparation runs once per node per boot (again after a reboot only
        when ``rerunOnNodeRebootAfterSuccess``); concurrent tasks wait for the
        same run. With ``waitForSuccess`` (the default) a failed preparation
        keeps the job's tasks off the node.
        """
        key = (job["key"], node.node_id, node.generation)
        fut = self._preps.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._run_preparation(job, node))
            self._preps[key] = fut
        return await asyncio.shield(fut)

    def _job_node(self, conn: sa.Connection, job_key: str, node_id: str) -> Mapping[str, Any] | None:
        return Store.fetch_one(conn, job_nodes, job_key=job_key, node_id=node_id)

    def _save_job_node(self, job_key: str, node: NodeRuntime, **info: Any) -> None:
        values = {k: dumps(v) for k, v in info.items()}
        with self.store.begin() as conn:
            if self._job_node(conn, job_key, node.node_id) is None:
                conn.execute(job_nodes.insert().values(job_key=job_key, node_id=node.node_id,
                                                       pool_id=node.pool_id, **values))
            else:
                Store.update(conn, job_nodes, {"job_key": job_key, "node_id": node.node_id},
                             **values)

    async def _run_preparation(self, job: Mapping[str, Any], node: NodeRuntime) -> bool:
        spec = JobPreparationTask.model_validate(loads(job["spec"])["jobPreparationTask"])
        with self.store.read() as conn:
            row = self._job_node(conn, job["key"], node.node_id)
        previous = loads(row["preparation"]) if row and row["preparation"] else None
        if (previous and previous.get("result") == "success"
                and spec.rerun_on_node_reboot_after_success is False):
            return True
        info = await self._run_job_task(job, node, spec, PREP_DIR, "preparation")
        ok = info.get("result") == "success"
        if not ok and spec.wait_for_success is not False:
            self._prep_failed.setdefault(job["key"], set()).add(node.node_id)
            self.kick()
            return False
        return True

    async def _run_job_task(self, job: Mapping[str, Any], node: NodeRuntime,
                            spec: JobPreparationTask | JobReleaseTask, dirname: str,
                            column: str) -> dict[str, Any]:
        """Run a job preparation or release task on one node, with retries; record its info."""
        job_spec = loads(job["spec"])
        constraints = getattr(spec, "constraints", None)
        retries = (constraints.max_task_retry_count if constraints else None) or 0
        wall = (constraints.max_wall_clock_time if constraints
                else getattr(spec, "max_wall_clock_time", None) or timedelta(minutes=15))
        rel = task_dir(job["id"], dirname)
        node_url = f"{self.base_url}/pools/{node.pool_id}/nodes/{node.node_id}"
        attempt = 0
        while True:
            now = utcnow()
            info: dict[str, Any] = {"state": "running", "startTime": _iso(now), "retryCount": attempt,
                                    "taskRootDirectory": rel,
                                    "taskRootDirectoryUrl": f"{node_url}/files/{rel}"}
            self._save_job_node(job["key"], node, **{column: info})
            launch = agent.Launch(
                key=f"{dirname}-{self._nonce}-{next(self._counter)}", task_dir=rel,
                command_line=spec.command_line, job_id=job["id"], task_id=spec.id or dirname,
                settings=[*(job_spec.get("commonEnvironmentSettings") or []),
                          *[s.to_wire() for s in spec.environment_settings or []]],
                extra_env=dict(self.storage_env), max_wall_clock_s=_wall_clock_s(wall),
                resource_files=[r.to_wire() for r in spec.resource_files or []],
                storage=self.storage)
            try:
                out: agent.Outcome = await self.engine.run_launch(node.worker or "", launch)
                failure, code = out.failure_info, out.exit_code
                info.update(startTime=_iso(out.start_time.replace(tzinfo=None)),
                            endTime=_iso(out.end_time.replace(tzinfo=None)))
            except Exception as exc:  # node lost or agent error
                failure = {"category": "servererror", "code": "NodeAgentError",
                           "message": f"node {node.node_id}: {exc}"}
                code = None
                info["endTime"] = _iso(utcnow())
            ok = code == 0 and failure is None
            info.update(state="completed", result="success" if ok else "failure")
            if code is not None:
                info["exitCode"] = code
            if failure:
                info["failureInfo"] = failure
            if not ok and (retries == -1 or attempt < retries) and node.worker:
                attempt += 1
                info["lastRetryTime"] = _iso(utcnow())
                continue
            self._save_job_node(job["key"], node, **{column: info})
            return info

    async def _run_releases(self, job_key: str) -> None:
        """Run the job release task on every node where the job's preparation task ran."""
        with self.store.read() as conn:
            job = Store.fetch_one(conn, jobs, key=job_key)
            rows = conn.execute(sa.select(job_nodes).where(job_nodes.c.job_key == job_key)).all()
        if job is None:
            return
        release = loads(job["spec"]).get("jobReleaseTask")
        if not release:
            return
        spec = JobReleaseTask.model_validate(release)
        targets = []
        for row in rows:
            node = self.pool_manager.node(row.pool_id.lower(), row.node_id)
            if node is not None and node.worker:
                targets.append(node)
        await asyncio.gather(*(self._run_job_task(job, n, spec, RELEASE_DIR, "release")
                               for n in targets), return_exceptions=True)

    def preparation_and_release_status(self, job_id: str) -> list[dict[str, Any]]:
        """List the job's preparation and release task status per node.

        Implements "Job - List Preparation and Release Task Status"
        (``GET /jobs/{jobId}/jobpreparationandreleasetaskstatus``).
        """
        with self.store.read() as conn:
            job = self._job_row(conn, job_id)
            rows = conn.execute(sa.select(job_nodes).where(job_nodes.c.job_key == job["key"])
                                .order_by(job_nodes.c.node_id)).mappings().all()
        out = []
        for r in rows:
            item: dict[str, Any] = {
                "poolId": r["pool_id"], "nodeId": r["node_id"],
                "nodeUrl": f"{self.base_url}/pools/{r['pool_id']}/nodes/{r['node_id']}"}
            if r["preparation"]:
                item["jobPreparationTaskExecutionInfo"] = loads(r["preparation"])
            if r["release"]:
                item["jobReleaseTaskExecutionInfo"] = loads(r["release"])
            out.append(item)
        return out

    def _io(self, spec: Any, pool_key: str = "") -> dict[str, Any]:
        """Launch fields for a task's packages, resource files, output files and logs."""
        pool = self.pool_manager.specs.get(pool_key)
        refs = [r.to_wire() for r in (pool.application_package_references if pool else None) or []]
        refs += [r.to_wire() for r in getattr(spec, "application_package_references", None) or []]
        try:
            pkgs = self.resolve_packages(refs, "applicationPackageReferences")
        except HpcbatchError:
            pkgs = []  # deleted since the task was added: the agent reports nothing to install
        return {
            "packages": pkgs,
            "resource_files": [r.to_wire() for r in getattr(spec, "resource_files", None) or []],
            "output_files": [o.to_wire() for o in getattr(spec, "output_files", None) or []],
            "storage": self.storage, "persist_logs": self.storage is not None,
        }

    async def _run_gang(self, run: Run, gang: list[multiinstance.GangNode],
                        coordination: list[agent.Launch], app: agent.Launch) -> agent.Outcome:
        outcome, error, run.subtasks = await multiinstance.run_gang(
            self.engine, gang, coordination, app)
        if outcome is None:
            raise HpcbatchError(error or "the multi-instance task produced no outcome")
        return outcome


def _add_error(task_id: str, exc: HpcbatchError) -> dict[str, Any]:
    """Return a ``TaskAddResult`` for a task that was not added."""
    err = {k: v for k, v in exc.to_wire().items() if k != "odata.metadata"}
    return {"status": "clienterror", "taskId": task_id, "error": err}


def _safe_rel(path: str) -> str:
    """Normalise a client-given relative path; one that leaves its folder is not found."""
    norm = os.path.normpath(path.lstrip("/")) if path.strip("/") else ""
    if norm.startswith("..") or os.path.isabs(norm):
        raise not_found("File", path)
    return "" if norm == "." else norm


def _file_wire(entry: Mapping[str, Any], name: str, base: str) -> dict[str, Any]:
    """Return Batch ``NodeFile`` JSON for an agent's file entry."""
    item: dict[str, Any] = {"name": name, "url": f"{base}/{name}",
                            "isDirectory": entry["isDirectory"]}
    if not entry["isDirectory"]:
        item["properties"] = {"contentLength": entry["size_bytes"],
                              "lastModified": _iso(entry["mtime"].replace(tzinfo=None)),
                              "contentType": "application/octet-stream"}
    return item


def _segments(candidates: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Split candidates into runs of ordinary tasks, each multi-instance task on its own."""
    out: list[list[Mapping[str, Any]]] = []
    for c in candidates:
        if c["instances"] > 1 or not out or out[-1][0]["instances"] > 1:
            out.append([c])
        else:
            out[-1].append(c)
    return out


class _RowWithSpec(dict):  # type: ignore[type-arg]
    """A row mapping where a column left out of the SELECT reads as None."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        super().__init__(row)

    def __missing__(self, key: str) -> Any:
        return None
