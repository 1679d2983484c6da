"""Tasks: "Task - Add/Add Collection/Get/List/Terminate/Reactivate/Delete/List Subtasks", dependencies."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import defaults, dependencies, identity, odata_select
from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    HpcbatchError,
    InvalidPropertyValueError,
    exists,
)
from hpcbatch.batch.limits import MAX_TASKS_PER_COLLECTION
from hpcbatch.batch.models import (
    ComputeNodeInformation,
    ExitConditions,
    ExitOptions,
    JobManagerTask,
    Task,
    TaskConstraints,
    TaskExecutionInformation,
    TaskSpec,
    check_pool_runs_containers,
)
from hpcbatch.batch.states import Kind, SubtaskState, TaskExecutionResult, TaskState
from hpcbatch.batch.wire import iso, new_etag, utcnow
from hpcbatch.core.changes import VersionWatch
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.rows import check_job_open, job_row, node_info, returned_spec, task_row
from hpcbatch.core.runs import DEFAULT_RETENTION_S, Completion, Run
from hpcbatch.core.transitions import check
from hpcbatch.execution import multiinstance
from hpcbatch.execution.environment import task_dir
from hpcbatch.store import filters
from hpcbatch.store.database import (
    Store,
    dumps,
    loads,
    mappings,
    subtasks,
    task_dep_ranges,
    task_deps,
    tasks,
)

if TYPE_CHECKING:
    from hpcbatch.core.applications import Applications
    from hpcbatch.core.files import NodeFiles
    from hpcbatch.core.runs import Runs

log = logging.getLogger(__name__)

TASK_COLUMN_PROPERTIES = frozenset({
    "id", "url", "eTag", "lastModified", "creationTime", "state", "stateTransitionTime",
    "previousState", "previousStateTransitionTime", "executionInfo", "nodeInfo", "requiredSlots",
})
"""Top-level ``CloudTask`` properties served from columns, without reading the task's spec."""

_VERSION = sa.select(tasks.c.etag, tasks.c.last_modified).where(
    tasks.c.job_key == sa.bindparam("b_job"), tasks.c.key == sa.bindparam("b_task"))
"""A task's ``eTag`` and ``lastModified`` by job key and task key (:meth:`Tasks.task_version`)."""

_ETAGS = sa.select(tasks.c.key, tasks.c.etag).where(
    tasks.c.job_key == sa.bindparam("b_job"), tasks.c.key.in_(sa.bindparam("b_keys", expanding=True)))
"""The ``eTag`` of many tasks of one job by task key (:meth:`Tasks.task_etags`)."""

VERSIONS_PER_READ = 500
"""Tasks a :meth:`Tasks.task_etags` statement names at most (SQLite's bound parameters)."""

_TASK_PLAIN = {
    "id": tasks.c.id, "state": tasks.c.state, "eTag": tasks.c.etag,
    "creationTime": tasks.c.creation_time, "lastModified": tasks.c.last_modified,
    "stateTransitionTime": tasks.c.state_transition_time, "previousState": tasks.c.previous_state,
    "previousStateTransitionTime": tasks.c.previous_state_transition_time,
    "requiredSlots": tasks.c.required_slots,
}
"""Task properties that are one column each: a ``$select`` of only these reads no spec."""

TASK_SELECTABLE = frozenset(
    {f.alias or name for name, f in Task.model_fields.items()}
    | {f"executionInfo/{f.alias or n}" for n, f in TaskExecutionInformation.model_fields.items()}
    | {f"nodeInfo/{f.alias or n}" for n, f in ComputeNodeInformation.model_fields.items()}
)
"""Property paths a task ``$select`` may name."""

DEFAULT_MAX_RESULTS = 1000
"""Batch's page size for list operations."""


