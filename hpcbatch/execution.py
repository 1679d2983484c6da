"""The execution engine: one Dask distributed scheduler per service, over TLS.

The scheduler runs as a child process of the service (``dask scheduler`` with
the service's TLS certificates; a process without them cannot connect). Each
compute node runs one Dask worker named after the node (:mod:`hpcbatch.node`).
The service holds an asynchronous Dask client and submits node-agent calls
(:mod:`hpcbatch.agent`) to the worker of the node the scheduler policy chose.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from distributed import Client, Future
from distributed.core import clean_exception
from distributed.protocol import pickle

from hpcbatch import agent

from hpcbatch.errors import HpcbatchError
from hpcbatch.security import TlsFiles, dask_security, dask_tls_cli_args


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
        Certificates shared by scheduler, workers and the service's client.
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
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._outcomes: dict[str, Any] = {}
        self._sinks: dict[str, Callable[[str, Any], None]] = {}
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
        log = open(self.run_dir / "dask-scheduler.log", "ab")
        argv = [
            sys.executable, "-m", "distributed.cli.dask_scheduler",
            "--host", self.listen_host, "--port", "0", "--protocol", "tls",
            *dask_tls_cli_args(self.tls),
            "--no-dashboard", "--scheduler-file", str(sched_file),
            "--pid-file", str(self.pid_file),
        ]
        env = dict(os.environ)
        # Nodes' task processes, not the Dask scheduler, decide when work is done.
        env.setdefault("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")
        env.setdefault("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "None")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()
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
        self.client = await Client(
            self.address, security=dask_security(self.tls), asynchronous=True,
            set_as_default=False, name="hpcbatch-service",
        )
        self.client.subscribe_topic(agent.OUTCOME_TOPIC, self._on_outcome)

    def _on_outcome(self, event: tuple[float, dict[str, Any]]) -> None:
        """A node pushed run outcomes: hand each to its sink or to whoever awaits that run."""
        for msg in event[1]["outcomes"]:
            key = msg["key"]
            outcome = agent.outcome_from_wire(msg)
            sink = self._sinks.pop(key, None)
            if sink is not None:
                sink(key, outcome)
                continue
            waiter = self._waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)
            else:
                self._outcomes[key] = outcome

    async def outcome(self, future: Future) -> Any:
        """Return the result of a node-agent run, preferably from its pushed outcome event.

        Falls back to fetching the result from the worker when the run ended
        without an event (an exception in the agent: it is raised here).
        """
        key = future.key
        if key in self._outcomes:
            return self._outcomes.pop(key)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        done = asyncio.ensure_future(future.exception())  # waits; fetches no result
        try:
            await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiters.pop(key, None)
            done.cancel()
        if waiter.done():
            return waiter.result()
        if key in self._outcomes:
            return self._outcomes.pop(key)
        return await future

    async def launch(self, worker: str, launches: list[Any]) -> list[asyncio.Future[Any]]:
        """Start node-agent runs on one worker; return one future of the outcome per run.

        The runs travel in one message (:func:`hpcbatch.agent.enqueue`); the
        outcomes arrive as pushed events. A worker that dies leaves its
        futures pending: the pool manager notices the lost node and the
        service requeues its runs.

        Raises
        ------
        Exception
            The worker could not be reached (the runs did not start).
        """
        loop = asyncio.get_running_loop()
        futures = []
        for launch in launches:
            fut = loop.create_future()
            if launch.key in self._outcomes:
                fut.set_result(self._outcomes.pop(launch.key))
            else:
                self._waiters[launch.key] = fut
            futures.append(fut)
        try:
            await self.run_on(worker, agent.enqueue, launches)
        except BaseException:
            for launch in launches:
                self._waiters.pop(launch.key, None)
            raise
        return futures

    async def launch_to(self, worker: str, launches: list[Any],
                        sink: Callable[[str, Any], None]) -> None:
        """Start node-agent runs on one worker; each outcome is handed to ``sink(key, outcome)``.

        Like :meth:`launch` without a future per run: the cheapest way to run
        many short tasks. ``sink`` is called on the event loop, once per run,
        unless the run is :meth:`forget`-ten first.

        Raises
        ------
        Exception
            The worker could not be reached (the runs did not start; no sink is kept).
        """
        for launch in launches:
            self._sinks[launch.key] = sink
        try:
            await self.run_on(worker, agent.enqueue, launches)
        except BaseException:
            for launch in launches:
                self._sinks.pop(launch.key, None)
            raise

    async def run_launch(self, worker: str, launch: Any) -> Any:
        """Run one node-agent run on a worker and return its outcome."""
        [fut] = await self.launch(worker, [launch])
        try:
            return await fut
        finally:
            self._waiters.pop(launch.key, None)

    def forget(self, key: str) -> None:
        """Drop a pushed outcome or a waiter nobody needs any more (the run was requeued)."""
        self._outcomes.pop(key, None)
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

    def submit(self, fn: Callable[..., Any], *args: Any, worker: str, key: str) -> Future:
        """Submit ``fn(*args)`` to run on exactly one worker; returns its future."""
        assert self.client is not None
        return self.client.submit(
            fn, *args, key=key, workers=[worker], allow_other_workers=False,
            pure=False, retries=0,
        )

    async def run_on(self, worker: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on one worker out of band (not in a task slot); return its result.

        The call goes straight from the service's client to the worker over a
        pooled TLS connection (the worker's ``run`` handler), not through the
        scheduler, so it costs one round trip.

        Raises
        ------
        Exception
            Whatever ``fn`` raised on the worker, or a connection error.
        """
        assert self.client is not None
        resp = await self.client.rpc(worker).run(
            function=pickle.dumps(fn), args=pickle.dumps(args), kwargs=pickle.dumps(kwargs),
            wait=True)
        if resp.get("status") == "OK":
            return resp["result"]
        _, exc, tb = clean_exception(**resp)
        raise exc.with_traceback(tb)

    async def close_worker(self, worker: str) -> None:
        """Ask one worker to close (its node process then exits)."""
        assert self.client is not None
        try:
            await asyncio.wait_for(
                self.client.retire_workers(workers=[worker], close_workers=True, remove=True), 15
            )
        except Exception:  # the worker is gone already, or the scheduler is closing
            pass

    async def close(self) -> None:
        """Close the client and end the scheduler process (workers then exit)."""
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.close(), 10)
            except Exception:
                pass
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.pid_file.unlink(missing_ok=True)
