"""Job and pool statistics, lifetime statistics and pool usage metrics: the counters'
rules (pure and in the store), and the numbers a real run on the sshd testbed gives."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from typing import Any

import psutil
import pytest

from hpcbatch.batch.wire import utcnow
from hpcbatch.core.statistics import interval_start, run_counters, split_by_interval
from hpcbatch.execution import agent
from tests.api.wire import Http, batch_error
from tests.helpers import service_on_testbed, wait_until

OLD_API = "2022-10-01.16.0"
"""The last api-version with "Job/Pool - Get All Lifetime Statistics"."""


def seconds(duration: str) -> float:
    """An ISO 8601 duration of the wire (``PT1H2M3.5S``, ``P1DT2H``) in seconds."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", duration)
    assert m, duration
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


# ------------------------------------------------------------------ pure rules


def test_intervals_are_half_hours_and_split_a_span_exactly() -> None:
    assert interval_start(datetime(2026, 1, 1, 10, 29, 59, 9)) == datetime(2026, 1, 1, 10, 0)
    assert interval_start(datetime(2026, 1, 1, 10, 30)) == datetime(2026, 1, 1, 10, 30)
    pieces = split_by_interval(datetime(2026, 1, 1, 10, 10), datetime(2026, 1, 1, 11, 5))
    assert pieces == [(datetime(2026, 1, 1, 10, 0), 1200.0),
                      (datetime(2026, 1, 1, 10, 30), 1800.0),
                      (datetime(2026, 1, 1, 11, 0), 300.0)]
    assert split_by_interval(datetime(2026, 1, 1, 11), datetime(2026, 1, 1, 11)) == []


def test_a_run_counts_its_wall_clock_usage_retry_result_and_wait() -> None:
    created = datetime(2026, 1, 1, 10, 0, 0)
    start, end = created + timedelta(seconds=4), created + timedelta(seconds=10)
    usage = {"user_cpu_s": 1.5, "kernel_cpu_s": 0.25, "read_bytes": 512, "write_ops": 3,
             "max_rss_bytes": 1 << 20}
    done = run_counters(usage, start, end, retried=False, result="success", created=created)
    assert (done["wall_clock_s"], done["user_cpu_s"], done["kernel_cpu_s"]) == (6.0, 1.5, 0.25)
    assert (done["read_bytes"], done["write_ops"], done["read_ops"]) == (512, 3, 0)
    assert (done["succeeded"], done["failed"], done["retries"], done["wait_s"]) == (1, 0, 0, 4.0)
    assert done["peak_rss_bytes"] == 1 << 20
    again = run_counters(None, start, end, retried=True, result=None, created=created)
    assert (again["retries"], again["succeeded"], again["failed"], again["wait_s"]) == (1, 0, 0, 0)
    assert again["user_cpu_s"] == 0  # no usage reported: zeros, not an error
    never = run_counters({"user_cpu_s": -1}, None, end, retried=False, result="failure",
                         created=created)
    assert (never["wall_clock_s"], never["failed"], never["user_cpu_s"]) == (0, 1, 0)


# ----------------------------------------------------------- on the testbed


TASKS = [
    {"id": "ok1", "commandLine": "/bin/sh -c 'sleep 1'"},
    {"id": "ok2", "commandLine": "/bin/sh -c 'sleep 2; head -c 1000000 /dev/zero > out.bin'"},
    {"id": "bad", "commandLine": "/bin/sh -c 'sleep 1; exit 3'",
     "constraints": {"maxTaskRetryCount": 1}},
]
"""Known sleeps and exit codes: 2 succeed; 'bad' fails twice (one retry) and fails."""

