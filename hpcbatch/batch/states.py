"""Batch's states: every state enum, the transitions hpcbatch allows, the terminal sets.

This module is the one place to review hpcbatch's state machines against the
Batch documents. For each kind of resource whose state the service changes
(task, subtask, job, job schedule, pool, pool allocation, compute node, node
scheduling, start task, job preparation task, job release task) it holds:

``*_INITIAL``
    The states a resource is created in.
``*_TRANSITIONS``
    ``Mapping[State, frozenset[State]]``: from each state, the states it may
    move to. One target per line, each with a comment naming the trigger (the
    operation or event) and the Batch document that allows it.
``*_TERMINAL``
    The states that end a resource's life: it leaves them only by deletion
    (its kind's ``deleting`` state, or the removal of its record) or by an
    operation Batch documents as reopening it (``*_REOPEN``: Task - Reactivate
    takes a failed task from ``completed`` back to ``active``).
``*_REMOVABLE``
    The states in which the service may remove the resource's record
    (Job - Delete finishing, a node leaving its pool, Task - Delete).

The core changes a state only through :func:`transition` (or a kind's
:class:`Machine`), which returns the new state or raises
:class:`IllegalStateTransition`.

Citations
---------
``[2017 l.N]``
    ``reference/azure-batch-docs-2017.txt``, line N (the Azure Batch
    documentation of 2016-2017, which DESIGN.md makes the first authority).
``[REST Op]``
    The Batch REST API (api-version 2025-06-01) operation ``Op``, e.g.
    ``[REST Job - Terminate]``.
``[REST Enum.member]``
    The description of an enum member in that API, e.g.
    ``[REST TaskState.preparing]``.
``hpcbatch:``
    A transition Batch does not document, which hpcbatch performs and keeps
    on purpose (the reason follows).
``MISMATCH Mn``
    A transition hpcbatch performs today although Batch does not allow it;
    ``Mn`` is its entry in the audit of ``docs/architecture.md`` (section
    "States"). The entry is here so that wiring this table in changes no
    behaviour; the line goes when the core is fixed. (Two bugs the tables
    refused on purpose are fixed: a node removed while a reboot drained it was
    re-provisioned, ``leavingpool`` -> ``starting``, M1; a job release task ran
    again at Job - Delete after Job - Terminate, ``completed`` -> ``running``, M6.)
``NOT YET Mn``
    A transition Batch documents that hpcbatch does not perform yet; the
    audit entry ``Mn`` says where the core should.

Same state
----------
Setting the state a resource already has is not a transition:
``transition(kind, s, s)`` returns ``s`` for every state the kind can be in,
terminal ones included, and never raises. Batch records a transition
(``previousState``, ``stateTransitionTime``) only when the state changes: a
running node that starts a second task stays ``running``; terminating a job
that is already terminating changes nothing. Callers write ``previousState``
and ``stateTransitionTime`` only when ``new != current``. Whether an
*operation* on a resource in a given state is allowed (Batch answers some with
409, e.g. Job - Disable on a completed job) is the operation's own check.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

from hpcbatch.batch.errors import ConflictError

# ============================================================================ enums


class TaskState(enum.StrEnum):
    """Batch ``TaskState``: the state of a task (``CloudTask.state``)."""

    active = "active"
    """Queued and able to run, not assigned to a node: a task enters it when it is added,
    when its job is enabled after being disabled, when it awaits a retry after a failed run
    and when it is requeued."""
    preparing = "preparing"
    """Assigned to a node, waiting for the job preparation task to complete there; it moves
    to running if that succeeds, back to active if it fails."""
    running = "running"
    """Running on a node, including task-level preparation (resource files, packages): the
    command line may not have started yet."""
    completed = "completed"
    """No longer eligible to run: it succeeded, or failed with its retries exhausted, or could
    not be launched, or was terminated."""


class SubtaskState(enum.StrEnum):
    """Batch ``SubtaskState``: the state of a multi-instance task's subtask (instances 1..N-1)."""

    preparing = "preparing"
    """Assigned to a node, waiting for the job preparation task to complete there."""
    running = "running"
    """Running on a node (coordination command, then waiting for the primary)."""
    completed = "completed"
    """Ended: the primary exited (which terminates every subtask), or the subtask failed or
    could not be launched."""


class JobState(enum.StrEnum):
    """Batch ``JobState``: the state of a job (``CloudJob.state``)."""

    active = "active"
    """Tasks of the job can be scheduled."""
    disabling = "disabling"
    """Job - Disable was requested; its running tasks are being dealt with per disableTasks."""
    disabled = "disabled"
    """Disabled: no task of the job is running and no new task is scheduled."""
    enabling = "enabling"
    """Job - Enable was requested and is still in progress."""
    terminating = "terminating"
    """About to complete (job manager completed, Job - Terminate, maxWallClockTime,
    onAllTasksComplete, a task's jobAction): running tasks are being ended and job release
    tasks run."""
    completed = "completed"
    """Every task has terminated; the job accepts no more tasks and no further changes."""
    deleting = "deleting"
    """Job - Delete was requested and is in progress (running tasks are being ended)."""


class JobScheduleState(enum.StrEnum):
    """Batch ``JobScheduleState``: the state of a job schedule (``CloudJobSchedule.state``)."""

    active = "active"
    """The schedule creates jobs as it is due."""
    completed = "completed"
    """The schedule has ended: it reached its end time or was terminated."""
    disabled = "disabled"
    """Job Schedule - Disable: no new job is created; an existing active job keeps running."""
    terminating = "terminating"
    """The schedule has no more work or was terminated, and termination is in progress; no new
    job is created."""
    deleting = "deleting"
    """Job Schedule - Delete is in progress: its jobs and tasks are being deleted; the schedule
    goes when they are gone."""


