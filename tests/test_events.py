"""Batch diagnostic events: bodies as Batch documents them, and the event log.

Expected bodies are the samples of "Log events for diagnostic evaluation and
monitoring of Batch solutions" and of today's per-event pages (pool create,
pool delete start/complete, pool resize start/complete, pool autoscale, task
start/complete/fail/requeue/schedule fail, special task), built here from the
REST JSON the service holds (``CloudPool``, ``CloudTask``).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch import events as ev
from hpcbatch.batch.models import Pool
from hpcbatch.storage.fs import Storage, open_storage
from hpcbatch.store.events import EventLog

T0 = datetime(2016, 9, 8, 16, 32, 23, 799000, tzinfo=UTC)
T1 = datetime(2016, 9, 8, 16, 34, 0, 666000, tzinfo=UTC)

# ------------------------------------------------------------------ formatting


def test_format_time_is_utc_milliseconds_z() -> None:
    assert ev.format_time(T0) == "2016-09-08T16:32:23.799Z"
    assert (
        ev.format_time(datetime(2016, 9, 8, 16, 32, 23)) == "2016-09-08T16:32:23.000Z"
    )  # naive = UTC
    plus2 = timezone(timedelta(hours=2))
    assert (
        ev.format_time(datetime(2016, 9, 8, 18, 32, 23, 799000, tzinfo=plus2))
        == "2016-09-08T16:32:23.799Z"
    )
    assert ev.format_time("2016-09-08T16:32:23.7991234Z") == "2016-09-08T16:32:23.799Z"
    assert ev.format_time("2016-09-08T18:32:23.799+02:00") == "2016-09-08T16:32:23.799Z"
    assert ev.format_time("2016-09-08T16:32:23") == "2016-09-08T16:32:23.000Z"  # naive = UTC
    assert ev.format_time("2016-09-08T16:32:23.1234567890Z") == "2016-09-08T16:32:23.123Z"
    with pytest.raises(ValueError, match="ISO 8601"):
        ev.format_time("yesterday")


# ------------------------------------------------------------------ pool events


def test_pool_create_event_matches_batch_sample() -> None:
    pool = Pool.model_validate(
        {
            "id": "myPool1",
            "displayName": "Production Pool",
            "vmSize": "Standard_F1s",
            "virtualMachineConfiguration": {
                "imageReference": {
                    "publisher": "Canonical",
                    "offer": "UbuntuServer",
                    "sku": "20.04-LTS",
                    "version": "latest",
                },
                "nodeAgentSKUId": "batch.node.ubuntu 22.04",
            },
            "networkConfiguration": {"subnetId": "/subscriptions/s/subnets/default"},
            "resizeTimeout": "PT5M",
            "targetDedicatedNodes": 2,
            "targetLowPriorityNodes": 2,
            "taskSlotsPerNode": 1,
            "enableAutoScale": False,
            "enableInterNodeCommunication": False,
            "state": "active",
            "currentDedicatedNodes": 0,
        }
    ).to_wire()  # what the service returns for GET /pools/myPool1

    body = ev.pool_create_event(pool)

    assert body == {
        "id": "myPool1",
        "displayName": "Production Pool",
        "vmSize": "Standard_F1s",
        "imageType": "VirtualMachineConfiguration",
        "networkConfiguration": {"subnetId": "/subscriptions/s/subnets/default"},
        "virtualMachineConfiguration": {
            "imageReference": {
                "publisher": "Canonical",
                "offer": "UbuntuServer",
                "sku": "20.04-LTS",
                "version": "latest",
            },
            "nodeAgentId": "batch.node.ubuntu 22.04",
        },
        "resizeTimeout": "300000",
        "targetDedicatedNodes": 2,
        "targetLowPriorityNodes": 2,
        "maxTasksPerNode": 1,
        "taskSlotsPerNode": 1,
        "vmFillType": "Spread",
        "enableAutoScale": False,
        "enableInterNodeCommunication": False,
        "isAutoPool": False,
    }
    # the documented field order
    assert list(body) == [
        "id",
        "displayName",
        "vmSize",
        "imageType",
        "networkConfiguration",
        "virtualMachineConfiguration",
        "resizeTimeout",
        "targetDedicatedNodes",
        "targetLowPriorityNodes",
        "maxTasksPerNode",
        "taskSlotsPerNode",
        "vmFillType",
        "enableAutoScale",
        "enableInterNodeCommunication",
        "isAutoPool",
    ]


def test_pool_create_event_defaults_cloud_service_and_pack() -> None:
    body = ev.pool_create_event(
        {
            "id": "p",
            "vmSize": "any",
            "maxTasksPerNode": 4,
            "cloudServiceConfiguration": {"osFamily": "4", "osVersion": "*"},
            "taskSchedulingPolicy": {"nodeFillType": "pack"},
            "enableAutoScale": True,
            "enableInterNodeCommunication": True,
        },
        is_auto_pool=True,
    )
    assert body["imageType"] == "CloudServiceConfiguration"
    assert body["cloudServiceConfiguration"] == {"osFamily": "4", "targetOsVersion": "*"}
    assert "displayName" not in body and "virtualMachineConfiguration" not in body
    assert body["resizeTimeout"] == "900000"  # Batch's default 15 minutes
    assert body["vmFillType"] == "Pack"
    assert (body["maxTasksPerNode"], body["taskSlotsPerNode"]) == (4, 4)
    assert body["targetDedicatedNodes"] == 0
    assert (body["enableAutoScale"], body["enableInterNodeCommunication"], body["isAutoPool"]) == (
        True,
        True,
        True,
    )
    # a self-hosted pool with no image at all reports the VM configuration image type
    assert (
        ev.pool_create_event({"id": "p", "vmSize": "any"})["imageType"]
        == "VirtualMachineConfiguration"
    )


def test_pool_delete_events() -> None:
    assert ev.pool_delete_start_event("myPool1") == {"id": "myPool1"}
    assert ev.pool_delete_start_event({"id": "myPool1", "vmSize": "x"}) == {"id": "myPool1"}
    assert ev.pool_delete_complete_event(
        {"id": "myPool1"},
        start_time="2016-09-09T22:13:48.579Z",
        end_time=datetime(2016, 9, 9, 22, 14, 8, 836000, tzinfo=UTC),
    ) == {
        "id": "myPool1",
        "startTime": "2016-09-09T22:13:48.579Z",
        "endTime": "2016-09-09T22:14:08.836Z",
    }


def test_pool_resize_start_event_growing_pool() -> None:
    pool = {
        "id": "myPool1",
        "vmSize": "any",
        "currentDedicatedNodes": 0,
        "targetDedicatedNodes": 2,
        "currentLowPriorityNodes": 0,
        "targetLowPriorityNodes": 2,
        "enableAutoScale": False,
    }
    assert ev.pool_resize_start_event(pool) == {
        "id": "myPool1",
        "nodeDeallocationOption": "invalid",  # growing: Batch reports "invalid"
        "currentDedicatedNodes": 0,
        "targetDedicatedNodes": 2,
        "currentLowPriorityNodes": 0,
        "targetLowPriorityNodes": 2,
        "enableAutoScale": False,
        "isAutoPool": False,
    }


def test_pool_resize_start_event_shrinking_pool() -> None:
    pool = {"id": "p", "currentDedicatedNodes": 3, "targetDedicatedNodes": 1}
    assert (
        ev.pool_resize_start_event(pool)["nodeDeallocationOption"] == "requeue"
    )  # Batch's default
    body = ev.pool_resize_start_event(pool, node_deallocation_option="taskcompletion")
    assert body["nodeDeallocationOption"] == "taskcompletion"


def test_pool_resize_complete_event_success() -> None:
    pool = {
        "id": "myPool",
        "currentDedicatedNodes": 10,
        "targetDedicatedNodes": 10,
        "currentLowPriorityNodes": 5,
        "targetLowPriorityNodes": 5,
        "enableAutoScale": False,
    }
    assert ev.pool_resize_complete_event(
        pool,
        start_time="2016-09-09T22:13:06.573Z",
        end_time="2016-09-09T22:14:01.727Z",
    ) == {
        "id": "myPool",
        "nodeDeallocationOption": "invalid",
        "currentDedicatedNodes": 10,
        "targetDedicatedNodes": 10,
        "currentLowPriorityNodes": 5,
        "targetLowPriorityNodes": 5,
        "enableAutoScale": False,
        "isAutoPool": False,
        "startTime": "2016-09-09T22:13:06.573Z",
        "endTime": "2016-09-09T22:14:01.727Z",
        "resultCode": "Success",
        "resultMessage": "The operation succeeded",
    }


def test_pool_resize_complete_event_failure_from_resize_errors() -> None:
    pool = {
        "id": "p",
        "currentDedicatedNodes": 1,
        "targetDedicatedNodes": 3,
        "resizeErrors": [
            {
                "code": "AllocationTimedout",
                "message": "Desired number of dedicated nodes could not be allocated",
            }
        ],
    }
    body = ev.pool_resize_complete_event(pool, start_time=T0, end_time=T1)
    assert (body["resultCode"], body["resultMessage"]) == (
        "AllocationTimedout",
        "Desired number of dedicated nodes could not be allocated",
    )
    body = ev.pool_resize_complete_event(
        pool, start_time=T0, end_time=T1, error={"code": "ResizeStopped", "message": "stopped"}
    )
    assert body["resultCode"] == "ResizeStopped"


def test_pool_autoscale_event() -> None:
    pool = {
        "id": "myPool1",
        "autoScaleFormula": "$TargetDedicatedNodes = 2;",
        "autoScaleRun": {
            "timestamp": "2020-09-21T18:59:56.204Z",
            "results": "$TargetDedicatedNodes=2;$NodeDeallocationOption=requeue",
            "error": {
                "code": "InsufficientSampleData",
                "message": "Autoscale evaluation failed due to insufficient sample data",
                "values": [{"name": "Message", "value": "Line 15, Col 44: ..."}],
            },
        },
    }
    assert ev.pool_autoscale_event(pool) == {
        "id": "myPool1",
        "timestamp": "2020-09-21T18:59:56.204Z",
        "formula": "$TargetDedicatedNodes = 2;",
        "results": "$TargetDedicatedNodes=2;$NodeDeallocationOption=requeue",
        "error": {
            "code": "InsufficientSampleData",
            "message": "Autoscale evaluation failed due to insufficient sample data",
            "values": [{"name": "Message", "value": "Line 15, Col 44: ..."}],
        },
    }
    ok = ev.pool_autoscale_event(pool, {"timestamp": T0, "results": "$TargetDedicatedNodes=2"})
    assert "error" not in ok and ok["timestamp"] == "2016-09-08T16:32:23.799Z"


# ------------------------------------------------------------------ task events


def _task(**execution: Any) -> dict[str, Any]:
    """A CloudTask as GET /jobs/myJob/tasks/myTask returns it."""
    return {
        "id": "myTask",
        "url": "https://account/jobs/myJob/tasks/myTask",
        "state": "running",
        "commandLine": "/bin/sh -c 'echo hi'",
        "requiredSlots": 1,
        "constraints": {
            "maxWallClockTime": "P10675199DT2H48M5.4775807S",
            "retentionTime": "P7D",
            "maxTaskRetryCount": 2,
        },
        "nodeInfo": {
            "affinityId": "TVM:tvm-257509324_1-20160908t162728z",
            "poolId": "pool-001",
            "nodeId": "tvm-257509324_1-20160908t162728z",
            "taskRootDirectory": "workitems/myJob/job-1/myTask",
        },
        "executionInfo": {"retryCount": 0, "requeueCount": 0, **execution},
    }


HEAD = {
    "jobId": "myJob",
    "id": "myTask",
    "taskType": "User",
    "systemTaskVersion": 0,
    "requiredSlots": 1,
    "nodeInfo": {"poolId": "pool-001", "nodeId": "tvm-257509324_1-20160908t162728z"},
    "multiInstanceSettings": {"numberOfInstances": 1},
    "constraints": {"maxTaskRetryCount": 2},
}


def test_task_start_event_matches_batch_sample() -> None:
    body = ev.task_start_event("myJob", _task(startTime="2016-09-08T16:32:23.799Z"))
    assert body == {**HEAD, "executionInfo": {"retryCount": 0}}
    assert list(body) == [*HEAD, "executionInfo"]
    body = ev.task_start_event(
        "myJob",
        _task(),
        task_type="JobManager",
        system_task_version=3,
        scheduled_time="2016-09-08T16:32:20Z",
    )
    assert body["taskType"] == "JobManager" and body["systemTaskVersion"] == 3
    assert body["executionInfo"] == {"retryCount": 0, "scheduledTime": "2016-09-08T16:32:20.000Z"}


def test_task_start_event_multi_instance_and_defaults() -> None:
    task = {
        "id": "mpi",
        "multiInstanceSettings": {"numberOfInstances": 3, "coordinationCommandLine": "true"},
        "nodeInfo": {"nodeId": "n1"},
        "executionInfo": {"retryCount": 1},
    }
    body = ev.task_start_event("j", task, pool_id="pool-9")
    assert body["multiInstanceSettings"] == {"numberOfInstances": 3}
    assert body["nodeInfo"] == {"poolId": "pool-9", "nodeId": "n1"}
    assert body["constraints"] == {"maxTaskRetryCount": 0}  # Batch's default
    assert body["requiredSlots"] == 1
    assert body["executionInfo"] == {"retryCount": 1}


def test_task_complete_event_matches_batch_sample() -> None:
    task = _task(
        startTime="2016-09-08T16:32:23.799Z",
        endTime="2016-09-08T16:34:00.666Z",
        exitCode=0,
        result="success",
    )
    assert ev.task_complete_event("myJob", task) == {
        **HEAD,
        "executionInfo": {
            "startTime": "2016-09-08T16:32:23.799Z",
            "endTime": "2016-09-08T16:34:00.666Z",
            "exitCode": 0,
            "retryCount": 0,
            "requeueCount": 0,
            "result": "Success",
            "schedulingError": {"category": "", "code": "", "message": "", "details": []},
        },
    }


def test_task_fail_event_matches_batch_sample() -> None:
    task = _task(
        startTime=T0,
        endTime=T1,
        exitCode=1,
        retryCount=2,
        result="failure",
        failureInfo={
            "category": "usererror",
            "code": "FailureExitCode",
            "message": "The task exited with an exit code representing a failure",
            "details": [{"name": "Message", "value": "exit 1"}],
        },
    )
    expected = {
        **HEAD,
        "executionInfo": {
            "startTime": "2016-09-08T16:32:23.799Z",
            "endTime": "2016-09-08T16:34:00.666Z",
            "exitCode": 1,
            "retryCount": 2,
            "requeueCount": 0,
            "result": "Failure",
            "schedulingError": {
                "category": "UserError",
                "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure",
                "details": [{"name": "Message", "value": "exit 1"}],
            },
        },
    }
    assert ev.task_fail_event("myJob", task) == expected
    # the task complete event of a failed task carries the same outcome
    assert ev.task_complete_event("myJob", task) == expected


def test_task_fail_event_without_failure_info_uses_batch_default() -> None:
    task = _task(startTime=T0, endTime=T1, exitCode=3)
    err = ev.task_fail_event("myJob", task)["executionInfo"]["schedulingError"]
    assert err == {
        "category": "UserError",
        "code": "FailureExitCode",
        "message": "The task exited with an exit code representing a failure",
        "details": [],
    }


def test_task_fail_event_server_error_without_exit_code() -> None:
    task = _task(
        startTime=T0,
        endTime=T1,
        result="failure",
        failureInfo={"category": "servererror", "code": "TaskEnded", "message": "node lost"},
    )
    execution = ev.task_fail_event("myJob", task)["executionInfo"]
    assert "exitCode" not in execution
    assert execution["schedulingError"]["category"] == "ServerError"


def test_task_requeue_event_matches_batch_sample() -> None:
    task = _task(
        startTime=T0,
        endTime=T1,
        exitCode=11,
        requeueCount=1,
        result="failure",
        failureInfo={
            "category": "usererror",
            "code": "BadCommandType",
            "message": "Task has invalid command",
            "details": [{"name": "Reason", "value": "Access denied"}],
        },
    )
    body = ev.task_requeue_event("myJob", task, system_task_version=3)
    assert body == {
        **HEAD,
        "systemTaskVersion": 3,
        "executionInfo": {
            "startTime": "2016-09-08T16:32:23.799Z",
            "endTime": "2016-09-08T16:34:00.666Z",
            "exitCode": 11,
            "retryCount": 0,
            "requeueCount": 1,
            "result": "failure",
            "schedulingError": {
                "category": "UserError",
                "code": "BadCommandType",
                "message": "Task has invalid command",
                "details": [{"name": "Reason", "value": "Access denied"}],
            },
        },
    }
    # requeued before it ran: only the counters
    bare = ev.task_requeue_event("myJob", _task(requeueCount=1))
    assert bare["executionInfo"] == {"retryCount": 0, "requeueCount": 1}


def test_task_schedule_fail_event_matches_batch_sample() -> None:
    task = {
        "id": "task-01",
        "requiredSlots": 1,
        "constraints": {"maxTaskRetryCount": 0},
        "state": "active",
        "executionInfo": {"retryCount": 0, "requeueCount": 0},
    }
    body = ev.task_schedule_fail_event(
        "job-01",
        task,
        pool_id="pool-01",
        system_task_version=665378862,
        error={
            "category": "usererror",
            "code": "JobPreparationTaskFailed",
            "message": "Task cannot run because the job preparation task failed on node",
        },
    )
    assert body == {
        "jobId": "job-01",
        "id": "task-01",
        "taskType": "User",
        "systemTaskVersion": 665378862,
        "requiredSlots": 1,
        "nodeInfo": {"poolId": "pool-01", "nodeId": ""},
        "multiInstanceSettings": {"numberOfInstances": 1},
        "constraints": {"maxTaskRetryCount": 0},
        "schedulingError": {
            "category": "UserError",
            "code": "JobPreparationTaskFailed",
            "message": "Task cannot run because the job preparation task failed on node",
        },
    }


def test_special_task_event_matches_batch_sample() -> None:
    info = {
        "startTime": "2020-06-30T01:47:56Z",
        "endTime": "2020-06-30T02:13:29Z",
        "exitCode": 0,
        "result": "success",
        "state": "completed",
        "retryCount": 0,
    }
    assert ev.special_task_event(
        "myJob",
        "jobprep-task-01",
        "JobPrep",
        pool_id="pool-001",
        node_id="tvm-257509324_1-20160908t162728z",
        execution_info=info,
    ) == {
        "jobId": "myJob",
        "taskName": "jobprep-task-01",
        "taskType": "JobPrep",
        "nodeInfo": {"poolId": "pool-001", "nodeId": "tvm-257509324_1-20160908t162728z"},
        "executionInfo": {
            "startTime": "2020-06-30T01:47:56.000Z",
            "endTime": "2020-06-30T02:13:29.000Z",
            "exitCode": 0,
            "result": "success",
            "schedulingError": {"details": []},
        },
    }
    failed = ev.special_task_event(
        None,
        "start",
        "StartTask",
        pool_id="p",
        node_id="n",
        execution_info={
            "startTime": T0,
            "endTime": T1,
            "exitCode": 2,
            "failureInfo": {
                "category": "usererror",
                "code": "FailureExitCode",
                "message": "exit 2",
            },
        },
    )
    assert failed["jobId"] == ""
    assert failed["executionInfo"]["result"] == "failure"
    assert failed["executionInfo"]["schedulingError"] == {
        "category": "UserError",
        "code": "FailureExitCode",
        "message": "exit 2",
        "details": [],
    }


def test_event_names() -> None:
    assert {ev.POOL_CREATE, ev.TASK_START, ev.TASK_COMPLETE, ev.TASK_FAIL} <= ev.EVENT_NAMES
    assert (
        ev.TASK_START == "TaskStartEvent" and ev.POOL_RESIZE_COMPLETE == "PoolResizeCompleteEvent"
    )


# -------------------------------------------------------------------- event log


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_emit_appends_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "events.jsonl"
    with EventLog(path) as log:
        body = ev.pool_delete_start_event("p1")
        record = log.emit(ev.POOL_DELETE_START, body, time=T0)
        log.emit(ev.TASK_START, ev.task_start_event("myJob", _task()))
    assert record == {
        "time": "2016-09-08T16:32:23.799Z",
        "name": "PoolDeleteStartEvent",
        "body": {"id": "p1"},
    }
    lines = _lines(path)
    assert lines[0] == record
    assert lines[1]["name"] == "TaskStartEvent" and lines[1]["body"]["jobId"] == "myJob"
    assert lines[1]["time"].endswith("Z")
    assert path.read_text().count("\n") == 2


def test_read_and_since(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    for i in range(5):
        log.emit(ev.POOL_DELETE_START, {"id": f"p{i}"})
    assert [e["body"]["id"] for e in log.read()] == ["p0", "p1", "p2", "p3", "p4"]
    assert [e["body"]["id"] for e in log.read(since=3)] == ["p3", "p4"]
    log.close()
    # a second EventLog on the same file appends and reads everything
    again = EventLog(tmp_path / "events.jsonl")
    again.emit(ev.POOL_DELETE_START, {"id": "p5"})
    assert len(again.read()) == 6
    again.close()


def test_read_skips_a_torn_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.emit(ev.POOL_DELETE_START, {"id": "a"})
    with open(path, "ab") as f:
        f.write(b'{"time": "2016-09-0')  # a crash in mid-write
    log.close()
    log = EventLog(path)
    with caplog.at_level(logging.WARNING):
        assert [e["body"]["id"] for e in log.read()] == ["a"]
    log.close()


def test_rotation_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=1000)
    for i in range(40):
        log.emit(ev.POOL_DELETE_START, {"id": f"pool-{i:03d}"})
    log.close()
    rotated = tmp_path / "events.jsonl.1"
    assert rotated.exists()
    assert path.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    ids = [e["body"]["id"] for e in log.read()]
    assert ids == [f"pool-{i:03d}" for i in range(40 - len(ids), 40)]  # newest kept, in order
    assert len(ids) < 40  # older files are dropped
    assert {"time", "name", "body"} == set(_lines(rotated)[0])


def test_emit_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=200_000)

    def work(n: int) -> None:
        for i in range(200):
            log.emit(ev.TASK_START, {"jobId": f"j{n}", "id": f"t{i}", "pad": "x" * 50})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    events = log.read()  # every line parses: no interleaved writes
    raw = path.read_bytes() + (tmp_path / "events.jsonl.1").read_bytes()
    assert raw.count(b"\n") == 1600
    assert len(events) == 1600
    for n in range(8):
        mine = [e["body"]["id"] for e in events if e["body"]["jobId"] == f"j{n}"]
        assert mine == sorted(mine, key=lambda s: int(s[1:]))  # each thread's order kept


def test_storage_mirror_is_batched(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "store")
    key = "insights-logs-servicelog/events.jsonl"
    log = EventLog(
        tmp_path / "events.jsonl", storage=storage, storage_key=key, flush_interval_s=3600
    )
    log.emit(ev.POOL_DELETE_START, {"id": "a"}, time=T0)
    log.emit(ev.POOL_DELETE_START, {"id": "b"}, time=T1)
    assert not storage.exists(key)  # buffered, not written per event
    assert log.flush() == 2
    assert storage.get_bytes(key) == (tmp_path / "events.jsonl").read_bytes()
    log.emit(ev.POOL_DELETE_START, {"id": "c"})
    assert log.flush() == 0  # flushed less than flush_interval_s ago
    assert log.flush(force=True) == 1
    log.emit(ev.POOL_DELETE_START, {"id": "d"})
    log.close()  # close flushes
    mirrored = [json.loads(line)["body"]["id"] for line in storage.get_bytes(key).splitlines()]
    assert mirrored == ["a", "b", "c", "d"]


class FlakyStorage(Storage):
    """Real local storage whose appends fail while ``down`` is set."""

    down = True

    def append_bytes(self, data: bytes, key: str, *, replace: bool = False) -> None:
        if self.down:
            raise OSError("storage account unreachable")
        super().append_bytes(data, key, replace=replace)


def test_storage_errors_never_reach_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = open_storage(tmp_path / "store")
    storage = FlakyStorage(real.fs, real.root, url=real.url)
    key = "logs/events.jsonl"
    log = EventLog(
        tmp_path / "events.jsonl", storage=storage, storage_key=key, flush_interval_s=0
    )
    log.emit(ev.POOL_DELETE_START, {"id": "a"})
    with caplog.at_level(logging.WARNING, logger="hpcbatch.batch.events"):
        assert log.flush() == 0
    assert "storage account unreachable" in caplog.text
    log.emit(ev.POOL_DELETE_START, {"id": "b"})
    storage.down = False
    assert log.flush() == 2  # kept for the next flush, in order
    assert [json.loads(line)["body"]["id"] for line in storage.get_bytes(key).splitlines()] == [
        "a",
        "b",
    ]
    log.close()


def test_storage_buffer_is_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    real = open_storage(tmp_path / "store")
    storage = FlakyStorage(real.fs, real.root, url=real.url)
    log = EventLog(
        tmp_path / "events.jsonl", storage=storage, storage_key="logs/e.jsonl", max_buffer_bytes=500
    )
    with caplog.at_level(logging.WARNING, logger="hpcbatch.batch.events"):
        for i in range(30):
            log.emit(ev.POOL_DELETE_START, {"id": f"p{i}"})
    assert "dropped" in caplog.text
    storage.down = False
    assert 0 < log.flush(force=True) < 30
    kept = [
        json.loads(line)["body"]["id"] for line in storage.get_bytes("logs/e.jsonl").splitlines()
    ]
    assert kept[-1] == "p29"  # the newest are kept
    assert len(log.read()) == 30  # the local file has everything
    log.close()


def test_storage_requires_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage_key"):
        EventLog(tmp_path / "e.jsonl", storage=open_storage(tmp_path / "store"))


def _collect(
    log: EventLog, count: int, **kwargs: Any
) -> tuple[list[dict[str, Any]], threading.Thread, threading.Event]:
    got: list[dict[str, Any]] = []
    stop = threading.Event()
    events = log.follow(poll_interval_s=0.01, stop=stop, **kwargs)  # from now on

    def run() -> None:
        for record in events:
            got.append(record)
            if len(got) >= count:
                stop.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return got, thread, stop


def test_follow_yields_new_events_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=1200)  # ~13 events per file: 4 rotations
    log.emit(ev.POOL_DELETE_START, {"id": "old"})
    got, thread, stop = _collect(log, 60)
    for i in range(60):
        log.emit(ev.POOL_DELETE_START, {"id": f"new-{i}"})
        if i % 4 == 3:
            threading.Event().wait(0.05)  # a follower polling every 10 ms keeps up
    thread.join(10)
    stop.set()
    assert (tmp_path / "events.jsonl.1").exists()
    assert [e["body"]["id"] for e in got] == [f"new-{i}" for i in range(60)]
    log.close()


def test_follow_survives_two_rotations_between_polls(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=400)  # 4 events of 87 bytes per file
    follower = log.follow(poll_interval_s=0.01)  # iterated in this thread: polls only on next()
    log.emit(ev.POOL_DELETE_START, {"id": "p-00"})
    assert next(follower)["body"]["id"] == "p-00"
    for i in range(1, 10):  # rotates twice while the follower is not looking
        log.emit(ev.POOL_DELETE_START, {"id": f"p-{i:02d}"})
    assert log.read()[0]["body"]["id"] == "p-04"  # path.1 is the middle file: p-00..03 are gone
    assert [next(follower)["body"]["id"] for _ in range(9)] == [f"p-{i:02d}" for i in range(1, 10)]
    log.close()


def test_follow_from_beginning_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    got, thread, stop = _collect(log, 3, from_beginning=True)  # the file does not exist yet
    for i in range(3):
        log.emit(ev.POOL_DELETE_START, {"id": f"p{i}"})
    thread.join(10)
    stop.set()
    assert [e["body"]["id"] for e in got] == ["p0", "p1", "p2"]

    got, thread, stop = _collect(log, 3, from_beginning=True)
    thread.join(10)
    stop.set()
    assert [e["body"]["id"] for e in got] == ["p0", "p1", "p2"]
    log.close()


def test_follow_stops_when_told(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.emit(ev.POOL_DELETE_START, {"id": "a"})
    stop = threading.Event()
    stop.set()
    assert list(log.follow(poll_interval_s=0.01, stop=stop)) == []
    log.close()
