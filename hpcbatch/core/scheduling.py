"""Scheduling policy: which active task runs on which node. Pure functions only.

The service asks :func:`place` once per scheduling pass with the nodes that
have free task slots and the next candidate tasks, in the order Batch
schedules them: jobs by priority (high first), then by creation; tasks first
in, first out. Nothing here talks to a database, a node or Dask, so it is
tested with plain values.

Batch documents: "Run tasks concurrently to maximize usage of Batch compute
nodes" (task slots, ``nodeFillType`` spread|pack) and "Job priority".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

FillType = Literal["spread", "pack"]


@dataclass
class NodeSlots:
    """A node able to take tasks.

    Attributes
    ----------
    node_id
        Batch node ID.
    free_slots
        Task slots not in use (``taskSlotsPerNode`` minus running tasks' ``requiredSlots``).
    order
        Tie-breaker: the node's position in the pool (lower first).
    """

    node_id: str
    free_slots: int
    order: int = 0


T = TypeVar("T")


def job_order(jobs: Iterable[tuple[T, int, int]]) -> list[T]:
    """Order jobs as Batch schedules them: priority high to low, then oldest first.

    Parameters
    ----------
    jobs
        ``(job, priority, creation_seq)`` triples; priority in -1000..1000.
    """
    return [j for j, _, _ in sorted(jobs, key=lambda t: (-t[1], t[2]))]


def place(
    demands: Sequence[int],
    nodes: Sequence[NodeSlots],
    fill: FillType = "spread",
) -> list[str | None]:
    """Assign candidate tasks to nodes, first candidate first.

    Parameters
    ----------
    demands
        ``requiredSlots`` of each candidate task, in scheduling order.
    nodes
        Nodes with their free slots; not modified.
    fill
        ``spread``: each task goes to the node with the most free slots, so
        tasks are spread evenly. ``pack``: each task goes to the node with the
        fewest free slots that still fit it, filling a node before the next.

    Returns
    -------
    list of (str or None)
        The node ID for each candidate, or None when no node has room for it
        (a candidate that does not fit does not stop later, smaller ones).
    """
    free = {n.node_id: n.free_slots for n in nodes}
    order = {n.node_id: n.order for n in nodes}
    # spread: max-heap on free slots; pack: min-heap. Entries are refreshed lazily.
    sign = -1 if fill == "spread" else 1
    heap = [(sign * f, order[nid], nid) for nid, f in free.items() if f > 0]
    heapq.heapify(heap)
    out: list[str | None] = []
    for need in demands:
        chosen = None
        skipped = []
        while heap:
            key, o, nid = heapq.heappop(heap)
            if sign * key != free[nid]:
                continue  # stale entry
            if free[nid] >= need:
                chosen = nid
                break
            skipped.append((key, o, nid))
        for item in skipped:
            heapq.heappush(heap, item)
        out.append(chosen)
        if chosen is not None:
            free[chosen] -= need
            if free[chosen] > 0:
                heapq.heappush(heap, (sign * free[chosen], order[chosen], chosen))
    return out


def place_gang(instances: int, nodes: Sequence[NodeSlots]) -> list[str] | None:
    """Choose ``instances`` distinct nodes for a multi-instance task, all at once.

    Batch runs one instance per node and requires ``taskSlotsPerNode`` 1 for
    multi-instance pools, so a node qualifies when it has a free slot. The
    gang is taken whole or not at all: no partial set is ever held, so two
    gangs cannot deadlock each other.

    Parameters
    ----------
    instances
        ``numberOfInstances`` of the task.
    nodes
        Nodes with their free slots.

    Returns
    -------
    list of str or None
        Node IDs, the first (lowest ``order``) being the master; None when
        fewer than ``instances`` nodes are free.
    """
    free = sorted((n for n in nodes if n.free_slots >= 1), key=lambda n: n.order)
    if len(free) < instances:
        return None
    return [n.node_id for n in free[:instances]]
