"""``containerSettings`` needs a pool that enables containers: refused with a clear 400 on
one that does not, never accepted and then run on the host."""

from __future__ import annotations

import pytest

from tests.api.wire import Http, batch_error

START = {"commandLine": "/bin/true", "containerSettings": {"imageName": "ubuntu:22.04"}}
CONTAINERS = {"containerConfiguration": {"type": "dockerCompatible"}}


@pytest.fixture(scope="module")
def pools(http: Http) -> tuple[str, str]:
    """A pool without containerConfiguration and one with (no nodes: nothing runs)."""
    assert http("POST", "/pools", {"id": "nobox", "vmSize": "any"}).status_code == 201
    assert http("POST", "/pools", {"id": "box", "vmSize": "any",
                                   "virtualMachineConfiguration": CONTAINERS}).status_code == 201
    return "nobox", "box"


@pytest.mark.parametrize("path, body, prop", [
    ("/pools", {"id": "cpool", "vmSize": "any", "startTask": START}, "startTask"),
    ("/jobs", {"id": "cjob", "poolInfo": {"poolId": "nobox"},
               "jobManagerTask": {"id": "jm", **START}}, "jobManagerTask.containerSettings"),
    ("/jobs", {"id": "cjob", "poolInfo": {"poolId": "nobox"},
               "jobPreparationTask": START}, "jobPreparationTask.containerSettings"),
])
def test_container_settings_are_refused_without_container_configuration(
        http: Http, pools: tuple[str, str], path: str, body: dict, prop: str) -> None:
    err = batch_error(http("POST", path, body), 400, "InvalidPropertyValue")
    assert "containerConfiguration" in err["message"]["value"] and prop in err["message"]["value"]
    assert http("GET", f"{path}/{body['id']}").status_code == 404  # nothing was created


def test_container_settings_are_accepted_with_container_configuration(
        http: Http, pools: tuple[str, str]) -> None:
    assert http("POST", "/pools", {"id": "cpool2", "vmSize": "any", "startTask": START,
                                   "virtualMachineConfiguration": CONTAINERS}).status_code == 201
    assert http("POST", "/jobs", {"id": "cjob3", "poolInfo": {"poolId": "box"},
                                  "jobPreparationTask": START}).status_code == 201
    assert http("POST", "/jobs/cjob3/tasks", {"id": "t", **START}).status_code == 201
    task = http("GET", "/jobs/cjob3/tasks/t").json()
    assert task["containerSettings"] == START["containerSettings"]


def test_a_task_with_container_settings_is_refused_on_a_pool_without_containers(
        http: Http, pools: tuple[str, str]) -> None:
    assert http("POST", "/jobs", {"id": "cj2", "poolInfo": {"poolId": "nobox"}}).status_code == 201
    err = batch_error(http("POST", "/jobs/cj2/tasks", {"id": "t", **START}), 400,
                      "InvalidPropertyValue")
    assert "nobox has no virtualMachineConfiguration.containerConfiguration" \
        in err["message"]["value"]
    assert http("GET", "/jobs/cj2/tasks/t").status_code == 404
