"""Scenarios run with the official ``azure-batch`` 15.x SDK (``azure.batch.BatchClient``).

Run as ``python sdk15_scenarios.py <scenario>`` by tests/compat/test_sdk.py,
with the interpreter of the 15.x venv; see _harness.py for the environment.
Each scenario returns what it observed; the test asserts on it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

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
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

POLL_S = 1  # LRO polling interval (the SDK's default is 5 s)

responses: list[dict[str, Any]] = []


def _hook(response: Any) -> None:
    http = response.http_response
    responses.append({"method": http.request.method, "url": http.request.url,
                      "status": http.status_code, "headers": dict(http.headers),
                      "request_headers": dict(http.request.headers)})


def client() -> BatchClient:
    return BatchClient(ENDPOINT, AzureNamedKeyCredential(ACCOUNT, KEY), raw_response_hook=_hook)


def azure_vm_configuration() -> m.VirtualMachineConfiguration:
    return m.VirtualMachineConfiguration(
        image_reference=m.BatchVmImageReference(
            publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts",
            version="latest"),
        node_agent_sku_id="batch.node.ubuntu 22.04")


def wait_idle(c: BatchClient, pool_id: str, n: int, timeout_s: float = 180) -> list[m.BatchNode]:
    """Wait until ``n`` nodes are idle, asking the service with a node $filter."""
    def ready() -> list[m.BatchNode] | None:
        nodes = list(c.list_nodes(pool_id, filter="state eq 'idle'"))
        return nodes if len(nodes) == n else None
    return wait_for(ready, timeout_s, f"{n} idle nodes in pool {pool_id}")


def wait_tasks(c: BatchClient, job_id: str, timeout_s: float = 300) -> list[m.BatchTask]:
    def done() -> list[m.BatchTask] | None:
        tasks = list(c.list_tasks(job_id))
        return tasks if tasks and all(t.state == m.BatchTaskState.COMPLETED for t in tasks) \
            else None
    return wait_for(done, timeout_s, f"the tasks of job {job_id} to complete", 1)


def read_file(c: BatchClient, job_id: str, task_id: str, name: str) -> str:
    return b"".join(c.download_task_file(job_id, task_id, name)).decode()


def exists(c: BatchClient, pool_id: str) -> bool | str:
    """``pool_exists``; 15.1.0 raises ResourceNotFoundError for a 404 instead of returning
    False (its BatchExceptionPolicy raises before the operation's [200, 404] check)."""
    try:
        return c.pool_exists(pool_id)
    except ResourceNotFoundError:
        return False


def delete_pool(c: BatchClient, pool_id: str) -> dict[str, Any]:
    """Delete with the LRO; return what the poller saw (200 = still deleting, then 404)."""
    before = len(responses)
    c.begin_delete_pool(pool_id, polling_interval=POLL_S).result()
    polls = [r["status"] for r in responses[before:]
             if r["method"] == "GET" and r["url"].split("?")[0].endswith(f"/pools/{pool_id}")]
    try:
        c.get_pool(pool_id)
        after = "still there"
    except ResourceNotFoundError as exc:
        after = exc.error.code if exc.error else "404"
    return {"polls": polls, "after_delete": after, "exists": exists(c, pool_id)}


# ------------------------------------------------------------------ scenarios


def pool_start_task() -> dict[str, Any]:
    """A pool with a start task and taskSlotsPerNode; Azure-only properties accepted."""
    c = client()
    pool_id, job_id = f"{PREFIX}-st", f"{PREFIX}-st-job"
    c.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2, task_slots_per_node=2,
        virtual_machine_configuration=azure_vm_configuration(),
        task_scheduling_policy=m.BatchTaskSchedulingPolicy(node_fill_type="spread"),
        start_task=m.BatchStartTask(
            command_line="/bin/sh -c 'echo started-on-$AZ_BATCH_NODE_ID > "
                         "$AZ_BATCH_NODE_SHARED_DIR/started.txt'",
            environment_settings=[m.EnvironmentSetting(name="GREETING", value="hi")],
            user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(
                scope=m.AutoUserScope.POOL, elevation_level=m.ElevationLevel.ADMIN)),
            max_task_retry_count=1, wait_for_success=True),
        metadata=[m.BatchMetadataItem(name="owner", value="compat")],
    ))
    created = responses[-1]
    pool = c.get_pool(pool_id)
    nodes = wait_idle(c, pool_id, 2)
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    c.create_tasks(job_id, [m.BatchTaskCreateOptions(
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
                 "creation_time": iso(pool.creation_time), "e_tag": pool.etag},
        "nodes": [{"id": n.id, "state": enum(n.state),
                   "start_task_state": enum(n.start_task_info.state),
                   "start_task_exit_code": n.start_task_info.exit_code,
                   "start_task_result": enum(n.start_task_info.result)} for n in nodes],
        "tasks": {t.id: {"state": enum(t.state), "exit_code": t.execution_info.exit_code,
                         "node": t.node_info.node_id,
                         "stdout": read_file(c, job_id, t.id, "stdout.txt")} for t in tasks},
        "max_overlap_per_node": {k: max_overlap(v) for k, v in per_node.items()},
    }
    props = c.get_task_file_properties(job_id, "t0", "stdout.txt")
    out["files"] = {
        "names": sorted(f.name for f in c.list_task_files(job_id, "t0")),
        "range": b"".join(c.download_task_file(job_id, "t0", "stdout.txt",
                                               ocp_range="bytes=0-6")).decode(),
        "content_length": int(props.content_length), "is_directory": props.is_directory,
        "url": props.url, "last_modified": str(props.last_modified),
        "node_startup": sorted(f.name for f in c.list_node_files(
            pool_id, nodes[0].id, recursive=True) if f.name.startswith("startup/")),
        "node_file": b"".join(c.download_node_file(
            pool_id, nodes[0].id, "shared/started.txt")).decode(),
    }
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    out["delete"] = delete_pool(c, pool_id)
    return out


def job_prep_release() -> dict[str, Any]:
    """A job with preparation and release tasks; terminate runs the release."""
    c = client()
    pool_id, job_id = f"{PREFIX}-pr", f"{PREFIX}-pr-job"
    c.create_pool(m.BatchPoolCreateOptions(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2))
    wait_idle(c, pool_id, 2)
    c.create_job(m.BatchJobCreateOptions(
        id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=m.BatchJobPreparationTask(
            command_line="/bin/sh -c 'echo prepared-$AZ_BATCH_NODE_ID > "
                         "$AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID.txt'",
            wait_for_success=True),
        job_release_task=m.BatchJobReleaseTask(
            command_line="/bin/sh -c 'echo released > "
                         "$AZ_BATCH_NODE_SHARED_DIR/release-$AZ_BATCH_JOB_ID.txt'"),
    ))
    c.create_tasks(job_id, [m.BatchTaskCreateOptions(
        id=f"t{i}",
        command_line="/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID.txt'")
        for i in range(4)])
    tasks = wait_tasks(c, job_id)
    stdout = {t.id: read_file(c, job_id, t.id, "stdout.txt") for t in tasks}
    c.begin_terminate_job(job_id, {"terminateReason": "compat-done"},
                          polling_interval=POLL_S).result()
    job = c.get_job(job_id)

    def released() -> list[Any] | None:
        items = list(c.list_job_preparation_and_release_task_status(job_id))
        ok = items and all(i.job_release_task_execution_info and
                           i.job_release_task_execution_info.state == "completed" for i in items)
        return items if ok else None
    items = wait_for(released, 60, "release tasks to complete")
    out = {
        "stdout": stdout,
        "job": {"state": enum(job.state),
                "terminate_reason": job.execution_info.termination_reason,
                "end_time": iso(job.execution_info.end_time),
                "prep_command": job.job_preparation_task.command_line},
        "status": [{"node": i.node_id, "pool": i.pool_id,
                    "prep_state": enum(i.job_preparation_task_execution_info.state),
                    "prep_exit_code": i.job_preparation_task_execution_info.exit_code,
                    "release_state": enum(i.job_release_task_execution_info.state),
                    "release_exit_code": i.job_release_task_execution_info.exit_code}
                   for i in items],
    }
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    try:
        c.get_job(job_id)
        out["job_after_delete"] = "still there"
    except ResourceNotFoundError as exc:
        out["job_after_delete"] = exc.error.code if exc.error else "404"
    out["delete"] = delete_pool(c, pool_id)
    return out


def tasks_1000() -> dict[str, Any]:
    """create_tasks of 1,000 tasks (chunks of 100), then of tasks too large for one
    request body (RequestBodyTooLarge: the SDK halves the chunk); list with
    $filter, $select and paging."""
    c = client()
    pool_id, job_id = f"{PREFIX}-k", f"{PREFIX}-k-job"
    c.create_pool(m.BatchPoolCreateOptions(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2,
                                           task_slots_per_node=4))
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    halving = LogCounter("reduced from")
    logging.getLogger("azure.batch").addHandler(halving)
    logging.getLogger("azure.batch").setLevel(logging.INFO)
    before = len(responses)
    tasks = [m.BatchTaskCreateOptions(
        id=f"task{i:04d}",
        command_line="/bin/sh -c 'exit 3'" if i % 100 == 7 else "/bin/true")
        for i in range(1000)]
    t0 = time.monotonic()
    result = c.create_tasks(job_id, tasks)
    add_s = time.monotonic() - t0
    collection_calls = [r["status"] for r in responses[before:]
                        if r["url"].split("?")[0].endswith("/addtaskcollection")]
    big_value = "x" * 12000  # 100 of these are more than 1 MB
    before = len(responses)
    big = c.create_tasks(job_id, [m.BatchTaskCreateOptions(
        id=f"big{i:03d}", command_line="/bin/sh -c 'echo ${#BIG}'",
        environment_settings=[m.EnvironmentSetting(name="BIG", value=big_value)])
        for i in range(150)])
    big_calls = [r["status"] for r in responses[before:]
                 if r["url"].split("?")[0].endswith("/addtaskcollection")]
    wait_tasks(c, job_id, timeout_s=600)
    pages_before = len(responses)
    all_tasks = list(c.list_tasks(job_id, max_results=100, select=["id", "state"]))
    pages = len(responses) - pages_before
    failed = list(c.list_tasks(job_id, filter="executionInfo/exitCode eq 3",
                               select=["id", "executionInfo"]))
    selected = list(c.list_tasks(job_id, filter="startswith(id, 'big')",
                                 select=["id", "state", "executionInfo"]))
    counts = c.get_job_task_counts(job_id)
    out = {
        "added": len(result.result_values),
        "add_statuses": sorted({enum(r.status) for r in result.result_values}),
        "add_s": add_s,
        "collection_calls": collection_calls,
        "big_added": len(big.result_values),
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
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    out["delete"] = delete_pool(c, pool_id)
    return out


def multi_instance() -> dict[str, Any]:
    """A multi-instance MPI task across 4 nodes, with list_subtasks."""
    c = client()
    pool_id, job_id = f"{PREFIX}-mpi", f"{PREFIX}-mpi-job"
    c.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=4,
        enable_inter_node_communication=True,
        task_scheduling_policy=m.BatchTaskSchedulingPolicy(node_fill_type="pack"),
        virtual_machine_configuration=azure_vm_configuration()))
    nodes = wait_idle(c, pool_id, 4)
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    c.create_task(job_id, m.BatchTaskCreateOptions(
        id="mpi",
        command_line=f"/bin/sh -c '{MPIEXEC} -hosts $AZ_BATCH_HOST_LIST -n 4 "
                     f"{PYTHON} -m hpcbatch.mpihello'",
        multi_instance_settings=m.MultiInstanceSettings(
            number_of_instances=4,
            coordination_command_line="/bin/sh -c 'echo coordinated $AZ_BATCH_NODE_ID'"),
        user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(
            scope=m.AutoUserScope.POOL, elevation_level=m.ElevationLevel.NON_ADMIN))))
    [task] = wait_tasks(c, job_id)
    subtasks = list(c.list_subtasks(job_id, "mpi"))
    out = {
        "nodes": {n.id: n.ip_address for n in nodes},
        "task": {"state": enum(task.state), "exit_code": task.execution_info.exit_code,
                 "result": enum(task.execution_info.result), "node": task.node_info.node_id,
                 "instances": task.multi_instance_settings.number_of_instances},
        "stdout": read_file(c, job_id, "mpi", "stdout.txt"),
        "subtasks": [{"id": s.id, "state": enum(s.state), "node": s.node_info.node_id,
                      "exit_code": s.exit_code, "result": enum(s.result),
                      "stdout": b"".join(c.download_node_file(
                          pool_id, s.node_info.node_id,
                          f"{s.node_info.task_root_directory}/stdout.txt")).decode()}
                     for s in subtasks],
    }
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    out["delete"] = delete_pool(c, pool_id)
    return out


