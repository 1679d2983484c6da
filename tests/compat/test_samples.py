"""Microsoft's published Python Batch samples, as written for azure-batch 8.x (with the legacy
azure-storage-blob 1.x ``BlockBlobService``) and 11.x (with azure-storage-blob 12.x), and
ported to 15.x's track-2 API (``BatchClient``), run against hpcbatch with an Azurite storage
account.

Each script (``azure_samples_8.py``, ``azure_samples_11.py``, ``azure_samples_15.py``) runs
in its SDK's own venv (``conftest.ensure_sdk_venv``): it picks the latest verified
Ubuntu/Debian image with "Account - List Supported Images", uploads its inputs and a
coordination script to an Azurite container, creates a pool with a start task, a job with
tasks whose resource files are blob SAS URLs and whose outputs go to a container SAS URL, and
a multi-instance MPI task whose coordination script comes from ``commonResourceFiles``
without ``fileMode``; waits; downloads the outputs from the container; deletes everything.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

SAMPLES = ["15", "14", "11", "8"]
SCRIPT = {"8": "8", "11": "11", "14": "11", "15": "15"}
"""The script each SDK major version runs: 14.x keeps 11.x's track-1 API (``BatchServiceClient``,
``batchmodels``), so Microsoft's samples written for 11.x run on it unmodified; 15.x is track 2
(``BatchClient``, ``azure.batch.models``), so it runs the same flow ported to that API."""



def run_sample(run_sdk: Any, azurite_storage: str, major: str, name: str) -> dict[str, Any]:
    run = run_sdk(major, f"azure_samples_{SCRIPT[major]}.py", name, timeout_s=900,
                  prefix=f"samples{major}",
                  env_extra={"COMPAT_STORAGE_CONNECTION_STRING": azurite_storage})
    assert run.returncode == 0 and run.result is not None, run.describe()
    return run.result


@pytest.mark.parametrize("major", SAMPLES)
def test_sample_with_storage_start_task_outputs_and_mpi(run_sdk, azurite_storage, major):
    r = run_sample(run_sdk, azurite_storage, major, "sample")
    # the image the helper picked is the testbed hosts' OS, as List Supported Images says
    image = r["image"]
    assert image["publisher"] in ("canonical", "debian")
    assert image["node_agent_sku_id"].startswith(("batch.node.ubuntu", "batch.node.debian"))
    # the start task ran and succeeded on both nodes before their tasks
    assert len(r["nodes"]) == 2
    for node in r["nodes"].values():
        assert (node["start_task"], node["start_task_exit_code"]) == ("completed", 0), r
    tasks = r["tasks"]
    assert set(tasks) == {"Task0", "Task1", "Task2", "MpiTask"}
    for task_id, task in tasks.items():
        assert (task["state"], task["exit_code"], task["result"]) == \
            ("completed", 0, "success"), (task_id, task)
    # each task read its input from a blob SAS URL and uploaded its output to the container
    words = {"taskdata0.txt": 4, "taskdata1.txt": 5, "taskdata2.txt": 2}
    for name, count in words.items():
        assert r["outputs"][f"{name}.wc"] == f"ready\n{count}\n", r["outputs"]
    # the MPI task: ranks on both nodes; the coordination script (commonResourceFiles,
    # no fileMode, run directly) ran on every node, the primary's output says so
    mpi = r["outputs"]["mpi.out"]
    ranks = [json.loads(line) for line in mpi.splitlines() if line.startswith("{")]
    assert sorted(x["rank"] for x in ranks) == [0, 1]
    assert all(x["size"] == 2 for x in ranks)
    assert any(line.startswith("coordinated ") for line in mpi.splitlines()), mpi
    assert [(s["id"], s["state"], s["exit_code"]) for s in r["subtasks"]] == \
        [(1, "completed", 0)]
    # cleaned up: the script deleted its containers
    assert f"samples{major}-input" not in r["containers_after"]
    assert f"samples{major}-output" not in r["containers_after"]


@pytest.mark.parametrize("major", SAMPLES)
def test_sample_job_on_an_auto_pool(run_sdk, azurite_storage, compat_service, major):
    r = run_sample(run_sdk, azurite_storage, major, "auto_pool")
    assert (r["task"]["state"], r["task"]["exit_code"]) == ("completed", 0)
    assert r["stdout"] == "ready\n"
    assert r["pool_id"].startswith(f"samples{major}-auto")
    # terminatejob set by PATCH after the tasks completed ends the job at once
    assert r["job_state"] in ("terminating", "completed")
    # poolLifetimeOption job: the pool went with the job
    assert r["pool_id"] not in {p.id for p in compat_service.client.list_pools()}
