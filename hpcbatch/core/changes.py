"""Waiting for the store to change: the server side of a long poll.

A client that wants to know when a resource changes (``hpcbatch mpi run``
waiting for its task) sends a conditional read with ``Prefer: wait=N``
(RFC 7240); instead of answering ``304`` at once, the route waits here until
the resource's reply would differ or ``N`` seconds pass. Nothing is polled,
and nothing is done while nobody waits.

Two ways to wait, by how many waiters a resource kind may have:

* :meth:`Changes.wait_while`: every commit wakes the waiter, which reads its
  one resource again (Job - Get Task Counts: few waiters, each pausing while
  its job cannot complete).
* :class:`VersionWatch`: waiters on many resources of one kind (Task - Get,
  one a waiting ``hpcbatch mpi run``) are served by one watcher, which reads
  the versions of every watched resource with one statement per commit and
  wakes only the waiters whose resource changed. A commit costs one read,
  however many clients wait, and a waiter runs only when its answer may have
  changed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)

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


class VersionWatch(Generic[K, T, V]):
    """Long polls of many resources of one kind, woken by one batched read per commit.

    Parameters
    ----------
    changes
        The service's commit signal.
    read_versions
        ``read_versions(keys) -> {key: version}`` for the keys that exist, in one
        statement (on the service's loop); a key missing from the reply (the
        resource was deleted) wakes its waiters, whose own read then raises.
        A version (e.g. a task's ``eTag``) is equal to an earlier one only when
        the resource is unchanged.
    version_of
        The version in what a waiter's own read returns (e.g. the ``eTag`` of
        a task's ``{"eTag", "lastModified"}``).
    min_interval_s
        Seconds between two reads at least: the commits of that time wake one
        read at its end, so a storm of commits (a dispatching service makes
        hundreds a second) costs at most ``1 / min_interval_s`` reads a second,
        and a waiter hears of its change at most that much later.

    Attributes
    ----------
    reads
        Batched reads made so far (one a commit while anybody waits).
    """

    IDLE_CHECK_S = 1.0
    """How often an idle watcher (no commit) looks whether anybody still waits."""

    def __init__(self, changes: Changes,
                 read_versions: Callable[[Sequence[K]], Mapping[K, V]],
                 version_of: Callable[[T], V], *, min_interval_s: float = 0.005) -> None:
        self._changes = changes
        self._version_of = version_of
        self.min_interval_s = min_interval_s
        self._read_versions = read_versions
        self._waiters: dict[K, dict[asyncio.Future[None], V]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self.reads = 0

    @property
    def waiting(self) -> int:
        """How many waiters wait now."""
        return sum(len(w) for w in self._waiters.values())

    async def wait_while(self, key: K, read: Callable[[], T], unchanged: Callable[[T], bool],
                         timeout_s: float) -> T:
        """Return ``read()`` once ``unchanged`` says no, or when ``timeout_s`` has passed.

        Parameters
        ----------
        key
            The resource, as ``read_versions`` names it (e.g. ``(job key, task key)``).
        read
            Reads what the client's conditions compare, by the full path (its
            errors, such as ``TaskNotFound``, propagate); called first, and
            again each time the watcher sees the version differ from the one
            in the last value read.
        unchanged
            True while the client already has what ``read`` returned.
        timeout_s
            Seconds to wait at most (capped at :data:`MAX_WAIT_S`).

        Returns
        -------
        T
            The last value read.
        """
        deadline = time.monotonic() + min(max(timeout_s, 0.0), MAX_WAIT_S)
        while True:
            value = read()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not unchanged(value):
                return value
            await self._wait(key, self._version_of(value), remaining)

    async def _wait(self, key: K, held: V, timeout_s: float) -> None:
        """Wait until the watcher reads a version of ``key`` other than ``held``, or timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.setdefault(key, {})
        waiters[fut] = held
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch(), name="hpcbatch-version-watch")
        try:
            await asyncio.wait((fut,), timeout=timeout_s)
        finally:
            waiters.pop(fut, None)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    async def _watch(self) -> None:
        # The commit future is taken before each read, so a commit during or after
        # the read wakes the next one; a waiter that registers while the watcher
        # sleeps holds a version read after that future was taken, or the watcher
        # is already due to read again.
        while self._waiters:
            commit = self._changes._next()
            self._check()
            if self.min_interval_s > 0:
                await asyncio.sleep(self.min_interval_s)  # commits meanwhile leave it done
            while self._waiters and not commit.done():
                await asyncio.wait((commit,), timeout=self.IDLE_CHECK_S)

    def _check(self) -> None:
        keys = list(self._waiters)
        self.reads += 1
        try:
            found = self._read_versions(keys)
        except Exception:  # wake everyone: each waiter's own read reports the error
            log.exception("long poll: reading the versions of %d resources failed", len(keys))
            found = {}
        for key in keys:
            now = found.get(key, _MISSING)
            for fut, held in self._waiters.get(key, {}).items():
                if now != held and not fut.done():
                    fut.set_result(None)


_MISSING = object()


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
