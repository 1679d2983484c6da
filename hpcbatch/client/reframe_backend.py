"""ReFrame on hpcbatch pools: an ``hpcbatch`` launcher and an ``hpcbatch`` scheduler.

Importing this module registers both with ReFrame (>= 4.4 accepts backends
registered by code its configuration file imports). A system partition then
names a pool in its ``access`` options (``--pool-id=ID``; else
``$HPCBATCH_POOL_ID``); the service is found as by the ``hpcbatch`` command
(``AZURE_BATCH_ENDPOINT``/``AZURE_BATCH_ACCOUNT``/``AZURE_BATCH_ACCESS_KEY``,
else the state dir's running service)::

    import hpcbatch.client.reframe_backend  # registers 'hpcbatch'

    site_configuration = {"systems": [{
        "name": "cluster", "hostnames": [".*"],
        "partitions": [
            # ReFrame runs the job script here; each parallel launch is one
            # multi-instance task on the pool (`hpcbatch mpi run`)
            {"name": "login", "scheduler": "local", "launcher": "hpcbatch",
             "access": ["--pool-id=bench"], "environs": ["builtin"]},
            # the whole job script is one multi-instance task on the pool;
            # MPICH's plain `mpiexec` finds the task's hosts (HYDRA_HOST_FILE)
            {"name": "pool", "scheduler": "hpcbatch", "launcher": "mpiexec",
             "access": ["--pool-id=bench"], "environs": ["builtin"]}]}], ...}

The **launcher** turns a test's parallel launch into ``hpcbatch mpi run
--pool-id ID --nodes N --ppn P --mpi FLAVOR -- EXECUTABLE ...`` (``N`` =
``num_tasks / num_tasks_per_node``), which adds a multi-instance task and
streams its stdout into the job's.

The **scheduler** submits the job script as a multi-instance task of ``N``
instances: one Batch job per ReFrame job, the script run by ``/bin/bash`` in
the job's stage directory on the primary node (so, as ReFrame assumes of
every cluster scheduler, the stage directory must be on a file system the
nodes share), ``maxWallClockTime`` from the test's time limit. Its preamble
writes the task's hosts (``AZ_BATCH_HOST_LIST``) as an MPICH hostfile with
``num_tasks_per_node`` slots each and exports it as ``HYDRA_HOST_FILE`` and
``I_MPI_HYDRA_HOST_FILE``. When the task completes, its ``stdout.txt`` and
``stderr.txt`` (File - Get From Task) become the job's output files and its
exit code the job's; cancelling terminates the task.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Any

import reframe.core.schedulers as sched
from reframe.core.backends import register_launcher, register_scheduler
from reframe.core.exceptions import JobError
from reframe.core.launchers import JobLauncher

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.execution.mpi import FLAVORS

__all__ = ["HpcbatchJobScheduler", "HpcbatchLauncher", "access_options", "launch_words"]

POOL_ENV = "HPCBATCH_POOL_ID"
"""The pool when a partition's ``access`` names none."""

_BATCH_ID = re.compile(r"[^A-Za-z0-9_-]+")


def access_options(access: list[str]) -> dict[str, str]:
    """The ``--pool-id=ID`` and ``--mpi=FLAVOR`` options of a partition's ``access`` list.

    Parameters
    ----------
    access
        The partition's ``access`` (``job.sched_access``).

    Returns
    -------
    dict
        ``{"pool_id": ..., "mpi": ...}``: the pool from ``--pool-id`` or
        ``$HPCBATCH_POOL_ID``, the flavor from ``--mpi`` (default ``mpich``).

    Raises
    ------
    ValueError
        No pool, an unknown option, or an unknown MPI flavor.
    """
    out = {"pool_id": os.environ.get(POOL_ENV, ""), "mpi": "mpich"}
    for opt in access:
        name, eq, value = opt.partition("=")
        if name == "--pool-id" and eq and value:
            out["pool_id"] = value
        elif name == "--mpi" and eq and value in FLAVORS:
            out["mpi"] = value
        else:
            raise ValueError(f"partition access option {opt!r}: the hpcbatch backends take "
                             f"--pool-id=ID and --mpi={{{','.join(FLAVORS)}}}")
    if not out["pool_id"]:
        raise ValueError(f"no hpcbatch pool: give the partition access option --pool-id=ID "
                         f"or set {POOL_ENV}")
    return out


