"""Batch's state machines (:mod:`hpcbatch.batch.states`): enums, tables, the one entry point.

Pure tests: no service, no nodes. They check that the enums carry Batch's wire
strings (against the REST API's enum lists and the wire models, OData and
REST filters that use them), that each table mentions only its enum's
members and has no way out of a terminal state but the documented ones, that
every allowed transition is accepted and every other one refused with a
message naming kind, states and allowed targets, and that
``docs/architecture.md`` lists exactly the tables' transitions.
"""

from __future__ import annotations

import doctest
import enum
import itertools
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hpcbatch.batch import models, states
from hpcbatch.batch.errors import ConflictError, HpcbatchError
from hpcbatch.batch.states import (
    MACHINES,
    AllocationState,
    CertificateState,
    ComputeNodeState,
    ErrorCategory,
    IllegalStateTransition,
    JobPreparationTaskState,
    JobReleaseTaskState,
    JobScheduleState,
    JobState,
    Kind,
    Machine,
    PoolState,
    SchedulingState,
    StartTaskState,
    SubtaskState,
    TaskExecutionResult,
    TaskState,
    transition,
)

# ------------------------------------------------------------------ wire strings

REST_ENUMS: dict[type[enum.StrEnum], set[str]] = {
    # The Batch REST API (2025-06-01) enum lists, member for member.
    TaskState: {"active", "preparing", "running", "completed"},
    SubtaskState: {"preparing", "running", "completed"},
    JobState: {"active", "disabling", "disabled", "enabling", "terminating", "completed",
               "deleting"},
    JobScheduleState: {"active", "completed", "disabled", "terminating", "deleting"},
    PoolState: {"active", "deleting"},
    AllocationState: {"steady", "resizing", "stopping"},
    ComputeNodeState: {"idle", "rebooting", "reimaging", "running", "unusable", "creating",
                       "starting", "waitingforstarttask", "starttaskfailed", "unknown",
                       "leavingpool", "offline", "preempted", "upgradingos", "deallocated",
                       "deallocating"},
    SchedulingState: {"enabled", "disabled"},
    StartTaskState: {"running", "completed"},
    JobPreparationTaskState: {"running", "completed"},
    JobReleaseTaskState: {"running", "completed"},
    TaskExecutionResult: {"success", "failure"},
    ErrorCategory: {"usererror", "servererror"},
    CertificateState: {"active", "deleting", "deletefailed"},
}


@pytest.mark.parametrize("cls", list(REST_ENUMS), ids=lambda c: c.__name__)
def test_enum_values_are_batch_wire_strings(cls: type[enum.StrEnum]) -> None:
    assert {m.value for m in cls} == REST_ENUMS[cls]
    for member in cls:
        assert member == member.value and str(member) == member.value
        assert member.name == member.value  # attribute names are the wire strings too
        assert cls(member.value) is member


def test_pool_state_has_no_upgrading() -> None:
    assert "upgrading" not in {s.value for s in PoolState}
    assert "upgrading" in (PoolState.__doc__ or "")


