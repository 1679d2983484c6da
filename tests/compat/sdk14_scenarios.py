"""Scenarios run with the official ``azure-batch`` 14.x SDK (``azure.batch.BatchServiceClient``).

Run as ``python sdk14_scenarios.py <scenario>`` by tests/compat/test_sdk.py,
with the interpreter of the 14.x venv; see _harness.py for the environment.
The scenarios are those of sdk15_scenarios.py, written as 14.x code is: the
operation groups (``client.pool``, ``client.task``, ...), ``*Options`` objects,
and polling by hand where 15.x has long-running operations.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.batch.models as bm
from _harness import (
    ACCOUNT,
    ENDPOINT,
    KEY,
    MPIEXEC,
    PREFIX,
    PYTHON,
    VM_SIZE,
    LogCounter,
    enum,
    iso,
    main,
    max_overlap,
    wait_for,
    when,
)
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

responses: list[dict[str, Any]] = []


def _hook(r: Any, *args: Any, **kwargs: Any) -> None:
    responses.append({"method": r.request.method, "url": r.request.url,
                      "status": r.status_code, "headers": dict(r.headers),
                      "request_headers": dict(r.request.headers)})


def client() -> BatchServiceClient:
    c = BatchServiceClient(SharedKeyCredentials(ACCOUNT, KEY), batch_url=ENDPOINT)
    c.config.hooks.append(_hook)
    return c


def error_of(exc: bm.BatchErrorException) -> dict[str, Any]:
    err = exc.error
    return {"status": exc.response.status_code, "type": type(exc).__name__,
            "code": err.code if err else None,
            "message": err.message.value if err and err.message else None,
            "details": {v.key: v.value for v in (err.values or [])} if err else {}}


def azure_vm_configuration() -> bm.VirtualMachineConfiguration:
    return bm.VirtualMachineConfiguration(
        image_reference=bm.ImageReference(
            publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts",
            version="latest"),
        node_agent_sku_id="batch.node.ubuntu 22.04")


def wait_idle(c: BatchServiceClient, pool_id: str, n: int,
              timeout_s: float = 180) -> list[bm.ComputeNode]:
    """Wait until ``n`` nodes are idle, asking the service with a node $filter."""
    opts = bm.ComputeNodeListOptions(filter="state eq 'idle'")

    def ready() -> list[bm.ComputeNode] | None:
        nodes = list(c.compute_node.list(pool_id, compute_node_list_options=opts))
        return nodes if len(nodes) == n else None
    return wait_for(ready, timeout_s, f"{n} idle nodes in pool {pool_id}")


def wait_tasks(c: BatchServiceClient, job_id: str, timeout_s: float = 300) -> list[bm.CloudTask]:
    def done() -> list[bm.CloudTask] | None:
        tasks = list(c.task.list(job_id))
        return tasks if tasks and all(t.state == bm.TaskState.completed for t in tasks) else None
    return wait_for(done, timeout_s, f"the tasks of job {job_id} to complete", 1)


def read_file(c: BatchServiceClient, job_id: str, task_id: str, name: str) -> str:
    return b"".join(c.file.get_from_task(job_id, task_id, name)).decode()


def delete_pool(c: BatchServiceClient, pool_id: str) -> dict[str, Any]:
    """Delete; return the states the pool showed until it was gone."""
    c.pool.delete(pool_id)
    states = []

    def gone() -> bool:
        try:
            states.append(enum(c.pool.get(pool_id).state))
            return False
        except bm.BatchErrorException as exc:
            states.append(exc.error.code)
            return exc.response.status_code == 404
    wait_for(gone, 120, f"pool {pool_id} to be deleted")
    return {"states": sorted(set(states), key=states.index), "exists": c.pool.exists(pool_id)}


def delete_job(c: BatchServiceClient, job_id: str) -> str:
    c.job.delete(job_id)

    def gone() -> str | None:
        try:
            c.job.get(job_id)
            return None
        except bm.BatchErrorException as exc:
            return exc.error.code if exc.response.status_code == 404 else None
    return wait_for(gone, 120, f"job {job_id} to be deleted")


# ------------------------------------------------------------------ scenarios


def pool_start_task() -> dict[str, Any]:
    c = client()
    pool_id, job_id = f"{PREFIX}-st", f"{PREFIX}-st-job"
    c.pool.add(bm.PoolAddParameter(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2, task_slots_per_node=2,
        virtual_machine_configuration=azure_vm_configuration(),
        task_scheduling_policy=bm.TaskSchedulingPolicy(node_fill_type="spread"),
        start_task=bm.StartTask(
            command_line="/bin/sh -c 'echo started-on-$AZ_BATCH_NODE_ID > "
                         "$AZ_BATCH_NODE_SHARED_DIR/started.txt'",
            environment_settings=[bm.EnvironmentSetting(name="GREETING", value="hi")],
            user_identity=bm.UserIdentity(auto_user=bm.AutoUserSpecification(
                scope=bm.AutoUserScope.pool, elevation_level=bm.ElevationLevel.admin)),
            max_task_retry_count=1, wait_for_success=True),
        metadata=[bm.MetadataItem(name="owner", value="compat")],
    ))
    created = responses[-1]
    pool = c.pool.get(pool_id)
    nodes = wait_idle(c, pool_id, 2)
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id)))
    c.task.add_collection(job_id, [bm.TaskAddParameter(
        id=f"t{i}", command_line="/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/started.txt; sleep 3'")
        for i in range(4)])
    tasks = wait_tasks(c, job_id)
    per_node: dict[str, list[Any]] = {}
    for t in tasks:
        per_node.setdefault(t.node_info.node_id, []).append(
            (t.execution_info.start_time, t.execution_info.end_time))
    out = {
        "create_status": created["status"],
        "create_headers": sorted(created["headers"]),
        "pool": {"id": pool.id, "vm_size": pool.vm_size, "state": enum(pool.state),
                 "task_slots_per_node": pool.task_slots_per_node,
                 "start_task": pool.start_task.command_line,
                 "image": pool.virtual_machine_configuration.image_reference.offer,
                 "node_agent": pool.virtual_machine_configuration.node_agent_sku_id,
                 "metadata": {i.name: i.value for i in pool.metadata or []},
                 "creation_time": iso(pool.creation_time), "e_tag": pool.e_tag},
        "nodes": [{"id": n.id, "state": enum(n.state),
                   "start_task_state": enum(n.start_task_info.state),
                   "start_task_exit_code": n.start_task_info.exit_code,
                   "start_task_result": enum(n.start_task_info.result)} for n in nodes],
        "tasks": {t.id: {"state": enum(t.state), "exit_code": t.execution_info.exit_code,
                         "node": t.node_info.node_id,
                         "stdout": read_file(c, job_id, t.id, "stdout.txt")} for t in tasks},
        "max_overlap_per_node": {k: max_overlap(v) for k, v in per_node.items()},
    }
    props = c.file.get_properties_from_task(job_id, "t0", "stdout.txt", raw=True).headers
    out["files"] = {
        "names": sorted(f.name for f in c.file.list_from_task(job_id, "t0")),
        "range": b"".join(c.file.get_from_task(
            job_id, "t0", "stdout.txt", file_get_from_task_options=bm.FileGetFromTaskOptions(
                ocp_range="bytes=0-6"))).decode(),
        "content_length": int(props["Content-Length"]),
        "is_directory": props["ocp-batch-file-isdirectory"],
        "url": props["ocp-batch-file-url"], "last_modified": str(props["Last-Modified"]),
        "node_startup": sorted(f.name for f in c.file.list_from_compute_node(
            pool_id, nodes[0].id, recursive=True) if f.name.startswith("startup/")),
        "node_file": b"".join(c.file.get_from_compute_node(
            pool_id, nodes[0].id, "shared/started.txt")).decode(),
    }
    delete_job(c, job_id)
    out["delete"] = delete_pool(c, pool_id)
    return out


def job_prep_release() -> dict[str, Any]:
    c = client()
    pool_id, job_id = f"{PREFIX}-pr", f"{PREFIX}-pr-job"
    c.pool.add(bm.PoolAddParameter(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2))
    wait_idle(c, pool_id, 2)
    c.job.add(bm.JobAddParameter(
        id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id),
        job_preparation_task=bm.JobPreparationTask(
            command_line="/bin/sh -c 'echo prepared-$AZ_BATCH_NODE_ID > "
                         "$AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID.txt'",
            wait_for_success=True),
        job_release_task=bm.JobReleaseTask(
            command_line="/bin/sh -c 'echo released > "
                         "$AZ_BATCH_NODE_SHARED_DIR/release-$AZ_BATCH_JOB_ID.txt'"),
    ))
    c.task.add_collection(job_id, [bm.TaskAddParameter(
        id=f"t{i}",
        command_line="/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID.txt'")
        for i in range(4)])
    tasks = wait_tasks(c, job_id)
    stdout = {t.id: read_file(c, job_id, t.id, "stdout.txt") for t in tasks}
    c.job.terminate(job_id, terminate_reason="compat-done")
    job = wait_for(when(lambda j: j.state == bm.JobState.completed, lambda: c.job.get(job_id)),
                   60, "the job to complete")

    def released() -> list[Any] | None:
        items = list(c.job.list_preparation_and_release_task_status(job_id))
        ok = items and all(i.job_release_task_execution_info and
                           enum(i.job_release_task_execution_info.state) == "completed"
                           for i in items)
        return items if ok else None
    items = wait_for(released, 60, "release tasks to complete")
    out = {
        "stdout": stdout,
        "job": {"state": enum(job.state),
                "terminate_reason": job.execution_info.terminate_reason,
                "end_time": iso(job.execution_info.end_time),
                "prep_command": job.job_preparation_task.command_line},
        "status": [{"node": i.node_id, "pool": i.pool_id,
                    "prep_state": enum(i.job_preparation_task_execution_info.state),
                    "prep_exit_code": i.job_preparation_task_execution_info.exit_code,
                    "release_state": enum(i.job_release_task_execution_info.state),
                    "release_exit_code": i.job_release_task_execution_info.exit_code}
                   for i in items],
    }
    out["job_after_delete"] = delete_job(c, job_id)
    out["delete"] = delete_pool(c, pool_id)
    return out


def tasks_1000() -> dict[str, Any]:
    c = client()
    pool_id, job_id = f"{PREFIX}-k", f"{PREFIX}-k-job"
    c.pool.add(bm.PoolAddParameter(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2,
                                   task_slots_per_node=4))
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id)))
    halving = LogCounter("reduced from")
    logging.getLogger("azure.batch").addHandler(halving)
    logging.getLogger("azure.batch").setLevel(logging.INFO)
    before = len(responses)
    tasks = [bm.TaskAddParameter(
        id=f"task{i:04d}",
        command_line="/bin/sh -c 'exit 3'" if i % 100 == 7 else "/bin/true")
        for i in range(1000)]
    t0 = time.monotonic()
    result = c.task.add_collection(job_id, tasks)
    add_s = time.monotonic() - t0
    collection_calls = [r["status"] for r in responses[before:]
                        if r["url"].split("?")[0].endswith("/addtaskcollection")]
    big_value = "x" * 12000
    before = len(responses)
    big = c.task.add_collection(job_id, [bm.TaskAddParameter(
        id=f"big{i:03d}", command_line="/bin/sh -c 'echo ${#BIG}'",
        environment_settings=[bm.EnvironmentSetting(name="BIG", value=big_value)])
        for i in range(150)])
    big_calls = [r["status"] for r in responses[before:]
                 if r["url"].split("?")[0].endswith("/addtaskcollection")]
    wait_tasks(c, job_id, timeout_s=600)
    pages_before = len(responses)
    all_tasks = list(c.task.list(job_id, task_list_options=bm.TaskListOptions(
        max_results=100, select="id,state")))
    pages = len(responses) - pages_before
    failed = list(c.task.list(job_id, task_list_options=bm.TaskListOptions(
        filter="executionInfo/exitCode eq 3", select="id,executionInfo")))
    selected = list(c.task.list(job_id, task_list_options=bm.TaskListOptions(
        filter="startswith(id, 'big')", select="id,state,executionInfo")))
    counts = c.job.get_task_counts(job_id)
    out = {
        "added": len(result.value),
        "add_statuses": sorted({enum(r.status) for r in result.value}),
        "add_s": add_s,
        "collection_calls": collection_calls,
        "big_added": len(big.value),
        "big_calls": big_calls,
        "halvings_logged": halving.count,
        "big_stdout": read_file(c, job_id, "big007", "stdout.txt"),
        "listed": len(all_tasks), "list_pages": pages,
        "listed_unique": len({t.id for t in all_tasks}),
        "selected_has_command_line": any(t.command_line for t in all_tasks),
        "failed_ids": sorted(t.id for t in failed),
        "failed_exit_codes": sorted({t.execution_info.exit_code for t in failed}),
        "big_selected": len(selected),
        "big_selected_states": sorted({enum(t.state) for t in selected}),
        "counts": {"completed": counts.task_counts.completed,
                   "succeeded": counts.task_counts.succeeded,
                   "failed": counts.task_counts.failed},
    }
    delete_job(c, job_id)
    out["delete"] = delete_pool(c, pool_id)
    return out


def multi_instance() -> dict[str, Any]:
    c = client()
    pool_id, job_id = f"{PREFIX}-mpi", f"{PREFIX}-mpi-job"
    c.pool.add(bm.PoolAddParameter(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=4,
        enable_inter_node_communication=True,
        task_scheduling_policy=bm.TaskSchedulingPolicy(node_fill_type="pack"),
        virtual_machine_configuration=azure_vm_configuration()))
    nodes = wait_idle(c, pool_id, 4)
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id)))
    c.task.add(job_id, bm.TaskAddParameter(
        id="mpi",
        command_line=f"/bin/sh -c '{MPIEXEC} -hosts $AZ_BATCH_HOST_LIST -n 4 "
                     f"{PYTHON} -m hpcbatch.mpihello'",
        multi_instance_settings=bm.MultiInstanceSettings(
            number_of_instances=4,
            coordination_command_line="/bin/sh -c 'echo coordinated $AZ_BATCH_NODE_ID'"),
        user_identity=bm.UserIdentity(auto_user=bm.AutoUserSpecification(
            scope=bm.AutoUserScope.pool, elevation_level=bm.ElevationLevel.non_admin))))
    [task] = wait_tasks(c, job_id)
    subtasks = c.task.list_subtasks(job_id, "mpi").value
    out = {
        "nodes": {n.id: n.ip_address for n in nodes},
        "task": {"state": enum(task.state), "exit_code": task.execution_info.exit_code,
                 "result": enum(task.execution_info.result), "node": task.node_info.node_id,
                 "instances": task.multi_instance_settings.number_of_instances},
        "stdout": read_file(c, job_id, "mpi", "stdout.txt"),
        "subtasks": [{"id": s.id, "state": enum(s.state), "node": s.node_info.node_id,
                      "exit_code": s.exit_code, "result": enum(s.result),
                      "stdout": b"".join(c.file.get_from_compute_node(
                          pool_id, s.node_info.node_id,
                          f"{s.node_info.task_root_directory}/stdout.txt")).decode()}
                     for s in subtasks],
    }
    delete_job(c, job_id)
    out["delete"] = delete_pool(c, pool_id)
    return out


def autoscale() -> dict[str, Any]:
    c = client()
    pool_id = f"{PREFIX}-as"
    c.pool.add(bm.PoolAddParameter(
        id=pool_id, vm_size=VM_SIZE, enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes = 0;",
        auto_scale_evaluation_interval=timedelta(minutes=5)))
    first = wait_for(lambda: c.pool.get(pool_id).auto_scale_run, 30, "the first autoscale run")
    run = c.pool.evaluate_auto_scale(
        pool_id, "$TargetDedicatedNodes = min(3, 1 + 1); $NodeDeallocationOption = taskcompletion;")
    try:
        c.pool.evaluate_auto_scale(pool_id, "$TargetDedicatedNodes = ;")
        bad: Any = "accepted"
    except bm.BatchErrorException as exc:
        bad = {"status": exc.response.status_code, "code": exc.error.code}
    c.pool.enable_auto_scale(pool_id, auto_scale_formula="$TargetDedicatedNodes = 1;",
                             auto_scale_evaluation_interval=timedelta(seconds=10))
    grown = wait_for(when(lambda p: p.current_dedicated_nodes == 1
                          and p.allocation_state == bm.AllocationState.steady,
                          lambda: c.pool.get(pool_id)), 120, "the autoscaled pool to reach 1 node")
    c.pool.disable_auto_scale(pool_id)
    after = c.pool.get(pool_id)
    return {
        "first_run": {"results": first.results, "timestamp": iso(first.timestamp)},
        "evaluate": {"results": run.results, "error": run.error and run.error.code,
                     "timestamp": iso(run.timestamp)},
        "bad_formula": bad,
        "grown": {"current": grown.current_dedicated_nodes,
                  "target": grown.target_dedicated_nodes,
                  "interval_s": grown.auto_scale_evaluation_interval.total_seconds(),
                  "formula": grown.auto_scale_formula,
                  "last_results": grown.auto_scale_run and grown.auto_scale_run.results},
        "disabled": {"enable_auto_scale": after.enable_auto_scale,
                     "target": after.target_dedicated_nodes},
        "delete": delete_pool(c, pool_id),
    }


def lifecycle() -> dict[str, Any]:
    c = client()
    pool_id, job_id = f"{PREFIX}-lc", f"{PREFIX}-lc-job"
    c.pool.add(bm.PoolAddParameter(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2))
    wait_idle(c, pool_id, 2)
    c.pool.resize(pool_id, bm.PoolResizeParameter(target_dedicated_nodes=1))
    resized = wait_for(when(lambda p: p.allocation_state == bm.AllocationState.steady
                            and p.current_dedicated_nodes == 1,
                            lambda: c.pool.get(pool_id)), 120, "the pool to shrink to 1 node")
    [node] = list(c.compute_node.list(pool_id))
    c.compute_node.reboot(pool_id, node.id, node_reboot_option="requeue")
    time.sleep(1)
    rebooted = wait_for(when(lambda n: n.state == bm.ComputeNodeState.idle,
                             lambda: c.compute_node.get(pool_id, node.id)),
                        120, "the rebooted node to be idle")
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id)))
    c.task.add(job_id, bm.TaskAddParameter(id="long", command_line="sleep 300"))
    wait_for(lambda: c.task.get(job_id, "long").state == bm.TaskState.running, 60,
             "the long task to run")
    c.job.disable(job_id, "requeue")
    wait_for(lambda: c.job.get(job_id).state == bm.JobState.disabled, 60, "the job to disable")
    disabled = {"job": enum(c.job.get(job_id).state),
                "task": enum(c.task.get(job_id, "long").state)}
    c.job.enable(job_id)
    wait_for(lambda: c.task.get(job_id, "long").state == bm.TaskState.running, 60,
             "the long task to run again")
    enabled = {"job": enum(c.job.get(job_id).state),
               "requeues": c.task.get(job_id, "long").execution_info.requeue_count}
    etag = c.job.get(job_id).e_tag
    try:
        c.job.terminate(job_id, terminate_reason="never",
                        job_terminate_options=bm.JobTerminateOptions(if_match="0xWRONG"))
        stale: Any = "accepted"
    except bm.BatchErrorException as exc:
        stale = {"status": exc.response.status_code, "code": exc.error.code}
    t0 = time.monotonic()
    c.job.terminate(job_id, terminate_reason="compat-stop",
                    job_terminate_options=bm.JobTerminateOptions(if_match=etag))
    job = wait_for(when(lambda j: j.state == bm.JobState.completed, lambda: c.job.get(job_id)),
                   60, "the job to complete")
    task = c.task.get(job_id, "long")
    out = {
        "resized": {"current": resized.current_dedicated_nodes,
                    "target": resized.target_dedicated_nodes,
                    "allocation_state": enum(resized.allocation_state)},
        "rebooted": {"state": enum(rebooted.state),
                     "last_boot_time_changed": rebooted.last_boot_time != node.last_boot_time},
        "disabled": disabled, "enabled": enabled,
        "stale_etag": stale,
        "terminate_s": time.monotonic() - t0,
        "job": {"state": enum(job.state), "reason": job.execution_info.terminate_reason},
        "task": {"state": enum(task.state), "result": enum(task.execution_info.result),
                 "failure": task.execution_info.failure_info and
                 task.execution_info.failure_info.code},
    }
    delete_job(c, job_id)
    out["job_exists_after_delete"] = any(j.id == job_id for j in c.job.list())
    out["delete"] = delete_pool(c, pool_id)
    return out


def job_schedule() -> dict[str, Any]:
    c = client()
    schedule_id = f"{PREFIX}-sched"
    c.job_schedule.add(bm.JobScheduleAddParameter(
        id=schedule_id, schedule=bm.Schedule(recurrence_interval=timedelta(hours=1)),
        job_specification=bm.JobSpecification(
            pool_info=bm.PoolInformation(pool_id=f"{PREFIX}-sched-pool"), priority=5)))
    created = responses[-1]
    jobs = wait_for(lambda: list(c.job.list_from_job_schedule(schedule_id)), 30,
                    "the schedule's first job")
    got = c.job_schedule.get(schedule_id)
    c.job_schedule.disable(schedule_id)
    disabled = c.job_schedule.get(schedule_id).state
    c.job_schedule.enable(schedule_id)
    enabled = c.job_schedule.get(schedule_id).state
    listed = [x.id for x in c.job_schedule.list(job_schedule_list_options=
                                                bm.JobScheduleListOptions(
                                                    filter=f"id eq '{schedule_id}'"))]
    c.job_schedule.terminate(schedule_id)
    terminated = wait_for(when(lambda x: enum(x.state) == "completed",
                               lambda: c.job_schedule.get(schedule_id)),
                          30, "the schedule to complete")
    job_after = wait_for(when(lambda j: enum(j.state) == "completed",
                              lambda: c.job.get(jobs[0].id)),
                         30, "the schedule's job to complete")
    c.job_schedule.delete(schedule_id)
    exists_after = wait_for(lambda: not c.job_schedule.exists(schedule_id), 30,
                            "the schedule to be deleted")
    try:
        c.job_schedule.get(schedule_id)
        after: Any = "still there"
    except bm.BatchErrorException as exc:
        after = exc.error.code
    return {
        "create_status": created["status"],
        "jobs": [j.id for j in jobs], "job_priority": jobs[0].priority,
        "state": enum(got.state), "recent_job": got.execution_info.recent_job.id,
        "recurrence_s": got.schedule.recurrence_interval.total_seconds(),
        "disabled": enum(disabled), "enabled": enum(enabled), "listed": listed,
        "terminated": enum(terminated.state),
        "end_time": iso(terminated.execution_info.end_time),
        "job_after_terminate": {"state": enum(job_after.state),
                                "reason": job_after.execution_info.terminate_reason},
        "after_delete": after, "gone": exists_after,
    }


def updates() -> dict[str, Any]:
    c = client()
    pool_id, job_id = f"{PREFIX}-up", f"{PREFIX}-up-job"
    c.pool.add(bm.PoolAddParameter(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=0,
                                   user_accounts=[bm.UserAccount(name="batchuser",
                                                                 password="batch-pw-1")]))
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id),
                                 priority=1))
    out: dict[str, Any] = {}
    c.job.patch(job_id, bm.JobPatchParameter(priority=10))
    out["patched_priority"] = c.job.get(job_id).priority
    c.job.update(job_id, bm.JobUpdateParameter(pool_info=bm.PoolInformation(pool_id=pool_id)))
    out["replaced_priority"] = c.job.get(job_id).priority
    try:
        c.pool.patch(pool_id, bm.PoolPatchParameter(
            metadata=[bm.MetadataItem(name="stage", value="two")]))
        out["pool_update"] = {i.name: i.value for i in c.pool.get(pool_id).metadata or []}
    except bm.BatchErrorException as exc:
        out["pool_update"] = exc.error.code
    try:
        c.task.add(job_id, bm.TaskAddParameter(
            id="named", command_line="/bin/true",
            user_identity=bm.UserIdentity(user_name="batchuser")))
        out["named_user"] = c.task.get(job_id, "named").user_identity.user_name
    except bm.BatchErrorException as exc:
        out["named_user"] = {"code": exc.error.code, "message": exc.error.message.value}
    delete_job(c, job_id)
    out["delete"] = delete_pool(c, pool_id)
    return out


def wire() -> dict[str, Any]:
    c = client()
    ids = [f"{PREFIX}-w{i}" for i in range(3)]
    for pool_id in ids:
        c.pool.add(bm.PoolAddParameter(
            id=pool_id, vm_size=VM_SIZE, enable_auto_scale=True,
            auto_scale_formula="$TargetDedicatedNodes = 0;",
            auto_scale_evaluation_interval=timedelta(minutes=5)))
    created = responses[-1]
    out: dict[str, Any] = {"create": {"status": created["status"],
                                      "location": created["headers"].get("Location"),
                                      "etag": created["headers"].get("ETag"),
                                      "dataserviceid": created["headers"].get("DataServiceId")}}
    pool = c.pool.get(ids[0], pool_get_options=bm.PoolGetOptions(timeout=30))
    got = responses[-1]
    out["get"] = {"status": got["status"], "etag_header": got["headers"].get("ETag"),
                  "etag_body": pool.e_tag,
                  "last_modified": got["headers"].get("Last-Modified"),
                  "content_type": got["headers"].get("Content-Type"),
                  "request_id": bool(got["headers"].get("request-id")),
                  "client_request_id_sent": got["request_headers"].get("client-request-id"),
                  "client_request_id_echo": got["headers"].get("client-request-id")}
    before = len(responses)
    listed = [p.id for p in c.pool.list(pool_list_options=bm.PoolListOptions(
        max_results=1, filter=f"startswith(id, '{PREFIX}-w')"))]
    out["paging"] = {"ids": listed, "requests": len(responses) - before}
    sel = c.pool.get(ids[0], pool_get_options=bm.PoolGetOptions(select="id,state"))
    out["select"] = {"id": sel.id, "state": enum(sel.state), "vm_size": sel.vm_size}
    out["expand"] = len(list(c.pool.list(pool_list_options=bm.PoolListOptions(
        expand="stats", filter=f"id eq '{ids[0]}'"))))
    try:
        c.pool.get(ids[0], pool_get_options=bm.PoolGetOptions(if_none_match=pool.e_tag))
        out["if_none_match"] = "200"
    except bm.BatchErrorException as exc:
        out["if_none_match"] = exc.response.status_code
    out["if_none_match_other"] = c.pool.get(
        ids[0], pool_get_options=bm.PoolGetOptions(if_none_match="0xOTHER")).id
    try:
        c.pool.delete(ids[1], pool_delete_options=bm.PoolDeleteOptions(if_match="0xSTALE"))
        out["stale_delete"] = "accepted"
    except bm.BatchErrorException as exc:
        out["stale_delete"] = {"status": exc.response.status_code, "code": exc.error.code,
                               "type": type(exc).__name__}
    for name, call in [
        ("not_found", lambda: c.pool.get(f"{PREFIX}-nope")),
        ("exists", lambda: c.pool.add(bm.PoolAddParameter(
            id=ids[0], vm_size=VM_SIZE, target_dedicated_nodes=0))),
        ("bad_id", lambda: c.pool.add(bm.PoolAddParameter(
            id="bad id!", vm_size=VM_SIZE, target_dedicated_nodes=0))),
        ("unknown_job", lambda: c.job.get(f"{PREFIX}-nope")),
        ("unsupported", lambda: c.compute_node.upload_batch_service_logs(
            ids[0], "n1", bm.UploadBatchServiceLogsConfiguration(
                container_url="https://example.invalid/logs?sv=x",
                start_time=datetime.now(UTC)))),
    ]:
        try:
            call()
            out[name] = "no error"
        except bm.BatchErrorException as exc:
            out[name] = error_of(exc)
    out["pool_exists"] = [c.pool.exists(ids[0]), c.pool.exists(f"{PREFIX}-nope")]
    counts = {x.pool_id: x.dedicated.total for x in c.account.list_pool_node_counts()}
    out["node_counts"] = {k: v for k, v in counts.items() if k in ids}
    for pool_id in ids:
        delete_pool(c, pool_id)
    deleted = [r for r in responses if r["method"] == "DELETE"]
    out["delete_status"] = deleted[-1]["status"]
    out["exist_after"] = [c.pool.exists(p) for p in ids]
    return out


def statistics() -> dict[str, Any]:
    """Job and pool statistics ($expand=stats) and pool usage metrics after tasks with known
    sleeps and exit codes: two succeed, one fails after a retry."""
    c = client()
    pool_id, job_id = f"{PREFIX}-stats", f"{PREFIX}-stats-job"
    c.pool.add(bm.PoolAddParameter(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=1,
                                   virtual_machine_configuration=azure_vm_configuration()))
    wait_idle(c, pool_id, 1)
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id)))
    c.task.add_collection(job_id, [
        bm.TaskAddParameter(id="ok1", command_line="/bin/sh -c 'sleep 1'"),
        bm.TaskAddParameter(id="ok2", command_line="/bin/sh -c 'sleep 2'"),
        bm.TaskAddParameter(id="bad", command_line="/bin/sh -c 'sleep 1; exit 3'",
                            constraints=bm.TaskConstraints(max_task_retry_count=1))])
    wait_tasks(c, job_id)
    plain = c.job.get(job_id).stats
    js = c.job.get(job_id, job_get_options=bm.JobGetOptions(expand="stats")).stats
    listed = [j.stats for j in c.job.list(job_list_options=bm.JobListOptions(expand="stats"))
              if j.id == job_id]
    ps = c.pool.get(pool_id, pool_get_options=bm.PoolGetOptions(expand="stats")).stats
    now = datetime.now(UTC)
    metrics = list(c.pool.list_usage_metrics(bm.PoolListUsageMetricsOptions(
        start_time=now - timedelta(hours=1), end_time=now + timedelta(minutes=1),
        filter=f"poolId eq '{pool_id}'")))
    out = {
        "plain": plain is None,
        "job": {"succeeded": js.num_succeeded_tasks, "failed": js.num_failed_tasks,
                "retries": js.num_task_retries,
                "wall_s": js.wall_clock_time.total_seconds(),
                "wait_s": js.wait_time.total_seconds(), "url": js.url},
        "listed": [s.num_succeeded_tasks if s else None for s in listed],
        "pool_vm_size": c.pool.get(pool_id).vm_size,
        "pool_core_s": ps.usage_stats.dedicated_core_time.total_seconds(),
        "pool_cpu_pct": ps.resource_stats.avg_cpu_percentage,
        "metrics": [{"pool": x.pool_id, "vm": x.vm_size, "hours": x.total_core_hours,
                     "span_s": (x.end_time - x.start_time).total_seconds()} for x in metrics],
    }
    c.job.delete(job_id)
    delete_pool(c, pool_id)
    return out


if __name__ == "__main__":
    main({f.__name__: f for f in (pool_start_task, job_prep_release, tasks_1000, multi_instance,
                                  autoscale, lifecycle, job_schedule, updates, wire,
                                  statistics)})
