"""``hpcbatch mpi run`` and ``bench run`` as an MPI user meets them, on an in-process service.

A service (:class:`hpcbatch.LocalBatch`) with 2 local nodes and the 2-node MPI
pool ``mpi`` (MPICH's hydra ``mpiexec``). The CLI runs in process
(``CliRunner``: stderr is not a terminal) or, to be sent signals, as a real
``python -m hpcbatch.client.cli`` subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result

from hpcbatch import LocalBatch
from hpcbatch.client.cli import cli

ROOT = Path(__file__).resolve().parents[2]
NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None, "HPCBATCH_STATE_DIR": None,
                  "HPCBATCH_STORAGE_URL": None}


def run(env: dict[str, Any], *args: str, code: int | None = 0) -> Result:
    """Invoke ``hpcbatch *args`` in process; check the exit code (unless ``code`` is None)."""
    result = CliRunner(env={**NO_SERVICE_ENV, **env}).invoke(
        cli, list(args), prog_name="hpcbatch", catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (
            f"hpcbatch {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def bed() -> Iterator[dict[str, Any]]:
    """The service, its client, and the environment the CLI finds it by."""
    assert shutil.which("mpiexec"), "MPICH's mpiexec is not on PATH: pip install -e '.[test]'"
    lb = LocalBatch(nodes=2)
    client = lb.__enter__()
    try:
        key = json.loads((lb.state_dir / "account.json").read_text())["key"]
        client.create_pool({"id": "mpi", "vmSize": "any", "targetDedicatedNodes": 2,
                            "enableInterNodeCommunication": True})
        nodes = client.wait_for_pool("mpi", timeout_s=120)
        assert sorted(n.state for n in nodes) == ["idle", "idle"]
        env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
               "AZURE_BATCH_ACCESS_KEY": key}
        yield {"client": client, "env": env}
    finally:
        lb.__exit__(None, None, None)


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def task_json(bed: dict[str, Any], job_id: str, task_id: str) -> dict[str, Any]:
    return dict(bed["client"].get_task_json(job_id, task_id))


class Cli:
    """``hpcbatch *args`` as a subprocess; its stderr collected line by line as it comes."""

    def __init__(self, bed: dict[str, Any], *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in NO_SERVICE_ENV}
        env.update(bed["env"])
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, "-m", "hpcbatch.client.cli", *args],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def stderr(self) -> str:
        return "".join(self.err)

    def finish(self, timeout_s: float = 120) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout_s)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.reader.join(10)
        return self.proc.returncode, out, self.stderr()


def leftovers(marker: str) -> list[str]:
    """Command lines of live processes that hold ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if marker in line and "pytest" not in line:
            found.append(line)
    return found


# ------------------------------------------------------------- 1, 2: signals, live stderr


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_terminate_the_task_and_exit_128_plus_signo(
        bed: dict[str, Any], signo: signal.Signals) -> None:
    """As srun cancels its step: the task ends (no mpiexec, proxies or ranks left) and the
    command exits 143/129; the program's stderr came out live, before that."""
    marker = f"sig-marker-{signo.name}"
    program = (f"import sys, time; sys.stderr.write('{marker} started\\n'); "
               f"sys.stderr.flush(); time.sleep(300)  # {marker}")
    task_id = f"sig-{signo.name.lower()}"
    cli_ = Cli(bed, "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id", "sig",
               "--task-id", task_id, "--", sys.executable, "-c", program)
    try:
        wait_for(lambda: leftovers(marker), 90, "the ranks to run")
        # stderr is streamed while the task runs (live, like mpiexec's)
        deadline = time.monotonic() + 30
        while f"{marker} started" not in cli_.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        live = f"{marker} started" in cli_.stderr()
        cli_.proc.send_signal(signo)
        code, _, err = cli_.finish(60)
    finally:
        if cli_.proc.poll() is None:
            cli_.proc.kill()
    assert code == 128 + signo, (code, err)
    assert live, f"the rank's stderr line was not shown while it ran: {err}"
    assert f"interrupted: terminated task {task_id} of job sig" in err, err
    task = wait_for(lambda: (t := task_json(bed, "sig", task_id))["state"] == "completed" and t,
                    60, "the task to complete")
    assert task["executionInfo"]["failureInfo"]["code"] == "TaskEnded", task
    wait_for(lambda: not leftovers(marker), 30, f"no process left: {leftovers(marker)}")


BENCH_SLEEP = """
name: sleeper
mpi: none
repeats: 1
time_limit_s: 600
benchmarks:
  - name: nap
    command: "{python} -c 'import time; time.sleep(300)  # bench-sig-marker'"
variables: {python: PYTHON}
"""


def test_bench_run_sigterm_terminates_the_campaign(bed: dict[str, Any], tmp_path: Path) -> None:
    campaign = tmp_path / "sleeper.yaml"
    campaign.write_text(BENCH_SLEEP.replace("PYTHON", sys.executable))
    cli_ = Cli(bed, "bench", "run", str(campaign), "--pool-id", "mpi", "--job-id", "bsig")
    try:
        wait_for(lambda: leftovers("bench-sig-marker"), 90, "the benchmark to run")
        cli_.proc.send_signal(signal.SIGTERM)
        code, _, err = cli_.finish(60)
    finally:
        if cli_.proc.poll() is None:
            cli_.proc.kill()
    assert code == 143, (code, err)
    assert "interrupted: terminated job bsig" in err, err
    job = wait_for(lambda: (j := dict(bed["client"].get_job_json("bsig")))["state"]
                   == "completed" and j, 60, "the job to complete")
    assert job["state"] == "completed"
    wait_for(lambda: not leftovers("bench-sig-marker"), 30, "no benchmark process left")


