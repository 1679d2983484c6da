"""The execution engine: one Dask distributed scheduler per service, over TLS.

The scheduler runs as a child process of the service (``dask scheduler`` with
the service's TLS certificate; a process without a certificate from the
service's CA cannot connect, and a node's certificate can only act as that
node's worker). Each compute node runs one Dask worker named after the node
(:mod:`hpcbatch.node`). The service holds an asynchronous Dask client for the
scheduler and its own pool of comms to the workers. Runs of tasks go straight
to the worker of the node the scheduling policy chose, over those pooled TLS
comms and the worker's ``hpcbatch_exchange`` handler, in one one-way
message per worker per scheduling pass; outcomes come back on one long-lived
comm per worker (``hpcbatch_outcomes``). Out-of-band calls on a node's agent
(:meth:`DaskEngine.call`: kill a run, list or read node files, sample metrics)
go the same way to the worker's ``hpcbatch_call`` handler, with plain msgpack
arguments and results. The scheduler keeps the workers' membership, but is
not on a run's path: at thousands of short tasks a second, each message it
relayed cost CPU that the tasks need.

Nodes are untrusted peers (:mod:`hpcbatch.execution.guard`): the scheduler
runs with the guard preloaded, and the service reads what nodes send (call
replies, outcomes) with msgpack only, on comms opened with
``deserialize=False``; nothing a node sends is unpickled here. Runs, which
the service sends, are pickled (the node trusts the service).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle as std_pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psutil
from distributed import Client
from distributed.comm import connect
from distributed.core import ConnectionPool

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.execution import agent, guard, outcomes
from hpcbatch.execution.tls import TlsFiles, dask_security, dask_tls_cli_args

log = logging.getLogger(__name__)


STREAM_RETRY_S = 0.5
"""Pause before reconnecting a worker's outcome stream that broke."""

SCHEDULER_PRELOAD = "hpcbatch.execution.scheduler_guard"
"""The module the scheduler preloads: it guards the scheduler's comms (:mod:`hpcbatch.execution.guard`)."""

HTTP_ROUTES = '["distributed.http.health"]'

SERVICE_PID_ENV = "HPCBATCH_SERVICE_PID"
"""Environment variable naming the service process the scheduler lives for
(:mod:`hpcbatch.execution.scheduler_guard` exits when it is gone)."""
"""The only routes of the scheduler's HTTP server (on loopback): no dashboard, info, proxy."""


class NodeCallError(HpcbatchError):
    """A call on a node's agent (:meth:`DaskEngine.call`) failed on the node."""


@dataclass
class _Channel:
    """The service's side of one worker's runs: what is queued, in flight, and its stream."""

    worker: str
    keys: set[str] = field(default_factory=set)
    queued: list[tuple[list[Any], Any]] = field(default_factory=list)
    stream: asyncio.Task[Any] | None = None