class PoolState(enum.StrEnum):
    """Batch ``PoolState``: the state of a pool (``CloudPool.state``).

    Today's API (2025-06-01) has only these two; the ``upgrading`` state of the
    early (2015-2016) API versions is gone, and hpcbatch does not have it.
    """

    active = "active"
    """The pool can run tasks, subject to the availability of its nodes."""
    deleting = "deleting"
    """Pool - Delete was requested and has not completed."""


class AllocationState(enum.StrEnum):
    """Batch ``AllocationState``: whether a pool is changing size (``CloudPool.allocationState``)."""

    steady = "steady"
    """No change to the number of nodes is in progress."""
    resizing = "resizing"
    """Nodes are being added to or removed from the pool."""
    stopping = "stopping"
    """Pool - Stop Resize was requested and the stop has not completed."""


class ComputeNodeState(enum.StrEnum):
    """Batch ``ComputeNodeState``: the state of a compute node (``ComputeNode.state``).

    hpcbatch never enters ``unknown``, ``preempted``, ``upgradingos``,
    ``deallocated`` or ``deallocating`` (see :data:`NODE_NEVER_ENTERED`): its nodes
    are inventory hosts, not Azure virtual machines, so there are no spot
    evictions, OS upgrades or deallocations, and a node whose worker is lost is
    reported ``unusable``.
    """

    idle = "idle"
    """Not running a task."""
    rebooting = "rebooting"
    """Compute Node - Reboot is in progress (hpcbatch: the node process restarts)."""
    reimaging = "reimaging"
    """Compute Node - Reimage is in progress (hpcbatch: the node's root dir is wiped and the
    node process restarts)."""
    running = "running"
    """Running one or more tasks (the start task does not count)."""
    unusable = "unusable"
    """Cannot run tasks because of errors (hpcbatch: the node process could not start, or its
    worker was lost)."""
    creating = "creating"
    """Batch has the virtual machine but it has not started to join the pool (hpcbatch: the
    inventory host is taken, the node process is not launched yet)."""
    starting = "starting"
    """The Batch service is starting on the machine (hpcbatch: the node process is being
    launched and its Dask worker is connecting)."""
    waitingforstarttask = "waitingforstarttask"
    """The start task runs, waitForSuccess is set and it has not completed."""
    starttaskfailed = "starttaskfailed"
    """The start task failed (retries exhausted) and waitForSuccess is set: no task is
    scheduled to the node."""
    unknown = "unknown"
    """Batch lost contact with the node and does not know its true state. Never entered by
    hpcbatch."""
    leavingpool = "leavingpool"
    """Leaving the pool: Pool - Remove Nodes, a resize or autoscale down, or Pool - Delete."""
    offline = "offline"
    """Not running a task, and scheduling of new tasks to the node is disabled."""
    preempted = "preempted"
    """A spot/low-priority node was preempted. Never entered by hpcbatch."""
    upgradingos = "upgradingos"
    """An OS upgrade is in progress. Never entered by hpcbatch."""
    deallocated = "deallocated"
    """Compute Node - Deallocate completed. Never entered by hpcbatch."""
    deallocating = "deallocating"
    """Compute Node - Deallocate is in progress. Never entered by hpcbatch."""


class SchedulingState(enum.StrEnum):
    """Batch ``SchedulingState``: whether tasks may be scheduled on a node (``schedulingState``)."""

    enabled = "enabled"
    """Tasks can be scheduled on the node. Every node starts enabled."""
    disabled = "disabled"
    """No new task is scheduled on the node; tasks running there may run to completion."""


class StartTaskState(enum.StrEnum):
    """Batch ``StartTaskState``: the state of a node's start task (``startTaskInfo.state``)."""

    running = "running"
    """The start task is running (including its retries)."""
    completed = "completed"
    """It exited with 0, or failed with its retries exhausted, or could not run (e.g. a
    resource file download failed)."""


class JobPreparationTaskState(enum.StrEnum):
    """Batch ``JobPreparationTaskState`` (``jobPreparationTaskExecutionInfo.state``)."""

    running = "running"
    """The job preparation task is running on the node (including its retries)."""
    completed = "completed"
    """It exited with 0, or failed with its retries exhausted, or could not run."""


class JobReleaseTaskState(enum.StrEnum):
    """Batch ``JobReleaseTaskState`` (``jobReleaseTaskExecutionInfo.state``)."""

    running = "running"
    """The job release task is running on the node (including its retries)."""
    completed = "completed"
    """It exited with 0, or failed with its retries exhausted, or could not run."""


class TaskExecutionResult(enum.StrEnum):
    """Batch ``TaskExecutionResult``: how a task's (or start task's) last run ended."""

    success = "success"
    """The task ran successfully."""
    failure = "failure"
    """The task failed: before its process was launched, while it ran, or after it exited."""


class ErrorCategory(enum.StrEnum):
    """Batch ``ErrorCategory``: who caused a failure (``failureInfo.category``)."""

    usererror = "usererror"
    """The user: a misconfiguration, a failing command line."""
    servererror = "servererror"
    """The service: an internal error."""


class CertificateState(enum.StrEnum):
    """Batch ``CertificateState``: the state of a certificate (``Certificate.state``).

    No transition table: Certificate - Delete of a certificate no pool references
    removes its record at once (hpcbatch never shows ``deleting``); one a pool
    references becomes ``deletefailed``, and Certificate - Cancel Deletion makes it
    ``active`` again.
    """

    active = "active"
    """The certificate is available for use in pools."""
    deleting = "deleting"
    """Certificate - Delete is in progress."""
    deletefailed = "deletefailed"
    """Certificate - Delete failed (a pool references it); Certificate - Cancel Deletion
    makes it active again."""


