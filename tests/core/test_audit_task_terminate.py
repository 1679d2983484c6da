"""Task - Terminate of an active task completes it the way a run's end does (audit M5).

Batch: "When the Task has been terminated, it moves to the completed state"
(REST Task - Terminate); completion is what task dependencies and
``onAllTasksComplete`` act on (2017 l.322). A terminated task failed
(``TaskEnded``): its dependents are blocked unless its exit conditions say
``satisfy``; a failed task's ``jobAction`` applies under
``onTaskFailure: performexitoptionsjobaction``. The jobs' pool has no node, so
their tasks stay active until terminated.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import running_service, wait_until


def test_terminating_an_active_task_completes_it_for_dependents_and_the_job(
        tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        nowhere = {"poolId": "nowhere"}
        # Dependents: blocked by a terminated task, ready when its exit conditions satisfy.
        client.create_job({"id": "deps", "poolInfo": nowhere, "usesTaskDependencies": True})
        client.create_tasks("deps", [
            {"id": "a", "commandLine": "/bin/true"},
            {"id": "b", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["a"]}},
            {"id": "c", "commandLine": "/bin/true",
             "exitConditions": {"default": {"dependencyAction": "satisfy"}}},
            {"id": "d", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["c"]}}])
        assert client.get_task_json("deps", "b")["dependencyState"]["state"] == "waiting"
        client.terminate_task("deps", "a")
        client.terminate_task("deps", "c")
        a = client.get_task("deps", "a")
        assert a.state == "completed" and a.execution_info.result == "failure"
        assert a.execution_info.failure_info.code == "TaskEnded"
        assert client.get_task_json("deps", "b")["dependencyState"]["state"] == "blocked"
        assert "dependencyState" not in client.get_task_json("deps", "d")  # ready

        # onAllTasksComplete: terminating the last active task terminates the job.
        client.create_job({"id": "all", "poolInfo": nowhere})
        client.create_tasks("all", [{"id": "x", "commandLine": "/bin/true"},
                                    {"id": "y", "commandLine": "/bin/true"}])
        client.update_job("all", {"onAllTasksComplete": "terminatejob"})
        client.terminate_task("all", "x")
        assert client.get_job("all").state == "active"
        client.terminate_task("all", "y")
        job = wait_until(lambda: (j := client.get_job("all")).state == "completed" and j,
                         timeout_s=30, what="job completed")
        assert job.execution_info.terminate_reason == "AllTasksComplete"

        # A failed task's jobAction, under onTaskFailure performexitoptionsjobaction.
        client.create_job({"id": "act", "poolInfo": nowhere,
                           "onTaskFailure": "performexitoptionsjobaction"})
        client.create_task("act", {"id": "z", "commandLine": "/bin/true",
                                   "exitConditions": {"default": {"jobAction": "disable"}}})
        client.terminate_task("act", "z")
        wait_until(lambda: client.get_job("act").state == "disabled", timeout_s=30,
                   what="job disabled by the terminated task's jobAction")
