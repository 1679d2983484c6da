"""The Batch scheduling model on the SSH testbed: priorities, slots, constraints,
dependencies, exit conditions, job preparation/release, job control, node operations."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import psutil
import pytest

from hpcbatch.client.sdk import BatchError
from hpcbatch.core.node_recovery import RecoveryPolicy
from tests.helpers import service_on_testbed, wait_until


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """A 4-host testbed (127.0.3.x) and a service with those hosts in its inventory."""
    with service_on_testbed(tmp_path_factory.mktemp("sched"), 4, "127.0.3.1") as (client, bed, th):
        # Lost nodes are restarted by themselves: quickly here.
        th.runtime.service.pool_manager.health.recovery_policy = RecoveryPolicy(
            first_delay_s=0.2, max_delay_s=1.0, slow_delay_s=1.0)
        yield client, bed


@pytest.fixture(scope="module")
def pool2(env):
    """Two nodes with 4 slots each, spread."""
    client, _ = env
    client.create_pool({"id": "two", "vmSize": "testbed", "targetDedicatedNodes": 2,
                        "taskSlotsPerNode": 4})
    assert [n.state for n in client.wait_for_pool("two", timeout_s=120)] == ["idle", "idle"]
    return "two"


def _tasks(client, job):
    return {t.id: t for t in client.list_tasks(job)}


def test_higher_priority_jobs_run_first_fifo_within_a_job(env):
    client, _ = env
    # Jobs and tasks exist before the pool has a node, so the order is the scheduler's alone.
    client.create_job({"id": "low", "poolInfo": {"poolId": "one"}, "priority": -10})
    client.create_job({"id": "high", "poolInfo": {"poolId": "one"}, "priority": 500})
    client.create_job({"id": "mid", "poolInfo": {"poolId": "one"}})
    for job in ("low", "high", "mid"):
        client.create_tasks(job, [{"id": f"{job}{i}", "commandLine": "/bin/sleep 0.05"}
                                  for i in range(3)])
    client.update_job("mid", {"priority": 1000})  # priority changes on a live job
    client.create_pool({"id": "one", "vmSize": "testbed", "targetDedicatedNodes": 1})
    for job in ("low", "high", "mid"):
        client.wait_for_tasks(job, timeout_s=120)
    starts = sorted((t.execution_info.start_time, t.id) for job in ("low", "high", "mid")
                    for t in client.list_tasks(job))
    assert [tid for _, tid in starts] == [f"{j}{i}" for j in ("mid", "high", "low") for i in range(3)]
    client.delete_pool("one")


def test_spread_and_pack_placement(env, pool2):
    client, _ = env
    client.create_job({"id": "spread", "poolInfo": {"poolId": pool2}})
    client.create_tasks("spread", [{"id": f"t{i}", "commandLine": "/bin/sleep 1"} for i in range(4)])
    client.wait_for_tasks("spread", timeout_s=60)
    per_node: dict[str, int] = {}
    for t in client.list_tasks("spread"):
        per_node[t.node_info.node_id] = per_node.get(t.node_info.node_id, 0) + 1
    assert sorted(per_node.values()) == [2, 2]
    client.create_pool({"id": "packed", "vmSize": "testbed", "targetDedicatedNodes": 2,
                        "taskSlotsPerNode": 4, "taskSchedulingPolicy": {"nodeFillType": "pack"}})
    client.wait_for_pool("packed", timeout_s=120)
    client.create_job({"id": "pack", "poolInfo": {"poolId": "packed"}})
    client.create_tasks("pack", [{"id": f"t{i}", "commandLine": "/bin/sleep 1"} for i in range(4)]
                        + [{"id": "big", "commandLine": "/bin/sleep 1", "requiredSlots": 3}])
    client.wait_for_tasks("pack", timeout_s=60)
    tasks = _tasks(client, "pack")
    assert len({tasks[f"t{i}"].node_info.node_id for i in range(4)}) == 1
    assert tasks["big"].node_info.node_id != tasks["t0"].node_info.node_id
    client.delete_pool("packed")
    wait_until(lambda: "packed" not in {p.id for p in client.list_pools()}, what="pool gone")


def test_wall_clock_limit_kills_the_whole_tree_and_counts_retries(env, pool2):
    client, _ = env
    client.create_job({"id": "wall", "poolInfo": {"poolId": pool2}})
    # The task starts a child that ignores SIGTERM and a daemon in its own session.
    script = ("sleep 300 & echo $! >> $AZ_BATCH_NODE_SHARED_DIR/wall.pids; "
              "setsid sleep 301 & echo $! >> $AZ_BATCH_NODE_SHARED_DIR/wall.pids; sleep 302")
    client.create_task("wall", {"id": "t", "commandLine": f"/bin/sh -c '{script}'",
                                "constraints": {"maxWallClockTime": "PT1S",
                                                "maxTaskRetryCount": 1}})
    client.wait_for_tasks("wall", timeout_s=60)
    info = client.get_task("wall", "t").execution_info
    assert info.result == "failure" and info.retry_count == 1
    assert info.exit_code == 0xC000013A
    assert info.failure_info.code == "TaskEnded" and "maxWallClockTime" in info.failure_info.message
    node = client.get_task("wall", "t").node_info.node_id
    pids_file = Path(env[1].host(node).root_dir, "shared", "wall.pids")
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) >= 2
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                               for p in pids), timeout_s=10, what="no process left")


def test_dependencies_one_to_one_one_to_many_range_and_many_to_many(env, pool2):
    client, _ = env
    client.create_job({"id": "deps", "poolInfo": {"poolId": pool2}, "usesTaskDependencies": True})
    t = lambda i, deps=None, cmd="/bin/sleep 0.3": {  # noqa: E731
        "id": i, "commandLine": cmd, **({"dependsOn": deps} if deps else {})}
    client.create_tasks("deps", [
        t("b", {"taskIds": ["a"]}),                        # one-to-one (a added later)
        t("c", {"taskIds": ["a"]}), t("d", {"taskIds": ["a"]}),  # one-to-many
        t("1"), t("2"), t("3"),
        t("4", {"taskIdRanges": [{"start": 1, "end": 3}]}),     # ID range
        t("m1", {"taskIds": ["b", "c"]}), t("m2", {"taskIds": ["b", "c"]}),  # many-to-many
    ])
    assert client.get_task("deps", "b").state == "active"
    client.create_task("deps", t("a"))
    assert client.wait_for_tasks("deps", timeout_s=120)["succeeded"] == 10
    tasks = _tasks(client, "deps")
    end = lambda i: tasks[i].execution_info.end_time  # noqa: E731
    start = lambda i: tasks[i].execution_info.start_time  # noqa: E731
    for dep, ups in {"b": "a", "c": "a", "d": "a", "4": "123", "m1": "bc", "m2": "bc"}.items():
        for up in ups:
            assert start(dep) >= end(up), (dep, up)


def test_dependency_actions_block_and_satisfy(env, pool2):
    client, _ = env
    client.create_job({"id": "actions", "poolInfo": {"poolId": pool2},
                       "usesTaskDependencies": True})
    fail3 = "/bin/sh -c 'exit 3'"
    client.create_tasks("actions", [
        {"id": "default-fail", "commandLine": fail3},
        {"id": "after-default-fail", "commandLine": "/bin/true",
         "dependsOn": {"taskIds": ["default-fail"]}},
        {"id": "mapped-satisfy", "commandLine": fail3, "exitConditions": {
            "exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}]}},
        {"id": "after-mapped-satisfy", "commandLine": "/bin/true",
         "dependsOn": {"taskIds": ["mapped-satisfy"]}},
        {"id": "range-block", "commandLine": "/bin/true", "exitConditions": {
            "exitCodeRanges": [{"start": 0, "end": 0, "exitOptions": {"dependencyAction": "block"}}]}},
        {"id": "after-range-block", "commandLine": "/bin/true",
         "dependsOn": {"taskIds": ["range-block"]}},
        {"id": "ok", "commandLine": "/bin/true"},
        {"id": "after-ok", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["ok"]}},
    ])
    wait_until(lambda: client.get_task("actions", "after-ok").state == "completed"
               and client.get_task("actions", "after-mapped-satisfy").state == "completed",
               timeout_s=60, what="satisfied dependents ran")
    wait_until(lambda: client.get_task_counts("actions")["running"] == 0, what="idle")
    raw = client._request("GET", "/jobs/actions/tasks").json()["value"]
    by_id = {t["id"]: t for t in raw}
    for blocked, up in (("after-default-fail", "default-fail"), ("after-range-block", "range-block")):
        assert by_id[blocked]["state"] == "active"
        assert by_id[blocked]["dependencyState"]["state"] == "blocked"
        assert up in by_id[blocked]["dependencyState"]["reason"]
    with pytest.raises(BatchError) as info:
        client.create_task("fifty-nope" if False else "actions",
                           {"id": "self", "commandLine": "x", "dependsOn": {"taskIds": ["self"]}})
    assert info.value.status == 400
    client.create_job({"id": "nodeps", "poolInfo": {"poolId": pool2}})
    with pytest.raises(BatchError) as info:
        client.create_task("nodeps", {"id": "x", "commandLine": "x",
                                      "dependsOn": {"taskIds": ["y"]}})
    assert info.value.code == "TaskDependenciesNotSpecifiedOnJob"


def test_exit_condition_job_action_and_on_all_tasks_complete(env, pool2):
    client, _ = env
    client.create_job({"id": "jobaction", "poolInfo": {"poolId": pool2},
                       "onTaskFailure": "performexitoptionsjobaction"})
    client.create_task("jobaction", {"id": "t", "commandLine": "/bin/sh -c 'exit 9'",
                                     "exitConditions": {"exitCodes": [
                                         {"code": 9, "exitOptions": {"jobAction": "terminate"}}]}})
    job = wait_until(lambda: (j := client.get_job("jobaction")).state == "completed" and j,
                     what="job terminated by the task's exit condition")
    assert job.execution_info.terminate_reason == "TaskFailed"
    client.create_job({"id": "alldone", "poolInfo": {"poolId": pool2},
                       "onAllTasksComplete": "noaction"})
    client.create_tasks("alldone", [{"id": f"t{i}", "commandLine": "/bin/true"} for i in range(5)])
    client.update_job("alldone", {"onAllTasksComplete": "terminatejob"})
    client.wait_for_tasks("alldone", timeout_s=60)
    job = wait_until(lambda: (j := client.get_job("alldone")).state == "completed" and j,
                     what="all tasks complete terminates the job")
    assert job.execution_info.terminate_reason == "AllTasksComplete"


def test_job_preparation_once_per_node_and_release_on_those_nodes(env, pool2):
    client, bed = env
    mark = "/bin/sh -c 'echo $AZ_BATCH_NODE_ID >> $AZ_BATCH_NODE_SHARED_DIR/{}'"
    client.create_job({"id": "prep", "poolInfo": {"poolId": pool2},
                       "jobPreparationTask": {"commandLine": mark.format("prep.log")},
                       "jobReleaseTask": {"commandLine": mark.format("release.log")}})
    client.create_tasks("prep", [{"id": f"t{i}", "commandLine":
                                  "/bin/sh -c 'test -d $AZ_BATCH_JOB_PREP_WORKING_DIR'"}
                                 for i in range(12)])
    assert client.wait_for_tasks("prep", timeout_s=120)["succeeded"] == 12
    ran_on = {t.node_info.node_id for t in client.list_tasks("prep")}

    def log(node: str, name: str) -> list[str]:
        path = Path(bed.host(node).root_dir, "shared", name)
        return path.read_text().split() if path.exists() else []

    pool_nodes = [n.id for n in client.list_nodes(pool2)]
    for node in pool_nodes:
        assert log(node, "prep.log") == ([node] if node in ran_on else [])
    client.terminate_job("prep")
    wait_until(lambda: client.get_job("prep").state == "completed", what="job completed")
    for node in pool_nodes:
        assert log(node, "release.log") == ([node] if node in ran_on else [])
    status = client.list_job_preparation_and_release_task_status("prep")
    assert {s["nodeId"] for s in status} == ran_on
    assert all(s["jobPreparationTaskExecutionInfo"]["result"] == "success"
               and s["jobReleaseTaskExecutionInfo"]["exitCode"] == 0 for s in status)


def test_job_disable_enable_and_task_reactivate(env, pool2):
    client, _ = env
    client.create_job({"id": "ctl", "poolInfo": {"poolId": pool2}})
    client.create_task("ctl", {"id": "long", "commandLine": "/bin/sleep 30"})
    wait_until(lambda: client.get_task("ctl", "long").state == "running", what="running")
    client.disable_job("ctl", "requeue")
    wait_until(lambda: client.get_job("ctl").state == "disabled", what="disabled")
    task = client.get_task("ctl", "long")
    assert task.state == "active" and task.execution_info.requeue_count == 1
    client.create_task("ctl", {"id": "flaky", "commandLine": "/bin/false"})
    assert client.get_task("ctl", "flaky").state == "active"  # nothing starts while disabled
    client.enable_job("ctl")
    wait_until(lambda: client.get_task("ctl", "flaky").state == "completed", what="flaky ran")
    client.reactivate_task("ctl", "flaky")
    assert client.get_task("ctl", "flaky").execution_info.retry_count == 0
    wait_until(lambda: client.get_task("ctl", "flaky").state == "completed", what="ran again")
    client.terminate_task("ctl", "long")
    with pytest.raises(BatchError) as info:
        client.reactivate_task("ctl", "missing")
    assert info.value.code == "TaskNotFound"


def test_node_lost_mid_task_requeues_without_spending_retries(env):
    client, bed = env
    client.create_pool({"id": "lossy", "vmSize": "testbed", "targetDedicatedNodes": 2})
    nodes = client.wait_for_pool("lossy", timeout_s=120)
    client.create_job({"id": "loss", "poolInfo": {"poolId": "lossy"}})
    client.create_task("loss", {"id": "t", "commandLine": "/bin/sleep 4"})
    task = wait_until(lambda: (t := client.get_task("loss", "t")).state == "running" and t,
                      what="running")
    victim = task.node_info.node_id
    worker_pid = int(Path(bed.host(victim).root_dir, "node.pid").read_text())
    bed.kill(victim)  # the host's sshd ...
    os.kill(worker_pid, signal.SIGKILL)  # ... and its worker
    wait_until(lambda: client.get_task_counts("loss")["completed"] == 1, timeout_s=60,
               what="task completed elsewhere")
    task = client.get_task("loss", "t")
    assert task.execution_info.result == "success"
    assert task.node_info.node_id != victim
    assert task.execution_info.retry_count == 0 and task.execution_info.requeue_count == 1
    # Its host cannot be reached: the pool manager restarts the node when the host is back,
    # or replaces it by a free host (when this module's other pools left one).
    bed.start(victim)
    wait_until(lambda: [n.state for n in client.list_nodes("lossy")] == ["idle", "idle"],
               timeout_s=120, what="the pool's two nodes idle again, by themselves")
    client.delete_pool("lossy")
    wait_until(lambda: "lossy" not in {p.id for p in client.list_pools()}, what="pool gone")
    assert len(nodes) == 2


def test_node_reboot_reimage_remove_and_disable_scheduling(env, pool2):
    client, bed = env
    client.create_job({"id": "nodeops", "poolInfo": {"poolId": pool2}})
    a, b = [n.id for n in client.list_nodes(pool2)]
    # disable scheduling with taskcompletion: the running task finishes, nothing new starts.
    client.create_task("nodeops", {"id": "run", "commandLine": "/bin/sleep 1"})
    wait_until(lambda: client.get_task("nodeops", "run").state == "running", what="running")
    on = client.get_task("nodeops", "run").node_info.node_id
    other = b if on == a else a
    client.disable_node_scheduling(pool2, on, "taskcompletion")
    assert client.get_node(pool2, on).scheduling_state == "disabled"
    client.create_tasks("nodeops", [{"id": f"x{i}", "commandLine": "/bin/true"} for i in range(6)])
    client.wait_for_tasks("nodeops", timeout_s=60)
    tasks = _tasks(client, "nodeops")
    assert tasks["run"].execution_info.result == "success"
    assert {tasks[f"x{i}"].node_info.node_id for i in range(6)} == {other}
    client.enable_node_scheduling(pool2, on)
    # reboot with requeue: the running task goes back to the queue; the start task reruns.
    client.create_task("nodeops", {"id": "rebooted", "commandLine": "/bin/sleep 2"})
    node = wait_until(lambda: (t := client.get_task("nodeops", "rebooted")).state == "running"
                      and t.node_info.node_id, what="running")
    boot = client.get_node(pool2, node).last_boot_time
    client.reboot_node(pool2, node, "requeue")
    wait_until(lambda: client.get_node(pool2, node).state in ("idle", "running")
               and client.get_node(pool2, node).last_boot_time > boot, timeout_s=90,
               what="node rebooted")
    client.wait_for_tasks("nodeops", timeout_s=60)
    assert client.get_task("nodeops", "rebooted").execution_info.requeue_count >= 1
    # reimage wipes the node's root dir.
    marker = Path(bed.host(other).root_dir, "shared", "marker")
    marker.write_text("x")
    client.reimage_node(pool2, other)
    wait_until(lambda: client.get_node(pool2, other).state == "idle" and not marker.exists(),
               timeout_s=90, what="node reimaged")
    # remove a node with terminate: its running task ends, the pool shrinks.
    client.create_task("nodeops", {"id": "doomed", "commandLine": "/bin/sleep 30"})
    victim = wait_until(lambda: (t := client.get_task("nodeops", "doomed")).state == "running"
                        and t.node_info.node_id, what="running")
    client.remove_nodes(pool2, [victim], "terminate")
    wait_until(lambda: [n.id for n in client.list_nodes(pool2)] == [a if victim == b else b],
               timeout_s=60, what="node removed")
    doomed = client.get_task("nodeops", "doomed")
    assert doomed.state == "completed" and doomed.execution_info.failure_info.code == "TaskEnded"
    assert client.get_pool(pool2).target_dedicated_nodes == 1
    with pytest.raises(BatchError) as info:
        client.reboot_node(pool2, "no-such-node")
    assert info.value.code == "NodeNotFound"


def test_short_runs_are_sent_ahead_yet_a_node_runs_no_more_than_its_slots(env):
    """Short tasks: the service sends a node runs ahead of its free slots (the node
    starts each as a slot frees). A one-slot node then shows more than one running
    task at times, but its runs never overlap; one still waiting on the node is
    ended by Task - Terminate and never starts."""
    client, _ = env
    client.create_pool({"id": "ahead", "vmSize": "testbed", "targetDedicatedNodes": 1,
                        "taskSlotsPerNode": 1})
    [node] = client.wait_for_pool("ahead", timeout_s=120)
    client.create_job({"id": "short", "poolInfo": {"poolId": "ahead"}})
    client.create_tasks("short", [{"id": f"s{i:03d}", "commandLine": "/bin/true"}
                                  for i in range(300)])
    most = 0
    while client.get_task_counts("short")["completed"] < 300:
        most = max(most, client.get_node("ahead", node.id).running_tasks_count or 0)
    assert most > 1  # runs were sent ahead of the node's one slot
    tasks = client.list_tasks("short")
    assert all(t.execution_info.result == "success" for t in tasks)
    spans = sorted((t.execution_info.start_time, t.execution_info.end_time) for t in tasks)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))  # one at a time
    # A long run holds the slot; short ones sent behind it wait on the node.
    client.create_job({"id": "behind", "poolInfo": {"poolId": "ahead"}})
    client.create_tasks("behind", [{"id": "long", "commandLine": "/bin/sleep 2"},
                                   *({"id": f"b{i}", "commandLine": "/bin/true"}
                                     for i in range(3))])
    wait_until(lambda: client.get_task("behind", "b1").state == "running", timeout_s=30)
    assert client.get_task("behind", "long").state == "running"
    client.terminate_task("behind", "b1")
    client.wait_for_tasks("behind", timeout_s=60)
    got = _tasks(client, "behind")
    assert got["long"].execution_info.result == "success"
    assert got["b1"].execution_info.result == "failure"
    assert got["b1"].execution_info.failure_info.code == "TaskEnded"
    assert got["b0"].execution_info.result == got["b2"].execution_info.result == "success"
    assert got["b0"].execution_info.start_time >= got["long"].execution_info.end_time
    client.delete_pool("ahead")


def test_short_runs_stuck_behind_a_long_one_go_back_to_the_queue_once(env):
    """A node gives back, unstarted, runs that waited GIVE_BACK_S behind a run holding its
    one slot; their tasks go back to the queue (the node, its slot held, gets none ahead
    again) and run when the slot frees. Never started, that is no Batch requeue: their
    requeueCount stays 0."""
    client, _ = env
    client.create_pool({"id": "stuck", "vmSize": "testbed", "targetDedicatedNodes": 1,
                        "taskSlotsPerNode": 1})
    client.wait_for_pool("stuck", timeout_s=120)
    client.create_job({"id": "warm", "poolInfo": {"poolId": "stuck"}})
    client.create_tasks("warm", [{"id": f"w{i}", "commandLine": "/bin/true"} for i in range(30)])
    client.wait_for_tasks("warm", timeout_s=60)  # the node's runs are short: runs go ahead
    client.create_job({"id": "mixed", "poolInfo": {"poolId": "stuck"}})
    client.create_tasks("mixed", [{"id": "long", "commandLine": "/bin/sleep 4"},
                                  *({"id": f"s{i}", "commandLine": "/bin/true"}
                                    for i in range(3))])
    client.wait_for_tasks("mixed", timeout_s=60)
    got = _tasks(client, "mixed")
    assert all(t.execution_info.result == "success" for t in got.values())
    shorts = [got[f"s{i}"] for i in range(3)]
    assert [t.execution_info.requeue_count for t in shorts] == [0, 0, 0]  # given back, unseen
    assert got["long"].execution_info.requeue_count == 0
    assert all(t.execution_info.start_time >= got["long"].execution_info.end_time
               for t in shorts)
    client.delete_pool("stuck")

