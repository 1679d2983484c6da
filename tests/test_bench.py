"""``hpcbatch bench``: benchmark campaigns on the SSH testbed with the mpich and mpi4py wheels.

A 4-host testbed and one pool of 4 nodes; the campaigns run through the CLI
as the user would (``bench run`` / ``report`` / ``compare``), their results
are read back with ``hpcbatch output`` and straight from the storage folder
by the File Conventions names; a ReFrame test runs through the pool with the
``hpcbatch`` launcher and scheduler.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hpcbatch.client.cli import cli
from hpcbatch.storage.fs import default_storage_url
from tests.helpers import account_key, service_on_testbed

ROOT = Path(__file__).resolve().parents[1]
NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None, "HPCBATCH_STATE_DIR": None,
                  "HPCBATCH_STORAGE_URL": None}
PY = f"python={sys.executable}"


def run(env: dict[str, Any], *args: str, code: int | None = 0) -> Result:
    """Invoke ``hpcbatch *args``; check the exit code (unless ``code`` is None)."""
    result = CliRunner(env={**NO_SERVICE_ENV, **env}).invoke(
        cli, list(args), prog_name="hpcbatch", catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (
            f"hpcbatch {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A 4-node pool ``bench`` (inter-node communication) on a 4-host testbed (127.0.16.x)."""
    assert shutil.which("mpiexec"), "MPICH's mpiexec is not on PATH: pip install -e '.[test]'"
    tmp = tmp_path_factory.mktemp("bench")
    with service_on_testbed(tmp, 4, "127.0.16.1") as (client, _bed, _thread):
        client.create_pool({"id": "bench", "vmSize": "testbed", "targetDedicatedNodes": 4,
                            "enableInterNodeCommunication": True})
        nodes = client.wait_for_pool("bench", timeout_s=120)
        assert [n.state for n in nodes] == ["idle"] * 4, [(n.id, n.errors) for n in nodes]
        storage = default_storage_url(tmp / "state")
        env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": client.account,
               "AZURE_BATCH_ACCESS_KEY": account_key(tmp / "state"),
               "HPCBATCH_STORAGE_URL": storage}
        yield {"client": client, "env": env, "tmp": tmp,
               "storage_root": Path(storage.removeprefix("file://"))}


@pytest.fixture(scope="module")
def ringtest(bed: dict[str, Any]) -> dict[str, Any]:
    """The built-in ring test over 1, 2 and 4 nodes x 1 and 2 ranks per node, 3 repeats."""
    summary_file = bed["tmp"] / "ringtest.json"
    result = run(bed["env"], "bench", "run", "builtin:mpi4py-ringtest", "--pool-id", "bench",
                 "--job-id", "ring", "--set", PY, "--set", "loops=10", "--summary-file", str(summary_file))
    return {"result": result, "summary": json.loads(summary_file.read_text())}


SLEEP_CAMPAIGN = """
name: sleeper
mpi: none
repeats: 3
time_limit_s: 60
variables: {{python: {python}, delay: 0.2}}
benchmarks:
  - name: nap
    command: >-
      {{python}} -c "import time; t = time.perf_counter(); time.sleep({{delay}});
      print(f'elapsed {{{{time.perf_counter() - t:.6f}}}} s')"
    figures:
      - {{name: elapsed, regex: 'elapsed (?P<elapsed>[0-9.]+) s', source_unit: s, unit: ms}}
"""


def _campaign(tmp: Path, name: str, text: str) -> str:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------- run


def test_builtin_campaign_runs_every_point_and_repeat(ringtest: dict[str, Any]) -> None:
    summary = ringtest["summary"]
    assert summary["passed"] is True
    runs = summary["runs"]
    assert len(runs) == 18
    points = sorted({(r["params"]["nodes"], r["params"]["ppn"]) for r in runs})
    assert points == [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2)]
    assert all(not r["sanity"] and r["exitCode"] == 0 for r in runs)
    groups = summary["groups"]
    assert len(groups) == 6 and all(g["n"] == 3 and g["unit"] == "us" for g in groups)
    table = ringtest["result"].stdout
    assert "ring_time" in table and "nodes=4 ppn=2" in table
    assert "18/18 run(s) sane" in ringtest["result"].stderr


