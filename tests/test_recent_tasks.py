"""A node's ``recentTasks`` (Compute Node - Get): its running tasks, then the latest that
ended on it with their execution information, at most ten; the dashboard's node page reads
them from there, not from the store."""

from __future__ import annotations

from pathlib import Path

from hpcbatch.api.dashboard.views import recent_node_tasks
from hpcbatch.core.node_runtime import RECENT_TASKS
from tests.helpers import running_service, wait_until


def test_recent_tasks_list_running_then_the_latest_ended_with_their_outcome(
        tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, thread):
        client.add_hosts([{"name": "c0", "address": "127.0.0.1", "provider": "simulated",
                           "cores": 2, "labels": ["c"], "root_dir": str(tmp_path / "c0")}])
        client.create_pool({"id": "p", "vmSize": "c", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 2})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        assert "recentTasks" not in client.get_node_json("p", "c0")  # nothing ran yet
        client.create_tasks("j", [{"id": "long", "commandLine": "sleep 600"}])
        wait_until(lambda: client.get_task_counts("j")["running"] == 1, timeout_s=60,
                   what="long running")
        # One at a time on the free slot, so the order they end in is known.
        for i in range(12):
            client.create_tasks("j", [{"id": f"t{i:02d}",
                                       "commandLine": "exit 3" if i == 10 else "true"}])
            wait_until(lambda i=i: client.get_task_counts("j")["completed"] == i + 1,
                       timeout_s=60, what=f"t{i:02d} done")

        recent = client.get_node_json("p", "c0")["recentTasks"]
        assert len(recent) == RECENT_TASKS
        assert recent[0] == {"taskUrl": recent[0]["taskUrl"], "jobId": "j", "taskId": "long",
                             "taskState": "running"}
        assert [t["taskId"] for t in recent[1:]] == [f"t{i:02d}" for i in range(11, 2, -1)]
        assert all(t["taskState"] == "completed" for t in recent[1:])
        failed = next(t for t in recent if t["taskId"] == "t10")
        info = failed["executionInfo"]
        assert (info["exitCode"], info["result"], info["failureInfo"]["code"]) == (
            3, "failure", "FailureExitCode")
        assert info["startTime"] <= info["endTime"]
        ok = next(t for t in recent if t["taskId"] == "t11")["executionInfo"]
        assert (ok["exitCode"], ok["result"], ok["retryCount"], ok["requeueCount"]) == (
            0, "success", 0, 0)
        assert "failureInfo" not in ok
        # The SDK model reads them (TaskInformation).
        node = client.get_node("p", "c0")
        assert [t.task_id for t in node.recent_tasks or []] == [t["taskId"] for t in recent]

        # The dashboard's node page shows the same, from the node (no store query).
        rows = recent_node_tasks(thread.runtime.service.nodes.get_node("p", "c0"))
        assert [(r["taskId"], r["state"], r["exitCode"]) for r in rows[:3]] == [
            ("long", "running", None), ("t11", "completed", 0), ("t10", "completed", 3)]
