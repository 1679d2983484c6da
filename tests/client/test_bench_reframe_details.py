"""``bench`` and ReFrame details a campaign user sees, at their seams (no service).

The ReFrame scheduler's ``poll`` with a stand-in client (the service's Task -
Get and Task - List Subtasks answers); a reference check's message;
``bench run --dry-run``'s plan.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from hpcbatch.campaigns.results import Check
from hpcbatch.client.cli import cli


class FakeClient:
    """Task - Get of a running 3-instance task, and its subtasks (out of order)."""

    def __init__(self) -> None:
        self.state = "running"

    def get_task(self, job_id: str, task_id: str) -> Any:
        return SimpleNamespace(state=self.state, node_info=SimpleNamespace(node_id="n-master"),
                               execution_info=SimpleNamespace(exit_code=0, failure_info=None))

    def list_subtasks_json(self, job_id: str, task_id: str) -> list[dict[str, Any]]:
        return [{"id": 2, "nodeInfo": {"nodeId": "n-two"}, "state": "running"},
                {"id": 1, "nodeInfo": {"nodeId": "n-one"}, "state": "running"}]

    def download_task_file(self, *args: Any, **kwargs: Any) -> bytes:
        return b""

    def terminate_job(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_reframe_job_nodelist_is_every_node_of_the_task_master_first(tmp_path: Path) -> None:
    pytest.importorskip("reframe")
    from hpcbatch.client.reframe_backend import HpcbatchJobScheduler

    sched = HpcbatchJobScheduler()
    fake = FakeClient()
    sched._client = fake
    job = sched.make_job("rfm_job", workdir=str(tmp_path), script_filename="job.sh",
                         stdout="job.out", stderr="job.err")
    job.batch_job_id, job.batch_nodes = "reframe-x", 3
    job.out_paths = (os.path.join(tmp_path, "job.out"), os.path.join(tmp_path, "job.err"))
    sched.poll(job)
    assert job.state == "RUNNING"
    assert job.nodelist == ["n-master", "n-one", "n-two"]
    fake.state = "completed"
    sched.poll(job)
    assert job.nodelist == ["n-master", "n-one", "n-two"]
    assert job.exitcode == 0


def test_reference_check_names_each_open_bound() -> None:
    check = Check(benchmark="pingpong", figure="latency", key="latency", unit="us",
                  params={"nodes": 2}, labels={}, mean=4.5e4, reference=[2e4, None, 0.5, "us"],
                  lower_bound=None, upper_bound=3e4, passed=False)
    assert "outside [-inf, 3e+04] us" in check.describe(), check.describe()
    check = Check(benchmark="pingpong", figure="bandwidth", key="bandwidth", unit="MB/s",
                  params={}, labels={}, mean=1.0, reference=[10, -0.5, None, "MB/s"],
                  lower_bound=5.0, upper_bound=None, passed=False)
    assert "outside [5, inf] MB/s" in check.describe(), check.describe()


def test_reference_check_of_a_zero_reference_ends_without_an_empty_deviation() -> None:
    check = Check(benchmark="hello", figure="errors", key="errors", unit="count",
                  params={"nodes": 1}, labels={}, mean=3.0, reference=[0, -0.1, 0.1, "count"],
                  lower_bound=0.0, upper_bound=0.0, passed=False)
    assert check.describe().endswith("(reference 0 count, tolerance -0.1/0.1)"), check.describe()
    check.reference, check.upper_bound = [2, -0.1, 0.1, "count"], 2.2
    assert check.describe().endswith("tolerance -0.1/0.1; +50.0%)"), check.describe()


def test_dry_run_shows_every_parameter_that_varies() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "run", "builtin:mpi4py-ringtest", "--pool-id", "p", "--dry-run",
              "--repeats", "1", "--set", "nodes=2", "--set", "msg_size=1,8"],
        prog_name="hpcbatch", catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines  # ppn 1, 2 x msg_size 1, 8
    points = sorted(" ".join(w for w in line.split() if "=" in w and w.split("=")[0]
                             in ("nodes", "ppn", "msg_size")) for line in lines)
    assert points == ["nodes=2 ppn=1 msg_size=1", "nodes=2 ppn=1 msg_size=8",
                      "nodes=2 ppn=2 msg_size=1", "nodes=2 ppn=2 msg_size=8"], lines
