"""The Job Manager template's framework: a job splitter whose tasks are added as it yields them.

The Python counterpart of "Azure Batch Job Manager with Job Splitter"
(reference: azure-batch-docs-2017.txt, "Use Visual Studio project templates
to jump-start Batch solutions", section "Job Manager template"). You subclass
:class:`JobSplitter` and write :meth:`JobSplitter.split`, a generator of
tasks; :func:`run_job_manager` (the template's ``Program.cs``, ``JobManager.cs``
and ``TaskSubmitter.cs``) does the rest:

1. reads ``parameters.json`` (``--parameters FILE``, else the task's working
   directory, else the folder of your ``main.py``), the job ID
   (``AZ_BATCH_JOB_ID``) and the service (``AZURE_BATCH_ENDPOINT``,
   ``AZURE_BATCH_ACCOUNT`` and, when the job manager task has
   ``"authenticationTokenSettings": {"access": ["job"]}``, the job-scoped
   ``AZ_BATCH_AUTHENTICATION_TOKEN``: the service puts them in the task's
   environment; ``AZURE_BATCH_ACCESS_KEY`` instead when run by hand);
2. calls ``split()`` and adds the tasks it yields to the job in batches of up
   to 100 ("Add a task collection"), on a background thread, as they come: a
   batch is sent when it is full or its oldest task has waited
   ``batch_delay_s`` -- so the first tasks run while ``split()`` still yields;
3. skips tasks that already exist (``TaskExists``): a retried job manager
   re-yields the same task IDs and only the missing ones are added;
4. logs a line per batch to stdout (the task's ``stdout.txt``) and exits with
   the template's code.

Exit codes (reference, "Exit codes and exceptions in the Job Manager template"):

====  ==========================================================================
code  meaning
====  ==========================================================================
0     The job manager completed successfully. Your job splitter code ran to
      completion, and all tasks were added to the job.
1     The job manager task failed with an exception in an 'expected' part of
      the program: a :class:`JobManagerException`, with diagnostic information
      and, where possible, a hint. Raised by the framework when the service
      rejects a task (any error but ``TaskExists``) or cannot be reached, the
      job cannot be read, ``AZ_BATCH_JOB_ID`` or the credentials are missing,
      ``parameters.json`` is not a JSON object, or ``split()`` yields something
      that is not a task or yields a task ID twice; raise it yourself in
      ``split()`` for failures you can explain.
2     The job manager task failed with an 'unexpected' exception: any other
      exception, ``split()``'s included. Its traceback is written to stdout
      (and stderr).
====  ==========================================================================

On failure, tasks already yielded are still added and run as normal
(reference, "Job splitter failure"). Returning from ``split()`` early (the
C# ``yield break``) is success.

Differences from the C# template: ``split()`` yields Batch JSON dicts or
:class:`hpcbatch.batch.models.TaskSpec` instead of ``CloudTask``; parameters may be
any JSON values (C#: strings only); the service's credentials come from the
``AZURE_BATCH_*`` variables and the job-scoped token it sets itself (C#:
``YOUR_BATCH_URL`` / ``YOUR_BATCH_KEY`` set by the client).
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

import requests
from pydantic import BaseModel

from hpcbatch.batch.errors import HpcbatchError, ServiceNotRunningError
from hpcbatch.batch.limits import MAX_TASKS_PER_COLLECTION
from hpcbatch.batch.models import Job, Task, TaskSpec
from hpcbatch.batch.tokens import CA_PEM_ENV, TOKEN_ENV
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.templates._common import (
    Log,
    TemplateFrameworkError,
    load_parameters,
    parse_args,
    program_dir,
    report_expected,
    report_unexpected,
    working_dir,
)

__all__ = [
    "DEFAULT_BATCH_DELAY_S",
    "JobManagerException",
    "JobManagerExitCode",
    "JobSplitter",
    "run_job_manager",
]

DEFAULT_BATCH_DELAY_S = 1.0
"""Seconds a yielded task waits at most for its batch to fill before the batch is sent."""

_ADD_ATTEMPTS = 4
"""Attempts to add a batch when the service answers a server error or cannot be reached."""

_WHAT = "job manager"


class JobManagerExitCode(enum.IntEnum):
    """The Job Manager template's exit codes (see the module notes)."""

    SUCCESS = 0
    """The splitter ran to completion and all tasks were added."""
    JOB_MANAGER_ERROR = 1
    """An 'expected' failure: a :class:`JobManagerException`."""
    UNEXPECTED_ERROR = 2
    """An 'unexpected' exception."""


