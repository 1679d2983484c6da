"""Task dependencies and exit conditions: pure rules.

Implements "Create task dependencies to run tasks that depend on other tasks"
(one-to-one, one-to-many, task ID range, many-to-many; dependency actions) and
the ``exitConditions`` of today's Batch REST API (``exitCodes``,
``exitCodeRanges``, ``preProcessingError`` — the 2017 documents'
``SchedulingError`` —, ``fileUploadError``, ``default``; each with a
``dependencyAction`` and a ``jobAction``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hpcbatch.batch.models import ExitConditions, ExitOptions, TaskDependencies

DependencyAction = Literal["satisfy", "block"]
JobAction = Literal["none", "disable", "terminate"]

PRE_PROCESSING_CODES = frozenset({"ResourceFileDownloadFailed", "CommandProgramNotFound",
                                  "CommandProgramFailed", "CommandLineInvalid",
                                  "ApplicationPackageFailed"})
"""failureInfo codes that Batch counts as pre-processing errors (the task never ran)."""

FILE_UPLOAD_CODES = frozenset({"FileUploadError"})
"""failureInfo codes of output file upload failures."""


@dataclass(frozen=True)
class Ending:
    """What a task's ending means for its dependents and its job.

    Attributes
    ----------
    dependency_action
        ``satisfy``: dependents may run; ``block``: they never will.
    job_action
        ``none``, ``disable`` or ``terminate``; applied only when the job's
        ``onTaskFailure`` is ``performexitoptionsjobaction``.
    condition
        Which exit condition matched (``exitCodes``, ``exitCodeRanges``,
        ``preProcessingError``, ``fileUploadError``, ``default``), for messages.
    """

    dependency_action: DependencyAction
    job_action: JobAction
    condition: str


def task_ending(conditions: ExitConditions | dict[str, Any] | None, exit_code: int | None,
                failure_code: str | None) -> Ending:
    """Map how a task ended to its dependency action and job action.

    Parameters
    ----------
    conditions
        The task's ``exitConditions`` (model or wire dict), or None.
    exit_code
        The task's exit code (None when the process never ran).
    failure_code
        ``failureInfo.code``, or None on success.

    Returns
    -------
    Ending
        Batch's defaults apply where the conditions are silent: ``satisfy``
        and ``none`` for exit code 0, ``block`` and ``terminate`` otherwise.
        ``exitConditions.default`` covers a failure no other condition names
        (a nonzero exit code, a pre-processing or file upload error without
        its own), never a success: exit code 0 takes its ``exitCodes`` entry, if
        any, else Batch's defaults.
    """
    if isinstance(conditions, dict):
        conditions = ExitConditions.model_validate(conditions)
    success = exit_code == 0 and failure_code is None
    default = Ending("satisfy" if success else "block", "none" if success else "terminate",
                     "default")
    if conditions is None:
        return default
    chosen: ExitOptions | None = None
    condition = "default"
    if failure_code in PRE_PROCESSING_CODES and exit_code is None:
        chosen, condition = conditions.pre_processing_error, "preProcessingError"
    elif failure_code in FILE_UPLOAD_CODES:
        chosen, condition = conditions.file_upload_error, "fileUploadError"
    elif exit_code is not None:
        for mapping in conditions.exit_codes or []:
            if mapping.code == exit_code:
                chosen, condition = mapping.exit_options, "exitCodes"
                break
        else:
            for rng in conditions.exit_code_ranges or []:
                if rng.start <= exit_code <= rng.end:
                    chosen, condition = rng.exit_options, "exitCodeRanges"
                    break
    if chosen is None and not success:  # Batch: default covers failures the others do not
        chosen, condition = conditions.default, "default"
    if chosen is None:
        return Ending(default.dependency_action, default.job_action, condition)
    return Ending(chosen.dependency_action or default.dependency_action,
                  chosen.job_action or default.job_action, condition)


def integer_id(task_id: str) -> int | None:
    """Return the integer a task ID spells (for ``taskIdRanges``), or None."""
    return int(task_id) if task_id.isdigit() and len(task_id) <= 18 else None


def upstream(depends_on: TaskDependencies | dict[str, Any] | None
             ) -> tuple[list[str], list[tuple[int, int]]]:
    """Return the lower-cased task IDs and the integer ranges a task depends on."""
    if depends_on is None:
        return [], []
    if isinstance(depends_on, dict):
        depends_on = TaskDependencies.model_validate(depends_on)
    ids = sorted({t.lower() for t in depends_on.task_ids or []})
    ranges = [(r.start, r.end) for r in depends_on.task_id_ranges or []]
    return ids, ranges


def dependency_state(upstream_tasks: Sequence[tuple[str, str, str, bool | None]],
                     named: Collection[str]) -> tuple[str, str | None]:
    """Decide a waiting task's dependency state from its upstream tasks ("Task dependencies").

    A task is ready when every task it names has completed with a ``satisfy``
    dependency action and every existing task in its ID ranges has too;
    blocked as soon as one of them completed with ``block``; else waiting.

    Parameters
    ----------
    upstream_tasks
        ``(id, key, state, satisfies)`` of every existing upstream task: the
        named ones and those in its ranges (``key``: lower-cased ID;
        ``satisfies``: the dependency action of a completed task, None before).
    named
        Lower-cased IDs the task names in ``taskIds`` (a named task that does not
        exist yet keeps it waiting).

    Returns
    -------
    (str, str or None)
        ``ready``, ``waiting`` or ``blocked``, and the reason shown in
        ``dependencyState.reason`` (None when ready).
    """
    blocking = [t for t in upstream_tasks if t[2] == "completed" and t[3] is False]
    if blocking:
        return "blocked", (f"task {blocking[0][0]} completed with an exit condition whose "
                           "dependencyAction is block")
    pending = [t[0] for t in upstream_tasks if t[2] != "completed"]
    missing = sorted(set(named) - {t[1] for t in upstream_tasks})
    if pending or missing:
        names = (pending + missing)[:5]
        more = len(pending) + len(missing) - len(names)
        return "waiting", ("waiting for task(s) " + ", ".join(names)
                           + (f" and {more} more" if more else "") + " to complete")
    return "ready", None


def job_action_after(completions: Iterable[tuple[bool, bool, bool, str]], *,
                     on_task_failure: str | None) -> tuple[str, str] | None:
    """Decide what completed tasks do to their job (Batch's job actions).

    A job manager task with ``killJobOnCompletion`` terminates the job
    (``JMComplete``); a failed task whose exit condition names a ``jobAction``
    acts on the job when the job's ``onTaskFailure`` is
    ``performexitoptionsjobaction`` (``TaskFailed``). The last such completion wins.

    Parameters
    ----------
    completions
        ``(succeeded, is_manager, kill_job_on_completion, job_action)`` of each
        task that completed in this pass, ``job_action`` from :func:`task_ending`.
    on_task_failure
        The job's ``onTaskFailure`` (``noaction`` or ``performexitoptionsjobaction``).

    Returns
    -------
    (str, str) or None
        ``(action, terminateReason)`` with action ``terminate`` or ``disable``; None:
        nothing to do (``onAllTasksComplete`` is decided separately, over the whole job).
    """
    out: tuple[str, str] | None = None
    for ok, is_manager, kill_job, job_action in completions:
        if is_manager and kill_job:
            out = ("terminate", "JMComplete")
        elif (not ok and on_task_failure == "performexitoptionsjobaction"
              and job_action != "none"):
            out = (job_action, "TaskFailed")
    return out
