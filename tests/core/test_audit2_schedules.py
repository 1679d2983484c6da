"""Job schedule states against the Batch documents: Delete goes through ``deleting`` (M11),
Terminate completes the schedule after its job (M12), Disable of a disabled schedule
changes nothing (M22).

A real service with one local node; the schedule's job has a job release task that
takes a few seconds, so its job stays terminating or deleting meanwhile
(docs/architecture.md, "States", audit M11, M12, M22).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient, BatchError
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchClient]:
    tmp = tmp_path_factory.mktemp("audit2sched")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.191", "provider": "local",
                           "root_dir": str(tmp / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 4})
        client.wait_for_pool("p", timeout_s=120)
        yield client


def add_schedule(client: BatchClient, schedule_id: str) -> str:
    """Add a one-shot schedule whose job runs a long task; return the job's ID once running."""
    client.create_job_schedule({
        "id": schedule_id, "schedule": {},
        "jobSpecification": {
            "poolInfo": {"poolId": "p"},
            "jobPreparationTask": {"commandLine": "/bin/true"},
            "jobReleaseTask": {"commandLine": "sleep 3"},
            "jobManagerTask": {"id": "jm", "commandLine": "sleep 60"}}})
    job_id = f"{schedule_id}:job-1"
    wait_until(lambda: any(j.id == job_id for j in client.list_jobs_from_schedule(schedule_id)),
               timeout_s=30, what="the schedule's job")
    wait_until(lambda: client.get_task(job_id, "jm").state == "running", timeout_s=60,
               what="its job manager task running")
    return job_id


def schedule_or_none(client: BatchClient, schedule_id: str) -> dict[str, Any] | None:
    try:
        return client.get_job_schedule(schedule_id)
    except BatchError as exc:
        assert exc.code == "JobScheduleNotFound"
        return None


def test_m12_terminate_completes_the_schedule_after_its_job(client: BatchClient) -> None:
    # "terminating: The Job Schedule has no more work to do, or has been explicitly
    # terminated by the user, but the termination operation is still in progress"
    # (REST JobScheduleState.terminating).
    job_id = add_schedule(client, "term")
    client.terminate_job_schedule("term")
    schedule = client.get_job_schedule("term")
    assert client.get_job(job_id).state == "terminating"
    assert (schedule["state"], schedule["previousState"]) == ("terminating", "active")
    wait_until(lambda: client.get_job(job_id).state == "completed", timeout_s=60,
               what="the job completed (its release task ran)")
    schedule = wait_until(lambda: (s := client.get_job_schedule("term"))["state"] == "completed"
                          and s, timeout_s=10, what="the schedule completed")
    assert schedule["previousState"] == "terminating"
    assert "endTime" in schedule["executionInfo"]
    client.terminate_job_schedule("term")  # a completed schedule: nothing to do
    assert client.get_job_schedule("term")["stateTransitionTime"] == schedule[
        "stateTransitionTime"]


def test_m11_delete_goes_through_deleting(client: BatchClient) -> None:
    # "deleting: The user has requested that the Job Schedule be deleted, but the delete
    # operation is still in progress ... The Job Schedule will be deleted when all Jobs
    # and Tasks under the Job Schedule have been deleted" (REST JobScheduleState.deleting).
    job_id = add_schedule(client, "del")
    client.delete_job_schedule("del")
    schedule = schedule_or_none(client, "del")
    assert schedule is not None, "the schedule went before its job"
    assert (schedule["state"], schedule["previousState"]) == ("deleting", "active")
    assert client.get_job(job_id).state == "deleting"
    assert [s["id"] for s in client.list_job_schedules() if s["state"] == "deleting"] == ["del"]
    with pytest.raises(BatchError) as info:
        client.enable_job_schedule("del")
    assert info.value.status == 409
    client.delete_job_schedule("del")  # deleting already: accepted, nothing changes
    wait_until(lambda: schedule_or_none(client, "del") is None, timeout_s=60,
               what="the schedule gone with its job")
    with pytest.raises(BatchError) as info:
        client.get_job(job_id)
    assert info.value.code == "JobNotFound"


def test_m22_disabling_a_disabled_schedule_changes_nothing(client: BatchClient) -> None:
    client.create_job_schedule({
        "id": "dis", "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z"},
        "jobSpecification": {"poolInfo": {"poolId": "p"}}})
    client.disable_job_schedule("dis")
    first = client.get_job_schedule("dis")
    assert (first["state"], first["previousState"]) == ("disabled", "active")
    client.disable_job_schedule("dis")
    again = client.get_job_schedule("dis")
    for name in ("state", "previousState", "stateTransitionTime", "eTag", "lastModified"):
        assert again[name] == first[name], name
    client.enable_job_schedule("dis")
    assert client.get_job_schedule("dis")["state"] == "active"
    client.delete_job_schedule("dis")
    wait_until(lambda: schedule_or_none(client, "dis") is None, timeout_s=30,
               what="the schedule without jobs deleted")