def route_address(target: str, port: int = 22) -> str:
    """Return this machine's address on the route to ``target``.

    A worker on ``target`` reaches the scheduler (listening on all interfaces)
    at this address. No packet is sent: a UDP socket is only connected.
    """
    fam = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, port))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class DaskEngine:
    """The service's Dask scheduler process and its client.

    Parameters
    ----------
    run_dir
        Folder for the scheduler's pid file, scheduler file and log.
    tls
        The service's certificate (presented by the scheduler and the service's
        client) and the CA.
    listen_host
        Interface the scheduler listens on: ``127.0.0.1`` when every node is
        on this machine, ``0.0.0.0`` when SSH hosts elsewhere must reach it.
    """

    def __init__(self, run_dir: Path, tls: TlsFiles, listen_host: str = "0.0.0.0") -> None:
        self.run_dir = run_dir
        self.tls = tls
        self.listen_host = listen_host
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        self.nodes: ConnectionPool | None = None
        """Comms to node workers: ``deserialize=False``, read with msgpack only."""
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._sinks: dict[str, Callable[[str, Any], None]] = {}
        self._key_worker: dict[str, str] = {}
        self._channels: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port: int = 0
        self.address: str = ""

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "dask-scheduler.pid"

    def _kill_stale(self) -> None:
        """End a scheduler left by an earlier service process that was killed."""
        try:
            pid = int(self.pid_file.read_text())
            proc = psutil.Process(pid)
            if "dask_scheduler" in " ".join(proc.cmdline()):
                proc.kill()
                proc.wait(timeout=10)
        except (OSError, ValueError, psutil.Error):
            pass

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the scheduler process and connect the client.

        Raises
        ------
        HpcbatchError
            When the scheduler does not come up within ``timeout_s``.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._kill_stale()
        sched_file = self.run_dir / "dask-scheduler.json"
        sched_file.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "distributed.cli.dask_scheduler",
            "--host", self.listen_host, "--port", "0", "--protocol", "tls",
            *dask_tls_cli_args(self.tls),
            "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
            "--preload", SCHEDULER_PRELOAD,
            "--scheduler-file", str(sched_file),
            "--pid-file", str(self.pid_file),
        ]
        env = dict(os.environ)
        env["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"] = HTTP_ROUTES
        # Nodes' task processes, not the Dask scheduler, decide when work is done.
        env.setdefault("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")
        env.setdefault("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "None")
        # No Dask task runs here (runs go to the node agents, docs/security.md "Nodes"):
        # balancing tasks between workers 10 times a second, and checking the loop 50
        # times a second, only cost an idle scheduler CPU (about 3 % of a core before).
        env.setdefault("DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING", "False")
        env.setdefault("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", "500ms")
        # The scheduler ends itself when this process is gone (a SIGKILL leaves no
        # time to close it); its workers, and with them the node agents and their
        # tasks, end when their scheduler connection breaks.
        env[SERVICE_PID_ENV] = str(os.getpid())
        # Blocking, once at start (the loop serves nothing yet); the scheduler keeps its own log fd.
        with open(self.run_dir / "dask-scheduler.log", "ab") as log:  # noqa: ASYNC230 - see above
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log,  # noqa: ASYNC220 - see above
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout_s
        while not sched_file.exists() or not sched_file.read_text().strip():
            if self.proc.poll() is not None:
                raise HpcbatchError(
                    f"the Dask scheduler exited with code {self.proc.returncode}; "
                    f"see {self.run_dir / 'dask-scheduler.log'}"
                )
            if time.monotonic() > deadline:
                raise HpcbatchError("the Dask scheduler did not start within "
                                    f"{timeout_s:g} s; see {self.run_dir / 'dask-scheduler.log'}")
            await asyncio.sleep(0.05)
        self.address = json.loads(sched_file.read_text())["address"]
        self.port = int(self.address.rsplit(":", 1)[1])
        guard.install()
        security = dask_security(self.tls)
        self.client = await Client(
            self.address, security=security, asynchronous=True,
            set_as_default=False, name="hpcbatch-service",
        )
        self.nodes = ConnectionPool(limit=512, deserialize=False,
                                    connection_args=security.get_connection_args("client"))
        await self.nodes.start()
    # ------------------------------------------------------------------ runs

    def post(self, worker: str, launches: list[Any], *,
             sink: Callable[[str, Any], None] | None = None,
             on_error: Callable[[list[Any], BaseException], None] | None = None) -> None:
        """Queue node-agent runs for one worker; they leave at the next :meth:`flush`.

        Each outcome is handed to ``sink(key, outcome)`` on the event loop,
        unless the run is :meth:`forget`-ten first. Runs that cannot be sent
        (the worker cannot be reached) go to ``on_error(launches, exc)``.

        Every run queued for a worker between two flushes travels in one
        one-way message (:meth:`hpcbatch.execution.agent.NodeAgent.exchange`); outcomes come
        back on one long-lived stream per worker
        (:meth:`hpcbatch.execution.outcomes.OutcomeStream.serve`),
        several to a message when they end together. A run costs no Dask
        task and no round trip of its own, and the scheduler is not on its path.
        """
        ch = self._channels.get(worker)
        if ch is None:
            ch = self._channels[worker] = _Channel(worker)
        for launch in launches:
            if sink is not None:
                self._sinks[launch.key] = sink
            self._key_worker[launch.key] = worker
            ch.keys.add(launch.key)
        ch.queued.append((launches, on_error))

    def flush(self) -> None:
        """Send every queued run (see :meth:`post`): the service calls it at the end of a pass."""
        for ch in self._channels.values():
            if ch.queued:
                batch, ch.queued = ch.queued, []
                self._spawn(self._send(ch, batch))
            if ch.stream is None and ch.keys:
                ch.stream = self._spawn(self._read_outcomes(ch))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send(self, ch: _Channel, batch: list[tuple[list[Any], Any]]) -> None:
        """Send queued runs to a worker in one one-way message."""
        assert self.nodes is not None
        launches = [lc for lcs, _ in batch for lc in lcs]
        try:
            await self.nodes(ch.worker).hpcbatch_exchange(
                launches=std_pickle.dumps(launches, protocol=5), reply=False)
        except Exception as exc:  # noqa: BLE001 - logged; the runs go to on_error
            log.warning("cannot send %d run(s) to worker %s: %s", len(launches), ch.worker, exc)
            for lcs, on_error in batch:
                for launch in lcs:
                    self._drop(launch.key)
                    waiter = self._waiters.pop(launch.key, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(exc)
                if on_error is not None:
                    on_error(lcs, exc)

    async def _read_outcomes(self, ch: _Channel) -> None:
        """Read one worker's outcome stream; reconnect if it breaks while runs are in flight.

        The stream stays open while the worker lives (one comm per worker),
        so a run never waits for a connection to be made.
        """
        assert self.nodes is not None
        try:
            while True:
                comm = None
                try:
                    comm = await connect(ch.worker, deserialize=False,
                                         **self.nodes.connection_args)
                    await comm.write({"op": agent.OUTCOME_STREAM_HANDLER, "reply": False})
                    while True:
                        self._deliver(ch, await comm.read())
                except Exception as exc:  # noqa: BLE001 - any break: reconnect, or end if nothing is owed
                    if not ch.keys and not ch.queued:
                        break  # the worker is gone and owes nothing
                    # The worker may be gone: the pool manager then forgets its runs.
                    log.warning("outcome stream of worker %s broke (%s); reconnecting",
                                ch.worker, exc)
                    await asyncio.sleep(STREAM_RETRY_S)
                finally:
                    if comm is not None:
                        comm.abort()
        finally:
            ch.stream = None
        if self._channels.get(ch.worker) is ch and not ch.keys and not ch.queued:
            del self._channels[ch.worker]

    def _deliver(self, ch: _Channel, outs: Any) -> None:
        """Hand outcomes that came on ``ch``'s stream to their sinks or waiters.

        Only runs sent to that worker are taken from it: a node cannot end
        another node's runs. A malformed message breaks the stream (it is read
        again from a new one).
        """
        if isinstance(outs, bytes):  # a packed list (what agents send): msgpack, never pickle
            outs = msgpack.unpackb(outs)
        if not isinstance(outs, (list, tuple)):
            raise TypeError(f"outcome stream message of type {type(outs).__name__}")
        for msg in outs:
            key = msg.get("key") if isinstance(msg, dict) else None
            if not isinstance(key, str) or key not in ch.keys:
                log.warning("worker %s reported an outcome for a run it was not sent: %r",
                            ch.worker, key)
                continue
            outcome = outcomes.outcome_from_wire(msg)
            if not self._drop(key):
                continue  # forgotten meanwhile (requeued): void
            sink = self._sinks.pop(key, None)
            if sink is not None:
                try:
                    sink(key, outcome)
                except Exception:  # one sink's fault must not lose the others' outcomes
                    log.exception("handling the outcome of run %s failed", key)
                continue
            waiter = self._waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)

    def _drop(self, key: str) -> bool:
        """Stop expecting ``key`` from its worker; return whether it was expected."""
        worker = self._key_worker.pop(key, None)
        if worker is None:
            return False
        ch = self._channels.get(worker)
        if ch is not None:
            ch.keys.discard(key)
        return True

    async def launch(self, worker: str, launches: list[Any]) -> list[asyncio.Future[Any]]:
        """Start node-agent runs on one worker now; return one future of the outcome per run.

        See :meth:`post`. A worker that dies leaves its futures pending: the
        pool manager notices the lost node and the service requeues its runs.
        A worker that cannot be reached sets the futures' exception.
        """
        loop = asyncio.get_running_loop()
        futures = []
        for launch in launches:
            fut = loop.create_future()
            self._waiters[launch.key] = fut
            futures.append(fut)
        self.post(worker, launches)
        self.flush()
        return futures

    async def run_launch(self, worker: str, launch: Any) -> Any:
        """Run one node-agent run on a worker and return its outcome.

        Raises
        ------
        Exception
            The worker could not be reached.
        """
        [fut] = await self.launch(worker, [launch])
        try:
            return await fut
        finally:
            self._waiters.pop(launch.key, None)

    def forget(self, key: str) -> None:
        """Drop a run nobody needs any more (requeued): its outcome, if any comes, is void."""
        self._drop(key)
        self._sinks.pop(key, None)
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()


    def contact_address(self, host_address: str) -> str:
        """Return the scheduler address a worker on ``host_address`` connects to."""
        if self.listen_host not in ("0.0.0.0", "::", ""):
            return f"tls://{self.listen_host}:{self.port}"
        return f"tls://{route_address(host_address)}:{self.port}"

    async def workers(self) -> dict[str, str]:
        """Return ``{worker name (node ID): worker address}`` of connected workers."""
        assert self.client is not None
        info = await self.client.scheduler.identity()
        return {str(w.get("name")): addr for addr, w in info.get("workers", {}).items()}

    async def call(self, worker: str, op: str, **kwargs: Any) -> Any:
        """Call one of the node agent's operations on a worker, out of band (not in a task slot).

        The call goes straight from the service to the worker's
        :data:`~hpcbatch.execution.agent.CALL_HANDLER` over a pooled TLS comm
        (one round trip, not through the scheduler). Arguments and result are
        plain msgpack values; the reply is read with msgpack only.

        Parameters
        ----------
        worker
            Address of the node's worker.
        op
            One of :data:`hpcbatch.execution.agent.CALL_OPS`.
        **kwargs
            The operation's arguments (msgpack values).

        Returns
        -------
        Any
            The operation's result.

        Raises
        ------
        NodeCallError
            The node refused the call or the operation failed there.
        Exception
            A connection error (the worker cannot be reached, or its reply was refused).
        """
        assert self.nodes is not None
        resp = await self.nodes(worker).hpcbatch_call(operation=op, args=kwargs)
        if isinstance(resp, dict) and resp.get("status") == "OK":
            return resp.get("result")
        message = resp.get("message") if isinstance(resp, dict) else None
        raise NodeCallError(f"{op} on worker {worker} failed: "
                            f"{message if isinstance(message, str) else 'a malformed reply'}",
                            code="NodeCallFailed")

    # ------------------------------------------------- calls on a node's agent

    async def kill_run(self, worker: str, key: str) -> bool:
        """Kill a run's process tree on a node ("Task - Terminate"); see
        :meth:`hpcbatch.execution.agent.NodeAgent.kill_task`.

        Parameters
        ----------
        worker
            Address of the node's worker.
        key
            The run's :attr:`~hpcbatch.execution.agent.Launch.key`.

        Returns
        -------
        bool
            True when a running process was found and killed.

        Raises
        ------
        Exception
            The worker cannot be reached, or has no node agent.
        """
        return bool(await self.call(worker, "kill_task", key=key))

    async def kill_tagged(self, worker: str, key: str) -> int:
        """Kill every process on a node tagged with run ``key`` (daemons included);
        return how many. See :func:`hpcbatch.execution.agent.kill_tagged`."""
        return int(await self.call(worker, "kill_tagged", key=key))

    async def list_files(self, worker: str, rel_dir: str,
                         recursive: bool = False) -> list[dict[str, Any]]:
        """List files under a directory of a node ("File - List From Compute Node").

        ``worker`` is the node's worker address; the other arguments and the
        entries returned are :meth:`hpcbatch.execution.node_files.NodeFiles.list_files`'s.
        """
        entries = await self.call(worker, "list_files", rel_dir=rel_dir, recursive=recursive)
        return [dict(e) for e in entries]

    async def read_file(self, worker: str, rel_path: str, offset: int = 0,
                        length: int | None = None) -> bytes | None:
        """Read part of a file on a node ("File - Get From Compute Node").

        ``worker`` is the node's worker address; the other arguments and the
        result (None: no such file in the node root) are
        :meth:`hpcbatch.execution.node_files.NodeFiles.read_file`'s.
        """
        data = await self.call(worker, "read_file", rel_path=rel_path, offset=offset,
                               length=length)
        return None if data is None else bytes(data)

    async def remove_dirs(self, worker: str, rel_dirs: list[str]) -> int:
        """Remove task directories on a node (retention time elapsed); return how many existed."""
        return int(await self.call(worker, "remove_dirs", rel_dirs=list(rel_dirs)))

    async def node_sample(self, worker: str) -> dict[str, float]:
        """Sample a node's resource metrics (:func:`hpcbatch.execution.metrics.node_sample`)."""
        sample = await self.call(worker, "node_sample")
        return {str(k): float(v) for k, v in dict(sample).items()}

    async def close_worker(self, worker: str) -> None:
        """Ask one worker to close (its node process then exits)."""
        assert self.client is not None
        try:
            await asyncio.wait_for(
                self.client.retire_workers(workers=[worker], close_workers=True, remove=True), 15
            )
        except Exception:  # noqa: BLE001, S110 - the worker is gone already, or the scheduler is closing
            pass

    async def close(self) -> None:
        """Close the client and end the scheduler process (workers then exit)."""
        for task in list(self._tasks):
            task.cancel()
        if self.nodes is not None:
            try:
                await asyncio.wait_for(self.nodes.close(), 10)
            except Exception:  # noqa: BLE001, S110 - closing: a failed close changes nothing
                pass
            self.nodes = None
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.close(), 10)
            except Exception:  # noqa: BLE001, S110 - closing: a failed close changes nothing
                pass
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.pid_file.unlink(missing_ok=True)
