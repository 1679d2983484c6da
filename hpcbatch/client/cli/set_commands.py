"""``hpcbatch pool set`` and ``hpcbatch job set``: "Pool - Patch" and "Job - Patch", as
``az batch pool set`` / ``az batch job set``.

Only the properties given change (a patch); ``--json-file`` sends a whole patch body
instead of the per-property options. The service checks the values and its errors name
the property. ``-o json`` prints the updated pool or job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from hpcbatch.client.cli.common import (
    client,
    emit,
    job_id_option,
    json_file_option,
    load_json,
    note,
    output_option,
    parse_duration,
    parse_env,
    pool_id_option,
)

ON_ALL_TASKS_COMPLETE = ("noaction", "terminatejob")
"""Batch's ``onAllTasksComplete`` values."""
COMMUNICATION_MODES = ("default", "classic", "simplified")
"""Batch's ``targetNodeCommunicationMode`` values."""


def parse_metadata(_: click.Context, __: click.Parameter,
                   values: Sequence[str]) -> list[dict[str, str]] | None:
    """Click callback: ``--metadata NAME=VALUE`` options as Batch ``metadata`` (None: not given)."""
    if not values:
        return None
    return [{"name": e["name"], "value": e["value"]} for e in parse_env(_, __, values)]


def _patch_body(json_file: str | None, options: dict[str, Any], build: Callable[[], dict[str, Any]]
                ) -> dict[str, Any]:
    """The patch: ``--json-file``'s object, or ``build()`` of the options given (at least one).

    Raises
    ------
    click.UsageError
        Both, or neither, were given.
    """
    given = [name for name, value in options.items() if value not in (None, (), [])]
    flags = ", ".join("--" + n.replace("_", "-") for n in given)
    if json_file and given:
        raise click.UsageError(f"--json-file cannot be combined with {flags}.")
    if json_file:
        body = load_json(json_file)
        if not isinstance(body, dict):
            raise click.BadParameter("the file must hold a JSON object (the patch)",
                                     param_hint="--json-file")
        return body
    if not given:
        raise click.UsageError("give --json-file or at least one property to set "
                               "(see --help).")
    return build()


@click.command("set")
@pool_id_option
@json_file_option("patch (PoolPatchParameter)")
@click.option("--start-task-command-line",
              help="The start task's command line (replaces the pool's start task).")
@click.option("--start-task-wait-for-success/--no-start-task-wait-for-success", default=None,
              help="Whether nodes wait for the start task to succeed (Batch's default: wait).")
@click.option("--start-task-max-task-retry-count", type=click.IntRange(min=-1),
              help="The start task's retries (-1: unlimited).")
@click.option("--start-task-environment-settings", multiple=True, metavar="NAME=VALUE",
              callback=parse_env, help="A start task environment variable (repeatable).")
@click.option("--metadata", multiple=True, metavar="NAME=VALUE", callback=parse_metadata,
              help="A metadata item (repeatable); replaces the pool's metadata.")
@click.option("--application-package-references", multiple=True, metavar="ID[#VERSION]",
              help="An application package (repeatable); replaces the pool's.")
@click.option("--target-node-communication-mode", type=click.Choice(COMMUNICATION_MODES),
              help="The pool's node communication mode.")