def autoscale() -> dict[str, Any]:
    """Evaluate a formula on an autoscale pool; enable with another; disable."""
    c = client()
    pool_id = f"{PREFIX}-as"
    c.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size=VM_SIZE, enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes = 0;",
        auto_scale_evaluation_interval=timedelta(minutes=5)))
    first = wait_for(lambda: c.get_pool(pool_id).auto_scale_run, 30, "the first autoscale run")
    run = c.evaluate_pool_auto_scale(pool_id, m.BatchPoolEvaluateAutoScaleOptions(
        auto_scale_formula="$TargetDedicatedNodes = min(3, 1 + 1); "
                           "$NodeDeallocationOption = taskcompletion;"))
    try:
        c.evaluate_pool_auto_scale(pool_id, m.BatchPoolEvaluateAutoScaleOptions(
            auto_scale_formula="$TargetDedicatedNodes = ;"))
        bad: Any = "accepted"
    except HttpResponseError as exc:
        bad = {"status": exc.status_code, "code": exc.error.code if exc.error else None}
    c.enable_pool_auto_scale(pool_id, m.BatchPoolEnableAutoScaleOptions(
        auto_scale_formula="$TargetDedicatedNodes = 1;",
        auto_scale_evaluation_interval=timedelta(seconds=10)))
    grown = wait_for(when(lambda p: p.current_dedicated_nodes == 1
                          and p.allocation_state == m.AllocationState.STEADY,
                          lambda: c.get_pool(pool_id)), 120, "the autoscaled pool to reach 1 node")
    c.disable_pool_auto_scale(pool_id)
    after = c.get_pool(pool_id)
    out = {
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
    return out


def lifecycle() -> dict[str, Any]:
    """Resize, reboot, terminate and delete, all through the SDK's long-running operations."""
    c = client()
    pool_id, job_id = f"{PREFIX}-lc", f"{PREFIX}-lc-job"
    c.create_pool(m.BatchPoolCreateOptions(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=2))
    wait_idle(c, pool_id, 2)
    c.begin_resize_pool(pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1),
                        polling_interval=POLL_S).result()
    resized = c.get_pool(pool_id)
    [node] = list(c.list_nodes(pool_id))
    c.begin_reboot_node(pool_id, node.id, {"nodeRebootOption": "requeue"},
                        polling_interval=POLL_S).result()
    rebooted = wait_for(when(lambda n: n.state == m.BatchNodeState.IDLE,
                             lambda: c.get_node(pool_id, node.id)),
                        120, "the rebooted node to be idle")
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    c.create_task(job_id, m.BatchTaskCreateOptions(id="long", command_line="sleep 300"))
    wait_for(lambda: c.get_task(job_id, "long").state == m.BatchTaskState.RUNNING, 60,
             "the long task to run")
    c.begin_disable_job(job_id, m.BatchJobDisableOptions(disable_tasks="requeue"),
                        polling_interval=POLL_S).result()
    disabled = {"job": enum(c.get_job(job_id).state),
                "task": enum(c.get_task(job_id, "long").state)}
    c.begin_enable_job(job_id, polling_interval=POLL_S).result()
    wait_for(lambda: c.get_task(job_id, "long").state == m.BatchTaskState.RUNNING, 60,
             "the long task to run again")
    enabled = {"job": enum(c.get_job(job_id).state),
               "requeues": c.get_task(job_id, "long").execution_info.requeue_count}
    etag = c.get_job(job_id).etag
    try:
        c.begin_terminate_job(job_id, {"terminateReason": "never"}, etag="0xWRONG",
                              match_condition=MatchConditions.IfNotModified,
                              polling_interval=POLL_S)
        stale: Any = "accepted"
    except HttpResponseError as exc:
        stale = {"status": exc.status_code, "code": exc.error.code if exc.error else None}
    t0 = time.monotonic()
    c.begin_terminate_job(job_id, {"terminateReason": "compat-stop"}, etag=etag,
                          match_condition=MatchConditions.IfNotModified,
                          polling_interval=POLL_S).result()
    job = c.get_job(job_id)
    task = c.get_task(job_id, "long")
    out = {
        "resized": {"current": resized.current_dedicated_nodes,
                    "target": resized.target_dedicated_nodes,
                    "allocation_state": enum(resized.allocation_state)},
        "rebooted": {"state": enum(rebooted.state),
                     "last_boot_time_changed": rebooted.last_boot_time != node.last_boot_time},
        "disabled": disabled, "enabled": enabled,
        "stale_etag": stale,
        "terminate_s": time.monotonic() - t0,
        "job": {"state": enum(job.state), "reason": job.execution_info.termination_reason},
        "task": {"state": enum(task.state), "result": enum(task.execution_info.result),
                 "failure": task.execution_info.failure_info and
                 task.execution_info.failure_info.code},
    }
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    out["job_exists_after_delete"] = any(j.id == job_id for j in c.list_jobs())
    out["delete"] = delete_pool(c, pool_id)
    return out


