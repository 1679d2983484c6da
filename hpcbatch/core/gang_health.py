"""Multi-instance tasks and the nodes that fail them.

When a gang fails because of one node — its coordination command failed there, or
the node could not run its instance — the retry is placed on a node set without
that node whenever the pool has enough others (:func:`hpcbatch.core.scheduling.place_gang`
with ``avoid``); the task's ``failureInfo`` and its ``TaskFailEvent`` name the node
(``details`` ``NodeId``). A node that fails :data:`STRIKES` gangs in a row is taken
out of scheduling (``schedulingState`` ``disabled``) with a ``ComputeNodeError``
saying why, as Batch does with a node whose start task failed; enabling scheduling
on it again ("Compute Node - Enable Scheduling") clears that error.

Memory is bounded by the tasks being retried and the nodes with strikes: an entry
goes when its task completes or its node succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcbatch.core.node_runtime import NodeRuntime
    from hpcbatch.core.runs import Run

Quarantine = Callable[["NodeRuntime", str, str], None]
"""``quarantine(node, code, message)``: take a node out of scheduling, saying why
(:meth:`hpcbatch.core.pool_manager.PoolManager.quarantine`)."""

STRIKES = 3
"""Gang failures in a row that take a node out of scheduling."""

NODE_FAILURE_CODES = frozenset({"CoordinationCommandFailed", "NodeAgentError"})
"""``failureInfo`` codes that put a gang's failure on one node (named in ``details``)."""


def failing_node(failure: Mapping[str, Any] | None) -> str | None:
    """The node a gang's ``failureInfo`` blames (its ``NodeId`` detail), or None.

    Parameters
    ----------
    failure
        The task's ``TaskFailureInformation`` wire dict.

    Returns
    -------
    str or None
    """
    if not failure or failure.get("code") not in NODE_FAILURE_CODES:
        return None
    for detail in failure.get("details") or []:
        if detail.get("name") == "NodeId":
            return str(detail.get("value"))
    return None


class GangHealth:
    """The nodes each retried gang avoids, and each node's gang failures in a row.

    Parameters
    ----------
    quarantine
        Takes a node that keeps failing gangs out of scheduling.
    """

    def __init__(self, quarantine: Quarantine) -> None:
        self.quarantine = quarantine
        self._avoid: dict[tuple[str, str], set[str]] = {}
        self._strikes: dict[tuple[str, str], int] = {}

    def ended(self, run: Run, failure: Mapping[str, Any] | None, retried: bool) -> None:
        """Record how a gang run ended.

        Parameters
        ----------
        run
            The multi-instance run (its nodes, master first).
        failure
            Its ``failureInfo``, or None when it succeeded.
        retried
            Whether the task goes back to ``active`` for another try.
        """
        task = (run.job_key, run.task_key)
        blamed = failing_node(failure)
        for node in run.nodes:
            key = (node.pool_key, node.node_id)
            if node.node_id == blamed:
                self._strikes[key] = self._strikes.get(key, 0) + 1
                if self._strikes[key] >= STRIKES:
                    self._strikes.pop(key, None)
                    self.quarantine(
                        node, "MultiInstanceTaskFailures",
                        f"{STRIKES} multi-instance tasks in a row failed on this node (the "
                        f"last: task {run.task_id} of job {run.job_id}); it takes no new task "
                        "until its scheduling is enabled again.")
            elif failure is None:
                self._strikes.pop(key, None)
        if retried and blamed is not None:
            self._avoid.setdefault(task, set()).add(blamed)
        elif not retried:
            self._avoid.pop(task, None)

    def avoid(self, job_key: str, task_key: str, instances: int,
              pool_nodes: Collection[str]) -> Collection[str]:
        """The nodes a retried gang should not use, or none when the pool could not
        form the gang without them.

        Parameters
        ----------
        job_key, task_key
            The task (lower-cased IDs).
        instances
            Its ``numberOfInstances``.
        pool_nodes
            IDs of the pool's live nodes.

        Returns
        -------
        collection of str
        """
        bad = self._avoid.get((job_key, task_key))
        if not bad:
            return ()
        if len(set(pool_nodes) - bad) < instances:
            return ()
        return bad