class JobManagerException(TemplateFrameworkError):
    """An error that requires the job manager to terminate, with diagnostics (``JobManagerException``).

    The job manager exits with code 1 (:attr:`JobSplitter.expected_error_exit_code`).

    Parameters
    ----------
    message
        What failed.
    hint
        How to resolve it, where known.
    code
        The Batch error code, when the service answered one.
    """

    code = "JobManagerError"


class JobSplitter:
    """Your job splitter: subclass it and implement :meth:`split` (``JobSplitter.cs``).

    The framework constructs it; to unit test ``split()``, construct it
    yourself with the parameters you want (the template's ``IConfiguration``)::

        splitter = MyJobSplitter(parameters={"StartFrame": "1", "EndFrame": "3"}, job_id="j")
        assert [t["id"] for t in splitter.split()] == ["myTask1", "myTask2", "myTask3"]

    Parameters
    ----------
    parameters
        The job parameters, from ``parameters.json`` (``_parameters``).
    job_id
        The job being split (``AZ_BATCH_JOB_ID``).
    job
        The job as the service returned it (``_job``); None in unit tests.
    job_manager_task
        The job manager task (``_jobManagerTask``); None when not run as one.
    client
        The :class:`~hpcbatch.client.sdk.BatchClient` the tasks are added with.
    environment
        The process environment (``AZ_BATCH_*`` and the job's settings).
    argv
        Command-line arguments the framework did not consume.

    Attributes
    ----------
    expected_error_exit_code, unexpected_error_exit_code
        Class attributes: the exit codes for a :class:`JobManagerException` (1)
        and for any other exception (2). Override them if your tasks' programs
        already use 1 and 2.
    """

    expected_error_exit_code: ClassVar[int] = JobManagerExitCode.JOB_MANAGER_ERROR
    unexpected_error_exit_code: ClassVar[int] = JobManagerExitCode.UNEXPECTED_ERROR

    def __init__(self, *, parameters: Mapping[str, Any] | None = None, job_id: str = "",
                 job: Job | None = None, job_manager_task: Task | None = None,
                 client: BatchClient | None = None,
                 environment: Mapping[str, str] | None = None,
                 argv: Sequence[str] = ()) -> None:
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.job_id = job_id
        self.job = job
        self.job_manager_task = job_manager_task
        self.client = client
        self.environment: dict[str, str] = dict(environment or {})
        self.argv: list[str] = list(argv)

    def split(self) -> Iterable[Mapping[str, Any] | TaskSpec]:
        """Return the tasks into which to split the job -- lazily, as a generator.

        The framework adds each task to the job as it is yielded (in batches),
        so tasks start running while splitting is still in progress. Do not
        add tasks yourself.

        Yields
        ------
        dict or TaskSpec
            A task in Batch's REST JSON (``{"id": "myTask1", "commandLine":
            "/bin/echo 1"}``, with any ``TaskAddParameter`` property) or a
            :class:`hpcbatch.batch.models.TaskSpec`. Task IDs must be unique.

        Raises
        ------
        JobManagerException
            For a failure you can explain (exit code 1). Any other exception
            exits with code 2. Either way tasks yielded before it are added.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement split()")

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """Run this splitter as the job manager: ``sys.exit(MySplitter.main())``.

        See :func:`run_job_manager`.
        """
        return run_job_manager(cls, argv)


# --------------------------------------------------------------------------- task submitter


class _SubmitterStopped(Exception):
    """The submitter failed; the splitter must stop."""


class _TaskSubmitter:
    """Adds yielded tasks to the job in batches on a background thread (``TaskSubmitter.cs``).

    Batches go out in yield order, one request at a time, so tasks are queued
    in the order the splitter yielded them.
    """

    def __init__(self, client: BatchClient, job_id: str, log: Log, *, batch_size: int,
                 batch_delay_s: float, max_pending_batches: int = 10) -> None:
        self.client = client
        self.job_id = job_id
        self.log = log
        self.batch_size = batch_size
        self.batch_delay_s = batch_delay_s
        self.max_pending = batch_size * max_pending_batches
        self.added = 0
        self.skipped = 0
        self.batches = 0
        self.error: BaseException | None = None
        self._pending: deque[tuple[float, dict[str, Any]]] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="hpcbatch-task-submitter",
                                        daemon=True)
        self._thread.start()

    def put(self, task: dict[str, Any]) -> None:
        """Queue a task; block while too many wait. Raises :class:`_SubmitterStopped`."""
        with self._cond:
            while len(self._pending) >= self.max_pending and self.error is None:
                self._cond.wait()
            if self.error is not None:
                raise _SubmitterStopped
            self._pending.append((time.monotonic(), task))
            self._cond.notify_all()

    def close(self) -> None:
        """Send what is queued and stop; raise the error that stopped the submitter, if any."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _next_batch(self) -> list[dict[str, Any]] | None:
        with self._cond:
            while True:
                if self._pending:
                    waited_s = time.monotonic() - self._pending[0][0]
                    if (len(self._pending) >= self.batch_size or self._closed
                            or waited_s >= self.batch_delay_s):
                        count = min(self.batch_size, len(self._pending))
                        batch = [self._pending.popleft()[1] for _ in range(count)]
                        self._cond.notify_all()
                        return batch
                    self._cond.wait(self.batch_delay_s - waited_s)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._submit(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by close()/put()
            with self._cond:
                self.error = exc
                self._pending.clear()
                self._cond.notify_all()

    def _submit(self, batch: list[dict[str, Any]]) -> None:
        self.batches += 1
        number = self.batches
        todo = batch
        added = skipped = 0
        rejected: list[tuple[str, str, str]] = []
        for attempt in range(1, _ADD_ATTEMPTS + 1):
            try:
                results = self.client.create_tasks(self.job_id, todo, max_workers=1,
                                                   raise_on_error=False)
            except (BatchError, ServiceNotRunningError, requests.RequestException) as exc:
                transient = not isinstance(exc, BatchError) or exc.status >= 500
                if transient and attempt < _ADD_ATTEMPTS:
                    self.log(f"batch {number}: adding {len(todo)} tasks failed ({_describe(exc)}); "
                             f"retrying (attempt {attempt + 1} of {_ADD_ATTEMPTS})")
                    time.sleep(0.5 * 2 ** (attempt - 1))
                    continue
                self._log_batch(number, batch, added, skipped)
                raise _add_failure(self.job_id, number, len(todo), exc) from exc
            retry: list[dict[str, Any]] = []
            for spec, result in zip(todo, results):
                error = result.error or {}
                code = str(error.get("code", ""))
                if result.status == "success":
                    added += 1
                elif code == "TaskExists":
                    skipped += 1
                elif result.status == "servererror":
                    retry.append(spec)
                else:
                    message = error.get("message")
                    text = message.get("value", "") if isinstance(message, dict) else str(message)
                    details = "; ".join(f"{v.get('key')}: {v.get('value')}"
                                        for v in error.get("values") or [] if isinstance(v, dict))
                    rejected.append((result.task_id, code or result.status,
                                     text + (f" ({details})" if details else "")))
            if rejected or not retry:
                break
            if attempt < _ADD_ATTEMPTS:
                self.log(f"batch {number}: the service could not add {len(retry)} tasks "
                         f"(server error); retrying them (attempt {attempt + 1} of {_ADD_ATTEMPTS})")
                time.sleep(0.5 * 2 ** (attempt - 1))
                todo = retry
            else:
                rejected += [(str(t.get("id")), "servererror", "the service failed to add it")
                             for t in retry]
        self.added += added
        self.skipped += skipped
        self._log_batch(number, batch, added, skipped)
        if rejected:
            first = "; ".join(f"task {tid}: {code}: {msg}" for tid, code, msg in rejected[:3])
            more = f"; and {len(rejected) - 3} more" if len(rejected) > 3 else ""
            raise JobManagerException(
                f"the service rejected {len(rejected)} of the {len(batch)} tasks of batch "
                f"{number} for job {self.job_id}: {first}{more}",
                hint="fix the task in split(); tasks already added run as normal, and a "
                     "retried job manager skips them (TaskExists)",
                code=rejected[0][1], values={"TaskId": rejected[0][0]})

    def _log_batch(self, number: int, batch: list[dict[str, Any]], added: int,
                   skipped: int) -> None:
        ids = f"{batch[0].get('id')} .. {batch[-1].get('id')}" if len(batch) > 1 \
            else str(batch[0].get("id"))
        self.log(f"batch {number}: {len(batch)} tasks ({ids}): {added} added, {skipped} "
                 f"skipped (already existed); total {self.added} added, {self.skipped} skipped")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, HpcbatchError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _add_failure(job_id: str, number: int, count: int, exc: BaseException) -> JobManagerException:
    code = exc.code if isinstance(exc, HpcbatchError) else "ConnectionError"
    hints = {
        "JobNotFound": "the job was deleted while the job manager ran",
        "JobCompleted": "the job completed or was terminated while the job manager ran; with "
                        "jobManagerTask.killJobOnCompletion true (the default), or "
                        "onAllTasksComplete terminatejob and no other task open, it ends early",
        "AuthenticationFailed": "the credentials (AZ_BATCH_AUTHENTICATION_TOKEN, or "
                                "AZURE_BATCH_ACCOUNT / AZURE_BATCH_ACCESS_KEY) do not match "
                                "the service",
        "AuthorizationFailure": "the task's token allows operations on its own job only",
    }
    return JobManagerException(
        f"adding batch {number} ({count} tasks) to job {job_id} failed: {_describe(exc)}",
        hint=hints.get(code, "tasks already added run as normal; a retried job manager "
                             "skips them (TaskExists)"),
        code=code)


# --------------------------------------------------------------------------- job manager


def _task_wire(item: object, index: int) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", by_alias=True, exclude_none=True)
    raise JobManagerException(
        f"split() yielded a {type(item).__name__} as task #{index + 1}: {item!r:.200}",
        hint='yield a dict in Batch\'s JSON ({"id": "t1", "commandLine": "..."}) or an '
             "hpcbatch.batch.models.TaskSpec")


def _client_from(env: Mapping[str, str]) -> BatchClient:
    endpoint = env.get("AZURE_BATCH_ENDPOINT") or env.get("AZ_BATCH_ACCOUNT_URL")
    account = env.get("AZURE_BATCH_ACCOUNT") or env.get("AZ_BATCH_ACCOUNT_NAME")
    key, token = env.get("AZURE_BATCH_ACCESS_KEY"), env.get(TOKEN_ENV)
    if env.get("AZURE_BATCH_ENDPOINT") or (endpoint and token):
        missing = [] if account else ["AZURE_BATCH_ACCOUNT"]
        if not key and not token:
            missing.append(f"AZURE_BATCH_ACCESS_KEY (or {TOKEN_ENV})")
        if missing:
            hint = ('give the jobManagerTask "authenticationTokenSettings": {"access": ["job"]}'
                    " (Batch's way to let a task add tasks to its job: the service then sets "
                    f"{TOKEN_ENV}; it never gives tasks the account key)"
                    if env.get("AZ_BATCH_TASK_ID") else
                    "when running by hand, set AZURE_BATCH_ENDPOINT, AZURE_BATCH_ACCOUNT and "
                    "AZURE_BATCH_ACCESS_KEY")
            raise JobManagerException(
                f"AZURE_BATCH_ENDPOINT is set but {', '.join(missing)} is not", hint=hint)
        return BatchClient(str(endpoint), str(account), key or None, token=None if key else token,
                           ca_file=env.get("REQUESTS_CA_BUNDLE") or None,
                           ca_pem=env.get(CA_PEM_ENV) or None)
    try:
        return BatchClient.from_environment()
    except ServiceNotRunningError as exc:
        raise JobManagerException(
            f"no service to add tasks to: {exc.message}",
            hint="run this program as a job's jobManagerTask with authenticationTokenSettings "
                 f"access ['job'] (the service gives it AZURE_BATCH_ENDPOINT and {TOKEN_ENV}), "
                 "or set AZURE_BATCH_ENDPOINT, AZURE_BATCH_ACCOUNT and "
                 "AZURE_BATCH_ACCESS_KEY") from exc


def _read(what: str, call: Any) -> Any:
    try:
        return call()
    except (HpcbatchError, requests.RequestException) as exc:
        raise JobManagerException(f"cannot read {what}: {_describe(exc)}",
                                  code=getattr(exc, "code", None)) from exc


def _run(splitter_cls: type[JobSplitter], argv: Sequence[str] | None, env: Mapping[str, str],
         log: Log, batch_size: int, batch_delay_s: float) -> None:
    args, rest = parse_args(argv, prog=Path(sys.argv[0]).name or "main.py",
                            description=f"Job manager: {splitter_cls.__name__}.split() splits "
                                        "the job into tasks, which are added to it.",
                            error=JobManagerException, job_id_option=True, task_id_option=False)
    job_id = args.job_id or env.get("AZ_BATCH_JOB_ID")
    if not job_id:
        raise JobManagerException(
            "AZ_BATCH_JOB_ID is not set: no job to add tasks to",
            hint="run this program as a job's jobManagerTask, or name the job with --job-id")
    wd = working_dir(env)
    parameters, parameters_path = load_parameters(args.parameters, [wd, program_dir(splitter_cls)],
                                                  JobManagerException)
    client = _client_from(env)
    try:
        job = _read(f"job {job_id}", lambda: client.get_job(job_id))
        jm_task_id = env.get("AZ_BATCH_TASK_ID") if not args.job_id else None
        jm_task = (_read(f"job manager task {jm_task_id}",
                         lambda: client.get_task(job_id, jm_task_id))
                   if jm_task_id else None)
        log(f"job {job_id}: splitting with {splitter_cls.__name__}"
            + (f", parameters from {parameters_path}" if parameters_path else ", no parameters")
            + (f" (job manager task {jm_task_id}, retry {jm_task.execution_info.retry_count})"
               if jm_task is not None and jm_task.execution_info is not None else ""))
        splitter = splitter_cls(parameters=parameters, job_id=job_id, job=job,
                                job_manager_task=jm_task, client=client, environment=env,
                                argv=rest)
        _split_and_submit(splitter, client, job_id, jm_task_id, log, batch_size, batch_delay_s)
    finally:
        client.close()


def _split_and_submit(splitter: JobSplitter, client: BatchClient, job_id: str,
                      jm_task_id: str | None, log: Log, batch_size: int,
                      batch_delay_s: float) -> None:
    started = time.monotonic()
    submitter = _TaskSubmitter(client, job_id, log, batch_size=batch_size,
                               batch_delay_s=batch_delay_s)
    reserved = jm_task_id.lower() if jm_task_id else None
    seen: set[str] = set()
    yielded = 0
    split_error: Exception | None = None
    iterator: Iterator[Any] | None = None
    try:
        iterator = iter(splitter.split())
        for item in iterator:
            task = _task_wire(item, yielded)
            task_id = task.get("id")
            if isinstance(task_id, str):
                key = task_id.lower()  # Batch IDs are case-insensitive
                if key in seen:
                    raise JobManagerException(
                        f"split() yielded task ID {task_id!r} twice (task #{yielded + 1})",
                        hint="task IDs must be unique within the job (compared ignoring case)",
                        code="TaskExists", values={"TaskId": task_id})
                if key == reserved:
                    raise JobManagerException(
                        f"split() yielded task ID {task_id!r}, the job manager task's own ID",
                        hint="give the tasks IDs other than jobManagerTask.id",
                        code="TaskExists", values={"TaskId": task_id})
                seen.add(key)
            yielded += 1
            submitter.put(task)
    except _SubmitterStopped:
        pass  # close() raises the submitter's error
    except Exception as exc:  # noqa: BLE001 - split() is user code: its error is raised after close()
        split_error = exc
    finally:
        close = getattr(iterator, "close", None)
        if callable(close):
            close()
    try:
        submitter.close()
    except Exception as exc:
        if split_error is None:
            log(f"stopped after split() yielded {yielded} tasks: {submitter.added} added, "
                f"{submitter.skipped} skipped")
            raise
        log(f"adding the tasks yielded before the failure also failed: {_describe(exc)}")
    elapsed_s = time.monotonic() - started
    if split_error is not None:
        log(f"split() failed after yielding {yielded} tasks ({type(split_error).__name__}: "
            f"{split_error}); {submitter.added} added, {submitter.skipped} skipped (already "
            "existed); the added tasks run as normal")
        raise split_error
    log(f"done: split() yielded {yielded} tasks; {submitter.added} added, {submitter.skipped} "
        f"skipped (already existed), in {submitter.batches} batches, {elapsed_s:.1f} s")


def run_job_manager(splitter_cls: type[JobSplitter], argv: Sequence[str] | None = None, *,
                    env: Mapping[str, str] | None = None, stdout: TextIO | None = None,
                    stderr: TextIO | None = None, batch_size: int = MAX_TASKS_PER_COLLECTION,
                    batch_delay_s: float = DEFAULT_BATCH_DELAY_S) -> int:
    """Run a job splitter as the job's job manager; return the template's exit code.

    The template's ``Program.Main``: use it as ``sys.exit(run_job_manager(MySplitter))``
    in the job manager task's program.

    Parameters
    ----------
    splitter_cls
        Your :class:`JobSplitter` subclass.
    argv
        Command-line arguments (default ``sys.argv[1:]``): ``--parameters FILE``
        and ``--job-id JOB`` (to run by hand against a job); others are passed
        on as :attr:`JobSplitter.argv`.
    env
        The environment to read (default ``os.environ``): ``AZ_BATCH_JOB_ID``,
        ``AZ_BATCH_TASK_ID``, ``AZ_BATCH_TASK_WORKING_DIR``, ``AZURE_BATCH_ENDPOINT``,
        ``AZURE_BATCH_ACCOUNT`` and ``AZ_BATCH_AUTHENTICATION_TOKEN`` (or
        ``AZURE_BATCH_ACCESS_KEY``), ``REQUESTS_CA_BUNDLE``. Without an endpoint
        the service of ``$HPCBATCH_STATE_DIR`` is used.
    stdout, stderr
        Where the log lines and errors go (default ``sys.stdout`` / ``sys.stderr``).
    batch_size
        Tasks per "Add a task collection" request, 1 to 100.
    batch_delay_s
        Seconds a yielded task waits at most for its batch to fill.

    Returns
    -------
    int
        0 success; 1 a :class:`JobManagerException` (expected failure: the
        service rejected a task or cannot be reached, missing job ID or
        credentials, bad ``parameters.json``, a bad or duplicate yielded task);
        2 any other exception (``split()``'s included). The codes are
        ``splitter_cls.expected_error_exit_code`` / ``unexpected_error_exit_code``.

    Raises
    ------
    TypeError
        ``splitter_cls`` is not a :class:`JobSplitter` subclass.
    ValueError
        ``batch_size`` is not 1 to 100, or ``batch_delay_s`` is negative.
    """
    if not (isinstance(splitter_cls, type) and issubclass(splitter_cls, JobSplitter)):
        raise TypeError(f"run_job_manager needs a JobSplitter subclass, not {splitter_cls!r}")
    if not 1 <= batch_size <= MAX_TASKS_PER_COLLECTION:
        raise ValueError(f"batch_size must be 1 to {MAX_TASKS_PER_COLLECTION}, not {batch_size}")
    if not batch_delay_s >= 0:
        raise ValueError(f"batch_delay_s must be >= 0 seconds, not {batch_delay_s!r}")
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    environment = dict(os.environ if env is None else env)
    log = Log(out, _WHAT)
    try:
        _run(splitter_cls, argv, environment, log, batch_size, batch_delay_s)
    except JobManagerException as exc:
        code = int(splitter_cls.expected_error_exit_code)
        report_expected(exc, _WHAT, code, out, err)
        return code
    except Exception as exc:  # noqa: BLE001 - user code: any error is reported with its exit code
        code = int(splitter_cls.unexpected_error_exit_code)
        report_unexpected(exc, _WHAT, code, out, err)
        return code
    return int(JobManagerExitCode.SUCCESS)
