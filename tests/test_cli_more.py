"""More of the ``hpcbatch`` command line: outputs, application packages, job and task
control, node operations and autoscale, driven by click's CliRunner against one
in-process service (:class:`hpcbatch.LocalBatch`, 2 local nodes, storage outside its
state dir) found through ``AZURE_BATCH_ENDPOINT``/``ACCOUNT``/``ACCESS_KEY``.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hpcbatch import LocalBatch
from hpcbatch.client.cli import cli

NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None, "HPCBATCH_STATE_DIR": None,
                  "HPCBATCH_STORAGE_URL": None}
POOL = "morepool"


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


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)
    return value


@dataclass
class Service:
    env: dict[str, str]
    batch: LocalBatch
    storage_url: str

    def task(self, job_id: str, task_id: str) -> dict[str, Any]:
        return run_json(self.env, "task", "show", "--job-id", job_id, "--task-id", task_id)

    def node(self, node_id: str) -> dict[str, Any]:
        return run_json(self.env, "node", "show", "--pool-id", POOL, "--node-id", node_id)

    def wait_tasks(self, job_id: str, code: int = 0) -> dict[str, int]:
        return run_json(self.env, "task", "wait", "--job-id", job_id, "--timeout-s", "120",
                        code=code)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service with pool ``morepool`` (2 nodes, 1 slot each), steady."""
    root = tmp_path_factory.mktemp("climore")
    storage_url = f"file://{root}/storage"
    with pytest.MonkeyPatch.context() as mp:
        # Batch's smallest autoscale interval is 5 min; the service reads this at start.
        mp.setenv("HPCBATCH_MIN_AUTOSCALE_INTERVAL_S", "1")
        lb = LocalBatch(nodes=2, storage_url=storage_url)
        client = lb.__enter__()
        try:
            key = json.loads((lb.state_dir / "account.json").read_text())["key"]
            env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
                   "AZURE_BATCH_ACCESS_KEY": key}
            run(env, "pool", "create", "--id", POOL, "--vm-size", "any",
                "--target-dedicated-nodes", "2", "--task-slots-per-node", "1")
            nodes = run_json(env, "pool", "wait", "--pool-id", POOL, "--timeout-s", "120")
            assert [n["state"] for n in nodes] == ["idle", "idle"]
            yield Service(env, lb, storage_url)
        finally:
            lb.__exit__(None, None, None)


# ------------------------------------------------------------------------ outputs

SAVE_OUTPUTS = (
    "from pathlib import Path\n"
    "from hpcbatch.conventions import JobOutputStorage, TaskOutputStorage, TaskOutputKind as K\n"
    "print('hello from the task')\n"
    "Path('result.txt').write_text('the result')\n"
    "out = TaskOutputStorage.from_environment()\n"
    "out.save(K.TaskOutput, 'result.txt')\n"
    "out.save_text(K.TaskPreview, 'small', 'preview/p.txt')\n"
    "out.save_text(K.custom('Extra'), 'x', 'extra.txt')\n"
    "JobOutputStorage.from_environment().save_text('JobOutput', 'merged', 'summary.txt')\n"
)


