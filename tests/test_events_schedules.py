"""Diagnostic events and job schedules, through a running service on local nodes."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

import pytest

from hpcbatch.batch.schedules import ManualClock
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("evsched")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, thread):
        client.add_hosts([{"name": "n1", "address": "127.0.0.11", "provider": "local",
                           "root_dir": str(tmp / "n1"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        yield client, thread, tmp


def _on_loop(thread, fn, *args):
    async def call():
        return fn(*args)
    return thread.call(call())


def test_events_are_written_as_json_lines(env):
    client, _thread, tmp = env
    client.create_job({"id": "ev", "poolInfo": {"poolId": "p"}})
    client.create_tasks("ev", [{"id": "ok", "commandLine": "/bin/true"},
                               {"id": "bad", "commandLine": "/bin/false"}])
    client.wait_for_tasks("ev", timeout_s=60)
    lines = [json.loads(line) for line in (tmp / "state" / "events.jsonl").read_text().splitlines()]
    names = [e["name"] for e in lines]
    for name in ("PoolCreateEvent", "PoolResizeStartEvent", "PoolResizeCompleteEvent",
                 "TaskStartEvent", "TaskCompleteEvent", "TaskFailEvent"):
        assert name in names, names
    fail = next(e for e in lines if e["name"] == "TaskFailEvent")
    assert fail["body"]["jobId"] == "ev" and fail["body"]["id"] == "bad"
    assert fail["body"]["executionInfo"]["exitCode"] == 1
    assert fail["body"]["nodeInfo"] == {"poolId": "p", "nodeId": "n1"}
    create = next(e for e in lines if e["name"] == "PoolCreateEvent")
    assert create["body"]["id"] == "p" and create["body"]["targetDedicatedNodes"] == 1


def test_schedule_creates_jobs_at_the_right_times_with_an_injected_clock(env):
    client, thread, _ = env
    svc = thread.runtime.service
    start = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
    clock = ManualClock(start)
    svc.schedules.clock = clock
    _on_loop(thread, svc.schedules.add, {
        "id": "nightly", "schedule": {"doNotRunUntil": "2030-01-01T09:00:00Z",
                                      "recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": {"poolId": "p"}, "onAllTasksComplete": "terminatejob",
                             "jobManagerTask": {"id": "jm", "commandLine": "/bin/true",
                                                "killJobOnCompletion": True}}})
    thread.call(svc.schedules.tick())
    assert _on_loop(thread, svc.schedules.jobs_of, "nightly") == []
    assert svc.schedules.get("nightly")["executionInfo"]["nextRunTime"].startswith("2030-01-01T09:00")
    clock.set(start + timedelta(hours=1, seconds=5))
    thread.call(svc.schedules.tick())
    jobs = _on_loop(thread, svc.schedules.jobs_of, "nightly")
    assert [j["id"] for j in jobs] == ["nightly:job-1"]
    wait_until(lambda: client.get_job("nightly:job-1").state == "completed", timeout_s=60,
               what="the scheduled job ran its job manager and completed")
    clock.set(start + timedelta(hours=1, minutes=30))
    thread.call(svc.schedules.tick())
    assert len(_on_loop(thread, svc.schedules.jobs_of, "nightly")) == 1
    clock.set(start + timedelta(hours=2, seconds=1))
    thread.call(svc.schedules.tick())
    assert [j["id"] for j in _on_loop(thread, svc.schedules.jobs_of, "nightly")] == [
        "nightly:job-1", "nightly:job-2"]
    info = svc.schedules.get("nightly")["executionInfo"]
    assert info["recentJob"]["id"] == "nightly:job-2"
    _on_loop(thread, svc.schedules.terminate, "nightly")
    wait_until(lambda: client.get_job("nightly:job-2").state == "completed", timeout_s=60,
               what="terminating the schedule terminates its job")
    wait_until(lambda: svc.schedules.get("nightly")["state"] == "completed", timeout_s=10,
               what="the schedule completes after its job (M12)")


def test_one_real_recurrence_end_to_end(env):
    client, thread, _ = env
    svc = thread.runtime.service
    from hpcbatch.batch.schedules import SystemClock

    svc.schedules.clock = SystemClock()
    _on_loop(thread, svc.schedules.add, {
        "id": "once", "schedule": {},
        "jobSpecification": {"poolInfo": {"poolId": "p"},
                             "jobManagerTask": {"id": "jm", "commandLine": "/bin/echo scheduled"}}})
    wait_until(lambda: _on_loop(thread, svc.schedules.jobs_of, "once"), timeout_s=30,
               what="the schedule's job")
    wait_until(lambda: client.get_job("once:job-1").state == "completed", timeout_s=60,
               what="job completed")
    assert client.download_task_file("once:job-1", "jm", "stdout.txt") == b"scheduled\n"
    wait_until(lambda: svc.schedules.get("once")["state"] == "completed", timeout_s=30,
               what="a one-shot schedule completes after its job")


def test_quotas_give_batch_errors(tmp_path):
    from hpcbatch.client.sdk import BatchError
    from hpcbatch.core.service import Quotas

    quotas = Quotas(pools=1, active_jobs_and_job_schedules=1, dedicated_cores=2)
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1",
                         quotas=quotas) as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{20 + i}", "provider": "local",
                           "root_dir": str(tmp_path / f"n{i}"), "python": sys.executable,
                           "cores": 2} for i in range(2)])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2})
        nodes = client.wait_for_pool("p", timeout_s=120)
        assert len(nodes) == 1
        assert client.get_pool("p").resize_errors[0].code == "AccountCoreQuotaReached"
        with pytest.raises(BatchError) as info:
            client.create_pool({"id": "q", "vmSize": "any"})
        assert (info.value.status, info.value.code) == (409, "PoolQuotaReached")
        client.create_job({"id": "j1", "poolInfo": {"poolId": "p"}})
        with pytest.raises(BatchError) as info:
            client.create_job({"id": "j2", "poolInfo": {"poolId": "p"}})
        assert info.value.code == "ActiveJobAndScheduleQuotaReached"
