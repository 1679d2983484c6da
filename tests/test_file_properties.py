"""File properties in task and node file lists: every entry, a directory too, carries its own
mode (``fileMode``, ``0o40750`` for a directory, as Batch shows on Linux nodes) and its own
times, never its parent's or a file's; "File - Get Properties" answers the same."""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from hpcbatch import LocalBatch
from hpcbatch.core.files import file_mode
from tests.api.wire import Http
from tests.helpers import account_key

COMMAND = ("/bin/sh -c 'mkdir sub && echo x > sub/f && chmod 640 sub/f "
           "&& touch -d 2020-01-02T03:04:05Z sub/f && chmod 750 sub "
           "&& touch -d 2021-06-07T08:09:10Z sub'")
"""A folder ``sub`` (mode 750, modified 2021-06-07) holding ``f`` (640, modified 2020-01-02),
in the task's working dir (modified now)."""


@pytest.fixture(scope="module")
def ran() -> Iterator[tuple[Http, Any]]:
    lb = LocalBatch(nodes=1)
    client = lb.__enter__()
    try:
        http = Http(client.endpoint, client.account, account_key(lb.state_dir))
        client.create_pool({"id": "fp", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("fp", timeout_s=120)
        client.create_job({"id": "fj", "poolInfo": {"poolId": "fp"}})
        client.create_task("fj", {"id": "t", "commandLine": COMMAND})
        counts = client.wait_for_tasks("fj", timeout_s=120)
        assert counts["succeeded"] == 1, counts
        yield http, client
    finally:
        lb.__exit__(None, None, None)


def test_file_mode_is_octal_with_the_type_bits() -> None:
    assert file_mode(0o40755) == "0o40755"
    assert file_mode(0o100644) == "0o100644"


def test_a_directory_carries_its_own_mode_and_times_in_a_task_listing(ran: Any) -> None:
    http, _ = ran
    files = {f["name"]: f for f in http("GET", "/jobs/fj/tasks/t/files",
                                        params={"recursive": "true"}).json()["value"]}
    sub, f, wd = files["wd/sub"], files["wd/sub/f"], files["wd"]
    assert sub["isDirectory"] is True and f["isDirectory"] is False
    assert sub["properties"]["fileMode"] == "0o40750"
    assert f["properties"]["fileMode"] == "0o100640"
    assert sub["properties"]["lastModified"].startswith("2021-06-07T08:09:10")
    assert f["properties"]["lastModified"].startswith("2020-01-02T03:04:05")
    assert not wd["properties"]["lastModified"].startswith(("2021-06-07", "2020-01-02"))
    assert sub["properties"]["contentLength"] == 0 and f["properties"]["contentLength"] == 2
    assert sub["properties"]["creationTime"] and "contentType" not in sub["properties"]
    # "File - Get Properties" of the folder: its own mode and time, as a directory.
    head = http("HEAD", "/jobs/fj/tasks/t/files/wd/sub")
    assert head.status_code == 200
    assert head.headers["ocp-batch-file-isdirectory"] == "true"
    assert head.headers["ocp-batch-file-mode"] == "0o40750"
    assert parsedate_to_datetime(head.headers["Last-Modified"]).isoformat().startswith(
        "2021-06-07T08:09:10")


def test_a_directory_carries_its_own_mode_and_times_in_a_node_listing(ran: Any) -> None:
    http, client = ran
    task = client.get_task_json("fj", "t")
    node_id = task["nodeInfo"]["nodeId"]
    root = task["nodeInfo"]["taskRootDirectory"].strip("/")
    listed = http("GET", f"/pools/fp/nodes/{node_id}/files",
                  params={"recursive": "true", "$filter": f"startswith(name, '{root}/wd')"})
    files = {f["name"]: f for f in listed.json()["value"]}
    sub = files[f"{root}/wd/sub"]
    assert sub["isDirectory"] is True and sub["properties"]["fileMode"] == "0o40750"
    assert sub["properties"]["lastModified"].startswith("2021-06-07T08:09:10")
    head = http("HEAD", f"/pools/fp/nodes/{node_id}/files/{root}/wd/sub")
    assert head.headers["ocp-batch-file-mode"] == "0o40750"
    assert head.headers["ocp-batch-file-isdirectory"] == "true"
