"""Files on nodes: "File - List/Get/Delete From Compute Node" and "File - List/Get/Delete
From Task"."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from hpcbatch.batch.errors import (
    ConflictError,
    NotFoundError,
    not_found,
)
from hpcbatch.batch.wire import iso
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.rows import job_row, pool_node, task_row
from hpcbatch.execution.environment import SECRETS_DIR, task_dir

log = logging.getLogger(__name__)


class NodeFiles:
    """Read node and task files through the node's agent.

    Parameters
    ----------
    ctx
        The service context.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _node_worker(self, pool_id: str, node_id: str) -> str:
        """Return the Dask worker address of a node that can serve files."""
        node = pool_node(self.ctx, pool_id, node_id)
        if not node.worker:
            raise ConflictError(f"Node {node_id} is {node.state}; its files cannot be read.",
                                code="NodeNotReady")
        return node.worker

    async def list_node_files(self, pool_id: str, node_id: str, path: str = "",
                              recursive: bool = False) -> list[dict[str, Any]]:
        """List files under a node's root dir ("File - List From Compute Node").

        The node's secrets folder (``secrets/``) is not a node file: a listing
        never shows it and listing it gives no files, as for a folder that does
        not exist (the agent enforces it, :meth:`NodeFiles.list_files
        <hpcbatch.execution.node_files.NodeFiles.list_files>`).
        """
        worker = self._node_worker(pool_id, node_id)
        rel = _safe_node_rel(path) if path else ""
        entries = await self.ctx.engine.list_files(worker, rel, recursive)
        base = f"{self.ctx.node_url(pool_id, node_id)}/files"
        return [_file_wire(e, f"{rel}/{e['name']}".lstrip("/"), base) for e in entries]

    async def get_node_file(self, pool_id: str, node_id: str, path: str, offset: int = 0,
                            length: int | None = None) -> bytes:
        """Return a file under a node's root dir ("File - Get From Compute Node").

        Raises
        ------
        NotFoundError
            ``FileNotFound`` (404), Batch's answer for a path that is not a node
            file: also for a path that leaves the node root, or that is or
            resolves (through ``..`` or links) into the node's secrets folder.
        """
        worker = self._node_worker(pool_id, node_id)
        data = await self.ctx.engine.read_file(worker, _safe_node_rel(path), offset, length)
        if data is None:
            raise not_found("File", path)
        return data

    def _task_location(self, job_id: str, task_id: str) -> tuple[str, str]:
        """Return the worker address of the node that ran a task, and the task's directory."""
        with self.ctx.store.read() as conn:
            job = job_row(conn, job_id)
            row = task_row(conn, job["key"], task_id)
        if not row["node_id"]:
            raise ConflictError(
                f"Task {task_id} has not run on a node yet, so it has no files.",
                code="OperationInvalidForCurrentState")
        node = self.ctx.pool_manager.node((row["pool_key"] or "").lower(), row["node_id"])
        if node is None or not node.worker:
            raise NotFoundError(
                f"The node {row['node_id']} that ran task {task_id} is not available "
                "(it left the pool or is not running).", code="NodeNotFound",
                values={"NodeId": row["node_id"]})
        return node.worker, task_dir(job["id"], row["id"])

    async def list_task_files(self, job_id: str, task_id: str,
                              recursive: bool = False) -> list[dict[str, Any]]:
        """List the files of a task's directory on its node ("File - List From Task")."""
        worker, tdir = self._task_location(job_id, task_id)
        entries = await self.ctx.engine.list_files(worker, tdir, recursive)
        base = f"{self.ctx.base_url}/jobs/{job_id}/tasks/{task_id}/files"
        return [_file_wire(e, e["name"], base) for e in entries]

    async def get_task_file(self, job_id: str, task_id: str, path: str, offset: int = 0,
                            length: int | None = None) -> bytes:
        """Return a file of a task's directory ("File - Get From Task").

        Raises
        ------
        NotFoundError
            ``FileNotFound`` (also for a path that leaves the task directory).
        """
        worker, tdir = self._task_location(job_id, task_id)
        data = await self.ctx.engine.read_file(worker, f"{tdir}/{_safe_rel(path)}", offset,
                                               length)
        if data is None:
            raise not_found("File", path)
        return data

    async def delete_node_file(self, pool_id: str, node_id: str, path: str,
                               recursive: bool = False) -> None:
        """Delete a file or directory under a node's root dir ("File - Delete From Compute
        Node", REST ``DELETE /pools/{poolId}/nodes/{nodeId}/files/{filePath}``).

        Parameters
        ----------
        pool_id, node_id
            The node.
        path
            The file's path relative to the node root.
        recursive
            Delete a directory and everything under it (else only an empty one).

        Raises
        ------
        NotFoundError
            ``FileNotFound``: no such node file, or a path that leaves the node
            root or is (or resolves into) the node's secrets folder.
        ConflictError
            ``DirectoryNotEmpty`` (409): a directory with entries, ``recursive``
            not set.
        """
        worker = self._node_worker(pool_id, node_id)
        await self._delete(worker, _safe_node_rel(path), path, recursive)

    async def delete_task_file(self, job_id: str, task_id: str, path: str,
                               recursive: bool = False) -> None:
        """Delete a file or directory of a task's directory on the node that ran it
        ("File - Delete From Task", REST ``DELETE /jobs/{jobId}/tasks/{taskId}/files/{filePath}``).

        Parameters and errors as :meth:`delete_node_file`; a path that leaves
        the task directory is not found.
        """
        worker, tdir = self._task_location(job_id, task_id)
        rel = _safe_rel(path)
        if not rel:
            raise not_found("File", path)
        await self._delete(worker, f"{tdir}/{rel}", path, recursive)

    async def remove_dirs(self, places: Iterable[tuple[str, str, str]]) -> int:
        """Remove directories on nodes, one call per node: task directories whose
        ``retentionTime`` elapsed, and those of deleted tasks and jobs.

        Batch: "When a Task is deleted, all of the files in its directory on the Compute
        Node where it ran are also deleted (regardless of the retention time)" (REST
        Task - Delete); Job - Delete deletes all the job's tasks.

        Parameters
        ----------
        places
            ``(pool_key, node_id, rel_dir)``: a node of a pool and a directory relative to
            its root (``workitems/{job}`` or a task directory). A node no longer in the
            pool, or whose worker is not connected, is skipped.

        Returns
        -------
        int
            How many of the directories existed and were removed. A node that fails is
            logged (with its node ID and the error) and skipped; nothing is raised.
        """
        by_worker: dict[str, tuple[str, list[str]]] = {}
        for pool_key, node_id, rel in places:
            node = self.ctx.pool_manager.node(pool_key.lower(), node_id)
            if node is not None and node.worker:
                dirs = by_worker.setdefault(node.worker, (node.node_id, []))[1]
                if rel not in dirs:
                    dirs.append(rel)
        removed = 0
        for worker, (node_id, dirs) in by_worker.items():
            try:
                removed += await self.ctx.engine.remove_dirs(worker, dirs)
            except Exception as exc:  # noqa: BLE001 - logged; the other nodes are cleaned up
                log.warning("cannot remove %s on node %s: %s", ", ".join(dirs), node_id, exc)
        return removed

    async def _delete(self, worker: str, rel: str, path: str, recursive: bool) -> None:
        """Delete ``rel`` (node-root relative) on the node (:func:`hpcbatch.execution.
        file_delete.delete_path`); map its answer to Batch's errors."""
        result = await self.ctx.engine.call(worker, "delete_file", rel_path=rel,
                                            recursive=recursive)
        if result == "missing":
            raise not_found("File", path)
        if result == "not_empty":
            raise ConflictError(
                f"The directory {path} is not empty; set recursive=true to delete it with "
                "everything in it.", code="DirectoryNotEmpty", values={"FilePath": path})


