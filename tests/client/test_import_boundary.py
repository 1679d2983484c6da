"""The client never imports the server stack.

Each check runs in a fresh interpreter (``python -c``) a client command in
process, against a real service running in this test's process (found through
its state dir's ``service.json``, as users find it), then lists the modules that
interpreter imported. A command that only talks to a running service, the SDK's
reads, and ``hpcbatch --version`` must import none of the service's layers
(``hpcbatch.api``, ``hpcbatch.core``, ``hpcbatch.store``, the execution engine,
agent and node) nor the libraries they stand on (Dask, aiohttp, SQLAlchemy,
paramiko, fabric). The CLI's lists and shows also build no pydantic models and
use no ``requests``: the imports a command answering at once cannot afford.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import running_service

SERVER_PACKAGES = frozenset({"distributed", "dask", "aiohttp", "sqlalchemy", "paramiko",
                             "fabric"})
SERVER_MODULES = ("hpcbatch.api", "hpcbatch.core", "hpcbatch.store",
                  "hpcbatch.execution.engine", "hpcbatch.execution.agent",
                  "hpcbatch.execution.node", "hpcbatch.testing")
SLOW_PACKAGES = frozenset({"pydantic", "requests", "urllib3"})
QUERY_MODULES = ("lark", "hpcbatch.batch.odata")
"""The OData parser: a command imports it only to apply a ``--filter`` or ``--select``."""
JOB = "boundaryjob"

# Runs ``body`` (which sets ``result``), then prints a marker line with the result
# and every module the interpreter imported.
PROBE = textwrap.dedent("""
    import json, sys
    result = None
    {body}
    print("\\n@@" + json.dumps({{"result": result, "modules": sorted(sys.modules)}}))
