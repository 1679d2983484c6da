"""``hpcbatch task``: tasks, their files, and the subtasks of multi-instance tasks."""

from __future__ import annotations

from typing import Any

import click

from hpcbatch.client.cli.common import (
    FILE_COLUMNS,
    Column,
    action_command,
    as_json,
    client,
    download_command,
    emit,
    id_of,
    job_id_option,
    json_file_option,
    list_command,
    note,
    output_option,
    parse_duration,
    parse_env,
    read_command,
    request_body,
    task_id_option,
    timeout_option,
)
from hpcbatch.client.cli.nodeops_commands import (
    add_task_file_commands,  # "task file delete"
)

TASK_COLUMNS: list[Column] = [
    ("Id", "id"), ("State", "state"), ("Exit code", "executionInfo.exitCode"),
    ("Node", "nodeInfo.nodeId"), ("Result", "executionInfo.result"),
    ("Failure", "executionInfo.failureInfo.code"),
]
SUBTASK_COLUMNS: list[Column] = [
    ("Id", "id"), ("Node", "nodeInfo.nodeId"), ("State", "state"), ("Exit code", "exitCode"),
    ("Start", "startTime"), ("End", "endTime"),
]


@click.group()
def task() -> None:
    """Manage tasks and their files."""


@task.command("create")
@job_id_option
@json_file_option("task, or a list of tasks (TaskAddParameter)")
@click.option("--task-id", help="Task ID.")
@click.option("--command-line", help="Command line (not run under a shell unless it invokes one).")
@click.option("--max-wall-clock-time", callback=parse_duration,
              help="ISO 8601 duration, e.g. PT1H.")
@click.option("--max-task-retry-count", type=click.IntRange(min=-1),
              help="Retries after a failure (-1: unlimited).")
@click.option("--env", "env", multiple=True, callback=parse_env, metavar="NAME=VALUE",
              help="Environment variable (repeatable).")
@output_option
def task_create(job_id: str, json_file: str | None, task_id: str | None,
                command_line: str | None, max_wall_clock_time: str | None,
                max_task_retry_count: int | None, env: list[dict[str, str]]) -> None:
    """Add one task, or every task of a JSON file ("Task - Add", "Task - Add Collection").

    A JSON list (or {"value": [...]}) is sent 100 tasks per request; the command
    exits 1 when any task was rejected.
    """
    def build() -> dict[str, Any]:
        constraints = {k: v for k, v in {"maxWallClockTime": max_wall_clock_time,
                                         "maxTaskRetryCount": max_task_retry_count}.items()
                       if v is not None}
        return {"id": task_id, "commandLine": command_line,
                **({"environmentSettings": env} if env else {}),
                **({"constraints": constraints} if constraints else {})}

    body = request_body(json_file, build, required=["task_id", "command_line"],
                        shared=["job_id"])
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        body = body["value"]
    if not isinstance(body, list):
        client().create_task(job_id, body)
        note(f"added task {id_of(body)} to job {job_id}")
        return
    results = client().create_tasks(job_id, body, raise_on_error=False)
    bad = [r for r in results if r.status != "success"]
    if as_json():
        emit(results)
    for r in bad:
        err = r.error or {}
        click.echo(f"error: {err.get('code', r.status)}: task {r.task_id}: "
                   f"{(err.get('message') or {}).get('value', '')}", err=True)
    note(f"added {len(results) - len(bad)} of {len(results)} tasks to job {job_id}")
    if bad:
        click.get_current_context().exit(1)


list_command(task, "list", "List a job's tasks.",
             lambda c, job_id, filter_, select: c.list_tasks_json(job_id, filter_, select),
             job_id_option, columns=TASK_COLUMNS, example="state eq 'completed'")


read_command(task, "show", "Show a task.",
             lambda c, job_id, task_id, select: c.get_task_json(job_id, task_id, select),
             job_id_option, task_id_option,
             click.option("--select", help="OData $select: comma-separated properties."))

action_command(task, "terminate", "Terminate a task.",
               lambda c, job_id, task_id: c.terminate_task(job_id, task_id),
               "terminated task {task_id}", job_id_option, task_id_option)

action_command(task, "delete", "Delete a task and its files.",
               lambda c, job_id, task_id: c.delete_task(job_id, task_id),
               "deleted task {task_id}", job_id_option, task_id_option,
               confirm="Delete task {task_id} of job {job_id}?")

