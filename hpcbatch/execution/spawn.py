"""Task processes on a node: start, wait, kill, and tie them to the node agent's life.

The node agent (:mod:`hpcbatch.execution.agent`) decides what runs; this module
owns the processes. :class:`Processes` starts a run's command line without a
shell in a session of its own (``subprocess`` with ``vfork``: the agent's
memory is never copied), waits for it (a pidfd on the agent's event loop, or a
thread), reaps it with ``os.wait4`` (so its resource usage is known, see
:func:`usage_of`), enforces the wall-clock limit and kills whole process trees.

Tasks never outlive their agent, even when it is killed with ``SIGKILL``
(:class:`Warden`): a small watchdog process, started once per agent, holds
the read end of a pipe whose write end only the agent holds. When the agent
dies for any reason, the kernel closes the pipe; the watchdog then kills the
process groups of the runs still going and every process whose environment
carries this agent incarnation's :data:`AGENT_TAG` (daemons that left the
group, grandchildren), and exits. A new incarnation of a node also kills, when
its warden starts, whatever of an earlier incarnation of the same node root is
still alive (the watchdog itself may have been killed with the agent).
"""

from __future__ import annotations

import errno
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from hpcbatch.execution import containers, identity

EXIT_CODE_TASK_ENDED = 0xC000013A
"""Batch's exit code for a task ended by its wall-clock limit or by request."""

RUN_TAG = "HPCBATCH_RUN_KEY"
"""Variable set in every task process: finds a run's processes, daemons included."""

AGENT_TAG = "HPCBATCH_AGENT"
"""Variable set in every task process: ``<incarnation>@<node root>`` of the agent that
started it; its :class:`Warden` kills every process carrying it when the agent dies."""

HAS_PIDFD = hasattr(os, "pidfd_open")
"""Linux >= 5.3: a process exit can be awaited on the event loop (else: in a thread)."""

_PRIVATE_PREFIXES = ("DASK_", "AZ_BATCH_", "CCP_", "SSH_", AGENT_TAG)

_WATCHDOG = r"""
import os, sys, time
tag = sys.argv[1].encode()
needle = b"\0" + sys.argv[2].encode() + b"=" + tag + b"\0"
groups, buf = set(), b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    if len(data) < 65536:
        time.sleep(0.05)  # read in batches: the agent's writes rarely wake this process
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
me = os.getpid()
for attempt in range(100):
    found = 0
    for g in groups:
        try:
            os.killpg(g, 9)
        except OSError:
            pass
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/" + name + "/environ", "rb") as fh:
                env = b"\0" + fh.read()
        except OSError:
            continue
        if needle in env:
            found += 1
            try:
                os.kill(int(name), 9)
            except OSError:
                pass
    if not found and attempt:
        break
    time.sleep(0.02)
"""
"""The watchdog's program (``python -I -S -c``: no site, no imports but ``os``)."""


def failure_info(category: str, code: str, message: str, **details: str) -> dict[str, Any]:
    """Return a ``TaskFailureInformation`` wire dict.

    Parameters
    ----------
    category
        ``usererror`` or ``servererror``.
    code, message
        Batch's error code and its message.
    details
        ``details`` name/value pairs.
    """
    info: dict[str, Any] = {"category": category, "code": code, "message": message}
    if details:
        info["details"] = [{"name": k, "value": v} for k, v in details.items()]
    return info


def _agent_entry(env: bytes) -> bytes:
    """The ``\\0AGENT_TAG=...\\0`` entry of a raw environment (``\\0``-led), or b""."""
    at = env.find(b"\0" + AGENT_TAG.encode() + b"=")
    if at < 0:
        return b""
    end = env.find(b"\0", at + 1)
    return env[at:] + b"\0" if end < 0 else env[at:end + 1]


