"""Task - Get long polls on SQLite and PostgreSQL: many clients wait on many tasks, one
batched read of their versions a commit, and a change wakes only its own task's client."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchError
from tests.helpers import running_service, wait_until

WAITERS = 12


def test_waiters_wake_only_for_their_own_task(tmp_path: Path, database_url: str) -> None:
    with running_service(tmp_path / "state", database_url=database_url,
                         scheduler_host="127.0.0.1") as (client, thread):
        watch = thread.runtime.service.tasks.watch
        client.create_job({"id": "polled", "poolInfo": {"poolId": "nonodes"}})
        client.create_tasks("polled", [{"id": f"T{i}", "commandLine": "/bin/true"}
                                       for i in range(WAITERS)])
        client.create_job({"id": "other", "poolInfo": {"poolId": "nonodes"}})
        etags = {f"T{i}": client.wait_task_json("polled", f"T{i}", None, 0)["eTag"]
                 for i in range(WAITERS)}
        with ThreadPoolExecutor(WAITERS) as pool:
            # task IDs are case-insensitive: a client may wait on "t3" for task "T3"
            waiting: dict[str, Future[Any]] = {
                task: pool.submit(client.wait_task_json, "polled", task.lower(), etag, 60)
                for task, etag in etags.items()}
            wait_until(lambda: watch.waiting == WAITERS, what="every client waiting")
            reads = watch.reads
            for i in range(10):  # commits that change none of the tasks
                client.update_job("other", {"metadata": [{"name": "n", "value": str(i)}]})
            wait_until(lambda: watch.reads > reads, what="a batched read after the commits")
            assert watch.reads - reads <= 30  # about one a commit (10 updates, their passes)
            assert not any(f.done() for f in waiting.values())

            client.update_task("polled", "T3", {"maxTaskRetryCount": 2})
            changed = waiting.pop("T3").result(timeout=30)
            assert changed["eTag"] != etags["T3"]
            assert changed["constraints"]["maxTaskRetryCount"] == 2
            time.sleep(0.3)
            assert not any(f.done() for f in waiting.values())
            assert watch.waiting == WAITERS - 1

            client.delete_task("polled", "T5")
            with pytest.raises(BatchError) as info:
                waiting.pop("T5").result(timeout=30)
            assert info.value.code == "TaskNotFound"

            for task in waiting:  # Task - Terminate completes an active task
                client.terminate_task("polled", task)
            for task, fut in waiting.items():
                got = fut.result(timeout=30)
                assert got["id"] == task and got["state"] == "completed"
        assert watch.waiting == 0