def test_figure_is_the_number_in_the_runs_stdout(bed: dict[str, Any],
                                                 ringtest: dict[str, Any]) -> None:
    run_ = next(r for r in ringtest["summary"]["runs"]
                if r["params"] == {"nodes": 4, "ppn": 2, "msg_size": 1} and r["repeat"] == 1)
    stdout = bed["client"].download_task_file("ring", run_["taskId"], "stdout.txt").decode()
    m = re.search(r"time for 10 loops = (\S+) seconds \((\d+) processes", stdout)
    assert m, stdout
    assert int(m.group(2)) == 8  # 4 nodes x 2 ranks: the run had the ranks it was asked for
    (fig,) = run_["figures"]
    assert fig["name"] == "ring_time" and fig["unit"] == "us"
    assert fig["value"] == pytest.approx(float(m.group(1)) * 1e6, rel=1e-9)


def test_reference_far_off_exits_1_naming_the_figure(bed: dict[str, Any]) -> None:
    text = f"""
name: ring-ref
repeats: 1
variables: {{python: {sys.executable}}}
parameters: {{nodes: [2]}}
benchmarks:
  - name: ring
    command: "{{python}} -m mpi4py.bench ringtest -l 10"
    figures:
      - {{name: ring_time, regex: 'loops = (?P<ring_time>\\S+) seconds', source_unit: s, unit: us}}
    references:
      "*": {{ring_time: [1000000, -0.5, 0.5, us]}}
      "label:other": {{ring_time: [1, -0.5, 0.5, us]}}
"""
    result = run(bed["env"], "bench", "run", _campaign(bed["tmp"], "ring-ref", text),
                 "--pool-id", "bench", code=1)
    assert re.search(r"reference: ring ring_time \[nodes=2 ppn=1\]: \S+ us is outside "
                     r"\[5e\+05, 1\.5e\+06\] us \(reference 1e\+06 us, tolerance -0\.5/0\.5; "
                     r"-\d+\.\d%\)", result.stderr), result.stderr
    assert "FAIL" in result.stdout and "FAILED" in result.stderr


def test_crashing_program_fails_sanity_with_its_stderr(bed: dict[str, Any]) -> None:
    text = f"""
name: crash
repeats: 1
variables: {{python: {sys.executable}}}
benchmarks:
  - name: boom
    command: >-
      {{python}} -c "import sys; print('starting'); sys.stderr.write('Segmentation fault
      (simulated) in rank 0\\n'); sys.exit(11)"
    figures:
      - {{name: t, regex: 'took (?P<t>\\S+) s', unit: s}}
"""
    result = run(bed["env"], "bench", "run", _campaign(bed["tmp"], "crash", text),
                 "--pool-id", "bench", "-o", "json", code=1)
    summary = json.loads(result.stdout)
    (run_,) = summary["runs"]
    assert run_["exitCode"] == 11
    assert "exit code 11, expected 0" in run_["sanity"]
    assert any("figure t not found" in p for p in run_["sanity"])
    assert "Segmentation fault (simulated) in rank 0" in result.stderr
    assert "sanity: boom-000-r0" in result.stderr


def test_runs_on_more_nodes_than_the_pool_has_are_refused_before_the_job(
        bed: dict[str, Any]) -> None:
    """``--set nodes=1,8`` on the 4-node pool: the campaign is refused before its job is
    created (it used to run the 1-node runs, then die adding the first 8-node task and
    lose what had run), the message naming the pool's target, the node count and the fix."""
    result = run(bed["env"], "bench", "run", "builtin:mpi4py-helloworld", "--pool-id", "bench",
                 "--job-id", "too-big", "--set", PY, "--set", "nodes=1,8", "--set", "ppn=1",
                 "--repeats", "1", code=1)
    assert result.stderr.strip().splitlines()[-1] == (
        "error: PoolTooSmall: pool bench has a target of 4 node(s) and no autoscale formula: "
        "a run on 8 nodes (parameter nodes) would wait for nodes forever; ask for at most 4, "
        "or grow the pool first (hpcbatch pool resize --pool-id bench --target-dedicated-nodes "
        "8; the inventory needs that many hosts matching its vmSize)")
    assert "JobNotFound" in run(bed["env"], "job", "show", "--job-id", "too-big", code=1).stderr


