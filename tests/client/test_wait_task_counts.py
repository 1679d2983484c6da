"""Waiting for a job's tasks: the long poll of Job - Get Task Counts (``Prefer: wait``).

A real service in this process, with no nodes: the tasks stay active until
Task - Terminate completes them, which is what the waits must notice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient, BatchError
from tests.helpers import running_service


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchClient]:
    with running_service(tmp_path_factory.mktemp("waits") / "state",
                         scheduler_host="127.0.0.1") as (c, _thread):
        yield c


def _job(client: BatchClient, job_id: str, tasks: int) -> None:
    client.create_job({"id": job_id, "poolInfo": {"poolId": "nonodes"}})
    client.create_tasks(job_id, [{"id": f"t{i}", "commandLine": "/bin/true"}
                                 for i in range(tasks)])


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_the_long_poll_answers_when_the_last_task_completes(client: BatchClient) -> None:
    _job(client, "lp-done", 2)
    t0 = time.monotonic()
    thread, out = _in_thread(lambda: client.wait_task_counts("lp-done", 30))
    thread.join(0.5)
    assert thread.is_alive()  # two active tasks: the reply waits
    client.terminate_task("lp-done", "t0")
    thread.join(0.5)
    assert thread.is_alive()  # one left
    client.terminate_task("lp-done", "t1")
    thread.join(30)
    counts, waited = out[0]
    assert waited and time.monotonic() - t0 < 30  # the completion answered, not the timeout
    assert counts["active"] == counts["running"] == 0 and counts["completed"] == 2


def test_the_long_poll_answers_after_its_wait_with_the_counts_of_that_moment(
        client: BatchClient) -> None:
    _job(client, "lp-wait", 1)
    counts, waited = client.wait_task_counts("lp-wait", 0.3)
    assert waited and counts["active"] == 1 and counts["completed"] == 0


def test_without_prefer_wait_task_counts_is_batch_s(client: BatchClient) -> None:
    _job(client, "lp-plain", 1)
    resp = client._request("GET", "/jobs/lp-plain/taskcounts")
    assert "Preference-Applied" not in resp.headers
    assert resp.json()["taskCounts"]["active"] == 1
    resp = client._request("GET", "/jobs/lp-plain/taskcounts", headers={"Prefer": "wait=0.2"})
    assert resp.headers["Preference-Applied"] == "wait=0.2"


def test_the_long_poll_of_a_missing_job_is_job_not_found(client: BatchClient) -> None:
    with pytest.raises(BatchError) as info:
        client.wait_task_counts("no-such-job", 1)
    assert info.value.code == "JobNotFound"


def test_wait_for_tasks_returns_as_the_tasks_complete_and_reports_progress(
        client: BatchClient) -> None:
    _job(client, "lp-sdk", 2)
    seen: list[dict[str, int]] = []
    thread, out = _in_thread(lambda: client.wait_for_tasks(
        "lp-sdk", timeout_s=60, poll_interval_s=0.1, progress=seen.append))
    thread.join(0.5)
    assert thread.is_alive() and seen and seen[0]["active"] == 2  # progress while waiting
    client.terminate_task("lp-sdk", "t0")
    client.terminate_task("lp-sdk", "t1")
    thread.join(30)
    assert out and out[0]["completed"] == 2 and seen[-1] == out[0]


def test_wait_for_tasks_returns_when_the_job_completes_with_tasks_left_active(
        client: BatchClient) -> None:
    """Job - Terminate leaves active tasks active, never to run: the wait ends with them."""
    _job(client, "lp-term", 2)
    thread, out = _in_thread(lambda: client.wait_for_tasks("lp-term", timeout_s=60))
    thread.join(1.5)
    assert thread.is_alive()  # the job is active: its tasks may still run
    t0 = time.monotonic()
    client.terminate_job("lp-term")
    thread.join(30)
    assert out and time.monotonic() - t0 < 10, "the wait did not notice the job completed"
    assert out[0]["active"] == 2 and out[0]["completed"] == 0


def test_task_wait_exits_1_naming_the_tasks_a_completed_job_never_runs(
        client: BatchClient) -> None:
    from click.testing import CliRunner

    from hpcbatch.client.cli import cli

    _job(client, "lp-term-cli", 1)
    client.terminate_job("lp-term-cli", terminate_reason="UserTerminate")
    env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
           "AZURE_BATCH_ACCESS_KEY": client._key, "HPCBATCH_STATE_DIR": None}  # its account key
    result = CliRunner(env=env).invoke(cli, ["task", "wait", "--job-id", "lp-term-cli",
                                             "--timeout-s", "30"], catch_exceptions=False)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "completed (UserTerminate) with 1 task(s) still active" in result.stderr


def test_wait_for_tasks_returns_when_the_tasks_left_are_blocked(client: BatchClient) -> None:
    """A task that ended failed blocks its dependents (dependencyAction block, the default),
    and Batch leaves them active: with nothing running, the SDK's wait ends with them
    (as ``hpcbatch task wait`` does) instead of waiting out its timeout. A task that may
    still run (here: one with no dependency, on a pool without nodes) keeps it waiting."""
    def tasks(job_id: str, free: bool) -> None:
        client.create_job({"id": job_id, "poolInfo": {"poolId": "nonodes"},
                           "usesTaskDependencies": True})
        client.create_tasks(job_id, [
            {"id": "first", "commandLine": "/bin/true"},
            {"id": "second", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["first"]}},
            {"id": "third", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["second"]}},
            *([{"id": "free", "commandLine": "/bin/true"}] if free else [])])
        client.terminate_task(job_id, "first")  # it ends failed (TaskEnded), never run

    tasks("lp-blocked", free=False)
    left = client.tasks_that_never_run("lp-blocked")
    assert left is not None
    assert {t["id"]: t["dependencyState"]["state"] for t in left} == {
        "second": "blocked", "third": "waiting"}
    t0 = time.monotonic()
    counts = client.wait_for_tasks("lp-blocked", timeout_s=60)
    assert time.monotonic() - t0 < 10, "the wait did not notice the tasks are blocked"
    assert (counts["active"], counts["completed"], counts["failed"]) == (2, 1, 1)

    tasks("lp-blocked-free", free=True)
    assert client.tasks_that_never_run("lp-blocked-free") is None
    with pytest.raises(TimeoutError):
        client.wait_for_tasks("lp-blocked-free", timeout_s=2.5)
