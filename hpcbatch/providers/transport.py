"""The one narrow interface every code path uses to reach a host.

A :class:`Transport` runs an argv on a host, starts a detached process there,
and writes a file there. :class:`SshTransport` does it over one SSH connection
(fabric/paramiko, honouring ``~/.ssh/config``, ProxyJump and known_hosts);
:class:`LocalTransport` does it on this machine. Node providers and the node
agent's launcher use nothing else (DESIGN.md, "Layers", item 5).

Commands are argv lists, never shell strings: over SSH the argv is quoted with
:func:`shlex.join` for the login shell (which must be POSIX-like), so ``a b;c``
reaches the program as one argument. Use ``["sh", "-c", script, ...]`` when a
shell is wanted.
"""

from __future__ import annotations

import errno
import os
import select
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar, runtime_checkable

import paramiko
from fabric import Config, Connection

from hpcbatch.batch.errors import NodeConnectionError
from hpcbatch.providers.inventory import Host

__all__ = [
    "CommandResult",
    "LocalTransport",
    "SshTransport",
    "Transport",
    "open_transport",
    "run_parallel",
]

T = TypeVar("T")

#: Seconds to wait for TCP connect, the SSH banner and authentication.
CONNECT_TIMEOUT_S = 10.0
#: Concurrent sessions per SSH connection (OpenSSH's MaxSessions defaults to 10).
MAX_SESSIONS = 8

# sh script shared by both transports: write stdin to $1 (``~`` expanded on the
# host) atomically, with mode $2, creating parent folders.
_PUT_SCRIPT = (
    'set -e; p=$1; case $p in "~"|"~/"*) p=$HOME${p#"~"};; esac; '
    'mkdir -p -- "$(dirname -- "$p")"; t="$p.tmp.$$"; '
    '(umask 077; cat > "$t"); chmod "$2" "$t"; mv -f -- "$t" "$p"'
)
# sh script: start "$@" detached (own session, immune to hangup), output to $1.
_SPAWN_SCRIPT = (
    'p=$1; shift; case $p in "~"|"~/"*) p=$HOME${p#"~"};; esac; '
    'mkdir -p -- "$(dirname -- "$p")" || exit 1; '
    "if command -v setsid >/dev/null 2>&1; then set -- setsid \"$@\"; fi; "
    'nohup "$@" > "$p" 2>&1 < /dev/null &'
)


@dataclass(frozen=True)
class CommandResult:
    """What a command run by :meth:`Transport.run` returned.

    Attributes
    ----------
    exit_code
        The process's exit code; ``127`` when the program was not found,
        ``-1`` when the host reported none (killed by a signal).
    stdout, stderr
        Its output, decoded as UTF-8 (undecodable bytes replaced).
    """

    exit_code: int
    stdout: str
    stderr: str


