"""The ``ssh`` node provider: compute nodes on hosts reached over SSH.

:class:`SshTransport` runs commands on a host over one reused SSH connection
(fabric/paramiko, honouring ``~/.ssh/config``, ProxyJump and known_hosts);
:class:`SshProvider` starts, checks and stops the host's node process through
it, and installs the pool's SSH trust so MPI launchers on one node reach the
others with the pool's key (DESIGN.md, "Layers", item 5).
"""

from __future__ import annotations

import errno
import os
import posixpath
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import paramiko
from fabric import Config, Connection

from hpcbatch.batch.errors import NodeConnectionError
from hpcbatch.providers import trust
from hpcbatch.providers.base import (
    CommandResult,
    PoolTrust,
    TransportBase,
    TransportProvider,
    TrustSpec,
    decode,
)
from hpcbatch.providers.inventory import Host, ssh_target

__all__ = ["SshProvider", "SshTransport", "known_hosts_line"]

#: Seconds to wait for TCP connect, the SSH banner and authentication.
CONNECT_TIMEOUT_S = 10.0
#: Concurrent sessions per SSH connection (OpenSSH's MaxSessions defaults to 10).
MAX_SESSIONS = 8

# sh script: start "$@" detached (own session, immune to hangup), output to $1.
_SPAWN_SCRIPT = (
    'p=$1; shift; case $p in "~"|"~/"*) p=$HOME${p#"~"};; esac; '
    'mkdir -p -- "$(dirname -- "$p")" || exit 1; '
    "if command -v setsid >/dev/null 2>&1; then set -- setsid \"$@\"; fi; "
    'nohup "$@" > "$p" 2>&1 < /dev/null &'
)


class SshTransport(TransportBase):
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
                return CommandResult(channel.exit_status, decode(out), decode(err or b""))

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


