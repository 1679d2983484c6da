"""A service restart finishes the jobs it left terminating, disabling or deleting (audit M2).

Batch: each of these states is an operation still in progress that ends
(REST JobState.terminating, .disabling, .deleting). The first service stops
while a job release task runs (Job - Terminate, Job - Delete) and while a
job waits for its running task (Job - Disable ``wait``); the second one, on
the same state directory, finishes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hpcbatch.client.sdk import BatchClient
from tests.helpers import running_service, wait_until


def _release_status(client: BatchClient, job_id: str) -> str | None:
    rows = client.list_job_preparation_and_release_task_status(job_id)
    info = rows[0].get("jobReleaseTaskExecutionInfo") if rows else None
    return info["state"] if info else None


def test_restart_finishes_terminating_disabling_and_deleting_jobs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    host = {"name": "n0", "address": "127.0.0.76", "provider": "local",
            "root_dir": str(tmp_path / "n0"), "python": sys.executable}
    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([host])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        for job_id in ("term", "del"):
            # The release task is slow the first time only (the restart may run it again).
            mark = tmp_path / f"{job_id}.released"
            client.create_job({
                "id": job_id, "poolInfo": {"poolId": "p"},
                "jobPreparationTask": {"id": "prep", "commandLine": "/bin/true"},
                "jobReleaseTask": {"id": "rel", "commandLine":
                                   f"/bin/sh -c 'test -e {mark} || {{ touch {mark}; sleep 30; }}'"}})
            client.create_task(job_id, {"id": "t", "commandLine": "/bin/true"})
            client.wait_for_tasks(job_id, timeout_s=60)
        client.create_job({"id": "dis", "poolInfo": {"poolId": "p"}})
        client.create_task("dis", {"id": "long", "commandLine": "sleep 30"})
        wait_until(lambda: client.get_task("dis", "long").state == "running", timeout_s=30,
                   what="long running")

        client.terminate_job("term")
        client.delete_job("del")
        client.disable_job("dis", "wait")
        for job_id in ("term", "del"):
            wait_until(lambda: _release_status(client, job_id) == "running", timeout_s=30,  # noqa: B023
                       what=f"release task of {job_id} running")
        assert {j.id: j.state for j in client.list_jobs()} == {
            "term": "terminating", "del": "deleting", "dis": "disabling"}

    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        wait_until(lambda: client.get_job("term").state == "completed", timeout_s=60,
                   what="terminating job completed after the restart")
        assert client.get_job("term").execution_info.terminate_reason == "UserTerminate"
        wait_until(lambda: "del" not in {j.id for j in client.list_jobs()}, timeout_s=60,
                   what="deleting job removed after the restart")
        job = wait_until(lambda: (j := client.get_job("dis")).state == "disabled" and j,
                         timeout_s=60, what="disabling job disabled after the restart")
        assert job.previous_state == "disabling"
        # The restart requeued its running task; a disabled job starts none.
        task = client.get_task("dis", "long")
        assert task.state == "active" and task.execution_info.requeue_count == 1
