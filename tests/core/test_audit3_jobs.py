"""Job operations in each job state (audit M8, M17, M18, M19), on a service with a local node.

Batch (REST API 2025-06-01):

- Job - Terminate: "If there are any Tasks in the Job in the active state, they
  will remain in the active state" (M8, a deliberate difference from 2017 l.4096).
- completed: "the system will not accept any more Tasks or any further changes
  to the Job" (REST JobState.completed); "All update operations on a Job that
  is in deleting state will fail with status code 409 (Conflict)" (REST Job -
  Delete) (M17).
- Job - Enable "sets a disabled Job to the enabling state. After the this
  operation is completed, the Job moves to the active state" (M18).
- Job - Disable: "If you try to disable a Job that is in any state other than
  active, disabling, or disabled, the request fails with status code 409" (M19).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from hpcbatch.client.sdk import BatchClient, BatchError
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchClient]:
    tmp = tmp_path_factory.mktemp("audit3_jobs")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.81", "provider": "local",
                           "root_dir": str(tmp / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 4})
        client.wait_for_pool("p", timeout_s=120)
        yield client


def _conflict(call: object, *args: object) -> BatchError:
    with pytest.raises(BatchError) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.status == 409, info.value
    return info.value


def test_terminate_leaves_active_tasks_active(client: BatchClient) -> None:
    # M8: today's REST Job - Terminate keeps active tasks active (they are never scheduled).
    client.create_job({"id": "m8", "poolInfo": {"poolId": "p"}})
    client.disable_job("m8", "requeue")  # keeps the task active
    client.create_task("m8", {"id": "waiting", "commandLine": "/bin/true"})
    wait_until(lambda: client.get_job("m8").state == "disabled", timeout_s=30, what="disabled")
    client.terminate_job("m8")
    wait_until(lambda: client.get_job("m8").state == "completed", timeout_s=30,
               what="job completed")
    assert client.get_task("m8", "waiting").state == "active"


def test_completed_and_deleting_jobs_refuse_changes(client: BatchClient) -> None:
    # M17, completed.
    client.create_job({"id": "done", "poolInfo": {"poolId": "p"}})
    client.terminate_job("done")
    wait_until(lambda: client.get_job("done").state == "completed", timeout_s=30,
               what="job completed")
    before = client.get_job("done")
    err = _conflict(client.update_job, "done", {"priority": 100})
    assert err.code == "JobCompleted"
    after = client.get_job("done")
    assert after.priority == before.priority and after.e_tag == before.e_tag

    # M17, deleting: the job's release task keeps it deleting for a while.
    client.create_job({"id": "gone", "poolInfo": {"poolId": "p"},
                       "jobPreparationTask": {"id": "prep", "commandLine": "/bin/true"},
                       "jobReleaseTask": {"id": "rel", "commandLine": "sleep 5"}})
    client.create_task("gone", {"id": "t", "commandLine": "/bin/true"})
    client.wait_for_tasks("gone", timeout_s=60)
    client.delete_job("gone")
    assert client.get_job("gone").state == "deleting"
    assert _conflict(client.update_job, "gone", {"priority": 100}).code == "JobBeingDeleted"
    assert _conflict(client.terminate_job, "gone").code == "JobBeingDeleted"
    assert client.get_job("gone").state == "deleting"
    wait_until(lambda: "gone" not in {j.id for j in client.list_jobs()}, timeout_s=60,
               what="job removed")


def test_enable_goes_through_enabling_and_refuses_a_disabling_job(client: BatchClient) -> None:
    # M18: a disabled job goes enabling, then active.
    client.create_job({"id": "en", "poolInfo": {"poolId": "p"}})
    client.disable_job("en", "requeue")
    wait_until(lambda: client.get_job("en").state == "disabled", timeout_s=30, what="disabled")
    client.enable_job("en")
    job = client.get_job("en")
    assert job.state == "active" and job.previous_state == "enabling"
    assert _conflict(client.enable_job, "en").code == "JobNotDisabled"  # active: as before
    # M18: a disabling job is not disabled yet: 409, and it stays disabling.
    client.create_job({"id": "busy", "poolInfo": {"poolId": "p"}})
    client.create_task("busy", {"id": "slow", "commandLine": "sleep 4"})
    wait_until(lambda: client.get_task("busy", "slow").state == "running", timeout_s=30,
               what="slow running")
    client.disable_job("busy", "wait")
    assert _conflict(client.enable_job, "busy").code == "JobNotDisabled"
    assert client.get_job("busy").state == "disabling"
    wait_until(lambda: client.get_job("busy").state == "disabled", timeout_s=30,
               what="busy disabled")


def test_disable_accepts_a_disabling_or_disabled_job(client: BatchClient) -> None:
    # M19: Disable of a disabling or disabled job is accepted and changes nothing.
    client.create_job({"id": "dis", "poolInfo": {"poolId": "p"}})
    client.create_task("dis", {"id": "slow", "commandLine": "sleep 4"})
    wait_until(lambda: client.get_task("dis", "slow").state == "running", timeout_s=30,
               what="slow running")
    client.disable_job("dis", "wait")
    disabling = client.get_job("dis")
    client.disable_job("dis", "terminate")  # accepted; the first disable goes on (wait)
    again = client.get_job("dis")
    assert again.state == "disabling" and again.e_tag == disabling.e_tag
    job = wait_until(lambda: (j := client.get_job("dis")).state == "disabled" and j,
                     timeout_s=30, what="dis disabled")
    task = client.get_task("dis", "slow")
    assert task.state == "completed" and task.execution_info.exit_code == 0  # waited for
    client.disable_job("dis", "requeue")
    after = client.get_job("dis")
    assert after.state == "disabled" and after.e_tag == job.e_tag
    assert after.state_transition_time == job.state_transition_time
    # Any other state still answers 409.
    client.terminate_job("dis")
    wait_until(lambda: client.get_job("dis").state == "completed", timeout_s=30,
               what="dis completed")
    assert _conflict(client.disable_job, "dis", "requeue").code == "JobNotActive"
