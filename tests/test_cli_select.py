"""Every ``hpcbatch ... list`` command takes ``--filter`` and ``--select``: sent to the service
as ``$filter``/``$select`` where the Batch operation has them, applied by the command line
with the same OData parser where it does not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
import pytest

from hpcbatch import LocalBatch
from hpcbatch.client.cli import cli
from tests.test_cli import run, run_json


def _list_commands(group: click.Group, ctx: click.Context,
                   path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _list_commands(command, ctx, (*path, name))
        elif command is not None and name == "list":
            yield (*path, name), command


def test_every_list_command_takes_filter_and_select() -> None:
    ctx = click.Context(cli)
    found = {" ".join(path): {o for p in cmd.params for o in p.opts}
             for path, cmd in _list_commands(cli, ctx)}
    assert {"pool list", "job list", "job-schedule list", "node list", "node file list",
            "task list", "task file list", "task subtask list", "application list",
            "hosts list", "output list"} <= set(found)
    missing = {name: sorted({"--filter", "--select"} - opts) for name, opts in found.items()
               if not {"--filter", "--select"} <= opts}
    assert missing == {}


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    """A LocalBatch with a pool ``sp`` (1 node) and a job ``sj`` whose tasks completed."""
    lb = LocalBatch(nodes=1)
    client = lb.__enter__()
    try:
        key = json.loads((lb.state_dir / "account.json").read_text())["key"]
        env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
               "AZURE_BATCH_ACCESS_KEY": key}
        client.create_pool({"id": "sp", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("sp", timeout_s=120)
        client.create_job({"id": "sj", "poolInfo": {"poolId": "sp"}})
        client.create_tasks("sj", [{"id": "ok", "commandLine": "/bin/sh -c 'mkdir -p sub'"},
                                   {"id": "bad", "commandLine": "/bin/sh -c 'exit 2'"}])
        client.wait_for_tasks("sj", timeout_s=120)
        yield env
    finally:
        lb.__exit__(None, None, None)


def keys(items: list[dict[str, Any]]) -> set[str]:
    return {k for item in items for k in item}


def test_server_side_filter_and_select(env: dict[str, str]) -> None:
    pools = run_json(env, "pool", "list", "--select", "id,state")
    assert pools == [{"id": "sp", "state": "active"}]
    assert run_json(env, "pool", "list", "--filter", "id eq 'nope'") == []
    jobs = run_json(env, "job", "list", "--filter", "id eq 'sj'", "--select", "id,poolInfo")
    assert jobs == [{"id": "sj", "poolInfo": {"poolId": "sp"}}]
    nodes = run_json(env, "node", "list", "--pool-id", "sp", "--filter", "state eq 'idle'",
                     "--select", "id,state")
    assert len(nodes) == 1 and keys(nodes) == {"id", "state"}
    tasks = run_json(env, "task", "list", "--job-id", "sj",
                     "--filter", "executionInfo/exitCode eq 2", "--select", "id")
    assert tasks == [{"id": "bad"}]
    assert run_json(env, "job-schedule", "list", "--select", "id") == []
    usage = run_json(env, "pool", "usage-metrics", "--start-time", "2020-01-01T00:00:00Z",
                     "--end-time", "2100-01-01T00:00:00Z", "--filter", "poolId eq 'sp'",
                     "--select", "poolId,totalCoreHours")
    assert usage and keys(usage) == {"poolId", "totalCoreHours"}
    assert all(u["poolId"] == "sp" and u["totalCoreHours"] > 0 for u in usage)
    files = run_json(env, "task", "file", "list", "--job-id", "sj", "--task-id", "ok",
                     "--filter", "startswith(name, 'std')")
    assert sorted(f["name"] for f in files) == ["stderr.txt", "stdout.txt"]
    # The table shows the selected properties as its columns.
    table = run(env, "job", "list", "--select", "id,state").stdout
    assert "id" in table and "state" in table and "Pool" not in table
    # A nested property's column shows its value (the path's "/" is OData's).
    header, *rows = run(env, "task", "list", "--job-id", "sj",
                        "--select", "id,executionInfo/exitCode").stdout.splitlines()
    assert header.split() == ["id", "executionInfo/exitCode"]
    assert sorted(r.split() for r in rows) == [["bad", "2"], ["ok", "0"]]
    # The service checks what it is sent: a property the list does not have is a 400.
    bad = run(env, "pool", "list", "--select", "colour", code=1)
    assert "InvalidQueryParameterValue" in bad.stderr


def test_local_filter_and_select_where_batch_has_no_such_option(env: dict[str, str]) -> None:
    files = run_json(env, "task", "file", "list", "--job-id", "sj", "--task-id", "ok",
                     "--recursive", "--select", "name,isDirectory")
    assert keys(files) == {"name", "isDirectory"}
    assert {"name": "wd/sub", "isDirectory": True} in files
    dirs = run_json(env, "task", "file", "list", "--job-id", "sj", "--task-id", "ok",
                    "--recursive", "--filter", "startswith(name, 'wd')", "--select", "name")
    assert {"name": "wd/sub"} in dirs
    hosts = run_json(env, "hosts", "list", "--select", "name")
    assert len(hosts) == 1 and keys(hosts) == {"name"}
    assert run_json(env, "hosts", "list", "--filter", "name eq 'nope'") == []
    assert run_json(env, "application", "list", "--select", "id") == []
    # The same OData errors as the service's.
    bad = run(env, "hosts", "list", "--filter", "colour eq 'red'", code=1)
    assert "InvalidQueryParameterValue" in bad.stderr
    bad = run(env, "task", "file", "list", "--job-id", "sj", "--task-id", "ok",
              "--select", "colour", code=1)
    assert "InvalidQueryParameterValue" in bad.stderr


def test_a_local_filter_on_an_empty_list_is_empty_but_checks_its_syntax(
        env: dict[str, str]) -> None:
    # No application exists: there is no item to read the properties off.
    assert run_json(env, "application", "list", "--filter", "id eq 'app'") == []
    bad = run(env, "application", "list", "--filter", "id eq", code=1)
    assert "InvalidQueryParameterValue" in bad.stderr and "syntax error" in bad.stderr
