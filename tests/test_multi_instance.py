"""Multi-instance (MPI) tasks on the SSH testbed with the mpich and mpi4py wheels."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from hpcbatch.client.sdk import BatchError
from tests.helpers import service_on_testbed, wait_until

MPI_HELLO = f"/bin/sh -c 'mpiexec -hosts $AZ_BATCH_HOST_LIST -n {{n}} {sys.executable} -m hpcbatch.mpihello'"


SITE_ENV = {"SITE_GREETING": "hello from the inventory"}
"""The inventory ``env`` of every testbed host of this module."""


@pytest.fixture(scope="module")
def mpi_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the module's testbed and service (its state dir is ``state``)."""
    return tmp_path_factory.mktemp("mpi")


@pytest.fixture(scope="module")
def mpi(mpi_home: Path):
    """A 4-node pool with inter-node communication on a 4-host testbed (127.0.2.x).

    The hosts' ``python`` is this interpreter (in CI, a fresh virtual environment's,
    whose bin directory holds the mpich wheel's ``mpiexec``); they have :data:`SITE_ENV`.
    """
    with service_on_testbed(mpi_home, 4, "127.0.2.1") as (client, bed, _th):
        client.add_hosts([{**h.model_dump(mode="json"), "env": SITE_ENV} for h in bed.hosts])
        client.create_pool({"id": "mpi", "vmSize": "testbed", "targetDedicatedNodes": 4,
                            "enableInterNodeCommunication": True})
        nodes = client.wait_for_pool("mpi", timeout_s=120)
        assert [n.state for n in nodes] == ["idle"] * 4, [(n.id, n.errors) for n in nodes]
        yield client, bed


def _multi(task_id: str, n: int, command: str, coordination: str | None = None,
           **extra: object) -> dict:
    mis: dict = {"numberOfInstances": n}
    if coordination:
        mis["coordinationCommandLine"] = coordination
    return {"id": task_id, "commandLine": command, "multiInstanceSettings": mis, **extra}


def _ranks(client, job: str, task: str) -> list[dict]:
    out = client.download_task_file(job, task, "stdout.txt").decode()
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_mpi4py_runs_one_rank_per_node_across_the_host_list(mpi):
    client, _ = mpi
    client.create_job({"id": "hello", "poolInfo": {"poolId": "mpi"}})
    client.create_task("hello", _multi("t", 4, MPI_HELLO.format(n=4)))
    assert client.wait_for_tasks("hello", timeout_s=120)["succeeded"] == 1
    task = client.get_task("hello", "t")
    assert task.execution_info.exit_code == 0
    ranks = _ranks(client, "hello", "t")
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3]
    assert all(r["size"] == 4 and r["sum"] == 1 + 2 + 3 + 4 for r in ranks)
    node_of = {n.ip_address: n.id for n in client.list_nodes("mpi")}
    rank_nodes = {r["rank"]: node_of[r["address"]] for r in ranks}
    assert len(set(rank_nodes.values())) == 4
    subs = client.list_subtasks("hello", "t")
    assert [s.id for s in subs] == [1, 2, 3]
    assert {s.node_info.node_id for s in subs} | {task.node_info.node_id} == set(rank_nodes.values())
    assert all(s.state == "completed" for s in subs)


