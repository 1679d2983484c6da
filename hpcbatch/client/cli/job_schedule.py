"""``hpcbatch job-schedule``: job schedules, jobs created on a recurrence."""

from __future__ import annotations

import click

from hpcbatch.client.cli.common import (
    JOB_COLUMNS,
    Column,
    action_command,
    client,
    id_of,
    id_option,
    list_command,
    load_json,
    note,
    read_command,
)

SCHEDULE_COLUMNS: list[Column] = [
    ("id", "id"), ("state", "state"),
    ("next run", "executionInfo.nextRunTime"), ("recent job", "executionInfo.recentJob.id"),
]

schedule_id_option = id_option("--job-schedule-id", "The job schedule ID.")


@click.group("job-schedule")
def job_schedule() -> None:
    """Job schedules: jobs created on a recurrence ("Schedule jobs")."""


@job_schedule.command("create")
@click.option("--json-file", required=True, type=click.Path(allow_dash=True),
              help="JobScheduleAddParameter JSON: id, schedule, jobSpecification.")
def job_schedule_create(json_file: str) -> None:
    """Add a job schedule."""
    body = load_json(json_file)
    client().create_job_schedule(body)
    note(f"created job schedule {id_of(body)}")


list_command(job_schedule, "list", "List job schedules.",
             lambda c, filter_, select: c.list_job_schedules(filter_, select),
             columns=SCHEDULE_COLUMNS, example="state eq 'active'")

read_command(job_schedule, "show", "Show a job schedule.",
             lambda c, job_schedule_id: c.get_job_schedule(job_schedule_id), schedule_id_option)

list_command(job_schedule, "jobs", "List the jobs a schedule created.",
             lambda c, job_schedule_id, filter_, select: c.list_jobs_from_schedule_json(
                 job_schedule_id, filter_, select),
             schedule_id_option, columns=JOB_COLUMNS, example="state eq 'completed'")

for _name, _method, _doc in (("enable", "enable_job_schedule", "Enable a job schedule."),
                             ("disable", "disable_job_schedule", "Disable a job schedule."),
                             ("terminate", "terminate_job_schedule",
                              "Terminate a job schedule and its active job.")):
    action_command(job_schedule, _name, _doc,
                   lambda c, job_schedule_id, method=_method: getattr(c, method)(job_schedule_id),
                   f"{_name}: job schedule {{job_schedule_id}}", schedule_id_option)

action_command(job_schedule, "delete", "Delete a job schedule and its jobs.",
               lambda c, job_schedule_id: c.delete_job_schedule(job_schedule_id),
               "delete: job schedule {job_schedule_id}", schedule_id_option,
               confirm="Delete job schedule {job_schedule_id} and its jobs?")
