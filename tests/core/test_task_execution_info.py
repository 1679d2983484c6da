"""A task's ``executionInfo`` shows what Batch says it holds in the task's state: startTime
only while running or completed; endTime, exitCode, result and failureInfo only once
completed (a task retried or requeued back to active, or one given back unstarted by its
node, has none of its last run's). The rows are the store's, set as a run's end and a
retry leave them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from hpcbatch.store.database import tasks
from tests.helpers import running_service

RUN = {"start_time": datetime(2026, 1, 1, 10, 0, 0), "end_time": datetime(2026, 1, 1, 10, 0, 5),
       "exit_code": 3, "result": "failure",
       "failure_info": '{"category": "usererror", "code": "FailureExitCode", "message": "3"}'}


def test_execution_info_follows_the_tasks_state(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, thread):
        client.create_job({"id": "j", "poolInfo": {"poolId": "nonodes"}})
        client.create_task("j", {"id": "t", "commandLine": "x"})
        store = thread.runtime.service.ctx.store

        def info_in(state: str) -> dict:
            with store.begin() as conn:
                conn.execute(tasks.update().where(tasks.c.key == "t")
                             .values(state=state, retry_count=1, **RUN))
            return client.get_task_json("j", "t")["executionInfo"]

        active = info_in("active")  # failed once, waiting for its retry
        assert active == {"retryCount": 1, "requeueCount": 0}
        running = info_in("running")
        assert set(running) == {"retryCount", "requeueCount", "startTime"}
        completed = info_in("completed")
        assert completed["exitCode"] == 3 and completed["result"] == "failure"
        assert completed["failureInfo"]["code"] == "FailureExitCode"
        assert {"startTime", "endTime"} <= set(completed)
        # a filter on the columns still finds it (the store keeps the last run's values)
        assert [t["id"] for t in client.list_tasks_json("j", filter="executionInfo/exitCode eq 3")
                ] == ["t"]
