"""The official azure-batch SDKs, pinned (15.1.0 and 14.2.0), drive hpcbatch over plain http.

Each test runs one scenario script (sdk15_scenarios.py / sdk14_scenarios.py)
in the SDK's own venv against a service on a 4-host sshd testbed, and checks
what the SDK observed: results, not just the absence of errors. The same
checks hold for both SDK major versions.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

SDKS = ["15", "14"]


def scenario(run_sdk: Any, major: str, name: str, timeout_s: float = 900) -> dict[str, Any]:
    run = run_sdk(major, f"sdk{major}_scenarios.py", name, timeout_s=timeout_s)
    assert run.returncode == 0 and run.result is not None, run.describe()
    return run.result


def assert_deleted(delete: dict[str, Any], major: str) -> None:
    """The pool answered ``deleting`` (or was gone at once), then 404 PoolNotFound."""
    if major == "15":  # begin_delete_pool: the poller's GETs, 200 while deleting, then 404
        assert delete["polls"][-1] == 404 and set(delete["polls"]) <= {200, 404}, delete
        assert delete["after_delete"] == "PoolNotFound"
    else:
        assert delete["states"][-1] == "PoolNotFound", delete
        assert set(delete["states"]) <= {"deleting", "PoolNotFound"}, delete
    assert delete["exists"] is False


@pytest.mark.parametrize("major", SDKS)
def test_pool_with_start_task_and_task_slots(run_sdk, major):
    r = scenario(run_sdk, major, "pool_start_task")
    assert r["create_status"] == 201
    assert {"Location", "ETag", "Last-Modified", "DataServiceId", "request-id"} <= \
        set(r["create_headers"])
    pool = r["pool"]
    assert pool["vm_size"] == "STANDARD_D2S_V3" and pool["state"] == "active"
    assert pool["task_slots_per_node"] == 2
    assert pool["image"] == "0001-com-ubuntu-server-jammy"  # Azure-only, accepted and kept
    assert pool["node_agent"] == "batch.node.ubuntu 22.04"
    assert pool["metadata"] == {"owner": "compat"}
    assert pool["e_tag"].startswith("0x")
    assert datetime.fromisoformat(pool["creation_time"]).tzinfo is not None
    assert len(r["nodes"]) == 2
    for node in r["nodes"]:
        assert node["state"] == "idle"
        assert (node["start_task_state"], node["start_task_exit_code"],
                node["start_task_result"]) == ("completed", 0, "success")
    assert len(r["tasks"]) == 4
    for task in r["tasks"].values():
        assert (task["state"], task["exit_code"]) == ("completed", 0)
        # the start task ran on the task's own node before it
        assert task["stdout"] == f"started-on-{task['node']}\n"
    # taskSlotsPerNode 2, spread: two 3-second tasks ran at once on each node
    assert r["max_overlap_per_node"] == {n["id"]: 2 for n in r["nodes"]}
    # task and node files: list, ranged download, properties (HEAD)
    files = r["files"]
    assert {"stdout.txt", "stderr.txt", "wd"} <= set(files["names"])
    assert files["range"] == "started"  # ocp-range bytes=0-6
    assert files["content_length"] == len(r["tasks"]["t0"]["stdout"])
    assert files["is_directory"] in (False, "false")
    assert files["url"].endswith(f"/jobs/sdk{major}-st-job/tasks/t0/files/stdout.txt")
    assert {"startup/stdout.txt", "startup/stderr.txt"} <= set(files["node_startup"])
    assert files["node_file"] == f"started-on-{r['nodes'][0]['id']}\n"
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_job_preparation_and_release_tasks(run_sdk, major):
    r = scenario(run_sdk, major, "job_prep_release")
    nodes = {s["node"] for s in r["status"]}
    assert len(nodes) == 2
    # every task read the file its node's preparation task wrote
    assert len(r["stdout"]) == 4
    assert set(r["stdout"].values()) <= {f"prepared-{n}\n" for n in nodes}
    for s in r["status"]:
        assert (s["prep_state"], s["prep_exit_code"]) == ("completed", 0)
        assert (s["release_state"], s["release_exit_code"]) == ("completed", 0)
        assert s["pool"].endswith("-pr")
    job = r["job"]
    assert job["state"] == "completed" and job["terminate_reason"] == "compat-done"
    assert job["end_time"] and "prep-$AZ_BATCH_JOB_ID" in job["prep_command"]
    assert r["job_after_delete"] == "JobNotFound"
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_create_tasks_of_1000_and_request_body_too_large(run_sdk, major):
    r = scenario(run_sdk, major, "tasks_1000")
    assert r["added"] == 1000 and r["add_statuses"] == ["success"]
    # the SDK sends chunks of 100 tasks: ten addtaskcollection requests
    assert r["collection_calls"] == [200] * 10
    # 100 tasks of 12 KB each exceed 1 MB: 413 RequestBodyTooLarge, the SDK halves the chunk
    assert r["big_added"] == 150
    assert r["big_calls"][0] == 413 and r["big_calls"][1:] == [200, 200, 200]
    assert r["halvings_logged"] == 1
    assert r["big_stdout"] == "12000\n"  # the 12,000-character variable reached the task
    # list_tasks pages through odata.nextLink: 1,150 tasks, 100 a page, $select honoured
    assert r["listed"] == r["listed_unique"] == 1150
    assert r["list_pages"] == 12
    assert r["selected_has_command_line"] is False
    # $filter on executionInfo/exitCode
    assert r["failed_ids"] == [f"task{i:04d}" for i in range(7, 1000, 100)]
    assert r["failed_exit_codes"] == [3]
    assert r["big_selected"] == 150 and r["big_selected_states"] == ["completed"]
    assert r["counts"] == {"completed": 1150, "succeeded": 1140, "failed": 10}
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_multi_instance_mpi_task_and_subtasks(run_sdk, major):
    r = scenario(run_sdk, major, "multi_instance")
    task = r["task"]
    assert (task["state"], task["exit_code"], task["result"]) == ("completed", 0, "success")
    assert task["instances"] == 4
    ranks = [json.loads(line) for line in r["stdout"].splitlines() if line.startswith("{")]
    assert sorted(x["rank"] for x in ranks) == [0, 1, 2, 3]
    assert all(x["size"] == 4 and x["sum"] == 1 + 2 + 3 + 4 for x in ranks)
    node_of = {addr: node for node, addr in r["nodes"].items()}
    assert {node_of[x["address"]] for x in ranks} == set(r["nodes"])  # one rank per node
    subs = r["subtasks"]
    assert [s["id"] for s in subs] == [1, 2, 3]
    assert all((s["state"], s["result"]) == ("completed", "success") for s in subs)
    assert {s["node"] for s in subs} | {task["node"]} == set(r["nodes"])
    # each subtask's coordination command wrote its stdout.txt on its own node
    assert all(s["stdout"] == f"coordinated {s['node']}\n" for s in subs), subs
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_autoscale_evaluate_enable_disable(run_sdk, major):
    r = scenario(run_sdk, major, "autoscale")
    assert r["first_run"]["results"].startswith("$TargetDedicatedNodes=0;")
    ev = r["evaluate"]
    assert ev["error"] is None
    assert "$TargetDedicatedNodes=2" in ev["results"]
    assert "$NodeDeallocationOption=taskcompletion" in ev["results"]
    assert datetime.fromisoformat(ev["timestamp"]).tzinfo is not None
    assert r["bad_formula"]["status"] == 400
    grown = r["grown"]
    assert (grown["current"], grown["target"]) == (1, 1)
    assert grown["interval_s"] == 10 and grown["formula"] == "$TargetDedicatedNodes = 1;"
    assert grown["last_results"].startswith("$TargetDedicatedNodes=1;")
    assert r["disabled"] == {"enable_auto_scale": False, "target": 1}
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_resize_reboot_terminate_delete(run_sdk, major):
    r = scenario(run_sdk, major, "lifecycle")
    assert r["resized"] == {"current": 1, "target": 1, "allocation_state": "steady"}
    assert r["rebooted"] == {"state": "idle", "last_boot_time_changed": True}
    # disable requeues the running task; enable runs it again
    assert r["disabled"] == {"job": "disabled", "task": "active"}
    assert r["enabled"] == {"job": "active", "requeues": 1}
    assert r["stale_etag"] == {"status": 412, "code": "ConditionNotMet"}
    assert r["job"] == {"state": "completed", "reason": "compat-stop"}
    assert r["task"] == {"state": "completed", "result": "failure", "failure": "TaskEnded"}
    assert r["terminate_s"] < 60
    assert r["job_exists_after_delete"] is False
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_job_schedule(run_sdk, major):
    r = scenario(run_sdk, major, "job_schedule")
    assert r["create_status"] == 201
    job = f"sdk{major}-sched:job-1"  # Batch names a schedule's jobs {scheduleId}:job-{n}
    assert r["jobs"] == [job] and r["recent_job"] == job and r["job_priority"] == 5
    assert r["state"] == "active" and r["recurrence_s"] == 3600
    assert (r["disabled"], r["enabled"]) == ("disabled", "active")
    assert r["listed"] == [f"sdk{major}-sched"]
    assert r["terminated"] == "completed" and r["end_time"]
    assert r["job_after_terminate"] == {"state": "completed", "reason": "TerminateJobSchedule"}
    assert r["after_delete"] == "JobScheduleNotFound"


@pytest.fixture(scope="module")
def updates(run_sdk):
    """The "updates" scenario's result per SDK version, run once for the tests below."""
    results: dict[str, dict[str, Any]] = {}

    def get(major: str) -> dict[str, Any]:
        if major not in results:
            results[major] = scenario(run_sdk, major, "updates")
        return results[major]
    return get


