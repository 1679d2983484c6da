"""How a run ended, and how a node streams those outcomes to the service.

An :class:`Outcome` is what the node agent (:mod:`hpcbatch.execution.agent`)
reports when a run ends; :func:`outcome_to_wire` and :func:`outcome_from_wire`
are its msgpack shape (the service reads a node's messages with msgpack only,
and checks every field: a node is an untrusted peer).

:class:`OutcomeStream` carries them: the service opens one comm to each node
(the agent's outcome stream handler) and then only reads. Each message is the
msgpack bytes of a list of every outcome ready at that moment, so outcomes that
end close together travel together: one wake-up of the node and of the service
for several runs. While the node still has plenty of runs queued, an outcome
may be *held* a few milliseconds for others (:data:`OUTCOME_HOLD_S`); the agent
decides when (it knows its queue), the stream keeps the timer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgpack

STREAM_KEEPALIVE_S = 30.0
"""An outcome stream with nothing to say sends an empty message this often."""

MAX_PENDING_OUTCOMES = 100_000
"""Most outcomes a node keeps for the service; beyond it the oldest are dropped (the
service reads them as they come, so only runs started outside it can pile up)."""

OUTCOME_HOLD_S = 0.005
"""Longest a held outcome waits for others (:meth:`OutcomeStream.send` with ``hold``):
they then travel to the service together."""


@dataclass
class Outcome:
    """How a run ended, as the agent reports it.

    Attributes
    ----------
    exit_code
        The process's exit code (negative signal numbers are reported as 128+n,
        as a shell would); None when the process never started.
    start_time, end_time
        UTC times of the run.
    failure_info
        ``TaskFailureInformation`` wire dict, or None on a clean exit.
    task_root_dir
        Absolute task directory on the node.
    node_id
        The node that ran it.
    usage
        Resource usage of the task process (:func:`hpcbatch.execution.spawn.usage_of`:
        ``user_cpu_s``, ``kernel_cpu_s``, ``read_bytes``, ``write_bytes``,
        ``read_ops``, ``write_ops``, ``max_rss_bytes``), or None when no process ran.
    """

    exit_code: int | None
    start_time: datetime
    end_time: datetime
    failure_info: dict[str, Any] | None
    task_root_dir: str
    node_id: str
    usage: dict[str, float] | None = None


def outcome_to_wire(outcome: Outcome) -> dict[str, Any]:
    """Return an outcome as plain msgpack-friendly values."""
    return {"exit_code": outcome.exit_code, "start": outcome.start_time.timestamp(),
            "end": outcome.end_time.timestamp(), "failure": outcome.failure_info,
            "task_root_dir": outcome.task_root_dir, "node_id": outcome.node_id,
            "usage": outcome.usage}


def outcome_from_wire(msg: Mapping[str, Any]) -> Outcome:
    """Inverse of :func:`outcome_to_wire`; checks the types (a node is an untrusted peer).

    Raises
    ------
    TypeError
        A field is missing or of the wrong type.
    """
    code, start, end = msg.get("exit_code"), msg.get("start"), msg.get("end")
    failure, tdir, node_id = msg.get("failure"), msg.get("task_root_dir"), msg.get("node_id")
    if not (code is None or (isinstance(code, int) and not isinstance(code, bool))) \
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                       for t in (start, end)) \
            or not (failure is None or isinstance(failure, Mapping)) \
            or not isinstance(tdir, str) or not isinstance(node_id, str):
        raise TypeError(f"malformed outcome {dict(msg)!r}")
    usage = msg.get("usage")
    if usage is not None and not (
            isinstance(usage, Mapping) and all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in usage.items())):
        raise TypeError(f"malformed outcome usage {usage!r}")
    return Outcome(code, datetime.fromtimestamp(float(start), UTC),  # type: ignore[arg-type]
                   datetime.fromtimestamp(float(end), UTC),  # type: ignore[arg-type]
                   None if failure is None else dict(failure), tdir, node_id,
                   None if usage is None else {k: float(v) for k, v in usage.items()})


def _wake_up(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class OutcomeStream:
    """The outcomes of one node waiting for the service, and the stream that sends them.

    :meth:`put` and :meth:`send` may be called from any thread; :meth:`serve` and the timers run
    on the node worker's event loop, which :meth:`bind` names. Before
    :meth:`bind` (an agent without a worker, as in the benchmarks), outcomes
    only pile up for :meth:`pending`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._notify_scheduled = False
        self._hold: asyncio.TimerHandle | None = None
        self._generation = 0
        self._loop_thread: int | None = None
        self._call_soon: Callable[[Callable[[], None]], Any] | None = None

    def bind(self, call_soon_threadsafe: Callable[[Callable[[], None]], Any]) -> None:
        """Serve on the running event loop (call it there); ``call_soon_threadsafe``
        schedules a callback on that loop from any thread (Tornado's ``add_callback``)."""
        self._loop_thread = threading.get_ident()
        self._call_soon = call_soon_threadsafe

    @property
    def holding(self) -> bool:
        """True while outcomes are held for others (:data:`OUTCOME_HOLD_S`)."""
        return self._hold is not None

    def put(self, key: str, outcome: Outcome) -> None:
        """Queue a run's outcome for the service (any thread); :meth:`send` sends it.

        Parameters
        ----------
        key
            The run's key.
        outcome
            How it ended.
        """
        with self._lock:
            self._pending.append({"key": key, **outcome_to_wire(outcome)})
            if len(self._pending) > MAX_PENDING_OUTCOMES:
                del self._pending[: len(self._pending) - MAX_PENDING_OUTCOMES]

    def send(self, *, hold: bool = False) -> None:
        """Have the stream send what is queued (any thread), unless a send is already due.

        Parameters
        ----------
        hold
            Let the outcomes wait up to :data:`OUTCOME_HOLD_S` for others (on
            the loop only; the agent asks while its node has many runs queued).
        """
        on_loop = threading.get_ident() == self._loop_thread
        with self._lock:
            if self._notify_scheduled or self._hold is not None or self._call_soon is None:
                return
            if on_loop and hold:
                self._hold = asyncio.get_running_loop().call_later(OUTCOME_HOLD_S,
                                                                   self.flush_held)
                return
            self._notify_scheduled = True
        if on_loop:
            self._notify()  # on the loop already: no wake-up through the loop's self-pipe
        else:
            self._call_soon(self._notify)

    def flush_held(self) -> None:
        """Send the held outcomes now (on the worker's event loop)."""
        with self._lock:
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
            if self._notify_scheduled:
                return
            self._notify_scheduled = True
        self._notify()

    def _notify(self) -> None:
        """Wake the stream waiting for outcomes (on the worker's event loop)."""
        with self._lock:
            self._notify_scheduled = False
        waiting = list(self._waiters)
        self._waiters.clear()
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    def pending(self) -> list[dict[str, Any]]:
        """Return (a copy of) the outcomes waiting for the service, in wire form."""
        with self._lock:
            return list(self._pending)

    async def serve(self, comm: Any) -> None:
        """Write outcomes to the service as they come, on the service's own comm, until it closes.

        Each message is the msgpack bytes of a list ``[{"key", **outcome_to_wire(...)}]``
        of every outcome ready at that moment (empty every
        :data:`STREAM_KEEPALIVE_S` when idle). Packed here, the message is one
        ``bytes`` object to Dask, which then skips walking every outcome to
        size it. A newer stream replaces an older one; outcomes whose write
        failed wait for the next stream.
        """
        self._generation += 1
        generation = self._generation
        loop = asyncio.get_running_loop()
        while generation == self._generation and not comm.closed():
            if not self._pending:
                fut = loop.create_future()
                self._waiters.append(fut)
                timer = loop.call_later(STREAM_KEEPALIVE_S, _wake_up, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                if generation != self._generation:
                    return
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            try:
                await comm.write(msgpack.packb(batch))
            except Exception:  # noqa: BLE001 - the stream broke: the batch waits for the next one
                with self._lock:
                    self._pending[:0] = batch
                return