def job_schedule() -> dict[str, Any]:
    """A job schedule: its job is created at once; disable, enable, terminate, delete."""
    c = client()
    schedule_id = f"{PREFIX}-sched"
    c.create_job_schedule(m.BatchJobScheduleCreateOptions(
        id=schedule_id,
        schedule=m.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=1)),
        job_specification=m.BatchJobSpecification(
            pool_info=m.BatchPoolInfo(pool_id=f"{PREFIX}-sched-pool"), priority=5)))
    created = responses[-1]
    jobs = wait_for(lambda: list(c.list_jobs_from_schedule(schedule_id)), 30,
                    "the schedule's first job")
    got = c.get_job_schedule(schedule_id)
    c.disable_job_schedule(schedule_id)
    disabled = c.get_job_schedule(schedule_id).state
    c.enable_job_schedule(schedule_id)
    enabled = c.get_job_schedule(schedule_id).state
    listed = [x.id for x in c.list_job_schedules(filter=f"id eq '{schedule_id}'")]
    c.begin_terminate_job_schedule(schedule_id, polling_interval=POLL_S).result()
    terminated = c.get_job_schedule(schedule_id)
    job_after = c.get_job(jobs[0].id)
    c.begin_delete_job_schedule(schedule_id, polling_interval=POLL_S).result()
    try:
        c.get_job_schedule(schedule_id)
        after: Any = "still there"
    except ResourceNotFoundError as exc:
        after = exc.error.code if exc.error else "404"
    return {
        "create_status": created["status"],
        "jobs": [j.id for j in jobs], "job_priority": jobs[0].priority,
        "state": enum(got.state), "recent_job": got.execution_info.recent_job.id,
        "recurrence_s": got.schedule.recurrence_interval.total_seconds(),
        "disabled": enum(disabled), "enabled": enum(enabled), "listed": listed,
        "terminated": enum(terminated.state),
        "end_time": iso(terminated.execution_info.end_time),
        "job_after_terminate": {"state": enum(job_after.state),
                                "reason": job_after.execution_info.termination_reason},
        "after_delete": after,
    }