class SshProvider(TransportProvider):
    """Compute nodes on hosts reached over SSH (``provider: ssh``, the default).

    MPI launchers on a node reach the pool's other nodes with real SSH and the
    pool's key (:meth:`install_trust`); users may log in to the host.
    """

    name: ClassVar[str] = "ssh"
    remote_login: ClassVar[bool] = True

    @classmethod
    def open_transport(cls, host: Host) -> SshTransport:
        """Return an :class:`SshTransport` to ``host`` (connects on first use)."""
        return SshTransport(host)

    def install_trust(self, root_dir: str, private_key: str, public_key: str, *,
                      allowed_from: Sequence[str], user: str | None = None) -> PoolTrust:
        """Write the pool's private key, authorise its public key; see
        :meth:`NodeProvider.install_trust <hpcbatch.providers.base.NodeProvider.install_trust>`.

        Returns
        -------
        PoolTrust
            The key's path on the host, the host's ``known_hosts`` line and the
            user the pool's nodes log in as (``user``, else the host's ``user``,
            else who the SSH session runs as).
        """
        tr = self.transport
        key_path = posixpath.join(root_dir, trust.POOL_KEY_FILE)
        tr.put_bytes(private_key.encode(), key_path, mode=0o600)
        if user:
            res = tr.run(self.privileged(["chown", "--", user, key_path]), timeout_s=30)
            if res.exit_code != 0:
                raise NodeConnectionError(self.host.name, f"cannot give the pool's SSH key to "
                                          f"{user}: {res.stderr.strip()}")
        self.update_trust(public_key, allowed_from=allowed_from, user=user)
        host_key = known_hosts_line(tr) if isinstance(tr, SshTransport) else None
        login = user or self.host.user or tr.run(["id", "-un"], timeout_s=30).stdout.strip()
        return PoolTrust(key_path=key_path, host_key=host_key, user=login or None)

    def remote_trust(self, spec: TrustSpec) -> dict[str, Any]:
        """The pool key's installation during :meth:`launch`: as :meth:`install_trust`
        does it, for the login user and for the pool's auto-user (user switching); see
        :meth:`TransportProvider.remote_trust <hpcbatch.providers.base.TransportProvider.remote_trust>`."""
        keys = self.host.authorized_keys or trust.DEFAULT_KEYS_FILE

        def variant(user: str | None) -> dict[str, Any]:
            argv = trust.authorize_argv(spec.public_key, spec.allowed_from, user=user,
                                        keys_file=self.host.authorized_keys)
            return {"user": user,
                    "chown": self.privileged(["chown", "--", user]) if user else None,
                    "chown_error": f"cannot give the pool's SSH key to {user}",
                    "authorize": self.privileged(argv) if user else argv,
                    "authorize_error": f"cannot authorise the pool's SSH key in {keys}"}

        return {"key_file": trust.POOL_KEY_FILE, "private_key": spec.private_key,
                "login": self.host.user, "plain": variant(None),
                "switching": variant(spec.switching_user)}

    def trust_result(self, key_path: str, user: str) -> PoolTrust:
        """The key's path, this host's ``known_hosts`` line and the login user."""
        tr = self.transport
        host_key = known_hosts_line(tr) if isinstance(tr, SshTransport) else None
        return PoolTrust(key_path=key_path, host_key=host_key, user=user or None)

    def update_trust(self, public_key: str, *, allowed_from: Sequence[str],
                     user: str | None = None) -> None:
        """Rewrite the pool key's ``restrict,from=`` line; see
        :meth:`NodeProvider.update_trust <hpcbatch.providers.base.NodeProvider.update_trust>`."""
        argv = trust.authorize_argv(public_key, allowed_from, user=user,
                                    keys_file=self.host.authorized_keys)
        res = self.transport.run(self.privileged(argv) if user else argv, timeout_s=30)
        if res.exit_code != 0:
            raise NodeConnectionError(self.host.name, "cannot authorise the pool's SSH key in "
                                      f"{self.host.authorized_keys or trust.DEFAULT_KEYS_FILE}: "
                                      f"{res.stderr.strip()}")

    def revoke_trust(self, public_key: str, *, root_dir: str | None = None,
                     user: str | None = None) -> None:
        """Remove the pool's key line and private key copy; see
        :meth:`NodeProvider.revoke_trust <hpcbatch.providers.base.NodeProvider.revoke_trust>`."""
        tr = self.transport
        if root_dir:
            tr.run(["rm", "-f", "--", posixpath.join(root_dir, trust.POOL_KEY_FILE)], timeout_s=30)
        argv = trust.revoke_argv(public_key, user=user, keys_file=self.host.authorized_keys)
        res = tr.run(self.privileged(argv) if user else argv, timeout_s=30)
        if res.exit_code != 0:
            raise NodeConnectionError(self.host.name, "cannot revoke the pool's SSH key: "
                                      f"{res.stderr.strip()}")

    def pool_key_path(self, root_dir: str) -> str:
        """``{root_dir}/ssh/id_pool``, where :meth:`install_trust` puts the pool's key."""
        return posixpath.join(root_dir, trust.POOL_KEY_FILE)

    @property
    def local_launch_python(self) -> None:
        """None: MPI launchers reach SSH hosts with real SSH."""
        return None


def known_hosts_line(transport: SshTransport) -> str:
    """Return the ``known_hosts`` line of the host a transport is connected to.

    Used to give the nodes of a pool with inter-node communication each
    other's host keys.

    Parameters
    ----------
    transport
        An SSH transport (connected now if needed).

    Returns
    -------
    str
        ``address keytype base64`` (``[address]:port ...`` off port 22), with the
        address and port SSH really connects to (:func:`~hpcbatch.providers.inventory.ssh_target`:
        an ssh config alias's ``HostName`` and ``Port``), as the other nodes name the host.

    Raises
    ------
    NodeConnectionError
        The host cannot be reached.
    """
    target = ssh_target(transport.host)
    key = transport.connection.client.get_transport().get_remote_server_key()
    name = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    return f"{name} {key.get_name()} {key.get_base64()}"


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
        refused = all(getattr(e, "errno", None) == errno.ECONNREFUSED
                      for e in exc.errors.values())
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