""")


def run_cli(*args: str) -> str:
    """Code that runs ``hpcbatch *args`` in process; ``result`` is its exit code."""
    return textwrap.dedent(f"""
        from hpcbatch.client.cli import cli
        try:
            cli.main({list(args)!r}, prog_name="hpcbatch")
        except SystemExit as exc:
            result = exc.code
    """)


def probe(body: str, state_dir: Path) -> tuple[Any, set[str], str]:
    """Run ``body`` in a fresh interpreter; return its result, its modules and its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_BATCH_")}
    env["HPCBATCH_STATE_DIR"] = str(state_dir)
    proc = subprocess.run([sys.executable, "-c", PROBE.format(body=textwrap.indent(body, ""))],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "\n@@" in proc.stdout, proc.stderr
    out, _, marker = proc.stdout.rpartition("\n@@")
    data = json.loads(marker)
    return data["result"], set(data["modules"]), out


def server_stack(modules: set[str]) -> list[str]:
    """The modules of ``modules`` that belong to the service's stack."""
    return sorted(m for m in modules
                  if m.split(".")[0] in SERVER_PACKAGES
                  or any(m == s or m.startswith(s + ".") for s in SERVER_MODULES))


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running service (in this process) with job ``boundaryjob`` of 3 active tasks."""
    sdir = tmp_path_factory.mktemp("boundary") / "state"
    with running_service(sdir, scheduler_host="127.0.0.1") as (client, _thread):
        client.create_job({"id": JOB, "poolInfo": {"poolId": "nonodes"}})
        client.create_tasks(JOB, [{"id": f"t{i}", "commandLine": "/bin/true"}
                                  for i in range(3)])
        client.create_job({"id": "markup", "poolInfo": {"poolId": "nonodes"}})
        client.create_task("markup", {"id": "m", "commandLine": MARKUP})
        client.add_hosts([{"address": "192.0.2.7", "labels": ["boundary"]}])  # never reached
        yield sdir


MARKUP = "echo '[bold]not bold[/bold]'"
"""A command line that rich would take for markup, were it not printed as plain text."""


COMMANDS = [  # (argv, a text its output holds)
    (["--version"], "hpcbatch, version"),
    (["job", "list"], JOB),
    (["task", "list", "--job-id", JOB], "t2"),
    (["task", "list", "--job-id", JOB, "-o", "json"], '"id": "t2"'),
    (["task", "show", "--job-id", JOB, "--task-id", "t1", "-o", "json"], '"id": "t1"'),
    (["job", "task-counts", "--job-id", JOB], "active"),
    (["pool", "list", "-o", "json"], "[]"),
]


@pytest.mark.parametrize(("args", "expected"), COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_cli_command_imports_no_server_stack(state_dir: Path, args: list[str],
                                             expected: str) -> None:
    code, modules, out = probe(run_cli(*args), state_dir)
    assert code in (0, None) and expected in out, out
    assert server_stack(modules) == []
    assert sorted(m for m in modules if m.split(".")[0] in SLOW_PACKAGES) == []
    assert sorted(m for m in modules if m.startswith(QUERY_MODULES)) == []


def test_a_local_filter_still_imports_the_query_parser(state_dir: Path) -> None:
    # The probe above would see the parser if a command imported it: here one must.
    # Task - List Subtasks takes no $filter: the CLI applies it (t1 has no subtasks).
    code, modules, out = probe(run_cli("task", "subtask", "list", "--job-id", JOB, "--task-id",
                                       "t1", "--filter", "state eq 'completed'", "-o", "json"),
                               state_dir)
    assert code in (0, None) and out.strip() == "[]", out
    assert "hpcbatch.batch.odata" in modules


def test_a_local_select_imports_no_filter_parser(state_dir: Path) -> None:
    # The inventory's list takes no $select: the CLI trims the hosts itself, with
    # hpcbatch.batch.odata_select alone (no lark, no $filter grammar).
    code, modules, out = probe(run_cli("hosts", "list", "--select", "address", "-o", "json"),
                               state_dir)
    assert code in (0, None) and json.loads(out) == [{"address": "192.0.2.7"}], out
    assert "hpcbatch.batch.odata_select" in modules
    assert sorted(m for m in modules if m == "lark" or m.startswith("lark.")) == []
    assert "hpcbatch.batch.odata" not in modules


def test_task_list_prints_the_tasks(state_dir: Path) -> None:
    code, _, out = probe(run_cli("task", "list", "--job-id", JOB, "-o", "json"), state_dir)
    assert code in (0, None)
    assert sorted(t["id"] for t in json.loads(out)) == ["t0", "t1", "t2"]


def test_sdk_imports_no_server_stack(state_dir: Path) -> None:
    code, modules, _ = probe(textwrap.dedent(f"""
        from hpcbatch import BatchClient
        with BatchClient.from_environment() as client:
            result = [t.id for t in client.list_tasks({JOB!r})]
            client.get_job({JOB!r})
            client.get_task_counts({JOB!r})
    """), state_dir)
    assert code == ["t0", "t1", "t2"]
    assert server_stack(modules) == []


def test_probe_sees_a_server_import(state_dir: Path) -> None:
    """The check can fail: a client that imports the service is caught."""
    _, modules, _ = probe("import hpcbatch.client.cli, hpcbatch.store.database", state_dir)
    assert "sqlalchemy" in {m.split(".")[0] for m in modules}
    assert server_stack(modules)


def test_create_tasks_sends_before_it_builds_the_models(state_dir: Path) -> None:
    """The first Task - Add Collection leaves before the wire models are built (~0.2 s):
    the service starts the first tasks while the client parses the replies' models."""
    code, modules, _ = probe(textwrap.dedent("""
        import sys
        from hpcbatch import BatchClient
        from hpcbatch.client.rest import RestClient
        seen = []
        send = RestClient._request
        def spy(self, method, path, *args, **kwargs):
            if path.endswith("/addtaskcollection"):
                seen.append("hpcbatch.batch.models" in sys.modules)
            return send(self, method, path, *args, **kwargs)
        RestClient._request = spy
        with BatchClient.from_environment() as client:
            client.create_job({"id": "sendfirst", "poolInfo": {"poolId": "nonodes"}})
            added = client.create_tasks("sendfirst", [
                {"id": f"s{i}", "commandLine": "/bin/true"} for i in range(250)], max_workers=1)
            result = [seen, [r.status for r in added].count("success"),
                      type(added[0]).__module__, client.get_task_counts("sendfirst")["active"]]
    """), state_dir)
    seen, succeeded, model_module, active = code
    assert seen[0] is False and len(seen) == 3  # the first request left before the models
    assert succeeded == 250 and active == 250
    assert model_module == "hpcbatch.batch.models"
    assert "hpcbatch.batch.models" in modules


def test_a_piped_table_is_plain_columns_and_imports_no_rich(state_dir: Path) -> None:
    code, modules, out = probe(run_cli("task", "list", "--job-id", JOB), state_dir)
    assert code in (0, None)
    header, *rows = out.splitlines()
    assert header.split("  ")[0] == "Id" and "Exit code" in header and "Failure" in header
    assert [r.split() for r in rows] == [["t0", "active"], ["t1", "active"], ["t2", "active"]]
    assert header.index("State") == rows[0].index("active")  # aligned under its header
    assert sorted(m for m in modules if m.split(".")[0] == "rich") == []
    # one object: property and value, a line each
    code, _, out = probe(run_cli("task", "show", "--job-id", "markup", "--task-id", "m"),
                         state_dir)
    props = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert props["id"] == "m" and props["commandLine"] == MARKUP


def test_a_table_on_a_terminal_is_drawn_by_rich_and_prints_values_as_text(
        state_dir: Path) -> None:
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_BATCH_")}
    env.update(HPCBATCH_STATE_DIR=str(state_dir), COLUMNS="200", TERM="dumb")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", "from hpcbatch.client.cli import main; main()",
                             "task", "show", "--job-id", "markup", "--task-id", "m"],
                            stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    out = b"".join(chunks).decode()
    assert "┃" in out or "│" in out  # rich's borders
    assert "[bold]not bold[/bold]" in out  # not taken for markup
