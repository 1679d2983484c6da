"""Job and task properties that steer scheduling: ``maxParallelTasks``, ``affinityInfo``,
and the ``vmSize`` a node reports (issue 13)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service, wait_until


def _overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals that hold at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_max_parallel_tasks_affinity_and_node_vm_size(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{70 + i}", "provider": "local",
                           "labels": ["standard_d2s_v3"], "root_dir": str(tmp_path / f"n{i}"),
                           "python": sys.executable} for i in range(2)])
        client.create_pool({"id": "p", "vmSize": "STANDARD_D2s_v3", "targetDedicatedNodes": 2,
                            "taskSlotsPerNode": 2})
        client.wait_for_pool("p", timeout_s=120)

        # Nodes report their pool's vmSize, so a $filter on it finds them.
        nodes = client.list_nodes("p")
        assert {n.vm_size for n in nodes} == {"STANDARD_D2s_v3"}
        assert len(client.list_nodes("p", filter="vmSize eq 'STANDARD_D2s_v3'")) == 2

        # maxParallelTasks: 4 free slots, but at most 2 of the job's tasks at once.
        client.create_job({"id": "capped", "poolInfo": {"poolId": "p"}, "maxParallelTasks": 2})
        client.create_tasks("capped", [{"id": f"t{i}", "commandLine": "sleep 0.6"}
                                       for i in range(6)])
        assert client.wait_for_tasks("capped", timeout_s=120)["succeeded"] == 6
        spans = [(t.execution_info.start_time.timestamp(), t.execution_info.end_time.timestamp())
                 for t in client.list_tasks("capped")]
        assert _overlap(spans) == 2

        # Lowering the limit by PATCH applies to the tasks not yet started.
        client.create_job({"id": "one", "poolInfo": {"poolId": "p"}})
        client.update_job("one", {"maxParallelTasks": 1})
        client.create_tasks("one", [{"id": f"t{i}", "commandLine": "sleep 0.4"} for i in range(3)])
        assert client.wait_for_tasks("one", timeout_s=120)["succeeded"] == 3
        spans = [(t.execution_info.start_time.timestamp(), t.execution_info.end_time.timestamp())
                 for t in client.list_tasks("one")]
        assert _overlap(spans) == 1

        # affinityInfo: an idle pool would spread the task to the first node; its
        # affinity sends it to the other one.
        second = max(nodes, key=lambda n: n.id)
        client.create_job({"id": "aff", "poolInfo": {"poolId": "p"}})
        client.create_task("aff", {"id": "near", "commandLine": "/bin/true",
                                   "affinityInfo": {"affinityId": second.affinity_id}})
        client.create_task("aff", {"id": "anywhere", "commandLine": "/bin/true"})
        client.wait_for_tasks("aff", timeout_s=60)
        assert client.get_task("aff", "near").node_info.node_id == second.id
        wait_until(lambda: client.get_task("aff", "anywhere").state == "completed", timeout_s=30)

        # Every property Batch documents as filterable on jobs and pools, in the store
        # or on the JSON: the documents' "changed since" query among them.
        capped = client.get_job("capped")
        since = capped.creation_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        later = {j.id for j in client.list_jobs(filter=f"creationTime gt DateTime'{since}'")}
        assert later == {"one", "aff"}
        assert {j.id for j in client.list_jobs(
            filter=f"stateTransitionTime ge DateTime'{since}' and priority eq 0")} == {
            "capped", "one", "aff"}
        assert {j.id for j in client.list_jobs(filter="executionInfo/poolId eq 'P'")} == {
            "capped", "one", "aff"}
        assert [j.id for j in client.list_jobs(filter="maxParallelTasks eq 1")] == ["one"]
        assert [p.id for p in client.list_pools(
            filter="allocationState eq 'steady' and currentDedicatedNodes eq 2")] == ["p"]
        assert client.list_pools(filter="targetDedicatedNodes gt 2") == []
        assert [p.id for p in client.list_pools(filter="vmSize eq 'standard_d2s_v3'")] == ["p"]
