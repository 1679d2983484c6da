"""The node provider interface, and the one narrow transport it is built on.

A :class:`NodeProvider` is what the pool manager knows of a host: it starts a
compute node process there with its config, checks and stops that process,
installs and revokes the pool's SSH trust, reads the node's log, wipes the
node root on reimage, and says how MPI launchers reach the host. It holds no
scheduling policy (DESIGN.md, "Layers", item 5). Its shape follows
distributed's ``deploy/spec.py`` ``ProcessInterface`` (start, close) and
Parsl's ``ExecutionProvider`` (submit, status, cancel).

Providers are chosen in one place, :func:`hpcbatch.providers.registry.provider_for`,
keyed by :attr:`Host.provider <hpcbatch.providers.inventory.Host.provider>`:
``ssh`` (:mod:`hpcbatch.providers.ssh`) and ``local``
(:mod:`hpcbatch.providers.local`). Both carry out their work through a
:class:`Transport`, which runs an argv on a host, starts a detached process
there and writes a file there; :class:`TransportProvider` is that shared
implementation.

Commands are argv lists, never shell strings: over SSH the argv is quoted with
:func:`shlex.join` for the login shell (which must be POSIX-like), so ``a b;c``
reaches the program as one argument. Use ``["sh", "-c", script, ...]`` when a
shell is wanted.
"""

from __future__ import annotations

import base64
import json
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from hpcbatch.batch.errors import HpcbatchError, NodeConnectionError
from hpcbatch.providers.inventory import Host, check_root_dir

__all__ = [
    "ROOT_MARKER",
    "CommandResult",
    "LaunchSpec",
    "Launched",
    "NodeLaunchError",
    "NodeProvider",
    "NodeRootRefusedError",
    "PoolTrust",
    "Transport",
    "TransportBase",
    "TransportProvider",
    "TrustSpec",
    "run_parallel",
]

T = TypeVar("T")

NODE_CONFIG = "node.json"
"""The node process's config file, in the node root."""
NODE_LOG = "node.log"
"""The node process's output (stdout and stderr), in the node root."""

# sh script shared by both transports: write stdin to $1 (``~`` expanded on the
# host) atomically, with mode $2, creating parent folders.
_PUT_SCRIPT = (
    'set -e; p=$1; case $p in "~"|"~/"*) p=$HOME${p#"~"};; esac; '
    'mkdir -p -- "$(dirname -- "$p")"; t="$p.tmp.$$"; '
    '(umask 077; cat > "$t"); chmod "$2" "$t"; mv -f -- "$t" "$p"'
)
ROOT_MARKER = ".hpcbatch-node-root"
"""File that marks a folder as a node root hpcbatch made: only such a folder is ever wiped."""
# sh script: remove everything in the node root $1 but its marker $2 (reimage), keeping
# the folder -- after checking, with links resolved, that it is not /, not the login
# user's home nor one of its parents, and that it carries the marker (exit 3 otherwise).
_WIPE_SCRIPT = (
    'r=$1; m=$2; [ -d "$r" ] || exit 0; p=$(cd -P -- "$r" && pwd) || exit 3; '
    'h=$(cd -P -- "${HOME:-/}" 2>/dev/null && pwd) || h=/; '
    'case $p in /) echo "it is /" >&2; exit 3;; esac; '
    'case "$h/" in "$p"/*) echo "it is or holds the home directory $h" >&2; exit 3;; esac; '
    '[ -e "$p/$m" ] || { echo "it has no $m: hpcbatch did not make it a node root" >&2; exit 3; }; '
    'find "$p" -mindepth 1 -maxdepth 1 ! -name "$m" -exec rm -rf -- {} +'
)
# Python probe: the interpreter has hpcbatch and distributed; make the node root (a folder
# of its own: new, empty, or already marked/used by hpcbatch), mark it, print it expanded.
_PROBE = (
    "import importlib.util as u, os, sys\n"
    "missing = [m for m in ('hpcbatch', 'distributed') if u.find_spec(m) is None]\n"
    "if missing: sys.exit('missing Python packages: ' + ', '.join(missing))\n"
    "root = os.path.expanduser(sys.argv[1]); marker = os.path.join(root, sys.argv[2])\n"
    "if (os.path.isdir(root) and os.listdir(root) and not os.path.exists(marker)\n"
    "        and not os.path.exists(os.path.join(root, 'node.json'))):\n"
    "    sys.exit(f'root_dir {root} holds files hpcbatch did not put there; a node root is '\n"
    "             'emptied on reimage: give a new or empty folder')\n"
    "os.makedirs(root, exist_ok=True); open(marker, 'a').close()\n"
    "print(root)"
)