class Kind(enum.StrEnum):
    """The kinds of resource whose state :func:`transition` checks."""

    task = "task"
    subtask = "subtask"
    job = "job"
    jobschedule = "jobschedule"
    pool = "pool"
    allocation = "allocation"
    node = "node"
    scheduling = "scheduling"
    starttask = "starttask"
    jobpreparationtask = "jobpreparationtask"
    jobreleasetask = "jobreleasetask"


_LABELS = {
    Kind.task: "task", Kind.subtask: "subtask", Kind.job: "job",
    Kind.jobschedule: "job schedule", Kind.pool: "pool", Kind.allocation: "pool allocation",
    Kind.node: "compute node", Kind.scheduling: "node scheduling", Kind.starttask: "start task",
    Kind.jobpreparationtask: "job preparation task", Kind.jobreleasetask: "job release task",
}

# ==================================================================== the machine

S = TypeVar("S", bound=enum.StrEnum)


class IllegalStateTransition(ConflictError):
    """A state change the tables of :mod:`hpcbatch.batch.states` do not allow.

    HTTP 409 with Batch's code ``OperationInvalidForCurrentState``: the
    resource's current state forbids the change. The message names the kind,
    both states and the states allowed from the current one.

    Attributes
    ----------
    kind
        The resource kind.
    current, new
        The states (None: creation, or removal of the record).
    allowed
        The states the resource may move to from ``current``.
    """

    code = "OperationInvalidForCurrentState"

    def __init__(self, kind: Kind, current: str | None, new: str | None,
                 allowed: frozenset[Any], message: str) -> None:
        names = ", ".join(sorted(str(s) for s in allowed)) or "none"
        super().__init__(message, values={
            "Kind": str(kind), "CurrentState": str(current), "NewState": str(new),
            "AllowedStates": names})
        self.kind = kind
        self.current = current
        self.new = new
        self.allowed = allowed


def _frozen(table: Mapping[S, frozenset[S]]) -> Mapping[S, frozenset[S]]:
    return MappingProxyType(dict(table))


_EMPTY: frozenset[Any] = frozenset()


