"""Get and List fill in Batch's server-side defaults of what a job, task or job schedule
left out, as Batch answers (so an SDK reads ``job.constraints.max_task_retry_count`` as 0,
not None), and keep what the client gave."""

from __future__ import annotations

from pathlib import Path

from hpcbatch.batch.defaults import UNLIMITED_DURATION
from tests.helpers import running_service


def test_jobs_tasks_and_schedules_show_batchs_defaults(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.create_job({"id": "bare", "poolInfo": {"poolId": "nonodes"},
                           "jobPreparationTask": {"commandLine": "/bin/true"},
                           "jobReleaseTask": {"commandLine": "/bin/true"}})
        job = client.get_job_json("bare")
        assert (job["onAllTasksComplete"], job["onTaskFailure"], job["maxParallelTasks"],
                job["allowTaskPreemption"], job["usesTaskDependencies"], job["priority"]) == (
            "noaction", "noaction", -1, False, False, 0)
        assert job["constraints"] == {"maxWallClockTime": UNLIMITED_DURATION,
                                      "maxTaskRetryCount": 0}
        prep, release = job["jobPreparationTask"], job["jobReleaseTask"]
        assert (prep["id"], prep["waitForSuccess"], prep["rerunOnNodeRebootAfterSuccess"]) == (
            "jobpreparation", True, True)
        assert (release["id"], release["maxWallClockTime"]) == ("jobrelease", "PT15M")
        assert [j["onTaskFailure"] for j in client.list_jobs_json()] == ["noaction"]

        client.create_job({"id": "given", "poolInfo": {"poolId": "nonodes"},
                           "onTaskFailure": "performexitoptionsjobaction",
                           "constraints": {"maxTaskRetryCount": 2}})
        job = client.get_job_json("given")
        assert job["onTaskFailure"] == "performexitoptionsjobaction"
        assert job["constraints"] == {"maxWallClockTime": UNLIMITED_DURATION,
                                      "maxTaskRetryCount": 2}
        client.create_tasks("given", [{"id": "plain", "commandLine": "x"},
                                      {"id": "own", "commandLine": "x", "requiredSlots": 1,
                                       "constraints": {"maxTaskRetryCount": 5,
                                                       "retentionTime": "PT1H"}}])
        plain = client.get_task_json("given", "plain")
        assert plain["requiredSlots"] == 1
        assert plain["constraints"] == {"maxWallClockTime": UNLIMITED_DURATION,
                                        "retentionTime": "P7D", "maxTaskRetryCount": 2}
        own = {t["id"]: t for t in client.list_tasks_json("given")}["own"]
        assert own["constraints"] == {"maxWallClockTime": UNLIMITED_DURATION,
                                      "retentionTime": "PT1H", "maxTaskRetryCount": 5}
        # the SDK's own models read them (the unlimited duration included)
        task = client.get_task("given", "plain")
        assert task.constraints is not None and task.constraints.max_task_retry_count == 2
        # $select still gives only what it names
        assert client.list_tasks_json("given", select="id,requiredSlots") == [
            {"id": "plain", "requiredSlots": 1}, {"id": "own", "requiredSlots": 1}]

        client.create_job_schedule({"id": "sched", "schedule": {"recurrenceInterval": "PT1H"},
                                    "jobSpecification": {"poolInfo": {"poolId": "nonodes"}}})
        spec = client.get_job_schedule("sched")["jobSpecification"]
        assert spec["onTaskFailure"] == "noaction" and spec["constraints"]["maxTaskRetryCount"] == 0
