"""The ``hpcbatch`` command line, driven by click's CliRunner against a real service.

Most tests share one in-process service (:class:`hpcbatch.LocalBatch`, 2 local
nodes) found through ``AZURE_BATCH_ENDPOINT``/``ACCOUNT``/``ACCESS_KEY``; the
``service`` tests start a detached service of their own in a temporary state dir.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from hpcbatch import LocalBatch
from hpcbatch.client.cli import cli

NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None, "HPCBATCH_STATE_DIR": None}


def run(env: dict[str, Any] | None, *args: str, code: int | None = 0) -> Result:
    """Invoke ``hpcbatch *args``; check the exit code (unless ``code`` is None)."""
    result = CliRunner(env={**NO_SERVICE_ENV, **(env or {})}).invoke(
        cli, list(args), prog_name="hpcbatch", catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (
            f"hpcbatch {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def run_json(env: dict[str, Any] | None, *args: str, code: int = 0) -> Any:
    return json.loads(run(env, *args, "-o", "json", code=code).stdout)


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[dict[str, str], LocalBatch]]:
    """An in-process service with 2 local nodes; yields the runner env and the LocalBatch."""
    lb = LocalBatch(nodes=2)
    client = lb.__enter__()
    try:
        key = json.loads((lb.state_dir / "account.json").read_text())["key"]
        yield ({"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
                "AZURE_BATCH_ACCESS_KEY": key}, lb)
    finally:
        lb.__exit__(None, None, None)


@pytest.fixture(scope="module")
def env(service: tuple[dict[str, str], LocalBatch]) -> dict[str, str]:
    return service[0]


@pytest.fixture(scope="module")
def pool(env: dict[str, str]) -> str:
    """A 2-node pool ``clipool``, created and waited for through the CLI."""
    run(env, "pool", "create", "--id", "clipool", "--vm-size", "any",
        "--target-dedicated-nodes", "2", "--task-slots-per-node", "2")
    nodes = run_json(env, "pool", "wait", "--pool-id", "clipool", "--timeout-s", "120")
    assert sorted(n["state"] for n in nodes) == ["idle", "idle"]
    return "clipool"


# ------------------------------------------------------------- without a service


def test_help_of_every_command() -> None:
    def walk(group: click.Group, path: list[str]) -> Iterator[list[str]]:
        for name, cmd in group.commands.items():
            yield [*path, name]
            if isinstance(cmd, click.Group):
                yield from walk(cmd, [*path, name])

    for path in walk(cli, []):
        result = run(None, *path, "--help")
        assert "Usage: hpcbatch" in result.stdout, path


def test_no_service_is_a_clear_error(tmp_path: Path) -> None:
    result = run(None, "--state-dir", str(tmp_path), "pool", "list", code=1)
    assert result.stderr.startswith("error: ServiceUnavailable: ")
    assert "Traceback" not in result.output


def test_invalid_json_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "tasks.json"
    bad.write_text('[{"id": "a",\n  "commandLine": "echo"\n  "x": 1}]')
    result = run(None, "task", "create", "--job-id", "j", "--json-file", str(bad), code=2)
    assert str(bad) in result.stderr and "line 3" in result.stderr


def test_usage_errors() -> None:
    result = run(None, "task", "create", "--job-id", "j", "--json-file", "x.json",
                 "--task-id", "t", code=2)
    assert "cannot be combined with --task-id" in result.stderr
    result = run(None, "task", "create", "--job-id", "j", "--task-id", "t", code=2)
    assert "--command-line" in result.stderr
    run(None, "task", "create", "--job-id", "j", "--task-id", "t", "--command-line", "x",
        "--env", "NOEQUALS", code=2)
    run(None, "task", "create", "--job-id", "j", "--task-id", "t", "--command-line", "x",
        "--max-wall-clock-time", "soon", code=2)
    run(None, "pool", "create", "--vm-size", "any", code=2)
    run(None, "pool", "show", code=2)
    run(None, "--output", "yaml", "pool", "list", code=2)


# ----------------------------------------------------------------- with a service


def test_pool_list_show_and_nodes(env: dict[str, str], pool: str) -> None:
    pools = run_json(env, "pool", "list")
    mine = next(p for p in pools if p["id"] == pool)
    assert mine["currentDedicatedNodes"] == 2 and mine["taskSlotsPerNode"] == 2
    assert run_json(env, "pool", "show", "--pool-id", pool)["allocationState"] == "steady"
    table = run(env, "pool", "list").stdout
    assert pool in table and "2/2" in table
    nodes = run_json(env, "node", "list", "--pool-id", pool)
    assert len(nodes) == 2
    node = run_json(env, "node", "show", "--pool-id", pool, "--node-id", nodes[0]["id"])
    assert node["id"] == nodes[0]["id"]
    one = run_json(env, "node", "list", "--pool-id", pool, "--filter", f"id eq '{node['id']}'")
    assert [n["id"] for n in one] == [node["id"]]
    assert run_json(env, "pool", "list", "--filter", f"id eq '{pool}' and currentDedicatedNodes eq 3") == []
    # The group's --output applies to every command.
    assert json.loads(run(env, "--output", "json", "node", "list", "--pool-id", pool).stdout)


def test_tasks_end_to_end(env: dict[str, str], pool: str, tmp_path: Path) -> None:
    run(env, "job", "create", "--id", "clijob", "--pool-id", pool, "--priority", "10")
    job = run_json(env, "job", "show", "--job-id", "clijob")
    assert job["poolInfo"] == {"poolId": pool} and job["priority"] == 10
    tasks = [{"id": f"t{i}", "commandLine": f"echo hello-{i}"} for i in range(5)]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    run(env, "task", "create", "--job-id", "clijob", "--json-file", str(tmp_path / "tasks.json"))

    result = run(env, "task", "wait", "--job-id", "clijob", "--timeout-s", "120")
    assert "5 succeeded, 0 failed" in result.stdout

    listed = run_json(env, "task", "list", "--job-id", "clijob")
    assert sorted(t["id"] for t in listed) == [f"t{i}" for i in range(5)]
    assert all(t["state"] == "completed" and t["executionInfo"]["exitCode"] == 0
               for t in listed)
    selected = run_json(env, "task", "list", "--job-id", "clijob", "--select", "id,state",
                        "--filter", "state eq 'completed'")
    assert all(set(t) == {"id", "state"} for t in selected) and len(selected) == 5
    assert "t3" in run(env, "task", "list", "--job-id", "clijob").stdout

    out = run(env, "task", "file", "download", "--job-id", "clijob", "--task-id", "t3",
              "--file-path", "stdout.txt", "--destination", "-")
    assert out.stdout == "hello-3\n"
    dest = tmp_path / "new" / "t1.txt"  # the missing folder is made
    run(env, "task", "file", "download", "--job-id", "clijob", "--task-id", "t1",
        "--file-path", "stdout.txt", "--destination", str(dest))
    assert dest.read_text() == "hello-1\n"
    blocked = tmp_path / "new" / "t1.txt" / "x"  # a file where a folder would go
    result = run(env, "task", "file", "download", "--job-id", "clijob", "--task-id", "t1",
                 "--file-path", "stdout.txt", "--destination", str(blocked), code=1)
    assert result.stderr.startswith(f"error: cannot use {dest}: ")
    files = run_json(env, "task", "file", "list", "--job-id", "clijob", "--task-id", "t1")
    assert {"stdout.txt", "stderr.txt"} <= {f["name"] for f in files}

    counts = run_json(env, "job", "task-counts", "--job-id", "clijob")
    assert counts["completed"] == counts["succeeded"] == 5
    assert "clijob" in {j["id"] for j in run_json(env, "job", "list")}


def test_failing_task(env: dict[str, str], pool: str) -> None:
    run(env, "job", "create", "--id", "failjob", "--pool-id", pool)
    run(env, "task", "create", "--job-id", "failjob", "--task-id", "bad",
        "--command-line", "/bin/sh -c 'echo $GREETING; exit 3'", "--env", "GREETING=hi",
        "--max-wall-clock-time", "PT5M", "--max-task-retry-count", "0")
    counts = run_json(env, "task", "wait", "--job-id", "failjob", "--timeout-s", "120", code=1)
    assert counts["failed"] == 1
    task = run_json(env, "task", "show", "--job-id", "failjob", "--task-id", "bad")
    assert task["executionInfo"]["exitCode"] == 3
    assert task["executionInfo"]["result"] == "failure"
    assert task["executionInfo"]["failureInfo"]["code"] == "FailureExitCode"
    assert task["constraints"]["maxWallClockTime"] == "PT5M"
    assert "FailureExitCode" in run(env, "task", "show", "--job-id", "failjob",
                                    "--task-id", "bad").stdout
    out = run(env, "task", "file", "download", "--job-id", "failjob", "--task-id", "bad",
              "--file-path", "stdout.txt", "--destination", "-")
    assert out.stdout == "hi\n"
    result = run(env, "task", "wait", "--job-id", "failjob", code=1)
    assert "1 failed" in result.stdout


def test_wait_timeout_terminate_and_delete(env: dict[str, str], pool: str) -> None:
    run(env, "job", "create", "--id", "slowjob", "--pool-id", pool)
    run(env, "task", "create", "--job-id", "slowjob", "--task-id", "sleeper",
        "--command-line", "sleep 60")
    result = run(env, "task", "wait", "--job-id", "slowjob", "--timeout-s", "0.5", code=2)
    assert "error: Timeout:" in result.stderr
    run(env, "task", "terminate", "--job-id", "slowjob", "--task-id", "sleeper")
    run_json(env, "task", "wait", "--job-id", "slowjob", "--timeout-s", "60", code=1)
    run(env, "task", "delete", "--job-id", "slowjob", "--task-id", "sleeper", "--yes")
    run(env, "task", "show", "--job-id", "slowjob", "--task-id", "sleeper", code=1)
    run(env, "job", "terminate", "--job-id", "slowjob", "--reason", "done")
    run(env, "job", "delete", "--job-id", "slowjob", code=1)  # no --yes, no confirmation
    run(env, "job", "delete", "--job-id", "slowjob", "--yes")


def test_task_collection_reports_rejected_tasks(env: dict[str, str], pool: str,
                                                tmp_path: Path) -> None:
    run(env, "job", "create", "--id", "dupjob", "--pool-id", pool)
    run(env, "task", "create", "--job-id", "dupjob", "--task-id", "a", "--command-line", "true")
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"value": [{"id": "a", "commandLine": "true"},
                                          {"id": "b", "commandLine": "true"}]}))
    results = run_json(env, "task", "create", "--job-id", "dupjob", "--json-file", str(file),
                       code=1)
    assert {r["taskId"]: r["status"] for r in results} == {"a": "clienterror", "b": "success"}


def test_service_errors(env: dict[str, str]) -> None:
    result = run(env, "pool", "show", "--pool-id", "no-such-pool", code=1)
    assert result.stderr.startswith("error: PoolNotFound: ")
    assert "Traceback" not in result.output
    result = run(env, "job", "create", "--id", "j-nopool", "--pool-id", "bad id!", code=1)
    assert result.stderr.startswith("error: ")


def test_hosts(env: dict[str, str], service: tuple[dict[str, str], LocalBatch],
               tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(f"hosts:\n  - {{name: extra-1, address: 127.0.0.1, provider: local, "
                         f"root_dir: {tmp_path / 'extra-1'}, labels: [spare]}}\n")
    # a local host is the operator's: an API caller (the account key alone) may not add it
    result = run(env, "hosts", "add", "--file", str(inventory), code=1)
    assert "AuthorizationFailure" in result.stderr and "hosts[0].provider" in result.stderr
    # the operator: the CLI on the service machine, with the state dir's operator key
    run(None, "--state-dir", str(service[1].state_dir), "hosts", "add", "--file", str(inventory))
    hosts = {h["name"]: h for h in run_json(env, "hosts", "list")}
    assert hosts["extra-1"]["labels"] == ["spare"] and hosts["extra-1"].get("poolId") is None
    run(env, "hosts", "remove", "--name", "extra-1")
    assert "extra-1" not in {h["name"] for h in run_json(env, "hosts", "list")}
    result = run(env, "hosts", "remove", "--name", "extra-1", code=1)
    assert "HostNotFound" in result.stderr


def test_service_stop_refuses_an_embedded_service(
        service: tuple[dict[str, str], LocalBatch]) -> None:
    result = run(None, "--state-dir", str(service[1].state_dir), "service", "stop", code=1)
    assert "ServiceNotStoppable" in result.stderr


# ------------------------------------------------------------- detached service


@pytest.mark.timeout(300)
def test_service_start_status_stop(tmp_path: Path) -> None:
    sdir = ["--state-dir", str(tmp_path / "state")]
    run(None, *sdir, "service", "status", code=1)
    info = run_json(None, *sdir, "service", "start", "--detach", "--port", "0",
                    "--scheduler-host", "127.0.0.1")
    try:
        assert info["endpoint"].startswith("http://127.0.0.1:") and info["account"]
        assert Path(info["key_file"]).exists()
        status = run_json(None, *sdir, "service", "status")
        assert status["running"] and status["pid"] == info["pid"]
        assert run_json(None, *sdir, "pool", "list") == []
        result = run(None, *sdir, "service", "start", "--detach", "--port", "0", code=1)
        assert "ServiceAlreadyRunning" in result.stderr
    finally:
        run(None, *sdir, "service", "stop")
    assert not run_json(None, *sdir, "service", "status", code=1)["running"]
    run(None, *sdir, "service", "stop")  # stopping a stopped service is fine


def test_service_start_failure_shows_log(tmp_path: Path) -> None:
    result = run(None, "--state-dir", str(tmp_path / "state"), "service", "start", "--detach",
                 "--port", "0", "--database-url", "nosuchdialect://x", code=1)
    assert "ServiceStartFailed" in result.stderr and "service.log" in result.stderr


def test_service_start_on_a_port_in_use_names_the_port_and_the_fix(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = run(None, "--state-dir", str(tmp_path / "state"), "service", "start",
                     "--detach", "--port", str(port), code=1)
    finally:
        taken.close()
    assert f"AddressInUse: port {port} on 127.0.0.1 is in use" in result.stderr, result.stderr
    assert "--port 0" in result.stderr and "Traceback" not in result.stderr, result.stderr


# ------------------------------------------------------------------------ testbed


def test_testbed_up_and_down(tmp_path: Path) -> None:
    tb = run_json(None, "testbed", "up", "--nodes", "1", "--dir", str(tmp_path / "tb"),
                  "--base-address", "127.0.9.1")
    try:
        assert tb["hosts"] == ["127.0.9.1"]
        assert Path(tb["inventory"]).exists() and Path(tb["ssh_config"]).exists()
    finally:
        run(None, "testbed", "down", "--dir", str(tmp_path / "tb"))
    assert not (tmp_path / "tb" / "testbed.json").exists()