def _layout(job: Any) -> tuple[int, int]:
    """``(nodes, ranks per node)`` of a ReFrame job."""
    tasks = int(job.num_tasks or 1)
    ppn = int(job.num_tasks_per_node or 1)
    if tasks < 1 or ppn < 1 or tasks % ppn:
        raise ValueError(f"num_tasks ({tasks}) must be a positive multiple of "
                         f"num_tasks_per_node ({ppn}) to run on hpcbatch nodes")
    return tasks // ppn, ppn


def _hpcbatch_exe() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "hpcbatch")
    return here if os.access(here, os.X_OK) else (shutil.which("hpcbatch") or "hpcbatch")


def launch_words(job: Any) -> list[str]:
    """The ``hpcbatch mpi run`` words a parallel launch of ``job`` starts with.

    Parameters
    ----------
    job
        A ReFrame job (``num_tasks``, ``num_tasks_per_node``, ``sched_access``).

    Returns
    -------
    list of str
        ``[hpcbatch, mpi, run, --pool-id, ID, --nodes, N, --ppn, P, --mpi, F, --]``,
        each shell-quoted (ReFrame joins them into the job script with spaces).

    Raises
    ------
    ValueError
        No pool, bad access options, or ``num_tasks`` not a multiple of
        ``num_tasks_per_node``.
    """
    opts = access_options(list(job.sched_access))
    nodes, ppn = _layout(job)
    words = [_hpcbatch_exe(), "mpi", "run", "--pool-id", opts["pool_id"], "--nodes", str(nodes),
             "--ppn", str(ppn), "--mpi", opts["mpi"], "--"]
    return [shlex.quote(w) for w in words]


@register_launcher("hpcbatch")
class HpcbatchLauncher(JobLauncher):
    """ReFrame launcher: each parallel launch is a multi-instance task (``hpcbatch mpi run``)."""

    def command(self, job: Any) -> list[str]:
        """The launch words (:func:`launch_words`)."""
        return launch_words(job)


class _HpcbatchJob(sched.Job):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_job_id: str | None = None
        self.task_id = "job"
        self.out_paths: tuple[str, str] = ("", "")
        self.cancelled = False
        self.batch_nodes = 1


