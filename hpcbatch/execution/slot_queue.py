"""A node's task runs waiting for free task slots: first in, first out, each taken when
the slots it needs are free.

The service sends a node short runs ahead of its free slots
(:attr:`hpcbatch.core.node_runtime.NodeRuntime.ahead_slots`); the node agent
(:mod:`hpcbatch.execution.agent`) keeps them here and starts what
:meth:`SlotQueue.pop_startable` gives it. Pure bookkeeping, no processes, no
clock of its own and no lock: the agent holds its lock around every call.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar


class QueuedRun(Protocol):
    """What the queue reads of a run (:class:`hpcbatch.execution.agent.Launch`)."""

    key: str
    slots: int | None
    node_slots: int


R = TypeVar("R", bound=QueuedRun)


class SlotQueue(Generic[R]):
    """Runs waiting for the node's slots, and the slots the started ones hold.

    Attributes
    ----------
    node_slots
        The node's ``taskSlotsPerNode``, as the latest queued run told it.
    held_slots
        Slots held by the runs taken from the queue and not yet released.
    """

    def __init__(self) -> None:
        self._waiting: deque[R] = deque()
        self._since: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.node_slots = 1
        self.held_slots = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def keys(self) -> list[str]:
        """The keys of the waiting runs, first to start first."""
        return [run.key for run in self._waiting]

    def add(self, run: R, now: float) -> None:
        """Queue a run that arrived at ``now`` (``time.monotonic()`` seconds)."""
        self.node_slots = max(1, run.node_slots)
        self._waiting.append(run)
        self._since[run.key] = now

    def pop_startable(self) -> R | None:
        """Take the first waiting run if its slots (``slots``, default 1) are free now, and
        hold them until :meth:`release`; else None. A run needing more slots than the
        node has is taken when nothing else holds any (the service never sends one)."""
        if not self._waiting:
            return None
        head = self._waiting[0]
        need = head.slots or 1
        if self.held_slots and self.held_slots + need > self.node_slots:
            return None
        self._waiting.popleft()
        self._since.pop(head.key, None)
        self._held[head.key] = need
        self.held_slots += need
        return head

    def release(self, key: str) -> bool:
        """Free the slots of a run taken by :meth:`pop_startable`; whether it held any."""
        freed = self._held.pop(key, 0)
        self.held_slots -= freed
        return bool(freed)

    def remove(self, key: str) -> R | None:
        """Take a waiting run out of the queue unstarted (None: it is not waiting)."""
        run = next((r for r in self._waiting if r.key == key), None)
        if run is not None:
            self._waiting.remove(run)
            self._since.pop(key, None)
        return run

    def clear(self) -> int:
        """Drop every waiting run; return how many there were."""
        count = len(self._waiting)
        self._waiting.clear()
        self._since.clear()
        return count

    def overdue(self, now: float, after_s: float) -> list[R]:
        """Take out and return the runs that have waited ``after_s`` seconds or more at ``now``."""
        late = [r for r in self._waiting if now - self._since.get(r.key, now) >= after_s]
        for run in late:
            self._waiting.remove(run)
            self._since.pop(run.key, None)
        return late

    def oldest(self) -> float | None:
        """When the longest-waiting run arrived (None: nothing waits)."""
        return min(self._since.values(), default=None)