def updates() -> dict[str, Any]:
    """Job update (PATCH) and replace (PUT), pool update, a task run as a named user."""
    c = client()
    pool_id, job_id = f"{PREFIX}-up", f"{PREFIX}-up-job"
    c.create_pool(m.BatchPoolCreateOptions(id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=0,
                                           user_accounts=[m.UserAccount(name="batchuser",
                                                                        password="batch-pw-1")]))
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id),
                                         priority=1))
    out: dict[str, Any] = {}
    c.update_job(job_id, m.BatchJobUpdateOptions(priority=10))
    out["patched_priority"] = c.get_job(job_id).priority
    c.replace_job(job_id, m.BatchJob(pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    out["replaced_priority"] = c.get_job(job_id).priority
    try:
        c.update_pool(pool_id, m.BatchPoolUpdateOptions(
            metadata=[m.BatchMetadataItem(name="stage", value="two")]))
        out["pool_update"] = {i.name: i.value for i in c.get_pool(pool_id).metadata or []}
    except HttpResponseError as exc:
        out["pool_update"] = exc.error.code if exc.error else exc.status_code
    try:
        c.create_task(job_id, m.BatchTaskCreateOptions(
            id="named", command_line="/bin/true",
            user_identity=m.UserIdentity(username="batchuser")))
        out["named_user"] = c.get_task(job_id, "named").user_identity.username
    except HttpResponseError as exc:
        out["named_user"] = {"code": exc.error.code if exc.error else exc.status_code,
                             "message": exc.error.message if exc.error else str(exc)}
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    out["delete"] = delete_pool(c, pool_id)
    return out


def wire() -> dict[str, Any]:
    """Headers, errors, paging, $select, conditional requests, unsupported operations."""
    c = client()
    ids = [f"{PREFIX}-w{i}" for i in range(3)]
    for pool_id in ids:  # autoscale pools at 0 nodes: no hosts needed
        c.create_pool(m.BatchPoolCreateOptions(
            id=pool_id, vm_size=VM_SIZE, enable_auto_scale=True,
            auto_scale_formula="$TargetDedicatedNodes = 0;",
            auto_scale_evaluation_interval=timedelta(minutes=5)))
    created = responses[-1]
    out: dict[str, Any] = {"create": {"status": created["status"],
                                      "location": created["headers"].get("Location"),
                                      "etag": created["headers"].get("ETag"),
                                      "dataserviceid": created["headers"].get("DataServiceId")}}
    pool = c.get_pool(ids[0], service_timeout=30)
    got = responses[-1]
    out["get"] = {"status": got["status"], "etag_header": got["headers"].get("ETag"),
                  "etag_body": pool.etag,
                  "last_modified": got["headers"].get("Last-Modified"),
                  "content_type": got["headers"].get("Content-Type"),
                  "request_id": bool(got["headers"].get("request-id")),
                  "client_request_id_sent": got["request_headers"].get("client-request-id"),
                  "client_request_id_echo": got["headers"].get("client-request-id")}
    before = len(responses)
    listed = [p.id for p in c.list_pools(max_results=1, filter=f"startswith(id, '{PREFIX}-w')")]
    out["paging"] = {"ids": listed, "requests": len(responses) - before}
    sel = c.get_pool(ids[0], select=["id", "state"])
    out["select"] = {"id": sel.id, "state": enum(sel.state), "vm_size": sel.vm_size}
    out["expand"] = len(list(c.list_pools(expand=["stats"], filter=f"id eq '{ids[0]}'")))
    try:
        c.get_pool(ids[0], etag=pool.etag, match_condition=MatchConditions.IfModified)
        out["if_none_match"] = "200"
    except HttpResponseError as exc:
        out["if_none_match"] = exc.status_code
    out["if_none_match_other"] = c.get_pool(
        ids[0], etag="0xOTHER", match_condition=MatchConditions.IfModified).id
    try:
        c.begin_delete_pool(ids[1], etag="0xSTALE", match_condition=MatchConditions.IfNotModified)
        out["stale_delete"] = "accepted"
    except HttpResponseError as exc:
        out["stale_delete"] = {"status": exc.status_code,
                               "code": exc.error.code if exc.error else None,
                               "type": type(exc).__name__}
    for name, call in [
        ("not_found", lambda: c.get_pool(f"{PREFIX}-nope")),
        ("exists", lambda: c.create_pool(m.BatchPoolCreateOptions(
            id=ids[0], vm_size=VM_SIZE, target_dedicated_nodes=0))),
        ("bad_id", lambda: c.create_pool(m.BatchPoolCreateOptions(
            id="bad id!", vm_size=VM_SIZE, target_dedicated_nodes=0))),
        ("unknown_job", lambda: c.get_job(f"{PREFIX}-nope")),
        ("unsupported", lambda: c.upload_node_logs(ids[0], "n1", m.UploadBatchServiceLogsOptions(
            container_url="https://example.invalid/logs?sv=x",
            start_time=datetime.now(UTC)))),
    ]:
        try:
            call()
            out[name] = "no error"
        except HttpResponseError as exc:
            out[name] = {"status": exc.status_code, "type": type(exc).__name__,
                         "code": exc.error.code if exc.error else None,
                         "message": exc.error.message if exc.error else str(exc),
                         "details": {d.code: d.message for d in (exc.error.details or [])}
                         if exc.error else {}}
    out["pool_exists"] = [exists(c, ids[0]), exists(c, f"{PREFIX}-nope")]
    counts = {x.pool_id: x.dedicated.total for x in c.list_pool_node_counts()}
    out["node_counts"] = {k: v for k, v in counts.items() if k in ids}
    for pool_id in ids:
        c.begin_delete_pool(pool_id, polling_interval=POLL_S).result()
    deleted = [r for r in responses if r["method"] == "DELETE"]
    out["delete_status"] = deleted[-1]["status"]
    out["exist_after"] = [exists(c, p) for p in ids]
    return out


def statistics() -> dict[str, Any]:
    """Job and pool statistics ($expand=stats) and pool usage metrics after tasks with known
    sleeps and exit codes: two succeed, one fails after a retry."""
    c = client()
    pool_id, job_id = f"{PREFIX}-stats", f"{PREFIX}-stats-job"
    c.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=1,
        virtual_machine_configuration=azure_vm_configuration()))
    wait_idle(c, pool_id, 1)
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    c.create_tasks(job_id, [
        m.BatchTaskCreateOptions(id="ok1", command_line="/bin/sh -c 'sleep 1'"),
        m.BatchTaskCreateOptions(id="ok2", command_line="/bin/sh -c 'sleep 2'"),
        m.BatchTaskCreateOptions(id="bad", command_line="/bin/sh -c 'sleep 1; exit 3'",
                                 constraints=m.BatchTaskConstraints(max_task_retry_count=1))])
    wait_tasks(c, job_id)
    plain = c.get_job(job_id).job_statistics
    js = c.get_job(job_id, expand=["stats"]).job_statistics
    listed = [j.job_statistics for j in c.list_jobs(expand=["stats"]) if j.id == job_id]
    ps = c.get_pool(pool_id, expand=["stats"]).pool_statistics
    now = datetime.now(UTC)
    metrics = list(c.list_pool_usage_metrics(
        start_time=now - timedelta(hours=1), end_time=now + timedelta(minutes=1),
        filter=f"poolId eq '{pool_id}'"))
    out = {
        "plain": plain is None,
        "job": {"succeeded": js.succeeded_tasks_count, "failed": js.failed_tasks_count,
                "retries": js.task_retries_count,
                "wall_s": js.wall_clock_time.total_seconds(),
                "wait_s": js.wait_time.total_seconds(), "url": js.url},
        "listed": [s.succeeded_tasks_count if s else None for s in listed],
        "pool_vm_size": c.get_pool(pool_id).vm_size,
        "pool_core_s": ps.usage_statistics.dedicated_core_time.total_seconds(),
        "pool_cpu_pct": ps.resource_statistics.avg_cpu_percentage,
        "metrics": [{"pool": x.pool_id, "vm": x.vm_size, "hours": x.total_core_hours,
                     "span_s": (x.end_time - x.start_time).total_seconds()} for x in metrics],
    }
    c.begin_delete_job(job_id, polling_interval=POLL_S).result()
    delete_pool(c, pool_id)
    return out


