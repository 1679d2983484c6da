"""The node agent: code that runs inside a compute node's Dask worker.

The service sends runs to the worker of the node it chose (the
:data:`EXCHANGE_HANDLER` worker handler); the agent prepares each task
directory, sets Batch's variables, runs the command line (without a shell
unless the command line invokes one), captures ``stdout.txt`` and
``stderr.txt``, enforces the wall-clock limit and kills the whole process tree
on timeout or on :meth:`NodeAgent.kill_task` (the processes themselves, and
their tie to the agent's life, are :mod:`hpcbatch.execution.spawn`'s). A plain run is started and awaited on the
worker's event loop (a pidfd per process, no thread); a run with files to
transfer runs in a thread (:meth:`NodeAgent.run_task`). Outcomes go back to the
service on its outcome stream (:data:`OUTCOME_STREAM_HANDLER`). Nothing here
decides what runs where: that is the scheduler's policy.

The agent's state (node identity, base environment, run table, thread pool,
outcome stream) lives in one :class:`NodeAgent`, a Dask ``WorkerPlugin`` that
the node process registers on its worker (:mod:`hpcbatch.execution.node`);
the module holds no node state. The service calls the agent out of band
through one handler, :data:`CALL_HANDLER`, with an operation named in
:data:`CALL_OPS` and plain msgpack arguments and results (no pickles: the
service reads what a node sends with msgpack only).

The node's secrets (its TLS key and certificate, under :data:`SECRETS_DIR` of
the node root) are never served: the node files operations neither list nor
read anything that is, or resolves into, that folder.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import shutil
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import WorkerPlugin

from hpcbatch.batch.identity import RunAs
from hpcbatch.execution import containers, identity, node_files, nodeops, packages
from hpcbatch.execution.environment import NodeIdentity, task_environment
from hpcbatch.execution.outcomes import (  # noqa: F401 - re-exported: the agent's public names
    MAX_PENDING_OUTCOMES,
    OUTCOME_HOLD_S,
    STREAM_KEEPALIVE_S,
    Outcome,
    OutcomeStream,
    outcome_from_wire,
    outcome_to_wire,
)
from hpcbatch.execution.slot_queue import SlotQueue
from hpcbatch.execution.spawn import (  # noqa: F401 - re-exported: the agent's public names
    EXIT_CODE_TASK_ENDED,
    HAS_PIDFD,
    RUN_TAG,
    Child,
    Processes,
    Warden,
    base_environment,
    failure_info,
    kill_process_tree,
    kill_tagged,
    python_first_path,
)

if TYPE_CHECKING:  # imported where files move (fsspec): not before a node serves
    from hpcbatch.execution import transfer

AGENT_PLUGIN = "hpcbatch-agent"
"""Name of the :class:`NodeAgent` plugin in a node worker's ``plugins``."""

EXCHANGE_HANDLER = "hpcbatch_exchange"
"""Name of the worker handler the service sends runs to (:meth:`NodeAgent.exchange`)."""
OUTCOME_STREAM_HANDLER = "hpcbatch_outcomes"
"""Name of the worker handler that streams outcomes to the service
(:meth:`hpcbatch.execution.outcomes.OutcomeStream.serve`)."""
CALL_HANDLER = "hpcbatch_call"
"""Name of the worker handler the service calls the agent's operations through (:meth:`NodeAgent.call`)."""
CALL_OPS = frozenset({"kill_task", "kill_tagged", "list_files", "read_file", "remove_dirs",
                      "node_sample", "node_info", "pull_images", *nodeops.NODE_CALLS})
"""The operations :data:`CALL_HANDLER` runs; any other name is refused."""
HOLD_WHILE_QUEUED = 2
"""Outcomes are held (:data:`~hpcbatch.execution.outcomes.OUTCOME_HOLD_S`) while more
runs than this many times the node's slots wait; at or below it they go at once, so the
service sends more while the node still has work (2 measured a little faster than 1 in
``bench_dispatch.py``)."""

GIVE_BACK_S = 1.0
"""A task run that has waited this long on the node for free slots (all held by longer
runs) goes back to the service, which puts its task back in the queue
(:data:`RUN_RETURNED`): another node may start it sooner."""

RUN_RETURNED = "RunReturned"
"""Failure code of the outcome of a run given back unstarted (:data:`GIVE_BACK_S`); the
service requeues its task instead of recording the outcome."""

EXECUTOR_THREADS = 64
"""Most runs one node executes in threads at once (start, preparation and
coordination tasks, and tasks with files to transfer); the agent starts no
more task runs than the node has slots for (:meth:`NodeAgent.enqueue`)."""

STARTUP_DIR = "startup"
"""The start task's directory, relative to the node root (``AZ_BATCH_NODE_STARTUP_DIR``)."""