def test_output_list_and_download(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    run(env, "job", "create", "--id", "Out_Job", "--pool-id", POOL)
    run(env, "task", "create", "--job-id", "Out_Job", "--task-id", "saver",
        "--command-line", f'{sys.executable} -c "{SAVE_OUTPUTS}"')
    assert svc.wait_tasks("Out_Job")["succeeded"] == 1
    task = ["--job-id", "Out_Job", "--task-id", "saver"]
    # The output commands read storage, not the service: HPCBATCH_STORAGE_URL names it.
    st = {"HPCBATCH_STORAGE_URL": svc.storage_url}

    listed = run_json(st, "output", "list", *task)
    assert {(o["kind"], o["path"]) for o in listed} == {
        ("TaskOutput", "result.txt"), ("TaskPreview", "preview/p.txt"),
        ("TaskLog", "stdout.txt"), ("TaskLog", "stderr.txt")}
    result = next(o for o in listed if o["path"] == "result.txt")
    assert result["sizeBytes"] == len("the result") and result["url"].startswith("file://")
    table = run(st, "output", "list", *task).stdout
    assert "Kind" in table and "TaskLog" in table and "preview/p.txt" in table

    extra = run_json(st, "output", "list", *task, "--kind", "Extra")
    assert [(o["kind"], o["path"]) for o in extra] == [("Extra", "extra.txt")]
    assert "Kind" not in run(st, "output", "list", *task, "--kind", "TaskLog").stdout

    out = run(st, "output", "download", *task, "--kind", "TaskLog", "--path", "stdout.txt",
              "--destination", "-")
    assert out.stdout == "hello from the task\n"
    dest = tmp_path / "sub" / "result.txt"
    run(st, "output", "download", *task, "--kind", "TaskOutput", "--path", "result.txt",
        "--destination", str(dest))
    assert dest.read_text() == "the result"

    # Job outputs: no --task-id.
    jobs = run_json(st, "output", "list", "--job-id", "Out_Job")
    assert [(o["kind"], o["path"]) for o in jobs] == [("JobOutput", "summary.txt")]
    out = run(st, "output", "download", "--job-id", "Out_Job", "--kind", "JobOutput",
              "--path", "summary.txt", "--destination", "-")
    assert out.stdout == "merged"
    # The storage URL also comes from --storage-url, or the service.json of the state dir.
    assert run_json(None, "output", "list", "--job-id", "Out_Job", "--kind", "JobOutput",
                    "--storage-url", svc.storage_url) == jobs
    assert run_json(None, "--state-dir", str(svc.batch.state_dir), "output", "list",
                    "--job-id", "Out_Job") == jobs


def test_output_errors(svc: Service, tmp_path: Path) -> None:
    st = {"HPCBATCH_STORAGE_URL": svc.storage_url}
    result = run(st, "output", "download", "--job-id", "Out_Job", "--task-id", "saver",
                 "--kind", "TaskOutput", "--path", "missing.txt", "--destination", "-", code=1)
    assert result.stderr.startswith("error: BlobNotFound: ")
    result = run(None, "--state-dir", str(tmp_path / "none"), "output", "list",
                 "--job-id", "j", code=1)
    assert result.stderr.startswith("error: StorageNotConfigured: ")
    result = run(st, "output", "list", "--job-id", "j", "--kind", "a/b", code=2)
    assert "--kind" in result.stderr
    run(st, "output", "download", "--job-id", "j", "--path", "x", "--destination", "-",
        code=2)  # no --kind


# --------------------------------------------------------------- application packages


def _zip(path: Path, script: str) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("bin/hello.sh")
        info.external_attr = 0o755 << 16
        zf.writestr(info, f"#!/bin/sh\n{script}\n")
    path.write_bytes(buf.getvalue())
    return path


def test_application_packages(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    app = ["--application-name", "CliApp"]
    run(env, "application", "package", "create", *app, "--version", "1.0",
        "--package-file", str(_zip(tmp_path / "v1.zip", "echo hello 1")))
    run(env, "application", "package", "create", *app, "--version", "2.0",
        "--package-file", str(_zip(tmp_path / "v2.zip", "echo hello 2")))
    listed = {a["id"]: a for a in run_json(env, "application", "list")}
    assert listed["CliApp"]["versions"] == ["1.0", "2.0"]
    assert listed["CliApp"]["defaultVersion"] == "1.0"  # the first version
    assert "CliApp" in run(env, "application", "list").stdout
    run(env, "application", "set", "--application-name", "cliapp", "--default-version", "2.0")
    assert run_json(env, "application", "show", *app)["defaultVersion"] == "2.0"
    assert "defaultVersion" in run(env, "application", "show", *app).stdout

    run(env, "job", "create", "--id", "appjob", "--pool-id", POOL)
    tasks = tmp_path / "task.json"
    tasks.write_text(json.dumps({
        "id": "useapp",
        "commandLine": "/bin/sh -c '$AZ_BATCH_APP_PACKAGE_cliapp_1_0/bin/hello.sh && "
                       "$AZ_BATCH_APP_PACKAGE_cliapp/bin/hello.sh'",
        "applicationPackageReferences": [{"applicationId": "CliApp", "version": "1.0"},
                                         {"applicationId": "CliApp"}]}))
    run(env, "task", "create", "--job-id", "appjob", "--json-file", str(tasks))
    assert svc.wait_tasks("appjob")["succeeded"] == 1
    out = run(env, "task", "file", "download", "--job-id", "appjob", "--task-id", "useapp",
              "--file-path", "stdout.txt", "--destination", "-")
    assert out.stdout == "hello 1\nhello 2\n"

    run(env, "application", "package", "delete", *app, "--version", "2.0", code=1)  # no --yes
    run(env, "application", "package", "delete", *app, "--version", "2.0", "--yes")
    shown = run_json(env, "application", "show", *app)
    assert shown["versions"] == ["1.0"] and shown.get("defaultVersion") is None
    result = run(env, "application", "package", "delete", *app, "--version", "2.0", "--yes",
                 code=1)
    assert result.stderr.startswith("error: ") and "NotFound" in result.stderr
    result = run(env, "application", "show", "--application-name", "nope", code=1)
    assert result.stderr.startswith("error: ApplicationNotFound: ")


# ------------------------------------------------------------------ job and task control


def test_job_disable_and_enable(svc: Service) -> None:
    env = svc.env
    run(env, "job", "create", "--id", "ctljob", "--pool-id", POOL)
    run(env, "task", "create", "--job-id", "ctljob", "--task-id", "long",
        "--command-line", "sleep 600")
    wait_until(lambda: svc.task("ctljob", "long")["state"] == "running", what="long running")
    run(env, "job", "disable", "--job-id", "ctljob", "--disable-tasks", "requeue")
    wait_until(lambda: run_json(env, "job", "show", "--job-id", "ctljob")["state"] == "disabled",
               what="job disabled")
    long = svc.task("ctljob", "long")
    assert long["state"] == "active" and long["executionInfo"]["requeueCount"] == 1
    run(env, "task", "create", "--job-id", "ctljob", "--task-id", "quick", "--command-line", "true")
    time.sleep(1.0)
    assert svc.task("ctljob", "quick")["state"] == "active"  # nothing starts while disabled
    run(env, "job", "enable", "--job-id", "ctljob")
    wait_until(lambda: svc.task("ctljob", "quick")["state"] == "completed", what="quick ran")
    assert run_json(env, "job", "show", "--job-id", "ctljob")["state"] == "active"
    run(env, "task", "terminate", "--job-id", "ctljob", "--task-id", "long")
    svc.wait_tasks("ctljob", code=1)
    run(env, "job", "disable", "--job-id", "ctljob", "--disable-tasks", "later", code=2)
    result = run(env, "job", "enable", "--job-id", "no-such-job", code=1)
    assert result.stderr.startswith("error: JobNotFound: ")


def test_job_prep_release_status(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"id": "prepjob", "poolInfo": {"poolId": POOL},
                                "jobPreparationTask": {"commandLine": "true"},
                                "jobReleaseTask": {"commandLine": "true"}}))
    run(env, "job", "create", "--json-file", str(spec))
    run(env, "task", "create", "--job-id", "prepjob", "--task-id", "t", "--command-line", "true")
    assert svc.wait_tasks("prepjob")["succeeded"] == 1
    node = svc.task("prepjob", "t")["nodeInfo"]["nodeId"]
    run(env, "job", "terminate", "--job-id", "prepjob")
    wait_until(lambda: run_json(env, "job", "show", "--job-id", "prepjob")["state"] == "completed",
               what="job completed")
    status = wait_until(lambda: [s for s in run_json(env, "job", "prep-release-status",
                                                      "--job-id", "prepjob")
                                 if s.get("jobReleaseTaskExecutionInfo", {}).get("state")
                                 == "completed"], what="release task ran")
    assert [s["nodeId"] for s in status] == [node] and status[0]["poolId"] == POOL
    assert status[0]["jobPreparationTaskExecutionInfo"]["result"] == "success"
    assert status[0]["jobReleaseTaskExecutionInfo"]["exitCode"] == 0
    header, *rows = run(env, "job", "prep-release-status",
                        "--job-id", "prepjob").stdout.splitlines()
    assert [h.strip() for h in header.split("  ") if h.strip()][:3] == [
        "Pool", "Node", "Prep state"]  # one line, not two
    assert rows[0].split() == [POOL, node, "completed", "success", "0", "completed", "success",
                               "0"]


