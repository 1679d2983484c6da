"""Job actions that Batch evaluates when a job property is set, not only when a task completes."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service, wait_until


def test_on_all_tasks_complete_set_by_patch_after_the_tasks_completed(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.60", "provider": "local",
                           "root_dir": str(tmp_path / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        # The pattern the Batch documents recommend: add the tasks, then set
        # onAllTasksComplete, by which time they may all have completed.
        client.create_job({"id": "done", "poolInfo": {"poolId": "p"}})
        client.create_tasks("done", [{"id": f"t{i}", "commandLine": "/bin/true"} for i in range(3)])
        client.wait_for_tasks("done", timeout_s=60)
        assert client.get_job("done").state == "active"
        client.update_job("done", {"onAllTasksComplete": "terminatejob"})
        job = wait_until(lambda: (j := client.get_job("done")).state == "completed" and j,
                         timeout_s=30, what="job completed")
        assert job.execution_info.terminate_reason == "AllTasksComplete"

        # A job with a task still to run keeps running until that task completes.
        client.create_job({"id": "busy", "poolInfo": {"poolId": "p"}})
        client.create_task("busy", {"id": "slow", "commandLine": "sleep 2"})
        client.update_job("busy", {"onAllTasksComplete": "terminatejob"})
        assert client.get_job("busy").state == "active"
        wait_until(lambda: client.get_job("busy").state == "completed", timeout_s=60,
                   what="busy job completed after its task")

        # noaction leaves a job with completed tasks active.
        client.create_job({"id": "stay", "poolInfo": {"poolId": "p"}})
        client.update_job("stay", {"onAllTasksComplete": "noaction"})
        assert client.get_job("stay").state == "active"