MIN_WALL_S = 1 + 2 + 1 * 2
"""The sleeps of every run: 'bad' runs twice."""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("stats")
    with service_on_testbed(tmp, 1, "127.0.23.1") as (client, bed, thread):
        runtime = thread.runtime
        assert runtime.credentials is not None
        http = Http(runtime.endpoint, runtime.credentials.account_name, runtime.credentials.key)
        client.create_pool({"id": "sp", "vmSize": "testbed", "targetDedicatedNodes": 1})
        client.wait_for_pool("sp", timeout_s=180)
        client.create_job({"id": "sj", "poolInfo": {"poolId": "sp"}})
        client.create_tasks("sj", TASKS)
        client.wait_for_tasks("sj", timeout_s=180)
        # A schedule's job: its runs count for the schedule too.
        assert http("POST", "/jobschedules", {
            "id": "ss", "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {"poolInfo": {"poolId": "sp"}}}).status_code == 201
        wait_until(lambda: http("GET", "/jobs/ss:job-1").status_code == 200, timeout_s=60,
                   what="the schedule's job")
        client.create_tasks("ss:job-1", [{"id": "s1", "commandLine": "/bin/sh -c 'sleep 1'"}])
        client.wait_for_tasks("ss:job-1", timeout_s=180)
        yield http, client, bed, thread


def test_job_statistics_match_the_tasks_that_ran(ran: Any) -> None:
    http, _, _, _ = ran
    plain = http("GET", "/jobs/sj").json()
    assert "stats" not in plain  # only with $expand=stats
    job = http("GET", "/jobs/sj", params={"$expand": "stats"}).json()
    stats = job["stats"]
    assert stats["url"].endswith("/jobs/sj/stats")
    assert (stats["numSucceededTasks"], stats["numFailedTasks"], stats["numTaskRetries"]) == (
        "2", "1", "1")
    wall = seconds(stats["wallClockTime"])
    assert wall >= MIN_WALL_S
    tasks = {t["id"]: t for t in http("GET", "/jobs/sj/tasks").json()["value"]}
    assert seconds(stats["waitTime"]) >= 0
    waits = [(datetime.fromisoformat(t["executionInfo"]["startTime"].rstrip("Z"))
              - datetime.fromisoformat(t["creationTime"].rstrip("Z"))).total_seconds()
             for t in tasks.values()]
    assert seconds(stats["waitTime"]) == pytest.approx(sum(waits), abs=0.01)
    assert stats["startTime"] == job["creationTime"]
    assert stats["lastUpdateTime"] >= max(t["executionInfo"]["endTime"] for t in tasks.values())
    if "usage" in {f.name for f in dataclasses.fields(agent.Outcome)}:  # the node's rusage
        assert float(stats["writeIOGiB"]) * 1024 ** 3 >= 1_000_000 or int(stats["writeIOps"]) >= 0
        assert seconds(stats["userCPUTime"]) + seconds(stats["kernelCPUTime"]) > 0
    # The same numbers in Job - List with $expand=stats, and $select may pick them.
    listed = http("GET", "/jobs", params={"$expand": "stats", "$select": "id,stats",
                                          "$filter": "id eq 'sj'"}).json()
    assert listed["value"] == [{"id": "sj", "stats": stats}]


def test_job_schedule_statistics_count_the_jobs_it_created(ran: Any) -> None:
    http, _, _, _ = ran
    schedule = http("GET", "/jobschedules/ss", params={"$expand": "stats"}).json()["stats"]
    job = http("GET", "/jobs/ss:job-1", params={"$expand": "stats"}).json()["stats"]
    assert (schedule["numSucceededTasks"], schedule["numFailedTasks"]) == ("1", "0")
    assert schedule["wallClockTime"] == job["wallClockTime"]
    assert seconds(schedule["wallClockTime"]) >= 1
    assert schedule["url"].endswith("/jobschedules/ss/stats")
    listed = http("GET", "/jobschedules/ss/jobs", params={"$expand": "stats"}).json()["value"]
    assert [j["stats"]["numSucceededTasks"] for j in listed] == ["1"]
    assert "stats" not in http("GET", "/jobschedules/ss").json()


def test_pool_statistics_count_the_nodes_core_time(ran: Any) -> None:
    http, _, bed, _ = ran
    pool = http("GET", "/pools/sp", params={"$expand": "stats"}).json()
    stats = pool["stats"]
    core_s = seconds(stats["usageStats"]["dedicatedCoreTime"])
    job_wall = seconds(http("GET", "/jobs/sj", params={"$expand": "stats"}).json()
                       ["stats"]["wallClockTime"])
    # One node with 1 task slot ran every run in turn: its core time covers them all.
    assert core_s >= job_wall * bed.hosts[0].cores
    res = stats["resourceStats"]
    assert 0 <= res["avgCPUPercentage"] <= 100
    assert {"diskReadIOps", "diskWriteIOps", "diskReadGiB", "diskWriteGiB"} <= set(res)
    listed = http("GET", "/pools", params={"$expand": "stats"}).json()["value"]
    assert [p["id"] for p in listed if "stats" in p] == ["sp"]


def test_pool_statistics_hold_the_nodes_sampled_memory_disk_and_network(ran: Any) -> None:
    # Two sample periods (the service samples every 30 s; the test asks for them), with
    # requests between them: the node's network counters (machine-wide: the testbed is
    # loopback) move.
    http, _, _, thread = ran
    sampler = thread.runtime.service.autoscaler
    thread.call(sampler.sample())
    for _ in range(5):
        assert http("GET", "/pools/sp").status_code == 200
    thread.call(sampler.sample())
    res = http("GET", "/pools/sp", params={"$expand": "stats"}).json()["stats"]["resourceStats"]
    memory, disk = psutil.virtual_memory(), psutil.disk_usage("/")
    assert 0 < res["avgMemoryGiB"] <= res["peakMemoryGiB"] <= memory.total / 1024 ** 3
    assert 0 < res["avgDiskGiB"] <= res["peakDiskGiB"] <= disk.total / 1024 ** 3
    assert res["networkReadGiB"] > 0 and res["networkWriteGiB"] > 0
    lifetime = http("GET", "/lifetimepoolstats",
                    params={"api-version": OLD_API}).json()["resourceStats"]
    assert lifetime["networkReadGiB"] >= res["networkReadGiB"]
    assert lifetime["peakDiskGiB"] >= res["peakDiskGiB"]


def test_lifetime_statistics_only_in_the_api_versions_that_have_them(ran: Any) -> None:
    http, _, _, _ = ran
    jobs = http("GET", "/lifetimejobstats", params={"api-version": OLD_API}).json()
    assert jobs["url"].endswith("/lifetimejobstats")
    # Every job's runs: sj's and the schedule's job's (one more success, 1 s more).
    assert (jobs["numSucceededTasks"], jobs["numFailedTasks"], jobs["numTaskRetries"]) == (
        "3", "1", "1")
    assert seconds(jobs["wallClockTime"]) >= MIN_WALL_S + 1
    pools = http("GET", "/lifetimepoolstats", params={"api-version": OLD_API}).json()
    assert seconds(pools["usageStats"]["dedicatedCoreTime"]) >= seconds(jobs["wallClockTime"])
    for path in ("/lifetimejobstats", "/lifetimepoolstats"):
        body = batch_error(http("GET", path), 400, "InvalidUri")  # api-version 2025-06-01
        assert "2023-05-01.17.0" in body["message"]["value"]


def test_usage_metrics_per_pool_and_interval(ran: Any) -> None:
    http, client, _, _ = ran
    now = utcnow()
    window = {"starttime": (now - timedelta(hours=1)).isoformat() + "Z",
              "endtime": (now + timedelta(minutes=1)).isoformat() + "Z"}
    items = http("GET", "/poolusagemetrics", params=window).json()["value"]
    mine = [m for m in items if m["poolId"] == "sp"]
    assert mine and all(m["vmSize"] == "testbed" for m in mine)
    for m in mine:
        start = datetime.fromisoformat(m["startTime"].rstrip("Z"))
        assert datetime.fromisoformat(m["endTime"].rstrip("Z")) - start == timedelta(minutes=30)
        assert start.minute in (0, 30) and m["totalCoreHours"] > 0
    before = sum(m["totalCoreHours"] for m in mine)
    none = http("GET", "/poolusagemetrics",
                params={**window, "$filter": "poolId eq 'other'"}).json()["value"]
    assert none == []
    batch_error(http("GET", "/poolusagemetrics", params={"starttime": "yesterday"}), 400,
                "InvalidQueryParameterValue")
    # The pool goes: its node's time is kept, and the metrics still list it.
    client.delete_pool("sp")
    wait_until(lambda: http("GET", "/pools/sp").status_code == 404, timeout_s=120,
               what="pool deleted")
    after = [m for m in http("GET", "/poolusagemetrics", params=window).json()["value"]
             if m["poolId"] == "sp"]
    assert sum(m["totalCoreHours"] for m in after) >= before
