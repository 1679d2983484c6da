"""``hpcbatch mpi run``: an MPI program as a multi-instance task, its output streamed."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.client.cli.common import (
    as_json,
    client,
    emit,
    note,
    output_option,
    pool_id_option,
    status,
)
from hpcbatch.execution.mpi import FLAVORS, batch_command_line

MPI_STREAM_INTERVAL_S = 0.5
"""Seconds between two reads of a running task's stdout.txt in ``mpi run`` (its state
changes are seen at once: the task is long-polled)."""

MPI_WAIT_S = 20.0
"""Seconds one long poll of a task that is not running waits at most."""


@click.group()
def mpi() -> None:
    """Run MPI programs as multi-instance tasks."""


def _read_task_file_from(job_id: str, task_id: str, file_path: str, offset: int) -> bytes | None:
    """Bytes of a task's file from ``offset`` on ("File - Get From Task" with ``ocp-range``).

    Returns None when the file is not there (yet): the task has not reached a
    node, has not written it, or its node is gone.
    """
    from hpcbatch.client.sdk import BatchError

    try:
        return client().download_task_file(job_id, task_id, file_path, offset_bytes=offset)
    except BatchError as exc:
        if exc.code in ("FileNotFound", "OperationInvalidForCurrentState", "NodeNotFound"):
            return None
        raise


def _ensure_job(job_id: str, pool_id: str) -> bool:
    """Create job ``job_id`` on ``pool_id``, or check that the existing one is active there.

    Returns True when the job was created. Raises ``PoolNotFound`` (before creating
    anything) for a pool that does not exist: its task would wait for nodes forever.
    """
    from hpcbatch.client.sdk import BatchError

    c = client()
    try:
        job = c.get_job_json(job_id)
    except BatchError as exc:
        if exc.code != "JobNotFound":
            raise
        c.get_pool_json(pool_id)
        try:
            c.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
            note(f"created job {job_id}")
            return True
        except BatchError as exc2:
            if exc2.code != "JobExists":
                raise
        job = c.get_job_json(job_id)
    if job.get("state") != "active":
        raise HpcbatchError(f"job {job_id} is {job.get('state')}, not active; give another "
                            "--job-id (or none)", code="JobNotActive", values={"JobId": job_id})
    job_pool = (job.get("poolInfo") or {}).get("poolId")
    if job_pool != pool_id:
        raise HpcbatchError(f"job {job_id} runs on pool {job_pool}, not {pool_id}",
                            code="JobPoolMismatch", values={"JobId": job_id})
    c.get_pool_json(pool_id)  # deleted since the job was made
    return False


def _exit_status(code: int | None, failed: bool) -> int:
    """Process exit status for a task's exit code (1 when it has none, or failed with 0)."""
    if code is None or (failed and code == 0):
        return 1
    return code if 0 <= code <= 255 else 1