@output_option
def pool_set(pool_id: str, json_file: str | None, start_task_command_line: str | None,
             start_task_wait_for_success: bool | None, start_task_max_task_retry_count: int | None,
             start_task_environment_settings: list[dict[str, str]],
             metadata: list[dict[str, str]] | None,
             application_package_references: tuple[str, ...],
             target_node_communication_mode: str | None) -> None:
    """Update a pool's properties ("Pool - Patch"); only those given change.

    A new start task runs on nodes that join or restart from now on, as in Batch.
    """
    start_opts = {"start_task_wait_for_success": start_task_wait_for_success,
                  "start_task_max_task_retry_count": start_task_max_task_retry_count,
                  "start_task_environment_settings": start_task_environment_settings}
    if not start_task_command_line and any(v not in (None, []) for v in start_opts.values()):
        raise click.UsageError("the --start-task-* options need --start-task-command-line "
                               "(a pool's start task is replaced as a whole).")

    def build() -> dict[str, Any]:
        body: dict[str, Any] = {}
        if start_task_command_line:
            start: dict[str, Any] = {"commandLine": start_task_command_line}
            if start_task_wait_for_success is not None:
                start["waitForSuccess"] = start_task_wait_for_success
            if start_task_max_task_retry_count is not None:
                start["maxTaskRetryCount"] = start_task_max_task_retry_count
            if start_task_environment_settings:
                start["environmentSettings"] = start_task_environment_settings
            body["startTask"] = start
        if metadata is not None:
            body["metadata"] = metadata
        if application_package_references:
            body["applicationPackageReferences"] = [
                {"applicationId": ref.partition("#")[0],
                 **({"version": ref.partition("#")[2]} if ref.partition("#")[2] else {})}
                for ref in application_package_references]
        if target_node_communication_mode:
            body["targetNodeCommunicationMode"] = target_node_communication_mode
        return body

    body = _patch_body(json_file, {
        "start_task_command_line": start_task_command_line, **start_opts,
        "metadata": metadata, "application_package_references": application_package_references,
        "target_node_communication_mode": target_node_communication_mode}, build)
    c = client()
    c.patch_pool(pool_id, body)
    note(f"updated pool {pool_id}: {', '.join(sorted(body)) or 'nothing'}")
    emit(c.get_pool_json(pool_id))


@click.command("set")
@job_id_option
@json_file_option("patch (JobPatchParameter)")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Priority, -1000 to 1000.")
@click.option("--max-parallel-tasks", type=click.IntRange(min=-1),
              help="Most tasks of the job running at once (-1: no limit).")
@click.option("--allow-task-preemption/--no-allow-task-preemption", default=None,
              help="Whether higher-priority jobs' tasks may preempt this job's.")
@click.option("--on-all-tasks-complete", type=click.Choice(ON_ALL_TASKS_COMPLETE),
              help="What the job does when all its tasks are complete.")
@click.option("--metadata", multiple=True, metavar="NAME=VALUE", callback=parse_metadata,
              help="A metadata item (repeatable); replaces the job's metadata.")
@click.option("--pool-id", help="Move the job to another pool (a disabled job only).")
@click.option("--job-max-task-retry-count", type=click.IntRange(min=-1),
              help="constraints.maxTaskRetryCount (-1: unlimited).")
@click.option("--job-max-wall-clock-time", callback=parse_duration, metavar="DURATION",
              help="constraints.maxWallClockTime, ISO 8601 (PT2H).")
@output_option
def job_set(job_id: str, json_file: str | None, priority: int | None,
            max_parallel_tasks: int | None, allow_task_preemption: bool | None,
            on_all_tasks_complete: str | None, metadata: list[dict[str, str]] | None,
            pool_id: str | None, job_max_task_retry_count: int | None,
            job_max_wall_clock_time: str | None) -> None:
    """Update a job's properties ("Job - Patch"); only those given change."""
    def build() -> dict[str, Any]:
        body: dict[str, Any] = {k: v for k, v in {
            "priority": priority, "maxParallelTasks": max_parallel_tasks,
            "allowTaskPreemption": allow_task_preemption,
            "onAllTasksComplete": on_all_tasks_complete, "metadata": metadata}.items()
            if v is not None}
        if pool_id:
            body["poolInfo"] = {"poolId": pool_id}
        constraints = {k: v for k, v in {"maxTaskRetryCount": job_max_task_retry_count,
                                         "maxWallClockTime": job_max_wall_clock_time}.items()
                       if v is not None}
        if constraints:
            body["constraints"] = constraints
        return body

    body = _patch_body(json_file, {
        "priority": priority, "max_parallel_tasks": max_parallel_tasks,
        "allow_task_preemption": allow_task_preemption,
        "on_all_tasks_complete": on_all_tasks_complete, "metadata": metadata,
        "pool_id": pool_id, "job_max_task_retry_count": job_max_task_retry_count,
        "job_max_wall_clock_time": job_max_wall_clock_time}, build)
    c = client()
    c.update_job(job_id, body)
    note(f"updated job {job_id}: {', '.join(sorted(body)) or 'nothing'}")
    emit(c.get_job_json(job_id))
