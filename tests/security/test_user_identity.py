"""Tasks run with the least identity Batch gives them (docs/security.md, "Tasks: least identity").

On the sshd testbed (its nodes run as root, so the node agent switches users):
default tasks run as the pool's non-admin auto-user, ``elevationLevel: admin``
tasks as root, pool ``userAccounts`` are real accounts, a task-scope task
cannot read another job's task directory, no task reads the node's secrets, and
a multi-instance MPI task still runs across nodes. A node that cannot switch
users makes the pool say so.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.identity import RunAs
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.execution.agent import Launch, NodeAgent
from hpcbatch.execution.environment import NodeIdentity
from hpcbatch.execution.identity import Switcher
from tests.helpers import reachable_dir, service_on_testbed, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="user switching needs root (the testbed runs as root)")

ACCOUNTS = [
    {"name": "alice", "password": "alice-pw-1"},
    {"name": "bob", "password": "bob-pw-1", "elevationLevel": "admin",
     "linuxUserConfiguration": {"uid": 4321, "gid": 4321}},
]


@pytest.fixture(scope="module")
def bed() -> Iterator[tuple[BatchClient, Any]]:
    """A 3-host testbed in a reachable folder: pool ``ident`` (1 node, 2 slots, accounts),
    pool ``mpi`` (2 nodes, inter-node communication)."""
    with reachable_dir() as tmp, service_on_testbed(tmp, 3, "127.0.41.1") as (client, tb, _):
        client.create_pool({"id": "ident", "vmSize": "testbed", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 2, "userAccounts": ACCOUNTS})
        client.create_pool({"id": "mpi", "vmSize": "testbed", "targetDedicatedNodes": 2,
                            "enableInterNodeCommunication": True})
        for pool in ("ident", "mpi"):
            nodes = client.wait_for_pool(pool, timeout_s=120)
            assert all(n.state == "idle" for n in nodes), [(n.id, n.errors) for n in nodes]
        yield client, tb


def _run(client: BatchClient, job: str, task: dict[str, Any], pool: str = "ident") -> Any:
    """Add ``task`` to a new job on ``pool``, wait for it; return (task, stdout, stderr)."""
    client.create_job({"id": job, "poolInfo": {"poolId": pool}})
    client.create_task(job, task)
    client.wait_for_tasks(job, timeout_s=120)
    done = client.get_task(job, task["id"])
    out = client.download_task_file(job, task["id"], "stdout.txt").decode()
    err = client.download_task_file(job, task["id"], "stderr.txt").decode()
    return done, out, err


def test_default_tasks_run_as_the_pools_non_admin_auto_user(bed) -> None:
    client, _ = bed
    task, out, _ = _run(client, "default", {
        "id": "t", "commandLine": "/bin/sh -c 'id -u; id -un; id -Gn; echo $HOME'"})
    assert task.execution_info.exit_code == 0
    uid, name, groups, home = out.splitlines()
    assert uid != "0" and name == "_azbatch"
    assert not {"root", "sudo", "wheel", "adm"} & set(groups.split())
    assert home == "/home/_azbatch"
    pool = client.get_pool_json("ident")
    assert "hpcbatchWarnings" not in pool  # user switching works on every node
    assert all("password" not in a for a in pool["userAccounts"])  # write-only


def test_a_missing_program_is_still_reported_as_not_found(bed) -> None:
    client, _ = bed
    task, _, err = _run(client, "missing", {"id": "t", "commandLine": "no-such-program-x1 a"})
    assert task.execution_info.failure_info.code == "CommandProgramNotFound"
    assert "no-such-program-x1" in err


def test_admin_auto_user_tasks_run_as_root(bed) -> None:
    client, _ = bed
    task, out, _ = _run(client, "admin", {
        "id": "t", "commandLine": "id -u",
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}})
    assert task.execution_info.exit_code == 0
    assert out.strip() == "0"


def test_pool_user_accounts_are_real_accounts_and_tasks_run_as_them(bed) -> None:
    client, _ = bed
    task, out, _ = _run(client, "accounts", {
        "id": "t", "commandLine": "/bin/sh -c 'id -un; id -u bob; id -g bob; id -Gn bob'",
        "userIdentity": {"username": "alice"}})
    assert task.execution_info.exit_code == 0, out
    name, bob_uid, bob_gid, bob_groups = out.splitlines()
    assert name == "alice"
    assert (bob_uid, bob_gid) == ("4321", "4321")  # linuxUserConfiguration
    assert "sudo" in bob_groups.split()  # elevationLevel admin


def test_an_unknown_user_name_is_refused_when_the_task_is_added(bed) -> None:
    client, _ = bed
    client.create_job({"id": "nouser", "poolInfo": {"poolId": "ident"}})
    with pytest.raises(BatchError) as err:
        client.create_task("nouser", {"id": "t", "commandLine": "true",
                                      "userIdentity": {"username": "mallory"}})
    assert err.value.code == "InvalidPropertyValue"
    assert "mallory" in str(err.value) and "alice, bob" in str(err.value)
    with pytest.raises(BatchError) as err:  # username and autoUser together
        client.create_task("nouser", {"id": "t2", "commandLine": "true", "userIdentity": {
            "username": "alice", "autoUser": {"scope": "task"}}})
    assert err.value.code == "InvalidPropertyValue"
    with pytest.raises(BatchError) as err:  # Job - Add checks its job manager too
        client.create_job({"id": "nouser-jm", "poolInfo": {"poolId": "ident"},
                           "jobManagerTask": {"id": "jm", "commandLine": "true",
                                              "userIdentity": {"username": "mallory"}}})
    assert err.value.code == "InvalidPropertyValue"
    assert "jobManagerTask.userIdentity.username" in str(err.value.values)


def test_a_task_scope_task_cannot_read_another_jobs_task_dir(bed) -> None:
    client, _ = bed
    victim, _, _ = _run(client, "victim", {
        "id": "t", "commandLine": "/bin/sh -c 'echo s3cret > secret.txt'"})
    assert victim.execution_info.exit_code == 0
    victim_dir = f"$AZ_BATCH_NODE_ROOT_DIR/{victim.node_info.task_root_directory}"
    script = (f"id -un; cat {victim_dir}/wd/secret.txt; echo cat=$?; ls {victim_dir}; echo ls=$?; "
              "echo shared > $AZ_BATCH_NODE_SHARED_DIR/from-task-scope; echo write=$?")
    _, out, err = _run(client, "intruder", {
        "id": "t", "commandLine": f"/bin/sh -c '{script}'",
        "userIdentity": {"autoUser": {"scope": "task"}}})
    lines = out.splitlines()
    assert lines[0].startswith("_azbatcht")  # a user made for the task
    assert "s3cret" not in out
    assert "cat=1" in lines and "ls=2" in lines and "write=0" in lines
    assert "Permission denied" in err
    # The task's user is gone after it ended.
    _, out, _ = _run(client, "after", {
        "id": "t", "commandLine": f"/bin/sh -c 'getent passwd {lines[0]}; echo rc=$?'"})
    assert out.strip() == "rc=2"


def test_tasks_cannot_read_the_nodes_secrets(bed) -> None:
    client, _ = bed
    script = ("cd $AZ_BATCH_NODE_ROOT_DIR; ls secrets >/dev/null 2>&1 && echo LISTED secrets; "
              "for f in node.json node.log secrets/tls/node-key.pem secrets/tls/* secrets/*; "
              "do cat $f >/dev/null 2>&1 && echo READ $f; "
              "done; test -d secrets && test -f node.json && echo exists")
    task, out, _ = _run(client, "secrets", {"id": "t", "commandLine": f"/bin/sh -c '{script}'"})
    assert task.execution_info.exit_code == 0
    assert "READ" not in out and "LISTED" not in out
    assert out.strip() == "exists"  # the files are there, the task cannot read them


def test_a_multi_instance_mpi_task_runs_across_nodes_as_the_auto_user(bed) -> None:
    client, _ = bed
    command = (f"/bin/sh -c 'id -un; mpiexec -hosts $AZ_BATCH_HOST_LIST -n 2 "
               f"{sys.executable} -m hpcbatch.mpihello'")
    task, out, err = _run(client, "mpi", {
        "id": "t", "commandLine": command,
        "multiInstanceSettings": {"numberOfInstances": 2}}, pool="mpi")
    assert task.execution_info.exit_code == 0, err
    lines = out.splitlines()
    assert lines[0] == "_azbatch"
    ranks = [line for line in lines if line.startswith("{")]
    assert len(ranks) == 2 and len(set(ranks)) == 2
    with pytest.raises(BatchError) as exc:  # task-scope users get no inter-node SSH
        client.create_task("mpi", {"id": "scoped", "commandLine": "true",
                                   "multiInstanceSettings": {"numberOfInstances": 2},
                                   "userIdentity": {"autoUser": {"scope": "task"}}})
    assert exc.value.code == "InvalidPropertyValue"


def test_a_node_that_cannot_switch_users_makes_the_pool_say_so(tmp_path: Path) -> None:
    # pytest's temporary folders are mode 0700: task users cannot reach a node root there.
    with service_on_testbed(tmp_path, 1, "127.0.43.1") as (client, _, _thread):
        client.create_pool({"id": "shared", "vmSize": "testbed", "targetDedicatedNodes": 1})
        client.wait_for_pool("shared", timeout_s=120)
        pool = wait_until(lambda: client.get_pool_json("shared").get("hpcbatchWarnings") and
                          client.get_pool_json("shared"), what="the pool warning")
        (warning,) = pool["hpcbatchWarnings"]
        assert warning["code"] == "TasksShareNodeAgentIdentity"
        assert "mode 0700" in warning["message"]
        assert warning["values"] == [{"name": "NodeId", "value": "127.0.43.1"}]
        _, out, _ = _run(client, "shared", {"id": "t", "commandLine": "id -u"}, pool="shared")
        assert out.strip() == "0"  # tasks share the agent's identity, as the warning says


def test_a_user_missing_on_the_node_fails_the_task_with_a_clear_failure(tmp_path: Path) -> None:
    # The lowest seam: an agent that switches users, asked to run as an account its node
    # lacks (the pool changed after the task was added, or the account could not be made).
    node = NodeIdentity(node_id="n1", pool_id="p", root_dir=str(tmp_path),
                        account_name="a", account_url="http://x")
    outcome = NodeAgent(node, base_env={}, switcher=Switcher()).run_task(
        Launch(key="k", task_dir="workitems/j/job-1/t", command_line="true", job_id="j",
               task_id="t", run_as=RunAs("nosuchuser7", "account")))
    assert outcome.exit_code is None
    assert outcome.failure_info is not None
    assert outcome.failure_info["category"] == "usererror"
    assert outcome.failure_info["code"] == "UserIdentityInvalid"
    assert "nosuchuser7" in outcome.failure_info["message"]
    assert "n1" in outcome.failure_info["message"]