@pytest.mark.parametrize("major", SDKS)
def test_job_update_and_replace(updates, major):
    r = updates(major)
    assert r["patched_priority"] == 10  # PATCH changes what it names
    assert r["replaced_priority"] == 0  # PUT resets what it leaves out
    assert_deleted(r["delete"], major)


@pytest.mark.parametrize("major", SDKS)
def test_pool_update(updates, major):
    assert updates(major)["pool_update"] == {"stage": "two"}


@pytest.mark.parametrize("major", SDKS)
def test_task_with_named_user_identity(updates, major):
    assert updates(major)["named_user"] == "batchuser"


@pytest.mark.parametrize("major", SDKS)
def test_wire_headers_errors_paging_and_conditions(run_sdk, major):
    r = scenario(run_sdk, major, "wire")
    create = r["create"]
    assert create["status"] == 201
    assert create["location"].endswith(f"/pools/sdk{major}-w2")
    assert create["dataserviceid"] == create["location"] and create["etag"].startswith("0x")
    get = r["get"]
    assert get["status"] == 200
    assert get["etag_header"] == get["etag_body"]
    assert get["last_modified"].endswith(" GMT")
    assert get["content_type"] == "application/json;odata=minimalmetadata"
    assert get["request_id"] is True
    assert get["client_request_id_echo"] == get["client_request_id_sent"]
    assert r["paging"] == {"ids": [f"sdk{major}-w{i}" for i in range(3)], "requests": 3}
    assert r["select"] == {"id": f"sdk{major}-w0", "state": "active", "vm_size": None}
    assert r["expand"] == 1
    assert r["if_none_match"] == 304
    assert r["if_none_match_other"] == f"sdk{major}-w0"
    assert r["stale_delete"]["status"] == 412
    assert r["stale_delete"]["code"] == "ConditionNotMet"
    expected = {"not_found": (404, "PoolNotFound", "ResourceNotFoundError"),
                "exists": (409, "PoolExists", "ResourceExistsError"),
                "bad_id": (400, "InvalidPropertyValue", "HttpResponseError"),
                "unknown_job": (404, "JobNotFound", "ResourceNotFoundError"),
                "unsupported": (400, "FeatureNotSupported", "HttpResponseError")}
    for name, (status, code, type15) in expected.items():
        err = r[name]
        assert (err["status"], err["code"]) == (status, code), (name, err)
        assert err["type"] == (type15 if major == "15" else "BatchErrorException")
        assert "\nRequestId:" in err["message"]
    assert r["not_found"]["details"] == {"PoolId": f"sdk{major}-nope"}
    assert r["bad_id"]["details"]["PropertyName"] == "id"
    assert "not supported by hpcbatch" in r["unsupported"]["message"]
    assert r["pool_exists"] == [True, False]
    assert r["node_counts"] == {f"sdk{major}-w{i}": 0 for i in range(3)}
    assert r["delete_status"] == 202
    assert r["exist_after"] == [False, False, False]


