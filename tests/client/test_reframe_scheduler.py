"""The ReFrame ``hpcbatch`` scheduler against a real service (:class:`hpcbatch.LocalBatch`).

A job script that outlives the test's ``time_limit`` is ended by the service
(``maxWallClockTime``) and must reach ReFrame as a timeout, as every ReFrame
scheduler reports one: the job's state ``TIMEOUT`` and a ``JobError`` from
``wait``, so the test fails whatever its sanity function says. A job script the
service refuses leaves no Batch job behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch import LocalBatch
from hpcbatch.batch.states import JobState

pytest.importorskip("reframe")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A service with one local node in pool ``p`` (inter-node communication on), and
    pool ``solo`` without inter-node communication (no nodes)."""
    with LocalBatch(nodes=1) as c:
        c.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 1,
                       "enableInterNodeCommunication": True})
        c.create_pool({"id": "solo", "vmSize": "local", "targetDedicatedNodes": 0})
        c.wait_for_pool("p", timeout_s=120)
        yield c


def test_a_job_ended_by_its_time_limit_is_a_reframe_timeout(client: Any, tmp_path: Path) -> None:
    from reframe.core.exceptions import JobError

    from hpcbatch.client.reframe_backend import HpcbatchJobScheduler

    (tmp_path / "job.sh").write_text("sleep 60\n")
    sched = HpcbatchJobScheduler()
    sched._client = client
    job = sched.make_job("rfm_sleep", workdir=str(tmp_path), script_filename="job.sh",
                         stdout="job.out", stderr="job.err", sched_access=["--pool-id=p"])
    job.time_limit = 1
    sched.submit(job)
    started = time.monotonic()
    with pytest.raises(JobError, match="timed out"):
        sched.wait(job)
    assert job.state == "TIMEOUT"
    assert time.monotonic() - started < 30
    failure = client.get_task(job.batch_job_id, job.task_id).execution_info.failure_info
    assert failure.code == "TaskEnded" and "maxWallClockTime" in failure.message


def test_a_job_script_the_service_refuses_leaves_no_batch_job(client: Any,
                                                              tmp_path: Path) -> None:
    from reframe.core.exceptions import JobError

    from hpcbatch.client.reframe_backend import HpcbatchJobScheduler

    (tmp_path / "job.sh").write_text("true\n")
    sched = HpcbatchJobScheduler()
    sched._client = client
    job = sched.make_job("rfm_refused", workdir=str(tmp_path), script_filename="job.sh",
                         stdout="job.out", stderr="job.err", sched_access=["--pool-id=solo"])
    with pytest.raises(JobError, match="enableInterNodeCommunication"):
        sched.submit(job)
    left = [j.id for j in client.list_jobs()
            if j.id.startswith("reframe-rfm_refused") and j.state != JobState.deleting]
    assert left == []
