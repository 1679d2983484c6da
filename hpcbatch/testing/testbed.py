"""The SSH testbed: several real sshd daemons on loopback addresses.

Each testbed node is an ``sshd`` listening on its own loopback address
(``127.0.1.1``, ``127.0.1.2``, ...), all of them logging in the current user
with one generated key. The testbed writes, in its directory:

``hosts.yaml``
    an inventory (:func:`hpcbatch.providers.inventory.load_inventory`) of the nodes;
``ssh_config``
    a ``Host`` block per node, for ``ssh -F DIR/ssh_config 127.0.1.1``;
``known_hosts``, ``id_ed25519``, ``authorized_keys``, ``ssh_host_ed25519_key``
    the keys;
``sshd-{name}.conf``, ``sshd-{name}.log``
    each daemon's configuration and log;
``testbed.json``
    addresses, ports and pids, read by :func:`down`.

Each node gets its own root directory ``DIR/nodes/{name}`` (on a real cluster
every node has the same root path), and its own authorized keys, besides the
testbed key: ``DIR/keys/{name}/{user}`` (:func:`keys_file`). The pool's auto-user
``_azbatch`` logs in with that file only (a ``Match User`` block), as
docs/security.md recommends: its ``~/.ssh`` is its own, so its tasks could add keys there.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.identity import POOL_AUTO_USER
from hpcbatch.providers.inventory import Host, dump_inventory

__all__ = ["Testbed", "down", "up"]

SSHD = "/usr/sbin/sshd"
#: Seconds to wait for an sshd to accept connections.
START_TIMEOUT_S = 15.0

@dataclass
class Testbed:
    """A running SSH testbed (see :func:`up`). Usable as a context manager.

    Attributes
    ----------
    directory
        The testbed directory.
    hosts
        One inventory host per node, named after its address.
    pids
        Node name to the pid of its sshd.
    inventory_path
        ``directory/hosts.yaml``.
    ssh_config_path
        ``directory/ssh_config``.
    ports
        Node name to its SSH port.
    """

    __test__ = False  # not a pytest test class

    directory: Path
    hosts: list[Host]
    pids: dict[str, int]
    inventory_path: Path
    ssh_config_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        """Return the node called ``name``.

        Raises
        ------
        KeyError
            No such node; the message lists the nodes.
        """
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no testbed node {name!r}; nodes: {', '.join(h.name for h in self.hosts)}")

    def down(self) -> None:
        """Stop every sshd of the testbed (see :func:`down`)."""
        down(self.directory)

    def kill(self, name: str) -> None:
        """SIGKILL one node's sshd and its sessions, for failure tests.

        Processes started detached (nohup setsid) on the node keep running.

        Parameters
        ----------
        name
            Node name.
        """
        self.host(name)
        _stop(self.pids[name], signal.SIGKILL, _config_path(self.directory, name))

    def start(self, name: str, *, session_env: Mapping[str, str] | None = None) -> None:
        """(Re)start one node's sshd on its address and port, and wait for it.

        Parameters
        ----------
        name
            Node name.
        session_env
            Variables sshd sets in every session of this node (its ``SetEnv``), as a
            host's own login environment would: ``BASH_ENV``, say, gives the node a
            login shell with start-up work. None: none.

        Raises
        ------
        HpcbatchError
            sshd exited or did not accept connections within the timeout.
        """
        host = self.host(name)
        _stop(self.pids[name], signal.SIGTERM, _config_path(self.directory, name))
        self.pids[name] = _start_sshd(self.directory, host.address, self.ports[name],
                                      session_env)
        _write_state(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def up(
    nodes: int,
    directory: Path,
    *,
    base_address: str = "127.0.1.1",
    port: int | None = None,
    cores: int = 2,
    labels: Sequence[str] = ("testbed",),
) -> Testbed:
    """Start an SSH testbed of ``nodes`` sshd daemons on loopback addresses.

    A testbed already running in ``directory`` is stopped first; existing keys
    are reused.

    Parameters
    ----------
    nodes
        Number of nodes (sshd daemons), at least 1.
    directory
        Folder for keys, configs, logs and node root directories (created).
    base_address
        Address of the first node; the others increment its last octet.
    port
        SSH port of every node; ``None`` uses 22 when running as root and 22 is
        free on the address, otherwise a free port per address.
    cores
        ``cores`` of each inventory host.
    labels
        ``labels`` of each inventory host.

    Returns
    -------
    Testbed
        The running testbed; call :meth:`Testbed.down` (or use ``with``).

    Raises
    ------
    ValueError
        ``nodes`` is less than 1.
    HpcbatchError
        sshd or ssh-keygen is missing, or an sshd did not start (the message
        quotes its log).
    """
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, not {nodes}")
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "testbed.json").exists():
        down(directory)
    if not os.access(SSHD, os.X_OK):
        raise HpcbatchError(f"the testbed needs OpenSSH's server at {SSHD} (apt install openssh-server)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    host_key = _keygen(directory / "ssh_host_ed25519_key")
    user_key = _keygen(directory / "id_ed25519")
    (directory / "authorized_keys").write_text(user_key)

    user = getpass.getuser()
    testbed = Testbed(directory, [], {}, directory / "hosts.yaml", directory / "ssh_config")
    try:
        for i in range(nodes):
            address = str(IPv4Address(base_address) + i)
            node_port, pid = _start_node(directory, address, port)
            testbed.pids[address] = pid
            testbed.ports[address] = node_port
            _write_state(testbed)  # so that down() finds it even if up() dies midway
            root = directory / "nodes" / address
            root.mkdir(parents=True, exist_ok=True)
            testbed.hosts.append(
                Host(
                    name=address,
                    address=address,
                    port=node_port,
                    user=user,
                    identity_file=str(directory / "id_ed25519"),
                    known_hosts=str(directory / "known_hosts"),
                    root_dir=str(root),
                    python=sys.executable,
                    authorized_keys=keys_file(directory, address),
                    cores=cores,
                    labels=list(labels),
                )
            )
    except BaseException:
        down(directory)
        raise
    (directory / "known_hosts").write_text(
        "".join(f"{_known_host_name(h.address, h.port)} {host_key}" for h in testbed.hosts)
    )
    (directory / "ssh_config").write_text(
        "".join(
            f"Host {h.name}\n    HostName {h.address}\n    Port {h.port}\n    User {user}\n"
            f"    IdentityFile {h.identity_file}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {h.known_hosts}\n    StrictHostKeyChecking yes\n\n"
            for h in testbed.hosts
        )
    )
    dump_inventory(testbed.hosts, testbed.inventory_path)
    return testbed


def down(directory: Path) -> None:
    """Stop every sshd listed in ``directory/testbed.json`` and their sessions.

    Daemons already gone are skipped; processes started detached on the nodes
    keep running.

    Parameters
    ----------
    directory
        The testbed directory.
    """
    state_file = Path(directory) / "testbed.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        return
    for node in state.get("nodes", []):
        _stop(node["pid"], signal.SIGTERM, _config_path(Path(directory), node["name"]))
    state_file.unlink(missing_ok=True)


def _start_node(directory: Path, address: str, port: int | None) -> tuple[int, int]:
    """Start one node's sshd; return its port and pid (retrying on a port race)."""
    for attempt in range(3):
        if port is not None:
            node_port = port
        elif os.geteuid() == 0 and _port_free(address, 22):
            node_port = 22
        else:
            node_port = _free_port(address)
        try:
            return node_port, _start_sshd(directory, address, node_port)
        except HpcbatchError:
            if port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_sshd(directory: Path, address: str, port: int,
                session_env: Mapping[str, str] | None = None) -> int:
    """Write the node's sshd config, start sshd, wait until it accepts; return its pid."""
    config = _config_path(directory, address)
    set_env = "".join(f'SetEnv "{k}={v}"\n' for k, v in (session_env or {}).items())
    log = directory / f"sshd-{address}.log"
    config.write_text(
        f"ListenAddress {address}:{port}\n"
        f"HostKey {directory / 'ssh_host_ed25519_key'}\n"
        # ~/.ssh/authorized_keys too, as on a real host: node users' keys (Compute Node -
        # Add User) go there.
        f"AuthorizedKeysFile {directory / 'authorized_keys'} {keys_file(directory, address)} "
        ".ssh/authorized_keys\n"
        f"PidFile {directory / f'sshd-{address}.pid'}\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        "AllowTcpForwarding yes\n"
        "MaxSessions 64\n"
        "MaxStartups 64:30:128\n"
        "PrintMotd no\n"
        "Subsystem sftp internal-sftp\n"
        f"{set_env}"
        # The pool's auto-user: only the file hpcbatch keeps (root's, outside its home).
        # Its home is its own, so keys it put in ~/.ssh would outlive its pool.
        f"Match User {POOL_AUTO_USER}\n"
        f"    AuthorizedKeysFile {keys_file(directory, address)}\n"
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise HpcbatchError(f"sshd for {address}:{port} exited: {' / '.join(tail)}")
        try:
            socket.create_connection((address, port), timeout=1.0).close()
            return proc.pid
        except OSError:
            time.sleep(0.05)
    _stop(proc.pid, signal.SIGKILL, config)
    raise HpcbatchError(f"sshd for {address}:{port} did not accept connections in {START_TIMEOUT_S:g} s")


def _stop(pid: int, sig: signal.Signals, config: Path) -> None:
    """Send ``sig`` to an sshd, SIGKILL to its sessions, and wait (up to 5 s) until they are gone.

    Nothing happens unless ``pid`` is still the sshd started with ``config``
    (the pid may have been reused since).
    """
    try:
        sshd = psutil.Process(pid)
        if str(config) not in " ".join(sshd.cmdline()):  # sshd rewrites its title
            return
        procs = [sshd, *sshd.children(recursive=True)]
    except psutil.Error:
        return
    for proc in procs:  # sessions get SIGKILL: they may linger after SIGTERM
        try:
            proc.send_signal(sig if proc is sshd else signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    for proc in _wait_gone(procs, 5.0):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(procs, 5.0)
    try:
        os.waitpid(pid, os.WNOHANG)  # reap the sshd if this process started it
    except ChildProcessError:
        pass


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until no process in ``procs`` runs (zombies count as gone); return those left."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _write_state(testbed: Testbed) -> None:
    nodes = [
        {"name": name, "address": name, "port": testbed.ports[name], "pid": pid}
        for name, pid in testbed.pids.items()
    ]
    (testbed.directory / "testbed.json").write_text(json.dumps({"nodes": nodes}, indent=2) + "\n")


def keys_file(directory: Path, address: str) -> str:
    """The node's own authorized keys file (sshd's ``AuthorizedKeysFile``, ``%u``: the user).

    Nodes of one testbed share the machine's users and homes; a file per node
    gives each node its own ``authorized_keys``, as separate machines have.
    """
    return f"{Path(directory) / 'keys' / address}/%u"


def _config_path(directory: Path, name: str) -> Path:
    return directory / f"sshd-{name}.conf"


def _keygen(path: Path) -> str:
    """Create an ed25519 key pair at ``path`` unless present; return the public key line."""
    if not path.exists():
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hpcbatch-testbed", "-f", str(path)]
        try:
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise HpcbatchError(f"the testbed cannot create the key {path} with ssh-keygen: {exc}") from exc
    return Path(f"{path}.pub").read_text()


def _known_host_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