class NodeRootRefusedError(HpcbatchError):
    """A node root is not a folder of its own: it is not wiped ("Compute Node - Reimage").

    Parameters
    ----------
    host
        Inventory name of the host.
    root_dir
        The node root, as expanded on the host.
    reason
        Why it is refused.
    """

    code = "NodeReimageRefused"
    status = 409

    def __init__(self, host: str, root_dir: str, reason: str) -> None:
        super().__init__(f"host {host}: refusing to empty the node root {root_dir}: {reason}",
                         values={"Host": host, "RootDir": root_dir})


class NodeLaunchError(NodeConnectionError):
    """Starting a node failed on its host; says how far it got.

    Parameters
    ----------
    host
        Inventory name of the host.
    reason
        What failed, as a sentence.
    root_dir
        The node root, expanded on the host, once it was made (None before).
    """

    def __init__(self, host: str, reason: str, root_dir: str | None = None) -> None:
        super().__init__(host, reason)
        self.root_dir = root_dir


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


class TransportBase:
    """What both transports share: file writes through ``run``, and ``with``."""

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


def decode(data: bytes) -> str:
    """Decode a command's output as UTF-8, replacing undecodable bytes."""
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class PoolTrust:
    """What installing a pool's SSH trust on a host gave (see :meth:`NodeProvider.install_trust`).

    Attributes
    ----------
    key_path
        The pool's private key file on the host.
    host_key
        The host's ``known_hosts`` line, given to the pool's other nodes; None
        when unknown.
    user
        The login user the pool's nodes ssh to this host as; None when unknown.
    """

    key_path: str
    host_key: str | None
    user: str | None


@dataclass(frozen=True)
class TrustSpec:
    """The pool's SSH trust for a node being launched (a pool with inter-node communication).

    Attributes
    ----------
    private_key, public_key
        The pool's key (:func:`hpcbatch.providers.trust.pool_ssh_key`).
    allowed_from
        The pool's node addresses, for the key's ``restrict,from=`` line.
    switching_user
        Who holds the key when the node switches users (the pool's auto-user);
        otherwise the login user does.
    """

    private_key: str
    public_key: str
    allowed_from: tuple[str, ...]
    switching_user: str


@dataclass(frozen=True)
class LaunchSpec:
    """Everything :meth:`NodeProvider.launch` needs to bring a node up.

    Attributes
    ----------
    config
        The node process's config (:mod:`hpcbatch.execution.node`); its
        ``root_dir`` and ``user_switching`` are set, and its ``tls`` paths
        (relative to the node root) made absolute, on the host, once the node
        root and the identity set-up's answer are known.
    files
        Files to write before the node process starts, by path relative to the
        node root (TLS material), mode 0600.
    identity
        The user-switching spec for :meth:`NodeProvider.setup_identity`.
    trust
        The pool's SSH trust to install, or None.
    """

    config: Mapping[str, Any]
    files: Mapping[str, bytes]
    identity: Mapping[str, Any]
    trust: TrustSpec | None = None


@dataclass(frozen=True)
class Launched:
    """What :meth:`NodeProvider.launch` did on the host.

    Attributes
    ----------
    root_dir
        The node root, expanded on the host.
    identity
        :meth:`NodeProvider.setup_identity`'s answer (``{"switching": bool, "reason"?: str}``).
    trust
        The installed trust (None without a :class:`TrustSpec` or SSH trust).
    trust_user
        Who holds the pool's key (None: the login user).
    """

    root_dir: str
    identity: Mapping[str, Any]
    trust: PoolTrust | None
    trust_user: str | None


