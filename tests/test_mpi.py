"""MPI launch lines (:mod:`hpcbatch.execution.mpi`) and the ``mpi``/``subtask``/``node file`` commands.

The pure functions are checked argv by argv, and one launch line is run for
real with MPICH's hydra ``mpiexec``; the CLI tests run multi-instance tasks on
an in-process service (:class:`hpcbatch.LocalBatch`, 2 local nodes at distinct
loopback addresses, which hydra reaches through :mod:`hpcbatch.providers.locallaunch`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hpcbatch import LocalBatch
from hpcbatch.client.cli import cli
from hpcbatch.execution.mpi import (
    FLAVORS,
    LAUNCHER_NOT_FOUND,
    batch_command_line,
    hostfile,
    launch_argv,
    parse_host_list,
    rank_layout,
)

# --------------------------------------------------------------------- host lists


def test_parse_host_list_accepts_both_batch_forms() -> None:
    assert parse_host_list("10.0.0.4,10.0.0.5") == ["10.0.0.4", "10.0.0.5"]
    assert parse_host_list("10.0.0.4;10.0.0.5") == ["10.0.0.4", "10.0.0.5"]
    assert parse_host_list(" a , b ") == ["a", "b"]
    assert parse_host_list("solo") == ["solo"]


@pytest.mark.parametrize("value, match", [
    ("", "empty"),
    ("   ", "empty"),
    ("a,,b", "empty entry at position 2 of 3"),
    ("a,b,", "empty entry at position 3 of 3"),
    (";a", "empty entry at position 1 of 2"),
    ("a,b;c", "mixes"),
    ("a b,c", "whitespace"),
])
def test_parse_host_list_rejects_bad_lists(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_host_list(value)


def test_hostfile_formats() -> None:
    assert hostfile(["a", "b"]) == "a:1\nb:1\n"
    assert hostfile(["a", "b"], ppn=4) == "a:4\nb:4\n"
    assert hostfile(["a", "b"], ppn=4, flavor="intelmpi") == "a:4\nb:4\n"
    assert hostfile(["a", "b"], ppn=4, flavor="openmpi") == "a slots=4\nb slots=4\n"


def test_rank_layout_is_block_placement() -> None:
    assert rank_layout(["a", "b"], 2) == [(0, "a"), (1, "a"), (2, "b"), (3, "b")]
    assert rank_layout(["a", "b", "c"]) == [(0, "a"), (1, "b"), (2, "c")]


# --------------------------------------------------------------------------- argv


def test_launch_argv_mpich() -> None:
    assert launch_argv(["./app", "-x", "1"], ["a", "b"], ppn=2) == [
        "mpiexec", "-hosts", "a,b", "-ppn", "2", "-n", "4", "./app", "-x", "1"]
    assert launch_argv(["./app"], ["a", "b"], ppn=2, working_dir="/w",
                       env={"OMP_NUM_THREADS": "4", "X": "a b"},
                       extra_args=["-bind-to", "core"]) == [
        "mpiexec", "-hosts", "a,b", "-ppn", "2", "-n", "4", "-wdir", "/w",
        "-genv", "OMP_NUM_THREADS", "4", "-genv", "X", "a b", "-bind-to", "core", "./app"]
    assert launch_argv(["./app"], ["a", "b"], ppn=3, hostfile_path="hosts.txt") == [
        "mpiexec", "-f", "hosts.txt", "-ppn", "3", "-n", "6", "./app"]


def test_launch_argv_openmpi() -> None:
    assert launch_argv(["./app"], ["a", "b"], ppn=2, flavor="openmpi") == [
        "mpirun", "--host", "a:2,b:2", "-np", "4", "./app"]
    assert launch_argv(["./app", "in"], ["a", "b"], ppn=2, flavor="openmpi", working_dir="/w",
                       env={"OMP_NUM_THREADS": "4"}, extra_args=["--bind-to", "core"],
                       allow_run_as_root=True) == [
        "mpirun", "--host", "a:2,b:2", "-np", "4", "--wdir", "/w", "-x", "OMP_NUM_THREADS=4",
        "--allow-run-as-root", "--bind-to", "core", "./app", "in"]
    assert launch_argv(["./app"], ["a"], ppn=8, flavor="openmpi", hostfile_path="h") == [
        "mpirun", "--hostfile", "h", "-np", "8", "./app"]


def test_launch_argv_intelmpi() -> None:
    assert launch_argv(["./app"], ["a", "b"], ppn=2, flavor="intelmpi", working_dir="/w",
                       env={"I_MPI_DEBUG": "5"}) == [
        "mpiexec.hydra", "-hosts", "a,b", "-ppn", "2", "-n", "4", "-wdir", "/w",
        "-genv", "I_MPI_DEBUG", "5", "./app"]
    assert launch_argv(["./app"], ["a", "b"], flavor="intelmpi", hostfile_path="h") == [
        "mpiexec.hydra", "-f", "h", "-ppn", "1", "-n", "2", "./app"]


def test_launch_argv_nprocs_and_launcher() -> None:
    assert launch_argv(["./app"], ["a", "b"], ppn=4, nprocs=6, launcher="/opt/mpi/bin/mpiexec") \
        == ["/opt/mpi/bin/mpiexec", "-hosts", "a,b", "-ppn", "4", "-n", "6", "./app"]


@pytest.mark.parametrize("kwargs, match", [
    ({"command": []}, "command is empty"),
    ({"command": "./app -x"}, "not the string"),
    ({"hosts": []}, "hosts is empty"),
    ({"hosts": "a,b"}, "parse_host_list"),
    ({"hosts": ["a", ""]}, r"hosts\[1\]"),
    ({"hosts": ["a,b"]}, r"hosts\[0\]"),
    ({"ppn": 0}, "ppn"),
    ({"ppn": -2}, "ppn"),
    ({"nprocs": 0}, "nprocs"),
    ({"flavor": "mvapich"}, ("unknown MPI flavor 'mvapich'; expected one of: mpich, openmpi, "
                             "intelmpi")),
    ({"env": {"A=B": "x"}}, "not an environment variable name"),
    ({"allow_run_as_root": True}, "Open MPI option"),
    ({"extra_args": "-v"}, "extra_args"),
])
def test_launch_argv_validation(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"command": ["./app"], "hosts": ["a", "b"], **kwargs}
    with pytest.raises(ValueError, match=match):
        launch_argv(**args)


def test_hostfile_and_layout_validation() -> None:
    with pytest.raises(ValueError, match="ppn"):
        hostfile(["a"], ppn=0)
    with pytest.raises(ValueError, match="expected one of: mpich, openmpi, intelmpi"):
        hostfile(["a"], flavor="lam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hosts is empty"):
        rank_layout([], 1)
    assert FLAVORS == ("mpich", "openmpi", "intelmpi")


def test_launch_argv_runs_with_mpich() -> None:
    """The argv, run for real: 2 ranks on localhost each see the allreduce sum 2."""
    argv = launch_argv([sys.executable, "-c",
                        "from mpi4py import MPI; c=MPI.COMM_WORLD; print(c.rank, c.allreduce(1))"],
                       ["localhost"], ppn=2)
    assert argv[:7] == ["mpiexec", "-hosts", "localhost", "-ppn", "2", "-n", "2"]
    # Without PYTHONUNBUFFERED each rank writes its line at once at exit; with it,
    # hydra may interleave the two ranks' words.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["0 2", "1 2"], proc.stdout


# ------------------------------------------------------------- batch command line


@pytest.fixture
def showargs(tmp_path: Path) -> str:
    """An executable that prints its argv as JSON: stands in for the launcher."""
    path = tmp_path / "showargs"
    path.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    path.chmod(0o755)
    return str(path)


def test_batch_command_line_is_a_shell_with_quoted_words() -> None:
    line = batch_command_line(["./app", "it's", "$HOME"], 2, ppn=2)
    argv = shlex.split(line)
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    check, launch = argv[2].split("; exec ", 1)
    assert check.startswith("command -v mpiexec ")
    assert launch == ('mpiexec -hosts "${AZ_BATCH_HOST_LIST:?is not set: not a '
                      "multi-instance task}\" -ppn 2 -n 4 ./app 'it'\"'\"'s' '$HOME'")


@pytest.mark.parametrize("launcher", [None, "/opt/no such/mpiexec"])
def test_batch_command_line_without_launcher_names_node_and_path(tmp_path: Path,
                                                                 launcher: str | None) -> None:
    """A launcher missing from PATH: exit 127, the launcher, the node and the PATH on stderr."""
    line = batch_command_line(["prog"], 2, launcher=launcher)
    path = f"{tmp_path}:/bin:/usr/bin"
    proc = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": path, "AZ_BATCH_NODE_ID": "node-7",
                               "AZ_BATCH_HOST_LIST": "h1,h2"})
    assert proc.returncode == LAUNCHER_NOT_FOUND == 127
    assert proc.stderr == (f"MPI launcher {launcher or 'mpiexec'} not found on node node-7; "
                           f"PATH searched: {path}\n")


@pytest.mark.parametrize("flavor, hosts", [("mpich", ["-hosts", "h1,h2"]),
                                           ("intelmpi", ["-hosts", "h1,h2"]),
                                           ("openmpi", ["--host", "h1:3,h2:3"])])
def test_batch_command_line_expands_only_the_host_list(showargs: str, flavor: str,
                                                       hosts: list[str]) -> None:
    """Run the line with a stand-in launcher: user words arrive untouched by the shell."""
    words = ["prog", "it's", "$HOME", "`id`", "a b", '"q"', "\\", "$(echo no)", "*"]
    line = batch_command_line(words, 2, ppn=3, flavor=flavor,  # type: ignore[arg-type]
                              env={"V": "x $y 'z'"}, launcher=showargs)
    proc = subprocess.run(shlex.split(line), check=False, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "AZ_BATCH_HOST_LIST": "h1,h2"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got[:2] == hosts
    assert got[-len(words):] == words
    env_words = ["-x", "V=x $y 'z'"] if flavor == "openmpi" else ["-genv", "V", "x $y 'z'"]
    assert got[2:-len(words)] == (["-np", "6"] if flavor == "openmpi"
                                  else ["-ppn", "3", "-n", "6"]) + env_words


def test_batch_command_line_without_host_list_fails_clearly(showargs: str) -> None:
    line = batch_command_line(["prog"], 2, launcher=showargs)
    env = {k: v for k, v in os.environ.items() if k != "AZ_BATCH_HOST_LIST"}
    proc = subprocess.run(shlex.split(line), check=False, capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode != 0
    assert "AZ_BATCH_HOST_LIST" in proc.stderr and "not a multi-instance task" in proc.stderr


def test_batch_command_line_validation() -> None:
    with pytest.raises(ValueError, match="nodes"):
        batch_command_line(["prog"], 0)
    with pytest.raises(ValueError, match="command is empty"):
        batch_command_line([], 2)
    with pytest.raises(ValueError, match="expected one of"):
        batch_command_line(["prog"], 2, flavor="x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI

NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None, "HPCBATCH_STATE_DIR": None}


def run(env: dict[str, Any], *args: str, code: int | None = 0) -> Result:
    """Invoke ``hpcbatch *args``; check the exit code (unless ``code`` is None)."""
    result = CliRunner(env={**NO_SERVICE_ENV, **env}).invoke(
        cli, list(args), prog_name="hpcbatch", catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (
            f"hpcbatch {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def run_json(env: dict[str, Any], *args: str, code: int = 0) -> Any:
    return json.loads(run(env, "-o", "json", *args, code=code).stdout)


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    """An in-process service with 2 local nodes and the 2-node MPI pool ``mpi``."""
    assert shutil.which("mpiexec"), "MPICH's mpiexec is not on PATH: pip install -e '.[test]'"
    lb = LocalBatch(nodes=2)
    client = lb.__enter__()
    try:
        key = json.loads((lb.state_dir / "account.json").read_text())["key"]
        client.create_pool({"id": "mpi", "vmSize": "any", "targetDedicatedNodes": 2,
                            "enableInterNodeCommunication": True})
        nodes = client.wait_for_pool("mpi", timeout_s=120)
        assert sorted(n.state for n in nodes) == ["idle", "idle"]
        yield {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
               "AZURE_BATCH_ACCESS_KEY": key}
    finally:
        lb.__exit__(None, None, None)


# one write per rank: hydra forwards writes as they come, and print() makes two
PRINT_SIZE = ("import sys; from mpi4py import MPI; "
              "sys.stdout.write(f'size={MPI.COMM_WORLD.size}\\n')")


def test_mpi_run_streams_output_and_exits_0(env: dict[str, str]) -> None:
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
                 "--task-id", "ok", "--", sys.executable, "-c", PRINT_SIZE)
    assert result.stdout.split() == ["size=2", "size=2"], result.stdout
    assert "created job cli-mpi" in result.stderr
    assert "added task ok to job cli-mpi" in result.stderr


PRINT_PLACEMENT = (
    "import os, sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "sys.stdout.write(f'{c.rank} {c.size} {os.environ[\"HPCBATCH_LAUNCH_HOST\"]} '"
    "f'{os.environ[\"AZ_BATCH_HOST_LIST\"]}\\n')")


def test_mpi_run_ppn_places_ranks_in_blocks(env: dict[str, str]) -> None:
    """--ppn 2 on 2 nodes: 4 ranks, 2 per node as rank_layout says; the job is reused."""
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--ppn", "2",
                 "--job-id", "cli-mpi", "--task-id", "ppn", sys.executable, "-c",
                 PRINT_PLACEMENT)
    assert "created job" not in result.stderr
    rows = sorted(line.split() for line in result.stdout.splitlines())
    assert len(rows) == 4 and {r[1] for r in rows} == {"4"}, result.stdout
    hosts = parse_host_list(rows[0][3])
    assert len(set(hosts)) == 2
    assert [(int(r[0]), r[2]) for r in rows] == rank_layout(hosts, 2)


def test_mpi_run_propagates_the_exit_code(env: dict[str, str]) -> None:
    script = ("import sys; from mpi4py import MPI; r = MPI.COMM_WORLD.rank; "
              "sys.stderr.write(f'boom {r}\\n'); MPI.COMM_WORLD.Barrier(); sys.exit(3)")
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
                 "--task-id", "fails", "--", sys.executable, "-c", script, code=3)
    assert "boom 0" in result.stderr and "boom 1" in result.stderr


def test_mpi_run_json_and_default_ids(env: dict[str, str]) -> None:
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "-o", "json", "--",
                 sys.executable, "-c", PRINT_SIZE)
    task = json.loads(result.stdout)
    assert task["state"] == "completed"
    assert task["executionInfo"]["exitCode"] == 0
    assert task["multiInstanceSettings"]["numberOfInstances"] == 2
    assert task["id"].startswith("mpi-")
    assert shlex.split(task["commandLine"])[:2] == ["/bin/sh", "-c"]
    job_id = result.stderr.split("created job ")[1].split()[0]
    assert job_id.startswith("mpi-")
    out = run(env, "task", "file", "download", "--job-id", job_id, "--task-id", task["id"],
              "--file-path", "stdout.txt", "--destination", "-").stdout
    assert out.split() == ["size=2", "size=2"]


def test_mpi_run_launcher_option_and_a_missing_launcher_named_with_node_and_path(
        env: dict[str, str]) -> None:
    launcher = shutil.which("mpiexec")
    assert launcher
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
                 "--task-id", "launcher", "--launcher", launcher, "--", sys.executable, "-c",
                 PRINT_SIZE)
    assert result.stdout.split() == ["size=2", "size=2"], result.stdout

    missing = "/nonexistent/bin/mpiexec"
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
                 "--task-id", "nolauncher", "--launcher", missing, "--", "prog", code=127)
    assert "error: FailureExitCode: " in result.stderr
    task = run_json(env, "task", "show", "--job-id", "cli-mpi", "--task-id", "nolauncher")
    node = task["nodeInfo"]["nodeId"]
    failure = task["executionInfo"]["failureInfo"]
    reason = f"MPI launcher {missing} not found on node {node}; PATH searched: "
    assert task["executionInfo"]["exitCode"] == 127
    assert failure["code"] == "FailureExitCode" and failure["category"] == "usererror"
    assert f"On node {node}: {reason}" in failure["message"], failure
    details = {d["name"]: d["value"] for d in failure["details"]}
    assert details["NodeId"] == node and details["Reason"].startswith(reason)
    searched = details["Reason"].removeprefix(reason).split(":")
    assert searched[0] == os.path.dirname(sys.executable)  # the node python's bin dir first
    assert reason in result.stderr  # the CLI prints the task's stderr and its failureInfo


def test_task_get_long_poll_answers_when_the_task_changes(env: dict[str, str]) -> None:
    """``If-None-Match`` + ``Prefer: wait``: the reply comes with the next version, else 304."""
    from hpcbatch.client.sdk import BatchClient, BatchError

    with BatchClient(env["AZURE_BATCH_ENDPOINT"], env["AZURE_BATCH_ACCOUNT"],
                     env["AZURE_BATCH_ACCESS_KEY"]) as client:
        client.create_job({"id": "poll", "poolInfo": {"poolId": "mpi"}})
        client.create_task("poll", {"id": "t", "commandLine": "/bin/sh -c 'sleep 0.3'"})
        task = client.wait_task_json("poll", "t", None, 0)
        assert task is not None
        seen = [task["state"]]
        while task["state"] != "completed":
            new = client.wait_task_json("poll", "t", task["eTag"], 60)
            assert new is not None and new["eTag"] != task["eTag"]  # a change, not a timeout
            task = new
            seen.append(task["state"])
        order = ["active", "preparing", "running", "completed"]
        assert seen[-1] == "completed"
        assert [order.index(x) for x in seen] == sorted(order.index(x) for x in seen)
        # unchanged: 304 after the wait (None); without a wait, 304 at once, as in Batch
        assert client.wait_task_json("poll", "t", task["eTag"], 0.2) is None
        assert client.wait_task_json("poll", "t", task["eTag"], 0) is None
        with pytest.raises(BatchError) as info:
            client.wait_task_json("poll", "missing", task["eTag"], 1)
        assert info.value.code == "TaskNotFound"
        with pytest.raises(BatchError) as info:
            client.wait_task_json("nosuchjob", "t", task["eTag"], 1)
        assert info.value.code == "JobNotFound"


def test_mpi_run_coordination_failure_exits_1_with_failure_info(env: dict[str, str]) -> None:
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
                 "--task-id", "coordfail", "--coordination-command-line", "/bin/sh -c 'exit 5'",
                 "--", sys.executable, "-c", PRINT_SIZE, code=None)
    assert result.exit_code == 5, result.stderr
    assert "CoordinationCommandFailed" in result.stderr


def test_mpi_run_rejects_bad_input(env: dict[str, str]) -> None:
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--mpi", "lam",
                 "--", "prog", code=2)
    assert "mpich" in result.stderr and "openmpi" in result.stderr
    run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "0", "--", "prog", code=2)
    run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", code=2)
    result = run(env, "mpi", "run", "--pool-id", "other", "--nodes", "2", "--job-id", "cli-mpi",
                 "--", "prog", code=1)
    assert "JobPoolMismatch" in result.stderr
    # a pool that does not exist: an error at once, and no job left behind
    result = run(env, "mpi", "run", "--pool-id", "nosuchpool", "--nodes", "1", "--", "prog",
                 code=1)
    assert "PoolNotFound" in result.stderr
    shown = run(env, "-o", "json", "job", "show", "--job-id", "mpi-nosuchpool", code=1)
    assert "JobNotFound" in shown.stderr
    # a task the service rejects leaves no job behind
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi-3",
                 "--task-id", "not a task id", "--", "prog", code=1)
    assert "InvalidPropertyValue" in result.stderr and "id" in result.stderr
    shown = run(env, "-o", "json", "job", "show", "--job-id", "cli-mpi-3", code=None)
    assert shown.exit_code == 1 or json.loads(shown.stdout)["state"] == "deleting"


def test_mpi_run_refuses_more_nodes_than_the_pool_can_ever_start() -> None:
    """A pool whose target is 1 node, with a second matching host free in the inventory:
    the service accepts a 2-node task, which would wait for nodes forever. ``mpi run
    --nodes 2`` is refused at once (naming the pool's target and the resize that fixes
    it), and adds no job; so is a 2-node run on a pool without inter-node communication.
    (Run in a subprocess: without the check the command never returns.)"""
    local = LocalBatch(nodes=2)
    with local as client:
        key = json.loads((local.state_dir / "account.json").read_text())["key"]
        client.create_pool({"id": "small", "vmSize": "any", "targetDedicatedNodes": 1,
                            "enableInterNodeCommunication": True})
        client.create_pool({"id": "nocomm", "vmSize": "any", "targetDedicatedNodes": 0})
        env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
               "AZURE_BATCH_ACCESS_KEY": key}

        def mpi_run(pool: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "hpcbatch.client.cli", "mpi", "run", "--pool-id", pool,
                 "--nodes", "2", "--", "prog"], check=False, capture_output=True, text=True,
                timeout=120,
                env={**{k: v for k, v in os.environ.items() if k not in NO_SERVICE_ENV}, **env})

        small = mpi_run("small")
        assert small.returncode == 1, (small.stdout, small.stderr)
        assert small.stderr.strip() == (
            "error: PoolTooSmall: pool small has a target of 1 node(s) and no autoscale "
            "formula: a run on 2 nodes (--nodes) would wait for nodes forever; ask for at "
            "most 1, or grow the pool first (hpcbatch pool resize --pool-id small "
            "--target-dedicated-nodes 2; the inventory needs that many hosts matching its "
            "vmSize)")
        nocomm = mpi_run("nocomm")
        assert nocomm.returncode == 1, (nocomm.stdout, nocomm.stderr)
        assert "InterNodeCommunicationNotEnabled: pool nocomm does not enable inter-node " \
            "communication" in nocomm.stderr
        for job in ("mpi-small", "mpi-nocomm"):
            assert "JobNotFound" in run(env, "job", "show", "--job-id", job, code=1).stderr


def test_mpi_run_timeout_terminates_the_task(env: dict[str, str]) -> None:
    result = run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
                 "--task-id", "slow", "--timeout-s", "1", "--", sys.executable, "-c",
                 "import time; time.sleep(60)", code=2)
    assert "terminated" in result.stderr
    deadline = time.monotonic() + 60
    while (task := run_json(env, "task", "show", "--job-id", "cli-mpi", "--task-id", "slow")
           )["state"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert task["state"] == "completed"
    assert task["executionInfo"]["result"] == "failure"


def test_subtask_list_and_node_file_download(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "cli-mpi",
        "--task-id", "sub", "--coordination-command-line", "/bin/sh -c 'echo coordinated'",
        "--", sys.executable, "-c", PRINT_SIZE)
    subtasks = run_json(env, "task", "subtask", "list", "--job-id", "cli-mpi", "--task-id", "sub")
    assert len(subtasks) == 1
    sub = subtasks[0]
    assert sub["id"] == 1 and sub["state"] == "completed" and sub["exitCode"] == 0
    table = run(env, "task", "subtask", "list", "--job-id", "cli-mpi", "--task-id", "sub").stdout
    assert "Exit code" in table and sub["nodeInfo"]["nodeId"] in table
    node_id = sub["nodeInfo"]["nodeId"]
    path = "workitems/cli-mpi/job-1/sub/stdout.txt"
    out = run(env, "node", "file", "download", "--pool-id", "mpi", "--node-id", node_id,
              "--file-path", path, "--destination", "-").stdout
    assert out.strip() == "coordinated"
    files = run_json(env, "node", "file", "list", "--pool-id", "mpi", "--node-id", node_id,
                     "--recursive")
    assert path in [f["name"] for f in files]
    assert "workitems" in run(env, "node", "file", "list", "--pool-id", "mpi",
                              "--node-id", node_id).stdout
    dest = tmp_path / "out.txt"
    result = run(env, "node", "file", "download", "--pool-id", "mpi", "--node-id", node_id,
                 "--file-path", path, "--destination", str(dest))
    assert dest.read_text().strip() == "coordinated" and "wrote" in result.stderr
    result = run(env, "node", "file", "download", "--pool-id", "mpi", "--node-id", node_id,
                 "--file-path", "workitems/cli-mpi/job-1/sub/nope.txt", "--destination", "-",
                 code=1)
    assert "FileNotFound" in result.stderr


def test_hosts_check_of_a_pool_of_local_nodes(env: dict[str, str]) -> None:
    """Local hosts pass; their pool needs no SSH between nodes, and says so."""
    result = run_json(env, "hosts", "check", "--pool-id", "mpi")
    assert result["failed"] == []
    by_check: dict[str, set[str]] = {}
    for c in result["value"]:
        by_check.setdefault(c["check"], set()).add(c["status"])
    assert by_check.pop("ssh-to peers") == {"skip"}
    assert by_check == {k: {"pass"} for k in ("ssh", "python", "versions", "disk", "launcher")}
    assert len({c["host"] for c in result["value"]}) == 2