@mpi.command("run", context_settings={"ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
@pool_id_option
@click.option("--nodes", type=click.IntRange(min=1), required=True,
              help="Nodes to run on (the task's numberOfInstances).")
@click.option("--ppn", type=click.IntRange(min=1), default=1, show_default=True,
              help="MPI processes (ranks) per node.")
@click.option("--mpi", "flavor", type=click.Choice(FLAVORS), default="mpich", show_default=True,
              help="MPI implementation: mpich (mpiexec), openmpi (mpirun), "
                   "intelmpi (mpiexec.hydra).")
@click.option("--launcher", metavar="PATH",
              help="The MPI launcher to run, a path or a name looked up on the task's PATH "
                   "(the node Python's bin directory first, then the inventory env's PATH). "
                   "[default: mpiexec, mpirun or mpiexec.hydra by --mpi]")
@click.option("--job-id", help="Job to add the task to (created when missing; reused when "
                               "active on the pool).  [default: mpi-<pool id>]")
@click.option("--task-id", help="Task ID.  [default: mpi-<timestamp>]")
@click.option("--timeout-s", type=click.FloatRange(min=0), default=None,
              help="Terminate the task and exit 2 when it has not completed after this "
                   "many seconds (default: wait).")
@click.option("--coordination-command-line",
              help="Command every node runs before the MPI program starts (e.g. a daemon).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@output_option
def mpi_run(pool_id: str, nodes: int, ppn: int, flavor: str, launcher: str | None,
            job_id: str | None, task_id: str | None, timeout_s: float | None,
            coordination_command_line: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND as an MPI job of NODES x PPN ranks, like ``srun -N``; stream its output.

    Adds a multi-instance task whose primary runs ``mpiexec -hosts
    $AZ_BATCH_HOST_LIST -ppn PPN -n NODES*PPN COMMAND`` (each word of COMMAND
    passed as is), waits for it, prints its stdout as it grows (its stderr at
    the end when it failed) and exits with its exit code. The task goes to the
    pool's job ``mpi-<pool id>`` (created on first use, reused after), and its
    state is long-polled (the service answers when it changes). A launcher
    that is not on the task's PATH fails the task (exit code 127) with a
    message naming the node and the PATH searched. Ctrl-C terminates the task.
    With --output json, prints the task at the end instead.

    \b
    Example:
        hpcbatch mpi run --pool-id p --nodes 2 --ppn 4 -- ./app --steps 10
    """
    c = client()
    stamp = datetime.now(UTC)
    job_id = job_id or f"mpi-{pool_id}"[:64]
    task_id = task_id or f"mpi-{stamp:%Y%m%d-%H%M%S-%f}"
    json_out = as_json()
    try:
        command_line = batch_command_line(list(command), nodes, ppn=ppn, launcher=launcher,
                                          flavor=flavor)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings: dict[str, Any] = {"numberOfInstances": nodes}
    if coordination_command_line:
        settings["coordinationCommandLine"] = coordination_command_line
    created = _ensure_job(job_id, pool_id)
    try:
        etag = c.create_task(job_id, {"id": task_id, "commandLine": command_line,
                                      "multiInstanceSettings": settings})
    except HpcbatchError:
        if created:
            c.delete_job(job_id)
        raise
    note(f"added task {task_id} to job {job_id}: {nodes} node(s) x {ppn} rank(s), {flavor}")

    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def wait_s(running: bool) -> float:
        limit = MPI_STREAM_INTERVAL_S if running else MPI_WAIT_S
        if deadline is not None:
            limit = min(limit, max(deadline - time.monotonic(), 0.05))
        return limit

    def terminate() -> None:
        try:
            c.terminate_task(job_id, task_id)
        except HpcbatchError as exc:  # it completed meanwhile: nothing left to stop
            if exc.code != "TaskCompleted":
                raise

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            terminate()
            raise TimeoutError(f"task {task_id} of job {job_id} did not complete within "
                               f"{timeout_s:g} s; terminated it")

    out = sys.stdout.buffer
    task_: dict[str, Any] = {"state": "active"}  # as added; the first poll waits for a change
    try:
        with status(f"task {task_id}: active",
                    enabled=not json_out and sys.stderr.isatty()) as spinner:
            while task_.get("state") not in ("running", "completed"):
                new = c.wait_task_json(job_id, task_id, etag, wait_s(False))
                if new is not None:
                    task_, etag = new, new.get("eTag")
                if spinner is not None:
                    spinner.update(f"task {task_id}: {task_.get('state')} "
                                   f"(waiting for {nodes} node(s) of pool {pool_id})")
                check_deadline()
        offset, retries, quiet = 0, 0, False
        while True:
            info = task_.get("executionInfo") or {}
            if info.get("retryCount", 0) != retries:
                retries, offset = info.get("retryCount", 0), 0
                note(f"task {task_id}: retry {retries}")
            state_ = task_.get("state")
            # Stream: read stdout.txt when the task ran a poll interval unchanged, and at its end.
            if not json_out and (state_ == "completed" or (quiet and state_ == "running")):
                data = _read_task_file_from(job_id, task_id, "stdout.txt", offset)
                if data:
                    out.write(data)
                    out.flush()
                    offset += len(data)
            if state_ == "completed":
                break
            check_deadline()
            new = c.wait_task_json(job_id, task_id, etag, wait_s(state_ == "running"))
            quiet = new is None
            if new is not None:
                task_, etag = new, new.get("eTag")
    except KeyboardInterrupt:
        terminate()
        note(f"interrupted: terminated task {task_id} of job {job_id}")
        click.get_current_context().exit(130)

    info = task_.get("executionInfo") or {}
    code = info.get("exitCode")
    failure = info.get("failureInfo")
    failed = failure is not None or code != 0
    if json_out:
        emit(task_)
    if failed:
        err = _read_task_file_from(job_id, task_id, "stderr.txt", 0)
        if err:
            sys.stderr.buffer.write(err)
            sys.stderr.buffer.flush()
    if failure is not None:
        click.echo(f"error: {failure.get('code')}: {failure.get('message')}", err=True)
    click.get_current_context().exit(_exit_status(code, failed))
