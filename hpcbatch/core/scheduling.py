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
from collections.abc import Callable, Collection, Iterable, Sequence
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
    ahead
        Further slots' worth of single-node tasks the node may take beyond its
        free slots, to start as its slots free (short runs:
        :attr:`hpcbatch.core.node_runtime.NodeRuntime.ahead_slots`); a
        multi-instance task's gang takes free slots only.
    """

    node_id: str
    free_slots: int
    order: int = 0
    ahead: int = 0


T = TypeVar("T")
J = TypeVar("J")
C = TypeVar("C")


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
    prefer: Sequence[str | None] = (),
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
    prefer
        Per candidate (may be shorter than ``demands``): the node ID it prefers
        (``affinityInfo``), taken when that node has room for it; otherwise the
        candidate is placed as if it had no preference. Batch: "If the node is
        busy or unavailable at the time the task is scheduled, then the task
        will be scheduled elsewhere."

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
    for i, need in enumerate(demands):
        chosen = None
        wanted = prefer[i] if i < len(prefer) else None
        if wanted is not None and free.get(wanted, 0) >= need:
            free[wanted] -= need
            if free[wanted] > 0:  # its older heap entry is now stale
                heapq.heappush(heap, (sign * free[wanted], order[wanted], wanted))
            out.append(wanted)
            continue
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


def place_gang(instances: int, nodes: Sequence[NodeSlots],
               avoid: Collection[str] = ()) -> list[str] | None:
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
    avoid
        Nodes this gang must not use: where its last attempt failed because of
        the node (the caller passes none when the pool could not form a gang
        without them).

    Returns
    -------
    list of str or None
        Node IDs, the first (lowest ``order``) being the master; None when
        fewer than ``instances`` nodes are free.
    """
    free = sorted((n for n in nodes if n.free_slots >= 1 and n.node_id not in avoid),
                  key=lambda n: n.order)
    if len(free) < instances:
        return None
    return [n.node_id for n in free[:instances]]


def segments(candidates: Sequence[C], instances: Callable[[C], int]) -> list[list[C]]:
    """Split candidates (in scheduling order) into runs of ordinary tasks; each
    multi-instance task (``instances(c) > 1``) stands alone in its segment."""
    out: list[list[C]] = []
    for c in candidates:
        if instances(c) > 1 or not out or instances(out[-1][0]) > 1:
            out.append([c])
        else:
            out[-1].append(c)
    return out


def plan_pool(
    nodes: Sequence[NodeSlots],
    jobs: Iterable[tuple[J, int, int]],
    next_tasks: Callable[[J, int], Sequence[C]],
    demand: Callable[[C], tuple[int, int]],
    excluded: Callable[[J], Collection[str]] = lambda _: (),
    fill: FillType = "spread",
    allowance: Callable[[J], int | None] = lambda _: None,
    prefer: Callable[[C], str | None] = lambda _: None,
    avoid: Callable[[C], Collection[str]] = lambda _: (),
) -> list[tuple[J, C, list[str]]]:
    """Choose the tasks that fill one pool's free task slots in one scheduling pass.

    Jobs are taken in Batch's order (:func:`job_order`), each job's active
    tasks first in, first out, up to the slots still free on nodes the job may
    use (a job is kept off the nodes where its preparation task failed). A
    multi-instance task takes its whole gang of nodes at once or waits; while it
    waits at the head of the pool's queue, nothing behind it starts in the pool
    (no backfill): a stream of single-node tasks cannot starve it, and it never
    holds a partial set of nodes, so two gangs cannot deadlock.

    Parameters
    ----------
    nodes
        The pool's nodes with free slots or room ahead (``free_slots`` +
        ``ahead`` > 0) and their order.
    jobs
        ``(job, priority, creation_seq)`` of the pool's active jobs.
    next_tasks
        ``next_tasks(job, budget)``: up to ``budget`` of the job's ready active
        tasks, in scheduling order (called at most once per job).
    demand
        ``demand(task)``: ``(numberOfInstances, requiredSlots)``.
    excluded
        ``excluded(job)``: node IDs the job's tasks must not use.
    fill
        ``nodeFillType``: spread or pack.
    allowance
        ``allowance(job)``: how many more of the job's tasks may start now
        (``maxParallelTasks`` minus the job's running tasks), or None without
        a limit. A job at its limit is skipped; the jobs behind it go on.
    prefer
        ``prefer(task)``: the node ID the task prefers (``affinityInfo``), or None.
    avoid
        ``avoid(task)``: nodes a multi-instance task's gang must not use (see
        :func:`place_gang`); it waits for others, as any gang waits.

    Returns
    -------
    list of (job, task, list of str)
        The runs to start: each task with its node IDs (the master first for a gang).

    Implements the Batch documents "Run tasks concurrently to maximize usage of
    Batch compute nodes", "Job priority" and "Use multi-instance tasks to run MPI
    applications" (a gang runs on dedicated nodes, all at once).
    """
    free = {n.node_id: n.free_slots + n.ahead for n in nodes if n.free_slots + n.ahead > 0}
    real = {n.node_id: n.free_slots for n in nodes}  # what a gang may take
    order = {n.node_id: n.order for n in nodes}
    plans: list[tuple[J, C, list[str]]] = []
    for job in job_order(jobs):
        barred = excluded(job)
        budget = sum(f for nid, f in free.items() if nid not in barred)
        left = allowance(job)
        if left is not None:
            budget = min(budget, left)  # at most ``left`` candidates, so at most ``left`` start
        if budget <= 0:
            continue
        for segment in segments(next_tasks(job, budget), lambda c: demand(c)[0]):
            instances = demand(segment[0])[0]
            if instances > 1:
                gang = place_gang(instances, [NodeSlots(nid, real[nid], order[nid])
                                              for nid in free
                                              if real[nid] > 0 and nid not in barred],
                                  avoid(segment[0]))
                if gang is None:
                    return plans  # head-of-line: nothing behind a waiting gang starts
                for nid in gang:
                    free[nid] -= 1
                    real[nid] -= 1
                plans.append((job, segment[0], gang))
                continue
            slots = [NodeSlots(nid, f, order[nid])
                     for nid, f in free.items() if f > 0 and nid not in barred]
            chosen = place([demand(c)[1] for c in segment], slots, fill,
                           [prefer(c) for c in segment])
            for cand, where in zip(segment, chosen):
                if where is not None:
                    free[where] -= demand(cand)[1]
                    real[where] = max(0, real[where] - demand(cand)[1])
                    plans.append((job, cand, [where]))
    return plans


def should_retry(succeeded: bool, terminated: bool, max_retries: int, retry_count: int) -> bool:
    """Decide whether a task run that ended is retried (back to active) or completes.

    A failed run is retried while ``retryCount`` < ``maxTaskRetryCount`` (-1:
    without limit); a run ended by request (terminate) is not. A run lost
    with its node is not decided here: it is requeued without spending a
    retry (``requeueCount`` + 1), as Batch does when a node fails.

    Parameters
    ----------
    succeeded
        Exit code 0 and no failure information.
    terminated
        The run was ended by request (Task - Terminate, job terminate ...).
    max_retries
        ``constraints.maxTaskRetryCount`` of the task (or its job's default).
    retry_count
        Retries already spent.
    """
    return (not succeeded and not terminated
            and (max_retries == -1 or retry_count < max_retries))
