"""``hpcbatch output``: job and task outputs saved by the Batch File Conventions,
read straight from storage (the service need not run)."""

from __future__ import annotations

import os
from datetime import UTC
from typing import Any

import click

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.client.cli.common import (
    Column,
    Decorator,
    destination_option,
    emit,
    filter_option,
    job_id_option,
    note,
    output_option,
    query_locally,
    save,
    select_option,
    state,
)
from hpcbatch.client.state import read_service_info

OUTPUT_COLUMNS: list[Column] = [
    ("Path", "path"), ("Size (bytes)", "sizeBytes"), ("Last modified", "lastModified"),
]


@click.group("output")
def output_group() -> None:
    """List and download job and task outputs saved by the Batch File Conventions.

    Outputs are read straight from storage (the service need not run): the URL
    of --storage-url, else $HPCBATCH_STORAGE_URL, else the storage of the
    state dir's service (its service.json). Azure storage (az://) takes its
    credentials from $AZURE_STORAGE_CONNECTION_STRING.
    """


storage_url_option: Decorator = click.option(
    "--storage-url", envvar="HPCBATCH_STORAGE_URL", show_envvar=True,
    help="Storage holding the outputs (file:///path, az://, s3://; default: the state dir's "
         "service's storage).")


def output_target_options(f: Any) -> Any:
    """``--job-id`` and ``--task-id``: whose outputs."""
    f = click.option("--task-id", help="The task whose outputs to read (without it: the "
                                       "job's own outputs).")(f)
    return job_id_option(f)


def open_output_storage(storage_url: str | None) -> Any:
    """The storage holding File Conventions outputs (a :class:`~hpcbatch.storage.fs.Storage`).

    Parameters
    ----------
    storage_url
        ``--storage-url``; None: the storage of the state dir's service (its
        ``service.json``).

    Raises
    ------
    HpcbatchError
        Code ``StorageNotConfigured``: no URL given and no ``service.json`` names one.
    """
    from hpcbatch.storage.fs import open_storage

    if not storage_url:
        sdir = state().service_dir
        storage_url = (read_service_info(sdir) or {}).get("storage_url")
        if not storage_url:
            raise HpcbatchError(
                f"no storage to read outputs from: give --storage-url or set "
                f"HPCBATCH_STORAGE_URL (no service.json naming one in {sdir})",
                code="StorageNotConfigured")
    return open_storage(storage_url)


def _output_storage(storage_url: str | None, job_id: str, task_id: str | None) -> Any:
    """The job's or task's output storage (``JobOutputStorage`` / ``TaskOutputStorage``)."""
    from hpcbatch.storage.conventions import JobOutputStorage, TaskOutputStorage

    storage = open_output_storage(storage_url)
    if task_id is None:
        return JobOutputStorage(storage, job_id)
    return TaskOutputStorage(storage, job_id, task_id)


def _output_kind(task_id: str | None, kind: str) -> Any:
    """``kind`` as a TaskOutputKind (with --task-id) or a JobOutputKind; a usage error if bad."""
    from hpcbatch.storage.conventions import JobOutputKind, TaskOutputKind
    from hpcbatch.storage.fs import StorageKeyError

    try:
        return (TaskOutputKind if task_id is not None else JobOutputKind)(kind)
    except StorageKeyError as exc:
        raise click.BadParameter(exc.message, param_hint="'--kind'") from None


def _standard_kinds(task_id: str | None) -> list[Any]:
    from hpcbatch.storage.conventions import JobOutputKind, TaskOutputKind

    if task_id is not None:
        return [TaskOutputKind.TaskOutput, TaskOutputKind.TaskPreview, TaskOutputKind.TaskLog,
                TaskOutputKind.TaskIntermediate]
    return [JobOutputKind.JobOutput, JobOutputKind.JobPreview]


@output_group.command("list")
@output_target_options
@click.option("--kind", help="Output kind: TaskOutput, TaskPreview, TaskLog, TaskIntermediate "
                             "(with --task-id), JobOutput, JobPreview, or a custom kind. "
                             "Default: every standard kind.")
@storage_url_option
@filter_option("startswith(path, 'results')")
@select_option("path,sizeBytes")
@output_option
def output_list(job_id: str, task_id: str | None, kind: str | None,
                storage_url: str | None, filter_: str | None, select: str | None) -> None:
    """List a task's outputs (with --task-id) or a job's outputs."""
    outputs = _output_storage(storage_url, job_id, task_id)
    kinds = [_output_kind(task_id, kind)] if kind else _standard_kinds(task_id)
    rows = [{"kind": k.text, "path": f.path, "sizeBytes": f.size_bytes,
             "lastModified": (f.last_modified.astimezone(UTC).isoformat()
                              .replace("+00:00", "Z") if f.last_modified else None),
             "url": f.url}
            for k in kinds for f in outputs.list_outputs(k)]
    rows = query_locally(rows, filter_, select)
    names = [n.strip() for n in select.split(",") if n.strip()] if select else []
    emit(rows, [(n, n) for n in names] if names
         else OUTPUT_COLUMNS if kind else [("Kind", "kind"), *OUTPUT_COLUMNS])


@output_group.command("download")
@output_target_options
@click.option("--kind", required=True, help="Output kind, e.g. TaskOutput, TaskLog, JobOutput.")
@click.option("--path", "path", required=True,
              help="The output's path under its kind, e.g. stdout.txt.")
@destination_option
@storage_url_option
def output_download(job_id: str, task_id: str | None, kind: str, path: str, destination: str,
                    storage_url: str | None) -> None:
    """Download one output of a task (with --task-id) or of a job."""
    outputs = _output_storage(storage_url, job_id, task_id)
    kind_ = _output_kind(task_id, kind)
    if destination == "-":
        save(outputs.get_bytes(kind_, path), destination)
    else:
        outputs.download(kind_, path, destination)
        note(f"wrote {os.path.getsize(destination)} bytes to {destination}")
