"""Simulated nodes at the engine's seam: the service's side of ``provider: simulated``.

(In the service core because it joins the two layers below it that may not
import each other: the engine, in :mod:`hpcbatch.execution`, and the
simulated nodes' registry, in :mod:`hpcbatch.providers.simulated`.)

:class:`SimulatedEngine` is the service's :class:`~hpcbatch.execution.engine.DaskEngine`
with one addition: the nodes that :class:`hpcbatch.providers.simulated.SimulatedProvider`
registered for its scheduler (in :data:`hpcbatch.providers.simulated.FLEET`)
are listed among the connected workers, at addresses ``sim://{worker name}``,
and their runs go to a :class:`SimulatedAgent` on the service's event loop
instead of a worker's comm. Every other node goes through the Dask engine
unchanged.

Why here and not a thousand Dask workers: each worker is a TLS listener with
its own heartbeat, HTTP server, thread pool and agent, plus an outcome stream
and pooled comm in the service (whose pool holds 512 comms); on this 2-core
machine a thousand of them would measure the workers and TLS, not the
service. The seam is the lowest one that keeps the service's own work real:
the dispatcher's runs are posted, pickled and flushed per worker per pass as
for a real worker; outcomes come back as wire dicts
(:func:`hpcbatch.execution.outcomes.outcome_to_wire`'s shape) in batches on one
long-lived stream per node and go through the engine's own delivery
(key checks, :func:`~hpcbatch.execution.outcomes.outcome_from_wire`, the
dispatcher's sink). What is skipped is listed in ``docs/scale.md``.

A simulated run is a timer (:func:`hpcbatch.providers.simulated.simulate`
reads ``sleep S``, ``true``, ``false``, ``exit N``); any other command line
runs as a real process (no shell, in its task folder under the node root,
``stdout.txt``/``stderr.txt`` there). ``maxWallClockTime`` and "Task -
Terminate" end either kind with Batch's ``TaskEnded`` failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle as std_pickle
import shlex
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from hpcbatch.execution import agent, metrics
from hpcbatch.execution.engine import DaskEngine
from hpcbatch.providers.simulated import FLEET, SimulatedNode, simulate

__all__ = ["SIM_SCHEME", "SimulatedAgent", "SimulatedEngine"]

log = logging.getLogger(__name__)

SIM_SCHEME = "sim://"
"""Address prefix of a simulated node's "worker"."""


_simulate = lru_cache(maxsize=4096)(simulate)
""":func:`~hpcbatch.providers.simulated.simulate`, a pure function of the command line,
remembered: a parameter sweep's runs share a few command lines (``shlex`` parsing
was a twentieth of the service's CPU at 1,000 nodes)."""


def _failure(category: str, code: str, message: str) -> dict[str, Any]:
    return {"category": category, "code": code, "message": message}