@runtime_checkable
class Transport(Protocol):
    """How hpcbatch reaches one host. Usable as a context manager (closes on exit)."""

    host: Host

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 60.0, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``argv`` on the host and wait for it.

        Parameters
        ----------
        argv
            Program and arguments; no shell is involved unless argv invokes one.
        timeout_s
            Seconds to wait for the command to finish.
        stdin
            Bytes fed to the command's standard input (closed when ``None``).

        Returns
        -------
        CommandResult
            Exit code and decoded output; a non-zero exit code is not an error.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached, or the command did not finish within
            ``timeout_s`` (over SSH the remote process may keep running).
        """
        ...

    def spawn_detached(self, argv: Sequence[str], *, log_path: str) -> None:
        """Start a long-running process that survives this transport closing.

        Parameters
        ----------
        argv
            Program and arguments.
        log_path
            File on the host receiving the process's stdout and stderr; its
            folder is created; a leading ``~`` is expanded on the host.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached or the process could not be started.
        """
        ...

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write ``data`` to a file on the host, atomically.

        Parameters
        ----------
        data
            File content.
        remote_path
            Path on the host; parent folders are created; a leading ``~`` is
            expanded on the host.
        mode
            Permission bits of the file.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached or the file cannot be written.
        """
        ...

    def close(self) -> None:
        """Release the connection; processes started detached keep running."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _TransportBase:
    """What both transports share: file writes through ``run`` and ``with``."""

    host: Host

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 60.0, stdin: bytes | None = None
    ) -> CommandResult:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write ``data`` to ``remote_path`` on the host; see :meth:`Transport.put_bytes`."""
        argv = ["sh", "-c", _PUT_SCRIPT, "put_bytes", remote_path, format(mode, "o")]
        result = self.run(argv, stdin=data, timeout_s=60.0 + len(data) / 1e6)
        if result.exit_code != 0:
            raise NodeConnectionError(
                self.host.name, f"cannot write {remote_path}: {result.stderr.strip()}"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalTransport(_TransportBase):
    """Run commands on this machine with :mod:`subprocess` (the ``local`` provider).

    Parameters
    ----------
    host
        The inventory host (its address is not used).
    """

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 60.0, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``argv`` here; see :meth:`Transport.run`.

        A missing program gives exit code 127 and a non-executable one 126, as
        a shell on an SSH host would.
        """
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(127, "", f"{argv[0]}: command not found\n")
        except PermissionError:
            return CommandResult(126, "", f"{argv[0]}: permission denied\n")
        try:
            out, err = proc.communicate(stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise NodeConnectionError(
                self.host.name, f"command {shlex.join(argv)} did not finish within {timeout_s:g} s"
            ) from None
        return CommandResult(proc.returncode, _text(out), _text(err))

    def spawn_detached(self, argv: Sequence[str], *, log_path: str) -> None:
        """Start ``argv`` here in its own session; see :meth:`Transport.spawn_detached`."""
        log = Path(log_path).expanduser()
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as out:
                subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            raise NodeConnectionError(
                self.host.name, f"cannot start {shlex.join(argv)}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        """Nothing to release."""


class SshTransport(_TransportBase):
    """Run commands on a host over one reused SSH connection.

    The connection opens on first use and is reopened only if it dropped.
    Several threads may use one transport: each command gets its own SSH
    channel (at most :data:`MAX_SESSIONS` at once) on the shared connection.

    SSH settings come from, first value winning: the host's fields, the file
    ``host.ssh_config``, ``~/.ssh/config``, ``/etc/ssh/ssh_config`` (so
    ``HostName``, ``Port``, ``User``, ``IdentityFile``, ``ProxyJump``,
    ``ProxyCommand`` and ``UserKnownHostsFile`` work). Host keys of the host
    and of every jump host are checked against ``host.known_hosts`` (or the
    ssh config's ``UserKnownHostsFile``, or ``~/.ssh/known_hosts``) plus
    ``/etc/ssh/ssh_known_hosts``; unknown keys are rejected unless
    ``host.strict_host_key_checking`` is false, in which case no key is checked.

    Parameters
    ----------
    host
        The inventory host.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(MAX_SESSIONS)
        self._conn: Connection | None = None

    @property
    def connection(self) -> Connection:
        """The open fabric ``Connection`` (opened now if needed).

        Raises
        ------
        NodeConnectionError
            The host cannot be reached.
        """
        self._transport()
        assert self._conn is not None
        return self._conn

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 60.0, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``argv`` on the host; see :meth:`Transport.run`."""
        command = shlex.join(argv)
        deadline = time.monotonic() + timeout_s
        with self._sessions:
            transport = self._transport()
            try:
                channel = transport.open_session(timeout=min(timeout_s, CONNECT_TIMEOUT_S))
                channel.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise NodeConnectionError(
                    self.host.name, f"cannot start a command over SSH: {exc}"
                ) from exc
            with channel:
                feeder = _feed_stdin(channel, stdin)
                out, err = _collect(channel, deadline)
                if feeder is not None:
                    feeder.join(1.0)
                if out is None:
                    raise NodeConnectionError(
                        self.host.name, f"command {command} did not finish within {timeout_s:g} s"
                    )
                if not channel.status_event.wait(max(deadline - time.monotonic(), 0.1)):
                    raise NodeConnectionError(
                        self.host.name, f"command {command} did not report an exit code"
                    )
                if channel.exit_status == -1 and not transport.is_active():
                    raise NodeConnectionError(
                        self.host.name, f"connection lost while running {command}"
                    )
                return CommandResult(channel.exit_status, _text(out), _text(err or b""))

    def spawn_detached(self, argv: Sequence[str], *, log_path: str) -> None:
        """Start ``argv`` under ``nohup setsid`` on the host; see :meth:`Transport.spawn_detached`."""
        result = self.run(["sh", "-c", _SPAWN_SCRIPT, "spawn", log_path, *argv])
        if result.exit_code != 0:
            raise NodeConnectionError(
                self.host.name, f"cannot start {shlex.join(argv)}: {result.stderr.strip()}"
            )

    def close(self) -> None:
        """Close the SSH connection (and those to jump hosts)."""
        with self._lock:
            _close_chain(self._conn)
            self._conn = None

    def _transport(self) -> paramiko.Transport:
        """Return the live paramiko transport, connecting first if needed."""
        with self._lock:
            conn = self._conn
            if conn is not None and conn.is_connected:
                return conn.transport
            _close_chain(conn)
            self._conn = None
            conn = self._new_connection()
            hops = list(_chain(conn))
            for hop in reversed(hops):  # first jump host first, this host last
                try:
                    hop.open()
                except Exception as exc:
                    _close_chain(conn)
                    reason = _describe(exc, hop)
                    if hop is not conn:
                        reason = f"jump host {hop.original_host}: {reason}"
                    raise NodeConnectionError(self.host.name, reason) from exc
            self._conn = conn
            return conn.transport

    def _new_connection(self) -> Connection:
        """Build the (unopened) fabric Connection with host keys configured."""
        host = self.host
        ssh_config = paramiko.SSHConfig()
        for path in (host.ssh_config, "~/.ssh/config", "/etc/ssh/ssh_config"):
            if path is None:
                continue
            file = Path(path).expanduser()
            if not file.is_file():
                if path == host.ssh_config:
                    raise NodeConnectionError(host.name, f"ssh config file {file} does not exist")
                continue
            try:
                with open(file, encoding="utf-8") as text:
                    ssh_config.parse(text)
            except (OSError, UnicodeError, paramiko.ConfigParseError) as exc:
                raise NodeConnectionError(host.name, f"cannot read ssh config file {file}: {exc}") from exc
        connect_kwargs: dict[str, object] = {
            "banner_timeout": CONNECT_TIMEOUT_S,
            "auth_timeout": CONNECT_TIMEOUT_S,
        }
        if host.identity_file:
            connect_kwargs["key_filename"] = [str(Path(host.identity_file).expanduser())]
        # connect_kwargs live in the Config (not the Connection) so jump hosts get them too.
        config = Config(
            ssh_config=ssh_config,
            overrides={
                "connect_kwargs": connect_kwargs,
                "timeouts": {"connect": int(CONNECT_TIMEOUT_S)},
            },
        )
        # Port 22 (the default) lets an ssh config ``Port`` for the address apply.
        port = host.port if host.port != 22 else None
        conn = Connection(host.address, user=host.user, port=port, config=config)
        for hop in _chain(conn):
            files = _known_hosts_files(host, hop)
            hop.client.set_missing_host_key_policy(
                _RejectUnknown(files) if host.strict_host_key_checking else paramiko.AutoAddPolicy()
            )
            if host.strict_host_key_checking:
                for known in files:
                    if os.path.isfile(known):
                        hop.client.load_system_host_keys(known)
        return conn


def open_transport(host: Host) -> Transport:
    """Return the transport for ``host.provider`` (``ssh`` or ``local``).

    Parameters
    ----------
    host
        The inventory host.

    Returns
    -------
    Transport
        An :class:`SshTransport` or a :class:`LocalTransport`; connects lazily.
    """
    if host.provider == "local":
        return LocalTransport(host)
    return SshTransport(host)


def run_parallel(
    hosts: Iterable[Host], fn: Callable[[Host], T], max_workers: int = 32
) -> dict[str, T | Exception]:
    """Call ``fn(host)`` for every host in a thread pool.

    Parameters
    ----------
    hosts
        The hosts; their names must be unique.
    fn
        Work for one host (typically opens a transport and runs commands).
    max_workers
        Most hosts worked on at once.

    Returns
    -------
    dict
        Host name to ``fn``'s return value, or to the exception it raised:
        a failure on some hosts is a result, not an error (like fabric's
        ``GroupResult``).
    """
    hosts = list(hosts)
    if not hosts:
        return {}

    def call(host: Host) -> T | Exception:
        try:
            return fn(host)
        except Exception as exc:  # noqa: BLE001 - per-host failure is the result
            return exc

    with ThreadPoolExecutor(max_workers=min(max_workers, len(hosts))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(call, hosts), strict=True))


class _UnknownHostKey(paramiko.SSHException):
    """A host key that is not in any known_hosts file."""


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Reject unknown host keys, saying which files were searched."""

    def __init__(self, files: list[str]) -> None:
        self.files = files

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(
            f"host key for {hostname} ({key.get_name()}) is not in {' or '.join(self.files)}; "
            f"add it (ssh-keyscan) or set strict_host_key_checking: false"
        )


def _known_hosts_files(host: Host, hop: Connection) -> list[str]:
    """known_hosts files to check ``hop``'s key against."""
    if host.known_hosts:
        user_files = [host.known_hosts]
    else:
        user_files = hop.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts").split()
    files = [os.path.expanduser(f) for f in user_files]
    return files + [f for f in ("/etc/ssh/ssh_known_hosts",) if os.path.isfile(f)]


def _chain(conn: Connection) -> Iterable[Connection]:
    """Yield ``conn`` and then its ProxyJump gateways, nearest first."""
    hop: object = conn
    while isinstance(hop, Connection):
        yield hop
        hop = hop.gateway


def _close_chain(conn: Connection | None) -> None:
    """Close ``conn`` and its jump-host connections."""
    if conn is not None:
        for hop in _chain(conn):
            hop.close()


def _describe(exc: BaseException, conn: Connection) -> str:
    """Turn an SSH connect failure into a sentence naming the address."""
    where = f"{conn.host}:{conn.port}"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        refused = all(e.errno == errno.ECONNREFUSED for e in exc.errors.values())
        return f"cannot connect to {where}: " + ("Connection refused" if refused else str(exc))
    if isinstance(exc, _UnknownHostKey):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return (
            f"host key for {exc.hostname} does not match the one in known_hosts "
            f"(got {exc.key.get_fingerprint().hex()}): the host was reinstalled, "
            f"or someone is intercepting the connection"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication as {conn.user}@{where} failed: {exc}"
    if isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc):
        return f"authentication as {conn.user}@{where} failed: no key to offer (set identity_file)"
    if isinstance(exc, paramiko.ChannelException):
        return f"the jump host could not open a connection to {where}: {exc.text}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name {conn.host}: {exc.strerror}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"cannot connect to {where}: no answer within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"SSH connection to {where} failed: {exc or type(exc).__name__}"


def _feed_stdin(channel: paramiko.Channel, data: bytes | None) -> threading.Thread | None:
    """Send ``data`` then EOF to the channel (in a thread, so output keeps flowing)."""
    if not data:
        channel.shutdown_write()
        return None

    def feed() -> None:
        try:
            channel.sendall(data)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited without reading everything

    thread = threading.Thread(target=feed, name="hpcbatch-stdin", daemon=True)
    thread.start()
    return thread


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[bytes | None, bytes | None]:
    """Read stdout and stderr until EOF; ``(None, None)`` if ``deadline`` passes first."""
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(65536)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        if channel.eof_received or channel.closed:
            if not (channel.recv_ready() or channel.recv_stderr_ready()):
                return bytes(out), bytes(err)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None
        select.select([channel], [], [], min(remaining, 1.0))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with ``start_new_session`` and its group, then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def known_hosts_line(transport: Transport) -> str | None:
    """Return the ``known_hosts`` line of the host a transport is connected to.

    Used to give the nodes of a pool with inter-node communication each
    other's host keys. None for local transports (no sshd involved).

    Raises
    ------
    NodeConnectionError
        The host cannot be reached.
    """
    if not isinstance(transport, SshTransport):
        return None
    host = transport.host
    key = transport.connection.client.get_transport().get_remote_server_key()
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    return f"{name} {key.get_name()} {key.get_base64()}"