def test_stderr_is_shown_on_success_and_once_on_failure(bed: dict[str, Any]) -> None:
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "1", "--job-id",
                 "err", "--task-id", "ok", "--", "/bin/sh", "-c",
                 "echo to-stderr >&2; echo to-stdout")
    assert result.stdout.split() == ["to-stdout"]
    assert "to-stderr" in result.stderr
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "1", "--job-id",
                 "err", "--task-id", "bad", "--", "/bin/sh", "-c", "echo why-it-failed >&2; exit 4",
                 code=4)
    assert result.stderr.count("why-it-failed") == 1, result.stderr


# ------------------------------------------------------------- 3: queued, run-time limit


def test_queued_line_and_timeout_counts_run_time_not_the_queue(bed: dict[str, Any]) -> None:
    """Both nodes are busy for ~10 s; a --timeout-s 5 run that needs 1 s waits, says it is
    queued, then runs to completion (srun's time limit counts run time)."""
    client = bed["client"]
    client.create_job({"id": "blocker", "poolInfo": {"poolId": "mpi"}})
    client.create_task("blocker", {"id": "hold", "commandLine": "/bin/sh -c 'sleep 10'",
                                   "multiInstanceSettings": {"numberOfInstances": 2}})
    wait_for(lambda: task_json(bed, "blocker", "hold")["state"] == "running", 90,
             "the blocker to run")
    start = time.monotonic()
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id",
                 "queued", "--task-id", "waits", "--timeout-s", "5", "--", "/bin/sh", "-c",
                 "sleep 1; echo finished", code=None)
    waited = time.monotonic() - start
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.split() == ["finished", "finished"]
    assert result.stderr.count("task waits queued and waiting for 2 node(s) of pool mpi") == 1, \
        result.stderr
    assert waited > 5, "the run should have waited longer than its time limit"
    task = task_json(bed, "queued", "waits")
    assert task["constraints"]["maxWallClockTime"] == "PT5S"


def test_timeout_ends_a_run_that_runs_too_long(bed: dict[str, Any]) -> None:
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id",
                 "queued", "--task-id", "long", "--timeout-s", "1.5", "--", "/bin/sh", "-c",
                 "echo begun >&2; sleep 60", code=2)
    assert "ran longer than --timeout-s 1.5 s" in result.stderr
    assert "begun" in result.stderr  # its stderr on the timeout path too
    task = task_json(bed, "queued", "long")
    assert task["state"] == "completed"
    assert task["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


# ------------------------------------------------------------- 4: failures name task and node


def test_a_failure_names_the_task_and_its_master_node(bed: dict[str, Any]) -> None:
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id",
                 "fail", "--task-id", "three", "--", "/bin/sh", "-c", "exit 3", code=3)
    node = task_json(bed, "fail", "three")["nodeInfo"]["nodeId"]
    assert (f"error: FailureExitCode: task three of job fail (master node {node}, 2 node(s)): "
            in result.stderr), result.stderr
    assert "exit code 3" in result.stderr


def test_a_missing_launcher_is_explained_once(bed: dict[str, Any]) -> None:
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id",
                 "fail", "--task-id", "nope", "--launcher", "mpiexec.nope", "--", "prog",
                 code=127)
    node = task_json(bed, "fail", "nope")["nodeInfo"]["nodeId"]
    reason = f"MPI launcher mpiexec.nope not found on node {node}; PATH searched: "
    assert result.stderr.count(reason) == 1, result.stderr
    assert f"task nope of job fail (master node {node}, 2 node(s))" in result.stderr


# ------------------------------------------------------------- 5, 6: --env, help


def test_env_option_reaches_every_rank(bed: dict[str, Any]) -> None:
    result = run(bed["env"], "mpi", "run", "--pool-id", "mpi", "--nodes", "2", "--job-id",
                 "envs", "--task-id", "omp", "--env", "OMP_NUM_THREADS=3", "--env",
                 "EMPTY=", "--", "printenv", "OMP_NUM_THREADS")
    assert result.stdout.split() == ["3", "3"], result.stdout
    task = task_json(bed, "envs", "omp")
    assert {"name": "OMP_NUM_THREADS", "value": "3"} in task["environmentSettings"]


@pytest.mark.parametrize("bad", ["1X=2", "NOVALUE", "A-B=1", "=1"])
def test_env_option_rejects_bad_names(bad: str) -> None:
    result = run({}, "mpi", "run", "--pool-id", "mpi", "--nodes", "1", "--env", bad, "--",
                 "prog", code=2)
    assert "--env" in result.stderr and repr(bad) in result.stderr, result.stderr


def test_help_says_where_the_program_runs_and_whose_environment_ranks_get() -> None:
    text = " ".join(run({}, "mpi", "run", "--help").stdout.split())
    assert "./app" not in text
    assert "working directory on the master node" in text
    assert "master node's environment" in text and "identical across hosts" in text
    assert "--env NAME=VALUE" in text
