"""Compute nodes: "Compute Node - List/Get/Reboot/Reimage/Disable/Enable Scheduling/Add User/
Update User/Delete User", "Pool - Remove Nodes"."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    HpcbatchError,
    InvalidPropertyValueError,
    NotFoundError,
)
from hpcbatch.batch.identity import POOL_AUTO_USER, TASK_USER_PREFIX
from hpcbatch.batch.models import NodeRemove
from hpcbatch.batch.states import NODE_IN_TRANSITION, ComputeNodeState, SchedulingState
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.core.pools import check_steady
from hpcbatch.core.rows import check_not_deleting, pool_node, pool_row
from hpcbatch.store.database import (
    Store,
    dumps,
    loads,
    pools,
)

if TYPE_CHECKING:
    from hpcbatch.core.runs import Runs

log = logging.getLogger(__name__)

NODE_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
"""A node user's name: a portable Linux user name (lowercase, at most 32 characters)."""
DEFAULT_USER_EXPIRY = timedelta(days=1)
"""A node user's ``expiryTime`` when none is given: one day from now (Batch's default)."""
_USER_OPERATIONS = {"add_user": "Compute Node - Add User",
                    "update_user": "Compute Node - Update User",
                    "delete_user": "Compute Node - Delete User"}


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
        return pool_node(self.ctx, pool_id, node_id).to_wire(self.ctx.base_url)

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
        node = pool_node(self.ctx, pool_id, node_id)
        name = "nodeReimageOption" if reimage else "nodeRebootOption"
        option = self._option(name, option, ("requeue", "terminate", "taskcompletion",
                                             "retaineddata"), "requeue")
        if node.state in NODE_IN_TRANSITION:
            raise ConflictError(f"Node {node_id} is {node.state} and cannot be "
                                f"{'reimaged' if reimage else 'rebooted'} now.",
                                code="NodeNotReady")
        self.ctx.pool_manager.set_state(
            node, ComputeNodeState.reimaging if reimage else ComputeNodeState.rebooting)
        self.ctx.background(self._restart_node(node, option, reimage))

    async def _restart_node(self, node: NodeRuntime, option: str, reimage: bool) -> None:
        await self.runs.drain(node, option)
        if reimage:  # a reimaged node starts without the users added to it
            await self.drop_node_users(node)
        await self.ctx.pool_manager.provisioning.restart(node, wipe=reimage)

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
        node = pool_node(self.ctx, pool_id, node_id)
        how = "" if enabled else self._option(
            "nodeDisableSchedulingOption", option, ("requeue", "terminate", "taskcompletion"),
            "requeue")
        target = SchedulingState.enabled if enabled else SchedulingState.disabled
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
        nodes_ = [pool_node(self.ctx, pool_id, n) for n in params.node_list]
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

    async def node_user_call(self, pool_id: str, node_id: str, op: str,
                             args: Mapping[str, Any]) -> None:
        """Add, update or delete a user on a node through its agent
        (:mod:`hpcbatch.execution.node_users`): "Compute Node - Add User" (REST ``POST
        .../nodes/{nodeId}/users``), "Update User" (``PUT .../users/{userName}``),
        "Delete User" (``DELETE .../users/{userName}``).

        Parameters
        ----------
        pool_id, node_id
            The node; it must be idle or running (its agent does the work).
        op
            ``add_user``, ``update_user`` or ``delete_user``.
        args
            The agent's arguments (:func:`node_user_request`; ``{"name"}`` to delete).

        Raises
        ------
        ConflictError
            ``NodeNotReady`` (the node is not idle or running); ``NodeUserExists``
            (Add User of a name the host already has).
        NotFoundError
            ``NodeUserNotFound``: no user of that name was added to the node.
        HpcbatchError
            ``400 FeatureNotSupported``: the node's agent cannot manage accounts
            (it does not run as root: the host is neither logged into as root nor
            ``sudo: true``), or ``isAdmin`` on a host without an admin group.
        """
        node = pool_node(self.ctx, pool_id, node_id)
        if node.state not in (ComputeNodeState.idle, ComputeNodeState.running) or not node.worker:
            raise ConflictError(f"Node {node_id} is {node.state}; users can be managed only on "
                                "an idle or running node.", code="NodeNotReady")
        reply = await self.ctx.engine.call(node.worker, op, **args)
        code = (reply or {}).get("code") if isinstance(reply, dict) else None
        if not code:
            return
        message = f"Node {node_id}: {reply.get('message')}."
        values = {"UserName": str(args.get("name"))}
        if code == "NodeUserExists":
            raise ConflictError(message, code=code, values=values)
        if code == "NodeUserNotFound":
            raise NotFoundError(message, code=code, values=values)
        raise HpcbatchError(f"The Batch operation '{_USER_OPERATIONS[op]}' is not supported on "
                            f"this node: {reply.get('message')}.", code="FeatureNotSupported",
                            status=400, values={"Operation": _USER_OPERATIONS[op],
                                                "Reason": str(code)})

    async def drop_node_users(self, node: NodeRuntime) -> None:
        """Delete every user added to a node (it leaves its pool or is reimaged): no account
        made for remote login outlives the node on its host. A failure is logged."""
        if not node.worker:
            return
        try:
            await self.ctx.engine.call(node.worker, "delete_all_users")
        except Exception as exc:  # noqa: BLE001 - the node leaves anyway; say so
            log.warning("node %s: its users could not be deleted: %s", node.node_id, exc)

    async def remove_node(self, node: NodeRuntime, option: str) -> None:
        self.ctx.pool_manager.mark_removing(node)
        await self.runs.drain(node, option)
        await self.ctx.pool_manager.provisioning.remove_node(node)


