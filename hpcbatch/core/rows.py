"""Reading one resource's row, or Batch's NotFound error: the one helper every part uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch.errors import ConflictError, not_found
from hpcbatch.batch.models import without_passwords
from hpcbatch.batch.states import JobState, PoolState
from hpcbatch.store.database import Store, jobs, loads, pools, tasks

if TYPE_CHECKING:
    from hpcbatch.core.context import ServiceContext
    from hpcbatch.core.node_runtime import NodeRuntime


def returned_spec(row: Mapping[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pool's, job's, job schedule's or task's stored specification as Get/List return it.

    The store keeps what the client sent, passwords included (the nodes need them:
    ``userAccounts``, ``containerRegistries``, ``containerSettings.registry``); Batch
    never returns one (:func:`hpcbatch.batch.models.without_passwords`).

    Parameters
    ----------
    row
        The resource's row; its ``spec`` column holds the JSON text.
    spec
        That text already decoded (kept unchanged), if the caller has it.

    Returns
    -------
    dict
        The decoded specification without ``password`` properties (walked only when
        its text holds the word: a Task - List stays one ``json.loads`` a task).
    """
    text = row["spec"]
    decoded: dict[str, Any] = loads(text) if spec is None else spec
    return without_passwords(decoded) if "password" in text else decoded


def pool_row(conn: sa.Connection, pool_id: str) -> Mapping[str, Any]:
    """Return a pool's row. Raises ``PoolNotFound``."""
    row = Store.fetch_one(conn, pools, key=pool_id.lower())
    if row is None:
        raise not_found("Pool", pool_id)
    return row


def pool_node(ctx: ServiceContext, pool_id: str, node_id: str) -> NodeRuntime:
    """Return a pool's live node (IDs matched case-insensitively).

    Parameters
    ----------
    ctx
        The service context (its store and pool manager).
    pool_id, node_id
        The pool and the node, as a request names them.

    Raises
    ------
    NotFoundError
        ``PoolNotFound``; ``NodeNotFound`` (the pool has no such node).
    """
    with ctx.store.read() as conn:
        row = pool_row(conn, pool_id)
    node = ctx.pool_manager.node(row["key"], node_id)
    if node is None:
        raise not_found("Node", node_id)
    return node


def job_row(conn: sa.Connection, job_id: str) -> Mapping[str, Any]:
    """Return a job's row. Raises ``JobNotFound``."""
    row = Store.fetch_one(conn, jobs, key=job_id.lower())
    if row is None:
        raise not_found("Job", job_id)
    return row


def task_row(conn: sa.Connection, job_key: str, task_id: str) -> Mapping[str, Any]:
    """Return a task's row within a job (``job_key``: the job's lower-cased ID). Raises ``TaskNotFound``."""
    row = Store.fetch_one(conn, tasks, job_key=job_key, key=task_id.lower())
    if row is None:
        raise not_found("Task", task_id)
    return row


def check_job_open(row: Mapping[str, Any]) -> None:
    """Raise Batch's error for adding to or reactivating in a job that is ending.

    Raises
    ------
    ConflictError
        ``JobCompleted``, ``JobBeingTerminated`` or ``JobBeingDeleted``.
    """
    if row["state"] == JobState.completed:
        raise ConflictError("The specified job is already in a completed state.",
                            code="JobCompleted")
    if row["state"] in (JobState.terminating, JobState.deleting):
        raise ConflictError(f"The specified job is in the {row['state']} state.",
                            code="JobBeingTerminated" if row["state"] == JobState.terminating
                            else "JobBeingDeleted")


def node_info(base_url: str, pool_id: str, node_id: str, task_root: str) -> dict[str, Any]:
    """Return Batch's ``ComputeNodeInformation`` for a task (or subtask) that ran on a node.

    Parameters
    ----------
    base_url
        The service endpoint.
    pool_id, node_id
        Where the task ran.
    task_root
        The task's directory relative to the node's root (``workitems/{job}/job-1/{task}``).
    """
    node_url = f"{base_url}/pools/{pool_id}/nodes/{node_id}"
    return {"affinityId": f"TVM:{node_id}", "nodeUrl": node_url, "poolId": pool_id,
            "nodeId": node_id, "taskRootDirectory": task_root,
            "taskRootDirectoryUrl": f"{node_url}/files/{task_root}"}

def check_not_deleting(row: Mapping[str, Any]) -> None:
    """Refuse a change of a deleting pool.

    "If you call an Update, Patch or Delete API on a Pool in the deleting state,
    it will fail with HTTP status code 409 with error code PoolBeingDeleted"
    (REST Pool - Delete).

    Parameters
    ----------
    row
        The pool's record (``state``).

    Raises
    ------
    ConflictError
        ``PoolBeingDeleted`` (409).
    """
    if row["state"] == PoolState.deleting:
        raise ConflictError("The specified pool is being deleted.", code="PoolBeingDeleted")
