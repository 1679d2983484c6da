"""Task dependencies and exit conditions: pure rules.

Implements "Create task dependencies to run tasks that depend on other tasks"
(one-to-one, one-to-many, task ID range, many-to-many; dependency actions) and
the ``exitConditions`` of today's Batch REST API (``exitCodes``,
``exitCodeRanges``, ``preProcessingError`` — the 2017 documents'
``SchedulingError`` —, ``fileUploadError``, ``default``; each with a
``dependencyAction`` and a ``jobAction``).
"""

from __future__ import annotations

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
    if chosen is None:
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