def _literal_values(annotation: Any) -> set[str]:
    """The strings of a ``Literal[...]`` (or ``Literal[...] | None``) annotation."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return set().union(*(_literal_values(a) for a in typing.get_args(annotation)))


def test_wire_models_use_these_enums() -> None:
    for name in ("TaskState", "JobState", "PoolState", "AllocationState",
                 "TaskExecutionResult"):
        assert getattr(models, name) is getattr(states, name)
    assert models.Task.model_fields["state"].annotation is TaskState
    assert models.Job.model_fields["state"].annotation is JobState
    assert models.Pool.model_fields["state"].annotation is PoolState
    assert models.Pool.model_fields["allocation_state"].annotation is AllocationState
    assert models.ComputeNode.model_fields["state"].annotation is ComputeNodeState
    assert models.TaskInformation.model_fields["task_state"].annotation is TaskState
    # Properties still typed as Literal must hold exactly the enum's strings.
    literal: dict[tuple[type[BaseModel], str], type[enum.StrEnum]] = {
        (models.StartTaskInformation, "state"): StartTaskState,
        (models.ComputeNode, "scheduling_state"): SchedulingState,
        (models.TaskFailureInformation, "category"): ErrorCategory,
        (models.SubtaskInformation, "state"): SubtaskState,
        (models.SubtaskInformation, "previous_state"): SubtaskState,
    }
    for (model, field), cls in literal.items():
        assert _literal_values(model.model_fields[field].annotation) == set(cls), (model, field)


def test_wire_models_read_and_write_the_strings() -> None:
    task = models.Task.from_wire({"id": "t", "commandLine": "x", "state": "preparing"})
    assert task.state == TaskState.preparing
    assert task.to_wire()["state"] == "preparing"
    node = models.ComputeNode.model_validate({"id": "n1", "state": "starttaskfailed"})
    assert node.to_wire()["state"] == "starttaskfailed"
    with pytest.raises(Exception, match="state"):
        models.ComputeNode.model_validate({"id": "n1", "state": "upgrading"})


def _enum_values(prop: Any) -> set[str]:
    """The allowed values of an OData property (pure, or bound to a store column)."""
    return set(prop.values if hasattr(prop, "values") else prop.property.values)


def test_filters_accept_exactly_the_enum_values() -> None:
    from hpcbatch.api import filters
    from hpcbatch.batch import odata

    pairs = [
        (odata.TASK_PROPERTIES["state"], TaskState),
        (odata.TASK_PROPERTIES["previousState"], TaskState),
        (odata.TASK_PROPERTIES["executionInfo/result"], TaskExecutionResult),
        (odata.JOB_PROPERTIES["state"], JobState),
        (odata.POOL_PROPERTIES["state"], PoolState),
        (odata.POOL_PROPERTIES["allocationState"], AllocationState),
        (filters.NODE_FILTER.properties["state"], ComputeNodeState),
        (filters.NODE_FILTER.properties["schedulingState"], SchedulingState),
        (filters.NODE_FILTER.properties["startTaskInfo/state"], StartTaskState),
        (filters.JOB_SCHEDULE_FILTER.properties["state"], JobScheduleState),
        (filters.SCHEDULE_JOB_FILTER.properties["state"], JobState),
    ]
    for prop, cls in pairs:
        assert _enum_values(prop) == {m.value for m in cls}, (prop, cls)


# -------------------------------------------------------------------- the tables

ALL = list(MACHINES.values())


def _ids(m: Machine[Any]) -> str:
    return str(m.kind)


def test_every_kind_has_a_machine() -> None:
    assert set(MACHINES) == set(Kind)
    for kind, m in MACHINES.items():
        assert m.kind is kind


@pytest.mark.parametrize("m", ALL, ids=_ids)
def test_tables_mention_only_members_of_their_enum(m: Machine[Any]) -> None:
    cls = m.states
    for group in (m.initial, m.terminal, m.removable):
        assert all(isinstance(s, cls) for s in group)
    for source, targets in m.transitions.items():
        assert isinstance(source, cls)
        assert isinstance(targets, frozenset)
        assert all(isinstance(t, cls) for t in targets), source
        assert source not in targets, f"{source} -> {source} is not a transition"
    for source, targets in m.reopen.items():
        assert isinstance(source, cls) and all(isinstance(t, cls) for t in targets)
    assert m.initial, "a resource must be created in some state"


@pytest.mark.parametrize("m", ALL, ids=_ids)
def test_every_state_hpcbatch_enters_has_its_row(m: Machine[Any]) -> None:
    # A reviewer reads every way out of every state in one place, dead ends included.
    assert set(m.transitions) == set(m.entered)
    assert m.terminal <= m.entered and m.removable <= m.entered


@pytest.mark.parametrize("m", ALL, ids=_ids)
def test_terminal_states_have_no_way_out_but_deletion_and_reopening(m: Machine[Any]) -> None:
    deleting = {s for s in m.states if s.value == "deleting"}
    for state in m.terminal:
        exits = m.transitions[state]
        assert exits <= deleting | m.reopen.get(state, frozenset()), (state, exits)
    assert set(m.reopen) <= m.terminal
    for state, targets in m.reopen.items():
        assert targets <= m.transitions[state]


def test_documented_reopenings() -> None:
    assert states.TASK.reopen == {TaskState.completed: {TaskState.active}}  # Task - Reactivate
    assert states.JOB.reopen == {} and states.POOL.reopen == {} and states.NODE.reopen == {}
    assert states.JOB.terminal == {JobState.completed, JobState.deleting}
    assert states.NODE.terminal == {ComputeNodeState.leavingpool}
    assert states.JOB_RELEASE_TASK.transitions[JobReleaseTaskState.completed] == set()


def test_states_hpcbatch_never_enters() -> None:
    assert states.NODE_NEVER_ENTERED == {
        ComputeNodeState.unknown, ComputeNodeState.preempted, ComputeNodeState.upgradingos,
        ComputeNodeState.deallocated, ComputeNodeState.deallocating}
    for m in ALL:
        if m is not states.NODE:
            assert m.never_entered == set(), m.kind


# ----------------------------------------------------------------- transitions

EDGES = [(m, a, b) for m in ALL for a, targets in m.transitions.items() for b in sorted(targets)]


@pytest.mark.parametrize("m,current,new", EDGES,
                         ids=[f"{m.kind}:{a}->{b}" for m, a, b in EDGES])
def test_every_allowed_transition_is_accepted(m: Machine[Any], current: Any, new: Any) -> None:
    out = transition(m.kind, current.value, new.value)  # the strings the store holds
    assert out is new and out == new.value
    assert m.transition(current, new) is new


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_other_transition_is_refused(data: st.DataObject) -> None:
    m = data.draw(st.sampled_from(ALL))
    current = data.draw(st.sampled_from(sorted(m.entered)))
    new = data.draw(st.sampled_from(sorted(m.states)))
    allowed = m.transitions[current]
    if new == current or new in allowed:
        assert transition(m.kind, current, new) is new
    else:
        with pytest.raises(IllegalStateTransition) as info:
            transition(m.kind, current, new)
        err = info.value
        assert m.label in err.message
        assert f"{current} -> {new}" in err.message
        for target in allowed:
            assert target.value in err.message
        assert err.allowed == allowed and err.current == current and err.new == new


@pytest.mark.parametrize("kind,current,new,allowed", [
    ("job", "completed", "active", "deleting"),
    ("job", "deleting", "active", "no other state"),
    ("job", "active", "completed", "deleting, disabling, terminating"),
    ("task", "completed", "running", "active"),
    ("task", "active", "active", None),
    ("pool", "deleting", "active", "no other state"),
    ("node", "leavingpool", "starting", "no other state"),
    ("node", "creating", "idle", "leavingpool, starting"),
    ("jobschedule", "completed", "active", "deleting"),
    ("subtask", "completed", "running", "no other state"),
    ("jobreleasetask", "completed", "running", "no other state"),
])
def test_sample_of_forbidden_transitions(kind: str, current: str, new: str,
                                         allowed: str | None) -> None:
    if allowed is None:  # same state: not a transition
        assert transition(kind, current, new) == new
        return
    label = MACHINES[Kind(kind)].label
    with pytest.raises(IllegalStateTransition) as info:
        transition(kind, current, new)
    assert info.value.message == (f"Illegal {label} state transition {current} -> {new}; "
                                  f"from {current} a {label} may go to: {allowed}.")


def test_the_error_is_a_batch_conflict() -> None:
    with pytest.raises(IllegalStateTransition) as info:
        transition(Kind.job, JobState.completed, JobState.disabling)
    err = info.value
    assert isinstance(err, ConflictError) and isinstance(err, HpcbatchError)
    assert err.status == 409 and err.code == "OperationInvalidForCurrentState"
    wire = err.to_wire()
    assert wire["code"] == "OperationInvalidForCurrentState"
    assert {"key": "AllowedStates", "value": "deleting"} in wire["values"]  # type: ignore[operator]
    assert err.kind is Kind.job


@pytest.mark.parametrize("m", ALL, ids=_ids)
def test_same_state_is_not_a_transition(m: Machine[Any]) -> None:
    for state in m.entered:  # terminal states included
        assert m.transition(state, state) is state


def test_a_node_running_a_second_task_stays_running() -> None:
    assert transition("node", "running", "running") is ComputeNodeState.running


@pytest.mark.parametrize("m", ALL, ids=_ids)
def test_creation_and_removal(m: Machine[Any]) -> None:
    for state in m.states:
        if state in m.initial:
            assert m.transition(None, state) is state
        else:
            with pytest.raises(IllegalStateTransition, match="cannot be created in state"):
                m.transition(None, state)
        if state in m.removable:
            assert m.transition(state, None) is None
        elif state in m.entered:
            with pytest.raises(IllegalStateTransition, match="cannot be removed"):
                m.transition(state, None)


def test_a_state_hpcbatch_never_enters_is_refused() -> None:
    with pytest.raises(IllegalStateTransition, match="hpcbatch never enters that state"):
        transition("node", "preempted", "idle")
    with pytest.raises(IllegalStateTransition, match="hpcbatch never enters that state"):
        transition("node", "unknown", "unknown")
    with pytest.raises(IllegalStateTransition):
        transition("node", "idle", "deallocating")


def test_unknown_states_and_kinds() -> None:
    with pytest.raises(IllegalStateTransition) as info:
        transition("task", "Running", "completed")  # states are lower-case wire strings
    assert info.value.message == ("'Running' is not a task state; task states are: active, "
                                  "preparing, running, completed.")
    with pytest.raises(IllegalStateTransition, match="not a job schedule state"):
        transition("jobschedule", "active", "paused")
    with pytest.raises(ValueError):
        transition("workitem", "active", "completed")
    with pytest.raises(TypeError):
        transition("task", None, None)  # type: ignore[call-overload]


def test_batch_scenarios() -> None:
    """Whole lifecycles from the Batch documents go through the tables."""
    lives = {
        # Add, retry twice, fail, Reactivate, succeed.
        Kind.task: [None, "active", "running", "active", "running", "active", "running",
                    "completed", "active", "preparing", "running", "completed", None],
        # Disable (requeue), Enable, Terminate, Delete.
        Kind.job: [None, "active", "disabling", "disabled", "enabling", "active",
                   "terminating", "completed", "deleting", None],
        # Join with a start task, run, reboot, start task fails, reimage, leave.
        Kind.node: [None, "creating", "starting", "waitingforstarttask", "idle", "running",
                    "idle", "rebooting", "starting", "waitingforstarttask", "starttaskfailed",
                    "reimaging", "starting", "idle", "offline", "idle", "leavingpool", None],
        Kind.pool: [None, "active", "deleting", None],
        Kind.allocation: [None, "resizing", "steady", "resizing", "stopping", "steady"],
        Kind.jobschedule: [None, "active", "disabled", "active", "terminating", "completed",
                           "deleting", None],
    }
    for kind, life in lives.items():
        for current, new in itertools.pairwise(life):
            if new is None:
                assert current is not None and transition(kind, current, None) is None
            else:
                assert transition(kind, current, new) == new


# ------------------------------------------------------------- convenience sets


def test_convenience_sets() -> None:
    n, j, t = states.NODE, states.JOB, states.TASK
    assert states.TASK_HOLDS_NODE == {TaskState.preparing, TaskState.running}
    assert states.TASK_INCOMPLETE == set(TaskState) - t.terminal
    assert states.JOB_SCHEDULABLE == {JobState.active}
    assert states.JOB_OPEN_FOR_TASKS | states.JOB_CLOSED == set(JobState)
    assert not states.JOB_OPEN_FOR_TASKS & states.JOB_CLOSED
    assert states.JOB_SCHEDULABLE <= states.JOB_OPEN_FOR_TASKS <= states.JOB_LIVE
    assert states.JOB_LIVE == set(JobState) - j.terminal
    # A closed job cannot be reopened: no way back from a closed state to an open one.
    for closed in states.JOB_CLOSED:
        assert not j.transitions[closed] & states.JOB_OPEN_FOR_TASKS
    assert JobState.completed not in states.JOB_COUNTS_TOWARD_QUOTA
    assert states.JOB_SCHEDULE_CREATES_JOBS == {JobScheduleState.active}
    assert states.JOB_SCHEDULE_CLOSED == set(JobScheduleState) - {
        JobScheduleState.active, JobScheduleState.disabled}
    assert states.NODE_ACCEPTS_TASKS == {ComputeNodeState.idle, ComputeNodeState.running}
    # NodeNotReady for a reboot: exactly the states the table gives no way to rebooting.
    assert states.NODE_IN_TRANSITION == {
        s for s in n.entered if ComputeNodeState.rebooting not in n.transitions[s]}
    assert states.NODE_JOINING <= states.NODE_JOINING_OR_LEAVING <= states.NODE_IN_TRANSITION
    assert not states.NODE_ACCEPTS_TASKS & (states.NODE_TRANSIENT | states.NODE_FAILED)
    assert ComputeNodeState.offline not in states.NODE_ACCEPTS_TASKS


def test_the_module_docstring_examples() -> None:
    result = doctest.testmod(states, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0


# --------------------------------------------------- docs/architecture.md agrees

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
_HEADER = "| From | To | Trigger / operation | Batch document | hpcbatch today |"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _states_of(cell: str, m: Machine[Any]) -> list[Any]:
    if cell == "any":
        return list(typing.cast("Iterable[Any]", m.states))
    if cell in ("(created)", "(removed)"):
        return [None]
    names = re.findall(r"`([a-z]+)`", cell)
    assert names and ", ".join(f"`{x}`" for x in names) == cell, cell
    return [m.states(x) for x in names]


def _documented() -> dict[Kind, tuple[set[tuple[Any, Any]], set[Any]]]:
    """Per kind: the (from, to) pairs of its table in the doc, and its terminal states."""
    text = DOC.read_text()
    section = text.split("\n## States\n", 1)[1].split("\n### Audit\n", 1)[0]
    by_enum = {m.states.__name__: m for m in ALL}
    out: dict[Kind, tuple[set[tuple[Any, Any]], set[Any]]] = {}
    m: Machine[Any] | None = None
    in_table = False
    for line in section.splitlines():
        heading = re.match(r"### .* \(`(\w+)`\)$", line)
        if heading:
            m = by_enum[heading.group(1)]
            out[m.kind] = (set(), set())
            continue
        if line == _HEADER:
            in_table = True
            continue
        if in_table and line.startswith("| ---"):
            continue
        if in_table and line.startswith("| "):
            assert m is not None
            frm, to = _cells(line)[:2]
            for a in _states_of(frm, m):
                for b in _states_of(to, m):
                    out[m.kind][0].add((a, b))
            continue
        in_table = False
        if line.startswith("**Terminal:**") and m is not None:
            head = line.split(";")[0].split("(")[0]
            out[m.kind][1].update(m.states(x) for x in re.findall(r"`([a-z]+)`", head))
    return out


def test_architecture_doc_lists_exactly_the_tables() -> None:
    documented = _documented()
    assert set(documented) == set(Kind)
    for m in ALL:
        pairs, terminal = documented[m.kind]
        code = ({(None, s) for s in m.initial} | {(s, None) for s in m.removable}
                | {(a, b) for a, ts in m.transitions.items() for b in ts})
        assert pairs == code, (m.kind, sorted(map(str, pairs ^ code)))
        assert terminal == m.terminal, m.kind
