"""``hpcbatch mpi run``: an MPI program as a multi-instance task, its output streamed."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, BinaryIO

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

MPI_QUEUED_NOTE_S = 1.0
"""Seconds a task waits for nodes before ``mpi run`` says it is queued (once)."""

MPI_TIMEOUT_GRACE_S = 10.0
"""Seconds past ``--timeout-s`` of run time after which ``mpi run`` terminates the task
itself (the service's ``maxWallClockTime`` normally ends it first)."""

INTERRUPT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop ``mpi run`` and ``bench run`` as Ctrl-C does: their task is terminated."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as Ctrl-C raises KeyboardInterrupt.

    A KeyboardInterrupt, so whatever cleans up after Ctrl-C (terminating the
    task, the campaign's job) cleans up after these too.
    """

    def __init__(self, signo: int) -> None:
        super().__init__(signal.Signals(signo).name)
        self.signo = signo


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGTERM and SIGHUP inside the block (main thread only).

    Only the first such signal raises; later ones are ignored while the block
    cleans up. The previous handlers come back at the end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signo: int, _frame: Any) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Interrupted(signo)

    old = {s: signal.signal(s, handler) for s in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def interrupted_status(exc: KeyboardInterrupt) -> int:
    """The exit status after an interrupt: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (exc.signo if isinstance(exc, Interrupted) else signal.SIGINT)


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


class _TaskStreams:
    """Copies a task's ``stdout.txt`` and ``stderr.txt`` to this process's, as they grow."""

    def __init__(self, job_id: str, task_id: str, *, stdout: bool) -> None:
        self.job_id, self.task_id = job_id, task_id
        self.files: list[tuple[str, BinaryIO]] = [("stderr.txt", sys.stderr.buffer)]
        if stdout:
            self.files.insert(0, ("stdout.txt", sys.stdout.buffer))
        self.offsets = dict.fromkeys((name for name, _ in self.files), 0)
        self.stderr_seen = b""

    def restart(self) -> None:
        """The task is retried: its files start again."""
        self.offsets = dict.fromkeys(self.offsets, 0)

    def pump(self) -> None:
        """Write what each file gained since the last pump."""
        for name, out in self.files:
            data = _read_task_file_from(self.job_id, self.task_id, name, self.offsets[name])
            if data:
                out.write(data)
                out.flush()
                self.offsets[name] += len(data)
                if name == "stderr.txt":
                    self.stderr_seen = (self.stderr_seen + data)[-65536:]

    def drain(self) -> None:
        """:meth:`pump`, when the task is being left (interrupt, timeout): never raises."""
        with contextlib.suppress(Exception):  # the output is a courtesy on the way out
            self.pump()


def _env_settings(_ctx: click.Context, param: click.Parameter,
                  values: tuple[str, ...]) -> dict[str, str]:
    """``--env NAME=VALUE`` options as a dict; NAME as Batch takes it."""
    out: dict[str, str] = {}
    for text in values:
        name, eq, value = text.partition("=")
        if not eq or not _ENV_NAME.match(name):
            raise click.BadParameter(
                f"{text!r} is not NAME=VALUE with NAME of letters, digits and underscores, "
                "not starting with a digit", param=param)
        out[name] = value
    return out


def _iso_seconds(seconds: float) -> str:
    """An ISO 8601 duration of ``seconds`` (``PT1.5S``)."""
    return "PT" + f"{seconds:.3f}".rstrip("0").rstrip(".") + "S"


def _failure_line(task_: dict[str, Any], job_id: str, nodes: int, stderr_seen: bytes) -> str:
    """``error: CODE: task T of job J (master node N, K node(s)): message``.

    The reason the service appends for a launcher not found (``On node N:
    REASON``, the last line of the task's stderr) is left out when that
    stderr was already shown.
    """
    failure = (task_.get("executionInfo") or {}).get("failureInfo") or {}
    message = failure.get("message") or ""
    details = {d.get("name"): d.get("value") for d in failure.get("details") or []}
    reason = details.get("Reason")
    if reason and reason.encode() in stderr_seen:
        message = message.replace(f" On node {details.get('NodeId')}: {reason}", "")
    master = (task_.get("nodeInfo") or {}).get("nodeId") or "?"
    count = (task_.get("multiInstanceSettings") or {}).get("numberOfInstances") or nodes
    return (f"error: {failure.get('code')}: task {task_.get('id')} of job {job_id} "
            f"(master node {master}, {count} node(s)): {message}")


def _ensure_job(job_id: str, pool_id: str, nodes: int) -> bool:
    """Create job ``job_id`` on ``pool_id``, or check that the existing one is active there.

    Returns True when the job was created. Raises ``PoolNotFound`` for a pool that does
    not exist, and :func:`check_pool_fits`'s errors for one that can never start a task of
    ``nodes`` nodes, before creating anything: such a task would wait for nodes forever.
    """
    from hpcbatch.client.sdk import BatchError

    c = client()
    try:
        job = c.get_job_json(job_id)
    except BatchError as exc:
        if exc.code != "JobNotFound":
            raise
        check_pool_fits(c.get_pool_json(pool_id), [nodes], "--nodes")
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
    # deleted since the job was made, or too small
    check_pool_fits(c.get_pool_json(pool_id), [nodes], "--nodes")
    return False


def check_pool_fits(pool: dict[str, Any], nodes: Iterable[int], option: str) -> None:
    """Refuse runs the pool can never start, before anything is added to it.

    A multi-instance task of N nodes needs a pool with inter-node communication
    (when N > 1) and N nodes: one asking for more than the pool's target (and no
    autoscale formula that may grow it) would wait for nodes forever ("Pool -
    Resize" is the operator's), as ``srun -N`` refuses a node count its
    partition cannot give.

    Parameters
    ----------
    pool
        The pool's JSON ("Pool - Get").
    nodes
        The node counts of the runs (``numberOfInstances``).
    option
        The option or parameter that gave them, for the message (``--nodes``).

    Raises
    ------
    HpcbatchError
        ``PoolTooSmall`` (a count above the pool's target, without autoscale) or
        ``InterNodeCommunicationNotEnabled`` (a count above 1); the message names
        the pool, the counts and the fix.
    """
    pool_id = pool.get("id")
    wanted = sorted(set(nodes))
    multi = [n for n in wanted if n > 1]
    if multi and not pool.get("enableInterNodeCommunication"):
        raise HpcbatchError(
            f"pool {pool_id} does not enable inter-node communication, which runs on "
            f"{', '.join(map(str, multi))} nodes ({option}) need: create a pool with "
            "--enable-inter-node-communication, or run on 1 node",
            code="InterNodeCommunicationNotEnabled", values={"PoolId": str(pool_id)})
    if pool.get("enableAutoScale"):
        return
    target = (pool.get("targetDedicatedNodes") or 0) + (pool.get("targetLowPriorityNodes") or 0)
    over = [n for n in wanted if n > target]
    if over:
        raise HpcbatchError(
            f"pool {pool_id} has a target of {target} node(s) and no autoscale formula: a "
            f"run on {', '.join(map(str, over))} nodes ({option}) would wait for nodes "
            f"forever; ask for at most {target}, or grow the pool first (hpcbatch pool "
            f"resize --pool-id {pool_id} --target-dedicated-nodes {over[-1]}; the inventory "
            "needs that many hosts matching its vmSize)",
            code="PoolTooSmall", values={"PoolId": str(pool_id)})


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
              help="Run-time limit in seconds, counted from the task's start (the wait for "
                   "nodes does not count): the task's constraints.maxWallClockTime. A task "
                   "that exceeds it is terminated, and the command exits 2. "
                   "[default: no limit]")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", callback=_env_settings,
              help="Environment variable of the task (its environmentSettings; repeatable). "
                   "The launcher passes it on to every rank.")
