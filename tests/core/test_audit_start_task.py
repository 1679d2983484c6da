"""A start task's ``waitForSuccess`` defaults to true (audit M4), on a running service.

Batch: "If false, the Batch service will not wait for the StartTask to complete
... The default is true." (REST StartTask.waitForSuccess). A node is
``waitingforstarttask`` while its start task runs, then ``idle`` when it
succeeded or ``starttaskfailed`` when it failed; no task starts on it before.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service, wait_until


def test_start_task_without_wait_for_success_is_waited_for(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{73 + i}", "provider": "local",
                           "root_dir": str(tmp_path / f"n{i}"), "python": sys.executable}
                          for i in range(2)])
        # A start task that succeeds after a while: tasks wait for it.
        client.create_pool({"id": "ok", "vmSize": "any", "targetDedicatedNodes": 1,
                            "startTask": {"commandLine": "sleep 3"}})
        client.create_job({"id": "j", "poolInfo": {"poolId": "ok"}})
        client.create_task("j", {"id": "t", "commandLine": "/bin/true"})
        wait_until(lambda: [n for n in client.list_nodes("ok")
                            if n.state == "waitingforstarttask"], timeout_s=120,
                   what="node waiting for its start task")
        assert client.get_task("j", "t").state == "active"
        [node] = client.wait_for_pool("ok", timeout_s=60)
        assert node.state in ("idle", "running")
        assert node.start_task_info.result == "success"
        task = wait_until(lambda: (t := client.get_task("j", "t")).state == "completed" and t,
                          timeout_s=60, what="task completed")
        assert task.execution_info.start_time >= node.start_task_info.end_time

        # A start task that fails: the node is starttaskfailed and takes no task.
        client.create_pool({"id": "bad", "vmSize": "any", "targetDedicatedNodes": 1,
                            "startTask": {"commandLine": "/bin/false"}})
        [node] = client.wait_for_pool("bad", timeout_s=120)
        assert node.state == "starttaskfailed"
        assert node.start_task_info.result == "failure"
        assert node.start_task_info.exit_code == 1