@register_scheduler("hpcbatch")
class HpcbatchJobScheduler(sched.JobScheduler):
    """ReFrame scheduler: a job script is one multi-instance task on an hpcbatch pool."""

    POLL_INTERVAL_S = 0.5

    def __init__(self) -> None:
        self._client: Any = None

    def client(self) -> Any:
        """The :class:`~hpcbatch.client.sdk.BatchClient` (``BatchClient.from_environment``)."""
        if self._client is None:
            from hpcbatch.client.sdk import BatchClient

            self._client = BatchClient.from_environment()
        return self._client

    def make_job(self, *args: Any, **kwargs: Any) -> _HpcbatchJob:
        return _HpcbatchJob(*args, **kwargs)

    def emit_preamble(self, job: Any) -> list[str]:
        """Lines writing the task's hosts as the default MPICH/Intel MPI hostfile."""
        _, ppn = _layout(job)
        return [
            'hosts_file="${AZ_BATCH_TASK_SHARED_DIR:-$PWD}/hpcbatch-hosts"',
            (f'for h in $(printf %s "$AZ_BATCH_HOST_LIST" | tr , " "); do echo "$h:{ppn}"; '
             'done > "$hosts_file"'),
            'export HYDRA_HOST_FILE="$hosts_file" I_MPI_HYDRA_HOST_FILE="$hosts_file"',
        ]

    def allnodes(self) -> list[Any]:
        return []

    def filternodes(self, job: Any, nodes: Any) -> list[Any]:
        return list(nodes)

    def submit(self, job: _HpcbatchJob) -> None:
        try:
            opts = access_options(list(job.sched_access))
            nodes, _ = _layout(job)
        except ValueError as exc:
            raise JobError(str(exc)) from None
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        batch_job = f"reframe-{_BATCH_ID.sub('-', job.name)[:30]}-{stamp}"
        workdir = os.path.abspath(job.workdir)
        script = os.path.join(workdir, job.script_filename)
        body: dict[str, Any] = {
            "id": job.task_id,
            "displayName": f"ReFrame job {job.name}"[:1024],
            "commandLine": shlex.join(["/bin/sh", "-c", 'cd "$1" && exec /bin/bash "$2"', "sh",
                                       workdir, script]),
            "multiInstanceSettings": {"numberOfInstances": nodes},
        }
        if job.time_limit:
            body["constraints"] = {"maxWallClockTime": f"PT{int(job.time_limit)}S"}
        c = self.client()
        try:
            c.create_job({"id": batch_job, "poolInfo": {"poolId": opts["pool_id"]},
                          "displayName": f"ReFrame {job.name}"[:1024]})
        except HpcbatchError as exc:
            raise JobError(f"hpcbatch: {exc.code}: {exc.message}") from None
        try:
            c.create_task(batch_job, body)
        except HpcbatchError as exc:
            try:  # the job would stay active for ever, holding nothing but a name
                c.delete_job(batch_job)
            except HpcbatchError:
                pass
            raise JobError(f"hpcbatch: {exc.code}: {exc.message}") from None
        job.batch_job_id = batch_job
        job.batch_nodes = nodes
        job._jobid = batch_job
        job._state = "PENDING"
        job._submit_time = time.time()
        job.out_paths = (os.path.join(workdir, job.stdout), os.path.join(workdir, job.stderr))

    def _nodes(self, job: _HpcbatchJob, task: Any) -> list[str]:
        """Every node of the job's multi-instance task, master first.

        The master is the task's ``nodeInfo``; the others are its subtasks'
        (Task - List Subtasks), in instance order.
        """
        from hpcbatch.client.sdk import BatchError

        nodes = [task.node_info.node_id] if task.node_info and task.node_info.node_id else []
        try:
            subtasks = self.client().list_subtasks_json(job.batch_job_id, job.task_id)
        except BatchError:
            return nodes
        for sub in sorted(subtasks, key=lambda s: s.get("id", 0)):
            node = (sub.get("nodeInfo") or {}).get("nodeId")
            if node and node not in nodes:
                nodes.append(node)
        return nodes

    def _fetch(self, job: _HpcbatchJob, name: str) -> bytes:
        from hpcbatch.client.sdk import BatchError

        try:
            return bytes(self.client().download_task_file(job.batch_job_id, job.task_id, name))
        except BatchError:
            return b""

    def poll(self, *jobs: Any) -> None:
        for job in jobs:
            if job is None or job.batch_job_id is None or job.exitcode is not None:
                continue
            task = self.client().get_task(job.batch_job_id, job.task_id)
            state = getattr(task.state, "value", task.state)
            if state == "running":
                job._state = "RUNNING"
            if state in ("running", "completed") and len(job.nodelist or []) < job.batch_nodes:
                job._nodelist = self._nodes(job, task)
            if state != "completed":
                continue
            for path, name in zip(job.out_paths, ("stdout.txt", "stderr.txt")):
                with open(path, "wb") as fh:
                    fh.write(self._fetch(job, name))
            info = task.execution_info
            code = info.exit_code if info and info.exit_code is not None else 1
            job._exitcode = code
            job._completion_time = time.time()
            if job.cancelled:
                job._state = "CANCELLED"
            elif info and info.failure_info and info.failure_info.code == "TaskEnded" \
                    and "maxWallClockTime" in (info.failure_info.message or ""):
                job._state = "TIMEOUT"
                job._exception = JobError("job timed out", job.jobid)
            else:
                job._state = "SUCCESS" if code == 0 and not (info and info.failure_info) \
                    else "FAILURE"
            try:
                self.client().terminate_job(job.batch_job_id)
            except HpcbatchError:
                pass

    def finished(self, job: Any) -> bool:
        if job.exception:
            try:
                raise job.exception
            finally:
                job._exception = None
        return job.exitcode is not None

    def wait(self, job: Any) -> None:
        while not self.finished(job):
            self.poll(job)
            time.sleep(self.POLL_INTERVAL_S)

    def cancel(self, job: Any) -> None:
        if job.batch_job_id is None:
            return
        job.cancelled = True
        try:
            self.client().terminate_task(job.batch_job_id, job.task_id)
        except HpcbatchError:
            pass