def test_coordination_runs_everywhere_first_and_its_daemons_are_ended(mpi):
    client, bed = mpi
    coordination = ("/bin/sh -c 'date +%s%N > $AZ_BATCH_TASK_SHARED_DIR/coordinated; "
                    "sleep 600 & echo $! > $AZ_BATCH_TASK_SHARED_DIR/daemon.pid'")
    app = ("/bin/sh -c 'date +%s%N > $AZ_BATCH_TASK_SHARED_DIR/application; "
           "ls $AZ_BATCH_TASK_SHARED_DIR'")
    client.create_job({"id": "coord", "poolInfo": {"poolId": "mpi"}})
    client.create_task("coord", _multi("t", 4, app, coordination))
    assert client.wait_for_tasks("coord", timeout_s=120)["succeeded"] == 1
    task = client.get_task("coord", "t")
    nodes = [task.node_info.node_id] + [s.node_info.node_id for s in client.list_subtasks("coord", "t")]
    assert len(set(nodes)) == 4
    app_time = int(Path(bed.host(nodes[0]).root_dir, "workitems/coord/job-1/t/application").read_text())
    pids = []
    for node in nodes:
        shared = Path(bed.host(node).root_dir, "workitems/coord/job-1/t")
        assert int((shared / "coordinated").read_text()) < app_time
        pids.append(int((shared / "daemon.pid").read_text()))
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                               for p in pids), timeout_s=10, what="coordination daemons ended")


def test_variables_are_formatted_as_batch_formats_them_on_every_instance(mpi):
    client, bed = mpi
    dump = "/bin/sh -c 'env | grep -E \"^(AZ_BATCH_|CCP_NODES)\" | sort'"
    client.create_job({"id": "vars", "poolInfo": {"poolId": "mpi"}})
    client.create_task("vars", _multi("t", 3, dump, dump))
    assert client.wait_for_tasks("vars", timeout_s=120)["succeeded"] == 1
    task = client.get_task("vars", "t")
    subs = client.list_subtasks("vars", "t")
    nodes = [task.node_info.node_id] + [s.node_info.node_id for s in subs]
    addrs = [bed.host(n).address for n in nodes]

    def env_of(text: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    outputs = {0: client.download_task_file("vars", "t", "coordination-stdout.txt").decode()}
    for s in subs:
        outputs[s.id] = client.download_node_file(
            "mpi", s.node_info.node_id, f"{s.node_info.task_root_directory}/stdout.txt").decode()
    app_env = env_of(client.download_task_file("vars", "t", "stdout.txt").decode())
    for instance, text in outputs.items():
        env = env_of(text)
        node = nodes[instance]
        assert env["AZ_BATCH_HOST_LIST"] == ",".join(addrs)
        assert env["AZ_BATCH_NODE_LIST"] == ";".join(addrs)
        assert env["AZ_BATCH_MASTER_NODE"] == f"{addrs[0]}:6000"
        assert env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == ("true" if instance == 0 else "false")
        assert env["CCP_NODES"] == f"3 {addrs[0]} 1 {addrs[1]} 1 {addrs[2]} 1"
        assert env["AZ_BATCH_NODE_ID"] == node
        assert env["AZ_BATCH_TASK_SHARED_DIR"] == os.path.join(
            bed.host(node).root_dir, "workitems/vars/job-1/t")
        assert env["AZ_BATCH_TASK_SHARED_DIR"] == env["AZ_BATCH_TASK_DIR"]
    assert app_env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"
    assert app_env["AZ_BATCH_HOST_LIST"] == ",".join(addrs)


def test_a_coordination_script_from_common_resource_files_runs_directly(mpi, tmp_path):
    """commonResourceFiles without fileMode land with Batch's 0770: the script runs as is."""
    client, bed = mpi
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "coord.sh").write_text("#!/bin/sh\necho \"$AZ_BATCH_NODE_ID\" > coordinated\n")
    (scripts / "coord.sh").chmod(0o644)  # the mode in storage does not carry over
    client.create_job({"id": "direct", "poolInfo": {"poolId": "mpi"}})
    mis = {"numberOfInstances": 2,
           "coordinationCommandLine": "/bin/sh -c 'cd $AZ_BATCH_TASK_SHARED_DIR && ./coord.sh'",
           "commonResourceFiles": [{"storageContainerUrl": scripts.as_uri()}]}
    client.create_task("direct", {"id": "t", "commandLine": "/bin/true",
                                  "multiInstanceSettings": mis})
    assert client.wait_for_tasks("direct", timeout_s=120)["succeeded"] == 1, \
        client.get_task("direct", "t").execution_info
    task = client.get_task("direct", "t")
    nodes = [task.node_info.node_id] + [s.node_info.node_id for s in client.list_subtasks("direct", "t")]
    for node in nodes:
        shared = Path(bed.host(node).root_dir, "workitems/direct/job-1/t")
        assert (shared / "coordinated").read_text().strip() == node
        assert (shared / "coord.sh").stat().st_mode & 0o777 == 0o770