def _kill_matching(match: Callable[[bytes], bool]) -> int:
    """SIGKILL every process (not this one) whose raw environment (``\\0``-led) ``match``es."""
    me = os.getpid()
    victims = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            with open(f"/proc/{p.pid}/environ", "rb") as fh:
                env = b"\0" + fh.read()
        except OSError:
            continue
        if match(env):
            victims.append(p)
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(victims)


def kill_tagged(key: str, root_dir: str | None = None) -> int:
    """Kill every process of this user whose environment carries run ``key``.

    Catches what left the process tree (``setsid``, double forks, daemons a
    coordination command started). Needs no agent: the service also runs it
    on a worker out of band.

    Parameters
    ----------
    key
        The :attr:`hpcbatch.execution.agent.Launch.key` of the run (the value of :data:`RUN_TAG`).
    root_dir
        Spare the processes an agent of another node root started (their
        :data:`AGENT_TAG`): other nodes on the same host keep theirs. None: spare none.

    Returns
    -------
    int
        How many processes were killed.
    """
    needle = b"\0" + os.fsencode(f"{RUN_TAG}={key}") + b"\0"
    if root_dir is None:
        return _kill_matching(lambda env: needle in env)
    node = os.fsencode(f"@{root_dir}") + b"\0"

    def ours(env: bytes) -> bool:
        if needle not in env:
            return False
        entry = _agent_entry(env)
        return not entry or entry.endswith(node)
    return _kill_matching(ours)


