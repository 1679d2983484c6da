"""Waiting for the store to change: the server side of a long poll.

A client that wants to know when a resource changes (``hpcbatch mpi run``
waiting for its task) sends a conditional read with ``Prefer: wait=N``
(RFC 7240); instead of answering ``304`` at once, the route waits here until
the resource's reply would differ or ``N`` seconds pass. Every transaction the
store commits wakes the waiters, each of which reads its one resource again:
no polling, no per-resource bookkeeping, nothing done while nobody waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_WAIT_S = 60.0
"""Longest wait a request may ask for (``Prefer: wait`` is capped to it)."""


class Changes:
    """Wake coroutines on the service's loop when the store commits a transaction.

    :meth:`notify` is registered with :meth:`hpcbatch.store.database.Store.on_commit`;
    it may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        """A transaction committed: wake every waiter (cheap when there is none)."""
        with self._lock:
            fut, self._future = self._future, None
        if fut is None or fut.done():
            return
        loop = fut.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fut.set_result(None)
        else:
            loop.call_soon_threadsafe(_settle, fut)

    def _next(self) -> asyncio.Future[None]:
        with self._lock:
            if self._future is None:
                self._future = asyncio.get_running_loop().create_future()
            return self._future

    async def wait_while(self, read: Callable[[], T], unchanged: Callable[[T], bool],
                         timeout_s: float, *,
                         pause_s: Callable[[T], float] | None = None) -> T:
        """Return ``read()`` once ``unchanged`` says no, or when ``timeout_s`` has passed.

        Parameters
        ----------
        read
            Reads the resource (on the service's loop), e.g. Task - Get's wire JSON;
            its errors (``TaskNotFound`` after a delete) propagate.
        unchanged
            True while the client already has what ``read`` returned (its
            ``If-None-Match`` still matches).
        timeout_s
            Seconds to wait at most (capped at :data:`MAX_WAIT_S`).
        pause_s
            Seconds after a read during which the value cannot turn (e.g. a job
            with 1,000 tasks left cannot complete in the next millisecond): the
            commits of that time wake one read at its end, not one read each.
            None: every commit wakes a read.

        Returns
        -------
        T
            The last value read.
        """
        deadline = time.monotonic() + min(max(timeout_s, 0.0), MAX_WAIT_S)
        while True:
            fut = self._next()  # before the read: a commit after it wakes us
            value = read()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not unchanged(value):
                return value
            if pause_s is not None:
                pause = min(pause_s(value), remaining)
                if pause > 0:
                    await asyncio.sleep(pause)  # commits meanwhile leave ``fut`` done
                    remaining = deadline - time.monotonic()
            # asyncio.wait leaves the shared future alone on timeout (no shield needed).
            await asyncio.wait((fut,), timeout=max(remaining, 0.0))


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