action_command(
    task, "reactivate",
    'Reactivate a failed task ("Task - Reactivate"): it runs again, with its retries reset.',
    lambda c, job_id, task_id: c.reactivate_task(job_id, task_id),
    "reactivated task {task_id}", job_id_option, task_id_option)


def blocked_message(job_id: str, left: list[dict[str, Any]]) -> str:
    """Say that a job's tasks ``left`` (:meth:`~hpcbatch.client.sdk.BatchClient.tasks_that_never_run`)
    can never run, naming the first blocked ones with their reasons."""
    blocked = [t for t in left if t["dependencyState"]["state"] == "blocked"]
    shown = ", ".join(f"{t['id']} ({t['dependencyState'].get('reason')})" for t in blocked[:5])
    more = f" and {len(blocked) - 5} more" if len(blocked) > 5 else ""
    waiting = len(left) - len(blocked)
    return (f"job {job_id}: the {len(left)} task(s) left can never run: blocked by their "
            f"dependencies: {shown}{more}"
            + (f"; {waiting} more wait for those" if waiting else ""))


@task.command("wait")
@job_id_option
@timeout_option(3600.0)
@output_option
def task_wait(job_id: str, timeout_s: float) -> None:
    """Wait until every task of a job completed, with a progress bar.

    Exit 1 when any task failed, or when nothing runs and the tasks left can
    never run (blocked: a task they depend on ended with dependencyAction
    block, and Batch leaves them active; or waiting for such tasks; or the job
    completed, which leaves its active tasks active, never run); 2 on
    timeout.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    json_out = as_json()
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(),
                  TextColumn("[green]{task.fields[succeeded]} succeeded[/] "
                             "[red]{task.fields[failed]} failed[/]"),
                  TimeElapsedColumn(), console=Console(stderr=True), disable=json_out) as bar:
        progress_id = bar.add_task(f"job {job_id}", total=None, succeeded=0, failed=0)
        c = client()

        def update(counts: dict[str, int]) -> None:
            total = sum(counts.get(k, 0) for k in ("active", "running", "completed"))
            bar.update(progress_id, total=total, completed=counts.get("completed", 0),
                       succeeded=counts.get("succeeded", 0), failed=counts.get("failed", 0))

        counts = c.wait_for_tasks(job_id, timeout_s=timeout_s, progress=update)
    left = c.tasks_that_never_run(job_id) if counts.get("active") else None
    if left is not None:  # blocked: no summary line, as before the job could complete
        note(blocked_message(job_id, left))
        click.get_current_context().exit(1)
    if json_out:
        emit(counts)
    else:
        click.echo(f"job {job_id}: {counts.get('completed', 0)} tasks completed, "
                   f"{counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed")
    if counts.get("active"):
        reason = (c.get_job_json(job_id).get("executionInfo") or {}).get("terminateReason")
        note(f"job {job_id} completed" + (f" ({reason})" if reason else "")
             + f" with {counts['active']} task(s) still active: they will never run")
    if counts.get("failed") or counts.get("active"):
        click.get_current_context().exit(1)


@task.group("file")
def task_file() -> None:
    """List and download the files of a task's directory."""


list_command(
    task_file, "list", "List a task's files.",
    lambda c, job_id, task_id, recursive, filter_: c.list_task_files_json(
        job_id, task_id, recursive, filter_),
    job_id_option, task_id_option,
    click.option("--recursive", is_flag=True, help="Include files of subdirectories (wd/...)."),
    columns=FILE_COLUMNS, example="startswith(name, 'wd')", server=("filter",))


download_command(
    task_file, "Download a file of a task's directory.",
    lambda c, job_id, task_id, file_path: c.download_task_file(job_id, task_id, file_path),
    job_id_option, task_id_option,
    click.option("--file-path", required=True, help="Path in the task dir, e.g. stdout.txt."))


@task.group("subtask")
def task_subtask() -> None:
    """Inspect the subtasks (instances 1..N-1) of a multi-instance task."""


list_command(
    task_subtask, "list",
    'List a multi-instance task\'s subtasks ("Task - List Subtasks").\n\n'
    "A subtask's files are on its node: see ``hpcbatch node file download``.",
    lambda c, job_id, task_id, select: c.list_subtasks_json(job_id, task_id, select),
    job_id_option, task_id_option, columns=SUBTASK_COLUMNS, example="state eq 'completed'",
    server=("select",))


add_task_file_commands(task_file)