def _safe_rel(path: str) -> str:
    """Normalise a client-given relative path; one that leaves its folder is not found."""
    norm = os.path.normpath(path.lstrip("/")) if path.strip("/") else ""
    if norm.startswith("..") or os.path.isabs(norm):
        raise not_found("File", path)
    return "" if norm == "." else norm



def _safe_node_rel(path: str) -> str:
    """:func:`_safe_rel` for a node file: the node's secrets folder is not found either."""
    norm = _safe_rel(path)
    if norm.split("/", 1)[0] == SECRETS_DIR:
        raise not_found("File", path)
    return norm


def _wire_time(posix_s: float) -> str | None:
    return iso(datetime.fromtimestamp(posix_s, UTC).replace(tzinfo=None))


def file_mode(st_mode: int) -> str:
    """A file's ``st_mode`` as Batch's ``fileMode`` on Linux nodes: ``0o100644`` for a file,
    ``0o40755`` for a directory (octal, type bits included)."""
    return f"0o{st_mode:o}"


def _file_wire(entry: Mapping[str, Any], name: str, base: str) -> dict[str, Any]:
    """Return Batch ``NodeFile`` JSON for an agent's file entry.

    Every entry, a directory too, carries its own ``properties``: ``lastModified`` (its
    modification time), ``creationTime`` (its inode's change time: Linux keeps no creation
    time in ``stat``), ``fileMode`` (its own mode, ``0o40755`` for a directory) and
    ``contentLength`` (0 for a directory).
    """
    is_dir = bool(entry["isDirectory"])
    props: dict[str, Any] = {
        "lastModified": _wire_time(entry["mtime"]),
        "contentLength": 0 if is_dir else entry["size_bytes"],
    }
    if entry.get("ctime") is not None:
        props["creationTime"] = _wire_time(entry["ctime"])
    if entry.get("mode") is not None:
        props["fileMode"] = file_mode(entry["mode"])
    if not is_dir:
        props["contentType"] = "application/octet-stream"
    return {"name": name, "url": f"{base}/{name}", "isDirectory": is_dir, "properties": props}