@pytest.mark.parametrize("major", SDKS)
def test_statistics_and_usage_metrics(run_sdk, major):
    """$expand=stats on a job and its pool and pool usage metrics, through the SDK: the numbers
    agree with the tasks that ran (sleeps 1, 2 and twice 1 s; exit codes 0, 0, 3 with a retry)."""
    r = scenario(run_sdk, major, "statistics")
    assert r["plain"] is True  # no stats without $expand
    job = r["job"]
    assert (job["succeeded"], job["failed"], job["retries"]) == (2, 1, 1)
    assert job["wall_s"] >= 1 + 2 + 1 + 1
    assert job["wait_s"] >= 0 and job["url"].endswith("-stats-job/stats")
    assert r["listed"] == [2]
    # One node, one task slot: the node's core time covers every run.
    assert r["pool_core_s"] >= job["wall_s"]
    assert 0 <= r["pool_cpu_pct"] <= 100
    assert r["metrics"], "no usage metrics for the pool"
    assert {m["pool"] for m in r["metrics"]} == {f"sdk{major}-stats"}
    assert all(m["span_s"] == 1800 and m["hours"] > 0 for m in r["metrics"])
    assert {m["vm"] for m in r["metrics"]} == {r["pool_vm_size"]}


@pytest.mark.parametrize("major", SDKS)
def test_a_script_written_for_azure_runs_unmodified(run_sdk, major):
    """The Azure quickstart, as a new user writes it: only endpoint, account and key differ."""
    run = run_sdk(major, f"azure_quickstart_{major}.py", timeout_s=600)
    assert run.returncode == 0, run.describe()
    out = run.stdout
    assert "Success! All tasks reached the 'Completed' state" in out, run.describe()
    for i, word in enumerate(["alpha", "beta", "gamma"]):
        assert f"Hello {word} from task Task{i}" in out, run.describe()
    assert out.count("Standard output:") == 3


def test_job_with_an_auto_pool(run_sdk):
    r = scenario(run_sdk, "15", "auto_pool")
    assert r["pool_id"].startswith("sdkauto_") and len(r["pool_id"]) == len("sdkauto_") + 36
    assert r["pool_info_pool_id"] is None and r["lifetime"] == "job"
    assert r["pool"] == {"target": 2, "slots": 2, "vm_size": "STANDARD_D2S_V3"}
    assert r["tasks"] == [["completed", 0]] * 4
    assert r["stdout"] == [r["pool_id"]]  # every task ran on the auto pool
    assert r["exists_after"] is False  # deleted with its job
    assert r["error"] is not None
    assert (r["error"]["category"], r["error"]["code"]) == ("usererror", "InsufficientInventory")
    assert "standard_nowhere" in r["error"]["message"]
