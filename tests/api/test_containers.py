"""``containerSettings`` is refused with a clear 400, never accepted and then run on the host."""

from __future__ import annotations

import pytest

from tests.api.wire import Http, batch_error

START = {"commandLine": "/bin/true", "containerSettings": {"imageName": "ubuntu:22.04"}}


@pytest.mark.parametrize("path, body", [
    ("/pools", {"id": "cpool", "vmSize": "any", "startTask": START}),
    ("/jobs", {"id": "cjob", "poolInfo": {"poolId": "p"},
               "jobManagerTask": {"id": "jm", **START}}),
    ("/jobs", {"id": "cjob", "poolInfo": {"poolId": "p"},
               "jobPreparationTask": START}),
])
def test_container_settings_are_refused_where_they_are_added(http: Http, path: str,
                                                             body: dict) -> None:
    err = batch_error(http("POST", path, body), 400, "InvalidPropertyValue")
    assert "container" in err["message"]["value"]
    assert http("GET", f"{path}/{body['id']}").status_code == 404  # nothing was created


def test_a_task_with_container_settings_is_refused(http: Http) -> None:
    assert http("POST", "/jobs", {"id": "cj2", "poolInfo": {"poolId": "p"}}).status_code == 201
    err = batch_error(http("POST", "/jobs/cj2/tasks", {"id": "t", **START}), 400,
                      "InvalidPropertyValue")
    assert "remove containerSettings" in err["message"]["value"]
    assert http("GET", "/jobs/cj2/tasks/t").status_code == 404