@click.option("--coordination-command-line",
              help="Command every node runs before the MPI program starts (e.g. a daemon).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@output_option
def mpi_run(pool_id: str, nodes: int, ppn: int, flavor: str, launcher: str | None,
            job_id: str | None, task_id: str | None, timeout_s: float | None,
            env: dict[str, str], coordination_command_line: str | None,
            command: tuple[str, ...]) -> None:
    """Run COMMAND as an MPI job of NODES x PPN ranks, like ``srun -N``; stream its output.

    Adds a multi-instance task whose primary runs ``mpiexec -hosts
    $AZ_BATCH_HOST_LIST -ppn PPN -n NODES*PPN COMMAND`` (each word of COMMAND
    passed as is), waits for it, copies its stdout and stderr to this
    command's as they grow, and exits with its exit code. The task goes to
    the pool's job ``mpi-<pool id>`` (created on first use, reused after),
    and its state is long-polled (the service answers when it changes). While
    it waits for nodes a line (a spinner on a terminal) says it is queued. A
    run on more nodes than the pool's target (and no autoscale formula), or on
    more than one node of a pool without inter-node communication, is refused
    before anything is added (exit 1). A failure names the task and its master
    node. A launcher that is not on the
    task's PATH fails the task (exit code 127) with a message naming the node
    and the PATH searched. Ctrl-C, SIGTERM and SIGHUP terminate the task
    (exit 130, 143, 129). With --output json, prints the task at the end
    instead of its stdout.

    COMMAND runs in the task's working directory on the master node, not in
    the directory you submit from: give an absolute path (on a file system
    the nodes share) or a program on the task's PATH.

    Every rank gets the master node's environment (MPICH's hydra passes it
    on; --env adds to it): the inventory's per-host `env` and `python` apply
    to the coordination command and to plain tasks, not to the ranks on the
    other nodes. Keep the Python environment identical across hosts.

    \b
    Examples:
        hpcbatch mpi run --pool-id p --nodes 2 --ppn 4 -- python -m hpcbatch.mpihello
        hpcbatch mpi run --pool-id p --nodes 2 --env OMP_NUM_THREADS=4 -- /shared/bin/app --steps 10
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
    body: dict[str, Any] = {"id": task_id, "commandLine": command_line,
                            "multiInstanceSettings": settings}
    if env:
        body["environmentSettings"] = [{"name": k, "value": v} for k, v in env.items()]
    if timeout_s is not None:
        body["constraints"] = {"maxWallClockTime": _iso_seconds(timeout_s)}
    created = _ensure_job(job_id, pool_id, nodes)
    try:
        etag = c.create_task(job_id, body)
    except HpcbatchError:
        if created:
            c.delete_job(job_id)
        raise
    note(f"added task {task_id} to job {job_id}: {nodes} node(s) x {ppn} rank(s), {flavor}")
    added = time.monotonic()
    deadline: float | None = None  # set when the task starts: --timeout-s counts run time

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

    streams = _TaskStreams(job_id, task_id, stdout=not json_out)

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            terminate()
            streams.drain()
            raise TimeoutError(f"task {task_id} of job {job_id} ran longer than --timeout-s "
                               f"{timeout_s:g} s; terminated it")

    task_: dict[str, Any] = {"state": "active"}  # as added; the first poll waits for a change
    queued_noted = False
    # SIGTERM and SIGHUP raise Interrupted (a KeyboardInterrupt) in the block, as Ctrl-C
    # does; the handlers stay while the task is terminated, so a second signal waits.
    with interrupt_on_signals():
        try:
            with status(f"task {task_id}: active",
                        enabled=not json_out and sys.stderr.isatty()) as spinner:
                while task_.get("state") not in ("running", "completed"):
                    waited = time.monotonic() - added
                    poll = wait_s(False) if queued_noted or spinner is not None else max(
                        min(wait_s(False), MPI_QUEUED_NOTE_S - waited), 0.05)
                    new = c.wait_task_json(job_id, task_id, etag, poll)
                    if new is not None:
                        task_, etag = new, new.get("eTag")
                    if spinner is not None:
                        spinner.update(f"task {task_id}: {task_.get('state')} "
                                       f"(waiting for {nodes} node(s) of pool {pool_id})")
                    elif (not queued_noted and task_.get("state") == "active"
                          and time.monotonic() - added >= MPI_QUEUED_NOTE_S):
                        queued_noted = True
                        note(f"task {task_id} queued and waiting for {nodes} node(s) of "
                             f"pool {pool_id}")
            if timeout_s is not None:  # the service ends it at timeout_s: this is a backstop
                deadline = time.monotonic() + timeout_s + MPI_TIMEOUT_GRACE_S
            retries, quiet = 0, False
            while True:
                info = task_.get("executionInfo") or {}
                if info.get("retryCount", 0) != retries:
                    retries = info.get("retryCount", 0)
                    streams.restart()
                    note(f"task {task_id}: retry {retries}")
                state_ = task_.get("state")
                # Stream: read the files when the task ran a poll interval unchanged, and at
                # its end.
                if state_ == "completed" or (quiet and state_ == "running"):
                    streams.pump()
                if state_ == "completed":
                    break
                check_deadline()
                new = c.wait_task_json(job_id, task_id, etag, wait_s(state_ == "running"))
                quiet = new is None
                if new is not None:
                    task_, etag = new, new.get("eTag")
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (Interrupted)
            terminate()
            streams.drain()
            note(f"interrupted: terminated task {task_id} of job {job_id}")
            click.get_current_context().exit(interrupted_status(exc))

    info = task_.get("executionInfo") or {}
    code = info.get("exitCode")
    failure = info.get("failureInfo")
    failed = failure is not None or code != 0
    if json_out:
        emit(task_)
    if (timeout_s is not None and failure is not None and failure.get("code") == "TaskEnded"
            and "maxWallClockTime" in (failure.get("message") or "")):
        raise TimeoutError(f"task {task_id} of job {job_id} ran longer than --timeout-s "
                           f"{timeout_s:g} s (its maxWallClockTime); the service terminated it")
    if failure is not None:
        click.echo(_failure_line(task_, job_id, nodes, streams.stderr_seen), err=True)
    click.get_current_context().exit(_exit_status(code, failed))