class SimulatedAgent:
    """One simulated node's agent: runs launches as timers (or real processes) on the loop.

    Parameters
    ----------
    node
        The node's registration (:class:`hpcbatch.providers.simulated.SimulatedNode`).
    """

    def __init__(self, node: SimulatedNode) -> None:
        self.node = node
        self.closed = False
        self.pending: list[dict[str, Any]] = []
        """Outcome wire dicts not yet taken by the outcome stream."""
        self._wake: asyncio.Event = asyncio.Event()
        self._timers: dict[str, tuple[asyncio.TimerHandle, float, str]] = {}
        self._procs: dict[str, tuple[asyncio.Task[None], str]] = {}

    # ------------------------------------------------------------------ runs

    def enqueue(self, launch: agent.Launch) -> None:
        """Start one run now: a timer for a simulated command line, else a real process."""
        loop = asyncio.get_running_loop()
        tdir = f"{self.node.root_dir}/{launch.task_dir}"
        sim = _simulate(launch.command_line)
        start = time.time()
        if sim is None:
            task = loop.create_task(self._run_process(launch, tdir, start))
            self._procs[launch.key] = (task, tdir)
            return
        seconds, code = sim
        limit = launch.max_wall_clock_s
        if limit is not None and seconds > limit:
            handle = loop.call_later(limit, self._timed_out, launch.key, launch, start, tdir)
        else:
            handle = loop.call_later(seconds, self._ended, launch.key, code, start, tdir)
        self._timers[launch.key] = (handle, start, tdir)

    def _ended(self, key: str, code: int, start: float, tdir: str) -> None:
        self._timers.pop(key, None)
        failure = None if code == 0 else _failure(
            "usererror", "FailureExitCode",
            f"The task process exited with an unexpected exit code {code}.")
        self._report(key, code, start, failure, tdir)

    def _timed_out(self, key: str, launch: agent.Launch, start: float, tdir: str) -> None:
        self._timers.pop(key, None)
        self._report(key, agent.EXIT_CODE_TASK_ENDED, start, _failure(
            "servererror", "TaskEnded", "The task was ended because it exceeded its "
            f"maxWallClockTime of {launch.max_wall_clock_s:g} s."), tdir)

    async def _run_process(self, launch: agent.Launch, tdir: str, start: float) -> None:
        """Run a command line the simulator cannot read as a real process (no shell)."""
        key = launch.key
        code: int | None = None
        failure: dict[str, Any] | None = None
        try:
            argv = shlex.split(launch.command_line)
            if not argv:
                raise ValueError("the command line is empty")
        except ValueError as exc:
            self._procs.pop(key, None)
            self._report(key, None, start, _failure("usererror", "CommandLineInvalid",
                                                    f"The command line cannot be parsed: {exc}"),
                         tdir)
            return
        wd = Path(tdir) / "wd"
        env = dict(os.environ)
        env.update(self.node.env)
        env.update({s["name"]: s.get("value") or "" for s in launch.settings if "name" in s})
        env.update(launch.extra_env)
        env.update({"AZ_BATCH_NODE_ID": self.node.node_id, "AZ_BATCH_POOL_ID": self.node.pool_id,
                    "AZ_BATCH_NODE_ROOT_DIR": self.node.root_dir, "AZ_BATCH_TASK_DIR": tdir,
                    "AZ_BATCH_TASK_WORKING_DIR": str(wd),
                    "AZ_BATCH_JOB_ID": launch.job_id or "", "AZ_BATCH_TASK_ID": launch.task_id or ""})
        proc = None
        try:
            wd.mkdir(parents=True, exist_ok=True)
            # Creating two local files is as quick as the loop's own work: no thread.
            with open(Path(tdir) / launch.stdout_name, "wb") as out, \
                    open(Path(tdir) / launch.stderr_name, "wb") as err:  # noqa: ASYNC230
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=wd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=err, start_new_session=True)
            try:
                rc = await asyncio.wait_for(proc.wait(), launch.max_wall_clock_s)
            except TimeoutError:
                _kill(proc)
                await proc.wait()
                code, failure = agent.EXIT_CODE_TASK_ENDED, _failure(
                    "servererror", "TaskEnded", "The task was ended because it exceeded its "
                    f"maxWallClockTime of {launch.max_wall_clock_s:g} s.")
            else:
                code = rc if rc >= 0 else 128 - rc
                if code != 0:
                    failure = _failure("usererror", "FailureExitCode",
                                       f"The task process exited with an unexpected exit code "
                                       f"{code}.")
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:
                _kill(proc)
            raise
        except OSError as exc:
            code, failure = None, _failure(
                "usererror", "CommandProgramNotFound" if isinstance(exc, FileNotFoundError)
                else "CommandProgramFailed",
                f"The command program {argv[0]!r} could not be started on node "
                f"{self.node.node_id}: {exc.strerror or exc}")
        self._procs.pop(key, None)
        self._report(key, code, start, failure, tdir)

    def kill(self, key: str) -> bool:
        """End a run ("Task - Terminate"); its outcome is ``TaskEnded``. True when it ran."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            handle, start, tdir = timer
            handle.cancel()
            self._report(key, agent.EXIT_CODE_TASK_ENDED, start, _failure(
                "usererror", "TaskEnded", "The task was ended by user request."), tdir)
            return True
        proc = self._procs.pop(key, None)
        if proc is None:
            return False
        task, tdir = proc
        task.cancel()  # _run_process kills the process group and reports nothing
        self._report(key, agent.EXIT_CODE_TASK_ENDED, time.time(), _failure(
            "usererror", "TaskEnded", "The task was ended by user request."), tdir)
        return True

    def close(self) -> None:
        """The node's incarnation ended: its runs end with it, reporting nothing."""
        self.closed = True
        for handle, _, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task, _ in self._procs.values():
            task.cancel()
        self._procs.clear()
        self._wake.set()

    @property
    def running(self) -> int:
        """How many runs are under way."""
        return len(self._timers) + len(self._procs)

    # --------------------------------------------------------- outcome stream

    def _report(self, key: str, code: int | None, start: float,
                failure: dict[str, Any] | None, tdir: str) -> None:
        # The shape of hpcbatch.execution.outcomes.outcome_to_wire, plus the run's key.
        self.pending.append({"key": key, "exit_code": code, "start": start, "end": time.time(),
                             "failure": failure, "task_root_dir": tdir,
                             "node_id": self.node.node_id})
        self._wake.set()

    async def next_outcomes(self) -> list[dict[str, Any]]:
        """Wait for outcomes and take every one ready (empty when the agent closed)."""
        while not self.pending and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        batch, self.pending = self.pending, []
        return batch


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