@dataclass(frozen=True)
class Machine(Generic[S]):
    """One kind's state machine: its enum, initial states, transitions and terminal set.

    Parameters
    ----------
    kind
        The resource kind.
    states
        The kind's Batch state enum.
    initial
        States the resource is created in.
    transitions
        From each state, the states it may move to (no self-loops: setting the
        current state again is not a transition).
    terminal
        States that end the resource's life (left only for ``removal`` states,
        the kind's deleting state, or a :attr:`reopen` exit).
    removable
        States in which the resource's record may be removed from the store.
    reopen
        Exits from terminal states that Batch documents as reopening the
        resource (Task - Reactivate); every other exit from a terminal state
        is the kind's deleting state.
    """

    kind: Kind
    states: type[S]
    initial: frozenset[S]
    transitions: Mapping[S, frozenset[S]]
    terminal: frozenset[S]
    removable: frozenset[S]
    reopen: Mapping[S, frozenset[S]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def label(self) -> str:
        """The kind in words (``"job schedule"``), for messages."""
        return _LABELS[self.kind]

    @property
    def entered(self) -> frozenset[S]:
        """States hpcbatch can put a resource of this kind in (initial, or a transition's target)."""
        targets = {t for ts in self.transitions.values() for t in ts}
        return frozenset(self.initial | targets)

    @property
    def never_entered(self) -> frozenset[S]:
        """States of the Batch enum that hpcbatch never puts a resource of this kind in."""
        return frozenset(self.states) - self.entered

    def state(self, value: S | str) -> S:
        """Return ``value`` as a member of :attr:`states`.

        Raises
        ------
        IllegalStateTransition
            ``value`` is not one of the enum's wire strings.
        """
        try:
            return self.states(value)
        except ValueError:
            names = ", ".join(s.value for s in self.states)
            raise IllegalStateTransition(
                self.kind, str(value), None, _EMPTY,
                f"{value!r} is not a {self.label} state; {self.label} states are: {names}.",
            ) from None

    def allowed(self, current: S | str) -> frozenset[S]:
        """Return the states a resource in ``current`` may move to (empty for a dead end)."""
        return self.transitions.get(self.state(current), frozenset())

    @overload
    def transition(self, current: S | str | None, new: S | str) -> S: ...

    @overload
    def transition(self, current: S | str, new: None) -> None: ...

    def transition(self, current: S | str | None, new: S | str | None) -> S | None:
        """Check a state change of one resource of this kind; return the new state.

        Parameters
        ----------
        current
            The state the resource is in; None when it is being created.
        new
            The state it moves to; None when its record is being removed.

        Returns
        -------
        state or None
            ``new`` as a member of :attr:`states` (None for a removal). When
            ``new == current`` nothing changes (see the module's "Same state").

        Raises
        ------
        IllegalStateTransition
            The table does not allow the change, a state is not one of the
            kind's, or a resource is in a state hpcbatch never enters.
        TypeError
            Both ``current`` and ``new`` are None.
        """
        if current is None and new is None:
            raise TypeError("transition() needs a current state, a new state, or both")
        if current is None:
            assert new is not None
            target = self.state(new)
            if target not in self.initial:
                raise IllegalStateTransition(
                    self.kind, None, target, self.initial,
                    f"A {self.label} cannot be created in state {target}; it is created in: "
                    + ", ".join(sorted(self.initial)) + ".")
            return target
        source = self.state(current)
        if source in self.never_entered:
            raise IllegalStateTransition(
                self.kind, source, None if new is None else str(new), _EMPTY,
                f"A {self.label} in state {source}: hpcbatch never enters that state.")
        if new is None:
            if source not in self.removable:
                raise IllegalStateTransition(
                    self.kind, source, None, self.removable,
                    f"A {self.label} in state {source} cannot be removed; it is removed only "
                    "from: " + ", ".join(sorted(self.removable)) + ".")
            return None
        target = self.state(new)
        if target == source:
            return target
        allowed = self.transitions.get(source, frozenset())
        if target not in allowed:
            where = ", ".join(sorted(allowed)) if allowed else "no other state"
            raise IllegalStateTransition(
                self.kind, source, target, allowed,
                f"Illegal {self.label} state transition {source} -> {target}; "
                f"from {source} a {self.label} may go to: {where}.")
        return target


# ============================================================================ tasks

_T = TaskState

TASK_INITIAL = frozenset({_T.active})
"""Task - Add, Task - Add Collection; a job manager task is added with its job (Job - Add)."""

TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = _frozen({
    _T.active: frozenset({
        # Dispatched to a node; the job has a job preparation task.
        # [REST TaskState.preparing] (dispatcher.py _mark_started)
        _T.preparing,
        # Dispatched to a node; no job preparation task. [REST TaskState.running]
        _T.running,
        # Task - Terminate of an active task. [REST Task - Terminate: "When the Task has been
        # terminated, it moves to the completed state"; REST TaskState.completed]
        # (Job - Terminate and maxWallClockTime leave active tasks active: D5. [REST Job -
        # Terminate: "they will remain in the active state"])
        _T.completed,
    }),
    _T.preparing: frozenset({
        # The job preparation task succeeded on the node. [REST TaskState.preparing]
        _T.running,
        # The job preparation task failed: back to the queue [REST TaskState.preparing];
        # requeue: node lost, reboot/reimage/remove/disable scheduling with requeue,
        # Job - Disable with requeue, Pool - Delete [2017 l.583, l.619; REST Pool - Delete;
        # REST DisableJobOption.requeue]; service restart (hpcbatch: as a node restart).
        _T.active,
        # Terminated while preparing (Task - Terminate, Job - Terminate, Job - Disable with
        # terminate), or the run could not be launched and has no retry left.
        # [REST TaskState.completed]
        _T.completed,
    }),
    _T.running: frozenset({
        # The run ended: exit code 0, or a failure with no retry left; Task - Terminate,
        # Job - Terminate, Job - Disable with terminate, maxWallClockTime exceeded
        # [2017 l.565]. [REST TaskState.completed]
        _T.completed,
        # Retry after a failed run [2017 l.319; REST TaskState.active: "awaiting a retry
        # after a failed run"]; requeue: node lost, rebooted, reimaged, removed, or scheduling
        # disabled with requeue, Job - Disable with requeue, Pool - Delete [2017 l.583,
        # l.619; REST Pool - Delete]; service restart (hpcbatch: as a node restart).
        _T.active,
    }),
    _T.completed: frozenset({
        # Task - Reactivate of a failed task (result failure), job not completed, terminating
        # or deleting. [REST Task - Reactivate]
        _T.active,
    }),
})

TASK_TERMINAL = frozenset({_T.completed})
TASK_REOPEN: Mapping[TaskState, frozenset[TaskState]] = _frozen({
    _T.completed: frozenset({_T.active}),  # Task - Reactivate [REST Task - Reactivate]
})
TASK_REMOVABLE = frozenset(TaskState)
"""Task - Delete (a running task is ended first), Job - Delete: from any state."""

# ========================================================================= subtasks

_ST = SubtaskState

SUBTASK_INITIAL = frozenset({
    _ST.preparing,  # the same, when the job has a job preparation task [REST SubtaskState]
    _ST.running,    # a multi-instance run starts on its nodes (dispatcher.py _mark_started)
})

SUBTASK_TRANSITIONS: Mapping[SubtaskState, frozenset[SubtaskState]] = _frozen({
    _ST.preparing: frozenset({
        # The job preparation task succeeded on the gang's nodes. [REST SubtaskState.preparing]
        # (dispatcher.py _run_gang)
        _ST.running,
        # Requeued while preparing (the preparation failed, the node was lost, ...) or the
        # gang failed before its instances ran. [REST SubtaskState.completed]
        _ST.completed,
    }),
    _ST.running: frozenset({
        # The primary exited, which terminates every subtask [2017 l.5169]; the subtask
        # failed [2017 l.5171]; the task was terminated or requeued (runs.end_subtasks).
        # [REST SubtaskState.completed]
        _ST.completed,
    }),
    _ST.completed: frozenset(),
})

SUBTASK_TERMINAL = frozenset({_ST.completed})
SUBTASK_REMOVABLE = frozenset(SubtaskState)
"""A new run of the task replaces its previous run's subtasks; Job - Delete, Task - Delete."""

# ============================================================================= jobs

_J = JobState

JOB_INITIAL = frozenset({_J.active})
"""Job - Add; a job schedule creating its job."""

JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = _frozen({
    _J.active: frozenset({
        # Job - Disable [REST Job - Disable: "immediately moves the Job to the disabling
        # state"]; a failed task's exit option jobAction disable [REST JobAction.disable].
        _J.disabling,
        # Job - Terminate [REST Job - Terminate; 2017 l.4096]; maxWallClockTime [2017 l.317];
        # onAllTasksComplete terminatejob [2017 l.322]; the job manager task completed
        # (killJobOnCompletion) [REST JobState.terminating]; a failed task's exit option
        # jobAction terminate [REST JobAction.terminate]; Job Schedule - Terminate.
        _J.terminating,
        # Job - Delete; Job Schedule - Delete. [REST Job - Delete]
        _J.deleting,
    }),
    _J.disabling: frozenset({
        # Every running task was dealt with per disableTasks. [REST Job - Disable]
        _J.disabled,
        # Job - Terminate, maxWallClockTime, onAllTasksComplete, job manager completion,
        # a task's jobAction terminate. [REST Job - Terminate]
        _J.terminating,
        # Job - Delete. [REST Job - Delete]
        _J.deleting,
    }),
    _J.disabled: frozenset({
        # Job - Enable. [REST Job - Enable: "sets a disabled Job to the enabling state"]
        _J.enabling,
        # Job - Terminate, maxWallClockTime, a task's jobAction terminate. [REST Job - Terminate]
        _J.terminating,
        # Job - Delete. [REST Job - Delete]
        _J.deleting,
    }),
    _J.enabling: frozenset({
        # The enable completed (in the same transaction: D4); scheduling resumes.
        # [REST Job - Enable]
        _J.active,
        # Job - Terminate, maxWallClockTime. [REST Job - Terminate]
        _J.terminating,
        # Job - Delete. [REST Job - Delete]
        _J.deleting,
    }),
    _J.terminating: frozenset({
        # Running tasks ended and job release tasks ran. [REST Job - Terminate; 2017 l.4096]
        _J.completed,
        # Job - Delete. [REST Job - Delete]
        _J.deleting,
    }),
    _J.completed: frozenset({
        # Job - Delete (the release task does not run again [2017 l.4100]). [REST Job - Delete]
        _J.deleting,
    }),
    _J.deleting: frozenset(),
})

JOB_TERMINAL = frozenset({_J.completed, _J.deleting})
JOB_REMOVABLE = frozenset({_J.deleting})
"""The job's record goes when Job - Delete has ended its running tasks and run release tasks."""

# ==================================================================== job schedules

_JS = JobScheduleState

JOB_SCHEDULE_INITIAL = frozenset({_JS.active})
"""Job Schedule - Add."""

JOB_SCHEDULE_TRANSITIONS: Mapping[JobScheduleState, frozenset[JobScheduleState]] = _frozen({
    _JS.active: frozenset({
        # Job Schedule - Disable. [REST JobScheduleState.disabled]
        _JS.disabled,
        # Job Schedule - Terminate. [REST JobScheduleState.terminating]
        _JS.terminating,
        # The schedule reached its end time (doNotRunAfter) or has no run left.
        # [REST JobScheduleState.completed: "reaching its end time"] (job_schedules.py _tick_one)
        _JS.completed,
        # Job Schedule - Delete. [REST JobScheduleState.deleting]
        _JS.deleting,
    }),
    _JS.disabled: frozenset({
        # Job Schedule - Enable. [REST Job Schedule - Enable]
        _JS.active,
        # Job Schedule - Terminate. [REST JobScheduleState.terminating]
        _JS.terminating,
        # Job Schedule - Delete. [REST JobScheduleState.deleting]
        _JS.deleting,
    }),
    _JS.terminating: frozenset({
        # Termination done: its jobs completed. [REST JobScheduleState.completed]
        _JS.completed,
        # Job Schedule - Delete. [REST JobScheduleState.deleting]
        _JS.deleting,
    }),
    _JS.completed: frozenset({
        # Job Schedule - Delete. [REST JobScheduleState.deleting]
        _JS.deleting,
    }),
    _JS.deleting: frozenset(),
})

JOB_SCHEDULE_TERMINAL = frozenset({_JS.completed, _JS.deleting})
JOB_SCHEDULE_REMOVABLE = frozenset({
    _JS.deleting,     # its jobs and tasks are deleted [REST JobScheduleState.deleting]
})

# ============================================================================ pools

_P = PoolState

POOL_INITIAL = frozenset({_P.active})
"""Pool - Add."""

POOL_TRANSITIONS: Mapping[PoolState, frozenset[PoolState]] = _frozen({
    _P.active: frozenset({
        # Pool - Delete. [REST Pool - Delete: "the Pool state is set to deleting"]
        _P.deleting,
    }),
    _P.deleting: frozenset(),
})

POOL_TERMINAL = frozenset({_P.deleting})
POOL_REMOVABLE = frozenset({_P.deleting})
"""The pool's record goes when its nodes have left and their hosts are given back."""

# ================================================================= pool allocation

_A = AllocationState

ALLOCATION_INITIAL = frozenset({
    _A.steady,    # a pool created with no node to add [REST AllocationState.steady]
    _A.resizing,  # a pool created with nodes to add (pools.py add_pool)
})

ALLOCATION_TRANSITIONS: Mapping[AllocationState, frozenset[AllocationState]] = _frozen({
    _A.steady: frozenset({
        # Pool - Resize, Pool - Remove Nodes [REST: "the allocation state changes from steady
        # to resizing"]; an autoscale evaluation that changes the target; Pool - Delete
        # (resizes to zero nodes) [REST Pool - Delete].
        _A.resizing,
    }),
    _A.resizing: frozenset({
        # Every node added has joined and every node removed has left. [REST AllocationState]
        _A.steady,
        # Pool - Stop Resize. [REST Pool - Stop Resize: "first to stopping and then to
        # steady"]
        _A.stopping,
    }),
    _A.stopping: frozenset({
        # The stop completed. [REST Pool - Stop Resize]
        _A.steady,
    }),
})

ALLOCATION_TERMINAL: frozenset[AllocationState] = frozenset()
ALLOCATION_REMOVABLE = frozenset(AllocationState)
"""The allocation state goes with its pool."""

# ============================================================================ nodes

_N = ComputeNodeState

NODE_INITIAL = frozenset({_N.creating})
"""An inventory host taken for the pool (resize, autoscale, Pool - Add). A service restart
creates no node: it restores each one in its stored state and restarts a node that had
joined as a reboot does (``rebooting`` -> ``starting``; pool_manager.py ``recover``)."""

NODE_TRANSITIONS: Mapping[ComputeNodeState, frozenset[ComputeNodeState]] = _frozen({
    _N.creating: frozenset({
        # The node process is being launched. [REST ComputeNodeState.starting]
        _N.starting,
        # The pool shrank or was deleted before the node started. [REST ComputeNodeState.
        # leavingpool]
        _N.leavingpool,
    }),
    _N.starting: frozenset({
        # The worker connected; the start task runs and waitForSuccess is true or
        # omitted (Batch's default). [REST ComputeNodeState.waitingforstarttask; 2017 l.389]
        _N.waitingforstarttask,
        # The worker connected; no start task, or one with waitForSuccess false.
        # [REST ComputeNodeState.idle; REST StartTask.waitForSuccess]
        _N.idle,
        # The node process could not start or its worker did not connect (NodeConnectionFailed,
        # NodeStartFailed). [REST ComputeNodeState.unusable; 2017 l.2633]
        _N.unusable,
        # The pool shrank or was deleted. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.waitingforstarttask: frozenset({
        # The start task succeeded. [REST ComputeNodeState.waitingforstarttask]
        _N.idle,
        # The start task failed with its retries exhausted. [REST ComputeNodeState.
        # starttaskfailed; 2017 l.391]
        _N.starttaskfailed,
        # The start task could not be run, or the worker was lost. [REST ComputeNodeState.
        # unusable]
        _N.unusable,
        # hpcbatch: Compute Node - Reboot/Reimage of a node whose start task hangs (REST allows
        # only idle and running; the only other way out is removal).
        _N.rebooting,
        _N.reimaging,
        # Pool - Remove Nodes, resize down, Pool - Delete. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.idle: frozenset({
        # A task was dispatched to the node. [REST ComputeNodeState.running]
        _N.running,
        # Compute Node - Disable Scheduling of an idle node (pool_manager.py settle). [REST
        # ComputeNodeState.offline; 2017 l.615: "This effectively takes the node offline"]
        _N.offline,
        # Compute Node - Reboot, Compute Node - Reimage. [REST: "only if it is in an idle or
        # running state"]
        _N.rebooting,
        _N.reimaging,
        # The worker was lost (NodeLost), or a start task without waitForSuccess could not be
        # run. [REST ComputeNodeState.unusable]
        _N.unusable,
        # Pool - Remove Nodes, resize down, Pool - Delete. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.running: frozenset({
        # Its last task ended. [REST ComputeNodeState.idle]
        _N.idle,
        # Its last task ended while scheduling is disabled. [REST ComputeNodeState.offline]
        _N.offline,
        # Compute Node - Reboot, Compute Node - Reimage (running tasks requeued, terminated
        # or waited for per nodeRebootOption). [REST; 2017 l.619]
        _N.rebooting,
        _N.reimaging,
        # The worker was lost (NodeLost); its tasks are requeued. [REST ComputeNodeState.
        # unusable; 2017 l.583]
        _N.unusable,
        # Pool - Remove Nodes, resize down, Pool - Delete. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.offline: frozenset({
        # Compute Node - Enable Scheduling. [2017 l.615: "bring the node back online by
        # enabling task scheduling"]
        _N.idle,
        # Reboot, reimage or removal of an offline node [2017 l.615: "or perform one of the
        # other actions discussed earlier"]; the worker was lost.
        _N.rebooting,
        _N.reimaging,
        _N.unusable,
        _N.leavingpool,
    }),
    _N.starttaskfailed: frozenset({
        # Compute Node - Reboot/Reimage runs the start task again: the remedy after fixing
        # the pool's start task [2017 l.393] (hpcbatch: REST allows only idle and running).
        _N.rebooting,
        _N.reimaging,
        # The worker was lost. [REST ComputeNodeState.unusable]
        _N.unusable,
        # Pool - Remove Nodes, resize down, Pool - Delete. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.unusable: frozenset({
        # Compute Node - Reboot/Reimage. [2017 l.2633: "you should restart the node"]
        _N.rebooting,
        _N.reimaging,
        # Pool - Remove Nodes, resize down, Pool - Delete. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.rebooting: frozenset({
        # The node process restarts; the start task runs again. [2017 l.375, l.601]
        _N.starting,
        # The worker was lost while the node's tasks were being drained. [REST unusable]
        _N.unusable,
        # The pool shrank or was deleted meanwhile. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.reimaging: frozenset({
        # The root dir was wiped; the node process restarts and the start task runs again.
        # [2017 l.607]
        _N.starting,
        # The worker was lost while the node's tasks were being drained. [REST unusable]
        _N.unusable,
        # The pool shrank or was deleted meanwhile. [REST ComputeNodeState.leavingpool]
        _N.leavingpool,
    }),
    _N.leavingpool: frozenset(),
})

NODE_TERMINAL = frozenset({_N.leavingpool})
NODE_REMOVABLE = frozenset({_N.leavingpool})
"""The node's record goes when its worker is closed and its host given back."""

# =================================================================== node scheduling

_SS = SchedulingState

SCHEDULING_INITIAL = frozenset({_SS.enabled})
"""Every node starts with scheduling enabled [REST SchedulingState.disabled]."""

SCHEDULING_TRANSITIONS: Mapping[SchedulingState, frozenset[SchedulingState]] = _frozen({
    _SS.enabled: frozenset({
        # Compute Node - Disable Scheduling [REST; 2017 l.613]; Pool - Remove Nodes and a
        # shrinking pool stop scheduling on the nodes they take out (hpcbatch).
        _SS.disabled,
    }),
    _SS.disabled: frozenset({
        # Compute Node - Enable Scheduling [2017 l.615]; Compute Node - Reboot/Reimage
        # [2017 l.2633: "Restarting the node will also enable task scheduling again"].
        _SS.enabled,
    }),
})

SCHEDULING_TERMINAL: frozenset[SchedulingState] = frozenset()
SCHEDULING_REMOVABLE = frozenset(SchedulingState)

# ======================================== start, job preparation and job release tasks

START_TASK_INITIAL = frozenset({StartTaskState.running})
"""The node's worker connected (and at each node restart); retries stay ``running``."""

START_TASK_TRANSITIONS: Mapping[StartTaskState, frozenset[StartTaskState]] = _frozen({
    StartTaskState.running: frozenset({
        # It exited 0, or failed with its retries exhausted, or could not run.
        # [REST StartTaskState.completed]
        StartTaskState.completed,
    }),
    StartTaskState.completed: frozenset({
        # The node rebooted or was reimaged: the start task runs again. [2017 l.375]
        StartTaskState.running,
    }),
})

START_TASK_TERMINAL = frozenset({StartTaskState.completed})
START_TASK_REOPEN: Mapping[StartTaskState, frozenset[StartTaskState]] = _frozen({
    StartTaskState.completed: frozenset({StartTaskState.running}),  # node restart [2017 l.375]
})
START_TASK_REMOVABLE = frozenset(StartTaskState)
"""A node restart clears the start task's information before running it again."""

JOB_PREPARATION_TASK_INITIAL = frozenset({JobPreparationTaskState.running})
"""The first task of the job dispatched to the node; retries stay ``running``."""

JOB_PREPARATION_TASK_TRANSITIONS: Mapping[
        JobPreparationTaskState, frozenset[JobPreparationTaskState]] = _frozen({
    JobPreparationTaskState.running: frozenset({
        # It exited 0, or failed with its retries exhausted, or could not run.
        # [REST JobPreparationTaskState.completed]
        JobPreparationTaskState.completed,
    }),
    JobPreparationTaskState.completed: frozenset({
        # The node restarted: it runs again (unless rerunOnNodeRebootAfterSuccess is false
        # and it succeeded). [2017 l.4086]
        JobPreparationTaskState.running,
    }),
})

JOB_PREPARATION_TASK_TERMINAL = frozenset({JobPreparationTaskState.completed})
JOB_PREPARATION_TASK_REOPEN: Mapping[
        JobPreparationTaskState, frozenset[JobPreparationTaskState]] = _frozen({
    JobPreparationTaskState.completed: frozenset({JobPreparationTaskState.running}),
})
JOB_PREPARATION_TASK_REMOVABLE = frozenset(JobPreparationTaskState)
"""Its record goes with the job."""

JOB_RELEASE_TASK_INITIAL = frozenset({JobReleaseTaskState.running})
"""Job - Terminate or Job - Delete, on every node where the job preparation task ran."""

JOB_RELEASE_TASK_TRANSITIONS: Mapping[
        JobReleaseTaskState, frozenset[JobReleaseTaskState]] = _frozen({
    JobReleaseTaskState.running: frozenset({
        # It exited 0, or failed with its retries exhausted, or could not run.
        # [REST JobReleaseTaskState.completed]
        JobReleaseTaskState.completed,
    }),
    # Never runs twice: not again on Job - Delete after Job - Terminate [2017 l.4100].
    JobReleaseTaskState.completed: frozenset(),
})

JOB_RELEASE_TASK_TERMINAL = frozenset({JobReleaseTaskState.completed})
JOB_RELEASE_TASK_REMOVABLE = frozenset(JobReleaseTaskState)
"""Its record goes with the job."""

# ======================================================================= machines

TASK: Machine[TaskState] = Machine(
    Kind.task, TaskState, TASK_INITIAL, TASK_TRANSITIONS, TASK_TERMINAL, TASK_REMOVABLE,
    TASK_REOPEN)
SUBTASK: Machine[SubtaskState] = Machine(
    Kind.subtask, SubtaskState, SUBTASK_INITIAL, SUBTASK_TRANSITIONS, SUBTASK_TERMINAL,
    SUBTASK_REMOVABLE)
JOB: Machine[JobState] = Machine(
    Kind.job, JobState, JOB_INITIAL, JOB_TRANSITIONS, JOB_TERMINAL, JOB_REMOVABLE)
JOB_SCHEDULE: Machine[JobScheduleState] = Machine(
    Kind.jobschedule, JobScheduleState, JOB_SCHEDULE_INITIAL, JOB_SCHEDULE_TRANSITIONS,
    JOB_SCHEDULE_TERMINAL, JOB_SCHEDULE_REMOVABLE)
POOL: Machine[PoolState] = Machine(
    Kind.pool, PoolState, POOL_INITIAL, POOL_TRANSITIONS, POOL_TERMINAL, POOL_REMOVABLE)
ALLOCATION: Machine[AllocationState] = Machine(
    Kind.allocation, AllocationState, ALLOCATION_INITIAL, ALLOCATION_TRANSITIONS,
    ALLOCATION_TERMINAL, ALLOCATION_REMOVABLE)
NODE: Machine[ComputeNodeState] = Machine(
    Kind.node, ComputeNodeState, NODE_INITIAL, NODE_TRANSITIONS, NODE_TERMINAL, NODE_REMOVABLE)
SCHEDULING: Machine[SchedulingState] = Machine(
    Kind.scheduling, SchedulingState, SCHEDULING_INITIAL, SCHEDULING_TRANSITIONS,
    SCHEDULING_TERMINAL, SCHEDULING_REMOVABLE)
START_TASK: Machine[StartTaskState] = Machine(
    Kind.starttask, StartTaskState, START_TASK_INITIAL, START_TASK_TRANSITIONS,
    START_TASK_TERMINAL, START_TASK_REMOVABLE, START_TASK_REOPEN)
JOB_PREPARATION_TASK: Machine[JobPreparationTaskState] = Machine(
    Kind.jobpreparationtask, JobPreparationTaskState, JOB_PREPARATION_TASK_INITIAL,
    JOB_PREPARATION_TASK_TRANSITIONS, JOB_PREPARATION_TASK_TERMINAL,
    JOB_PREPARATION_TASK_REMOVABLE, JOB_PREPARATION_TASK_REOPEN)
JOB_RELEASE_TASK: Machine[JobReleaseTaskState] = Machine(
    Kind.jobreleasetask, JobReleaseTaskState, JOB_RELEASE_TASK_INITIAL,
    JOB_RELEASE_TASK_TRANSITIONS, JOB_RELEASE_TASK_TERMINAL, JOB_RELEASE_TASK_REMOVABLE)

MACHINES: Mapping[Kind, Machine[Any]] = MappingProxyType({m.kind: m for m in (
    TASK, SUBTASK, JOB, JOB_SCHEDULE, POOL, ALLOCATION, NODE, SCHEDULING, START_TASK,
    JOB_PREPARATION_TASK, JOB_RELEASE_TASK)})
"""Every kind's machine, by kind."""


@overload
def transition(kind: Kind | str, current: str | None, new: str) -> enum.StrEnum: ...


@overload
def transition(kind: Kind | str, current: str, new: None) -> None: ...


def transition(kind: Kind | str, current: str | None, new: str | None) -> enum.StrEnum | None:
    """Check one state change of a Batch resource against its kind's table; return the new state.

    The one entry point through which the service core changes a state. Implements
    the state machines of the Batch documents cited in this module's tables.

    Parameters
    ----------
    kind
        The resource kind (:class:`Kind` or its value: ``"task"``, ``"job"``,
        ``"node"``, ...).
    current
        The state the resource is in (enum member or wire string); None when
        the resource is being created.
    new
        The state it moves to; None when its record is being removed.

    Returns
    -------
    enum.StrEnum or None
        ``new`` as a member of the kind's enum (it compares equal to its wire
        string); None for a removal. ``new == current`` is not a transition and
        is always accepted (see the module's "Same state").

    Raises
    ------
    IllegalStateTransition
        The kind's table does not allow the change; the message names the kind,
        both states and the states allowed from ``current``.
    ValueError
        ``kind`` is not a :class:`Kind`.

    Examples
    --------
    >>> transition("task", "running", "active")  # a retry
    <TaskState.active: 'active'>
    >>> transition("job", "completed", "active")
    Traceback (most recent call last):
    ...
    hpcbatch.batch.states.IllegalStateTransition: Illegal job state transition completed -> \
active; from completed a job may go to: deleting.
    """
    machine: Machine[Any] = MACHINES[Kind(kind)]
    state: enum.StrEnum | None = machine.transition(current, new)
    return state


# ================================================================ convenience sets

TASK_HOLDS_NODE = frozenset({_T.preparing, _T.running})
"""A task that holds task slots on a node (its run is dispatched); Batch counts both as running."""

TASK_INCOMPLETE = frozenset(TaskState) - TASK_TERMINAL
"""active, preparing, running: a task that keeps onAllTasksComplete from firing."""

JOB_SCHEDULABLE = frozenset({_J.active})
"""A job whose tasks may start [REST JobState.active]."""

JOB_OPEN_FOR_TASKS = frozenset({_J.active, _J.disabling, _J.disabled, _J.enabling})
"""A job that accepts Task - Add and Task - Reactivate, whose tasks' completions may act on
it (onAllTasksComplete, jobAction), and whose maxWallClockTime runs [REST Task - Reactivate:
fails "if the Job has completed (or is terminating or deleting)"]."""

JOB_CLOSED = frozenset(JobState) - JOB_OPEN_FOR_TASKS
"""terminating, completed, deleting: a job that is ending or ended."""

JOB_LIVE = frozenset(JobState) - JOB_TERMINAL
"""Not completed or deleting: a job whose tasks count in autoscale's task metrics."""

JOB_COUNTS_TOWARD_QUOTA = frozenset(JobState) - {_J.completed}
"""A job that counts toward the account's "active jobs and job schedules" quota."""

JOB_SCHEDULE_CREATES_JOBS = frozenset({_JS.active})
"""A job schedule that creates jobs when due [REST JobScheduleState.active]."""

JOB_SCHEDULE_CLOSED = frozenset({_JS.terminating, _JS.completed, _JS.deleting})
"""A job schedule that is ending or ended: Job Schedule - Terminate has nothing to do."""

JOB_SCHEDULE_COUNTS_TOWARD_QUOTA = frozenset(JobScheduleState) - {_JS.completed}
"""A job schedule that counts toward the "active jobs and job schedules" quota."""

NODE_ACCEPTS_TASKS = frozenset({_N.idle, _N.running})
"""A node that may be given a task (when its scheduling is enabled and it has free slots)."""

NODE_JOINING = frozenset({_N.creating, _N.starting})
"""A node on its way into the pool (its worker is not ready yet)."""

NODE_JOINING_OR_LEAVING = NODE_JOINING | {_N.leavingpool}
"""A node with no worker to watch: joining or leaving the pool (a restarting node is not
leaving: its pool stays steady, M15)."""

NODE_IN_TRANSITION = frozenset({_N.creating, _N.starting, _N.rebooting, _N.reimaging,
                                _N.leavingpool})
"""A node the service is starting, restarting or removing: Compute Node - Reboot and
- Reimage answer NodeNotReady."""

NODE_FAILED = frozenset({_N.starttaskfailed, _N.unusable})
"""A node that cannot run tasks until it is restarted: the first to give back on shrink."""

NODE_TRANSIENT = frozenset({_N.creating, _N.starting, _N.waitingforstarttask, _N.rebooting,
                            _N.reimaging, _N.leavingpool, _N.upgradingos, _N.deallocating})
"""A node state the service leaves by itself: a pool whose nodes are all out of these has
settled (the SDK's wait_for_pool)."""

NODE_NEVER_ENTERED = NODE.never_entered
"""unknown, preempted, upgradingos, deallocated, deallocating: Batch node states of Azure
virtual machines that hpcbatch's inventory hosts never take."""
