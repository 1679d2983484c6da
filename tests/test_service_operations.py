"""A long-lived service as its operator sees it, on the SSH testbed: what deleted work
leaves on the nodes, and what a restart of the service keeps."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import service_on_testbed, wait_until

BASE = "127.0.51.21"


def test_deleting_a_task_or_a_job_removes_its_files_on_the_nodes(tmp_path: Path) -> None:
    # Batch (REST Task - Delete): "When a Task is deleted, all of the files in its
    # directory on the Compute Node where it ran are also deleted (regardless of the
    # retention time)"; Job - Delete deletes every task of the job.
    with service_on_testbed(tmp_path, 2, BASE) as (client, bed, _):
        roots = [Path(h.root_dir) for h in bed.hosts]
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"},
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