def node_config(config: Mapping[str, Any], root_dir: str, switching: bool) -> dict[str, Any]:
    """``config`` with ``root_dir`` and ``user_switching`` set, ``tls`` paths made absolute."""
    out = dict(config)
    out["root_dir"] = root_dir
    out["user_switching"] = switching
    if isinstance(out.get("tls"), Mapping):
        out["tls"] = {k: posixpath.join(root_dir, v) for k, v in out["tls"].items()}
    return out


class NodeProvider(ABC):
    """Starts, checks and stops one host's compute node process (DESIGN.md, "Layers", 5).

    One instance per inventory host, made by
    :func:`hpcbatch.providers.registry.provider_for`. Every method blocks
    (network or process I/O): the pool manager calls them in a thread. Paths
    are paths on the host.

    Parameters
    ----------
    host
        The inventory host.

    Attributes
    ----------
    name
        The :attr:`Host.provider <hpcbatch.providers.inventory.Host.provider>`
        value this class serves.
    remote_login
        Whether a user can log in to the host over SSH ("Compute Node - Get
        Remote Login Settings" gives its address and port).
    """

    name: ClassVar[str]
    remote_login: ClassVar[bool]

    def __init__(self, host: Host) -> None:
        self.host = host

    # ------------------------------------------------------------ node process

    def launch(self, spec: LaunchSpec) -> Launched:
        """Bring a node up: :meth:`prepare`, :meth:`setup_identity`, :meth:`install_trust`
        (with :attr:`LaunchSpec.trust`), then :meth:`start`, in that order.

        Providers may do it all in one exchange with the host (as
        :class:`TransportProvider` does); this default calls the steps one by one.

        Parameters
        ----------
        spec
            The node's config, files, identity spec and trust.

        Returns
        -------
        Launched
            The node root, the identity answer and the installed trust.

        Raises
        ------
        NodeConnectionError
            A step failed (the message names the host and the cause);
            :class:`NodeLaunchError` carries the node root once it was made.
        """
        root = self.prepare()
        try:
            ident = self.setup_identity(root, spec.identity)
            trust, user = None, None
            if spec.trust is not None:
                user = spec.trust.switching_user if ident.get("switching") else None
                trust = self.install_trust(root, spec.trust.private_key, spec.trust.public_key,
                                           allowed_from=spec.trust.allowed_from, user=user)
            self.start(root, node_config(spec.config, root, bool(ident.get("switching"))),
                       spec.files)
        except NodeConnectionError as exc:
            raise NodeLaunchError(exc.host, exc.reason, root) from exc
        return Launched(root, ident, trust, user)

    @abstractmethod
    def prepare(self) -> str:
        """Check that the host can run a node, and return its node root.

        Returns
        -------
        str
            The absolute node root directory on the host
            (:attr:`Host.root_dir <hpcbatch.providers.inventory.Host.root_dir>`
            with ``~`` expanded), ``AZ_BATCH_NODE_ROOT_DIR``.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached, or its interpreter lacks hpcbatch or
            distributed (the message says which).
        """

    @abstractmethod
    def start(self, root_dir: str, config: Mapping[str, Any],
              files: Mapping[str, bytes] | None = None) -> None:
        """Start the node process (``python -m hpcbatch.node``) detached on the host.

        Parameters
        ----------
        root_dir
            The node root returned by :meth:`prepare`.
        config
            The node process's config (:mod:`hpcbatch.execution.node`), written
            to ``{root_dir}/node.json`` with mode 0600.
        files
            Files to write first, by path relative to ``root_dir`` (TLS
            material), with mode 0600.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached, a file cannot be written or the
            process cannot be started.
        """

    @abstractmethod
    def check(self, root_dir: str) -> bool:
        """Tell whether the node process recorded in ``{root_dir}/node.pid`` is running.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached.
        """

    @abstractmethod
    def stop(self, root_dir: str) -> bool:
        """End the node process recorded in ``{root_dir}/node.pid`` and its whole process tree.

        Returns
        -------
        bool
            True when a node process was running.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached.
        """

    @abstractmethod
    def read_log(self, root_dir: str, lines: int = 5) -> str:
        """Return the last ``lines`` lines of the node's log (``{root_dir}/node.log``).

        Raises
        ------
        NodeConnectionError
            The host cannot be reached.
        """

    @abstractmethod
    def wipe(self, root_dir: str) -> None:
        """Remove everything under the node root, keeping the folder ("Compute Node - Reimage").

        Only a folder of its own is emptied: ``root_dir`` must pass
        :func:`hpcbatch.providers.inventory.check_root_dir`, and on the host,
        with links resolved, it must not be ``/``, the login user's home or a
        parent of it, and must hold :data:`ROOT_MARKER` (written by
        :meth:`prepare` into a new, empty or hpcbatch-made folder). The marker stays.

        Raises
        ------
        NodeRootRefusedError
            The folder is not a node root of its own; nothing was removed.
        NodeConnectionError
            The host cannot be reached.
        """

    # -------------------------------------------------------------- pool trust

    @abstractmethod
    def setup_identity(self, root_dir: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Prepare the host for running tasks as their own users (``userIdentity``).

        Runs :func:`hpcbatch.execution.identity.setup_node` on the host (the
        pool's auto-user and ``userAccounts``, node folder modes); the spec,
        which holds account passwords, goes on the command's stdin, never to a file.

        Parameters
        ----------
        root_dir
            The node root returned by :meth:`prepare`.
        spec
            ``{"accounts": [UserAccount wire dicts], "inter_node": bool}``.

        Returns
        -------
        dict
            ``{"switching": bool}``, with ``"reason"`` when tasks will share the
            node agent's identity.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached, or an account cannot be created.
        """

    @abstractmethod
    def install_trust(self, root_dir: str, private_key: str, public_key: str, *,
                      allowed_from: Sequence[str], user: str | None = None) -> PoolTrust | None:
        """Let the pool's nodes reach this host over SSH (inter-node communication).

        Parameters
        ----------
        root_dir
            The node root; the private key goes to ``{root_dir}/ssh/id_pool``
            (mode 0600, owned by ``user``).
        private_key, public_key
            The pool's key (:func:`hpcbatch.providers.trust.pool_ssh_key`):
            OpenSSH private key and public key line.
        allowed_from
            The pool's node addresses: the key is authorised as
            ``restrict,from="..."`` (:func:`hpcbatch.providers.trust.authorized_line`).
        user
            The user whose tasks use the key and who is reached with it (the
            pool's auto-user under user switching); None: the login user.

        Returns
        -------
        PoolTrust or None
            Where the key is and how the host is reached; None when the
            provider needs no SSH trust (its MPI launchers do not use SSH).

        Raises
        ------
        NodeConnectionError
            The host cannot be reached or its ``authorized_keys`` cannot be written.
        """

    @abstractmethod
    def update_trust(self, public_key: str, *, allowed_from: Sequence[str],
                     user: str | None = None) -> None:
        """Rewrite the pool key's ``from=`` list on this host (the pool's membership changed).

        Raises
        ------
        NodeConnectionError
            The host cannot be reached or its ``authorized_keys`` cannot be written.
        """

    @abstractmethod
    def revoke_trust(self, public_key: str, *, root_dir: str | None = None,
                     user: str | None = None) -> None:
        """Remove the pool's key from the host's ``authorized_keys`` and delete the
        node's copy of the private key (the node left the pool).

        Parameters
        ----------
        public_key
            The pool's public key line.
        root_dir
            The node root whose ``ssh/id_pool`` is deleted (None: leave files).
        user
            As for :meth:`install_trust`.

        Raises
        ------
        NodeConnectionError
            The host cannot be reached.
        """

    @abstractmethod
    def pool_key_path(self, root_dir: str) -> str | None:
        """Path of the pool's private key under ``root_dir``, or None without SSH trust."""

    @property
    @abstractmethod
    def local_launch_python(self) -> str | None:
        """How MPI launchers reach the host: the interpreter that runs
        :mod:`hpcbatch.providers.locallaunch` as their ``ssh`` (a node on this
        machine), or None when they use real SSH with the pool's key."""

    # ----------------------------------------------------------------- closing

    @abstractmethod
    def close(self) -> None:
        """Release connections; a started node process keeps running."""


class TransportProvider(NodeProvider):
    """A :class:`NodeProvider` whose every operation goes through a :class:`Transport`.

    Subclasses say how the transport is opened (:meth:`open_transport`) and
    how pool trust and MPI launchers work.
    """

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._transport: Transport | None = None

    @classmethod
    @abstractmethod
    def open_transport(cls, host: Host) -> Transport:
        """Return a new transport to ``host`` (connecting lazily)."""

    @property
    def transport(self) -> Transport:
        """This provider's transport to its host, opened on first use."""
        if self._transport is None:
            self._transport = self.open_transport(self.host)
        return self._transport

    def privileged(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as root on a host whose login user may ``sudo`` (``Host.sudo``), else as is.

        For what needs root once tasks switch users: the node process itself,
        task users and their keys, and task folders those users own.
        """
        return ["sudo", "-n", "--", *argv] if self.host.sudo else list(argv)

    def launch(self, spec: LaunchSpec) -> Launched:
        """Bring the node up in one command on the host; see :meth:`NodeProvider.launch`.

        ``python -m hpcbatch.node --launch`` (:mod:`hpcbatch.execution.bootstrap`)
        gets the whole spec on stdin (passwords and the pool's key never reach
        a file or an argument) and does the probe, the identity set-up, the
        trust (:meth:`remote_trust`), the files and the node process's start in
        one interpreter: one SSH exchange per node start.
        """
        host = self.host
        request = {
            "root_dir": host.root_dir, "marker": ROOT_MARKER, "python": host.python,
            "privileged": self.privileged([]), "identity": dict(spec.identity),
            "trust": self.remote_trust(spec.trust) if spec.trust is not None else None,
            "files": {rel: base64.b64encode(data).decode() for rel, data in spec.files.items()},
            "config": dict(spec.config), "config_file": NODE_CONFIG, "log_file": NODE_LOG,
        }
        res = self.transport.run([host.python, "-m", "hpcbatch.node", "--launch"],
                                 stdin=json.dumps(request).encode(), timeout_s=120)
        try:
            answer = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = None
        if not isinstance(answer, dict):
            detail = (res.stderr.strip().splitlines() or [res.stdout.strip() or "no output"])[-1]
            raise NodeLaunchError(
                host.name, f"{host.python} cannot run hpcbatch on this host "
                f"(exit code {res.exit_code}): {detail}")
        error = answer.get("error")
        if error or res.exit_code != 0:
            error = error or {"step": "start", "message": "cannot start the node process",
                              "detail": res.stderr.strip() or f"exit code {res.exit_code}"}
            reason = error["message"] + (f": {error['detail']}" if error.get("detail") else "")
            if error.get("step") == "probe":
                reason = (f"{host.python} cannot run hpcbatch on this host "
                          f"(exit code {res.exit_code}): {reason}")
            raise NodeLaunchError(host.name, reason, answer.get("root_dir"))
        root = str(answer["root_dir"])
        trusted = answer.get("trust")
        trust = (self.trust_result(trusted["key_path"], trusted["user"])
                 if trusted is not None else None)
        return Launched(root, dict(answer.get("identity") or {}), trust,
                        trusted.get("trust_user") if trusted is not None else None)

    def remote_trust(self, spec: TrustSpec) -> dict[str, Any] | None:
        """How the host installs the pool's trust during :meth:`launch`, or None for none.

        Returns
        -------
        dict or None
            ``{"key_file", "private_key", "login", "plain": VARIANT, "switching": VARIANT}``,
            a VARIANT being ``{"user", "chown", "chown_error", "authorize",
            "authorize_error"}`` (argv lists and the messages naming what failed),
            for a node without and with user switching (:mod:`hpcbatch.execution.bootstrap`).
        """
        return None

    def trust_result(self, key_path: str, user: str) -> PoolTrust | None:
        """The :class:`PoolTrust` of a trust installed by :meth:`launch` (None: no SSH trust)."""
        return None

    def prepare(self) -> str:
        """Probe the host's interpreter and expand the node root; see :meth:`NodeProvider.prepare`."""
        host = self.host
        probe = self.transport.run([host.python, "-c", _PROBE, host.root_dir, ROOT_MARKER],
                                   timeout_s=60)
        if probe.exit_code != 0:
            detail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            raise NodeConnectionError(
                host.name, f"{host.python} cannot run hpcbatch on this host "
                f"(exit code {probe.exit_code}): {detail}")
        return probe.stdout.strip().splitlines()[-1]

    def start(self, root_dir: str, config: Mapping[str, Any],
              files: Mapping[str, bytes] | None = None) -> None:
        """Write the files and config, spawn the node process; see :meth:`NodeProvider.start`."""
        tr = self.transport
        for rel, data in (files or {}).items():
            tr.put_bytes(data, posixpath.join(root_dir, rel), mode=0o600)
        config_path = posixpath.join(root_dir, NODE_CONFIG)
        tr.put_bytes(json.dumps(dict(config)).encode(), config_path, mode=0o600)
        tr.spawn_detached(self.privileged([self.host.python, "-m", "hpcbatch.node", config_path]),
                          log_path=posixpath.join(root_dir, NODE_LOG))

    def check(self, root_dir: str) -> bool:
        """Ask ``python -m hpcbatch.node --check``; see :meth:`NodeProvider.check`."""
        res = self.transport.run(self.privileged([self.host.python, "-m", "hpcbatch.node",
                                                  "--check", root_dir]),
                                 timeout_s=60)
        return res.exit_code == 0

    def stop(self, root_dir: str) -> bool:
        """Run ``python -m hpcbatch.node --stop``; see :meth:`NodeProvider.stop`."""
        res = self.transport.run(self.privileged([self.host.python, "-m", "hpcbatch.node",
                                                  "--stop", root_dir]),
                                 timeout_s=60)
        if res.exit_code not in (0, 1):
            raise NodeConnectionError(self.host.name, "cannot stop the node process: "
                                      f"{res.stderr.strip() or res.exit_code}")
        return res.exit_code == 0

    def read_log(self, root_dir: str, lines: int = 5) -> str:
        """``tail`` the node log; see :meth:`NodeProvider.read_log`."""
        res = self.transport.run(["tail", "-n", str(lines), posixpath.join(root_dir, NODE_LOG)],
                                 timeout_s=20)
        return res.stdout

    def wipe(self, root_dir: str) -> None:
        """Empty the node root, after checking it twice; see :meth:`NodeProvider.wipe`."""
        try:
            check_root_dir(root_dir)
        except ValueError as exc:
            raise NodeRootRefusedError(self.host.name, root_dir, str(exc)) from None
        res = self.transport.run(self.privileged(["sh", "-c", _WIPE_SCRIPT, "sh", root_dir,
                                                  ROOT_MARKER]))
        if res.exit_code == 3:
            raise NodeRootRefusedError(self.host.name, root_dir,
                                       res.stderr.strip() or "refused on the host")

    def setup_identity(self, root_dir: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``python -m hpcbatch.execution.identity - ROOT``; see :meth:`NodeProvider.setup_identity`."""
        argv = self.privileged([self.host.python, "-m", "hpcbatch.execution.identity", "-",
                                root_dir])
        res = self.transport.run(argv, stdin=json.dumps(dict(spec)).encode(), timeout_s=120)
        if res.exit_code != 0:
            raise NodeConnectionError(self.host.name, "cannot prepare the node's task users: "
                                      f"{res.stderr.strip() or res.exit_code}")
        try:
            result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise NodeConnectionError(self.host.name, "cannot prepare the node's task users: "
                                      f"unexpected output {res.stdout[-200:]!r}") from None
        return result

    def install_trust(self, root_dir: str, private_key: str, public_key: str, *,
                      allowed_from: Sequence[str], user: str | None = None) -> PoolTrust | None:
        """No SSH trust by default; see :meth:`NodeProvider.install_trust`."""
        return None

    def update_trust(self, public_key: str, *, allowed_from: Sequence[str],
                     user: str | None = None) -> None:
        """Nothing to update by default; see :meth:`NodeProvider.update_trust`."""

    def revoke_trust(self, public_key: str, *, root_dir: str | None = None,
                     user: str | None = None) -> None:
        """Nothing to revoke by default; see :meth:`NodeProvider.revoke_trust`."""

    def pool_key_path(self, root_dir: str) -> str | None:
        """No pool key by default; see :meth:`NodeProvider.pool_key_path`."""
        return None

    def close(self) -> None:
        """Close the transport; see :meth:`NodeProvider.close`."""
        tr, self._transport = self._transport, None
        if tr is not None:
            tr.close()


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