# ------------------------------------------------------------------------- report


def test_report_writes_tables_and_plots(bed: dict[str, Any], ringtest: dict[str, Any],
                                        tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    md = run(bed["env"], "bench", "report", "ring", "--format", "markdown").stdout
    assert md.startswith("| benchmark | point | figure | n | mean |")
    assert md.count("\n") == 2 + 6
    csv_text = run(bed["env"], "bench", "report", "ring", "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("benchmark,point,figure,n,mean,stdev")
    rows = json.loads(run(bed["env"], "bench", "report", "ring", "--format", "json").stdout)
    means = {r["point"]: r["mean"] for r in rows}
    groups = {" ".join(f"{k}={v}" for k, v in g["params"].items()): g["mean"]
              for g in ringtest["summary"]["groups"]}
    assert means == groups
    text = run(bed["env"], "bench", "report", "ring", "--plots", str(tmp_path)).stdout
    assert "ring_time" in text.splitlines()[0] or "figure" in text.splitlines()[0]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["ringtest-ring_time-nodes.png", "ringtest-ring_time-spread.png"]
    for name in pngs:
        with Image.open(tmp_path / name) as img:
            assert img.size == (800, 500)
            stat = ImageStat.Stat(img.convert("L"))
            assert stat.extrema[0][0] < 100 and stat.extrema[0][1] > 200  # ink on paper
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "nodes=4 ppn=2" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_compare_flags_a_slowdown_and_not_a_rerun(bed: dict[str, Any]) -> None:
    path = _campaign(bed["tmp"], "sleeper", SLEEP_CAMPAIGN.format(python=sys.executable))
    for job, delay in (("Sleep_A1", "0.2"), ("Sleep_A2", "0.2"), ("Sleep_B", "0.6")):
        run(bed["env"], "bench", "run", path, "--pool-id", "bench", "--job-id", job,
            "--set", f"delay={delay}")
    same = run(bed["env"], "bench", "compare", "Sleep_A1", "Sleep_A2", "--format", "json")
    (row,) = json.loads(same.stdout)
    assert row["verdict"] == "same" and row["nA"] == row["nB"] == 3
    assert "0 regression(s)" in same.stderr
    slow = run(bed["env"], "bench", "compare", "Sleep_A1", "Sleep_B", "--format", "json", code=1)
    (row,) = json.loads(slow.stdout)
    assert row["verdict"] == "regression" and row["p"] < 0.05
    assert row["meanB"] == pytest.approx(600, rel=0.2) and row["meanA"] == pytest.approx(200, rel=0.2)
    assert "1 regression(s)" in slow.stderr
    # the other way round it is an improvement, not a regression
    better = run(bed["env"], "bench", "compare", "Sleep_B", "Sleep_A1", "--format", "json")
    assert json.loads(better.stdout)[0]["verdict"] == "improvement"


# ------------------------------------------------------------------------ results


def test_results_by_the_file_conventions(bed: dict[str, Any], ringtest: dict[str, Any],
                                         tmp_path: Path) -> None:
    env = bed["env"]
    run_ = ringtest["summary"]["runs"][0]
    task = run_["taskId"]
    listed = json.loads(run(env, "-o", "json", "output", "list", "--job-id", "ring",
                            "--task-id", task).stdout)
    assert {(o["kind"], o["path"]) for o in listed} >= {
        ("TaskOutput", "figures.json"), ("TaskLog", "stdout.txt"), ("TaskLog", "stderr.txt")}
    dest = tmp_path / "figures.json"
    run(env, "output", "download", "--job-id", "ring", "--task-id", task, "--kind", "TaskOutput",
        "--path", "figures.json", "--destination", str(dest))
    assert json.loads(dest.read_text())["figures"] == run_["figures"]
    job_outputs = json.loads(run(env, "-o", "json", "output", "list", "--job-id", "ring").stdout)
    assert [(o["kind"], o["path"]) for o in job_outputs] == [("JobOutput", "summary.json")]

    # A reader that knows only the conventions: the container is job-{id} when the ID is a
    # valid container name, else job-{safe}-{sha1 of the lower-cased ID} (.NET's
    # ContainerNameUtils); task outputs are {taskId}/${kind}/{path}, job outputs ${kind}/{path}.
    root = bed["storage_root"]
    stdout = (root / "job-ring" / task / "$TaskLog" / "stdout.txt").read_text()
    assert "time for 10 loops" in stdout
    figures = json.loads((root / "job-ring" / task / "$TaskOutput" / "figures.json").read_text())
    assert figures["figures"] == run_["figures"]
    assert json.loads((root / "job-ring" / "$JobOutput" / "summary.json").read_text())[
        "jobId"] == "ring"
    munged = f"job-sleep-a1-{hashlib.sha1(b'sleep_a1').hexdigest()}"
    summary_blob = root / munged / "$JobOutput" / "summary.json"
    if not summary_blob.exists():  # the compare test makes it; run it here when alone
        pytest.skip("Sleep_A1 not run in this session")
    assert json.loads(summary_blob.read_text())["jobId"] == "Sleep_A1"
    assert (root / munged / "nap-000-r2" / "$TaskOutput" / "figures.json").is_file()


# ------------------------------------------------------------------------- ReFrame


def test_reframe_test_runs_through_the_pool(bed: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("reframe")
    env = {k: v for k, v in os.environ.items() if k not in NO_SERVICE_ENV}
    env.update(bed["env"])
    env.update({"HPCBATCH_POOL_ID": "bench", "HPCBATCH_PYTHON": sys.executable,
                "RFM_CONFIG_FILES": "", "HOME": str(tmp_path)})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    report = tmp_path / "report.json"
    examples = ROOT / "examples" / "reframe"
    done = subprocess.run(
        [sys.executable, "-c", ("import sys; from reframe.frontend.cli import main; "
                                "sys.argv[0] = 'reframe'; main()"),
         "-C", str(examples / "settings.py"), "-c", str(examples / "mpi4py_pingpong.py"),
         "--prefix", str(tmp_path / "rfm"), "--report-file", str(report), "-r",
         "--performance-report"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "PASSED" in out and "FAILED" not in out.split("SUMMARY")[-1], out
    cases = json.loads(report.read_text())["runs"][0]["testcases"]
    names = sorted(f"{c['system']}:{c['partition']}" for c in cases)
    assert names == ["hpcbatch:login", "hpcbatch:pool"]
    for case, name in zip(sorted(cases, key=lambda c: c["partition"]), names):
        assert case["result"] == "pass", case
        bandwidth = case["perfvalues"][f"{name}:bandwidth"]
        latency = case["perfvalues"][f"{name}:latency"]
        assert bandwidth[0] > 0 and bandwidth[4] == "MB/s" and bandwidth[5] == "pass"
        assert latency[0] > 0 and latency[4] == "us" and latency[5] == "pass"
        assert f"{name}" in out and "bandwidth" in out
    # the launches were multi-instance tasks of 2 nodes on the pool
    client = bed["client"]
    jobs = [j.id for j in client.list_jobs()]
    assert any(j.startswith("reframe-") for j in jobs), jobs
    mpi_jobs = [j for j in jobs if j.startswith("mpi-")]
    assert mpi_jobs, jobs
    tasks = client.list_tasks(mpi_jobs[-1])
    assert tasks and tasks[0].multi_instance_settings.number_of_instances == 2
