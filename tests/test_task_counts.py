"""Job - Get Task Counts through the service: tasks and slots in each bucket follow adds,
runs, failures, Task - Terminate, Task - Delete, and Job - Delete removes the counters."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from hpcbatch.client.sdk import BatchClient
from hpcbatch.store.database import job_task_counts, jobs
from tests.helpers import running_service, wait_until


def both(thread: object, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
    got = thread.runtime.service.jobs.task_counts(job_id)  # type: ignore[attr-defined]
    return got["taskCounts"], got["taskSlotCounts"]


def counts(active: int, running: int, succeeded: int, failed: int) -> dict[str, int]:
    return {"active": active, "running": running, "completed": succeeded + failed,
            "succeeded": succeeded, "failed": failed}


def test_task_and_slot_counts_follow_the_tasks(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, thread):
        client.add_hosts([{"name": f"c{i}", "address": "127.0.0.1", "provider": "simulated",
                           "cores": 4, "labels": ["c"], "root_dir": str(tmp_path / f"c{i}")}
                          for i in range(3)])
        client.create_pool({"id": "p", "vmSize": "c", "targetDedicatedNodes": 3,
                            "taskSlotsPerNode": 4})
        client.wait_for_pool("p", timeout_s=120)
        c: BatchClient = client
        c.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": True})
        c.create_tasks("j", [
            *({"id": f"ok{i}", "commandLine": "true", "requiredSlots": 2} for i in range(3)),
            *({"id": f"bad{i}", "commandLine": "exit 1"} for i in range(4)),
            *({"id": f"run{i}", "commandLine": "sleep 600", "requiredSlots": 4}
              for i in range(2)),
            # blocked behind run0: they stay active
            *({"id": f"wait{i}", "commandLine": "true", "requiredSlots": 3,
               "dependsOn": {"taskIds": ["run0"]}} for i in range(5)),
        ])
        wait_until(lambda: both(thread, "j")[0] == counts(5, 2, 3, 4), timeout_s=120,
                   what="3 succeeded, 4 failed, 2 running")
        assert both(thread, "j")[1] == counts(15, 8, 6, 4)
        assert c.get_task_counts("j") == counts(5, 2, 3, 4)  # the REST reply

        c.terminate_task("j", "run1")  # completed, result failure (TaskEnded)
        c.delete_task("j", "wait4")
        wait_until(lambda: both(thread, "j")[0] == counts(4, 1, 3, 5), timeout_s=60,
                   what="run1 terminated, wait4 deleted")
        assert both(thread, "j")[1] == counts(12, 4, 6, 8)

        store = thread.runtime.store
        with store.read() as conn:
            key = conn.execute(sa.select(jobs.c.key).where(jobs.c.id == "j")).scalar_one()
            assert conn.execute(sa.select(job_task_counts.c.active).where(
                job_task_counts.c.job_key == key)).scalar_one() == 4
        c.delete_job("j")

        def gone() -> bool:
            with store.read() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(job_task_counts)
                                    .where(job_task_counts.c.job_key == key)).scalar_one() == 0
        wait_until(gone, timeout_s=60, what="the job's counters removed with it")
        with store.read() as conn:
            assert conn.execute(sa.select(jobs.c.key).where(jobs.c.key == key)).first() is None