def test_failing_coordination_fails_the_task_and_names_the_node(mpi):
    client, _ = mpi
    victim = client.list_nodes("mpi")[2].id
    coordination = f"/bin/sh -c '[ \"$AZ_BATCH_NODE_ID\" != {victim} ] || exit 5'"
    client.create_job({"id": "coordfail", "poolInfo": {"poolId": "mpi"}})
    client.create_task("coordfail", _multi("t", 4, "/bin/true", coordination,
                                           constraints={"maxTaskRetryCount": 2}))
    assert client.wait_for_tasks("coordfail", timeout_s=180)["failed"] == 1
    info = client.get_task("coordfail", "t").execution_info
    assert info.result == "failure" and info.retry_count == 2
    assert info.failure_info.code == "CoordinationCommandFailed"
    assert victim in info.failure_info.message and "exit code 5" in info.failure_info.message
    assert {"name": "NodeId", "value": victim} in info.failure_info.details
    # A 4-node gang cannot avoid the victim in a 4-node pool, so each retry ran on it
    # again: three gang failures in a row take it out of scheduling, with the reason.
    node = client.get_node("mpi", victim)
    assert node.scheduling_state == "disabled"
    assert [e.code for e in node.errors] == ["MultiInstanceTaskFailures"]
    client.enable_node_scheduling("mpi", victim)
    node = wait_until(lambda: (n := client.get_node("mpi", victim)).state == "idle" and n,
                      timeout_s=30, what="victim idle again")
    assert node.scheduling_state == "enabled" and not node.errors


def test_a_gang_that_failed_because_of_one_node_retries_without_it(mpi):
    client, _ = mpi
    nodes = client.list_nodes("mpi")
    victim = nodes[0].id  # the first placement takes the pool's first three nodes
    coordination = f"/bin/sh -c '[ \"$AZ_BATCH_NODE_ID\" != {victim} ] || exit 7'"
    client.create_job({"id": "avoid", "poolInfo": {"poolId": "mpi"}})
    client.create_task("avoid", _multi("t", 3, "/bin/true", coordination,
                                       constraints={"maxTaskRetryCount": 1}))
    assert client.wait_for_tasks("avoid", timeout_s=180)["succeeded"] == 1
    task = client.get_task("avoid", "t")
    assert task.execution_info.retry_count == 1  # the first try failed on the victim
    used = {task.node_info.node_id} | {s.node_info.node_id for s in client.list_subtasks("avoid", "t")}
    assert len(used) == 3 and victim not in used
    # One failure is not a pattern: the victim still takes tasks.
    assert client.get_node("mpi", victim).scheduling_state == "enabled"


def test_two_gangs_that_each_need_most_of_the_pool_both_complete(mpi):
    client, _ = mpi
    client.create_job({"id": "gangs", "poolInfo": {"poolId": "mpi"}})
    client.create_tasks("gangs", [_multi(f"gang{i}", 3, MPI_HELLO.format(n=3)) for i in range(2)])
    client.create_tasks("gangs", [{"id": f"single{i}", "commandLine": "/bin/sleep 0.2"}
                                  for i in range(6)])
    counts = client.wait_for_tasks("gangs", timeout_s=180)
    assert counts["succeeded"] == 8, counts
    for i in range(2):
        ranks = _ranks(client, "gangs", f"gang{i}")
        assert len({r["address"] for r in ranks}) == 3 and ranks[0]["sum"] == 6


