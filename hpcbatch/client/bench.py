"""Run a benchmark campaign as Batch work, through :class:`~hpcbatch.client.sdk.BatchClient`.

One job per campaign; one multi-instance task per run (``numberOfInstances``
= the run's ``nodes``; the application command the ``mpiexec`` line of
:func:`hpcbatch.execution.mpi.batch_command_line`, as ``hpcbatch mpi run``
builds it), so gang allocation, retries (``maxTaskRetryCount``), the time
limit (``maxWallClockTime``) and outputs come from the service. At most
``concurrency`` runs are in flight (default 1: benchmarks do not share the
pool). When a run's task completes, its ``stdout.txt`` and ``stderr.txt`` are
read (File - Get From Task), its figures extracted and sanity checked; its
figures are saved as the task's ``TaskOutput`` ``figures.json`` by the Batch
File Conventions (the service already persists the logs as ``TaskLog``),
and at the end the summary as the job's ``JobOutput`` ``summary.json``. The
job is then terminated (it completes).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.campaigns.figures import check_sanity, extract
from hpcbatch.campaigns.model import TASK_TIME, Campaign
from hpcbatch.campaigns.results import make_summary
from hpcbatch.campaigns.space import Run
from hpcbatch.execution.mpi import batch_command_line

if TYPE_CHECKING:
    from hpcbatch.client.sdk import BatchClient
    from hpcbatch.storage.fs import Storage

__all__ = [
    "FIGURES_OUTPUT",
    "SUMMARY_OUTPUT",
    "CampaignRunner",
    "read_summary",
    "task_body",
]

FIGURES_OUTPUT = "figures.json"
"""A run's figures: its task's ``TaskOutput`` of this path."""

SUMMARY_OUTPUT = "summary.json"
"""A campaign's summary: its job's ``JobOutput`` of this path."""

STDERR_TAIL_BYTES = 4000
"""How much of an insane run's stderr its record keeps (its end)."""


def _utc(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).astimezone(UTC).isoformat().replace(
        "+00:00", "Z")


def task_body(campaign: Campaign, run: Run) -> dict[str, Any]:
    """The Task - Add body of one run: a multi-instance task.

    Parameters
    ----------
    campaign
        Its campaign (``mpi``, ``time_limit_s``, ``retries``).
    run
        The run (:func:`hpcbatch.campaigns.space.plan_runs`).

    Returns
    -------
    dict
        Batch wire JSON: ``id``, ``displayName``, ``commandLine``,
        ``multiInstanceSettings`` (``numberOfInstances`` = nodes, and the
        coordination command line), ``constraints`` and ``environmentSettings``.

    Raises
    ------
    ValueError
        The launch line cannot be built (see :func:`batch_command_line`).
    """
    if campaign.mpi == "none":
        command_line = shlex.join(run.argv)
    else:
        command_line = batch_command_line(run.argv, run.nodes, ppn=run.ppn,
                                          flavor=campaign.mpi)
    settings: dict[str, Any] = {"numberOfInstances": run.nodes}
    if run.coordination_argv:
        settings["coordinationCommandLine"] = shlex.join(run.coordination_argv)
    point = " ".join(f"{k}={v}" for k, v in run.params.items())
    body: dict[str, Any] = {
        "id": run.task_id,
        "displayName": f"{run.benchmark} {point} repeat {run.repeat}"[:1024],
        "commandLine": command_line,
        "multiInstanceSettings": settings,
        "constraints": {"maxWallClockTime": f"PT{campaign.time_limit_s:g}S",
                        "maxTaskRetryCount": campaign.retries},
    }
    if run.environment:
        body["environmentSettings"] = [{"name": k, "value": v}
                                       for k, v in run.environment.items()]
    return body


def read_summary(storage: Storage, job_id: str) -> Any:
    """The summary a campaign run saved (its job's ``JobOutput`` ``summary.json``), parsed.

    Raises
    ------
    hpcbatch.storage.fs.StorageNotFoundError
        The job saved no summary.
    """
    from hpcbatch.storage.conventions import JobOutputKind, JobOutputStorage

    return json.loads(JobOutputStorage(storage, job_id).get_bytes(JobOutputKind.JobOutput,
                                                                  SUMMARY_OUTPUT))


Progress = Callable[[str, Run, "dict[str, Any] | None"], None]
"""``progress(event, run, record)``: ``event`` is ``added``, ``running`` or ``done``
(then ``record`` is the run's record)."""


