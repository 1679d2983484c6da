"""Task operations of :class:`~hpcbatch.client.sdk.BatchClient`: Task - *, File - * From Task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hpcbatch.client.rest import (
    BatchError,
    Json,
    RestClient,
    parse_model,
    to_wire,
    wire_models,
)

if TYPE_CHECKING:
    from hpcbatch.batch.models import (
        NodeFile,
        SubtaskInformation,
        Task,
        TaskAddResult,
    )


class TaskOperations(RestClient):
    """Task, subtask and task file operations (a mixin of ``BatchClient``)."""

    # -------------------------------------------------------------------- tasks

    def create_task(self, job_id: str, task: Any) -> str | None:
        """Add one task ("Task - Add"); return its ``ETag`` (for :meth:`wait_task_json`)."""
        resp = self._request("POST", f"/jobs/{self._q(job_id)}/tasks", body=task)
        etag = resp.headers.get("ETag")
        return str(etag).strip('"') if etag else None

    def create_tasks(self, job_id: str, tasks: Iterable[Any], *, max_workers: int = 4,
                     raise_on_error: bool = True) -> list[TaskAddResult]:
        """Add many tasks ("Task - Add Collection"), 100 per request, requests in parallel.

        Parameters
        ----------
        job_id
            The job.
        tasks
            Task specifications (models or JSON); any number.
        max_workers
            Requests sent at once.
        raise_on_error
            Raise :class:`BatchError` naming the first rejected task (after all
            chunks were sent; accepted tasks stay accepted).

        Returns
        -------
        list of TaskAddResult
            One per task, in input order.
        """
        from concurrent.futures import ThreadPoolExecutor

        from hpcbatch.batch.limits import MAX_TASKS_PER_COLLECTION

        items = [to_wire(t) for t in tasks]
        chunks = [items[i:i + MAX_TASKS_PER_COLLECTION]
                  for i in range(0, len(items), MAX_TASKS_PER_COLLECTION)]
        path = f"/jobs/{self._q(job_id)}/addtaskcollection"

        def send(chunk: list[Any]) -> list[dict[str, Any]]:
            try:
                return self._request("POST", path, body={"value": chunk}).json()["value"]
            except BatchError as exc:  # over Batch's 1 MiB request limit: halve, as Azure's SDKs do
                if exc.code != "RequestBodyTooLarge" or len(chunk) == 1:
                    raise
                half = len(chunk) // 2
                return send(chunk[:half]) + send(chunk[half:])

        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(chunks) or 1))) as pool:
            sent = pool.map(send, chunks)
            # The models are built (~0.2 s, once) while the first requests are on their
            # way: the service starts the first tasks meanwhile.
            models = wire_models()
            replies = list(sent)
        results = [parse_model(models.TaskAddResult, r) for reply in replies for r in reply]
        bad = [r for r in results if r.status != "success"]
        if bad and raise_on_error:
            err = bad[0].error or {}
            raise BatchError(
                f"{len(bad)} of {len(results)} tasks were rejected; first: task "
                f"{bad[0].task_id}: {err.get('message', {}).get('value', err)}",
                code=err.get("code", "TaskAddFailed"), status=400)
        return results

    def get_task(self, job_id: str, task_id: str, select: str | None = None) -> Task:
        """Return a task ("Task - Get"); with ``select``, only the selected properties."""
        return parse_model(wire_models().Task, self.get_task_json(job_id, task_id, select),
                      partial=bool(select))

    def get_task_json(self, job_id: str, task_id: str, select: str | None = None) -> Json:
        """:meth:`get_task` as wire JSON."""
        return self._get(f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}",
                         {"$select": select})

    def wait_task_json(self, job_id: str, task_id: str, etag: str | None,
                       wait_s: float) -> Json | None:
        """Wait until a task differs from the version ``etag`` names; return it, or None.

        A long poll (hpcbatch extension of "Task - Get": ``If-None-Match`` with
        ``Prefer: wait=N``): the service answers as soon as the task's ETag
        changes (its state, its execution information), or after ``wait_s``.

        Parameters
        ----------
        job_id, task_id
            The task.
        etag
            The ETag of the version the caller has; None returns the task at once.
        wait_s
            Seconds the service waits at most (it caps them at 60).

        Returns
        -------
        dict or None
            The task's wire JSON, or None when it still has ``etag`` after ``wait_s``.

        Raises
        ------
        BatchError
            ``TaskNotFound``, ``JobNotFound``.
        """
        path = f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}"
        if etag is None:
            return self._get(path)
        resp = self._request("GET", path, headers={"If-None-Match": f'"{etag}"',
                                                   "Prefer": f"wait={wait_s:g}"})
        if resp.status == 304:
            return None
        data: Json = resp.json()
        data.pop("odata.metadata", None)
        return data

    def list_tasks(self, job_id: str, filter: str | None = None,
                   select: str | None = None, max_results: int | None = None) -> list[Task]:
        """Return a job's tasks ("Task - List"), with OData ``$filter`` and ``$select``.

        With ``select``, the returned models hold only the selected properties.
        """
        return [parse_model(wire_models().Task, t, partial=bool(select))
                for t in self.list_tasks_json(job_id, filter, select, max_results)]

    def list_tasks_json(self, job_id: str, filter: str | None = None,
                        select: str | None = None, max_results: int | None = None) -> list[Json]:
        """:meth:`list_tasks` as wire JSON (with ``select``, only the selected properties)."""
        params = {"$filter": filter, "$select": select, "maxresults": max_results}
        return list(self._list(f"/jobs/{self._q(job_id)}/tasks", params))

    def update_task(self, job_id: str, task_id: str,
                    constraints: Mapping[str, Any] | None = None) -> None:
        """Replace a task's constraints ("Task - Update"), e.g.
        ``{"maxTaskRetryCount": 3, "retentionTime": "P1D"}``; None gives the defaults."""
        body = {"constraints": dict(constraints)} if constraints is not None else {}
        self._request("PUT", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}", body=body)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        """Terminate a task ("Task - Terminate")."""
        self._request("POST", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/terminate")

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        """Reactivate a failed task ("Task - Reactivate")."""
        self._request("POST", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/reactivate")

    def delete_task(self, job_id: str, task_id: str) -> None:
        """Delete a task ("Task - Delete")."""
        self._request("DELETE", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}")

    def list_task_files(self, job_id: str, task_id: str, recursive: bool = False) -> list[NodeFile]:
        """List files of a task's directory ("File - List From Task")."""
        return [parse_model(wire_models().NodeFile, f)
                for f in self.list_task_files_json(job_id, task_id, recursive)]

    def list_task_files_json(self, job_id: str, task_id: str, recursive: bool = False,
                             filter: str | None = None) -> list[Json]:
        """:meth:`list_task_files` as wire JSON (``$filter``: ``startswith(name, '...')``)."""
        path = f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/files"
        return list(self._list(path, {"recursive": str(recursive).lower(), "$filter": filter}))

    def download_task_file(self, job_id: str, task_id: str, file_path: str,
                           destination: str | Path | None = None, *,
                           offset_bytes: int = 0) -> bytes:
        """Download a file of a task ("File - Get From Task"), e.g. ``stdout.txt``.

        Parameters
        ----------
        file_path
            Path relative to the task directory (``stdout.txt``, ``wd/out.csv``).
        destination
            When given, the bytes are also written to this local file (its missing
            folders are made).
        offset_bytes
            First byte to return (``ocp-range: bytes={offset_bytes}-``): to read
            what a running task appended since the last read.

        Returns
        -------
        bytes
            The file's content (from ``offset_bytes`` on).
        """
        path = (f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/files/"
                f"{quote(file_path, safe='/')}")
        headers = {"ocp-range": f"bytes={offset_bytes}-"} if offset_bytes else None
        return self._download(path, destination, headers)

    def list_subtasks(self, job_id: str, task_id: str) -> list[SubtaskInformation]:
        """List the subtasks of a multi-instance task ("Task - List Subtasks")."""
        return [parse_model(wire_models().SubtaskInformation, s)
                for s in self.list_subtasks_json(job_id, task_id)]

    def list_subtasks_json(self, job_id: str, task_id: str,
                           select: str | None = None) -> list[Json]:
        """:meth:`list_subtasks` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list(f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/subtasksinfo",
                               {"$select": select}))

    def delete_task_file(self, job_id: str, task_id: str, file_path: str,
                         recursive: bool = False) -> None:
        """Delete a file or directory of a task's directory ("File - Delete From Task");
        without ``recursive`` a directory must be empty (``DirectoryNotEmpty``)."""
        self._request("DELETE", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/files/"
                                f"{quote(file_path, safe='/')}",
                      params={"recursive": str(recursive).lower()})
