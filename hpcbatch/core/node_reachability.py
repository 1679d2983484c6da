"""Node reachability: the periodic SSH check of every node's host.

A node whose host cannot be reached over SSH while its Dask worker is still
connected keeps its state (the worker, not SSH, carries its tasks) and gets a
``NodeUnreachable`` error naming the host and the SSH error, removed when the
host answers again (docs/architecture.md, D2b). :class:`NodeReachability`
runs the checks, spread over :attr:`NodeReachability.probe_interval_s`, at
most :attr:`NodeReachability.probe_concurrency` at once on threads of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import paramiko

from hpcbatch.batch.errors import HpcbatchError, NodeConnectionError
from hpcbatch.batch.states import ComputeNodeState
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.providers.base import TransportProvider
from hpcbatch.providers.ssh import SshTransport

if TYPE_CHECKING:
    from hpcbatch.core.pool_manager import PoolManager

log = logging.getLogger(__name__)

NODE_UNREACHABLE = "NodeUnreachable"
"""``ComputeNodeError`` code of a node whose host the periodic SSH check cannot reach
(:meth:`NodeReachability.probe_node`); cleared when the host answers again."""

PROBE_INTERVAL_ENV = "HPCBATCH_NODE_PROBE_INTERVAL_S"
"""Environment variable: seconds between two SSH reachability checks of a node (default 30)."""

PROBED_STATES = frozenset({ComputeNodeState.idle, ComputeNodeState.running, ComputeNodeState.offline,
                           ComputeNodeState.waitingforstarttask, ComputeNodeState.starttaskfailed})
"""States of a node whose host the periodic SSH check probes (its worker is connected)."""


class NodeReachability:
    """Checks that every node's host answers over SSH (one per pool manager).

    Parameters
    ----------
    manager
        The pool manager whose nodes it checks (their providers, and
        :meth:`~hpcbatch.core.pool_manager.PoolManager.persist` for their errors).

    Attributes
    ----------
    probe_interval_s
        Seconds between two checks of one node (``HPCBATCH_NODE_PROBE_INTERVAL_S``,
        default 30).
    probe_timeout_s
        Seconds one check may take before the host counts as unreachable.
    probe_concurrency
        Most checks in flight at once (their own threads).
    """

    def __init__(self, manager: PoolManager) -> None:
        self.manager = manager
        self.probe_interval_s = float(os.environ.get(PROBE_INTERVAL_ENV) or 30.0)
        self.probe_timeout_s = 10.0
        self.probe_concurrency = 16
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """Start the periodic checks (on the running event loop)."""
        self._loop_task = asyncio.get_running_loop().create_task(self._probe_loop())

    def close(self) -> None:
        """Stop the periodic checks and the checks in flight."""
        for task in (self._loop_task, *self._tasks):
            if task:
                task.cancel()

    async def _probe_loop(self) -> None:
        """Check every node's host over SSH once per :attr:`probe_interval_s`, spread out.

        The checks of one round start ``probe_interval_s / nodes`` apart (so
        1,000 nodes at 30 s cost 33 one-round-trip commands a second, never a
        burst), at most :attr:`probe_concurrency` at once, on threads of their own.
        """
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=self.probe_concurrency,
                                      thread_name_prefix="hpcbatch-ssh-probe")
        slots = asyncio.Semaphore(self.probe_concurrency)
        try:
            while True:
                started = loop.time()
                targets = [n for pool in list(self.manager.pools.values())
                           for n in list(pool.values())
                           if n.worker and n.state in PROBED_STATES]
                spacing = self.probe_interval_s / max(len(targets), 1)
                for node in targets:
                    await slots.acquire()
                    task = loop.create_task(self.probe_node(node, executor))
                    task.add_done_callback(lambda _t: slots.release())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    await asyncio.sleep(spacing)
                await asyncio.sleep(max(started + self.probe_interval_s - loop.time(), 0.0))
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    async def probe_node(self, node: NodeRuntime,
                         executor: ThreadPoolExecutor | None = None) -> str | None:
        """Check once that a node's host answers over SSH; set or clear its error.

        One SSH round trip on the host's connection, reconnecting if it
        dropped. A host that cannot be reached gets a ``ComputeNodeError``
        :data:`NODE_UNREACHABLE` naming the host and the SSH error; the node
        keeps its state while its worker is connected (its tasks run on, new
        ones are still placed there, since a node's worker, not SSH, carries
        them), and the error goes when the host answers again. A node on a
        provider without a transport (no SSH) is not checked.

        Parameters
        ----------
        node
            The node.
        executor
            Threads to run the check on (default: the loop's).

        Returns
        -------
        str or None
            The SSH error, or None when the host answered.
        """
        provider = self.manager.provisioning.provider(node.host)
        if not isinstance(provider, TransportProvider):
            return None
        generation = node.generation
        error = await asyncio.get_running_loop().run_in_executor(executor, self._reach, provider)
        if generation == node.generation and node.worker and not node.removing:
            self.mark_reachability(node, error)
        return error

    def _reach(self, provider: TransportProvider) -> str | None:
        """One SSH round trip to the provider's host (runs in a thread); the error or None.

        Over SSH: open and close a channel on the host's connection (sshd
        answers it without starting a process), connecting first when the
        connection dropped. Other transports run ``true``.
        """
        transport = provider.transport
        try:
            if isinstance(transport, SshTransport):
                try:
                    transport.connection.transport.open_session(
                        timeout=self.probe_timeout_s).close()
                except paramiko.ChannelException:
                    pass  # refused (e.g. MaxSessions in use): sshd answered all the same
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    return f"no answer on the SSH connection: {exc or type(exc).__name__}"
            else:
                transport.run(["true"], timeout_s=self.probe_timeout_s)
        except NodeConnectionError as exc:
            return exc.reason
        except HpcbatchError as exc:
            return str(exc)
        return None

    def mark_reachability(self, node: NodeRuntime, error: str | None) -> None:
        """Record the outcome of a reachability check on a node's errors (see :meth:`probe_node`).

        Parameters
        ----------
        node
            The node.
        error
            The SSH error, or None when its host answered.
        """
        others = [e for e in node.errors if e.get("code") != NODE_UNREACHABLE]
        if error is None:
            if len(others) != len(node.errors):
                node.errors = others
                log.info("node %s (pool %s): host %s is reachable over SSH again", node.node_id,
                         node.pool_id, node.host.name)
                self.manager.persist(node)
            return
        message = (f"host {node.host.name} cannot be reached over SSH: {error}; the node keeps "
                   "running its tasks while its worker stays connected")
        if any(e.get("message") == message for e in node.errors):
            return
        node.errors = [*others, {"code": NODE_UNREACHABLE, "message": message, "errorDetails": [
            {"name": "Host", "value": node.host.name}, {"name": "SshError", "value": error}]}]
        log.warning("node %s (pool %s): %s", node.node_id, node.pool_id, message)
        self.manager.persist(node)
