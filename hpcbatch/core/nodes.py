"""Compute nodes: "Compute Node - List/Get/Reboot/Reimage/Disable/Enable Scheduling", "Pool - Remove Nodes"."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpcbatch.batch.errors import (
    ConflictError,
    InvalidPropertyValueError,
    not_found,
)
from hpcbatch.batch.models import NodeRemove
from hpcbatch.batch.states import NODE_IN_TRANSITION
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.core.pools import check_steady
from hpcbatch.core.rows import check_not_deleting, pool_row
from hpcbatch.store.database import (
    Store,
    dumps,
    loads,
    pools,
)

if TYPE_CHECKING:
    from hpcbatch.core.runs import Runs

log = logging.getLogger(__name__)


class Nodes:
    """Operations on a pool's compute nodes.

    Parameters
    ----------
    ctx
        The service context.
    runs
        The runs in flight (a node's tasks are requeued, ended or waited for).
    """

    def __init__(self, ctx: ServiceContext, runs: Runs) -> None:
        self.ctx = ctx
        self.runs = runs

    def list_nodes(self, pool_id: str) -> list[dict[str, Any]]:
        """Return a pool's ``ComputeNode`` JSON list ("Compute Node - List")."""
        with self.ctx.store.read() as conn:
            row = pool_row(conn, pool_id)
        return [n.to_wire(self.ctx.base_url) for n in self.ctx.pool_manager.nodes_of(row["key"])]

    def get_node(self, pool_id: str, node_id: str) -> dict[str, Any]:
        """Return one node's JSON ("Compute Node - Get"). Raises ``PoolNotFound``/``NodeNotFound``."""
        with self.ctx.store.read() as conn:
            row = pool_row(conn, pool_id)
        node = self.ctx.pool_manager.node(row["key"], node_id)
        if node is None:
            raise not_found("Node", node_id)
        return node.to_wire(self.ctx.base_url)

    def _node(self, pool_id: str, node_id: str) -> NodeRuntime:
        with self.ctx.store.read() as conn:
            row = pool_row(conn, pool_id)
        node = self.ctx.pool_manager.node(row["key"], node_id)
        if node is None:
            raise not_found("Node", node_id)
        return node

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
        if node.state in NODE_IN_TRANSITION:
            raise ConflictError(f"Node {node_id} is {node.state} and cannot be "
                                f"{'reimaged' if reimage else 'rebooted'} now.",
                                code="NodeNotReady")
        self.ctx.pool_manager.set_state(node, "reimaging" if reimage else "rebooting")
        self.ctx.background(self._restart_node(node, option, reimage))

    async def _restart_node(self, node: NodeRuntime, option: str, reimage: bool) -> None:
        await self.runs.drain(node, option)
        await self.ctx.pool_manager.restart(node, wipe=reimage)

    def set_node_scheduling(self, pool_id: str, node_id: str, enabled: bool,
                            option: str | None = None) -> None:
        """Disable ("Compute Node - Disable Scheduling") or enable scheduling on a node.

        ``option`` (``nodeDisableSchedulingOption``): requeue (default),
        terminate or taskcompletion, for the tasks running there. A node that
        runs no task is ``offline`` while its scheduling is disabled.

        Raises
        ------
        ConflictError
            ``NodeAlreadyInTargetSchedulingState`` when the node's scheduling is
            already in the requested state: "You can disable Task scheduling on a
            Compute Node only if its current scheduling state is enabled" (REST
            Compute Node - Disable Scheduling; Enable Scheduling alike).
        """
        node = self._node(pool_id, node_id)
        how = "" if enabled else self._option(
            "nodeDisableSchedulingOption", option, ("requeue", "terminate", "taskcompletion"),
            "requeue")
        target = "enabled" if enabled else "disabled"
        if node.scheduling_state == target:
            raise ConflictError(f"Scheduling is already {target} on node {node.node_id}.",
                                code="NodeAlreadyInTargetSchedulingState")
        if enabled:
            self.ctx.pool_manager.set_scheduling(node, True)
            self.ctx.kick()
            return
        self.ctx.pool_manager.set_scheduling(node, False)
        self.ctx.background(self.runs.drain(node, how))

    def remove_nodes(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """Remove nodes from a pool ("Pool - Remove Nodes"); the pool's target drops with them.

        Parameters
        ----------
        body
            ``{"nodeList": [ids], "nodeDeallocationOption": ...}`` (requeue by default).

        Raises
        ------
        ConflictError
            ``PoolBeingDeleted`` for a deleting pool; ``PoolBeingResized`` unless
            the pool's allocation state is steady (REST Pool - Remove Nodes).
        """
        params = NodeRemove.from_wire(body, what="remove nodes")
        option = params.node_deallocation_option or "requeue"
        nodes_ = [self._node(pool_id, n) for n in params.node_list]
        with self.ctx.store.begin() as conn:
            row = pool_row(conn, pool_id)
            check_not_deleting(row)
            check_steady(self.ctx.pool_manager, row)
            status = loads(row["status"])
            # each removed node lowers the target of its kind (dedicated or low-priority)
            low = sum(1 for n in nodes_ if n.host.low_priority)
            status["target"] = max(0, status["target"] - (len(nodes_) - low))
            status["targetLowPriority"] = max(0, status.get("targetLowPriority", 0) - low)
            Store.update(conn, pools, {"key": row["key"]}, status=dumps(status))
        self.ctx.pool_manager.low_priority_targets[row["key"]] = status["targetLowPriority"]
        self.ctx.pool_manager.set_target(row["key"], status["target"], reconcile=False)
        for node in nodes_:
            self.ctx.pool_manager.mark_removing(node)
            self.ctx.background(self.remove_node(node, option))

    async def remove_node(self, node: NodeRuntime, option: str) -> None:
        self.ctx.pool_manager.mark_removing(node)
        await self.runs.drain(node, option)
        await self.ctx.pool_manager.remove_node(node)