@dataclass
class Launch:
    """One run of a task on a node, as the service sends it.

    Attributes
    ----------
    key
        Unique key of this run (job, task, attempt), used by :meth:`NodeAgent.kill_task`.
    task_dir
        Task directory relative to the node root.
    command_line
        The Batch command line; split with POSIX shell rules, run without a shell.
    job_id, task_id
        Batch IDs (None for a start task).
    settings
        ``environmentSettings`` wire dicts, job-level first.
    extra_env
        Service-set variables (multi-instance, application packages).
    max_wall_clock_s
        Wall-clock limit in seconds, or None for unlimited.
    stdout_name, stderr_name
        Files in the task directory that receive the output.
    keep_background
        Leave processes the command started in the background running after
        it exits (a multi-instance coordination command's daemons); they are
        ended later by :func:`kill_tagged`.
    files
        Small files to write first, by path relative to the task directory
        (``ssh/config`` of a multi-instance task), with mode 0600.
    resource_files, resource_dir
        ``ResourceFile`` wire dicts to download first, into this folder of the
        task directory (``wd``; ``.`` for multi-instance common resource files).
    output_files
        ``OutputFile`` wire dicts to upload when the run ends.
    storage
        The service's storage (``autoStorageContainerName``, conventions outputs).
    persist_logs
        Save ``stdout.txt``/``stderr.txt`` as ``$TaskLog`` outputs.
    packages
        Application package versions to have extracted on the node first
        (pool-level and task-level references, resolved by the service).
    run_as
        The user the run executes as (its ``userIdentity`` resolved by the
        service); honoured when the agent switches users, else the run shares
        the agent's identity.
    container
        The task's ``containerSettings`` with its pool's container type
        (:func:`hpcbatch.execution.containers.launch_container`), or None: the
        command line then runs in that container, never on the host.
    slots, node_slots
        A task's run: the task slots it takes (``requiredSlots``) and the
        node's ``taskSlotsPerNode``. The agent starts such runs first in, first
        out, each when its slots are free, so runs the service sends ahead of
        a free slot (:data:`hpcbatch.core.node_runtime.AHEAD_WINDOW_S`) wait on
        the node. None (start, preparation, release and coordination tasks):
        the run starts at once.
    """

    key: str
    task_dir: str
    command_line: str
    job_id: str | None = None
    task_id: str | None = None
    settings: list[dict[str, Any]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    max_wall_clock_s: float | None = None
    stdout_name: str = "stdout.txt"
    stderr_name: str = "stderr.txt"
    keep_background: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    resource_files: list[dict[str, Any]] = field(default_factory=list)
    resource_dir: str = "wd"
    output_files: list[dict[str, Any]] = field(default_factory=list)
    storage: transfer.StorageRef | None = None
    persist_logs: bool = False
    packages: list[packages.PackageRef] = field(default_factory=list)
    run_as: RunAs | None = None
    container: dict[str, Any] | None = None
    slots: int | None = None
    node_slots: int = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _is_plain(launch: Launch) -> bool:
    """A run with nothing to transfer but its logs to local storage: it can start on the loop.

    A job's run on remote storage is not plain: its job container is made first
    (:func:`hpcbatch.execution.transfer.prepare_job_container`); nor is a container run
    with a ``registry``: its node logs in and pulls its image first (:meth:`NodeAgent._pull`).
    """
    return (not launch.packages and not launch.resource_files and not launch.output_files
            and not launch.keep_background
            and not (launch.container and launch.container.get("registry"))
            and (launch.storage is None or launch.storage.url.startswith("file://")
                 or not (launch.persist_logs or launch.job_id)))


def _confined(creds: identity.Credentials | None) -> bool:
    """Whether a run's files are confined to its task directory: it runs as a user that is
    not root (links it plants there must not lead root's uploads elsewhere)."""
    return creds is not None and creds.uid != 0


def _persist(launch: Launch, tdir: str, wd: str, code: int | None,
             failure: dict[str, Any] | None, confined: bool = False) -> dict[str, Any] | None:
    """Upload output files and task logs; return the failure info, with an upload error if any.

    ``confined``: the run's user is not root; a file reached through a link that leads
    out of the task directory is not uploaded (:func:`transfer.upload_output_files`).
    """
    if code is None and failure is not None and failure["code"] != "TaskEnded":
        return failure  # pre-processing error: the task never ran
    from hpcbatch.execution import transfer

    confine = Path(tdir) if confined else None
    errors: list[transfer.TransferError] = []
    if launch.output_files and launch.job_id and launch.task_id:
        try:
            transfer.upload_output_files(launch.output_files, Path(wd),
                                         succeeded=code == 0 and failure is None,
                                         job_id=launch.job_id, task_id=launch.task_id,
                                         storage=launch.storage, confine=confine)
        except transfer.TransferError as exc:
            errors.append(exc)
    if launch.persist_logs and launch.job_id and launch.task_id:
        try:
            transfer.persist_task_logs(tdir, job_id=launch.job_id, task_id=launch.task_id,
                                       storage=launch.storage, confine=confine)
        except transfer.TransferError as exc:
            errors.append(exc)
    if errors and failure is None:
        return failure_info("usererror", errors[0].code, errors[0].message)
    return failure


@dataclass
class _LoopRun:
    """A plain run started on the worker's event loop, until its process exits."""

    launch: Launch
    tdir: str
    wd: str
    start: datetime
    child: Child
    pidfd: int
    confined: bool = False
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False


class NodeAgent(WorkerPlugin):
    """The node agent of one compute node: a Dask ``WorkerPlugin`` holding all its state.

    The node process makes it and registers it on its worker
    (``Worker(plugins=[agent])``); when the worker starts, :meth:`setup` binds
    the :data:`EXCHANGE_HANDLER` and :data:`OUTCOME_STREAM_HANDLER` handlers to
    it. When the worker closes, :meth:`teardown` ends every task process.

    Parameters
    ----------
    node
        This node's identity (the values behind ``AZ_BATCH_NODE_*``).
    base_env
        The environment every task starts from; default: this process's
        (:func:`base_environment`), computed once now.
    switcher
        Runs each task as its :attr:`Launch.run_as` user (the agent runs as
        root, :mod:`hpcbatch.execution.identity`); None: tasks share the
        agent's identity.

    Attributes
    ----------
    node
        The node identity.
    base_env
        Encoded base environment of every task.
    worker
        The Dask worker the agent is set up on (None before :meth:`setup`).
    """

    name = AGENT_PLUGIN
    """The plugin's name in ``worker.plugins`` (:data:`AGENT_PLUGIN`)."""

    def __init__(self, node: NodeIdentity, *,
                 base_env: Mapping[bytes, bytes] | None = None,
                 switcher: identity.Switcher | None = None) -> None:
        self.node = node
        self.switcher = switcher
        self.base_env: dict[bytes, bytes] = (dict(base_env) if base_env is not None
                                             else base_environment())
        self.worker: Any = None
        self._loop_thread: int | None = None
        self._lock = threading.Lock()
        self.processes = Processes(node.node_id, self.base_env, Warden(node.root_dir))
        """The task processes (start, wait, kill; tied to this agent's life)."""
        self.files = node_files.NodeFiles(node.root_dir)
        """The node's files as the service reads and removes them (Task - Get File ...)."""
        self._job_dirs: set[str] = set()
        """Parents of task directories known to exist (one ``mkdir`` per task instead of four)."""
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self.outcomes = OutcomeStream()
        """The outcomes waiting for the service, and the stream that sends them."""
        self._queue: SlotQueue[Launch] = SlotQueue()
        """Task runs waiting for free slots, and the slots started ones hold (:meth:`enqueue`)."""
        self._give_back_timer: asyncio.TimerHandle | None = None
        self._task_users: dict[str, str] = {}
        """Task-scope users whose run ended with processes left (coordination daemons)."""
        self._pulled: set[tuple[str, str, str]] = set()
        """``(runtime type, image, registry fingerprint)`` this agent has logged in for and
        pulled (:meth:`_pull`): a container run with a registry logs in and pulls once a
        node start, not once a run."""

    # ------------------------------------------------------------- plugin hooks

    def setup(self, worker: Any) -> None:
        """Bind the exchange and outcome stream handlers (on the worker's event loop).

        First the task processes an earlier incarnation of this node left alive
        are killed, and the watchdog that kills this incarnation's tasks when
        the agent dies is started (:class:`hpcbatch.execution.spawn.Warden`).
        """
        self.processes.warden.start()
        # The node process's start-up objects (Dask, the modules) live as long as it does:
        # out of the cyclic collector's generations, a collection no longer scans the
        # whole heap, only what runs have allocated since (a full one cost every
        # few hundred runs several milliseconds of the node's CPU).
        gc.freeze()
        self.worker = worker
        self._loop_thread = threading.get_ident()
        worker.handlers[EXCHANGE_HANDLER] = self.exchange
        self.outcomes.bind(worker.loop.add_callback)
        worker.handlers[OUTCOME_STREAM_HANDLER] = self.outcomes.serve
        worker.handlers[CALL_HANDLER] = self.call

    def teardown(self, worker: Any) -> None:
        """End every task process of this node; the worker is closing."""
        self.kill_all()
        self.processes.warden.stop()
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    # --------------------------------------------------------------- run intake

    def exchange(self, launches: bytes) -> None:
        """The worker handler the service sends runs to (one-way: nothing is replied).

        Parameters
        ----------
        launches
            A pickled list of :class:`Launch` to start now (see :meth:`enqueue`);
            their outcomes go to the service on the outcome stream (:attr:`outcomes`).
        """
        self.enqueue(pickle.loads(launches))

    def enqueue(self, launches: list[Launch]) -> int:
        """Start runs on this node without waiting for them (:meth:`exchange` calls it).

        A task's run (:attr:`Launch.slots` set) waits, first in first out,
        until its slots are free: the service sends short runs ahead of free
        slots. A plain run (no packages, resource or output files, logs kept
        in local storage) starts right here on the worker's event loop and is
        awaited through a pidfd, with no thread of its own; any other run
        executes :meth:`run_task` on the node's thread pool. Outcomes go to
        the service on its outcome stream (:attr:`outcomes`).

        Parameters
        ----------
        launches
            The runs.

        Returns
        -------
        int
            How many runs were queued.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for launch in launches:
            if launch.slots is None:
                self._start(launch, loop)
                continue
            with self._lock:
                self._queue.add(launch, time.monotonic())
        self._start_queued(loop)
        if loop is not None and self._give_back_timer is None and len(self._queue):
            self._give_back_timer = loop.call_later(GIVE_BACK_S, self._give_back)
        return len(launches)

    def _give_back(self) -> None:
        """Give the service back the runs that waited :data:`GIVE_BACK_S` for free slots
        (on the worker's event loop; re-armed while runs wait)."""
        self._give_back_timer = None
        now = time.monotonic()
        with self._lock:
            late = self._queue.overdue(now, GIVE_BACK_S)
            oldest = self._queue.oldest()
        for lc in late:
            self._report_unstarted(lc, None, failure_info(
                "servererror", RUN_RETURNED,
                f"The run waited {GIVE_BACK_S:g} s on node {self.node.node_id} for task slots "
                "held by longer runs; its task goes back to the queue."))
        if oldest is not None:
            self._give_back_timer = asyncio.get_running_loop().call_later(
                max(0.0, oldest + GIVE_BACK_S - now), self._give_back)

    def _start(self, launch: Launch, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is not None and HAS_PIDFD and _is_plain(launch) and not self._makes_user(launch):
            self._start_on_loop(launch, loop)
        else:
            self._pool().submit(self._run_and_report, launch)

    def _start_queued(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start the queued task runs, first in first out, while their slots are free
        (:meth:`~hpcbatch.execution.slot_queue.SlotQueue.pop_startable`)."""
        while True:
            with self._lock:
                head = self._queue.pop_startable()
                if head is None:
                    break
                flush = (self.outcomes.holding
                         and len(self._queue) <= HOLD_WHILE_QUEUED * self._queue.node_slots)
            self._start(head, loop)
            if flush and loop is not None:
                self.outcomes.flush_held()

    def queued(self) -> list[str]:
        """Return the keys of the task runs waiting on this node for free slots."""
        with self._lock:
            return self._queue.keys()

    def run_task(self, launch: Launch) -> Outcome:
        """Run one task on this node and wait for it (executes in a worker thread).

        Steps: prepare the task directory and environment, download the resource
        files, run the command line, then upload the output files whose upload
        condition holds and persist ``stdout.txt``/``stderr.txt`` as ``$TaskLog``.
        The outcome is also queued for the service (:attr:`outcomes`).

        Parameters
        ----------
        launch
            What to run; see :class:`Launch`.

        Returns
        -------
        Outcome
            Exit code, times and failure information. A resource file that cannot
            be downloaded, or a program that cannot be started, gives a
            pre-processing failure (category ``usererror``, code
            ``ResourceFileDownloadFailed``, ``CommandProgramNotFound`` or
            ``CommandLineInvalid``, no exit code); a run ended by its wall-clock
            limit gives exit code ``0xC000013A`` and code ``TaskEnded``, as Batch
            reports it; an output upload failure gives code ``FileUploadError``
            with the exit code kept.
        """
        start = _now()
        try:
            tdir, wd, env, creds = self._prepare(launch)
        except identity.UserSwitchError as exc:
            outcome = self._user_failure(launch, exc, start)
            self._report(launch.key, outcome)
            return outcome
        try:
            code, failure, usage = self._execute(launch, tdir, wd, env, creds)
            failure = _persist(launch, tdir, wd, code, failure, _confined(creds))
        finally:
            self._drop_task_user(launch, tdir)
        outcome = Outcome(code, start, _now(), failure, tdir, self.node.node_id, usage)
        self._report(launch.key, outcome)
        return outcome

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(EXECUTOR_THREADS,
                                                    thread_name_prefix="hpcbatch-run")
            return self._executor

    def _prepare(self, launch: Launch,
                 ) -> tuple[str, str, dict[str, str], identity.Credentials | None]:
        """Create the task directory and its files; return (task dir, working dir, Batch
        variables, the credentials of the user it runs as or None).

        The variables are those the task adds to :attr:`base_env`. Under user
        switching the task directory and everything in it belong to the run's
        user, and the task directory is closed to others (mode 0700).

        The agent runs as root, and the directory of a retry (or a job preparation
        task's, reused) was the task's to change: nothing here follows a link in
        it. The task directory and ``wd`` are opened without following links, and
        a ``wd`` (or a folder of :attr:`Launch.files`) that is not a real folder
        is removed and made again; owners and modes are set on the open
        descriptors, the logs of the earlier run are unlinked.

        Raises
        ------
        identity.UserSwitchError
            The run's user does not exist on the node or cannot be made.
        """
        # Plain strings and os calls: pathlib costs more than the system calls here.
        node = self.node
        tdir = os.path.join(node.root_dir, launch.task_dir)
        wd = os.path.join(tdir, "wd")
        parent = os.path.dirname(tdir)
        if parent not in self._job_dirs:
            os.makedirs(parent, exist_ok=True)
            self._job_dirs.add(parent)
        try:
            os.mkdir(tdir)
            tfd = os.open(tdir, node_files.DIR_FLAGS)
        except FileExistsError:  # an earlier run (a retry): its logs may be stored as links
            tfd = os.open(tdir, node_files.DIR_FLAGS)  # its parent is the agent's: no link here
            for name in (launch.stdout_name, launch.stderr_name):
                try:
                    os.unlink(name, dir_fd=tfd)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:  # the task made a folder of that name
                    shutil.rmtree(name, dir_fd=tfd)
        try:
            wfd = node_files.real_dir(tfd, "wd")
            try:
                creds = self._credentials(launch, tdir)
                env = task_environment(node, task_dir_rel=launch.task_dir,
                                       job_id=launch.job_id, task_id=launch.task_id,
                                       settings=launch.settings, extra=launch.extra_env)
                env[RUN_TAG] = launch.key
                for rel, data in launch.files.items():
                    node_files.write_in(tfd, rel, data, 0o700 if rel.endswith("/ssh") else 0o600, creds)
                if creds is not None:
                    for fd in (tfd, wfd):
                        os.fchown(fd, creds.uid, creds.gid)
                    # The start task's folder stays readable: tasks use what it installs.
                    os.fchmod(tfd, 0o755 if launch.task_dir == STARTUP_DIR else 0o700)
                    env.update(creds.env())
            finally:
                os.close(wfd)
        finally:
            os.close(tfd)
        return tdir, wd, env, creds

    def _makes_user(self, launch: Launch) -> bool:
        """A run whose user is made for it (task scope): ``useradd`` blocks, so not on the loop."""
        return (self.switcher is not None and launch.run_as is not None
                and launch.run_as.scope == "task")

    def _credentials(self, launch: Launch, tdir: str) -> identity.Credentials | None:
        """The credentials the run's process gets, or None when the agent does not switch users."""
        if self.switcher is None:
            return None
        run_as = launch.run_as or RunAs(identity.POOL_AUTO_USER)
        if run_as.scope == "task":
            return self.switcher.make_task_user(run_as, tdir)
        return self.switcher.credentials(run_as)

    def _drop_task_user(self, launch: Launch, tdir: str) -> None:
        """Remove the task-scope user of an ended run, and those whose leftovers ended since."""
        if not self._makes_user(launch):
            return
        assert self.switcher is not None and launch.run_as is not None
        with self._lock:
            self._task_users[launch.run_as.user] = tdir
            waiting = list(self._task_users.items())
        for name, path in waiting:
            keep = launch.keep_background and name == launch.run_as.user
            if not keep and self.switcher.drop_task_user(name, path):
                with self._lock:
                    self._task_users.pop(name, None)

    # ------------------------------------------------------- runs on the loop

    def _start_on_loop(self, launch: Launch, loop: asyncio.AbstractEventLoop) -> None:
        """Start a plain run's process and watch its pidfd; report at once if it cannot start."""
        node = self.node
        start = _now()
        try:
            tdir, wd, env, creds = self._prepare(launch)
            # Raw descriptors: a buffered file object costs three more system calls each.
            out = os.open(os.path.join(tdir, launch.stdout_name), node_files.LOG_FLAGS, 0o666)
            try:
                err = os.open(os.path.join(tdir, launch.stderr_name), node_files.LOG_FLAGS, 0o666)
                try:
                    child, failure = self.processes.spawn(launch.key, launch.command_line, wd,
                                                          env, out, err, creds, launch.container)
                finally:
                    os.close(err)
            finally:
                os.close(out)
            if child is None:
                self._report(launch.key,
                             Outcome(None, start, _now(), failure, tdir, node.node_id))
                return
            try:
                pidfd = os.pidfd_open(child.pid)
            except OSError:  # the kernel refuses pidfds after all: wait in a thread
                self._pool().submit(self._wait_and_report, launch, tdir, wd, child, start,
                                    _confined(creds))
                return
        except BaseException as exc:  # noqa: BLE001 - report every end, even an agent fault
            self._report_fault(launch, exc)
            return
        run = _LoopRun(launch, tdir, wd, start, child, pidfd, _confined(creds))
        if launch.max_wall_clock_s is not None:
            run.timer = loop.call_later(launch.max_wall_clock_s, self._time_out, run)
        loop.add_reader(pidfd, self._exited, run, loop)

    @staticmethod
    def _time_out(run: _LoopRun) -> None:
        run.timed_out = True
        kill_process_tree(run.child.pid)

    def _exited(self, run: _LoopRun, loop: asyncio.AbstractEventLoop) -> None:
        """A loop run's process ended: settle its exit, save its logs, report its outcome."""
        loop.remove_reader(run.pidfd)
        os.close(run.pidfd)
        if run.timer is not None:
            run.timer.cancel()
        launch = run.launch
        try:
            rc = self.processes.reap(run.child)
            if run.timed_out:
                kill_tagged(launch.key, self.node.root_dir)
            code, failure = self.processes.settle(launch.key, run.child, rc, run.timed_out,
                                                  launch.max_wall_clock_s, launch.keep_background)
            # Logs go to local storage as hard links (no copy): cheap enough for the loop.
            self._persist_and_report(launch, run.tdir, run.wd, run.start, code, failure,
                                     run.child.usage, run.confined)
        except BaseException as exc:  # noqa: BLE001 - report every end, even an agent fault
            self._report_fault(launch, exc)

    # ---------------------------------------------------- runs in the thread pool

    def _persist_and_report(self, launch: Launch, tdir: str, wd: str, start: datetime,
                            code: int | None, failure: dict[str, Any] | None,
                            usage: dict[str, float] | None, confined: bool = False) -> None:
        try:
            failure = _persist(launch, tdir, wd, code, failure, confined)
            self._report(launch.key, Outcome(code, start, _now(), failure, tdir,
                                             self.node.node_id, usage))
        except BaseException as exc:  # noqa: BLE001 - report every end, even an agent fault
            self._report_fault(launch, exc)

    def _wait_and_report(self, launch: Launch, tdir: str, wd: str,
                         child: Child, start: datetime, confined: bool = False) -> None:
        """Wait for a started process in this thread (no pidfd), then persist and report."""
        try:
            code, failure = self.processes.wait(launch.key, child, launch.max_wall_clock_s,
                                                launch.keep_background)
        except BaseException as exc:  # noqa: BLE001 - report every end, even an agent fault
            self._report_fault(launch, exc)
            return
        self._persist_and_report(launch, tdir, wd, start, code, failure, child.usage,
                                 confined)

    def _run_and_report(self, launch: Launch) -> None:
        try:
            self.run_task(launch)
        except BaseException as exc:  # noqa: BLE001 - report every end, even an agent fault
            self._report_fault(launch, exc)

    def _user_failure(self, launch: Launch, exc: Exception, start: datetime) -> Outcome:
        """The outcome of a run whose user does not exist or cannot be made (pre-processing)."""
        user = launch.run_as.user if launch.run_as else identity.POOL_AUTO_USER
        return Outcome(None, start, _now(), failure_info(
            "usererror", "UserIdentityInvalid",
            f"The task cannot run as user {user} on node {self.node.node_id}: {exc}"),
            "", self.node.node_id)

    def _report_fault(self, launch: Launch, exc: BaseException) -> None:
        """Report a run that ended because the agent itself failed (``NodeAgentError``), or
        whose user cannot be found (``UserIdentityInvalid``)."""
        node_id = self.node.node_id
        now = _now()
        if isinstance(exc, identity.UserSwitchError):
            self._report(launch.key, self._user_failure(launch, exc, now))
            return
        self._report(launch.key, Outcome(None, now, now, failure_info(
            "servererror", "NodeAgentError", f"node {node_id}: {type(exc).__name__}: {exc}"),
            "", node_id))

    def _execute(self, launch: Launch, tdir: str, wd: str, env: dict[str, str],
                 creds: identity.Credentials | None = None,
                 ) -> tuple[int | None, dict[str, Any] | None, dict[str, float] | None]:
        """Download inputs, run the command line and wait; return (exit code, failure info, usage)."""
        from hpcbatch.execution import transfer

        node = self.node
        if launch.job_id:  # the task's scoped storage reaches this container only
            transfer.prepare_job_container(launch.job_id, launch.storage)
        with open(os.open(os.path.join(tdir, launch.stdout_name), node_files.LOG_FLAGS, 0o666), "wb") as out, \
                open(os.open(os.path.join(tdir, launch.stderr_name), node_files.LOG_FLAGS, 0o666),
                     "wb") as err:
            pull_failure = self._pull(launch.container)
            if pull_failure is not None:
                err.write((pull_failure["message"] + "\n").encode())
                return None, pull_failure, None
            for ref in launch.packages:
                try:
                    folder = packages.install(Path(node.root_dir), ref,
                                              transfer.fetcher(launch.storage))
                except Exception as exc:  # noqa: BLE001 - any install failure fails the task, told in its stderr
                    msg = (f"The application package {ref.application_id} version "
                           f"{ref.version} could not be installed on node {node.node_id}: {exc}")
                    err.write((msg + "\n").encode())
                    return None, failure_info("usererror", "ApplicationPackageFailed", msg), None
                env[packages.variable_name(ref.application_id, ref.version)] = str(folder)
                if ref.is_default:
                    env[packages.variable_name(ref.application_id)] = str(folder)
            if launch.resource_files:
                try:
                    transfer.download_resource_files(launch.resource_files,
                                                     Path(tdir, launch.resource_dir),
                                                     launch.storage)
                except transfer.TransferError as exc:
                    err.write((exc.message + "\n").encode())
                    return None, failure_info("usererror", exc.code, exc.message), None
                if creds is not None:
                    node_files.chown_tree(Path(tdir, launch.resource_dir), creds)
            child, failure = self.processes.spawn(launch.key, launch.command_line, wd, env,
                                                  out, err, creds, launch.container)
        if child is None:
            return None, failure, None
        code, failure = self.processes.wait(launch.key, child, launch.max_wall_clock_s,
                                            launch.keep_background)
        return code, failure, child.usage

    def _pull(self, container: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Log in to a container run's ``registry`` and pull its image; None, or the
        task's failure info (``usererror``, naming the node and the registry server).

        As the prefetch of a pool's images (:func:`hpcbatch.execution.images.pull_images`):
        the node agent's own identity and the node's task environment (never the
        task's: its variables do not reach a process of the agent), so the login
        stays the agent's and the task's runtime finds the image pulled. A node
        without a runtime is left to the run, which fails with
        ``ContainerRuntimeNotFound``.

        Once an image is pulled with a registry (by a run, or by the prefetch with
        that registry among the pool's), later runs naming both skip the login
        and the pull, as Batch pulls a task's image only when the node lacks it;
        the runtime keeps the login, so its ``run`` can still pull an image
        removed from the host since.
        """
        if not container or not container.get("registry") \
                or container.get(containers.TYPE_KEY) is None:
            return None
        from hpcbatch.execution import images  # lazy: container tasks with a registry only

        registry, image = container["registry"], str(container["imageName"])
        kind = str(container[containers.TYPE_KEY])
        pulled = (kind, image, images.registry_fingerprint(registry))
        if pulled in self._pulled:  # logged in and pulled by an earlier run or the prefetch
            return None
        answer = images.pull_images(kind, [image], self.base_env, [registry])
        code = answer.get("code")
        if code is None:
            self._pulled.add(pulled)
            return None
        if code == "ContainerRuntimeNotFound":
            return None
        server = images.registry_server(registry)
        what = (f"could not log in to container registry {server}"
                if code == "ContainerRegistryLoginFailed"
                else f"could not pull the image {image} (container registry {server})")
        return failure_info("usererror", str(code),
                            f"The container task cannot start: node {self.node.node_id} "
                            f"{what}: {answer.get('message')}",
                            node=self.node.node_id, registry=server)

    # ------------------------------------------------------------ processes

    def kill_task(self, key: str) -> bool:
        """Kill the process tree of a running run ("Task - Terminate").

        Parameters
        ----------
        key
            The :attr:`Launch.key` of the run.

        Returns
        -------
        bool
            True when a running process was found and killed, or a run waiting
            for free slots was ended (reported ``TaskEnded``, as a killed run).
            A run that has not started yet is ended as soon as it starts.
        """
        with self._lock:
            waiting = self._queue.remove(key)
        if waiting is not None:
            self._report_unstarted(waiting, EXIT_CODE_TASK_ENDED, failure_info(
                "usererror", "TaskEnded", "The task was ended by user request."))
            return True
        return self.processes.kill(key)

    def kill_all(self) -> int:
        """Kill every task process of this node and drop the runs waiting for slots;
        return how many runs were running or waiting."""
        with self._lock:
            waiting = self._queue.clear()
        return self.processes.kill_all() + waiting

    # --------------------------------------------------------- outcomes

    def _report(self, key: str, outcome: Outcome) -> None:
        """Queue an outcome for the service's outcome stream (:attr:`outcomes`; any thread).

        A task run's slots are free again: the next queued run starts. While
        runs stay queued beyond :data:`HOLD_WHILE_QUEUED` times the node's
        slots, the outcome is held for others (:meth:`OutcomeStream.send`): the
        node has work meanwhile, and outcomes that travel together cost the
        node and the service one wake-up, not one each.
        """
        with self._lock:
            freed = self._queue.release(key)
            self.outcomes.put(key, outcome)
        if freed:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None and self.worker is not None:
                self.worker.loop.add_callback(self._start_queued_on_loop)  # thread-safe
            else:  # on a loop, or no worker at all (runs then go to the thread pool)
                self._start_queued(loop)
        with self._lock:
            hold = len(self._queue) > HOLD_WHILE_QUEUED * self._queue.node_slots
        self.outcomes.send(hold=hold)

    def _report_unstarted(self, launch: Launch, code: int | None,
                          failure: dict[str, Any]) -> None:
        """Report a queued run that ends without starting (ended, or given back)."""
        at = _now()
        self._report(launch.key, Outcome(code, at, at, failure,
                                         str(Path(self.node.root_dir, launch.task_dir)),
                                         self.node.node_id))

    def _start_queued_on_loop(self) -> None:
        self._start_queued(asyncio.get_running_loop())

    def pending_outcomes(self) -> list[dict[str, Any]]:
        """Return (a copy of) the outcomes waiting for the service's outcome stream."""
        return self.outcomes.pending()

    # ----------------------------------------------------------- out-of-band calls

    async def call(self, operation: str,
                   args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The worker handler the service calls the agent's operations through.

        Parameters
        ----------
        operation
            One of :data:`CALL_OPS`: ``kill_task(key)``, ``kill_tagged(key)``,
            ``list_files(rel_dir, recursive)``, ``read_file(rel_path, offset,
            length)``, ``remove_dirs(rel_dirs)``, ``node_sample()``, ``node_info()``,
            ``pull_images(container_type, images, registries)``
            (:func:`hpcbatch.execution.images.pull_images`).
        args
            The operation's keyword arguments (msgpack values).

        Returns
        -------
        dict
            ``{"status": "OK", "result": ...}`` with a msgpack result, or
            ``{"status": "error", "message": ...}`` (an unknown operation, bad
            arguments, or the operation failed). Never an exception: Dask
            would send it pickled, and the service refuses pickles from nodes.
        """
        op = operation
        if op not in CALL_OPS:
            return {"status": "error", "message": f"unknown node agent operation {op!r}"}
        kwargs = dict(args or {})
        try:
            if op == "kill_task":
                result: Any = self.kill_task(str(kwargs["key"]))
            elif op == "kill_tagged":
                result = kill_tagged(str(kwargs["key"]), self.node.root_dir)
            elif op == "node_sample":
                from hpcbatch.execution import metrics  # lazy: lark, for a rare call
                result = metrics.node_sample()
            elif op == "node_info":
                result = {"node_id": self.node.node_id, "pool_id": self.node.pool_id,
                          "root_dir": self.node.root_dir}
            elif op == "list_files":
                result = await asyncio.to_thread(self.files.list_files, str(kwargs["rel_dir"]),
                                                 bool(kwargs.get("recursive", False)))
            elif op == "read_file":
                length = kwargs.get("length")
                result = await asyncio.to_thread(
                    self.files.read_file, str(kwargs["rel_path"]), int(kwargs.get("offset") or 0),
                    None if length is None else int(length))
            elif op == "pull_images":
                from hpcbatch.execution import images  # lazy: once per node start
                kind, wanted = kwargs.get("container_type"), [str(i) for i in kwargs["images"]]
                registries = [dict(r) for r in kwargs.get("registries") or []]
                result = await asyncio.to_thread(images.pull_images, kind, wanted,
                                                 self.base_env, registries)
                if isinstance(result, dict) and result.get("code") is None:
                    self._pulled.update((str(kind), image, images.registry_fingerprint(r))
                                        for image in wanted for r in registries)
            elif op in nodeops.NODE_CALLS:  # file delete, node users, certificates
                result = await asyncio.to_thread(nodeops.NODE_CALLS[op], self.node.root_dir,
                                                 kwargs)
            else:
                result = await asyncio.to_thread(self.files.remove_dirs,
                                                 [str(d) for d in kwargs["rel_dirs"]])
        except Exception as exc:  # noqa: BLE001 - reported as plain text, never pickled
            return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
        return {"status": "OK", "result": result}