def kill_process_tree(proc: psutil.Process | int, sig: int = signal.SIGKILL) -> None:
    """Kill a process, its process group and every descendant.

    Descendants that left the group (``setsid``, daemons) are found through
    the process tree before anything is killed, so nothing is left behind.

    Parameters
    ----------
    proc
        The process, or its pid.
    sig
        The signal sent to each.
    """
    try:
        p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        victims = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for v in victims:
        try:
            v.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def base_environment(site: Mapping[str, str] | None = None) -> dict[bytes, bytes]:
    """Return this process's environment without Dask's, Batch's and SSH's own variables.

    Every task's environment starts from it (encoded, as ``Popen`` passes it
    on); a node agent computes it once, when it is made.

    The bin directory of the node's Python (the inventory host's ``python``:
    a virtual environment's ``bin``, where the ``mpich`` wheel puts ``mpiexec``)
    comes first on ``PATH``, as activating that environment would do, so
    tasks, start tasks and MPI launches find its programs although an SSH
    session's default ``PATH`` does not name it.

    Parameters
    ----------
    site
        The inventory host's ``env`` (site settings), applied over this process's
        variables; the Python's bin directory still comes first on ``PATH``.

    Returns
    -------
    dict
        Encoded variable names to encoded values.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    env.update(site or {})
    env["PATH"] = python_first_path(env.get("PATH", os.defpath))
    return {os.fsencode(k): os.fsencode(v) for k, v in env.items()}


def python_first_path(path: str, python: str = sys.executable) -> str:
    """Return ``path`` (a ``PATH`` value) with the bin directory of ``python`` first.

    Parameters
    ----------
    path
        A ``PATH`` value, ``:``-separated.
    python
        The interpreter whose directory goes first (not resolved: a venv's
        ``python`` is a link into the base installation).

    Returns
    -------
    str
        The new ``PATH``; that directory appears once.
    """
    first = os.path.dirname(python)
    if not first:
        return path
    rest = [p for p in path.split(os.pathsep) if p and p != first]
    return os.pathsep.join([first, *rest])


_SHLEX_SPECIAL = frozenset("'\"\\\x0b\x0c\x1c\x1d\x1e\x1f")
"""Characters after which ``str.split`` no longer splits a command line as ``shlex.split``
does: quotes, the escape, and the ASCII whitespace that ``shlex`` does not split on."""


def split_command_line(command_line: str) -> list[str]:
    """Split a command line with POSIX shell rules, as ``shlex.split`` does.

    A line of ASCII without quotes or backslashes (``/bin/true``, ``python
    run.py 3``) splits on whitespace alone: the same words, at a fraction of
    ``shlex``'s cost.

    Raises
    ------
    ValueError
        Unbalanced quotes or a trailing escape.
    """
    if command_line.isascii() and _SHLEX_SPECIAL.isdisjoint(command_line):
        return command_line.split()
    return shlex.split(command_line)


def usage_of(ru: Any) -> dict[str, float]:
    """Return a task's resource usage from the ``struct rusage`` of ``os.wait4``.

    Parameters
    ----------
    ru
        ``resource.struct_rusage`` of the task process (and the children it reaped).

    Returns
    -------
    dict
        ``user_cpu_s``, ``kernel_cpu_s`` (seconds), ``read_bytes``, ``write_bytes``
        (block I/O: ``ru_inblock``/``ru_oublock`` x 512), ``read_ops``,
        ``write_ops`` (those block counts), ``max_rss_bytes`` (``ru_maxrss`` KiB x 1024).
    """
    return {"user_cpu_s": float(ru.ru_utime), "kernel_cpu_s": float(ru.ru_stime),
            "read_bytes": float(ru.ru_inblock * 512), "write_bytes": float(ru.ru_oublock * 512),
            "read_ops": float(ru.ru_inblock), "write_ops": float(ru.ru_oublock),
            "max_rss_bytes": float(ru.ru_maxrss * 1024)}


class Warden:
    """Ties the task processes of one agent incarnation to the agent's life.

    :meth:`start` kills what an earlier incarnation of the same node root left
    running, then starts the watchdog (see the module docstring). Every task
    carries :attr:`tag` in :data:`AGENT_TAG`; :meth:`track`/:meth:`untrack` tell
    the watchdog a run's process group (one small pipe write each).

    Parameters
    ----------
    root_dir
        The node root directory (absolute): what identifies the node on its host.
    """

    def __init__(self, root_dir: str) -> None:
        self.root_dir = root_dir
        self.tag = f"{os.getpid()}.{time.time_ns()}@{root_dir}"
        """This incarnation's value of :data:`AGENT_TAG`."""
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        """The watchdog process, once started."""

    def start(self) -> int:
        """Kill the processes of earlier incarnations of this node; start the watchdog (once).

        Returns
        -------
        int
            How many processes of earlier incarnations were killed.
        """
        with self._lock:
            if self.watchdog is not None:
                return 0
            killed = kill_previous(self.root_dir, self.tag)
            read, write = os.pipe()  # not inheritable: tasks never hold the write end
            try:
                env = {k: v for k, v in os.environ.items() if not k.startswith(AGENT_TAG)}
                self.watchdog = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _WATCHDOG, self.tag, AGENT_TAG],
                    stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    env=env, start_new_session=True, close_fds=True)
            finally:
                os.close(read)
            self._fd = write
            return killed

    def track(self, pgid: int) -> None:
        """Tell the watchdog about a run's process group (kill it if the agent dies)."""
        self._send(b"+%d\n" % pgid)

    def untrack(self, pgid: int) -> None:
        """The run of this process group ended: the watchdog forgets it."""
        self._send(b"-%d\n" % pgid)

    def _send(self, line: bytes) -> None:
        fd = self._fd
        if fd is not None:
            try:
                os.write(fd, line)
            except OSError:  # the watchdog is gone: the environment tag still works at restart
                pass

    def stop(self) -> None:
        """Close the pipe: the watchdog kills what is left of this incarnation's tasks and exits."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


def kill_previous(root_dir: str, current: str | None = None) -> int:
    """Kill the task processes that earlier agent incarnations of a node root left alive.

    Parameters
    ----------
    root_dir
        The node root (absolute).
    current
        This incarnation's :attr:`Warden.tag`: its processes are spared.

    Returns
    -------
    int
        How many processes were killed.
    """
    node = os.fsencode(f"@{root_dir}") + b"\0"
    exclude = None if current is None else b"\0" + os.fsencode(f"{AGENT_TAG}={current}") + b"\0"

    def earlier(env: bytes) -> bool:
        entry = _agent_entry(env)
        return entry.endswith(node) and entry != exclude
    return _kill_matching(earlier)


_AGENT_TAG_B = AGENT_TAG.encode()
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _fileno(f: IO[bytes] | int) -> int:
    return f if isinstance(f, int) else f.fileno()


def _write(f: IO[bytes] | int, message: str) -> None:
    """Write one line to an open file or file descriptor (a start failure to ``stderr.txt``)."""
    data = (message + "\n").encode()
    if isinstance(f, int):
        os.write(f, data)
    else:
        f.write(data)


@dataclass
class Child:
    """A started task process until it is reaped.

    Attributes
    ----------
    popen
        The process.
    pid
        Its pid (also its process group and session).
    usage
        Its resource usage once reaped (:func:`usage_of`), else None.
    """

    popen: subprocess.Popen[bytes]
    pid: int
    usage: dict[str, float] | None = None


class Processes:
    """The task processes of one node agent: start, wait, settle, kill.

    Parameters
    ----------
    node_id
        The node's ID (named in error messages).
    base_env
        Encoded environment every task starts from (:func:`base_environment`).
    warden
        Ties the processes to the agent's life; started at the first spawn if
        nobody started it before.
    """

    def __init__(self, node_id: str, base_env: dict[bytes, bytes], warden: Warden) -> None:
        self.node_id = node_id
        self.base_env = base_env
        self.warden = warden
        self._lock = threading.Lock()
        self._running: dict[str, Child] = {}
        self._killed: set[str] = set()
        self._null: int | None = None

    def _devnull(self) -> int:
        """``/dev/null`` for the tasks' stdin, opened once (not inherited: the child gets a copy)."""
        if self._null is None:
            with self._lock:
                if self._null is None:
                    self._null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._null

    def spawn(self, key: str, command_line: str, wd: str | Path, env: Mapping[str, str],
              out: IO[bytes] | int, err: IO[bytes] | int,
              creds: identity.Credentials | None = None,
              container: Mapping[str, Any] | None = None,
              ) -> tuple[Child | None, dict[str, Any] | None]:
        """Start a command line without a shell in its own session; (child, None) or (None, failure).

        With ``creds`` the process runs as that user (its uid, primary group and
        supplementary groups), and its output files belong to it.

        Parameters
        ----------
        key
            The run's key (:data:`RUN_TAG`), for :meth:`kill`.
        command_line
            Split with POSIX shell rules.
        wd
            Working directory.
        env
            Variables added to :attr:`base_env`.
        out, err
            Open files (or file descriptors) receiving stdout and stderr; a start
            failure is written to ``err``.
        creds
            The user to run as, or None for the agent's own identity.
        container
            The launch's container dict
            (:func:`hpcbatch.execution.containers.launch_container`): the command
            runs in its image through a runtime on the task ``PATH``, never on the host.

        Returns
        -------
        tuple
            The child, or a ``CommandLineInvalid``/``CommandProgramNotFound``/
            ``CommandProgramFailed``/``ContainerConfigurationMissing``/
            ``ContainerRuntimeNotFound``/``ContainerRunOptionsInvalid`` failure info.
        """
        try:
            argv = split_command_line(command_line)
        except ValueError as exc:
            return None, failure_info("usererror", "CommandLineInvalid",
                                      f"The command line cannot be parsed: {exc}")
        if not argv:
            return None, failure_info("usererror", "CommandLineInvalid",
                                      "The command line is empty.")
        if self.warden.watchdog is None:
            self.warden.start()
        full_env = dict(self.base_env)
        for k, v in env.items():  # os.fsencode's encoding, without its call per string
            full_env[k.encode(_FS_ENCODING, _FS_ERRORS)] = v.encode(_FS_ENCODING, _FS_ERRORS)
        full_env[_AGENT_TAG_B] = os.fsencode(self.warden.tag)
        if container is not None:
            argv, failure = self._containerized(argv, container, wd, env, full_env)
            if failure is not None:
                _write(err, failure["message"])
                return None, failure
        user: dict[str, Any] = {}
        try:
            if creds is not None:
                os.fchown(_fileno(out), creds.uid, creds.gid)
                os.fchown(_fileno(err), creds.uid, creds.gid)
                if creds.uid == os.geteuid():  # root runs as root: nothing to switch
                    pass
                elif identity.SETPRIV is None:  # subprocess switches: fork, not vfork
                    user = {"user": creds.uid, "group": creds.gid,
                            "extra_groups": list(creds.groups)}
                elif identity.program_missing(argv[0], os.fsdecode(full_env.get(b"PATH", b"")),
                                              wd):
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
                else:
                    argv = identity.setpriv_argv(creds, argv)
            proc = subprocess.Popen(
                argv, cwd=wd, env=full_env, stdin=self._devnull(), stdout=out, stderr=err,
                start_new_session=True, close_fds=True, **user,
            )
        except OSError as exc:
            msg = (f"The command program {argv[0]!r} could not be started on node "
                   f"{self.node_id}: {exc.strerror or exc}")
            _write(err, msg)
            code = ("CommandProgramNotFound" if isinstance(exc, FileNotFoundError)
                    else "CommandProgramFailed")
            return None, failure_info("usererror", code, msg)
        child = Child(proc, proc.pid)
        self.warden.track(child.pid)
        with self._lock:
            self._running[key] = child
            ended_early = key in self._killed
        if ended_early:  # kill() came before the process existed
            kill_process_tree(child.pid)
        return child, None

    def _containerized(self, argv: list[str], container: Mapping[str, Any], wd: str | Path,
                       env: Mapping[str, str], full_env: Mapping[bytes, bytes],
                       ) -> tuple[list[str], dict[str, Any] | None]:
        """The runtime argv running ``argv`` in the launch's container, or a failure info."""
        kind = container.get(containers.TYPE_KEY)
        if kind is None:
            return argv, failure_info(
                "usererror", "ContainerConfigurationMissing",
                f"The task has containerSettings, but the pool of node {self.node_id} has no "
                "virtualMachineConfiguration.containerConfiguration: it is not run on the "
                "host instead.")
        path = os.fsdecode(full_env.get(b"PATH", b""))
        runtime = containers.find_runtime(kind, path)
        if runtime is None:
            return argv, failure_info(
                "usererror", "ContainerRuntimeNotFound",
                f"No container runtime for containerConfiguration type {kind} on node "
                f"{self.node_id}: looked for {', '.join(containers.runtime_names(kind))} "
                f"on PATH {path!r}; the task is not run on the host instead.",
                node=self.node_id, runtimes=",".join(containers.runtime_names(kind)),
                path=path)
        try:
            return containers.container_argv(
                runtime, container, argv, root_dir=self.warden.root_dir,
                working_dir=str(wd), env_names=env), None
        except ValueError as exc:
            return argv, failure_info("usererror", "ContainerRunOptionsInvalid",
                                      f"containerSettings.containerRunOptions cannot be "
                                      f"parsed: {exc}")

    @staticmethod
    def reap(child: Child) -> int:
        """Wait for a child's exit (blocking), record its usage; return its wait status as a code.

        Returns
        -------
        int
            The exit code, or ``-signal`` when a signal ended it.
        """
        while True:
            try:
                _, status, ru = os.wait4(child.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:  # reaped elsewhere: nothing more is known
                child.popen.returncode = child.popen.returncode or 0
                return child.popen.returncode
        child.usage = usage_of(ru)
        rc = os.waitstatus_to_exitcode(status)
        child.popen.returncode = rc  # Popen must not wait for it again
        return rc

    @staticmethod
    def exited_within(child: Child, timeout_s: float | None) -> bool:
        """Block until the child exits or ``timeout_s`` passes (None: no limit); True when it exited."""
        if HAS_PIDFD:
            try:
                fd = os.pidfd_open(child.pid)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    ready, _, _ = select.select([fd], [], [], timeout_s)
                    return bool(ready)
                finally:
                    os.close(fd)
        try:
            child.popen.wait(timeout=timeout_s)  # polls; records returncode only after exit
        except subprocess.TimeoutExpired:
            return False
        return True

    def wait(self, key: str, child: Child, max_wall_clock_s: float | None,
             keep_background: bool = False) -> tuple[int | None, dict[str, Any] | None]:
        """Wait for a started process in this thread, within the wall-clock limit.

        Returns
        -------
        tuple
            (exit code, failure info), as :meth:`settle`.
        """
        timed_out = not self.exited_within(child, max_wall_clock_s)
        if timed_out:
            kill_process_tree(child.pid)
        rc = self.reap(child)
        if timed_out:
            kill_tagged(key, self.warden.root_dir)
        return self.settle(key, child, rc, timed_out, max_wall_clock_s, keep_background)

    def settle(self, key: str, child: Child, rc: int, timed_out: bool,
               max_wall_clock_s: float | None = None, keep_background: bool = False,
               ) -> tuple[int | None, dict[str, Any] | None]:
        """Turn an ended process into (exit code, failure info); leave nothing of its group behind.

        Parameters
        ----------
        key
            The run's key.
        child
            The reaped process.
        rc
            Its exit code (``-signal`` for a signal).
        timed_out
            The wall-clock limit ended it.
        max_wall_clock_s
            That limit (for the message).
        keep_background
            Leave the processes it started in the background running.

        Returns
        -------
        tuple
            (exit code, failure info): ``TaskEnded`` with :data:`EXIT_CODE_TASK_ENDED`
            on timeout or :meth:`kill`, ``FailureExitCode`` on a nonzero code
            (signals as 128+n), (0, None) on success.
        """
        try:
            if timed_out:
                return EXIT_CODE_TASK_ENDED, failure_info(
                    "servererror", "TaskEnded",
                    "The task was ended because it exceeded its maxWallClockTime "
                    f"of {max_wall_clock_s or 0:g} s.")
            if not keep_background:
                # The main process has ended: leave nothing of its group behind.
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            if not keep_background:
                self.warden.untrack(child.pid)
            with self._lock:
                self._running.pop(key, None)
                killed = key in self._killed
                self._killed.discard(key)
        if killed:
            return EXIT_CODE_TASK_ENDED, failure_info("usererror", "TaskEnded",
                                                      "The task was ended by user request.")
        code = rc if rc >= 0 else 128 - rc
        if code != 0:
            return code, failure_info("usererror", "FailureExitCode",
                                      f"The task process exited with an unexpected exit code {code}.")
        return 0, None

    def running(self) -> list[str]:
        """Return the keys of the runs whose process is running."""
        with self._lock:
            return list(self._running)

    def kill(self, key: str) -> bool:
        """Kill the process tree of a running run ("Task - Terminate").

        Parameters
        ----------
        key
            The run's key.

        Returns
        -------
        bool
            True when a running process was found and killed. A run that has not
            started yet is ended as soon as it starts.
        """
        with self._lock:
            child = self._running.get(key)
            self._killed.add(key)  # also ends a run that has not started its process yet
        if child is not None:
            kill_process_tree(child.pid)
        return kill_tagged(key, self.warden.root_dir) > 0 or child is not None

    def kill_all(self) -> int:
        """Kill every task process of this agent; return how many runs were running."""
        with self._lock:
            keys = list(self._running)
        return sum(self.kill(k) for k in keys)
