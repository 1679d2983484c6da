"""The Job Manager and Task Processor templates, on a real service over the SSH testbed.

``hpcbatch init`` copies the starter projects; the job manager template splits
a job into 1,000 tasks as a real job manager task (and again after a failed
first attempt); the task processor template runs as a job's tasks and saves
outputs by the File Conventions; the frameworks' exit codes follow the
reference's tables ("Exit codes and exceptions in the Job Manager / Task
Processor template").
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpcbatch.client.cli import cli
from hpcbatch.storage.conventions import TaskOutputKind, TaskOutputStorage
from hpcbatch.storage.fs import default_storage_url, open_storage, storage_environment
from hpcbatch.templates import TEMPLATE_NAMES, copy_template, template_files
from hpcbatch.templates.job_manager import (
    JobManagerException,
    JobManagerExitCode,
    JobSplitter,
    run_job_manager,
)
from hpcbatch.templates.task_processor import (
    TaskProcessor,
    TaskProcessorException,
    TaskProcessorExitCode,
    run_task_processor,
)
from tests.helpers import account_key, service_on_testbed, wait_until

POOL = "tpl"
PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "hpcbatch" / "templates"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """A 3-host testbed (127.0.4.x), a service, and pool ``tpl``: 3 nodes x 4 slots."""
    tmp = tmp_path_factory.mktemp("templates")
    with service_on_testbed(tmp, 3, "127.0.4.1") as (client, _bed, _):
        client.create_pool({"id": POOL, "vmSize": "testbed", "targetDedicatedNodes": 3,
                            "taskSlotsPerNode": 4})
        assert [n.state for n in client.wait_for_pool(POOL, timeout_s=180)] == ["idle"] * 3
        yield client, tmp


@pytest.fixture()
def jm_env(env) -> dict[str, str]:
    """The environment the service gives a job manager task (for in-process runs)."""
    client, tmp = env
    return {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
            "AZURE_BATCH_ACCESS_KEY": account_key(tmp / "state")}


def _init(kind: str, directory: Path) -> None:
    result = CliRunner().invoke(cli, ["init", kind, str(directory)])
    assert result.exit_code == 0, result.output
    assert (directory / "main.py").is_file() and (directory / "parameters.json").is_file()


def _write_main(directory: Path, body: str) -> None:
    (directory / "main.py").write_text(textwrap.dedent(body))


def _wait_job_completed(client, job_id: str, timeout_s: float = 300) -> Any:
    return wait_until(lambda: (j := client.get_job(job_id)).state == "completed" and j,
                      timeout_s=timeout_s, interval_s=0.5, what=f"job {job_id} completed")


def _run_jm(splitter_cls, env: dict[str, str], argv: list[str] | None = None,
            **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_job_manager(splitter_cls, argv or [], env=env, stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------ hpcbatch init


def test_init_copies_each_template_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    for name in TEMPLATE_NAMES:
        dest = tmp_path / name / "nested"
        result = runner.invoke(cli, ["init", name, str(dest)])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in dest.iterdir()) == ["README.md", "main.py", "parameters.json"]
        assert template_files(name) == ["README.md", "main.py", "parameters.json"]
        for f in template_files(name):
            assert (dest / f).read_bytes() == (PACKAGE_TEMPLATES / name / f).read_bytes()
        json.loads((dest / "parameters.json").read_text())  # valid JSON
        (dest / "main.py").write_text("# edited\n")
        again = runner.invoke(cli, ["init", name, str(dest)])
        assert again.exit_code == 1 and "already holds" in again.output and "--force" in again.output
        assert (dest / "main.py").read_text() == "# edited\n"  # nothing replaced
        forced = runner.invoke(cli, ["init", name, str(dest), "--force"])
        assert forced.exit_code == 0, forced.output
        assert (dest / "main.py").read_bytes() == (PACKAGE_TEMPLATES / name / "main.py").read_bytes()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert runner.invoke(cli, ["init", "job-manager", str(a_file)]).exit_code != 0
    with pytest.raises(Exception, match="unknown template"):
        copy_template("nope", tmp_path / "x")


def test_the_starter_projects_work_as_copied(tmp_path: Path) -> None:
    """The copied job splitter can be unit tested; the copied task processor runs and saves."""
    _init("job-manager", tmp_path / "jm")
    _init("task-processor", tmp_path / "tp")
    sys.path.insert(0, str(tmp_path / "jm"))
    sys.modules.pop("main", None)
    try:
        import main as jm_main  # type: ignore[import-not-found]

        params = json.loads((tmp_path / "jm" / "parameters.json").read_text())
        tasks = list(jm_main.MyJobSplitter(parameters=params, job_id="j").split())
        assert [t["id"] for t in tasks] == [f"myTask{i}" for i in range(1, 11)]
    finally:
        sys.path.remove(str(tmp_path / "jm"))
        sys.modules.pop("main", None)
    import subprocess

    wd = tmp_path / "task" / "wd"
    wd.mkdir(parents=True)
    (wd.parent / "stdout.txt").write_text("log line\n")
    storage_url = (tmp_path / "storage").as_uri()
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "tp" / "main.py")], cwd=wd, check=False, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "AZ_BATCH_JOB_ID": "job1", "AZ_BATCH_TASK_ID": "t1",
             "AZ_BATCH_TASK_WORKING_DIR": str(wd), **storage_environment(storage_url)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = TaskOutputStorage(open_storage(storage_url), "job1", "t1")
    assert outputs.get_bytes(TaskOutputKind.TaskOutput, "output.txt") == b"hello from task t1\n"


# ------------------------------------------------------------------- job manager, end to end


SPLITTER_1000 = """\
    import sys
    import time
    from pathlib import Path

    from hpcbatch.templates.job_manager import JobSplitter, run_job_manager

    HERE = Path(__file__).resolve().parent


    class Splitter(JobSplitter):
        def split(self):
            marker = HERE / "first-attempt-failed"
            fail_at = int(self.parameters.get("FailFirstAttemptAt", "0"))
            for i in range(int(self.parameters["TaskCount"])):
                if fail_at and i == fail_at and not marker.exists():
                    marker.write_text(str(i))
                    raise RuntimeError(f"first attempt fails after {i} tasks")
                yield {"id": f"task-{i}", "commandLine": "/bin/true"}
                time.sleep(float(self.parameters.get("DelayS", "0")))
            (HERE / "split-finished").write_text(repr(time.time()))


    if __name__ == "__main__":
        sys.exit(run_job_manager(Splitter))
    """


def _job_manager_job(client, job_id: str, directory: Path, **jm: Any) -> None:
    client.create_job({
        "id": job_id, "poolInfo": {"poolId": POOL}, "onAllTasksComplete": "terminatejob",
        "jobManagerTask": {"id": "jobmanager",
                           "commandLine": f"{sys.executable} {directory / 'main.py'}",
                           "killJobOnCompletion": False,
                           "authenticationTokenSettings": {"access": ["job"]}, **jm}})


def test_job_manager_template_splits_a_job_into_1000_tasks(env, tmp_path: Path) -> None:
    client, _ = env
    jm_dir = tmp_path / "jm"
    _init("job-manager", jm_dir)
    _write_main(jm_dir, SPLITTER_1000)
    (jm_dir / "parameters.json").write_text(json.dumps({"TaskCount": "1000", "DelayS": "0.003"}))
    _job_manager_job(client, "split1000", jm_dir, runExclusive=False)

    job = _wait_job_completed(client, "split1000")
    log = client.download_task_file("split1000", "jobmanager", "stdout.txt").decode()
    assert job.execution_info.terminate_reason == "AllTasksComplete"
    tasks = {t.id: t for t in client.list_tasks("split1000")}
    assert len(tasks) == 1001, log
    assert set(tasks) == {"jobmanager"} | {f"task-{i}" for i in range(1000)}
    assert all(t.state == "completed" and t.execution_info.exit_code == 0
               and t.execution_info.result == "success" for t in tasks.values())
    assert client.get_task_counts("split1000")["succeeded"] == 1001
    # The first tasks ran while split() was still yielding.
    split_finished = float((jm_dir / "split-finished").read_text())
    first_start = min(t.execution_info.start_time for tid, t in tasks.items() if tid != "jobmanager")
    assert first_start.timestamp() < split_finished - 1.0
    # A log line per batch of 100, then the summary.
    batches = [line for line in log.splitlines() if "] batch " in line]
    assert len(batches) >= 10 and all(" 0 skipped" in line for line in batches), log
    assert "done: split() yielded 1000 tasks; 1000 added, 0 skipped" in log


def test_a_retried_job_manager_skips_existing_tasks(env, tmp_path: Path) -> None:
    client, _ = env
    jm_dir = tmp_path / "jm"
    _init("job-manager", jm_dir)
    _write_main(jm_dir, SPLITTER_1000)
    (jm_dir / "parameters.json").write_text(json.dumps({"TaskCount": "1000",
                                                        "FailFirstAttemptAt": "150"}))
    _job_manager_job(client, "retry1000", jm_dir, constraints={"maxTaskRetryCount": 1})

    job = _wait_job_completed(client, "retry1000")
    log = client.download_task_file("retry1000", "jobmanager", "stdout.txt").decode()
    assert job.execution_info.terminate_reason == "AllTasksComplete", log
    assert (jm_dir / "first-attempt-failed").read_text() == "150"
    jm = client.get_task("retry1000", "jobmanager")
    assert jm.execution_info.retry_count == 1 and jm.execution_info.exit_code == 0
    tasks = client.list_tasks("retry1000")
    assert len(tasks) == 1001
    assert sorted(t.id for t in tasks if t.id != "jobmanager") == sorted(
        f"task-{i}" for i in range(1000))
    assert all(t.execution_info.exit_code == 0 for t in tasks)
    assert "(job manager task jobmanager, retry 1)" in log, log
    assert "done: split() yielded 1000 tasks; 850 added, 150 skipped (already existed)" in log, log


# ------------------------------------------------------------ job manager exit codes, in process


class _Counting(JobSplitter):
    count = 3
    prefix = "t"

    def split(self):
        for i in range(self.count):
            yield {"id": f"{self.prefix}{i}", "commandLine": "/bin/true"}


def _job(client, job_id: str, **extra: Any) -> str:
    client.create_job({"id": job_id, "poolInfo": {"poolId": POOL}, **extra})
    return job_id


def _ids(client, job_id: str) -> list[str]:
    return sorted(t.id for t in client.list_tasks(job_id, select="id"))


def test_split_raising_an_unexpected_exception_exits_2_and_keeps_the_yielded_tasks(
        env, jm_env) -> None:
    client, _ = env

    class Broken(JobSplitter):
        def split(self):
            yield {"id": "a", "commandLine": "/bin/true"}
            yield {"id": "b", "commandLine": "/bin/true"}
            raise ValueError("frame list is corrupt")

    job = _job(client, "jm-unexpected")
    code, out, err = _run_jm(Broken, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == JobManagerExitCode.UNEXPECTED_ERROR == 2
    assert "ValueError: frame list is corrupt" in out and "Traceback" in out
    assert "Traceback" in err
    assert "split() failed after yielding 2 tasks" in out
    assert _ids(client, job) == ["a", "b"]  # yielded before the failure: added, they run


def test_split_raising_job_manager_exception_exits_1(env, jm_env) -> None:
    client, _ = env

    class Explained(JobSplitter):
        def split(self):
            yield {"id": "a", "commandLine": "/bin/true"}
            raise JobManagerException("input container is empty", hint="upload the frames first")

    job = _job(client, "jm-expected")
    code, out, err = _run_jm(Explained, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == JobManagerExitCode.JOB_MANAGER_ERROR == 1
    assert "input container is empty" in out
    assert "hint: upload the frames first" in err and "Traceback" not in err
    assert _ids(client, job) == ["a"]


def test_a_task_the_service_rejects_exits_1_naming_it(env, jm_env) -> None:
    client, _ = env

    class Rejected(JobSplitter):
        def split(self):
            yield from ({"id": f"ok{i}", "commandLine": "/bin/true"} for i in range(5))
            # dependsOn in a job without usesTaskDependencies: only the service knows it is bad
            yield {"id": "bad", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["ok0"]}}
            yield from ({"id": f"late{i}", "commandLine": "/bin/true"} for i in range(5))

    job = _job(client, "jm-rejected")
    code, out, _err = _run_jm(Rejected, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == 1
    assert "task bad: TaskDependenciesNotSpecifiedOnJob" in out, out
    assert "bad" not in _ids(client, job) and "ok0" in _ids(client, job)


def test_a_job_that_no_longer_takes_tasks_exits_1(env, jm_env) -> None:
    client, _ = env
    job = _job(client, "jm-completed")
    client.terminate_job(job)
    wait_until(lambda: client.get_job(job).state == "completed", what="job completed")
    code, out, err = _run_jm(_Counting, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == 1
    assert "JobCompleted" in out and "hint:" in err


def test_expected_configuration_failures_exit_1(env, jm_env, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = env
    job = _job(client, "jm-config")
    monkeypatch.chdir(tmp_path)
    # no job ID
    code, out, _ = _run_jm(_Counting, dict(jm_env))
    assert code == 1 and "AZ_BATCH_JOB_ID is not set" in out
    # credentials half set
    code, out, _ = _run_jm(_Counting, {"AZURE_BATCH_ENDPOINT": client.endpoint,
                                       "AZ_BATCH_JOB_ID": job})
    assert code == 1 and "AZURE_BATCH_ACCOUNT, AZURE_BATCH_ACCESS_KEY" in out
    # a job that does not exist
    code, out, _ = _run_jm(_Counting, {**jm_env, "AZ_BATCH_JOB_ID": "no-such-job"})
    assert code == 1 and "JobNotFound" in out
    # parameters.json that is not a JSON object
    (tmp_path / "parameters.json").write_text('{"StartFrame": 1,')
    code, out, _ = _run_jm(_Counting, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == 1 and "parameters.json is not valid JSON" in out
    (tmp_path / "parameters.json").write_text('["StartFrame"]')
    code, out, _ = _run_jm(_Counting, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == 1 and "holds a JSON list, not an object" in out
    (tmp_path / "parameters.json").unlink()

    class Twice(JobSplitter):
        def split(self):
            yield {"id": "same", "commandLine": "/bin/true"}
            yield {"id": "SAME", "commandLine": "/bin/true"}  # IDs ignore case

    code, out, _ = _run_jm(Twice, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == 1 and "yielded task ID 'SAME' twice" in out

    class NotATask(JobSplitter):
        def split(self):
            yield "task-1"

    code, out, _ = _run_jm(NotATask, {**jm_env, "AZ_BATCH_JOB_ID": job})
    assert code == 1 and "split() yielded a str as task #1" in out
    code, out, _ = _run_jm(_Counting, {}, ["--job-id"])  # a malformed framework option
    assert code == 1 and "bad command line" in out


def test_parameters_and_context_reach_split_and_existing_tasks_are_skipped(
        env, jm_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = env
    job = _job(client, "jm-params", metadata=[{"name": "owner", "value": "me"}])
    seen: dict[str, Any] = {}

    class FromParameters(JobSplitter):
        def split(self):
            seen.update(parameters=self.parameters, job=self.job, argv=self.argv,
                        jm=self.job_manager_task)
            for i in range(self.parameters["Count"]):
                yield {"id": f"p{i}", "commandLine": "/bin/true"}

    (tmp_path / "params.json").write_text(json.dumps({"Count": 150, "Nested": {"a": [1]}}))
    environment = {**jm_env, "AZ_BATCH_JOB_ID": job}
    code, out, _ = _run_jm(FromParameters, environment,
                           ["--parameters", str(tmp_path / "params.json"), "extra"])
    assert code == 0, out
    assert seen["parameters"] == {"Count": 150, "Nested": {"a": [1]}}
    assert seen["job"].id == job
    assert [(m.name, m.value) for m in seen["job"].metadata] == [("owner", "me")]
    assert seen["argv"] == ["extra"] and seen["jm"] is None
    assert "done: split() yielded 150 tasks; 150 added, 0 skipped" in out
    # parameters.json in the working directory; a second run finds every task there
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "parameters.json").write_text(json.dumps({"Count": 200}))
    code, out, _ = _run_jm(FromParameters, {**environment, "AZ_BATCH_TASK_WORKING_DIR": str(wd)})
    assert code == 0, out
    assert "done: split() yielded 200 tasks; 50 added, 150 skipped (already existed)" in out
    assert len(_ids(client, job)) == 200


def test_tasks_are_added_while_split_still_runs(env, jm_env) -> None:
    """A partial batch goes out after batch_delay_s: split() sees its first tasks in the job."""
    client, _ = env
    job = _job(client, "jm-timely")
    observed: list[int] = []

    class Slow(JobSplitter):
        def split(self):
            for i in range(3):
                yield {"id": f"s{i}", "commandLine": "/bin/true"}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                observed[:] = [len(self.client.list_tasks(self.job_id, select="id"))]
                if observed[0] == 3:
                    break
                time.sleep(0.05)
            yield {"id": "s3", "commandLine": "/bin/true"}

    code, out, _ = _run_jm(Slow, {**jm_env, "AZ_BATCH_JOB_ID": job}, batch_delay_s=0.2)
    assert code == 0, out
    assert observed == [3]
    assert "batch 1: 3 tasks (s0 .. s2): 3 added" in out and "batch 2: 1 tasks (s3)" in out


# --------------------------------------------------------------- task processor, in process


def _tp_env(tmp_path: Path, storage_url: str | None = None, task_id: str = "t1") -> dict[str, str]:
    wd = tmp_path / task_id / "wd"
    wd.mkdir(parents=True, exist_ok=True)
    (wd.parent / "stdout.txt").write_text(f"stdout of {task_id}\n")
    env = {"AZ_BATCH_JOB_ID": "tpjob", "AZ_BATCH_TASK_ID": task_id,
           "AZ_BATCH_TASK_WORKING_DIR": str(wd)}
    if storage_url:
        env.update(storage_environment(storage_url))
    return env


def _run_tp(cls, env: dict[str, str], argv: list[str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_task_processor(cls, argv or [], env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


class _Writer(TaskProcessor):
    outputs_to_save = {"result-*.txt": TaskOutputKind.TaskOutput,  # noqa: RUF012 - read, never changed
                       "../stdout.txt": "TaskLog", "missing.bin": TaskOutputKind.TaskPreview}

    def run(self) -> int:
        Path(f"result-{self.task_id}.txt").write_text(f"{self.parameters['Greeting']} {self.job_id}")
        return int(self.parameters.get("ExitCode", 0))


def test_task_processor_returns_run_exit_code_and_saves_outputs(tmp_path: Path) -> None:
    storage_url = (tmp_path / "storage").as_uri()
    env = _tp_env(tmp_path, storage_url)
    Path(env["AZ_BATCH_TASK_WORKING_DIR"], "parameters.json").write_text('{"Greeting": "hi"}')
    code, out, _ = _run_tp(_Writer, env)
    assert code == 0, out
    outputs = TaskOutputStorage(open_storage(storage_url), "tpjob", "t1")
    assert outputs.get_bytes(TaskOutputKind.TaskOutput, "result-t1.txt") == b"hi tpjob"
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stdout.txt") == b"stdout of t1\n"
    assert outputs.list_outputs(TaskOutputKind.TaskPreview) == []
    assert "no file matches output pattern 'missing.bin'" in out
    # run() returning 3 is the exit code; outputs are still saved
    env3 = _tp_env(tmp_path, storage_url, task_id="t3")
    Path(env3["AZ_BATCH_TASK_WORKING_DIR"], "parameters.json").write_text(
        '{"Greeting": "hi", "ExitCode": 3}')
    code, out, _ = _run_tp(_Writer, env3)
    assert code == 3, out
    assert [o.path for o in TaskOutputStorage(open_storage(storage_url), "tpjob", "t3")
            .list_outputs(TaskOutputKind.TaskOutput)] == ["result-t3.txt"]


def test_task_processor_exit_codes_for_failures(tmp_path: Path) -> None:
    class Raises(TaskProcessor):
        def run(self) -> int:
            raise KeyError("Frame1")

    class Explains(TaskProcessor):
        def run(self) -> int:
            raise TaskProcessorException("frame 7 is missing", hint="re-upload it")

    class ForgetsToReturn(TaskProcessor):
        def run(self):  # type: ignore[override]
            pass

    class Distinct(Explains):
        expected_error_exit_code = 101
        unexpected_error_exit_code = 102

    class Starts(TaskProcessor):
        def run(self) -> int:
            return self.run_process(["/no/such/program"])

    class Signalled(TaskProcessor):
        def run(self) -> int:
            return self.run_process("/bin/sh -c 'kill -9 $$'")

    env = _tp_env(tmp_path)
    code, out, err = _run_tp(Raises, env)
    assert code == TaskProcessorExitCode.UNEXPECTED_ERROR == 2
    assert "KeyError: 'Frame1'" in out and "Traceback" in out
    code, out, err = _run_tp(Explains, env)
    assert code == TaskProcessorExitCode.TASK_PROCESSOR_ERROR == 1
    assert "frame 7 is missing" in out and "hint: re-upload it" in err
    code, out, _ = _run_tp(ForgetsToReturn, env)
    assert code == 1 and "returned None, not an exit code" in out
    assert _run_tp(Distinct, env)[0] == 101
    code, out, _ = _run_tp(Starts, env)
    assert code == 1 and "cannot start '/no/such/program'" in out
    assert _run_tp(Signalled, env)[0] == 128 + 9
    # declared outputs without a storage
    code, out, err = _run_tp(_Writer, env, ["--parameters", str(tmp_path / "p.json")])
    assert code == 1 and "cannot read the parameters file" in out
    (tmp_path / "p.json").write_text('{"Greeting": "x"}')
    code, out, err = _run_tp(_Writer, env, ["--parameters", str(tmp_path / "p.json")])
    assert code == 1 and "HPCBATCH_STORAGE_URL is not set" in out, out
    (tmp_path / "p.json").write_text("[1, 2]")
    code, out, _ = _run_tp(_Writer, env, ["--parameters", str(tmp_path / "p.json")])
    assert code == 1 and "not an object" in out


# ------------------------------------------------------------ task processor, end to end


PROCESSOR = """\
    import os
    import sys
    from pathlib import Path

    from hpcbatch.storage.conventions import TaskOutputKind
    from hpcbatch.templates.task_processor import TaskProcessor, run_task_processor


    class Processor(TaskProcessor):
        outputs_to_save = {"result.txt": TaskOutputKind.TaskOutput,
                           "logs/*.log": TaskOutputKind.TaskIntermediate}

        def run(self):
            print(f"processing {self.task_id} in {self.working_dir}", flush=True)
            Path("logs").mkdir()
            Path("logs/progress.log").write_text("100%")
            Path("result.txt").write_text(f"{self.parameters['Greeting']} from {self.task_id}")
            if os.environ.get("RAISE"):
                raise RuntimeError("unexpected")
            return int(os.environ.get("APP_EXIT_CODE", "0"))


    if __name__ == "__main__":
        sys.exit(run_task_processor(Processor))
    """


def test_task_processor_template_runs_as_tasks_and_saves_outputs(env, tmp_path: Path) -> None:
    client, service_dir = env
    tp_dir = tmp_path / "tp"
    _init("task-processor", tp_dir)
    _write_main(tp_dir, PROCESSOR)
    (tp_dir / "parameters.json").write_text(json.dumps({"Greeting": "hello"}))
    client.create_job({"id": "processors", "poolInfo": {"poolId": POOL}})
    command = f"{sys.executable} {tp_dir / 'main.py'}"
    client.create_tasks("processors", [
        {"id": "ok-1", "commandLine": command},
        {"id": "ok-2", "commandLine": command},
        {"id": "app-failed", "commandLine": command,
         "environmentSettings": [{"name": "APP_EXIT_CODE", "value": "3"}]},
        {"id": "raised", "commandLine": command,
         "environmentSettings": [{"name": "RAISE", "value": "1"}]},
    ])
    client.wait_for_tasks("processors", timeout_s=120)
    codes = {t.id: t.execution_info.exit_code for t in client.list_tasks("processors")}
    assert codes == {"ok-1": 0, "ok-2": 0, "app-failed": 3, "raised": 2}
    storage = open_storage(default_storage_url(service_dir / "state"))  # the tasks' storage
    for task_id in codes:
        outputs = TaskOutputStorage(storage, "processors", task_id)
        assert [o.path for o in outputs.list_outputs(TaskOutputKind.TaskOutput)] == ["result.txt"]
        assert outputs.get_bytes(TaskOutputKind.TaskOutput, "result.txt").decode() == \
            f"hello from {task_id}"
        assert [(o.path, o.size_bytes) for o in
                outputs.list_outputs(TaskOutputKind.TaskIntermediate)] == [("logs/progress.log", 4)]
        log = outputs.get_bytes(TaskOutputKind.TaskLog, "stdout.txt").decode()  # saved by the service
        assert f"processing {task_id}" in log and "[task processor] saved result.txt" in log
    raised = client.download_task_file("processors", "raised", "stdout.txt").decode()
    assert "RuntimeError: unexpected" in raised and "exit code 2" in raised
