"""A host whose login user is not root but may ``sudo`` (``sudo: true`` in the inventory):
the node agent runs as root through ``sudo -n``, so tasks switch users as on a root login.

The test makes such a user on this machine (``hbsudo``, passwordless sudo through a
sudoers drop-in it removes afterwards) and logs into a testbed sshd as it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient
from hpcbatch.testing import testbed as tb
from tests.helpers import reachable_dir, running_service

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("sudo") is None,
                                reason="needs root (to make the sudo user) and sudo")

USER = "hbsudo"
SUDOERS = Path("/etc/sudoers.d/hpcbatch-test-hbsudo")


@pytest.fixture(scope="module")
def sudo_user() -> Iterator[str]:
    """A login user with passwordless sudo (made here; its sudo right removed after)."""
    if subprocess.run(["id", USER], check=False, capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # no password, not locked
    SUDOERS.write_text(f"{USER} ALL=(ALL) NOPASSWD: ALL\n")
    SUDOERS.chmod(0o440)
    try:
        yield USER
    finally:
        SUDOERS.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def pool(sudo_user: str) -> Iterator[tuple[BatchClient, str]]:
    """Two testbed hosts logged into as the sudo user: pool ``withsudo`` on the one
    declared ``sudo: true``, pool ``nosudo`` on the other."""
    with reachable_dir() as tmp, tb.up(2, tmp / "testbed", base_address="127.0.74.1") as bed:
        storage = tmp / "storage"  # the service's storage, which the login user's agents use
        storage.mkdir()
        storage.chmod(0o777)
        roots = tmp / "roots"
        roots.mkdir()
        shutil.chown(roots, sudo_user)
        with running_service(tmp / "state", storage_url=f"file://{storage}") as (client, _):
            hosts: list[dict[str, Any]] = []
            for i, h in enumerate(bed.hosts):
                spec = h.model_dump(mode="json")
                spec.update(user=sudo_user, python=sys.executable,
                            root_dir=str(roots / f"n{i}"), sudo=i == 0,
                            labels=[f"sudo{i == 0}"])
                hosts.append(spec)
            client.add_hosts(hosts)
            for name, label in (("withsudo", "sudoTrue"), ("nosudo", "sudoFalse")):
                client.create_pool({"id": name, "vmSize": label, "targetDedicatedNodes": 1})
                nodes = client.wait_for_pool(name, timeout_s=180)
                assert [n.state for n in nodes] == ["idle"], [(n.id, n.errors) for n in nodes]
            yield client, sudo_user


def _run(client: BatchClient, pool: str, job: str, task: dict[str, Any]) -> tuple[Any, str]:
    client.create_job({"id": job, "poolInfo": {"poolId": pool}})
    client.create_task(job, task)
    client.wait_for_tasks(job, timeout_s=120)
    return (client.get_task(job, task["id"]),
            client.download_task_file(job, task["id"], "stdout.txt").decode())


def test_a_sudo_host_runs_tasks_as_their_user_identity(pool) -> None:
    client, _user = pool
    task, out = _run(client, "withsudo", "default", {"id": "t", "commandLine": "id -un"})
    assert task.execution_info.exit_code == 0 and out.strip() == "_azbatch"
    task, out = _run(client, "withsudo", "admin", {
        "id": "t", "commandLine": "id -u",
        "userIdentity": {"autoUser": {"elevationLevel": "admin"}}})
    assert task.execution_info.exit_code == 0 and out.strip() == "0"
    assert "hpcbatchWarnings" not in client.get_pool_json("withsudo")


def test_without_sudo_tasks_share_the_login_user_and_the_pool_says_so(pool) -> None:
    client, user = pool
    task, out = _run(client, "nosudo", "plain", {"id": "t", "commandLine": "id -un"})
    assert task.execution_info.exit_code == 0 and out.strip() == user, task.execution_info.failure_info
    warnings = client.get_pool_json("nosudo")["hpcbatchWarnings"]
    assert [w["code"] for w in warnings] == ["TasksShareNodeAgentIdentity"]
