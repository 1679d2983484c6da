"""Operations Batch documents that hpcbatch once answered FeatureNotSupported (issue 13):
Task - Update, Job Schedule - Patch/Update, Pool - Update Properties with the empty
``certificateReferences`` the 14.x SDK always sends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hpcbatch.client.sdk import BatchError as ServiceError
from tests.api.wire import Http, batch_error
from tests.helpers import running_service, wait_until


def test_update_task_patch_and_update_job_schedule_pool_certificates(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, thread):
        creds = thread.runtime.credentials
        assert creds is not None
        http = Http(thread.runtime.endpoint, creds.account_name, creds.key)
        client.add_hosts([{"name": "n0", "address": "127.0.0.80", "provider": "local",
                           "root_dir": str(tmp_path / "n0"), "python": sys.executable}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)

        # Task - Update: a task that fails twice gets a third try once its retry count is raised.
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        marker = tmp_path / "tries"
        client.create_task("j", {"id": "flaky", "commandLine":
                                 f"/bin/sh -c 'echo x >> {marker}; sleep 1; "
                                 f"[ $(wc -l < {marker}) -ge 3 ]'"})
        client.update_task("j", "flaky", {"maxTaskRetryCount": 2, "retentionTime": "PT1H"})
        task = wait_until(lambda: (t := client.get_task("j", "flaky")).state == "completed" and t,
                          timeout_s=60, what="flaky completed")
        assert task.execution_info.exit_code == 0 and task.execution_info.retry_count == 2
        assert task.constraints.max_task_retry_count == 2
        assert task.constraints.retention_time.total_seconds() == 3600
        # Omitted constraints: the defaults again. Unknown properties: a named 400.
        client.update_task("j", "flaky", None)
        assert client.get_task("j", "flaky").constraints is None or \
            client.get_task("j", "flaky").constraints.max_task_retry_count in (None, 0)
        body = batch_error(http("PUT", "/jobs/j/tasks/flaky", {"commandLine": "x"}),
                           400, "InvalidRequestBody")
        assert {"key": "PropertyName", "value": "commandLine"} in body["values"]
        with pytest.raises(ServiceError) as err:
            client.update_task("j", "nosuch", {"maxTaskRetryCount": 1})
        assert err.value.status == 404 and err.value.code == "TaskNotFound"

        # Job Schedule - Patch and Update.
        client.create_job_schedule({"id": "s", "schedule": {"recurrenceInterval": "PT1H"},
                                    "jobSpecification": {"poolInfo": {"poolId": "p"}},
                                    "metadata": [{"name": "a", "value": "1"}]})
        etag = client.get_job_schedule("s")["eTag"]
        client.patch_job_schedule("s", {"jobSpecification": {"poolInfo": {"poolId": "p"},
                                                             "priority": 7}})
        got = client.get_job_schedule("s")
        assert got["jobSpecification"]["priority"] == 7 and got["eTag"] != etag
        assert got["metadata"] == [{"name": "a", "value": "1"}]  # kept by a patch
        assert got["schedule"]["recurrenceInterval"] == "PT1H"
        with pytest.raises(ServiceError) as err:  # Update requires both properties
            client.update_job_schedule("s", {"schedule": {"recurrenceInterval": "PT2H"}})
        assert err.value.status == 400 and "jobSpecification" in err.value.message
        client.update_job_schedule("s", {"schedule": {"recurrenceInterval": "PT2H"},
                                         "jobSpecification": {"poolInfo": {"poolId": "p"}}})
        got = client.get_job_schedule("s")
        assert got["schedule"]["recurrenceInterval"] == "PT2H" and "metadata" not in got
        assert "priority" not in got["jobSpecification"]
        with pytest.raises(ServiceError) as err:
            client.patch_job_schedule("s", {"id": "other"})
        assert err.value.status == 400
        client.terminate_job_schedule("s")
        wait_until(lambda: client.get_job_schedule("s")["state"] == "completed", timeout_s=30)
        with pytest.raises(ServiceError) as err:
            client.patch_job_schedule("s", {"metadata": []})
        assert err.value.status == 409 and err.value.code == "JobScheduleCompleted"

        # Pool - Update Properties with the 14.x SDK's empty certificateReferences.
        assert http("POST", "/pools/p/updateproperties", {
            "certificateReferences": [], "applicationPackageReferences": [],
            "metadata": [{"name": "m", "value": "v"}]}).status_code == 204
        assert client.get_pool_json("p")["metadata"] == [{"name": "m", "value": "v"}]
        batch_error(http("POST", "/pools/p/updateproperties", {
            "certificateReferences": [{"thumbprint": "ab", "thumbprintAlgorithm": "sha1"}],
            "applicationPackageReferences": [], "metadata": []}), 400, "InvalidPropertyValue")
