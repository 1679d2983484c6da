"""Batch's 409s and 400s for requests that name each other's IDs or ask what the job
cannot do ("Batch Status and Error Codes"): a task named as the job's preparation or
release task, a job and a job schedule of one ID, a task's jobAction on a job with
onTaskFailure noaction, the preparation status of a job without a preparation task,
and a reactivation of a task that succeeded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient, BatchError
from tests.api.wire import Http, batch_error
from tests.helpers import running_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, Http]]:
    with running_service(tmp_path_factory.mktemp("conflicts") / "state",
                         scheduler_host="127.0.0.1") as (c, thread):
        creds = thread.runtime.credentials
        yield c, Http(thread.runtime.endpoint, creds.account_name, creds.key)


@pytest.fixture
def client(service: tuple[BatchClient, Http]) -> BatchClient:
    return service[0]


@pytest.fixture
def http(service: tuple[BatchClient, Http]) -> Http:
    return service[1]


def error_of(call: Any, *args: Any) -> BatchError:
    with pytest.raises(BatchError) as info:
        call(*args)
    return info.value


def test_a_task_may_not_take_the_id_of_the_jobs_preparation_or_release_task(client) -> None:
    client.create_job({"id": "prep", "poolInfo": {"poolId": "nonodes"},
                       "jobPreparationTask": {"commandLine": "/bin/true"},
                       "jobReleaseTask": {"id": "Cleanup", "commandLine": "/bin/true"}})
    err = error_of(client.create_task, "prep", {"id": "JobPreparation", "commandLine": "x"})
    assert (err.status, err.code) == (409, "TaskIdSameAsJobPreparationTask")
    err = error_of(client.create_task, "prep", {"id": "cleanup", "commandLine": "x"})
    assert (err.status, err.code) == (409, "TaskIdSameAsJobReleaseTask")
    # in a collection, the one task is refused and the others added
    results = client.create_tasks("prep", [{"id": "jobpreparation", "commandLine": "x"},
                                           {"id": "fine", "commandLine": "x"}],
                                  raise_on_error=False)
    assert [(r.status, (r.error or {}).get("code")) for r in results] == [
        ("clienterror", "TaskIdSameAsJobPreparationTask"), ("success", None)]
    # a job without them: the default IDs are plain task IDs
    client.create_job({"id": "plain", "poolInfo": {"poolId": "nonodes"}})
    client.create_task("plain", {"id": "jobpreparation", "commandLine": "x"})
    client.create_task("plain", {"id": "jobrelease", "commandLine": "x"})


def test_a_job_and_a_job_schedule_may_not_share_an_id(client) -> None:
    client.create_job({"id": "Shared", "poolInfo": {"poolId": "nonodes"}})
    err = error_of(client.create_job_schedule, {
        "id": "shared", "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": {"poolId": "nonodes"}}})
    assert (err.status, err.code) == (409, "JobWithSameIdExists")
    client.create_job_schedule({"id": "sched", "schedule": {"recurrenceInterval": "PT1H"},
                                "jobSpecification": {"poolInfo": {"poolId": "nonodes"}}})
    err = error_of(client.create_job, {"id": "SCHED", "poolInfo": {"poolId": "nonodes"}})
    assert (err.status, err.code) == (409, "JobScheduleWithSameIdExists")


def test_a_tasks_job_action_needs_the_job_to_perform_exit_options(client) -> None:
    client.create_job({"id": "noaction", "poolInfo": {"poolId": "nonodes"}})
    bad = {"id": "t", "commandLine": "x", "exitConditions": {
        "exitCodes": [{"code": 1, "exitOptions": {"dependencyAction": "satisfy"}},
                      {"code": 2, "exitOptions": {"jobAction": "terminate"}}]}}
    err = error_of(client.create_task, "noaction", bad)
    assert (err.status, err.code) == (400, "InvalidPropertyValue")
    assert err.values["PropertyName"] == "exitConditions.exitCodes[1].exitOptions.jobAction"
    err = error_of(client.create_task, "noaction", {
        "id": "d", "commandLine": "x", "exitConditions": {"default": {"jobAction": "disable"}}})
    assert err.values["PropertyName"] == "exitConditions.default.jobAction"
    # jobAction none, and a dependencyAction alone, are fine on such a job
    client.create_task("noaction", {"id": "n", "commandLine": "x", "exitConditions": {
        "default": {"jobAction": "none", "dependencyAction": "block"}}})
    client.create_job({"id": "acting", "poolInfo": {"poolId": "nonodes"},
                       "onTaskFailure": "performexitoptionsjobaction"})
    client.create_task("acting", bad)


def test_preparation_status_of_a_job_without_a_preparation_task_is_a_409(client) -> None:
    client.create_job({"id": "noprep", "poolInfo": {"poolId": "nonodes"}})
    err = error_of(client.list_job_preparation_and_release_task_status, "noprep")
    assert (err.status, err.code) == (409, "JobPreparationTaskNotSpecified")
    client.create_job({"id": "withprep", "poolInfo": {"poolId": "nonodes"},
                       "jobPreparationTask": {"commandLine": "/bin/true"}})
    assert client.list_job_preparation_and_release_task_status("withprep") == []



def test_required_properties_are_required(client, http: Http) -> None:
    client.create_job({"id": "req", "poolInfo": {"poolId": "nonodes"},
                       "metadata": [{"name": "kept", "value": "1"}]})
    client.create_pool({"id": "reqpool", "vmSize": "any", "targetDedicatedNodes": 0,
                        "metadata": [{"name": "kept", "value": "1"}]})
    for method, path, body, missing in (
            ("POST", "/jobs/req/disable", {}, "disableTasks"),
            ("PUT", "/jobs/req", {"priority": 5}, "poolInfo"),
            ("POST", "/pools/reqpool/updateproperties", {"metadata": []},
             "applicationPackageReferences"),
            ("POST", "/pools/reqpool/updateproperties", {"applicationPackageReferences": []},
             "metadata")):
        error = batch_error(http(method, path, body), 400, "MissingRequiredProperty")
        assert {"key": "PropertyName", "value": missing} in error["values"]
    job = client.get_job_json("req")  # nothing refused was applied
    assert job["state"] == "active" and job["metadata"] == [{"name": "kept", "value": "1"}]
    assert client.get_pool_json("reqpool")["metadata"] == [{"name": "kept", "value": "1"}]


def test_terminating_a_completed_task_is_task_completed(client) -> None:
    client.create_job({"id": "ended", "poolInfo": {"poolId": "nonodes"}})
    client.create_task("ended", {"id": "t", "commandLine": "x"})
    client.terminate_task("ended", "t")  # active: it completes, TaskEnded
    info = client.get_task_json("ended", "t")["executionInfo"]
    assert info["failureInfo"]["code"] == "TaskEnded"
    err = error_of(client.terminate_task, "ended", "t")
    assert (err.status, err.code) == (409, "TaskCompleted")