@dataclass
class CampaignRunner:
    """Runs one campaign's runs on a pool and builds its summary.

    Parameters
    ----------
    client
        The service's client.
    campaign
        The campaign.
    pool_id
        The pool to run on (it needs ``enableInterNodeCommunication`` for
        runs of more than one node).
    job_id
        The job to create for the campaign.
    storage
        Where to save outputs by the File Conventions (None: nothing is saved).
    poll_interval_s
        Seconds between two looks at the tasks in flight.
    """

    client: BatchClient
    campaign: Campaign
    pool_id: str
    job_id: str
    storage: Storage | None = None
    poll_interval_s: float = 0.5
    records: list[dict[str, Any]] = field(default_factory=list)

    def labels(self) -> list[str]:
        """The pool's host labels (its ``vmSize``), for reference scopes."""
        pool = self.client.get_pool(self.pool_id)
        return [pool.vm_size]

    def run(self, runs: Sequence[Run], progress: Progress | None = None,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the job, run every run, save the outputs; return the summary.

        Parameters
        ----------
        runs
            The plan.
        progress
            Called as runs are added, start and end.
        overrides
            The ``--set`` overrides (recorded in the summary).

        Returns
        -------
        dict
            The summary (:func:`hpcbatch.campaigns.results.make_summary`).

        Raises
        ------
        HpcbatchError
            The pool does not exist, or the job cannot be created (``JobExists``).
        KeyboardInterrupt
            Passed on after terminating the job.
        """
        labels = self.labels()
        start = _utc()
        self.client.create_job({
            "id": self.job_id, "displayName": f"benchmark campaign {self.campaign.name}",
            "poolInfo": {"poolId": self.pool_id},
            "metadata": [{"name": "hpcbatch.bench.campaign", "value": self.campaign.name}]})
        try:
            self._run_all(runs, progress)
        except BaseException:
            self._terminate()
            raise
        summary = make_summary(self.campaign, job_id=self.job_id, pool_id=self.pool_id,
                               labels=labels, runs=self.records, start_time=start,
                               end_time=_utc(), overrides=overrides)
        if self.storage is not None:
            from hpcbatch.storage.conventions import JobOutputKind, JobOutputStorage

            JobOutputStorage(self.storage, self.job_id).save_text(
                JobOutputKind.JobOutput, json.dumps(summary, indent=1), SUMMARY_OUTPUT)
        self._terminate()
        return summary

    def _terminate(self) -> None:
        try:
            self.client.terminate_job(self.job_id, terminate_reason="campaign ended")
        except HpcbatchError:
            pass

    def _run_all(self, runs: Sequence[Run], progress: Progress | None) -> None:
        pending = list(runs)
        inflight: dict[str, tuple[Run, bool]] = {}
        while pending or inflight:
            while pending and len(inflight) < self.campaign.concurrency:
                run = pending.pop(0)
                self.client.create_task(self.job_id, task_body(self.campaign, run))
                inflight[run.task_id] = (run, False)
                if progress:
                    progress("added", run, None)
            time.sleep(self.poll_interval_s)
            for task_id, (run, started) in list(inflight.items()):
                task = self.client.get_task(self.job_id, task_id)
                state = getattr(task.state, "value", task.state)
                if state == "running" and not started:
                    inflight[task_id] = (run, True)
                    if progress:
                        progress("running", run, None)
                if state == "completed":
                    del inflight[task_id]
                    record = self._collect(run, task)
                    self.records.append(record)
                    if progress:
                        progress("done", run, record)

    def _file(self, task_id: str, name: str) -> str:
        from hpcbatch.client.sdk import BatchError

        try:
            data = self.client.download_task_file(self.job_id, task_id, name)
        except BatchError as exc:
            if exc.code in ("FileNotFound", "NodeNotFound", "OperationInvalidForCurrentState"):
                return ""
            raise
        return data.decode("utf-8", errors="replace")

    def _collect(self, run: Run, task: Any) -> dict[str, Any]:
        bench = self.campaign.benchmark(run.benchmark)
        info = task.execution_info
        stdout, stderr = self._file(run.task_id, "stdout.txt"), self._file(run.task_id,
                                                                             "stderr.txt")
        exit_code = info.exit_code if info else None
        failure = (f"{info.failure_info.code}: {info.failure_info.message}"
                   if info and info.failure_info else None)
        found = extract(bench.figures, stdout, stderr)
        figures = [f.to_json() for f in found]
        duration = None
        if info and info.start_time and info.end_time:
            duration = (info.end_time - info.start_time).total_seconds()
            if bench.task_time:
                figures.append({"name": TASK_TIME, "value": duration * 1e3, "unit": "ms",
                                "labels": {}})
        problems = check_sanity(bench.sanity, bench.figures, found, stdout, stderr, exit_code,
                                failure)
        if bench.task_time and duration is None:
            problems.append(f"figure {TASK_TIME}: the task has no start and end time")
        record = {
            "taskId": run.task_id, "benchmark": run.benchmark, "pointIndex": run.point_index,
            "params": run.params, "repeat": run.repeat, "exitCode": exit_code,
            "failure": failure, "retries": info.retry_count if info else 0,
            "nodeId": task.node_info.node_id if task.node_info else None,
            "startTime": _utc(info.start_time) if info and info.start_time else None,
            "endTime": _utc(info.end_time) if info and info.end_time else None,
            "durationS": duration, "sanity": problems, "figures": figures,
            "stderrTail": stderr[-STDERR_TAIL_BYTES:] if problems else "",
        }
        if self.storage is not None:
            from hpcbatch.storage.conventions import TaskOutputKind, TaskOutputStorage

            TaskOutputStorage(self.storage, self.job_id, run.task_id).save_text(
                TaskOutputKind.TaskOutput,
                json.dumps({"taskId": run.task_id, "benchmark": run.benchmark,
                            "params": run.params, "repeat": run.repeat, "figures": figures,
                            "sanity": problems}, indent=1),
                FIGURES_OUTPUT)
        return record
