"""Resize and requeue events through a running service on local nodes: every resize (Pool -
Resize, pool creation, an autoscale result) logs its start with the nodes the pool had and
its completion with the same nodeDeallocationOption; every counted requeue, a service
restart's included, logs a TaskRequeueEvent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.helpers import running_service, wait_until


def _events(state: Path, name: str, pool: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]
    return [e["body"] for e in lines
            if e["name"] == name and (pool is None or e["body"].get("id") == pool)]


def _local_hosts(tmp: Path, count: int, first: int) -> list[dict[str, Any]]:
    return [{"name": f"n{i}", "address": f"127.0.0.{first + i}", "provider": "local",
             "root_dir": str(tmp / f"n{i}"), "python": sys.executable} for i in range(count)]


def test_every_resize_logs_start_and_complete_events_with_the_counts_it_started_from(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_service(state, scheduler_host="127.0.0.1", metrics_interval_s=0.5,
                         min_autoscale_interval_s=1) as (client, _):
        client.add_hosts(_local_hosts(tmp_path, 3, 51))
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2})
        client.wait_for_pool("p", timeout_s=120)
        client.resize_pool("p", 3)  # grow: the event has the 2 nodes it started from
        client.wait_for_pool("p", timeout_s=120)
        client.resize_pool("p", 1)  # shrink, no option given: requeue, start and complete
        wait_until(lambda: len(_events(state, "PoolResizeCompleteEvent", "p")) == 3,
                   timeout_s=60, what="three resizes of p complete")
        starts = _events(state, "PoolResizeStartEvent", "p")
        completes = _events(state, "PoolResizeCompleteEvent", "p")
        assert [(s["currentDedicatedNodes"], s["targetDedicatedNodes"]) for s in starts] == [
            (0, 2), (2, 3), (3, 1)]
        assert [s["nodeDeallocationOption"] for s in starts] == ["invalid", "invalid", "requeue"]
        assert [c["nodeDeallocationOption"] for c in completes] == [
            "invalid", "invalid", "requeue"]
        assert [c["currentDedicatedNodes"] for c in completes] == [2, 3, 1]

        # An autoscale result is a resize too: its events say enableAutoScale.
        client.delete_pool("p")
        wait_until(lambda: not client.list_pools(), timeout_s=60, what="pool p gone")
        client.create_pool({"id": "auto", "vmSize": "any", "enableAutoScale": True,
                            "autoScaleFormula": "$TargetDedicatedNodes = 2;",
                            "autoScaleEvaluationInterval": "PT1S"})
        wait_until(lambda: any((c["currentDedicatedNodes"], c["targetDedicatedNodes"]) == (2, 2)
                               for c in _events(state, "PoolResizeCompleteEvent", "auto")),
                   timeout_s=90, what="the autoscale resize completes")
        [grown] = _events(state, "PoolResizeStartEvent", "auto")  # the formula's resize
        assert grown["enableAutoScale"] is True
        assert (grown["currentDedicatedNodes"], grown["targetDedicatedNodes"]) == (0, 2)
        # Later evaluations that keep the target are no resizes.
        run = client.get_pool("auto").auto_scale_run["timestamp"]
        wait_until(lambda: client.get_pool("auto").auto_scale_run["timestamp"] != run,
                   timeout_s=30, what="another evaluation")
        assert len(_events(state, "PoolResizeStartEvent", "auto")) == len(
            _events(state, "PoolResizeCompleteEvent", "auto")) == 1


def test_a_service_restart_logs_the_requeues_it_counts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts(_local_hosts(tmp_path, 1, 61))
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.create_task("j", {"id": "t", "commandLine": "/bin/sleep 60",
                                 "constraints": {"maxTaskRetryCount": 2}})
        wait_until(lambda: client.get_task("j", "t").state == "running", what="running")
    with running_service(state, scheduler_host="127.0.0.1") as (client, _):
        task = client.get_task("j", "t")
        assert task.execution_info.requeue_count == 1
        [requeue] = _events(state, "TaskRequeueEvent")
        assert requeue["jobId"] == "j" and requeue["id"] == "t"
        assert requeue["nodeInfo"] == {"poolId": "p", "nodeId": "n0"}
        assert requeue["executionInfo"]["requeueCount"] == 1
        assert requeue["constraints"]["maxTaskRetryCount"] == 2
        client.terminate_task("j", "t")