def test_events_tail_lines_and_json(svc: Service) -> None:
    tail = ["--state-dir", str(svc.batch.state_dir), "events", "tail"]
    latest = json.loads(run(svc.env, *tail, "-n", "3", "-o", "json").stdout)
    assert isinstance(latest, list) and len(latest) == 3  # one JSON document: an array
    assert all({"name", "time"} <= set(e) for e in latest)
    assert run(svc.env, *tail, "-n", "0").stdout == ""  # as tail -n 0
    assert json.loads(run(svc.env, *tail, "-n", "0", "-o", "json").stdout) == []
    assert "-1 is not in the range x>=0" in run(svc.env, *tail, "-n", "-1", code=2).stderr


def test_job_schedule_delete_asks_first(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    spec = tmp_path / "schedule.json"
    spec.write_text(json.dumps({"id": "asked", "schedule": {"recurrenceInterval": "PT1H"},
                                "jobSpecification": {"poolInfo": {"poolId": POOL}}}))
    run(env, "job-schedule", "create", "--json-file", str(spec))
    result = CliRunner(env={**NO_SERVICE_ENV, **env}).invoke(
        cli, ["job-schedule", "delete", "--job-schedule-id", "asked"], input="n\n")
    assert result.exit_code == 1 and "Delete job schedule asked and its jobs?" in result.stderr
    assert run_json(env, "job-schedule", "show", "--job-schedule-id", "asked")["state"] == "active"
    run(env, "job-schedule", "delete", "--job-schedule-id", "asked", "--yes")


def test_task_reactivate(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    flag = tmp_path / "flag"
    run(env, "job", "create", "--id", "flakyjob", "--pool-id", POOL)
    run(env, "task", "create", "--job-id", "flakyjob", "--task-id", "flaky",
        "--command-line", f"test -f {flag}", "--max-task-retry-count", "0")
    assert svc.wait_tasks("flakyjob", code=1)["failed"] == 1
    flag.touch()
    run(env, "task", "reactivate", "--job-id", "flakyjob", "--task-id", "flaky")
    assert svc.wait_tasks("flakyjob")["succeeded"] == 1
    info = svc.task("flakyjob", "flaky")["executionInfo"]
    assert info["exitCode"] == 0 and info["retryCount"] == 0
    result = run(env, "task", "reactivate", "--job-id", "flakyjob", "--task-id", "flaky", code=1)
    assert result.stderr.startswith("error: TaskSucceeded: ")


# ------------------------------------------------------------------------- nodes


def test_node_disable_and_enable_scheduling(svc: Service) -> None:
    env = svc.env
    a, b = [n["id"] for n in run_json(env, "node", "list", "--pool-id", POOL)]
    run(env, "node", "disable-scheduling", "--pool-id", POOL, "--node-id", a,
        "--option", "taskcompletion")
    assert svc.node(a)["schedulingState"] == "disabled"
    run(env, "job", "create", "--id", "schedjob", "--pool-id", POOL)
    run(env, "task", "create", "--job-id", "schedjob", "--task-id", "t1", "--command-line", "true")
    run(env, "task", "create", "--job-id", "schedjob", "--task-id", "t2", "--command-line", "true")
    assert svc.wait_tasks("schedjob")["succeeded"] == 2
    assert {svc.task("schedjob", t)["nodeInfo"]["nodeId"] for t in ("t1", "t2")} == {b}
    run(env, "node", "enable-scheduling", "--pool-id", POOL, "--node-id", a)
    assert svc.node(a)["schedulingState"] == "enabled"
    run(env, "node", "disable-scheduling", "--pool-id", POOL, "--node-id", a,
        "--option", "retaineddata", code=2)  # not a disable-scheduling option


def test_node_reboot_and_reimage(svc: Service) -> None:
    env = svc.env
    a, b = [n["id"] for n in run_json(env, "node", "list", "--pool-id", POOL)]
    boot = datetime.fromisoformat(svc.node(a)["lastBootTime"])
    marker = svc.batch.state_dir / "nodes" / b / "shared" / "marker"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("x")
    run(env, "node", "reboot", "--pool-id", POOL, "--node-id", a, "--option", "requeue")
    run(env, "node", "reimage", "--pool-id", POOL, "--node-id", b)
    wait_until(lambda: (n := svc.node(a))["state"] == "idle"
               and datetime.fromisoformat(n["lastBootTime"]) > boot,
               timeout_s=90, what="node rebooted")
    wait_until(lambda: svc.node(b)["state"] == "idle" and not marker.exists(),
               timeout_s=90, what="node reimaged")
    result = run(env, "node", "reboot", "--pool-id", POOL, "--node-id", "no-such-node", code=1)
    assert result.stderr.startswith("error: NodeNotFound: ")


# ---------------------------------------------------------------------- autoscale


def test_pool_autoscale_enable_evaluate_disable(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    pool = ["--pool-id", POOL]
    result = run(env, "pool", "autoscale", "evaluate", *pool, "--formula",
                 "$TargetDedicatedNodes = 2;", code=1)
    assert result.stderr.startswith("error: AutoScaleNotEnabled: ")

    # Enabling evaluates at once: the pool shrinks to the formula's target.
    run(env, "pool", "autoscale", "enable", *pool, "--formula", "$TargetDedicatedNodes = 1;",
        "--evaluation-interval", "PT2S")
    shown = run_json(env, "pool", "show", *pool)
    assert shown["enableAutoScale"] is True and shown["autoScaleEvaluationInterval"] == "PT2S"
    assert shown["autoScaleFormula"] == "$TargetDedicatedNodes = 1;"
    wait_until(lambda: run_json(env, "pool", "show", *pool)["targetDedicatedNodes"] == 1,
               what="autoscale applied")
    result = run(env, "pool", "resize", *pool, "--target-dedicated-nodes", "2", code=1)
    assert result.stderr.startswith("error: AutoScaleEnabled: ")

    formula = tmp_path / "formula.txt"
    formula.write_text("$x = 2;\n$TargetDedicatedNodes = $x;\n")
    table = run(env, "pool", "autoscale", "evaluate", *pool, "--formula-file", str(formula)).stdout
    assert "Variable" in table and "$TargetDedicatedNodes" in table and "$x" in table
    assert "$NodeDeallocationOption" in table and "requeue" in table
    autoscale_run = run_json(env, "pool", "autoscale", "evaluate", *pool,
                             "--formula-file", str(formula))
    assert autoscale_run["results"].startswith("$TargetDedicatedNodes=2;")
    assert "$x=2" in autoscale_run["results"] and "error" not in autoscale_run

    # A formula that fails when evaluated: the run's error, exit 1.
    bad = ["--formula", "$TargetDedicatedNodes = 1 / 0;"]
    result = run(env, "pool", "autoscale", "evaluate", *pool, *bad, code=1)
    assert "error: FormulaEvaluationError: " in result.stderr
    assert run_json(env, "pool", "autoscale", "evaluate", *pool, *bad,
                    code=1)["error"]["code"] == "FormulaEvaluationError"
    # A formula that does not parse is refused by the service.
    result = run(env, "pool", "autoscale", "enable", *pool, "--formula",
                 "$TargetDedicatedNodes = min(1,;", code=1)
    assert result.stderr.startswith("error: InvalidAutoScaleFormula: ")
    run(env, "pool", "autoscale", "evaluate", *pool, code=2)  # no formula
    run(env, "pool", "autoscale", "evaluate", *pool, "--formula", "$x = 1;",
        "--formula-file", str(formula), code=2)
    run(env, "pool", "autoscale", "enable", *pool, "--formula", "$x = 1;",
        "--evaluation-interval", "soon", code=2)

    run(env, "pool", "autoscale", "disable", *pool)
    assert run_json(env, "pool", "show", *pool)["enableAutoScale"] is False
    # Batch resizes only a steady pool (else 409 PoolBeingResized): the
    # autoscale shrink to 1 may still be under way.
    wait_until(lambda: run_json(env, "pool", "show", *pool)["allocationState"] == "steady",
               what="pool steady")
    run(env, "pool", "resize", *pool, "--target-dedicated-nodes", "2")  # manual again
    nodes = run_json(env, "pool", "wait", *pool, "--timeout-s", "120")
    assert [n["state"] for n in nodes] == ["idle", "idle"]


def test_node_remove(svc: Service) -> None:
    env = svc.env
    a, b = [n["id"] for n in run_json(env, "node", "list", "--pool-id", POOL)]
    run(env, "node", "remove", "--pool-id", POOL, "--node-id", b, "--option", "requeue")
    wait_until(lambda: [n["id"] for n in run_json(env, "node", "list", "--pool-id", POOL)] == [a],
               what="node removed")
    assert run_json(env, "pool", "show", "--pool-id", POOL)["targetDedicatedNodes"] == 1
    result = run(env, "node", "remove", "--pool-id", POOL, "--node-id", "nope", code=1)
    assert result.stderr.startswith("error: ")
    run(env, "pool", "resize", "--pool-id", POOL, "--target-dedicated-nodes", "2")
    nodes = run_json(env, "pool", "wait", "--pool-id", POOL, "--timeout-s", "120")
    assert [n["state"] for n in nodes] == ["idle", "idle"]


def test_pool_wait_fails_when_the_pool_cannot_reach_its_target(svc: Service) -> None:
    env = svc.env
    run(env, "pool", "create", "--id", "unreachable", "--vm-size", "nosuchsize",
        "--target-dedicated-nodes", "1")
    result = run(env, "pool", "wait", "--pool-id", "unreachable", "--timeout-s", "60", code=1)
    assert "pool unreachable: resize error InsufficientInventory: " in result.stderr
    run(env, "pool", "delete", "--pool-id", "unreachable", "--yes")


def test_task_wait_says_when_the_tasks_left_can_never_run(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    job = tmp_path / "deps.json"
    job.write_text(json.dumps({"id": "blockedjob", "poolInfo": {"poolId": POOL},
                               "usesTaskDependencies": True}))
    run(env, "job", "create", "--json-file", str(job))
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([
        {"id": "first", "commandLine": "/bin/sh -c 'exit 5'"},  # a failure blocks by default
        {"id": "second", "commandLine": "true", "dependsOn": {"taskIds": ["first"]}},
        {"id": "third", "commandLine": "true", "dependsOn": {"taskIds": ["second"]}}]))
    run(env, "task", "create", "--job-id", "blockedjob", "--json-file", str(tasks))
    started = time.monotonic()
    result = run(env, "task", "wait", "--job-id", "blockedjob", "--timeout-s", "120", code=1)
    assert time.monotonic() - started < 60  # told, not left to wait out its timeout
    assert ("job blockedjob: the 2 task(s) left can never run: blocked by their "
            "dependencies: second (task first completed") in result.stderr
    assert "; 1 more wait for those" in result.stderr



def test_pool_wait_names_the_node_whose_start_task_failed(svc: Service, tmp_path: Path) -> None:
    env = svc.env
    run(env, "pool", "resize", "--pool-id", POOL, "--target-dedicated-nodes", "1")
    wait_until(lambda: len(run_json(env, "node", "list", "--pool-id", POOL)) == 1,
               what="a host freed")
    spec = tmp_path / "stfail.json"
    spec.write_text(json.dumps({
        "id": "stfail", "vmSize": "any", "targetDedicatedNodes": 1,
        "startTask": {"commandLine": "/bin/sh -c 'exit 3'", "waitForSuccess": True}}))
    try:
        run(env, "pool", "create", "--json-file", str(spec))
        result = run(env, "pool", "wait", "--pool-id", "stfail", "--timeout-s", "120", code=1)
        [node] = json.loads(run(env, "node", "list", "--pool-id", "stfail", "-o", "json").stdout)
        assert node["state"] == "starttaskfailed"
        assert (f"pool stfail: node {node['id']} is starttaskfailed: start task exit code 3"
                in result.stderr), result.stderr
    finally:
        run(env, "pool", "delete", "--pool-id", "stfail", "--yes")
        wait_until(lambda: "stfail" not in [p["id"] for p in run_json(env, "pool", "list")],
                   what="pool stfail deleted")
        run(env, "pool", "resize", "--pool-id", POOL, "--target-dedicated-nodes", "2")
        nodes = run_json(env, "pool", "wait", "--pool-id", POOL, "--timeout-s", "120")
        assert [n["state"] for n in nodes] == ["idle", "idle"]
