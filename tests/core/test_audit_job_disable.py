"""Job - Disable with ``disableTasks: wait`` (audit M3), on a running service with a local node.

Batch: "The Job remains in the disabling state until the disable operation is
completed and all Tasks have been dealt with according to the disableTasks
option" (REST Job - Disable); a disabled job has no running task (REST
JobState.disabled).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service, wait_until


def test_disable_wait_stays_disabling_until_running_tasks_complete(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.71", "provider": "local",
                           "root_dir": str(tmp_path / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.create_task("j", {"id": "slow", "commandLine": "sleep 4"})
        wait_until(lambda: client.get_task("j", "slow").state == "running", timeout_s=30,
                   what="slow running")

        client.disable_job("j", "wait")
        # The running task is left to finish; the job stays disabling meanwhile.
        for _ in range(10):
            assert client.get_task("j", "slow").state == "running"
            assert client.get_job("j").state == "disabling"
        job = wait_until(lambda: (j := client.get_job("j")).state == "disabled" and j,
                         timeout_s=30, what="job disabled")
        task = client.get_task("j", "slow")
        assert task.state == "completed" and task.execution_info.exit_code == 0
        assert job.previous_state == "disabling"
        assert task.execution_info.end_time <= job.state_transition_time
