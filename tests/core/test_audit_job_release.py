"""The job release task runs once per node (audit M6), on a running service with a local node.

Batch: "if a job has already been terminated, the release task is not run a
second time if the job is later deleted" (2017 l.4100).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.helpers import running_service, wait_until


def test_delete_after_terminate_does_not_run_the_release_task_again(tmp_path: Path) -> None:
    log = tmp_path / "release.log"
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.72", "provider": "local",
                           "root_dir": str(tmp_path / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({
            "id": "j", "poolInfo": {"poolId": "p"},
            "jobPreparationTask": {"id": "prep", "commandLine": "/bin/true"},
            "jobReleaseTask": {"id": "rel",
                               "commandLine": f"/bin/sh -c 'echo ran >> {log}'"}})
        client.create_task("j", {"id": "t", "commandLine": "/bin/true"})
        client.wait_for_tasks("j", timeout_s=60)

        client.terminate_job("j")
        wait_until(lambda: client.get_job("j").state == "completed", timeout_s=30,
                   what="job completed")
        assert log.read_text().splitlines() == ["ran"]
        [status] = client.list_job_preparation_and_release_task_status("j")
        assert status["jobReleaseTaskExecutionInfo"]["state"] == "completed"

        client.delete_job("j")
        wait_until(lambda: "j" not in {j.id for j in client.list_jobs()}, timeout_s=30,
                   what="job removed")
        time.sleep(1)  # a second release run, if any, has had time to write its line
        assert log.read_text().splitlines() == ["ran"]
