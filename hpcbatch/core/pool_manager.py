"""The pool manager: reconciles each pool's target node count against the inventory.

It takes inventory hosts for a pool (``vmSize`` selects them by label), starts a
compute node on each, and gives hosts back when a pool shrinks or is deleted; it
keeps the nodes' state and saves it in the store. Node states are Batch's
(``ComputeNodeState``); every change of a node's state goes through
:meth:`PoolManager.set_state`.

The nodes' processes are started apart, in :mod:`hpcbatch.core.node_provisioning`
(:attr:`PoolManager.provisioning`): each through its host's
:class:`~hpcbatch.providers.base.NodeProvider` (the only way hpcbatch reaches a host),
then the node's Dask worker, its start task, its restarts and its removal.

The nodes' health is watched apart: lost workers and the nodes' own recovery
in :mod:`hpcbatch.core.node_health` (:attr:`PoolManager.health`), the SSH
reachability checks of their hosts in :mod:`hpcbatch.core.node_reachability`
(:attr:`PoolManager.reachability`); both act through this module's public methods.
The SSH key a pool with inter-node communication gives its nodes is kept in
:mod:`hpcbatch.core.pool_keys` (:attr:`PoolManager.keys`).

It holds no scheduling policy: the service asks it which nodes are ready and
how many slots they have free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hpcbatch.batch import images
from hpcbatch.batch.models import PoolSpec
from hpcbatch.batch.states import (
    NODE_JOINING,
    NODE_JOINING_OR_LEAVING,
    AllocationState,
    ComputeNodeState,
    Kind,
    SchedulingState,
)
from hpcbatch.batch.wire import iso, utcnow
from hpcbatch.core import statistics
from hpcbatch.core.node_health import NodeHealth
from hpcbatch.core.node_provisioning import NodeProvisioner
from hpcbatch.core.node_reachability import NodeReachability
from hpcbatch.core.node_runtime import EndedTask, NodeRuntime
from hpcbatch.core.pool_keys import PoolKeys
from hpcbatch.core.transitions import check
from hpcbatch.execution.engine import DaskEngine
from hpcbatch.execution.tls import TlsFiles
from hpcbatch.providers.base import NodeProvider
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.registry import offers_remote_login, provider_for
from hpcbatch.store.database import Store, dumps, hosts, loads, nodes

log = logging.getLogger(__name__)

CLEARED_BY_ENABLE_SCHEDULING = {"name": "ClearedBy", "value": "Compute Node - Enable Scheduling"}
"""The ``errorDetails`` entry of an error :meth:`PoolManager.quarantine` set: enabling the
node's scheduling again clears it."""


