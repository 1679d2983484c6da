"""``hpcbatch job``: jobs, their task counts and their preparation and release tasks."""

from __future__ import annotations

import click

from hpcbatch.client.cli.common import (
    JOB_COLUMNS,
    Column,
    action_command,
    client,
    id_of,
    job_id_option,
    json_file_option,
    list_command,
    note,
    read_command,
    request_body,
)
from hpcbatch.client.cli.set_commands import job_set  # "job set"

PREP_RELEASE_COLUMNS: list[Column] = [  # two-line headers: eight columns in 80 characters
    ("Pool", "poolId"), ("Node", "nodeId"),
    ("Prep\nstate", "jobPreparationTaskExecutionInfo.state"),
    ("Prep\nresult", "jobPreparationTaskExecutionInfo.result"),
    ("Prep\nexit", "jobPreparationTaskExecutionInfo.exitCode"),
    ("Release\nstate", "jobReleaseTaskExecutionInfo.state"),
    ("Release\nresult", "jobReleaseTaskExecutionInfo.result"),
    ("Release\nexit", "jobReleaseTaskExecutionInfo.exitCode"),
]


@click.group()
def job() -> None:
    """Manage jobs."""


@job.command("create")
@json_file_option("job (JobAddParameter)")
@click.option("--id", "job_id", help="Job ID.")
@click.option("--pool-id", help="Pool the job's tasks run on.")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Priority, -1000 to 1000.")
def job_create(json_file: str | None, job_id: str | None, pool_id: str | None,
               priority: int | None) -> None:
    """Create a job from options or from a JSON file ("Job - Add")."""
    body = request_body(json_file, lambda: {
        k: v for k, v in {"id": job_id, "poolInfo": {"poolId": pool_id},
                          "priority": priority}.items() if v is not None},
        required=["job_id", "pool_id"])
    client().create_job(body)
    note(f"created job {id_of(body)}")


list_command(job, "list", "List jobs.",
             lambda c, filter_, select: c.list_jobs_json(filter_, select),
             columns=JOB_COLUMNS, example="state eq 'active'")

read_command(job, "show", "Show a job.", lambda c, job_id: c.get_job_json(job_id),
             job_id_option)

action_command(
    job, "terminate", "Terminate a job: its running tasks are terminated (active tasks stay active, "
    "as in Batch), its job release task runs, and it completes.",
    lambda c, job_id, reason: c.terminate_job(job_id, reason), "terminating job {job_id}",
    job_id_option, click.option("--reason", help="Terminate reason recorded on the job."))

action_command(job, "delete", "Delete a job and its tasks.",
               lambda c, job_id: c.delete_job(job_id), "deleting job {job_id}",
               job_id_option, confirm="Delete job {job_id} and its tasks?")

read_command(job, "task-counts",
             "Show a job's task counts (active, running, completed, succeeded, failed).",
             lambda c, job_id: c.get_task_counts(job_id), job_id_option)

action_command(
    job, "disable", 'Disable a job ("Job - Disable"): no new task of it starts until it is '
                    "enabled.",
    lambda c, job_id, disable_tasks: c.disable_job(job_id, disable_tasks),
    "disabling job {job_id}",
    job_id_option,
    click.option("--disable-tasks", type=click.Choice(["requeue", "terminate", "wait"]),
                 default="requeue", show_default=True,
                 help="What happens to the job's running tasks: requeue them, terminate them, "
                      "or let them finish."))

action_command(job, "enable", 'Enable a disabled job ("Job - Enable").',
               lambda c, job_id: c.enable_job(job_id), "enabled job {job_id}", job_id_option)

list_command(job, "prep-release-status",
             "Show, per node, the job preparation and release tasks' status\n"
             '("Job - List Preparation and Release Task Status").',
             lambda c, job_id, filter_, select:
             c.list_job_preparation_and_release_task_status(job_id, filter_, select),
             job_id_option, columns=PREP_RELEASE_COLUMNS, example="nodeId eq 'node-1'")


job.add_command(job_set)
