"""Nothing a task leaves behind outlives what it was given (docs/security.md, "Tasks: least
identity" and "Pool trust follows membership").

On the sshd testbed (its nodes run as root, so the node agent switches users):

* a task-scope task whose detached child clears its environment (so the run's
  environment tag cannot find it) still loses that child, and its account, when it ends;
* a pool-scope task cannot add a key of its own to the authorized keys hpcbatch manages
  for the pool's auto-user, and whatever it tried, that key does not log in once the
  node has left the pool.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from hpcbatch.batch.identity import POOL_AUTO_USER, RunAs, task_user_name
from hpcbatch.client.sdk import BatchClient
from hpcbatch.execution import identity
from hpcbatch.execution.identity import Switcher
from hpcbatch.testing.testbed import keys_file
from tests.helpers import reachable_dir, service_on_testbed, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="user switching needs root (the testbed runs as root)")


@pytest.fixture(scope="module")
def bed() -> Iterator[tuple[BatchClient, Any]]:
    with reachable_dir() as tmp, service_on_testbed(tmp, 2, "127.0.51.1") as (client, tb, _):
        yield client, tb


def _processes(pattern: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if pattern in " ".join(p.info["cmdline"] or ()):
            found.append(p)
    return found


def _uid_processes(uid: int) -> list[psutil.Process]:
    """The live (not zombie) processes whose real, effective or saved uid is ``uid``."""
    found = []
    for p in psutil.process_iter(["uids", "status"]):
        uids = p.info["uids"]
        if (uids is not None and uid in tuple(uids)
                and p.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(p)
    return found


def _getent(name: str) -> int:
    return subprocess.run(["getent", "passwd", name], capture_output=True, check=False).returncode


def test_a_task_scope_tasks_detached_env_cleared_child_dies_with_its_user(bed) -> None:
    client, _ = bed
    client.create_pool({"id": "scoped", "vmSize": "testbed", "targetDedicatedNodes": 1})
    client.wait_for_pool("scoped", timeout_s=120)
    marker = f"777.{secrets.randbelow(10**6):06d}"
    try:
        client.create_job({"id": "escape", "poolInfo": {"poolId": "scoped"}})
        # env -i drops HPCBATCH_RUN_KEY / HPCBATCH_AGENT; setsid leaves the process tree
        # (the task waits a second so that the run's end does not catch it before).
        client.create_task("escape", {
            "id": "t", "commandLine": f"/bin/sh -c 'id -un; id -u; "
                                      f"env -i setsid /bin/sleep {marker} & sleep 1; exit 0'",
            "userIdentity": {"autoUser": {"scope": "task"}}})
        client.wait_for_tasks("escape", timeout_s=120)
        task = client.get_task("escape", "t")
        assert task.execution_info.exit_code == 0
        name, uid = client.download_task_file("escape", "t", "stdout.txt").decode().split()[:2]
        assert name.startswith("_azbatcht")
        # The run's end killed every process of its uid, then removed the account.
        assert _processes(f"sleep {marker}") == []
        assert _uid_processes(int(uid)) == []
        assert _getent(name) == 2
    finally:
        for p in _processes(f"sleep {marker}"):
            p.kill()
        client.delete_pool("scoped")


def test_a_leaked_task_user_is_removed_by_the_next_agent(tmp_path: Path, monkeypatch,
                                                         caplog) -> None:
    # The lowest seam: userdel fails once (logged, with its reason); the account is kept
    # marked as ended, and the next agent (a new Switcher) removes it.
    name = task_user_name(f"leak-{secrets.token_hex(4)}")
    home = tmp_path / "task"
    home.mkdir()
    switcher = Switcher()
    creds = switcher.make_task_user(RunAs(name, "task"), str(home))
    # Not a group leader: setsid(1) then detaches the sleep itself, without a fork.
    child = subprocess.Popen(identity.setpriv_argv(creds, ["setsid", "/bin/sleep", "778"]),
                             env={})
    try:
        wait_until(lambda: _uid_processes(creds.uid), what="the task user's process")
        real_run = subprocess.run

        def failing_userdel(argv, *args, **kwargs):
            if argv[0] == "userdel":
                return subprocess.CompletedProcess(argv, 8, b"", b"userdel: simulated failure")
            return real_run(argv, *args, **kwargs)

        monkeypatch.setattr(identity.subprocess, "run", failing_userdel)
        with caplog.at_level(logging.WARNING, logger=identity.__name__):
            assert switcher.drop_task_user(name, home) is False
        assert "simulated failure" in caplog.text and name in caplog.text
        assert child.wait(timeout=10) is not None  # killed by uid anyway
        assert _uid_processes(creds.uid) == []
        assert _getent(name) == 0  # the account is left, for a retry
        monkeypatch.undo()
        Switcher()  # a new agent on this host sweeps ended task users
        assert _getent(name) == 2
    finally:
        for p in _uid_processes(creds.uid):
            p.kill()
        subprocess.run(["userdel", "--", name], capture_output=True, check=False)


def test_a_pool_scope_tasks_own_key_never_logs_in_once_its_node_left(bed) -> None:
    client, tb = bed
    client.create_pool({"id": "keyed", "vmSize": "testbed", "targetDedicatedNodes": 2,
                        "enableInterNodeCommunication": True})
    nodes = client.wait_for_pool("keyed", timeout_s=120)
    node = nodes[0]
    managed = keys_file(tb.directory, node.ip_address).replace("%u", POOL_AUTO_USER)
    comment = f"mallory-{secrets.token_hex(4)}"
    # The task's own key, appended to the file hpcbatch manages for _azbatch and to
    # ~/.ssh/authorized_keys (its home is its own).
    script = (f"ssh-keygen -q -t ed25519 -N \"\" -C {comment} -f k && "
              f"(cat k.pub >> {managed}; echo managed=$?; "
              "mkdir -p ~/.ssh; cat k.pub >> ~/.ssh/authorized_keys; echo home=$?)")
    client.create_job({"id": "plant", "poolInfo": {"poolId": "keyed"}})
    client.create_task("plant", {"id": "t", "commandLine": f"/bin/sh -c '{script}'",
                                 "affinityInfo": {"affinityId": node.affinity_id}})
    client.wait_for_tasks("plant", timeout_s=120)
    task = client.get_task("plant", "t")
    out = client.download_task_file("plant", "t", "stdout.txt").decode()
    assert task.execution_info.exit_code == 0, out
    assert task.node_info.node_id == node.id
    key = Path(tb.directory) / comment
    key.write_bytes(client.download_task_file("plant", "t", "wd/k"))
    key.chmod(0o600)
    try:
        client.remove_nodes("keyed", [node.id])  # "Pool - Remove Nodes"
        wait_until(lambda: node.id not in {n.id for n in client.list_nodes("keyed")},
                   what="the node to leave")
        login = subprocess.run(
            ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=10", "-p", str(tb.ports[node.ip_address]),
             f"{POOL_AUTO_USER}@{node.ip_address}", "id -un"],
            capture_output=True, text=True, timeout=60, check=False)
        assert login.returncode != 0 and POOL_AUTO_USER not in login.stdout, login
        assert "Permission denied" in login.stderr
        # The managed file is root's: the append was denied, and nothing of it is there.
        assert "managed=0" not in out
        st = os.stat(managed)
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)
        assert comment not in Path(managed).read_text()
    finally:
        key.unlink(missing_ok=True)
        home_keys = Path(pwd.getpwnam(POOL_AUTO_USER).pw_dir, ".ssh", "authorized_keys")
        if home_keys.exists():  # this host's _azbatch outlives the testbed
            home_keys.write_text("".join(ln for ln in home_keys.read_text().splitlines(True)
                                         if comment not in ln))
        client.delete_pool("keyed")


def test_leftover_lines_are_dropped_when_hpcbatch_rewrites_the_file(tmp_path: Path) -> None:
    # A line written before the file was root's (or by hand) goes at the next rewrite.
    from hpcbatch.providers.trust import authorize_argv, pool_ssh_key, revoke_argv

    keys = tmp_path / "keys" / "%u"
    _, public = pool_ssh_key("p")
    _, other = pool_ssh_key("q")
    user = pwd.getpwuid(os.getuid()).pw_name
    subprocess.run(authorize_argv(public, ["10.0.0.1"], user=user, keys_file=str(keys)),
                   check=True)
    subprocess.run(authorize_argv(other, ["10.0.0.9"], user=user, keys_file=str(keys)),
                   check=True)
    path = Path(str(keys).replace("%u", user))
    with path.open("a") as fh:
        fh.write("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanted mallory\n")
    subprocess.run(authorize_argv(public, ["10.0.0.1", "10.0.0.2"], user=user,
                                  keys_file=str(keys)), check=True)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and not any("mallory" in ln for ln in lines)
    assert any("hpcbatch-pool-q" in ln for ln in lines)  # another pool's line is kept
    st = path.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)
    assert (path.parent.stat().st_uid, path.parent.stat().st_mode & 0o022) == (0, 0)
    subprocess.run(revoke_argv(public, user=user, keys_file=str(keys)), check=True)
    subprocess.run(revoke_argv(other, user=user, keys_file=str(keys)), check=True)
    assert path.read_text() == ""
