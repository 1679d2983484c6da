"""The ``simulated`` node provider: many lightweight compute nodes served by the service itself.

For exercising the control plane at scale on one machine (a 1,000-node pool, a
1,000,000-task job; ``docs/scale.md``). An inventory host with
``provider: simulated`` becomes a node whose "node process" is an entry in
:data:`FLEET`, the process-wide registry this module keeps, instead of a Dask
worker started on a host. The service's engine
(:class:`hpcbatch.core.simulated.SimulatedEngine`) finds the nodes
registered for its scheduler there, lists them as connected workers, and runs
their tasks as timers on its event loop (:func:`simulate` reads the command
line: ``sleep 0.01``, ``/bin/true``, ``exit 3``), or as a real tiny process
for any other command line. Everything above the engine — REST, store,
scheduling policy, pool manager, outcome recording, retries — is the code SSH
nodes go through.

What a simulated node skips compared with an SSH node is listed in
``docs/scale.md``: no SSH, no node process, no Dask worker or TLS comm, no task
directory, environment, resource or output files for simulated commands, no
user switching, no pool trust.

Host commands (``hosts check``, the image probe) run on this machine, as for
``provider: local``.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hpcbatch.providers.base import (
    Launched,
    LaunchSpec,
    NodeProvider,
    TransportProvider,
)
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.local import LocalTransport

__all__ = ["FLEET", "SimulatedFleet", "SimulatedNode", "SimulatedProvider", "simulate"]

_TRUE = frozenset({"true", "/bin/true", "/usr/bin/true", ":"})
_FALSE = frozenset({"false", "/bin/false", "/usr/bin/false"})
_SLEEP = frozenset({"sleep", "/bin/sleep", "/usr/bin/sleep"})


def simulate(command_line: str) -> tuple[float, int] | None:
    """Tell how a simulated node runs a command line: ``(seconds, exit code)``, or None.

    Parameters
    ----------
    command_line
        The task's Batch command line.

    Returns
    -------
    tuple or None
        ``sleep S`` (one non-negative number of seconds, ``s`` suffix allowed):
        ``(S, 0)``; ``true``/``/bin/true``/``:``: ``(0, 0)``;
        ``false``/``/bin/false``: ``(0, 1)``; ``exit N`` (0-255): ``(0, N)``;
        also each of these as ``sh -c '...'`` or ``/bin/sh -c '...'``, and
        ``sleep S && exit N`` / ``sleep S; exit N``. None for any other command
        line: the node runs it as a real process.
    """
    try:
        argv = shlex.split(command_line)
    except ValueError:
        return None
    if len(argv) == 3 and argv[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and argv[1] == "-c":
        return _script(argv[2])
    return _simple(argv)


def _script(script: str) -> tuple[float, int] | None:
    """``A && B`` or ``A; B`` of simple commands, inside ``sh -c``."""
    total, code = 0.0, 0
    for sep in ("&&", ";"):
        if sep in script:
            parts = [p.strip() for p in script.split(sep)]
            break
    else:
        parts = [script.strip()]
    for part in parts:
        try:
            one = _simple(shlex.split(part))
        except ValueError:
            return None
        if one is None:
            return None
        total += one[0]
        code = one[1]
        if code != 0:
            break
    return total, code


def _simple(argv: list[str]) -> tuple[float, int] | None:
    if len(argv) == 1 and argv[0] in _TRUE:
        return 0.0, 0
    if len(argv) == 1 and argv[0] in _FALSE:
        return 0.0, 1
    if len(argv) == 2 and argv[0] in _SLEEP:
        try:
            seconds = float(argv[1].removesuffix("s"))
        except ValueError:
            return None
        return (seconds, 0) if 0 <= seconds < 1e7 else None
    if len(argv) == 2 and argv[0] == "exit" and argv[1].isdigit() and int(argv[1]) <= 255:
        return 0.0, int(argv[1])
    return None


@dataclass(frozen=True)
class SimulatedNode:
    """One simulated node's "node process": what the node config gave it.

    Attributes
    ----------
    node_id, worker_name, pool_id
        As in the node config (:mod:`hpcbatch.execution.node`); ``worker_name``
        changes with each incarnation.
    root_dir
        The node root (only real processes use it).
    slots
        Task slots (the config's ``nthreads`` minus one).
    env
        The host's site settings (``Host.env``), given to real processes.
    """

    node_id: str
    worker_name: str
    pool_id: str
    root_dir: str
    slots: int
    env: Mapping[str, str]


class SimulatedFleet:
    """The simulated nodes started in this process, by the scheduler port they were given.

    A service's engine serves the nodes registered under its own scheduler's
    port, so two services in one process do not see each other's nodes.
    Thread-safe: providers run in the pool manager's threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[int, dict[str, SimulatedNode]] = {}
        self._roots: dict[str, str] = {}

    def register(self, port: int, node: SimulatedNode) -> None:
        """Start ``node`` for the scheduler on ``port`` (a new incarnation replaces the older)."""
        with self._lock:
            nodes = self._nodes.setdefault(port, {})
            old = self._roots.get(node.root_dir + "\0" + node.node_id)
            if old is not None:
                nodes.pop(old, None)
            nodes[node.worker_name] = node
            self._roots[node.root_dir + "\0" + node.node_id] = node.worker_name

    def unregister(self, worker_name: str) -> bool:
        """End a node's incarnation; return whether it was running."""
        with self._lock:
            for nodes in self._nodes.values():
                node = nodes.pop(worker_name, None)
                if node is not None:
                    self._roots.pop(node.root_dir + "\0" + node.node_id, None)
                    return True
        return False

    def stop(self, root_dir: str, node_id: str) -> bool:
        """End the incarnation of the node with this root and ID; return whether one ran."""
        with self._lock:
            worker = self._roots.get(root_dir + "\0" + node_id)
        return worker is not None and self.unregister(worker)

    def running(self, root_dir: str, node_id: str) -> bool:
        """Tell whether the node with this root and ID has a running incarnation."""
        with self._lock:
            return root_dir + "\0" + node_id in self._roots

    def nodes(self, port: int) -> dict[str, SimulatedNode]:
        """Return (a copy of) the nodes registered for the scheduler on ``port``, by worker name."""
        with self._lock:
            return dict(self._nodes.get(port, {}))

    def get(self, port: int, worker_name: str) -> SimulatedNode | None:
        """Return one node registered for ``port``, or None."""
        with self._lock:
            return self._nodes.get(port, {}).get(worker_name)

    def forget_port(self, port: int) -> None:
        """Drop every node of the scheduler on ``port`` (its service closed)."""
        with self._lock:
            for node in self._nodes.pop(port, {}).values():
                self._roots.pop(node.root_dir + "\0" + node.node_id, None)


FLEET = SimulatedFleet()
"""The process-wide registry of simulated nodes."""


def scheduler_port(address: str) -> int:
    """The port of a scheduler address such as ``tls://127.0.0.1:8786``.

    Raises
    ------
    ValueError
        The address has no numeric port.
    """
    return int(address.rsplit(":", 1)[1])


class SimulatedProvider(TransportProvider):
    """Simulated compute nodes (``provider: simulated``): no process per node.

    :meth:`start` registers the node in :data:`FLEET` for the engine whose
    scheduler address the config names; :meth:`stop` and :meth:`check` work on
    that registry. Host commands (preflight, image probe) run on this machine
    through :class:`~hpcbatch.providers.local.LocalTransport`. No pool trust,
    no user switching, no remote login.
    """

    name: ClassVar[str] = "simulated"
    remote_login: ClassVar[bool] = False

    @classmethod
    def open_transport(cls, host: Host) -> LocalTransport:
        """Host commands run on this machine: a :class:`LocalTransport`."""
        return LocalTransport(host)

    def launch(self, spec: LaunchSpec) -> Launched:
        """Bring the node up step by step (:meth:`NodeProvider.launch`): a simulated node
        has no node process, so :class:`TransportProvider`'s one-command bootstrap, which
        starts one, does not apply."""
        return NodeProvider.launch(self, spec)

    def prepare(self) -> str:
        """Return the node root, ``~`` expanded (made only when a real process runs)."""
        return os.path.abspath(os.path.expanduser(self.host.root_dir))

    def start(self, root_dir: str, config: Mapping[str, Any],
              files: Mapping[str, bytes] | None = None) -> None:
        """Register the node's incarnation in :data:`FLEET`; see :meth:`NodeProvider.start`.

        The TLS files are not written: a simulated node has no comm.
        """
        FLEET.register(scheduler_port(str(config["scheduler_address"])), SimulatedNode(
            node_id=str(config["node_id"]),
            worker_name=str(config.get("worker_name") or config["node_id"]),
            pool_id=str(config["pool_id"]), root_dir=root_dir,
            slots=max(1, int(config["nthreads"]) - 1), env=dict(config.get("env") or {})))

    def check(self, root_dir: str) -> bool:
        """Tell whether this host's node is registered; see :meth:`NodeProvider.check`."""
        return FLEET.running(root_dir, self.host.name)

    def stop(self, root_dir: str) -> bool:
        """Unregister this host's node; see :meth:`NodeProvider.stop`."""
        return FLEET.stop(root_dir, self.host.name)

    def read_log(self, root_dir: str, lines: int = 5) -> str:
        """A simulated node keeps no log."""
        return "(simulated node: no node log)"

    def wipe(self, root_dir: str) -> None:
        """Nothing to wipe: a simulated node keeps no files of its own (real processes'
        task folders stay)."""

    def setup_identity(self, root_dir: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """No user switching: tasks run as the service's user."""
        return {"switching": False,
                "reason": "simulated node: tasks run as the service's user"}

    @property
    def local_launch_python(self) -> str | None:
        """Simulated nodes run no MPI launchers."""
        return None