def auto_pool() -> dict[str, Any]:
    """A job with an auto pool (lifetime job): its tasks run on the pool the service made,
    which goes when the job is terminated; one whose pool cannot be made reports why."""
    c = client()
    job_id, bad_id = f"{PREFIX}-auto", f"{PREFIX}-auto-bad"

    def job_with(pool: m.BatchPoolSpecification, job: str) -> None:
        c.create_job(m.BatchJobCreateOptions(id=job, pool_info=m.BatchPoolInfo(
            auto_pool_specification=m.BatchAutoPoolSpecification(
                auto_pool_id_prefix="sdkauto", keep_alive=False,
                pool_lifetime_option=m.BatchPoolLifetimeOption.JOB, pool=pool))))

    job_with(m.BatchPoolSpecification(
        vm_size=VM_SIZE, target_dedicated_nodes=2, task_slots_per_node=2,
        virtual_machine_configuration=azure_vm_configuration(),
        start_task=m.BatchStartTask(command_line="/bin/true", wait_for_success=True)), job_id)
    job = c.get_job(job_id)
    pool_id = job.execution_info.pool_id
    pool = c.get_pool(pool_id)
    c.create_tasks(job_id, [m.BatchTaskCreateOptions(
        id=f"t{i}", command_line="/bin/sh -c 'echo $AZ_BATCH_POOL_ID'") for i in range(4)])
    tasks = wait_tasks(c, job_id)
    stdout = sorted({read_file(c, job_id, t.id, "stdout.txt").strip() for t in tasks})
    c.begin_terminate_job(job_id, {"terminateReason": "compat-done"},
                          polling_interval=POLL_S).result()
    wait_for(lambda: not exists(c, pool_id), 120, f"auto pool {pool_id} to be deleted")
    job_with(m.BatchPoolSpecification(vm_size="standard_nowhere", target_dedicated_nodes=1),
             bad_id)
    error = c.get_job(bad_id).execution_info.scheduling_error
    for j in (job_id, bad_id):
        c.begin_delete_job(j, polling_interval=POLL_S).result()
    return {"pool_id": pool_id, "pool_info_pool_id": job.pool_info.pool_id,
            "lifetime": enum(job.pool_info.auto_pool_specification.pool_lifetime_option),
            "pool": {"target": pool.target_dedicated_nodes,
                     "slots": pool.task_slots_per_node, "vm_size": pool.vm_size},
            "tasks": [(enum(t.state), t.execution_info.exit_code) for t in tasks],
            "stdout": stdout, "exists_after": exists(c, pool_id),
            "error": {"category": enum(error.category), "code": error.code,
                      "message": error.message} if error else None}


if __name__ == "__main__":
    main({f.__name__: f for f in (pool_start_task, job_prep_release, tasks_1000, multi_instance,
                                  autoscale, lifecycle, job_schedule, updates, wire,
                                  statistics, auto_pool)})