def node_user_request(body: Mapping[str, Any], *, name: str | None = None,
                      now: datetime | None = None) -> dict[str, Any]:
    """Check a ``ComputeNodeUser`` (Add User) or ``NodeUpdateUserParameter`` (Update User)
    body; return the node agent's arguments.

    Parameters
    ----------
    body
        The request's JSON: ``name`` (Add User only), ``isAdmin``, ``expiryTime``
        (ISO 8601; default one day from now), ``password``, ``sshPublicKey``
        (OpenSSH format).
    name
        The user's name from the path (Update User); None: ``body["name"]``.
    now
        The current time (tests).

    Returns
    -------
    dict
        ``name``, ``is_admin``, ``expiry`` (ISO 8601, UTC), ``password``,
        ``ssh_public_key``.

    Raises
    ------
    BadRequestError
        ``MissingRequiredProperty`` (``name``), ``InvalidPropertyValue`` naming
        the property and what is allowed.
    """
    now = now or datetime.now(UTC)
    user = body.get("name") if name is None else name
    if name is None and not user:
        raise BadRequestError("The property name is required.", code="MissingRequiredProperty",
                              values={"PropertyName": "name"})
    if (not isinstance(user, str) or not NODE_USER_NAME.fullmatch(user)
            or user.startswith(TASK_USER_PREFIX) or user == POOL_AUTO_USER):
        raise InvalidPropertyValueError(
            "name", user, "a node user's name is 1-32 characters a-z, 0-9, _ and -, starting "
                          f"with a letter or _, and neither {POOL_AUTO_USER} nor starting "
                          f"{TASK_USER_PREFIX} (the pool's own users)")
    is_admin = body.get("isAdmin", False)
    if not isinstance(is_admin, bool):
        raise InvalidPropertyValueError("isAdmin", is_admin, "true or false")
    expiry_text = body.get("expiryTime")
    if expiry_text is None:
        expiry = now + DEFAULT_USER_EXPIRY
    else:
        try:
            expiry = datetime.fromisoformat(str(expiry_text))
        except ValueError:
            raise InvalidPropertyValueError("expiryTime", expiry_text,
                                            "an ISO 8601 date and time") from None
        expiry = expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)
        if expiry <= now:
            raise InvalidPropertyValueError("expiryTime", expiry_text, "it must be in the future")
    password = body.get("password")
    if password is not None and (not isinstance(password, str) or "\n" in password
                                 or "\r" in password):
        raise InvalidPropertyValueError("password", "***", "a string without line breaks")
    key = body.get("sshPublicKey")
    if key is not None:
        _check_ssh_public_key(key)
    return {"name": user, "is_admin": is_admin,
            "expiry": expiry.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "password": password or None, "ssh_public_key": key or None}


def _check_ssh_public_key(key: object) -> None:
    """Raise ``InvalidPropertyValue`` (sshPublicKey) unless ``key`` is one OpenSSH public key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    reason = "one public key in OpenSSH format (ssh-ed25519 AAAA..., ssh-rsa AAAA...)"
    if not isinstance(key, str) or "\n" in key.strip() or "\r" in key:
        raise InvalidPropertyValueError("sshPublicKey", str(key)[:64], reason)
    try:
        load_ssh_public_key(key.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidPropertyValueError("sshPublicKey", key[:64], reason) from None
