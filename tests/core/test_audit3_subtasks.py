"""Subtask states of a multi-instance task (audit M10, M20), on a service with two local nodes.

Batch: a subtask is ``preparing`` while "waiting for a required Job Preparation
Task to complete on the Compute Node" (REST SubtaskState.preparing), and
``completed`` once the task was terminated or its instance ended (REST
SubtaskState.completed; 2017 l.5171): a requeued task has no running subtask.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from hpcbatch.client.sdk import BatchClient
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchClient]:
    tmp = tmp_path_factory.mktemp("audit3_subtasks")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{82 + i}", "provider": "local",
                           "root_dir": str(tmp / f"n{i}"), "python": sys.executable}
                          for i in range(2)])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2,
                            "enableInterNodeCommunication": True})
        client.wait_for_pool("p", timeout_s=120)
        yield client


def _gang(task_id: str, command: str) -> dict:
    return {"id": task_id, "commandLine": command,
            "multiInstanceSettings": {"numberOfInstances": 2,
                                      "coordinationCommandLine": "/bin/true"}}


def test_subtasks_are_preparing_while_the_job_preparation_task_runs(client: BatchClient) -> None:
    # M20: the subtask waits for the job preparation task as its primary does.
    client.create_job({"id": "prep", "poolInfo": {"poolId": "p"},
                       "jobPreparationTask": {"id": "setup", "commandLine": "sleep 3"}})
    client.create_task("prep", _gang("mi", "/bin/true"))
    wait_until(lambda: client.get_task("prep", "mi").state == "preparing", timeout_s=30,
               what="task preparing")
    subs = wait_until(lambda: client.list_subtasks("prep", "mi"), timeout_s=10,
                      what="subtasks listed")
    assert [s.state for s in subs] == ["preparing"]
    assert client.get_task("prep", "mi").state == "preparing"
    assert client.wait_for_tasks("prep", timeout_s=60)["succeeded"] == 1
    sub = client.list_subtasks("prep", "mi")[0]
    assert sub.state == "completed" and sub.result == "success"
    assert sub.previous_state == "running"


def test_subtasks_of_a_requeued_task_are_completed(client: BatchClient) -> None:
    # M10: Job - Disable with requeue puts the task back to active; its subtask ends.
    client.create_job({"id": "rq", "poolInfo": {"poolId": "p"}})
    client.create_task("rq", _gang("mi", "sleep 30"))
    wait_until(lambda: client.get_task("rq", "mi").state == "running", timeout_s=30,
               what="task running")
    assert [s.state for s in client.list_subtasks("rq", "mi")] == ["running"]
    client.disable_job("rq", "requeue")
    wait_until(lambda: client.get_job("rq").state == "disabled", timeout_s=30, what="disabled")
    task = client.get_task("rq", "mi")
    assert task.state == "active" and task.execution_info.requeue_count == 1
    sub = client.list_subtasks("rq", "mi")[0]
    assert sub.state == "completed" and sub.previous_state == "running"
    assert sub.result == "failure" and sub.failure_info.code == "TaskRequeued"
    client.terminate_job("rq")