def test_a_waiting_gang_is_not_starved_by_single_node_tasks(mpi):
    client, _ = mpi
    client.create_job({"id": "starve", "poolInfo": {"poolId": "mpi"}})
    client.create_tasks("starve", [{"id": f"before{i}", "commandLine": "/bin/sleep 0.5"}
                                   for i in range(8)])
    client.create_task("starve", _multi("gang", 4, "/bin/true"))
    client.create_tasks("starve", [{"id": f"after{i}", "commandLine": "/bin/sleep 0.3"}
                                   for i in range(12)])
    assert client.wait_for_tasks("starve", timeout_s=180)["succeeded"] == 21
    tasks = {t.id: t for t in client.list_tasks("starve")}
    gang_start = tasks["gang"].execution_info.start_time
    for i in range(12):
        assert tasks[f"after{i}"].execution_info.start_time >= gang_start


def test_twenty_multi_instance_tasks_back_to_back(mpi):
    client, _ = mpi
    client.create_job({"id": "many", "poolInfo": {"poolId": "mpi"}})
    client.create_tasks("many", [_multi(f"t{i:02d}", 4, MPI_HELLO.format(n=4)) for i in range(20)])
    counts = client.wait_for_tasks("many", timeout_s=600)
    assert counts["succeeded"] == 20, counts
    for t in client.list_tasks("many"):
        assert len(_ranks(client, "many", t.id)) == 4


def test_tasks_the_pool_can_never_run_are_rejected_when_added(mpi):
    client, _ = mpi
    client.create_pool({"id": "nocomm", "vmSize": "testbed", "targetDedicatedNodes": 0})
    client.create_pool({"id": "slots2", "vmSize": "testbed", "targetDedicatedNodes": 0,
                        "enableInterNodeCommunication": True, "taskSlotsPerNode": 2})
    cases = {"nocomm": (2, "enableInterNodeCommunication"), "slots2": (2, "taskSlotsPerNode"),
             "mpi": (9, "never have 9 nodes")}
    for pool, (n, reason) in cases.items():
        client.create_job({"id": f"reject-{pool}", "poolInfo": {"poolId": pool}})
        with pytest.raises(BatchError) as info:
            client.create_task(f"reject-{pool}", _multi("t", n, "/bin/true"))
        assert info.value.status == 400 and reason in info.value.message
        assert "multiInstanceSettings.numberOfInstances" in info.value.message
    client.delete_pool("nocomm")
    client.delete_pool("slots2")


def test_cli_mpi_run_across_four_nodes_with_the_hosts_python(mpi, mpi_home: Path) -> None:
    """``hpcbatch mpi run`` of mpi4py over 4 SSH nodes: ``python`` and ``mpiexec`` are found
    through the task PATH, which puts the hosts' python's bin directory first."""
    from click.testing import CliRunner

    from hpcbatch.client.cli import cli

    env = {"AZURE_BATCH_ENDPOINT": None, "HPCBATCH_STATE_DIR": str(mpi_home / "state")}
    result = CliRunner(env=env).invoke(
        cli, ["mpi", "run", "--pool-id", "mpi", "--nodes", "4", "--", "python", "-m",
              "hpcbatch.mpihello"], prog_name="hpcbatch", catch_exceptions=False)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    ranks = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3]
    assert {r["size"] for r in ranks} == {4} and {r["sum"] for r in ranks} == {10}
    _, bed = mpi
    assert sorted(r["address"] for r in ranks) == sorted(h.address for h in bed.hosts)
    assert "created job mpi-mpi" in result.stderr  # the pool's job, reused by later runs


def test_a_task_on_an_ssh_node_sees_the_inventory_env(mpi) -> None:
    client, _ = mpi
    client.create_job({"id": "site", "poolInfo": {"poolId": "mpi"}})
    client.create_task("site", {"id": "t", "commandLine": "/bin/sh -c 'echo $SITE_GREETING'"})
    counts = client.wait_for_tasks("site", timeout_s=60)
    assert counts["succeeded"] == 1, counts
    assert client.download_task_file("site", "t", "stdout.txt") == b"hello from the inventory\n"
