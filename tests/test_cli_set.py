"""``hpcbatch pool set`` and ``hpcbatch job set`` ("Pool - Patch", "Job - Patch") against an
in-process service (:class:`hpcbatch.LocalBatch`, no nodes needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hpcbatch import LocalBatch
from tests.test_cli_more import run, run_json


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cliset")
    lb = LocalBatch(nodes=1, storage_url=f"file://{root}/storage")
    with lb as client:
        key = json.loads((lb.state_dir / "account.json").read_text())["key"]
        env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
               "AZURE_BATCH_ACCESS_KEY": key}
        run(env, "pool", "create", "--id", "sp", "--target-dedicated-nodes", "0")
        run(env, "job", "create", "--id", "sj", "--pool-id", "sp")
        yield env


def test_pool_set_changes_only_what_is_given(env) -> None:
    pool = run_json(env, "pool", "set", "--pool-id", "sp", "--start-task-command-line",
                    "echo hi", "--no-start-task-wait-for-success",
                    "--start-task-environment-settings", "A=1", "--metadata", "owner=me",
                    "--metadata", "team=hpc")
    assert pool["startTask"]["commandLine"] == "echo hi"
    assert pool["startTask"]["waitForSuccess"] is False
    assert pool["startTask"]["environmentSettings"] == [{"name": "A", "value": "1"}]
    assert pool["metadata"] == [{"name": "owner", "value": "me"}, {"name": "team", "value": "hpc"}]
    pool = run_json(env, "pool", "set", "--pool-id", "sp", "--metadata", "owner=you")
    assert pool["metadata"] == [{"name": "owner", "value": "you"}]
    assert pool["startTask"]["commandLine"] == "echo hi"  # untouched
    table = run(env, "pool", "set", "--pool-id", "sp", "--target-node-communication-mode",
                "simplified")
    assert "targetNodeCommunicationMode" in table.stderr and "simplified" in table.stdout
    assert run_json(env, "pool", "show", "--pool-id", "sp")["metadata"] == [
        {"name": "owner", "value": "you"}]


def test_pool_set_errors_name_the_field(env, tmp_path) -> None:
    out = run(env, "pool", "set", "--pool-id", "sp", code=2)
    assert "--json-file or at least one property" in out.stderr
    out = run(env, "pool", "set", "--pool-id", "sp", "--start-task-max-task-retry-count", "2",
              code=2)
    assert "--start-task-command-line" in out.stderr
    out = run(env, "pool", "set", "--pool-id", "sp", "--metadata", "novalue", code=2)
    assert "NAME=VALUE" in out.stderr
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"vmSize": "other"}))
    out = run(env, "pool", "set", "--pool-id", "sp", "--json-file", str(patch), code=1)
    assert "vmSize" in out.stderr and "error:" in out.stderr
    out = run(env, "pool", "set", "--pool-id", "nopool", "--metadata", "a=b", code=1)
    assert "PoolNotFound" in out.stderr
    patch.write_text(json.dumps({"metadata": [{"name": "fromfile", "value": "1"}]}))
    out = run(env, "pool", "set", "--pool-id", "sp", "--json-file", str(patch), "--metadata",
              "a=b", code=2)
    assert "cannot be combined" in out.stderr
    pool = run_json(env, "pool", "set", "--pool-id", "sp", "--json-file", str(patch))
    assert pool["metadata"] == [{"name": "fromfile", "value": "1"}]


def test_job_set(env) -> None:
    job = run_json(env, "job", "set", "--job-id", "sj", "--priority", "100",
                   "--max-parallel-tasks", "3", "--metadata", "k=v",
                   "--job-max-task-retry-count", "2", "--job-max-wall-clock-time", "PT1H")
    assert job["priority"] == 100
    assert job["maxParallelTasks"] == 3
    assert job["metadata"] == [{"name": "k", "value": "v"}]
    assert job["constraints"]["maxTaskRetryCount"] == 2
    assert job["constraints"]["maxWallClockTime"] == "PT1H"
    job = run_json(env, "job", "set", "--job-id", "sj", "--priority", "-5")
    assert job["priority"] == -5 and job["maxParallelTasks"] == 3
    # a job without tasks whose onAllTasksComplete becomes terminatejob ends (Batch)
    run(env, "job", "create", "--id", "sj2", "--pool-id", "sp")
    job = run_json(env, "job", "set", "--job-id", "sj2", "--on-all-tasks-complete",
                   "terminatejob")
    assert job["onAllTasksComplete"] == "terminatejob"


def test_job_set_errors_name_the_field(env) -> None:
    out = run(env, "job", "set", "--job-id", "sj", "--priority", "5000", code=2)
    assert "--priority" in out.stderr
    out = run(env, "job", "set", "--job-id", "sj", "--on-all-tasks-complete", "later", code=2)
    assert "--on-all-tasks-complete" in out.stderr and "terminatejob" in out.stderr
    out = run(env, "job", "set", "--job-id", "sj", "--job-max-wall-clock-time", "1 hour", code=2)
    assert "ISO 8601" in out.stderr
    out = run(env, "job", "set", "--job-id", "nojob", "--priority", "1", code=1)
    assert "JobNotFound" in out.stderr
    out = run(env, "job", "set", "--job-id", "sj", "--max-parallel-tasks", "0", code=1)
    assert "maxParallelTasks" in out.stderr
