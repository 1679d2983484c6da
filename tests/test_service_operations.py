"""A long-lived service as its operator sees it, on the SSH testbed: what deleted work
leaves on the nodes, and what a restart of the service keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcbatch.client.rest import BatchError
from tests.helpers import running_service, service_on_testbed, wait_until

BASE = "127.0.51.21"


def test_deleting_a_task_or_a_job_removes_its_files_on_the_nodes(tmp_path: Path) -> None:
    # Batch (REST Task - Delete): "When a Task is deleted, all of the files in its
    # directory on the Compute Node where it ran are also deleted (regardless of the
    # retention time)"; Job - Delete deletes every task of the job.
    with service_on_testbed(tmp_path, 2, BASE) as (client, bed, _):
        roots = [Path(h.root_dir) for h in bed.hosts]
        client.create_pool({"id": "P1", "vmSize": "any", "targetDedicatedNodes": 2})
        client.wait_for_pool("P1", timeout_s=120)
        # A host in a pool cannot leave the inventory: the error names the pool as its ID
        # is spelled, the node, and the command that frees the host.
        with pytest.raises(BatchError) as refused:
            client.remove_host(BASE)
        assert refused.value.code == "HostInUse"
        assert f"hpcbatch node remove --pool-id P1 --node-id {BASE}" in refused.value.message
        client.create_job({"id": "j", "poolInfo": {"poolId": "P1"},
                           "jobPreparationTask": {"commandLine": "/bin/true"}})
        client.create_tasks("j", [{"id": f"t{i}", "commandLine": "/bin/sh -c 'echo out > f'"}
                                  for i in range(4)])
        client.create_task("j", {"id": "short", "commandLine": "/bin/true",
                                 "constraints": {"retentionTime": "PT1S"}})
        assert client.wait_for_tasks("j", timeout_s=120)["succeeded"] == 5

        def task_dirs(task_id: str) -> list[Path]:
            return [d for r in roots if (d := r / "workitems" / "j" / "job-1" / task_id).is_dir()]

        assert all(task_dirs(f"t{i}") for i in range(4))  # kept for the retention time (7 days)
        wait_until(lambda: not task_dirs("short"), timeout_s=30, what="short's directory removed")
        client.delete_task("j", "t0")
        wait_until(lambda: not task_dirs("t0"), timeout_s=30, what="t0's directory removed")
        assert all(task_dirs(f"t{i}") for i in (1, 2, 3))  # only the deleted task's

        client.delete_job("j")
        wait_until(lambda: not any((r / "workitems" / "j").exists() for r in roots),
                   timeout_s=60, what="workitems/j removed on both nodes")
        wait_until(lambda: not client.list_jobs(), timeout_s=30, what="job j gone")
        assert all((r / "shared").is_dir() for r in roots)  # nothing else of the node


def test_a_restarted_service_gives_its_own_url_for_a_schedules_recent_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        client.create_job_schedule({"id": "s", "schedule": {"recurrenceInterval": "PT1H"},
                                    "jobSpecification": {"poolInfo": {"poolId": "none"}}})
        wait_until(lambda: client.get_job_schedule("s")["executionInfo"].get("recentJob"),
                   timeout_s=30, what="the schedule's first job")
    with running_service(state, scheduler_host="127.0.0.1") as (client, thread):
        recent = client.get_job_schedule("s")["executionInfo"]["recentJob"]
        assert recent == {"id": "s:job-1", "url": f"{thread.runtime.endpoint}/jobs/s:job-1"}