class SimulatedEngine(DaskEngine):
    """The Dask engine, also serving the simulated nodes registered for its scheduler.

    Parameters are :class:`~hpcbatch.execution.engine.DaskEngine`'s. Workers at
    ``sim://`` addresses are served here (see the module docstring); every
    other worker goes through the Dask engine.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._agents: dict[str, SimulatedAgent] = {}
        self._sample: tuple[float, dict[str, float]] = (0.0, {})
        self._listing: asyncio.Future[dict[str, str]] | None = None

    @staticmethod
    def is_simulated(worker: str) -> bool:
        """Tell whether a worker address is a simulated node's."""
        return worker.startswith(SIM_SCHEME)

    def agent_of(self, worker: str) -> SimulatedAgent | None:
        """Return the agent of a simulated node's worker address (made on first use), or None
        when no such node is registered (its incarnation ended)."""
        name = worker[len(SIM_SCHEME):]
        sim = self._agents.get(name)
        if sim is not None and not sim.closed:
            return sim
        node = FLEET.get(self.port, name)
        if node is None:
            return None
        sim = self._agents[name] = SimulatedAgent(node)
        return sim

    async def workers(self) -> dict[str, str]:
        """The connected Dask workers and the registered simulated nodes, by worker name.

        Concurrent calls share one question to the Dask scheduler (a pool of a
        thousand starting nodes asks ten times a second each); each caller
        gets an answer at least as fresh as its call.
        """
        listing = self._listing
        if listing is None:
            listing = self._listing = asyncio.ensure_future(super().workers())
            listing.add_done_callback(self._listed)
        found = dict(await asyncio.shield(listing))
        registered = FLEET.nodes(self.port)
        for name in [n for n, a in self._agents.items() if n not in registered]:
            self._agents.pop(name).close()  # stopped by its provider
        found.update((name, SIM_SCHEME + name) for name in registered)
        return found

    def _listed(self, listing: asyncio.Future[dict[str, str]]) -> None:
        if self._listing is listing:
            self._listing = None

    async def _send(self, ch: Any, batch: list[tuple[list[Any], Any]]) -> None:
        if not self.is_simulated(ch.worker):
            await super()._send(ch, batch)
            return
        launches = [lc for lcs, _ in batch for lc in lcs]
        sim = self.agent_of(ch.worker)
        if sim is None:
            exc = ConnectionError(f"simulated node {ch.worker} is not running")
            log.warning("cannot send %d run(s) to worker %s: %s", len(launches), ch.worker, exc)
            for lcs, on_error in batch:
                for launch in lcs:
                    self.forget(launch.key)
                if on_error is not None:
                    on_error(lcs, exc)
            return
        # What the service pays to send them to a real worker: one pickle per message
        # (unpickling is the node's work).
        std_pickle.dumps(launches, protocol=5)
        for launch in launches:
            sim.enqueue(launch)

    async def _read_outcomes(self, ch: Any) -> None:
        if not self.is_simulated(ch.worker):
            await super()._read_outcomes(ch)
            return
        try:
            sim = self.agent_of(ch.worker)
            while sim is not None and not sim.closed:
                outs = await sim.next_outcomes()
                if outs:
                    self._deliver(ch, outs)
        finally:
            ch.stream = None

    async def call(self, worker: str, op: str, **kwargs: Any) -> Any:
        """A call on a node's agent; simulated nodes answer ``kill_task`` and
        ``node_sample`` (this machine's), and hold no files (lists are empty,
        reads find nothing)."""
        if not self.is_simulated(worker):
            return await super().call(worker, op, **kwargs)
        sim = self.agent_of(worker)
        if sim is None:
            raise ConnectionError(f"simulated node {worker} is not running")
        answers: dict[str, Callable[[], Any]] = {
            "kill_task": lambda: sim.kill(str(kwargs["key"])),
            "kill_tagged": lambda: 0,
            "list_files": list,
            "read_file": lambda: None,
            "remove_dirs": lambda: 0,
            "install_certificates": list,  # a simulated node holds no certificate files
            # nor container images: what a pool prefetches counts as pulled
            "pull_images": lambda: {"pulled": list(kwargs.get("images") or [])},
            "node_sample": self._machine_sample,
            "node_info": lambda: {"node_id": sim.node.node_id, "pool_id": sim.node.pool_id,
                                  "root_dir": sim.node.root_dir},
        }
        if op not in answers:
            raise ValueError(f"unknown node agent operation {op!r}")
        return answers[op]()

    def _machine_sample(self) -> dict[str, float]:
        """This machine's metrics, read at most once a second for all simulated nodes."""
        at, sample = self._sample
        if time.monotonic() - at > 1.0:
            sample = metrics.node_sample()
            self._sample = (time.monotonic(), sample)
        return dict(sample)

    async def close_worker(self, worker: str) -> None:
        """Close a worker; a simulated node's incarnation ends (its runs with it)."""
        if not self.is_simulated(worker):
            await super().close_worker(worker)
            return
        name = worker[len(SIM_SCHEME):]
        FLEET.unregister(name)
        sim = self._agents.pop(name, None)
        if sim is not None:
            sim.close()

    async def close(self) -> None:
        """Close the engine; the simulated nodes of its scheduler end too."""
        if self.port:
            FLEET.forget_port(self.port)
        for sim in self._agents.values():
            sim.close()
        self._agents.clear()
        await super().close()