class Tasks:
    """The tasks of every job.

    Parameters
    ----------
    ctx
        The service context.
    runs
        The runs in flight (a running task is ended through its run).
    applications
        Resolves ``applicationPackageReferences``.
    files
        Removes a deleted task's directory on the nodes where it ran.

    Attributes
    ----------
    watch
        Serves Task - Get long polls: one read of every waited-on task's
        version a commit (:class:`hpcbatch.core.changes.VersionWatch`).
    after_completions
        Called, in the same transaction, for a task Task - Terminate completes
        while active; set by the service to ``Jobs.after_completions``.
    """

    def __init__(self, ctx: ServiceContext, runs: Runs, applications: Applications,
                 files: NodeFiles) -> None:
        self.ctx = ctx
        self.runs = runs
        self.applications = applications
        self.files = files
        self.watch: VersionWatch[tuple[str, str], dict[str, Any], str] = VersionWatch(
            ctx.changes, self.task_etags, operator.itemgetter("eTag"))
        self.after_completions: Callable[
            [sa.Connection, Sequence[tuple[Completion, bool, dependencies.Ending]]],
            None] | None = None
        """What a task's completion does to its dependents and its job
        (:meth:`hpcbatch.core.jobs.Jobs.after_completions`, wired by the service)."""

    def _check_task(self, spec: TaskSpec, job: Mapping[str, Any],
                    job_spec: Mapping[str, Any]) -> None:
        """Reject a task its job can never run: its ID, dependencies, exit conditions and
        multi-instance rules (``job_spec``: the job's stored specification)."""
        for special, default, code in (("jobPreparationTask",
                                        defaults.JOB_PREPARATION_TASK["id"],
                                        "TaskIdSameAsJobPreparationTask"),
                                       ("jobReleaseTask", defaults.JOB_RELEASE_TASK["id"],
                                        "TaskIdSameAsJobReleaseTask")):
            if job_spec.get(special) is not None and spec.id.lower() == str(
                    job_spec[special].get("id") or default).lower():
                raise ConflictError(f"Task {spec.id} has the ID of job {job['id']}'s {special}.",
                                    code=code, values={"PropertyName": "id"})
        if spec.exit_conditions is not None and (
                job_spec.get("onTaskFailure") or "noaction") == "noaction":
            for path, options in _exit_options(spec.exit_conditions):
                if options.job_action not in (None, "none"):
                    raise InvalidPropertyValueError(
                        f"{path}.jobAction", options.job_action,
                        f"job {job['id']} has onTaskFailure noaction; a task's jobAction "
                        "needs onTaskFailure performexitoptionsjobaction")
        if spec.depends_on is not None:
            if not job_spec.get("usesTaskDependencies"):
                raise BadRequestError(
                    f"Task {spec.id} has dependsOn, but job {job['id']} does not set "
                    "usesTaskDependencies.", code="TaskDependenciesNotSpecifiedOnJob",
                    values={"PropertyName": "dependsOn"})
            ids, ranges = dependencies.upstream(spec.depends_on)
            if spec.id.lower() in ids or any(
                    a <= (dependencies.integer_id(spec.id) or -1) <= b for a, b in ranges):
                raise InvalidPropertyValueError("dependsOn", spec.id,
                                                "a task cannot depend on itself")
            if any(a > b for a, b in ranges):
                raise InvalidPropertyValueError("dependsOn.taskIdRanges", ranges,
                                                "each range needs start <= end")
        if spec.application_package_references:
            self.applications.resolve_packages([r.to_wire() for r in spec.application_package_references],
                                  "applicationPackageReferences")
        pool = self.ctx.pool_manager.spec(job["pool_key"] or "")
        identity.check_user_name(spec.user_identity, pool)
        check_pool_runs_containers(spec.container_settings, pool,
                                   pool.id if pool else None)
        if spec.multi_instance_settings is not None:
            capacity = self.ctx.pool_manager.capacity(job["pool_key"]) if pool else None
            multiinstance.validate(spec, pool, capacity)

    def row_values(self, spec: TaskSpec | JobManagerTask, job_key: str,
                         now: datetime) -> dict[str, Any]:
        mis = getattr(spec, "multi_instance_settings", None)
        waits = getattr(spec, "depends_on", None) is not None
        return {
            "job_key": job_key, "key": spec.id.lower(), "id": spec.id, "state": TaskState.active,
            "creation_time": now, "state_transition_time": now, "last_modified": now,
            "etag": new_etag(), "required_slots": spec.required_slots or 1,
            "instances": (mis.number_of_instances or 1) if mis else 1,
            "is_manager": isinstance(spec, JobManagerTask),
            "int_id": dependencies.integer_id(spec.id),
            "dep_state": "waiting" if waits else "ready",
            "retry_count": 0, "requeue_count": 0, "spec": dumps(spec.to_wire()),
        }

    def insert(self, conn: sa.Connection, job: Mapping[str, Any],
                      specs: Sequence[TaskSpec], now: datetime) -> dict[str, HpcbatchError]:
        """Insert tasks of one job in one executemany; return the rejected ones by ID.

        Tasks with ``dependsOn`` get their dependency rows and their initial
        dependency state (their upstream tasks may be complete already).
        """
        errors: dict[str, HpcbatchError] = {}
        job_spec = loads(job["spec"])
        taken = Store.existing_task_keys(conn, job["key"], [s.id.lower() for s in specs])
        rows, deps, dep_ranges, waiting = [], [], [], []
        for spec in specs:
            key = spec.id.lower()
            if key in taken:
                errors[spec.id] = exists("Task", spec.id)
                continue
            try:
                self._check_task(spec, job, job_spec)
            except HpcbatchError as exc:
                errors[spec.id] = exc
                continue
            taken.add(key)
            rows.append(self.row_values(spec, job["key"], now))
            if spec.depends_on is not None:
                ids, ranges = dependencies.upstream(spec.depends_on)
                deps += [{"job_key": job["key"], "task_key": key, "upstream_key": u} for u in ids]
                dep_ranges += [{"job_key": job["key"], "task_key": key, "start": a, "end": b}
                               for a, b in ranges]
                waiting.append(key)
        Store.insert_many(conn, tasks, rows)
        Store.insert_many(conn, task_deps, deps)
        Store.insert_many(conn, task_dep_ranges, dep_ranges)
        self.resolve_dependencies(conn, job["key"], waiting)
        return errors

    def add_task(self, job_id: str, body: Mapping[str, Any]) -> str:
        """Add one task ("Task - Add").

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        ConflictError
            ``TaskExists``; ``JobCompleted`` for a completed job.
        BadRequestError
            Invalid or unknown properties; ``TaskDependenciesNotSpecifiedOnJob``;
            a multi-instance task its pool can never run.
        """
        spec = TaskSpec.from_wire(body, what="task")
        with self.ctx.store.begin() as conn:
            job = job_row(conn, job_id)
            check_job_open(job)
            errors = self.insert(conn, job, [spec], utcnow())
        if errors:
            raise errors[spec.id]
        self.ctx.kick()
        return spec.id

    def add_tasks(self, job_id: str, items: Sequence[Any]) -> list[dict[str, Any]]:
        """Add up to 100 tasks at once ("Task - Add Collection").

        Each task succeeds or fails on its own: the reply lists a
        ``TaskAddResult`` per task, in request order (``status``
        success|clienterror, with Batch's error for a bad or duplicate task).
        All accepted tasks are committed in one transaction before the reply.

        Raises
        ------
        NotFoundError
            ``JobNotFound``.
        BadRequestError
            More than 100 tasks (``RequestBodyTooLarge``) or an empty list.
        """
        if not isinstance(items, list) or not items:
            raise BadRequestError("The request body must hold a non-empty 'value' list of tasks.",
                                  values={"PropertyName": "value"})
        if len(items) > MAX_TASKS_PER_COLLECTION:
            raise BadRequestError(
                f"A task collection may hold at most {MAX_TASKS_PER_COLLECTION} tasks; "
                f"this one holds {len(items)}.", code="RequestBodyTooLarge", status=413)
        now = utcnow()
        parsed: list[TaskSpec | HpcbatchError] = []
        for i, item in enumerate(items):
            try:
                parsed.append(TaskSpec.from_wire(item, what=f"value[{i}]"))
            except HpcbatchError as exc:
                parsed.append(exc)
        first: dict[str, TaskSpec] = {}
        for p in parsed:
            if isinstance(p, TaskSpec):
                first.setdefault(p.id.lower(), p)
        with self.ctx.store.begin() as conn:
            job = job_row(conn, job_id)
            check_job_open(job)
            errors = self.insert(conn, job, list(first.values()), now)
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item, p in zip(items, parsed):
            if isinstance(p, HpcbatchError):
                tid = item.get("id", "") if isinstance(item, dict) else ""
                results.append(_add_error(tid, p))
            elif p.id.lower() in seen:  # the same ID earlier in this request
                results.append(_add_error(p.id, exists("Task", p.id)))
            elif p.id in errors:
                results.append(_add_error(p.id, errors[p.id]))
            else:
                results.append({"status": "success", "taskId": p.id, "eTag": new_etag(),
                                "lastModified": iso(now),
                                "location": f"{self.ctx.base_url}/jobs/{job['id']}/tasks/{p.id}"})
            if not isinstance(p, HpcbatchError):
                seen.add(p.id.lower())
        if any(r["status"] == "success" for r in results):
            self.ctx.kick()
        return results

    def resolve_dependencies(self, conn: sa.Connection, job_key: str,
                              task_keys: Iterable[str]) -> None:
        """Recompute the dependency state of waiting tasks (``ready``, ``waiting``, ``blocked``).

        The rule is :func:`hpcbatch.batch.dependencies.dependency_state`; this
        reads each task's upstream tasks and writes the result.
        """
        for key in task_keys:
            ids = conn.execute(sa.select(task_deps.c.upstream_key).where(
                task_deps.c.job_key == job_key, task_deps.c.task_key == key)).scalars().all()
            ranges = conn.execute(sa.select(task_dep_ranges.c.start, task_dep_ranges.c.end).where(
                task_dep_ranges.c.job_key == job_key, task_dep_ranges.c.task_key == key)).all()
            conds = ([tasks.c.key.in_(ids)] if ids else []) + [
                tasks.c.int_id.between(a, b) for a, b in ranges]
            rows = conn.execute(sa.select(tasks.c.id, tasks.c.key, tasks.c.state,
                                          tasks.c.satisfies)
                                .where(tasks.c.job_key == job_key, sa.or_(*conds))).all() \
                if conds else []
            state, reason = dependencies.dependency_state(
                [(r.id, r.key, r.state, r.satisfies) for r in rows], ids)
            conn.execute(tasks.update().where(tasks.c.job_key == job_key, tasks.c.key == key,
                                              tasks.c.state == TaskState.active)
                         .values(dep_state=state, dep_reason=reason))

    def dependents(self, conn: sa.Connection, job_key: str,
                    completed: Sequence[Mapping[str, Any]]) -> set[str]:
        """Return the keys of tasks that depend on any of ``completed`` (rows with key, int_id)."""
        keys = [c["key"] for c in completed]
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            out.update(conn.execute(sa.select(task_deps.c.task_key).where(
                task_deps.c.job_key == job_key,
                task_deps.c.upstream_key.in_(keys[i:i + 500]))).scalars())
        ints = [c["int_id"] for c in completed if c["int_id"] is not None]
        if ints:
            lo, hi = min(ints), max(ints)
            for key, a, b in conn.execute(sa.select(
                    task_dep_ranges.c.task_key, task_dep_ranges.c.start, task_dep_ranges.c.end)
                    .where(task_dep_ranges.c.job_key == job_key, task_dep_ranges.c.start <= hi,
                           task_dep_ranges.c.end >= lo)):
                if any(a <= x <= b for x in ints):
                    out.add(key)
        return out

    def task_wire(self, row: Mapping[str, Any], job_id: str,
                  select: Sequence[str] | None = None, job_max_retries: int = 0) -> dict[str, Any]:
        """Return a task row as ``CloudTask`` JSON, limited to ``select`` when given, with
        Batch's defaults of what its specification left out (``job_max_retries``: the
        job's ``constraints.maxTaskRetryCount``, which such a task is retried up to)."""
        needs_spec = select is None or any(
            s.split("/")[0] not in TASK_COLUMN_PROPERTIES for s in select)
        out: dict[str, Any] = (defaults.fill_task(returned_spec(row), job_max_retries)
                               if needs_spec else {"id": row["id"]})
        out.update({
            "id": row["id"],
            "url": f"{self.ctx.base_url}/jobs/{job_id}/tasks/{row['id']}",
            "eTag": row["etag"], "lastModified": iso(row["last_modified"]),
            "creationTime": iso(row["creation_time"]), "state": row["state"],
            "stateTransitionTime": iso(row["state_transition_time"]),
        })
        out["requiredSlots"] = row["required_slots"]
        if row["dep_state"] and row["dep_state"] != "ready" and row["state"] == TaskState.active:
            out["dependencyState"] = {"state": row["dep_state"], "reason": row["dep_reason"]}
        if row["previous_state"]:
            out["previousState"] = row["previous_state"]
            out["previousStateTransitionTime"] = iso(row["previous_state_transition_time"])
        info: dict[str, Any] = {"retryCount": row["retry_count"],
                                "requeueCount": row["requeue_count"]}
        # Batch: startTime only while running or completed; endTime, exitCode, result and
        # failureInfo only once completed (an active task retried or requeued has none).
        state = row["state"]
        started = state in (TaskState.running, TaskState.completed)
        completed = state == TaskState.completed
        for wire, col, shown in (("startTime", "start_time", started),
                                 ("endTime", "end_time", completed),
                                 ("lastRetryTime", "last_retry_time", True),
                                 ("lastRequeueTime", "last_requeue_time", True)):
            if shown and row[col] is not None:
                info[wire] = iso(row[col])
        if completed:
            _put_outcome(row, info)
        out["executionInfo"] = info
        if row["node_id"]:
            out["nodeInfo"] = node_info(self.ctx.base_url, row["pool_key"], row["node_id"],
                                        task_dir(job_id, row["id"]))
        return odata_select.apply_select(out, list(select)) if select else out

    def get_task(self, job_id: str, task_id: str, select: str | None = None) -> dict[str, Any]:
        """Return a task's JSON ("Task - Get"). Raises ``JobNotFound``/``TaskNotFound``."""
        sel = odata_select.parse_select(select, TASK_SELECTABLE) if select else None
        with self.ctx.store.read() as conn:
            job = job_row(conn, job_id)
            return self.task_wire(task_row(conn, job["key"], task_id), job["id"], sel,
                                  job_max_retries(job))

    def task_version(self, job_id: str, task_id: str) -> dict[str, Any]:
        """Return a task's ``eTag`` and ``lastModified`` as Task - Get gives them: what a
        long poll of Task - Get compares at every commit, read with one prebuilt statement
        instead of the task and its job.

        Raises
        ------
        NotFoundError
            ``JobNotFound``/``TaskNotFound`` (through :meth:`get_task`'s path).
        """
        with self.ctx.store.read() as conn:
            row = conn.execute(_VERSION, {"b_job": job_id.lower(),
                                          "b_task": task_id.lower()}).first()
        if row is None:  # the job or the task is missing: Batch's error, by the full path
            data = self.get_task(job_id, task_id, "id,eTag,lastModified")
            return {"eTag": data["eTag"], "lastModified": data["lastModified"]}
        return {"eTag": row.etag, "lastModified": iso(row.last_modified)}

    def task_etags(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Return many tasks' ``eTag``: a new one each time a task changes.

        What the watcher of Task - Get long polls reads at each commit
        (:class:`hpcbatch.core.changes.VersionWatch`): one statement per job and
        :data:`VERSIONS_PER_READ` tasks, however many clients wait.

        Parameters
        ----------
        keys
            ``(job key, task key)`` pairs: the lower-cased IDs.

        Returns
        -------
        dict
            ``{(job key, task key): eTag}`` for the tasks that exist (a deleted
            task, or one of a deleted job, is left out).
        """
        by_job: dict[str, list[str]] = {}
        for job_key, key in keys:
            by_job.setdefault(job_key, []).append(key)
        found: dict[tuple[str, str], str] = {}
        with self.ctx.store.read() as conn:
            for job_key, task_keys in by_job.items():
                for i in range(0, len(task_keys), VERSIONS_PER_READ):
                    rows = conn.execute(_ETAGS, {"b_job": job_key,
                                                 "b_keys": task_keys[i:i + VERSIONS_PER_READ]})
                    found.update(((job_key, key), etag) for key, etag in rows)
        return found

    def list_tasks(self, job_id: str, *, filter_: str | None = None, select: str | None = None,
                   max_results: int = DEFAULT_MAX_RESULTS,
                   after_seq: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """List a job's tasks ("Task - List") with OData ``$filter`` and ``$select``.

        The filter runs in the database; pages are keyset-paged on insertion order.

        Parameters
        ----------
        job_id
            The job.
        filter_, select
            OData ``$filter`` and ``$select`` strings.
        max_results
            Page size, 1..1000 (``maxresults``).
        after_seq
            Continuation token from the previous page.

        Returns
        -------
        (list of dict, int or None)
            The page and the token of the next page (None at the end).
        """
        if not 1 <= max_results <= 1000:
            raise BadRequestError("maxresults must be between 1 and 1000.",
                                  code="InvalidQueryParameterValue",
                                  values={"QueryParameterName": "maxresults"})
        sel = odata_select.parse_select(select, TASK_SELECTABLE) if select else None
        plain = sel is not None and all(s in _TASK_PLAIN for s in sel)
        with self.ctx.store.read() as conn:
            job = job_row(conn, job_id)
            if plain:  # every selected property is a column: no per-row object building
                assert sel is not None
                stmt = sa.select(tasks.c.seq, *(_TASK_PLAIN[s] for s in sel)).where(
                    tasks.c.job_key == job["key"])
                if filter_:
                    stmt = stmt.where(filters.compile_filter(filter_, filters.TASK_COLUMNS))
                if after_seq is not None:
                    stmt = stmt.where(tasks.c.seq > after_seq)
                rows = conn.execute(stmt.order_by(tasks.c.seq).limit(max_results + 1)).all()
                more = len(rows) > max_results
                rows = rows[:max_results]
                items = [{k: (iso(v) if isinstance(v, datetime) else v)
                          for k, v in zip(sel, row[1:]) if v is not None} for row in rows]
                return items, (rows[-1][0] if more else None)
            cols = list(tasks.c) if sel is None or any(
                s.split("/")[0] not in TASK_COLUMN_PROPERTIES for s in sel) else [
                c for c in tasks.c if c.name != "spec"]
            stmt = sa.select(*cols).where(tasks.c.job_key == job["key"])
            if filter_:
                stmt = stmt.where(filters.compile_filter(filter_, filters.TASK_COLUMNS))
            if after_seq is not None:
                stmt = stmt.where(tasks.c.seq > after_seq)
            found = mappings(conn.execute(stmt.order_by(tasks.c.seq).limit(max_results + 1)))
        more = len(found) > max_results
        found = found[:max_results]
        retries = job_max_retries(job)
        wires = [self.task_wire(_RowWithSpec(r), job["id"], sel, retries) for r in found]
        return wires, (found[-1]["seq"] if more else None)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        """Terminate a task ("Task - Terminate"): a running task's process tree is killed.

        The task completes with failureInfo code ``TaskEnded``.

        Raises
        ------
        ConflictError
            ``TaskCompleted``: the task has completed already (Batch's 409).
        """
        with self.ctx.store.begin() as conn:
            job = job_row(conn, job_id)
            row = task_row(conn, job["key"], task_id)
            if row["state"] == TaskState.completed:
                raise ConflictError(f"Task {task_id} has completed already.",
                                    code="TaskCompleted")
            if row["state"] == TaskState.active:
                # It completes as a run that failed with TaskEnded would: its exit
                # conditions decide its dependents' and its job's fate (audit M5).
                spec = loads(row["spec"])
                ending = dependencies.task_ending(spec.get("exitConditions"), None, "TaskEnded")
                now = utcnow()
                Store.update(conn, tasks, {"seq": row["seq"]},
                             state=check(Kind.task, row["state"], TaskState.completed),
                             previous_state=TaskState.active,
                             previous_state_transition_time=row["state_transition_time"],
                             state_transition_time=now, end_time=now, result=TaskExecutionResult.failure,
                             exit_code=None, last_modified=now, etag=new_etag(),
                             satisfies=ending.dependency_action == "satisfy",
                             failure_info=dumps({"category": "usererror", "code": "TaskEnded",
                                                 "message": "The task was ended by user request."}))
                manager = bool(row["is_manager"])
                completed = Completion(
                    job_key=job["key"], task_key=row["key"], int_id=row["int_id"],
                    is_manager=manager, kill_job_on_completion=manager
                    and spec.get("killJobOnCompletion") is not False)
                if self.after_completions is not None:
                    self.after_completions(conn, [(completed, False, ending)])
                return
        run = self.runs.of_task(job["key"], row["key"])
        if run is not None:
            self.ctx.background(self.runs.kill(run))

    def update_task(self, job_id: str, task_id: str, body: Mapping[str, Any]) -> None:
        """Replace a task's constraints ("Task - Update", ``PUT /jobs/{jobId}/tasks/{taskId}``).

        The body is ``TaskUpdateParameter``: ``constraints`` only; when omitted the task
        gets the default constraints (REST: "If omitted, the Task is given the default
        constraints"). ``maxTaskRetryCount`` and ``retentionTime`` apply at once, to a
        running task's current run too (its next failure, its directory's removal);
        ``maxWallClockTime`` applies from the task's next run, since the running one
        was started with its limit on the node. A completed task's directory is kept
        for the new ``retentionTime`` from its end.

        Parameters
        ----------
        job_id, task_id
            The task.
        body
            ``{"constraints": {"maxWallClockTime": "PT1H", "retentionTime": "P1D",
            "maxTaskRetryCount": 3}}``.

        Raises
        ------
        BadRequestError
            ``InvalidRequestBody``: another property or an invalid value (named).
        ConflictError
            ``JobCompleted`` / ``JobBeingDeleted`` (no change to a closed job's tasks).
        NotFoundError
            ``JobNotFound`` / ``TaskNotFound``.
        """
        if not isinstance(body, Mapping):
            raise BadRequestError("The request body must be a JSON object.")
        extra = sorted(set(body) - {"constraints"})
        if extra:
            raise BadRequestError(
                f"The property {extra[0]} cannot be updated on a task; updatable: constraints.",
                code="InvalidRequestBody", values={"PropertyName": extra[0]})
        constraints = TaskConstraints.from_wire(body.get("constraints") or {}, what="constraints")
        with self.ctx.store.begin() as conn:
            job = job_row(conn, job_id)
            check_job_open(job)
            row = task_row(conn, job["key"], task_id)
            spec = loads(row["spec"])
            wire = constraints.to_wire()
            if wire:
                spec["constraints"] = wire
            else:
                spec.pop("constraints", None)
            values: dict[str, Any] = {"spec": dumps(spec), "last_modified": utcnow(),
                                      "etag": new_etag()}
            if row["state"] == TaskState.completed and row["end_time"] is not None:
                keep = constraints.retention_time or timedelta(seconds=DEFAULT_RETENTION_S)
                values["cleanup_at"] = row["end_time"] + keep
            Store.update(conn, tasks, {"seq": row["seq"]}, **values)
        run = self.runs.of_task(job["key"], row["key"])
        if run is not None:
            run.max_retries = (constraints.max_task_retry_count
                               if constraints.max_task_retry_count is not None
                               else job_max_retries(job))
            if constraints.retention_time is not None:
                run.retention_s = constraints.retention_time.total_seconds()

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        """Reactivate a failed task ("Task - Reactivate"): it may run again, retries reset.

        Raises
        ------
        ConflictError
            ``TaskNotCompleted`` for a task that has not completed, or
            ``TaskSucceeded`` for one that succeeded; ``JobCompleted``.
        """
        with self.ctx.store.begin() as conn:
            job = job_row(conn, job_id)
            check_job_open(job)
            row = task_row(conn, job["key"], task_id)
            if row["state"] != TaskState.completed:
                raise ConflictError(f"Task {task_id} is {row['state']}; only a completed task "
                                    "can be reactivated.", code="TaskNotCompleted")
            if row["result"] == TaskExecutionResult.success:
                raise ConflictError(f"Task {task_id} completed successfully and cannot be "
                                    "reactivated.", code="TaskSucceeded")
            now = utcnow()
            Store.update(conn, tasks, {"seq": row["seq"]},
                         state=check(Kind.task, row["state"], TaskState.active),
                         previous_state=TaskState.completed,
                         previous_state_transition_time=row["state_transition_time"],
                         state_transition_time=now, retry_count=0, last_retry_time=None,
                         exit_code=None, result=None, failure_info=None, start_time=None,
                         end_time=None, node_id=None, satisfies=None, cleanup_at=None,
                         last_modified=now, etag=new_etag())
        self.ctx.kick()

    def delete_task(self, job_id: str, task_id: str) -> None:
        """Delete a task ("Task - Delete"); a running task is ended first.

        Then its directory is removed from the nodes where it (or, for a multi-instance
        task, its subtasks) last ran, whatever its ``retentionTime``, as Batch does:
        "When a Task is deleted, all of the files in its directory on the Compute Node
        where it ran are also deleted (regardless of the retention time)".

        Parameters
        ----------
        job_id, task_id
            The task.

        Raises
        ------
        NotFoundError
            ``JobNotFound`` or ``TaskNotFound``.
        """
        with self.ctx.store.begin() as conn:
            job = job_row(conn, job_id)
            row = task_row(conn, job["key"], task_id)
            nodes = {(p, n) for p, n in conn.execute(sa.select(subtasks.c.pool_id,
                                                               subtasks.c.node_id).where(
                subtasks.c.job_key == job["key"], subtasks.c.task_key == row["key"]))}
            conn.execute(tasks.delete().where(tasks.c.seq == row["seq"]))
        if row["node_id"]:
            nodes.add((row["pool_key"] or "", row["node_id"]))
        run = self.runs.of_task(job["key"], row["key"])
        self.ctx.background(self._remove_task_files(run, job["id"], row["id"], nodes))

    async def _remove_task_files(self, run: Run | None, job_id: str, task_id: str,
                                 nodes: set[tuple[str, str]]) -> None:
        """End a deleted task's run, then remove its directory on ``nodes``."""
        if run is not None:
            await self.runs.kill(run)
        rel = task_dir(job_id, task_id)
        await self.files.remove_dirs((pool, node, rel) for pool, node in sorted(nodes))

    def list_subtasks(self, job_id: str, task_id: str) -> list[dict[str, Any]]:
        """List the subtasks of a multi-instance task ("Task - List Subtasks").

        Returns
        -------
        list of dict
            ``SubtaskInformation`` JSON for instances 1..N-1 of the task's
            latest run (empty for an ordinary task or one that has not run).
        """
        with self.ctx.store.read() as conn:
            job = job_row(conn, job_id)
            row = task_row(conn, job["key"], task_id)
            subs = mappings(conn.execute(sa.select(subtasks).where(
                subtasks.c.job_key == job["key"], subtasks.c.task_key == row["key"])
                .order_by(subtasks.c.id)))
        out = []
        tdir = task_dir(job["id"], row["id"])
        prepared = '"jobPreparationTask"' in job["spec"]  # subtasks started preparing
        for r in subs:
            item: dict[str, Any] = {
                "id": r["id"], "state": r["state"],
                "stateTransitionTime": iso(r["state_transition_time"]),
                "nodeInfo": node_info(self.ctx.base_url, r["pool_id"], r["node_id"], tdir),
            }
            if r["start_time"] is not None:  # none while preparing (audit M20)
                item["startTime"] = iso(r["start_time"])
            # Batch omits previousState in the initial state; a subtask that never ran
            # was completed while preparing.
            if r["state"] == SubtaskState.completed:
                item["previousState"] = (SubtaskState.running if r["start_time"] is not None
                                         else SubtaskState.preparing)
            elif r["state"] == SubtaskState.running and prepared:
                item["previousState"] = SubtaskState.preparing
            for k, col in (("endTime", "end_time"),):
                if r[col] is not None:
                    item[k] = iso(r[col])
            _put_outcome(r, item)
            out.append(item)
        return out



def _add_error(task_id: str, exc: HpcbatchError) -> dict[str, Any]:
    """Return a ``TaskAddResult`` for a task that was not added."""
    err = {k: v for k, v in exc.to_wire().items() if k != "odata.metadata"}
    return {"status": "clienterror", "taskId": task_id, "error": err}



class _RowWithSpec(dict[str, Any]):
    """A row mapping where a column left out of the SELECT reads as None."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        super().__init__(row)

    def __missing__(self, key: str) -> Any:
        return None


def _exit_options(conditions: ExitConditions) -> Iterator[tuple[str, ExitOptions]]:
    """Every ``ExitOptions`` of a task's ``exitConditions``, with its property path."""
    for i, mapping in enumerate(conditions.exit_codes or []):
        yield f"exitConditions.exitCodes[{i}].exitOptions", mapping.exit_options
    for i, ranged in enumerate(conditions.exit_code_ranges or []):
        yield f"exitConditions.exitCodeRanges[{i}].exitOptions", ranged.exit_options
    for name, options in (("preProcessingError", conditions.pre_processing_error),
                          ("fileUploadError", conditions.file_upload_error),
                          ("default", conditions.default)):
        if options is not None:
            yield f"exitConditions.{name}", options


def job_max_retries(job: Mapping[str, Any]) -> int:
    """A job row's ``constraints.maxTaskRetryCount`` (0 when it gives none): what its
    tasks without their own are retried up to."""
    value = (loads(job["spec"]).get("constraints") or {}).get("maxTaskRetryCount")
    return int(value) if value is not None else 0


def _put_outcome(row: Mapping[str, Any], into: dict[str, Any]) -> None:
    """Put a task's or subtask's ``exitCode``, ``result`` and ``failureInfo`` (those its
    row holds) into its execution information ``into``."""
    if row["exit_code"] is not None:
        into["exitCode"] = row["exit_code"]
    if row["result"]:
        into["result"] = row["result"]
    if row["failure_info"]:
        into["failureInfo"] = loads(row["failure_info"])
