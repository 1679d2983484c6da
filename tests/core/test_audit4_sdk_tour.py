"""What a Batch user running azure-batch SDK scripts meets, against the Batch documents.

A real service (real SQLite); validation-only cases need no node. Each test quotes
the Batch REST reference it checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hpcbatch.api.server import ServiceThread
from hpcbatch.batch.models import JobPreparationTask, JobReleaseTask
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.core.preparation import job_task_wall_clock
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, ServiceThread]]:
    tmp = tmp_path_factory.mktemp("audit4")
    with running_service(tmp / "state", scheduler_host="127.0.0.1",
                         min_autoscale_interval_s=1) as (client, thread):
        yield client, thread


def test_job_release_task_timeout_longer_than_15_minutes_is_rejected(
        env: tuple[BatchClient, ServiceThread]) -> None:
    # JobReleaseTask.maxWallClockTime: "The default value is 15 minutes. You may not
    # specify a timeout longer than 15 minutes. If you do, the Batch service rejects it
    # with an error; if you are calling the REST API directly, the HTTP status code is
    # 400 (Bad Request)." (REST reference, Job - Add / Job Schedule - Add)
    client, _ = env
    job = {"id": "rel20", "poolInfo": {"poolId": "p"},
           "jobPreparationTask": {"commandLine": "/bin/true"},
           "jobReleaseTask": {"commandLine": "/bin/true", "maxWallClockTime": "PT20M"}}
    with pytest.raises(BatchError) as info:
        client.create_job(job)
    assert info.value.status == 400 and info.value.code == "InvalidPropertyValue"
    assert "jobReleaseTask.maxWallClockTime" in info.value.message
    with pytest.raises(BatchError) as info:
        client.create_job_schedule({"id": "rel20s", "schedule": {},
                                    "jobSpecification": {k: v for k, v in job.items()
                                                         if k != "id"}})
    assert info.value.status == 400 and "jobReleaseTask.maxWallClockTime" in info.value.message
    job["jobReleaseTask"]["maxWallClockTime"] = "PT15M"
    client.create_job(job)
    assert client.get_job("rel20").job_release_task.max_wall_clock_time.total_seconds() == 900


def test_job_preparation_task_without_constraints_has_no_time_limit() -> None:
    # JobPreparationTask.constraints -> TaskConstraints.maxWallClockTime: "If this is not
    # specified, there is no time limit on how long the Task may run." Only the release
    # task has a 15-minute default (JobReleaseTask.maxWallClockTime). Was: 15 minutes for
    # both, so a preparation task that staged data for longer was killed.
    prep = JobPreparationTask.model_validate({"commandLine": "/bin/true"})
    assert job_task_wall_clock(prep) is None
    prep = JobPreparationTask.model_validate(
        {"commandLine": "/bin/true", "constraints": {"maxWallClockTime": "PT2H"}})
    assert job_task_wall_clock(prep) == timedelta(hours=2)
    release = JobReleaseTask.model_validate({"commandLine": "/bin/true"})
    assert job_task_wall_clock(release) == timedelta(minutes=15)
    release = JobReleaseTask.model_validate({"commandLine": "/bin/true",
                                             "maxWallClockTime": "PT1M"})
    assert job_task_wall_clock(release) == timedelta(minutes=1)


def test_enable_autoscale_with_a_new_formula_keeps_the_current_interval(
        env: tuple[BatchClient, ServiceThread]) -> None:
    # Enable automatic scaling on an existing pool (batch-automatic-scaling, 2017):
    # "If autoscale is currently enabled on the pool, you can specify an autoscale
    # formula, an evaluation interval, or both ... If you omit either the autoscale
    # formula or evaluation interval, the Batch service continues to use the current
    # value of that setting." Was: the interval went back to the 15-minute default.
    client, _ = env
    client.create_pool({"id": "as", "vmSize": "any", "enableAutoScale": True,
                        "autoScaleFormula": "$TargetDedicatedNodes = 0;",
                        "autoScaleEvaluationInterval": "PT7M"})
    client.enable_pool_auto_scale("as", "$TargetDedicatedNodes = 0; $x = 1;")
    pool = client._request("GET", "/pools/as").json()
    assert pool["autoScaleFormula"] == "$TargetDedicatedNodes = 0; $x = 1;"
    assert pool["autoScaleEvaluationInterval"] == "PT7M"
    client.enable_pool_auto_scale("as", "$TargetDedicatedNodes = 0;", "PT8M")
    assert client._request("GET", "/pools/as").json()["autoScaleEvaluationInterval"] == "PT8M"
    # on a pool that does not autoscale, the interval defaults to 15 minutes
    client.disable_pool_auto_scale("as")
    client.enable_pool_auto_scale("as", "$TargetDedicatedNodes = 0;")
    assert client._request("GET", "/pools/as").json()["autoScaleEvaluationInterval"] == "PT15M"


@pytest.mark.parametrize("setting", [{"autoScaleFormula": "$TargetDedicatedNodes = 1;"},
                                     {"autoScaleEvaluationInterval": "PT5M"}])
@pytest.mark.parametrize("enable", [{}, {"enableAutoScale": False}])
def test_autoscale_settings_without_enable_auto_scale_are_rejected(
        env: tuple[BatchClient, ServiceThread], setting: dict[str, str],
        enable: dict[str, bool]) -> None:
    # Pool - Add, autoScaleFormula: "This property must not be specified if
    # enableAutoScale is set to false. It is required if enableAutoScale is set to
    # true." autoScaleEvaluationInterval likewise ("enableAutoScale" defaults to false).
    # Was: accepted, and the pool kept a formula it never ran.
    client, _ = env
    [name] = setting
    with pytest.raises(BatchError) as info:
        client.create_pool({"id": "noauto", "vmSize": "any", "targetDedicatedNodes": 0,
                            **enable, **setting})
    assert info.value.status == 400 and info.value.code == "InvalidPropertyValue"
    assert name in info.value.message and "enableAutoScale" in info.value.message
    assert "noauto" not in {p.id for p in client.list_pools()}


def test_job_schedule_with_a_release_task_but_no_preparation_task_is_rejected(
        env: tuple[BatchClient, ServiceThread]) -> None:
    # JobSpecification.jobReleaseTask: "A Job Release Task cannot be specified without
    # also specifying a Job Preparation Task for the Job." Job - Add refuses it; Job
    # Schedule - Add accepted it, and every job it was due to create then failed (the
    # schedule showed only an executionInfo.schedulingError).
    client, _ = env
    spec = {"poolInfo": {"poolId": "p"}, "jobReleaseTask": {"commandLine": "/bin/true"}}
    with pytest.raises(BatchError) as info:
        client.create_job_schedule({"id": "relonly", "schedule": {}, "jobSpecification": spec})
    assert info.value.status == 400 and info.value.code == "InvalidPropertyValue"
    assert info.value.values["PropertyName"] == "jobSpecification.jobReleaseTask"
    assert "relonly" not in {s["id"] for s in client.list_job_schedules()}
    client.create_job_schedule({"id": "relok",
                                "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z"},
                                "jobSpecification": {"poolInfo": {"poolId": "p"}}})
    with pytest.raises(BatchError) as info:  # Job Schedule - Patch
        client._request("PATCH", "/jobschedules/relok", body={"jobSpecification": spec})
    assert info.value.status == 400
    assert info.value.values["PropertyName"] == "jobSpecification.jobReleaseTask"


def test_updating_a_disabled_schedule_moves_its_next_run_time(
        env: tuple[BatchClient, ServiceThread]) -> None:
    # JobScheduleExecutionInformation.nextRunTime: "This property is meaningful only if
    # the schedule is in the active state when the time comes around. For example, if
    # the schedule is disabled, no Job will be created at nextRunTime unless the Job is
    # enabled before then." A disabled schedule still shows when its next job is due,
    # by its current schedule. Was: after Job Schedule - Patch of a disabled schedule,
    # nextRunTime stayed the old schedule's until the schedule was enabled.
    client, _ = env
    now = datetime.now(UTC).replace(microsecond=0)
    first, second = now + timedelta(hours=2), now + timedelta(hours=5)
    client.create_job_schedule({
        "id": "movenext", "jobSpecification": {"poolInfo": {"poolId": "p"}},
        "schedule": {"doNotRunUntil": first.isoformat(), "recurrenceInterval": "PT1H"}})

    def next_run() -> datetime:
        info = client._request("GET", "/jobschedules/movenext").json()["executionInfo"]
        return datetime.fromisoformat(info["nextRunTime"])

    wait_until(lambda: "nextRunTime" in client._request(
        "GET", "/jobschedules/movenext").json()["executionInfo"], what="first tick")
    assert next_run() == first
    client._request("POST", "/jobschedules/movenext/disable")
    client._request("PATCH", "/jobschedules/movenext", body={
        "schedule": {"doNotRunUntil": second.isoformat(), "recurrenceInterval": "PT1H"}})
    assert next_run() == second
    client._request("POST", "/jobschedules/movenext/enable")
    wait_until(lambda: next_run() == second, what="the enabled schedule's tick")


@pytest.mark.parametrize("job, path, code", [
    ({"jobManagerTask": {"id": "JobPreparation", "commandLine": "/bin/true"},
      "jobPreparationTask": {"commandLine": "/bin/true"}},
     "jobManagerTask.id", "TaskIdSameAsJobPreparationTask"),
    ({"jobManagerTask": {"id": "stage", "commandLine": "/bin/true"},
      "jobPreparationTask": {"id": "stage", "commandLine": "/bin/true"}},
     "jobManagerTask.id", "TaskIdSameAsJobPreparationTask"),
    ({"jobManagerTask": {"id": "jobrelease", "commandLine": "/bin/true"},
      "jobPreparationTask": {"commandLine": "/bin/true"},
      "jobReleaseTask": {"commandLine": "/bin/true"}},
     "jobManagerTask.id", "TaskIdSameAsJobReleaseTask"),
    ({"jobPreparationTask": {"id": "both", "commandLine": "/bin/true"},
      "jobReleaseTask": {"id": "both", "commandLine": "/bin/true"}},
     "jobReleaseTask.id", "TaskIdSameAsJobPreparationTask"),
])
def test_a_job_task_with_the_id_of_another_job_task_is_rejected(
        env: tuple[BatchClient, ServiceThread], job: dict[str, Any], path: str,
        code: str) -> None:
    # JobPreparationTask.id: "No other Task in the Job can have the same ID as the Job
    # Preparation Task. If you try to submit a Task with the same id, the Batch service
    # rejects the request with error code TaskIdSameAsJobPreparationTask" (the same for
    # JobReleaseTask.id). Was: Job - Add took a job manager task with the preparation
    # task's ID, and both ran in one task folder on the node.
    client, _ = env
    with pytest.raises(BatchError) as info:
        client.create_job({"id": "sameid", "poolInfo": {"poolId": "p"}, **job})
    assert (info.value.status, info.value.code) == (409, code)
    assert info.value.values["PropertyName"] == path
    with pytest.raises(BatchError) as info:
        client.create_job_schedule({"id": "sameids", "schedule": {},
                                    "jobSpecification": {"poolInfo": {"poolId": "p"}, **job}})
    assert info.value.values["PropertyName"] == "jobSpecification." + path
    for absent in ("/jobs/sameid", "/jobschedules/sameids"):
        with pytest.raises(BatchError) as info:
            client._request("GET", absent)
        assert info.value.status == 404
