"""Which nodes a retried gang avoids, and when a node leaves scheduling (pure policy:
the pool manager is a recorder, the runs plain values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpcbatch.core.gang_health import STRIKES, GangHealth, failing_node
from hpcbatch.core.scheduling import NodeSlots, place_gang


@dataclass
class Node:
    node_id: str
    pool_key: str = "p"


@dataclass
class Run:
    nodes: list[Node]
    job_key: str = "j"
    task_key: str = "t"
    job_id: str = "J"
    task_id: str = "T"


@dataclass
class Recorder:
    quarantined: list[tuple[str, str]] = field(default_factory=list)

    def quarantine(self, node: Node, code: str, message: str) -> None:
        self.quarantined.append((node.node_id, code))


def coordination_failed(node_id: str) -> dict[str, Any]:
    return {"category": "usererror", "code": "CoordinationCommandFailed",
            "message": f"The coordination command failed on node {node_id}",
            "details": [{"name": "NodeId", "value": node_id}]}


def gang(*ids: str) -> Run:
    return Run([Node(i) for i in ids])


def test_the_node_a_failure_names() -> None:
    assert failing_node(coordination_failed("n2")) == "n2"
    assert failing_node({"code": "TaskEnded", "details": [{"name": "NodeId", "value": "n1"}]}) is None
    assert failing_node(None) is None


def test_a_retry_avoids_the_failing_node_when_the_pool_has_enough_others() -> None:
    health = GangHealth(Recorder().quarantine)  # type: ignore[arg-type]
    health.ended(gang("n0", "n1", "n2"), coordination_failed("n1"), retried=True)  # type: ignore[arg-type]
    pool = ["n0", "n1", "n2", "n3"]
    assert set(health.avoid("j", "t", 3, pool)) == {"n1"}
    slots = [NodeSlots(n, 1, i) for i, n in enumerate(pool)]
    assert place_gang(3, slots, health.avoid("j", "t", 3, pool)) == ["n0", "n2", "n3"]
    # Without enough others the gang may use it again rather than wait forever.
    assert not health.avoid("j", "t", 4, pool)
    # Another task is not affected; the entry goes when the task completes.
    assert not health.avoid("j", "other", 3, pool)
    health.ended(gang("n0", "n2", "n3"), None, retried=False)  # type: ignore[arg-type]
    assert not health.avoid("j", "t", 3, pool)


def test_strikes_in_a_row_take_a_node_out_of_scheduling_and_a_success_resets_them() -> None:
    recorder = Recorder()
    health = GangHealth(recorder.quarantine)  # type: ignore[arg-type]
    for _ in range(STRIKES - 1):
        health.ended(gang("n0", "n1"), coordination_failed("n1"), retried=True)  # type: ignore[arg-type]
    health.ended(gang("n1", "n2"), None, retried=False)  # type: ignore[arg-type]
    for _ in range(STRIKES - 1):
        health.ended(gang("n0", "n1"), coordination_failed("n1"), retried=True)  # type: ignore[arg-type]
    assert recorder.quarantined == []
    health.ended(gang("n0", "n1"), coordination_failed("n1"), retried=False)  # type: ignore[arg-type]
    assert recorder.quarantined == [("n1", "MultiInstanceTaskFailures")]
