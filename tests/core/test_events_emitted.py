"""The diagnostic events Batch documents are emitted where they happen.

TaskRequeueEvent (a job disabled with requeue), TaskScheduleFailEvent and
SpecialTaskEvent (a job preparation task that fails, then one that succeeds,
and its release task), PoolAutoscaleEvent (an autoscale evaluation), through a
running service on a local node.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.helpers import running_service, wait_until


def events(state: Path, name: str) -> list[dict[str, Any]]:
    lines = (state / "events.jsonl").read_text().splitlines()
    return [e["body"] for e in map(json.loads, lines) if e["name"] == name]


def test_requeue_schedule_fail_special_task_and_autoscale_events(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_service(state, scheduler_host="127.0.0.1", min_autoscale_interval_s=1,
                         metrics_interval_s=0.5) as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{50 + i}", "provider": "local",
                           "root_dir": str(tmp_path / f"n{i}"), "python": sys.executable}
                          for i in range(2)])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)

        # A running task requeued by Job - Disable (requeue).
        client.create_job({"id": "dis", "poolInfo": {"poolId": "p"}})
        client.create_task("dis", {"id": "long", "commandLine": "sleep 30"})
        wait_until(lambda: client.get_task("dis", "long").state == "running", timeout_s=30,
                   what="long running")
        client.disable_job("dis", "requeue")
        requeued = wait_until(lambda: events(state, "TaskRequeueEvent"), timeout_s=30,
                              what="TaskRequeueEvent")
        assert requeued[0]["jobId"] == "dis" and requeued[0]["id"] == "long"
        assert requeued[0]["executionInfo"]["requeueCount"] == 1
        assert requeued[0]["nodeInfo"]["nodeId"] == "n0"
        assert client.get_task("dis", "long").execution_info.requeue_count == 1
        client.terminate_job("dis")

        # A job whose preparation task fails on the node: its task cannot be scheduled there.
        client.create_job({"id": "prepfail", "poolInfo": {"poolId": "p"},
                           "jobPreparationTask": {"id": "setup", "commandLine": "/bin/false"}})
        client.create_task("prepfail", {"id": "t", "commandLine": "/bin/true"})
        failed = wait_until(lambda: events(state, "TaskScheduleFailEvent"), timeout_s=30,
                            what="TaskScheduleFailEvent")
        assert failed[0]["id"] == "t" and failed[0]["jobId"] == "prepfail"
        special = wait_until(lambda: [e for e in events(state, "SpecialTaskEvent")
                                      if e["jobId"] == "prepfail"], timeout_s=30,
                             what="SpecialTaskEvent JobPrep")
        assert special[0]["taskType"] == "JobPrep" and special[0]["taskName"] == "setup"
        assert special[0]["executionInfo"]["exitCode"] == 1
        assert special[0]["nodeInfo"] == {"poolId": "p", "nodeId": "n0"}
        client.terminate_job("prepfail")

        # Preparation and release that succeed: one SpecialTaskEvent each.
        client.create_job({"id": "prep", "poolInfo": {"poolId": "p"},
                           "jobPreparationTask": {"id": "setup", "commandLine": "/bin/true"},
                           "jobReleaseTask": {"id": "cleanup", "commandLine": "/bin/true"}})
        client.create_task("prep", {"id": "t", "commandLine": "/bin/true"})
        client.wait_for_tasks("prep", timeout_s=60)
        client.terminate_job("prep")
        kinds = wait_until(lambda: {(e["taskType"], e["taskName"], e["executionInfo"]["exitCode"])
                                    for e in events(state, "SpecialTaskEvent")
                                    if e["jobId"] == "prep"} >= {("JobPrep", "setup", 0),
                                                                 ("JobRelease", "cleanup", 0)},
                           timeout_s=30, what="JobPrep and JobRelease events")
        assert kinds

        # An autoscale evaluation.
        client.create_pool({"id": "auto", "vmSize": "any", "enableAutoScale": True,
                            "autoScaleFormula": "$TargetDedicatedNodes = 1;",
                            "autoScaleEvaluationInterval": "PT1S"})
        scaled = wait_until(lambda: [e for e in events(state, "PoolAutoscaleEvent")
                                     if e["id"] == "auto"], timeout_s=30,
                            what="PoolAutoscaleEvent")
        assert scaled[0]["formula"] == "$TargetDedicatedNodes = 1;"
        assert "$TargetDedicatedNodes=1" in scaled[0]["results"]
