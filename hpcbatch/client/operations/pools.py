"""Pool and compute node operations of :class:`~hpcbatch.client.sdk.BatchClient`: Pool - *,
Compute Node - * (node users, remote login), File - * From Compute Node.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hpcbatch.client.rest import Json, RestClient, parse_model, wire_models

if TYPE_CHECKING:
    from hpcbatch.batch.models import (
        ComputeNode,
        NodeFile,
        Pool,
    )


class PoolOperations(RestClient):
    """Pool, compute node and node file operations (a mixin of ``BatchClient``)."""

    # -------------------------------------------------------------------- pools

    def create_pool(self, pool: Any) -> None:
        """Add a pool ("Pool - Add"); ``pool`` is a :class:`~hpcbatch.batch.models.PoolSpec`
        or its JSON."""
        self._request("POST", "/pools", body=pool)

    def get_pool(self, pool_id: str) -> Pool:
        """Return a pool ("Pool - Get"); raises :class:`BatchError` ``PoolNotFound``."""
        return parse_model(wire_models().Pool, self.get_pool_json(pool_id))

    def get_pool_json(self, pool_id: str) -> Json:
        """:meth:`get_pool` as wire JSON."""
        return self._get(f"/pools/{self._q(pool_id)}")

    def patch_pool(self, pool_id: str, patch: Mapping[str, Any]) -> None:
        """Update a pool's mutable properties, e.g. ``{"metadata": [...]}`` ("Pool - Patch";
        REST ``PATCH /pools/{poolId}``: the properties given replace the pool's)."""
        self._request("PATCH", f"/pools/{self._q(pool_id)}", body=patch)

    def list_pool_usage_metrics_json(self, start_time: str | None = None,
                                     end_time: str | None = None,
                                     filter: str | None = None) -> list[Json]:
        """Core hours per pool per 30-minute interval ("Pool - List Usage Metrics").

        Parameters
        ----------
        start_time, end_time
            ISO 8601 times (``2026-01-02T03:00:00Z``): the intervals that overlap them;
            without either, the last interval that has ended.
        filter
            OData ``$filter`` on ``poolId``, ``startTime``, ``endTime``.

        Returns
        -------
        list[dict]
            ``PoolUsageMetrics``: ``poolId``, ``startTime``, ``endTime``, ``vmSize``,
            ``totalCoreHours``.
        """
        return list(self._list("/poolusagemetrics", {"starttime": start_time,
                                                     "endtime": end_time, "$filter": filter}))

    def list_pools(self, filter: str | None = None) -> list[Pool]:
        """Return pools ("Pool - List"), with an optional OData ``$filter``."""
        return [parse_model(wire_models().Pool, p) for p in self.list_pools_json(filter)]

    def list_pools_json(self, filter: str | None = None,
                        select: str | None = None) -> list[Json]:
        """:meth:`list_pools` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list("/pools", {"$filter": filter, "$select": select}))

    def resize_pool(self, pool_id: str, target_dedicated_nodes: int,
                    node_deallocation_option: str | None = None) -> None:
        """Resize a pool ("Pool - Resize") to ``target_dedicated_nodes`` nodes."""
        body: dict[str, Any] = {"targetDedicatedNodes": target_dedicated_nodes}
        if node_deallocation_option:
            body["nodeDeallocationOption"] = node_deallocation_option
        self._request("POST", f"/pools/{self._q(pool_id)}/resize", body=body)

    def delete_pool(self, pool_id: str) -> None:
        """Delete a pool ("Pool - Delete"); its hosts return to the inventory."""
        self._request("DELETE", f"/pools/{self._q(pool_id)}")

    def enable_pool_auto_scale(self, pool_id: str, auto_scale_formula: str,
                               auto_scale_evaluation_interval: str | None = None) -> None:
        """Enable autoscale ("Pool - Enable Auto Scale"); the interval is ISO 8601 (``PT5M``)."""
        body = {"autoScaleFormula": auto_scale_formula}
        if auto_scale_evaluation_interval:
            body["autoScaleEvaluationInterval"] = auto_scale_evaluation_interval
        self._request("POST", f"/pools/{self._q(pool_id)}/enableautoscale", body=body)

    def disable_pool_auto_scale(self, pool_id: str) -> None:
        """Disable autoscale ("Pool - Disable Auto Scale")."""
        self._request("POST", f"/pools/{self._q(pool_id)}/disableautoscale")

    def evaluate_pool_auto_scale(self, pool_id: str, auto_scale_formula: str) -> dict[str, Any]:
        """Evaluate a formula without applying it ("Pool - Evaluate Auto Scale").

        Returns
        -------
        dict
            ``AutoScaleRun``: ``timestamp``, ``results`` (``$TargetDedicatedNodes=...;``),
            ``error``.
        """
        return self._request("POST", f"/pools/{self._q(pool_id)}/evaluateautoscale",
                             body={"autoScaleFormula": auto_scale_formula}).json()

    def list_nodes(self, pool_id: str, filter: str | None = None
                   ) -> list[ComputeNode]:
        """Return a pool's compute nodes ("Compute Node - List"), with an optional OData
        ``$filter``."""
        return [parse_model(wire_models().ComputeNode, n)
                for n in self.list_nodes_json(pool_id, filter)]

    def list_nodes_json(self, pool_id: str, filter: str | None = None,
                        select: str | None = None) -> list[Json]:
        """:meth:`list_nodes` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list(f"/pools/{self._q(pool_id)}/nodes",
                               {"$filter": filter, "$select": select}))

    def get_node(self, pool_id: str, node_id: str) -> ComputeNode:
        """Return one compute node ("Compute Node - Get")."""
        return parse_model(wire_models().ComputeNode, self.get_node_json(pool_id, node_id))

    def get_node_json(self, pool_id: str, node_id: str) -> Json:
        """:meth:`get_node` as wire JSON."""
        return self._get(f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}")

    def reboot_node(self, pool_id: str, node_id: str,
                    node_reboot_option: str | None = None) -> None:
        """Reboot a node ("Compute Node - Reboot"): requeue, terminate, taskcompletion or
        retaineddata."""
        body = {"nodeRebootOption": node_reboot_option} if node_reboot_option else None
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/reboot",
                      body=body)

    def reimage_node(self, pool_id: str, node_id: str,
                     node_reimage_option: str | None = None) -> None:
        """Reimage a node ("Compute Node - Reimage"): its root dir is wiped, then it reboots."""
        body = {"nodeReimageOption": node_reimage_option} if node_reimage_option else None
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/reimage",
                      body=body)

    def disable_node_scheduling(self, pool_id: str, node_id: str,
                                node_disable_scheduling_option: str | None = None) -> None:
        """Stop new tasks on a node ("Compute Node - Disable Scheduling")."""
        body = ({"nodeDisableSchedulingOption": node_disable_scheduling_option}
                if node_disable_scheduling_option else None)
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}"
                      "/disablescheduling", body=body)

    def enable_node_scheduling(self, pool_id: str, node_id: str) -> None:
        """Let a node take tasks again ("Compute Node - Enable Scheduling")."""
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}"
                      "/enablescheduling")

    def remove_nodes(self, pool_id: str, node_ids: Sequence[str],
                     node_deallocation_option: str | None = None) -> None:
        """Remove nodes from a pool ("Pool - Remove Nodes"); the target drops with them."""
        body: dict[str, Any] = {"nodeList": list(node_ids)}
        if node_deallocation_option:
            body["nodeDeallocationOption"] = node_deallocation_option
        self._request("POST", f"/pools/{self._q(pool_id)}/removenodes", body=body)

    def wait_for_pool(self, pool_id: str, timeout_s: float = 300.0,
                      poll_interval_s: float = 0.25) -> list[ComputeNode]:
        """Wait until a pool is steady and none of its nodes is still starting.

        Returns
        -------
        list of ComputeNode
            The nodes, in whatever final state each reached (``idle``, ``unusable`` ...).

        Raises
        ------
        TimeoutError
            After ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        settling = {"creating", "starting", "waitingforstarttask", "leavingpool", "rebooting",
                    "reimaging"}
        while True:
            pool = self.get_pool(pool_id)
            nodes = self.list_nodes(pool_id)
            if pool.allocation_state == "steady" and not any(n.state in settling for n in nodes):
                return nodes
            if time.monotonic() > deadline:
                states = ", ".join(f"{n.id}={n.state}" for n in nodes) or "no nodes"
                raise TimeoutError(f"pool {pool_id} did not settle within {timeout_s:g} s "
                                   f"({states})")
            time.sleep(poll_interval_s)

    # --------------------------------------------------------------- node files

    def list_node_files(self, pool_id: str, node_id: str,
                        recursive: bool = False) -> list[NodeFile]:
        """List files under a node's root dir ("File - List From Compute Node")."""
        return [parse_model(wire_models().NodeFile, f)
                for f in self.list_node_files_json(pool_id, node_id, recursive)]

    def list_node_files_json(self, pool_id: str, node_id: str, recursive: bool = False,
                             filter: str | None = None) -> list[Json]:
        """:meth:`list_node_files` as wire JSON (``$filter``: ``startswith(name, '...')``)."""
        path = f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/files"
        return list(self._list(path, {"recursive": str(recursive).lower(), "$filter": filter}))

    def download_node_file(self, pool_id: str, node_id: str, file_path: str,
                           destination: str | Path | None = None) -> bytes:
        """Download a file of a node, by path relative to its root ("File - Get From Compute Node").

        A subtask's output is at ``workitems/{job}/job-1/{task}/stdout.txt`` on its node
        (``SubtaskInformation.node_info.task_root_directory``).
        """
        path = (f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/files/"
                f"{quote(file_path, safe='/')}")
        return self._download(path, destination)

    def delete_node_file(self, pool_id: str, node_id: str, file_path: str,
                         recursive: bool = False) -> None:
        """Delete a file or directory under a node's root ("File - Delete From Compute Node")."""
        self._request("DELETE", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/files/"
                                f"{quote(file_path, safe='/')}",
                      params={"recursive": str(recursive).lower()})

    # --------------------------------------------------------------- node users

    def add_node_user(self, pool_id: str, node_id: str, user: Mapping[str, Any]) -> None:
        """Add a user to a node ("Compute Node - Add User"); ``user`` is ``ComputeNodeUser``
        JSON (``name``, ``isAdmin``, ``expiryTime``, ``password``, ``sshPublicKey``)."""
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/users",
                      body=user)

    def update_node_user(self, pool_id: str, node_id: str, user_name: str,
                         update: Mapping[str, Any]) -> None:
        """Replace a node user's ``password``, ``sshPublicKey`` and ``expiryTime``
        ("Compute Node - Update User"; one left out is removed or reset)."""
        self._request("PUT", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/users/"
                             f"{self._q(user_name)}", body=update)

    def delete_node_user(self, pool_id: str, node_id: str, user_name: str) -> None:
        """Delete a user added to a node ("Compute Node - Delete User")."""
        self._request("DELETE", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/users/"
                                f"{self._q(user_name)}")

    def get_remote_login_settings(self, pool_id: str, node_id: str) -> Json:
        """A node's SSH address and port ("Compute Node - Get Remote Login Settings")."""
        return self._get(f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}"
                         "/remoteloginsettings")
