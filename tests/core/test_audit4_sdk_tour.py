"""What a Batch user running azure-batch SDK scripts meets, against the Batch documents.

A real service (real SQLite); validation-only cases need no node. Each test quotes
the Batch REST reference it checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from hpcbatch.api.server import ServiceThread
from hpcbatch.batch.models import JobPreparationTask, JobReleaseTask
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.core.preparation import job_task_wall_clock
from tests.helpers import running_service


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, ServiceThread]]:
    tmp = tmp_path_factory.mktemp("audit4")
    with running_service(tmp / "state", scheduler_host="127.0.0.1",
                         min_autoscale_interval_s=1) as (client, thread):
        yield client, thread


def test_job_release_task_timeout_longer_than_15_minutes_is_rejected(
        env: tuple[BatchClient, ServiceThread]) -> None:
    # JobReleaseTask.maxWallClockTime: "The default value is 15 minutes. You may not
    # specify a timeout longer than 15 minutes. If you do, the Batch service rejects it
    # with an error; if you are calling the REST API directly, the HTTP status code is
    # 400 (Bad Request)." (REST reference, Job - Add / Job Schedule - Add)
    client, _ = env
    job = {"id": "rel20", "poolInfo": {"poolId": "p"},
           "jobPreparationTask": {"commandLine": "/bin/true"},
           "jobReleaseTask": {"commandLine": "/bin/true", "maxWallClockTime": "PT20M"}}
    with pytest.raises(BatchError) as info:
        client.create_job(job)
    assert info.value.status == 400 and info.value.code == "InvalidPropertyValue"
    assert "jobReleaseTask.maxWallClockTime" in info.value.message
    with pytest.raises(BatchError) as info:
        client.create_job_schedule({"id": "rel20s", "schedule": {},
                                    "jobSpecification": {k: v for k, v in job.items()
                                                         if k != "id"}})
    assert info.value.status == 400 and "jobReleaseTask.maxWallClockTime" in info.value.message
    job["jobReleaseTask"]["maxWallClockTime"] = "PT15M"
    client.create_job(job)
    assert client.get_job("rel20").job_release_task.max_wall_clock_time.total_seconds() == 900


def test_job_preparation_task_without_constraints_has_no_time_limit() -> None:
    # JobPreparationTask.constraints -> TaskConstraints.maxWallClockTime: "If this is not
    # specified, there is no time limit on how long the Task may run." Only the release
    # task has a 15-minute default (JobReleaseTask.maxWallClockTime). Was: 15 minutes for
    # both, so a preparation task that staged data for longer was killed.
    prep = JobPreparationTask.model_validate({"commandLine": "/bin/true"})
    assert job_task_wall_clock(prep) is None
    prep = JobPreparationTask.model_validate(
        {"commandLine": "/bin/true", "constraints": {"maxWallClockTime": "PT2H"}})
    assert job_task_wall_clock(prep) == timedelta(hours=2)
    release = JobReleaseTask.model_validate({"commandLine": "/bin/true"})
    assert job_task_wall_clock(release) == timedelta(minutes=15)
    release = JobReleaseTask.model_validate({"commandLine": "/bin/true",
                                             "maxWallClockTime": "PT1M"})
    assert job_task_wall_clock(release) == timedelta(minutes=1)
