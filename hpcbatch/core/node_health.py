"""Node health: lost workers and the nodes' own recovery.

:class:`NodeHealth` watches every pool's nodes for a Dask worker that left the
scheduler (:meth:`NodeHealth.lost`: the node goes ``unusable`` with
``NodeLost``, the service requeues its tasks) and then restarts the node by
itself, or replaces it by a free inventory host, following the policy of
:mod:`hpcbatch.core.node_recovery`. The restarts and replacements themselves
are the pool manager's (:meth:`hpcbatch.core.node_provisioning.NodeProvisioner.restart`,
:meth:`~hpcbatch.core.pool_manager.PoolManager.replace_node`); the SSH
reachability checks of hosts are :mod:`hpcbatch.core.node_reachability`'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hpcbatch.batch.errors import NodeConnectionError
from hpcbatch.batch.states import NODE_JOINING_OR_LEAVING, ComputeNodeState
from hpcbatch.core.node_recovery import (
    RECOVERABLE_CODES,
    Action,
    NodeRecovery,
    RecoveryPolicy,
)
from hpcbatch.core.node_runtime import NodeRuntime

if TYPE_CHECKING:
    from hpcbatch.core.pool_manager import PoolManager

log = logging.getLogger(__name__)


class NodeHealth:
    """Watches nodes' workers and recovers lost nodes (one per pool manager).

    Parameters
    ----------
    manager
        The pool manager whose nodes it watches and through which it restarts,
        replaces and fails them.

    Attributes
    ----------
    watch_interval_s
        Seconds between two looks at the scheduler's workers.
    recovery_policy
        How lost nodes are restarted or replaced (:mod:`hpcbatch.core.node_recovery`;
        ``HPCBATCH_NODE_RECOVERY_*`` variables override its defaults).
    auto_recover
        Restart lost nodes by themselves; False leaves them ``unusable`` until a reboot.
    """

    def __init__(self, manager: PoolManager) -> None:
        self.manager = manager
        self.watch_interval_s = 1.0
        self.recovery_policy = RecoveryPolicy.from_environment()
        self.auto_recover = True
        self._recovering: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching the nodes' workers (on the running event loop)."""
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    def close(self) -> None:
        """Stop watching, and stop every recovery under way."""
        for task in (self._watch, *self._recovering.values()):
            if task:
                task.cancel()

    async def _watch_loop(self) -> None:
        manager = self.manager
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                workers = await manager.engine.workers()
            except Exception as exc:  # noqa: BLE001 - the scheduler restarts: look again later
                log.warning("cannot reach the Dask scheduler: %s", exc)
                continue
            for pool in list(manager.pools.values()):
                for node in list(pool.values()):
                    if (node.worker and node.state not in NODE_JOINING_OR_LEAVING
                            and workers.get(node.worker_name) != node.worker):
                        self.lost(node)

    async def _lose_trust(self, node: NodeRuntime, generation: int) -> None:
        """A lost node: the others stop accepting it, and it loses the key if it is reachable
        (unless it was provisioned again meanwhile)."""
        await self.manager.keys.sync(node.pool_key)
        if node.generation == generation:
            await asyncio.to_thread(self.manager.keys.revoke, node)

    def lost(self, node: NodeRuntime) -> None:
        """Mark a node whose worker disappeared ``unusable``; the service requeues its tasks.

        Unless :attr:`auto_recover` is off, the node is then restarted by itself
        (:meth:`recover_node`): it returns to ``idle`` without a reboot request.
        A node without a worker (already lost, or not started) is left alone.

        Parameters
        ----------
        node
            The node whose worker left the scheduler.
        """
        if node.worker is None:
            return
        manager = self.manager
        node.worker = None
        node.generation += 1
        node.trusted = False  # until it is provisioned again
        manager.spawn(self._lose_trust(node, node.generation))
        manager.fail(node, "NodeLost",  # first: its tasks leaving must not make it look idle
                     f"host {node.host.name}: the node's worker disconnected from the scheduler; "
                     "its running tasks were requeued"
                     + ("; the node is restarted automatically" if self.auto_recover else ""))
        manager.on_node_lost(node)
        self.recover_node(node)

    def recover_node(self, node: NodeRuntime) -> None:
        """Start recovering an ``unusable`` node by itself, unless that is under way.

        The node is restarted over SSH as "Compute Node - Reboot" does, with the
        backoff of :attr:`recovery_policy`; when its host stays unreachable it
        is replaced by a free inventory host matching the pool; with none, the
        restarts go on slowly and the node's error says so
        (:mod:`hpcbatch.core.node_recovery`). Recovery ends when the node is no
        longer ``unusable`` with a :data:`~hpcbatch.core.node_recovery.RECOVERABLE_CODES`
        error (it is back, was rebooted or removed by a user, or failed otherwise).

        Parameters
        ----------
        node
            The node (``unusable``).
        """
        if not self.auto_recover:
            return
        key = (node.pool_key, node.node_id)
        if key in self._recovering:
            return
        task = asyncio.get_running_loop().create_task(self._recover(node))
        self._recovering[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._recovering.get(key) is t:
                del self._recovering[key]

        task.add_done_callback(done)

    def recovering(self, node: NodeRuntime) -> bool:
        """Tell whether ``node`` is being recovered by itself (:meth:`recover_node`)."""
        return (node.pool_key, node.node_id) in self._recovering

    def _recoverable(self, node: NodeRuntime) -> bool:
        return (not node.removing and self.manager.node(node.pool_key, node.node_id) is node
                and node.state == ComputeNodeState.unusable and bool(node.errors)
                and node.errors[0].get("code") in RECOVERABLE_CODES)

    async def _recover(self, node: NodeRuntime) -> None:
        manager = self.manager
        recovery = NodeRecovery(self.recovery_policy)
        free = True
        while True:
            await asyncio.sleep(recovery.next_delay(free))
            if not self._recoverable(node):
                return
            free = manager.can_replace(node)
            if recovery.next_action(free) is Action.REPLACE and manager.replace_node(node):
                return
            log.info("node %s (pool %s): restarting it on host %s (attempt %d)", node.node_id,
                     node.pool_id, node.host.name, recovery.attempts + 1)
            await manager.provisioning.restart(node)
            if not self._recoverable(node):  # back, or taken over by a user or another cause
                return
            recovery.failed(unreachable=node.errors[0].get("code") == NodeConnectionError.code)
            free = manager.can_replace(node)
            first = node.errors[0]
            node.errors = [{**first, "errorDetails": [
                *(d for d in first.get("errorDetails") or [] if d.get("name") != "Recovery"),
                {"name": "Recovery", "value": recovery.describe(free)}]}, *node.errors[1:]]
            manager.persist(node)