class PoolManager:
    """Keeps the compute nodes of every pool at its targets: starts them through
    :attr:`provisioning`, watches them through :attr:`health` and :attr:`reachability`.

    Parameters
    ----------
    store
        The durable store (hosts and nodes tables).
    engine
        The Dask engine nodes' workers connect to.
    tls
        The service's TLS files; each node gets its own certificate from their CA
        (:func:`hpcbatch.execution.pki.issue_node_credentials`) in its secrets folder.
    account_name, account_url
        Written into each node's identity (``AZ_BATCH_ACCOUNT_*``).
    on_change
        Called (on the event loop) whenever node capacity changes, so the
        service runs a scheduling pass.
    on_node_lost
        Called with a node whose worker disappeared, so the service requeues
        its tasks.
    storage
        The service's storage (:class:`hpcbatch.execution.transfer.StorageRef`), for
        start tasks' resource files.
    packages_for
        ``packages_for(pool_key)``: the pool's application packages, resolved,
        installed before the start task (default: none).
    shrink
        ``shrink(node, option)``: coroutine that drains a node per its
        ``nodeDeallocationOption`` and removes it (the service, which owns the
        running tasks; default:
        :meth:`hpcbatch.core.node_provisioning.NodeProvisioner.remove_node` at once).
    core_quota
        The account's ``dedicatedCoreQuota``: most inventory cores all pools
        together may hold (None: no limit).
    provider_factory
        Makes the :class:`~hpcbatch.providers.base.NodeProvider` of a host
        (default: :func:`hpcbatch.providers.registry.provider_for`; kept by
        :attr:`provisioning`).

    Attributes
    ----------
    deallocation
        Per pool, the ``nodeDeallocationOption`` of its latest resize or
        autoscale result (requeue by default); set through :meth:`set_target`.
    """

    def __init__(
        self,
        store: Store,
        engine: DaskEngine,
        tls: TlsFiles,
        *,
        account_name: str,
        account_url: str,
        on_change: Callable[[], None],
        on_node_lost: Callable[[NodeRuntime], None],
        storage: Any = None,
        packages_for: Callable[[str], list[Any]] | None = None,
        shrink: Callable[[NodeRuntime, str], Awaitable[None]] | None = None,
        core_quota: int | None = None,
        provider_factory: Callable[[Host], NodeProvider] = provider_for,
    ) -> None:
        self.store = store
        self.engine = engine
        self.tls = tls
        self.account_name = account_name
        self.account_url = account_url
        self.on_change = on_change
        self.on_node_lost = on_node_lost
        self.storage = storage
        self.packages_for: Callable[[str], list[Any]] = packages_for or (lambda pool_key: [])
        self.shrink: Callable[[NodeRuntime, str], Awaitable[None]] = (
            shrink or (lambda node, option: self.provisioning.remove_node(node)))
        self.core_quota = core_quota
        self.deallocation: dict[str, str] = {}
        self.quota_blocked: set[str] = set()
        self.stopping: set[str] = set()
        """Pools whose resize is being stopped ("Pool - Stop Resize") and not steady yet."""
        self.pools: dict[str, dict[str, NodeRuntime]] = {}
        self.specs: dict[str, PoolSpec] = {}
        self.seqs: dict[str, int] = {}
        """Each pool's ``seq`` (its row's, which a re-created pool of the same id does not share)."""
        self.targets: dict[str, int] = {}
        """Per pool: its dedicated node target (``targetDedicatedNodes``)."""
        self.low_priority_targets: dict[str, int] = {}
        """Per pool: its low-priority node target (``targetLowPriorityNodes``), served by
        inventory hosts marked ``low_priority``; set before :meth:`set_pool`/:meth:`set_target`."""
        self.host_releases: dict[str, Mapping[str, str]] = {}
        """Per host key: its ``/etc/os-release`` fields, as the inventory read them, for
        pools that select hosts by ``imageReference``."""
        self.before_start_task: Callable[[NodeRuntime], Awaitable[None]] | None = None
        """Run on a node once its worker is up, before its start task (the pool's
        certificates: :meth:`hpcbatch.core.certificates.Certificates.install_on_node`)."""
        self.before_remove: Callable[[NodeRuntime], Awaitable[None]] | None = None
        """Run on a node that leaves its pool, while its worker is up (its node users:
        :meth:`hpcbatch.core.nodes.Nodes.drop_node_users`)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsaved: dict[tuple[str, str], tuple[NodeRuntime, bool]] = {}
        self._flush_due = False
        self.unreachable_hosts: dict[str, str] = {}
        """Per host key: the SSH error of the latest start of a node there that could not
        reach it, until a start there succeeds; :meth:`free_hosts` offers such hosts last."""
        self.provisioning = NodeProvisioner(self, provider_factory)
        """The nodes' processes: launch, worker, start task, restart and removal."""
        self.health = NodeHealth(self)
        """Lost workers and the nodes' own recovery (``auto_recover``, ``recovery_policy``)."""
        self.reachability = NodeReachability(self)
        """The periodic SSH checks of the nodes' hosts (``probe_interval_s``)."""
        self.keys = PoolKeys(self)
        """The pools' SSH keys for inter-node communication, and which nodes hold them."""
        self.state_listeners: list[Callable[[NodeRuntime], None]] = []
        """Called with a node (on the event loop) after each change of its state: watchers
        such as the dashboard's live heat map see every state a node passes through."""

    # ------------------------------------------------------------------ queries

    def nodes_of(self, pool_key: str) -> list[NodeRuntime]:
        """Return a pool's nodes in pool order."""
        return sorted(self.pools.get(pool_key, {}).values(), key=lambda n: n.order)

    def node(self, pool_key: str, node_id: str) -> NodeRuntime | None:
        """Return one node, matched case-insensitively, or None."""
        pool = self.pools.get(pool_key, {})
        return pool.get(node_id) or next(
            (n for n in pool.values() if n.node_id.lower() == node_id.lower()), None
        )

    def allocation_state(self, pool_key: str) -> AllocationState:
        """Batch ``allocationState``: ``resizing`` while nodes join or leave the pool, else ``steady``.

        A node joins until it first booted (``creating``, or ``starting`` with no
        ``lastBootTime``) and leaves while ``leavingpool``; a node that reboots or
        is reimaged passes through ``starting`` without joining: "resizing: the
        Pool is resizing; that is, Compute Nodes are being added to or removed
        from the Pool" (REST AllocationState.resizing).

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).

        Returns
        -------
        str
            ``resizing`` or ``steady``; ``stopping`` after :meth:`stop_resize`
            until the pool is steady.
        """
        nodes_ = self.pools.get(pool_key, {})
        target = self.total_target(pool_key)
        settling = any(n.state in NODE_JOINING_OR_LEAVING
                       and not (n.state == ComputeNodeState.starting and n.last_boot_time is not None)
                       for n in nodes_.values())
        state = (AllocationState.resizing
                 if settling or (len(nodes_) != target and self.can_grow(pool_key))
                 else AllocationState.steady)
        if pool_key in self.stopping:
            if state == AllocationState.resizing:
                return AllocationState.stopping
            self.stopping.discard(pool_key)  # the stop completed
        return state

    def stop_resize(self, pool_key: str) -> None:
        """Stop a pool's resize ("Pool - Stop Resize"): it keeps the nodes it has now.

        The target becomes the number of nodes not leaving the pool: no host is
        taken and no node given back from now on, while the nodes already
        joining or leaving finish doing so; meanwhile :meth:`allocation_state`
        answers ``stopping``, then ``steady`` (REST Pool - Stop Resize: "changes
        the Pool allocation state first to stopping and then to steady").

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        """
        pool = self.pools.get(pool_key, {})
        kept = [n for n in pool.values() if n.state != ComputeNodeState.leavingpool and not n.removing]
        low = sum(1 for n in kept if n.host.low_priority)
        self.targets[pool_key] = len(kept) - low
        if low or pool_key in self.low_priority_targets:
            self.low_priority_targets[pool_key] = low
        if self.allocation_state(pool_key) == AllocationState.resizing:
            self.stopping.add(pool_key)

    def can_grow(self, pool_key: str) -> bool:
        """Tell whether the pool is short of its target and a free host and core quota allow a node.

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        """
        return (pool_key not in self.quota_blocked
                and len(self.pools.get(pool_key, {})) < self.total_target(pool_key)
                and bool(self.free_hosts(pool_key, 1)))

    def total_target(self, pool_key: str) -> int:
        """A pool's dedicated and low-priority node targets together."""
        return self.targets.get(pool_key, 0) + self.low_priority_targets.get(pool_key, 0)

    def is_quota_blocked(self, pool_key: str) -> bool:
        """Tell whether the pool's last growth stopped at the account's core quota."""
        return pool_key in self.quota_blocked

    def pool_keys(self) -> list[str]:
        """Return the keys of the pools the manager knows (declared and not deleted)."""
        return list(self.specs)

    def pool_seq(self, pool_key: str) -> int | None:
        """The pool's ``seq`` (the key of its statistics rows), or None when not known.

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        """
        return self.seqs.get(pool_key)

    def spec(self, pool_key: str) -> PoolSpec | None:
        """Return a pool's current specification, or None for an unknown pool."""
        return self.specs.get(pool_key)

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the loops that watch nodes' workers and their hosts' reachability."""
        self.health.start()
        self.reachability.start()

    async def close(self, stop_nodes: bool = True) -> None:
        """Stop watching; when ``stop_nodes``, close every node's worker."""
        self.health.close()
        self.reachability.close()
        self.flush()
        for t in list(self._tasks):
            t.cancel()
        if stop_nodes:
            await asyncio.gather(
                *(self.engine.close_worker(n.worker) for p in self.pools.values()
                  for n in p.values() if n.worker),
                return_exceptions=True,
            )
        self.provisioning.close()

    def spawn(self, coro: Any) -> None:
        """Run a coroutine on the event loop as a task the manager cancels when it closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_pool(self, pool_key: str, spec: PoolSpec, target: int,
                 ssh_key: tuple[str, str] | None = None, seq: int | None = None) -> None:
        """Declare a pool's specification and target node count, then reconcile.

        Parameters
        ----------
        ssh_key
            The pool's (private key, authorized_keys line) for inter-node trust.
        seq
            The pool row's ``seq`` (:meth:`pool_seq`).
        """
        self.specs[pool_key] = spec
        if seq is not None:
            self.seqs[pool_key] = seq
        self.targets[pool_key] = target
        self.keys.set_key(pool_key, ssh_key)
        self.pools.setdefault(pool_key, {})
        self.reconcile(pool_key)

    def update_spec(self, pool_key: str, spec: PoolSpec) -> None:
        """Replace a pool's specification ("Pool - Patch", "Pool - Update Properties", autoscale).

        Nodes already started keep their start task run; the new specification
        applies to nodes started (or restarted) from now on.

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        spec
            Its new specification.
        """
        self.specs[pool_key] = spec

    def set_target(self, pool_key: str, target: int, deallocation_option: str | None = None,
                   *, reconcile: bool = True) -> None:
        """Set a pool's target node count ("Pool - Resize", autoscale, "Pool - Remove Nodes").

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        target
            ``targetDedicatedNodes``.
        deallocation_option
            ``nodeDeallocationOption`` for nodes the pool gives up (``requeue``,
            ``terminate``, ``taskcompletion``, ``retaineddata``); None keeps the
            pool's last one.
        reconcile
            Take or give back hosts now (:meth:`reconcile`). "Pool - Remove
            Nodes" passes False: the service removes the named nodes itself.
        """
        self.targets[pool_key] = target
        if deallocation_option is not None:
            self.deallocation[pool_key] = deallocation_option
        if reconcile:
            self.reconcile(pool_key)

    def capacity(self, pool_key: str) -> int:
        """How many inventory hosts the pool could ever hold (free or its own, matching vmSize)."""
        spec = self.specs[pool_key]
        with self.store.read() as conn:
            rows = conn.execute(sa.select(hosts.c.spec).where(
                sa.or_(hosts.c.pool_key.is_(None), hosts.c.pool_key == pool_key))).scalars().all()
        return sum(1 for text in rows if Host.model_validate(loads(text)).matches(spec.vm_size))

    def mpi_local_launch(self, nodes_: Iterable[NodeRuntime]) -> str | None:
        """How a gang's MPI launchers reach its nodes: the interpreter that runs
        :mod:`hpcbatch.providers.locallaunch` as their ``ssh``, or None for real SSH.

        Parameters
        ----------
        nodes_
            The gang of a multi-instance task, master first.

        Returns
        -------
        str or None
            The master's interpreter when every node's provider launches
            locally (:attr:`~hpcbatch.providers.base.NodeProvider.local_launch_python`),
            else None (launchers use SSH with the pool's key,
            :meth:`hpcbatch.core.pool_keys.PoolKeys.key_path`).
        """
        pythons = [self.provisioning.provider(n.host).local_launch_python for n in nodes_]
        return pythons[0] if pythons and all(pythons) else None

    def remote_login(self, host: Host | Mapping[str, Any]) -> bool:
        """Tell whether users can log in to ``host`` over SSH ("Compute Node - Get Remote
        Login Settings"); a host given as its dict form, as the inventory lists it."""
        return offers_remote_login(host)

    def recover(self, pool_key: str, spec: PoolSpec, target: int,
                ssh_key: tuple[str, str] | None = None, seq: int | None = None) -> None:
        """Restore a pool's nodes after a service restart and restart each of them.

        A node keeps its ``allocationTime`` ("the time when the Compute Node was
        initially allocated and doesn't change once set", REST
        ComputeNode.allocationTime) and its last stored state; a node that had
        started joining the pool restarts as a rebooted node does (``rebooting``
        -> ``starting``, its start task runs again, 2017 l.375), a node stored
        ``creating`` starts from there, and one stored ``leavingpool`` finishes
        leaving (audit M23). Tasks that were running on the nodes are requeued
        by the service. ``seq`` is the pool row's (:meth:`pool_seq`).
        """
        self.specs[pool_key] = spec
        if seq is not None:
            self.seqs[pool_key] = seq
        self.targets[pool_key] = target
        self.keys.set_key(pool_key, ssh_key)
        pool = self.pools.setdefault(pool_key, {})
        with self.store.read() as conn:
            rows = conn.execute(sa.select(nodes, hosts.c.spec.label("host_spec"))
                                .join(hosts, hosts.c.key == nodes.c.host_key)
                                .where(nodes.c.pool_key == pool_key)).mappings().all()
        for i, row in enumerate(rows):
            status = loads(row["status"])
            allocated = status.get("allocationTime")
            node = NodeRuntime(
                pool_key=pool_key, pool_id=spec.id, node_id=row["id"],
                host=Host.model_validate(loads(row["host_spec"])), slots=spec.slots,
                order=status.get("order", i), vm_size=spec.vm_size,
                state=ComputeNodeState(row["state"]),
                allocation_time=(datetime.strptime(allocated, "%Y-%m-%dT%H:%M:%S.%fZ")
                                 if allocated else utcnow()),
            )
            pool[node.node_id] = node
            if node.state == ComputeNodeState.leavingpool:  # its removal was under way
                self.spawn(self.provisioning.remove_node(node))
                continue
            if node.state not in NODE_JOINING:  # it had joined: restart it as a reboot
                self.set_state(node, ComputeNodeState.rebooting, notify=False)
            self.spawn(self.provisioning.provision(node))
        self.reconcile(pool_key)

    def reconcile(self, pool_key: str) -> None:
        """Grow or shrink a pool toward its target: take or give back hosts.

        Dedicated and low-priority nodes are counted apart
        (:meth:`kind_deficits`): each kind short of its target takes free hosts of
        that kind, each kind above it gives back its least useful nodes.
        """
        spec = self.specs.get(pool_key)
        if spec is None:
            return
        pool = self.pools.setdefault(pool_key, {})
        live = [n for n in pool.values() if n.state != ComputeNodeState.leavingpool and not n.removing]
        short = sum(max(0, d) for d in self.kind_deficits(pool_key, live))
        if short:
            order = max((n.order for n in pool.values()), default=-1)
            for host in self._take_hosts(pool_key, spec, short):
                order += 1
                node = NodeRuntime(pool_key=pool_key, pool_id=spec.id, node_id=host.name,
                                   host=host, slots=spec.slots, order=order,
                                   vm_size=spec.vm_size)
                pool[node.node_id] = node
                self.persist(node, insert=True)
                self.spawn(self.provisioning.provision(node))
        dedicated_extra, low_extra = (max(0, -d) for d in self.kind_deficits(pool_key, live))
        if dedicated_extra or low_extra:
            # Give back the least useful nodes first: broken, then idle, then busy.
            rank: dict[str, int] = {
                ComputeNodeState.unusable: 0, ComputeNodeState.starttaskfailed: 0,
                ComputeNodeState.offline: 0, ComputeNodeState.creating: 1,
                ComputeNodeState.starting: 1, ComputeNodeState.idle: 2,
                ComputeNodeState.waitingforstarttask: 3, ComputeNodeState.running: 4}
            option = self.deallocation.get(pool_key, "requeue")
            for low, extra in ((False, dedicated_extra), (True, low_extra)):
                of_kind = [n for n in live if n.host.low_priority is low]
                victims = sorted(of_kind,
                                 key=lambda n: (rank.get(n.state, 1), n.used_slots, -n.order))
                for node in victims[:extra]:
                    self.mark_removing(node)
                    self.spawn(self.shrink(node, option))

    def kind_deficits(self, pool_key: str,
                      live: Iterable[NodeRuntime] | None = None) -> tuple[int, int]:
        """How many dedicated and low-priority nodes a pool lacks (negative: has too many).

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        live
            Its nodes not leaving (default: computed).

        Returns
        -------
        (int, int)
            ``(dedicated, low_priority)``: target minus the nodes of that kind.
        """
        if live is None:
            live = [n for n in self.pools.get(pool_key, {}).values()
                    if n.state != ComputeNodeState.leavingpool and not n.removing]
        low_target = self.low_priority_targets.get(pool_key, 0)
        dedicated_target = self.targets.get(pool_key, 0)
        nodes_ = list(live)
        low = sum(1 for n in nodes_ if n.host.low_priority)
        return dedicated_target - (len(nodes_) - low), low_target - low

    def host_misfit(self, spec: PoolSpec, host: Host) -> str | None:
        """Why a pool may not take a host, or None when it may (its kind aside).

        Parameters
        ----------
        spec
            The pool's specification: ``vmSize`` (host labels) and the
            ``imageReference`` of its ``virtualMachineConfiguration`` (the host's
            OS, :attr:`host_releases`, or its inventory ``images``).
        host
            An inventory host.

        Returns
        -------
        str or None
            ``"vmSize"``, ``"image"`` (the host runs another OS), ``"unread"`` (its OS
            is not known yet), or None.
        """
        if not host.matches(spec.vm_size):
            return "vmSize"
        image = images.wanted_image(spec.virtual_machine_configuration)
        if image is None:
            return None
        fits = images.serves(image, self.host_releases.get(host.name.lower()), host.images)
        return None if fits else ("unread" if fits is None else "image")

    def free_hosts(self, pool_key: str, limit: int, *, unread: bool = True,
                   kinds: tuple[int, int] | None = None) -> list[Host]:
        """Free hosts the pool may take, of the kinds it lacks, at most ``limit`` (reads the store).

        With ``unread``, hosts whose OS is still being read for the pool's
        ``imageReference`` count too (the pool is resizing until it is known);
        :meth:`_take_hosts` takes only hosts known to fit. ``kinds`` (dedicated,
        low-priority) overrides what the pool lacks, e.g. ``(1, 0)`` to ask whether a
        dedicated node could be replaced.
        """
        spec = self.specs[pool_key]
        allowed = (None, "unread") if unread else (None,)
        dedicated, low = kinds or tuple(max(0, d) for d in self.kind_deficits(pool_key))
        with self.store.read() as conn:
            rows = conn.execute(sa.select(hosts.c.key, hosts.c.spec)
                                .where(hosts.c.pool_key.is_(None))
                                .order_by(hosts.c.key)).all()
        # Hosts a node could not reach when it last started there come last: a pool takes
        # one only when no other free host fits.
        found: list[Host] = []
        for _key, text in sorted(rows, key=lambda r: r[0] in self.unreachable_hosts):
            if len(found) >= limit or not (dedicated or low):
                break
            host = Host.model_validate(loads(text))
            wanted = low if host.low_priority else dedicated
            if wanted and self.host_misfit(spec, host) in allowed:
                found.append(host)
                if host.low_priority:
                    low -= 1
                else:
                    dedicated -= 1
        return found

    def _take_hosts(self, pool_key: str, spec: PoolSpec, count: int) -> list[Host]:
        taken = self.free_hosts(pool_key, count, unread=False)
        self.quota_blocked.discard(pool_key)
        if self.core_quota is not None:  # the dedicated core quota: dedicated hosts only
            used = sum(n.host.cores for p in self.pools.values() for n in p.values()
                       if not n.host.low_priority)
            allowed = []
            for host in taken:
                if not host.low_priority:
                    if used + host.cores > self.core_quota:
                        self.quota_blocked.add(pool_key)
                        continue
                    used += host.cores
                allowed.append(host)
            taken = allowed
        if taken:
            with self.store.begin() as conn:
                conn.execute(hosts.update().where(hosts.c.key.in_([h.name.lower() for h in taken]))
                             .values(pool_key=pool_key))
        return taken

    def persist(self, node: NodeRuntime, insert: bool = False) -> None:
        """Save a node's state and status (order, errors, ``allocationTime``) in the store.

        On the event loop, the nodes saved during one turn of the loop are written
        together at its end, in one transaction (:meth:`flush`): a pool's nodes
        start together, and 1,000 of them are one commit, not 1,000. Outside an
        event loop the node is written at once.

        Parameters
        ----------
        node
            The node.
        insert
            Insert its row (a node joining the pool) rather than update it.
        """
        key = (node.pool_key, node.node_id)
        earlier = self._unsaved.get(key)
        self._unsaved[key] = (node, insert or (earlier is not None and earlier[1]
                                               and earlier[0] is node))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the nodes :meth:`persist` saved and not written yet, in one transaction.

        A node no longer in its pool is skipped: its row went with it.
        """
        self._flush_due = False
        pending, self._unsaved = self._unsaved, {}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for node, insert in pending.values():
            if self.pools.get(node.pool_key, {}).get(node.node_id) is not node:
                continue
            status = dumps({"order": node.order, "errors": node.errors,
                            "allocationTime": iso(node.allocation_time)})  # restored by recover
            if insert:
                inserts.append({"pool_key": node.pool_key, "id": node.node_id,
                                "host_key": node.host.name.lower(), "state": node.state,
                                "status": status})
            else:
                updates.append({"key_pool": node.pool_key, "key_id": node.node_id,
                                "state": node.state, "status": status})
        if not (inserts or updates):
            return
        with self.store.begin() as conn:
            Store.insert_many(conn, nodes, inserts)
            if updates:
                conn.execute(nodes.update()
                             .where(nodes.c.pool_key == sa.bindparam("key_pool"),
                                    nodes.c.id == sa.bindparam("key_id"))
                             .values(state=sa.bindparam("state"),
                                     status=sa.bindparam("status")), updates)

    def set_state(self, node: NodeRuntime, state: ComputeNodeState, *, notify: bool = True) -> None:
        """Move a node to a Batch node state (``ComputeNodeState``), recording the transition time.

        The one place a node's state changes (the service's too): a transition
        check plugs in here.

        Parameters
        ----------
        node
            The node.
        state
            The new state (``creating``, ``starting``, ``waitingforstarttask``,
            ``starttaskfailed``, ``idle``, ``running``, ``rebooting``,
            ``reimaging``, ``leavingpool``, ``offline``, ``unusable``, ...).
        notify
            Call ``on_change`` so the service runs a scheduling pass (a node
            taking a run during a pass need not).
        """
        if node.state != state:
            node.state = check(Kind.node, node.state, state)
            node.state_transition_time = utcnow()
            for listener in self.state_listeners:
                try:
                    listener(node)
                except Exception:  # a watcher never breaks a node's transition
                    log.exception("node state listener %r failed", listener)
        if notify:
            self.on_change()

    def assign_run(self, node: NodeRuntime, run_key: str, job_id: str, task_id: str,
                   slots: int) -> None:
        """Record a run dispatched to a node: it holds ``slots``; an idle node becomes ``running``.

        Parameters
        ----------
        node
            The node.
        run_key
            The run's key.
        job_id, task_id
            The task it runs (the node's ``recentTasks``).
        slots
            Task slots the run takes (``requiredSlots``).
        """
        node.running[run_key] = (job_id, task_id)
        node.used_slots += slots
        if node.state == ComputeNodeState.idle:
            self.set_state(node, ComputeNodeState.running, notify=False)

    def release_run(self, node: NodeRuntime, run_key: str, slots: int) -> bool:
        """Undo :meth:`assign_run`: the run's ``slots`` are free again, and a node left
        without runs becomes ``idle``. Return whether the node was running ``run_key``."""
        if node.running.pop(run_key, None) is None:
            return False
        node.used_slots -= slots
        self.settle(node, notify=False)
        return True

    @staticmethod
    def note_ended(node: NodeRuntime, ended: EndedTask) -> None:
        """Record a run that ended on a node, for its ``recentTasks`` (the latest
        :data:`~hpcbatch.core.node_runtime.RECENT_TASKS` are kept: O(1), bounded).

        Parameters
        ----------
        node
            The node (each node of a multi-instance run, with its ``subtask_id``).
        ended
            What ended, as ``TaskInformation`` shows it.
        """
        node.ended.append(ended)

    def settle(self, node: NodeRuntime, *, notify: bool = True) -> None:
        """Put a node that runs no task in ``offline`` or ``idle`` per its scheduling state.

        Batch: "offline: The Compute Node is not currently running a Task, and
        scheduling of new Tasks to the Compute Node is disabled" (REST
        ComputeNodeState.offline); "idle: The Compute Node is not currently
        running a Task". Only a node that is ``running``, ``idle`` or ``offline``
        changes; a node still running a task, or starting, restarting, failed
        or leaving, keeps its state.

        Parameters
        ----------
        node
            The node.
        notify
            Call ``on_change`` (see :meth:`set_state`).
        """
        if node.running or node.state not in (ComputeNodeState.running, ComputeNodeState.idle,
                                              ComputeNodeState.offline):
            return
        self.set_state(node, ComputeNodeState.offline
                       if node.scheduling_state == SchedulingState.disabled
                       else ComputeNodeState.idle, notify=notify)

    def set_scheduling(self, node: NodeRuntime, enabled: bool) -> None:
        """Enable or disable scheduling on a node ("Compute Node - Enable/Disable Scheduling").

        A node that runs no task goes ``offline`` when disabled and back to
        ``idle`` when enabled (:meth:`settle`); a running node keeps running and
        settles when its last task ends.

        Parameters
        ----------
        node
            The node.
        enabled
            ``schedulingState`` ``enabled`` (True) or ``disabled`` (False).
        """
        node.scheduling_state = SchedulingState.enabled if enabled else SchedulingState.disabled
        if enabled and any(CLEARED_BY_ENABLE_SCHEDULING in (e.get("errorDetails") or [])
                           for e in node.errors):  # the reason of a quarantine goes with it
            node.errors = [e for e in node.errors
                           if CLEARED_BY_ENABLE_SCHEDULING not in (e.get("errorDetails") or [])]
            self.persist(node)
        self.settle(node)

    def quarantine(self, node: NodeRuntime, code: str, message: str) -> None:
        """Take a node out of scheduling because of what happened on it, and say why.

        The node keeps its state (a running node finishes its tasks and goes
        ``offline``) with ``schedulingState`` ``disabled`` and a
        ``ComputeNodeError`` (``code``, ``message``, the host in ``errorDetails``)
        that "Compute Node - Get" shows until scheduling is enabled again.

        Parameters
        ----------
        node
            The node.
        code, message
            The ``ComputeNodeError``'s code and sentence.
        """
        node.errors = [*node.errors, {"code": code, "message": message, "errorDetails": [
            {"name": "Host", "value": node.host.name}, CLEARED_BY_ENABLE_SCHEDULING]}]
        log.warning("node %s (pool %s) taken out of scheduling: %s", node.node_id,
                    node.pool_id, message)
        self.set_scheduling(node, False)
        self.persist(node)

    def mark_removing(self, node: NodeRuntime) -> None:
        """Take no new task on a node about to leave its pool (it no longer counts as live)."""
        node.removing = True
        node.scheduling_state = SchedulingState.disabled

    def fail(self, node: NodeRuntime, code: str, message: str,
             state: ComputeNodeState = ComputeNodeState.unusable,
             details: Mapping[str, str] | None = None) -> None:
        """Put a node in a failed state (``unusable`` by default) with one ``ComputeNodeError``.

        Parameters
        ----------
        node
            The node.
        code, message
            The error's code (``NodeLost``, ``NodeStartFailed``, ...) and sentence;
            its ``errorDetails`` name the host.
        state
            The failed state (``unusable`` or ``starttaskfailed``).
        details
            More ``errorDetails`` name/value pairs, after the host.
        """
        node.errors = [{"code": code, "message": message, "errorDetails": [
            {"name": "Host", "value": node.host.name},
            *({"name": k, "value": v} for k, v in (details or {}).items())]}]
        log.warning("node %s (pool %s): %s", node.node_id, node.pool_id, message)
        self.set_state(node, state)
        self.persist(node)

    def forget_node(self, node: NodeRuntime) -> None:
        """Forget a node that left its pool: its row goes and its host returns to the inventory.

        The nodes saved and not written yet are written first (:meth:`flush`): no
        saved state of the node may land after its row is gone. The node's core
        time in the pool goes to the pool's statistics.

        Parameters
        ----------
        node
            The node, ``leavingpool`` (:meth:`hpcbatch.core.node_provisioning.NodeProvisioner.remove_node`).
        """
        self.flush()  # no saved state of the node may land after its row is gone
        with self.store.begin() as conn:
            statistics.node_left(conn, node)  # stats helper: the node's core time in the pool
            conn.execute(nodes.delete().where(nodes.c.pool_key == node.pool_key,
                                              nodes.c.id == node.node_id))
            conn.execute(hosts.update().where(hosts.c.key == node.host.name.lower())
                         .values(pool_key=None))
        self.pools.get(node.pool_key, {}).pop(node.node_id, None)

    # ------------------------------------------------------------- pool removal

    async def delete_pool(self, pool_key: str) -> None:
        """Remove every node of a pool and forget the pool."""
        self.targets[pool_key] = 0
        self.low_priority_targets.pop(pool_key, None)
        await asyncio.gather(*(self.provisioning.remove_node(n)
                               for n in list(self.pools.get(pool_key, {}).values())))
        self.keys.forget(pool_key)
        self.provisioning.forget_pool(pool_key)
        self.stopping.discard(pool_key)
        self.pools.pop(pool_key, None)
        self.specs.pop(pool_key, None)
        self.seqs.pop(pool_key, None)
        self.targets.pop(pool_key, None)

    # ---------------------------------------------------- lost and replaced nodes

    def lost(self, node: NodeRuntime) -> None:
        """Handle a node whose worker disappeared: :meth:`hpcbatch.core.node_health.NodeHealth.lost`."""
        self.health.lost(node)

    def can_replace(self, node: NodeRuntime) -> bool:
        """Tell whether a free inventory host of the node's kind fits its pool (could replace it).

        Parameters
        ----------
        node
            A node of the pool (its kind, dedicated or low-priority, is its host's).
        """
        kinds = (0, 1) if node.host.low_priority else (1, 0)
        return bool(self.free_hosts(node.pool_key, 1, unread=False, kinds=kinds))

    def replace_node(self, node: NodeRuntime) -> bool:
        """Replace a node by a free host of its pool; return whether it was.

        The pool takes a new host (:meth:`reconcile`) and the node leaves the
        pool (:meth:`hpcbatch.core.node_provisioning.NodeProvisioner.remove_node`:
        its host goes back to the inventory). With no host to take, the node
        stays, scheduling enabled again.

        Parameters
        ----------
        node
            The node (an unreachable one, :mod:`hpcbatch.core.node_health`).
        """
        pool = self.pools.get(node.pool_key, {})
        self.mark_removing(node)
        self.reconcile(node.pool_key)
        live = [n for n in pool.values() if n.state != ComputeNodeState.leavingpool and not n.removing]
        if len(live) < self.targets.get(node.pool_key, 0):  # no host could be taken after all
            node.removing = False
            node.scheduling_state = SchedulingState.enabled
            return False
        log.warning("node %s (pool %s): host %s stayed unreachable; the node is replaced by "
                    "another inventory host and leaves the pool", node.node_id, node.pool_id,
                    node.host.name)
        self.spawn(self.provisioning.remove_node(node))
        return True
