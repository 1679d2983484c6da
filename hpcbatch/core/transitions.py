"""State changes of the service core, checked against :mod:`hpcbatch.batch.states`.

Every place the core changes a task, subtask, job, job schedule, pool,
allocation or node state goes through :func:`check` (one resource) or
:func:`task_moves` (a task UPDATE that may touch many rows). An illegal
change is a bug: it raises :class:`hpcbatch.batch.states.IllegalStateTransition`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from hpcbatch.batch.states import Kind, TaskState, transition
from hpcbatch.store.database import tasks

__all__ = ["check", "task_moves"]


def check(kind: Kind, current: str | None, new: enum.StrEnum) -> str:
    """Check one resource's state change; return the new state (its wire string).

    ``new`` is a member of the kind's state enum (:mod:`hpcbatch.batch.states`), so
    that mypy rejects a bare string; ``current`` is what the store or the node holds.

    A pure function of its arguments, memoised (a pass checks the same few
    node moves for every run; an illegal change is not cached and raises each time).

    Raises
    ------
    hpcbatch.batch.states.IllegalStateTransition
        The kind's transition table does not allow ``current`` -> ``new``.
    """
    return _checked(kind, current, new)


@lru_cache(maxsize=1024)
def _checked(kind: Kind, current: str | None, new: str) -> str:
    return str(transition(kind, current, new))


def task_moves(sources: Iterable[TaskState], targets: Iterable[TaskState]
               ) -> ColumnElement[bool]:
    """Return the WHERE clause of a task UPDATE that moves tasks from ``sources`` to ``targets``.

    Every ``source -> target`` pair is checked against the task table when the
    statement is built (statements are built once, at import), and the clause
    limits the UPDATE to rows in ``sources``: a row in any other state is left
    alone, so the database never holds a transition the table forbids.

    Raises
    ------
    hpcbatch.batch.states.IllegalStateTransition
        A pair is not allowed.
    """
    sources = sorted(set(sources))
    for target in set(targets):
        for source in sources:
            if source != target:
                transition(Kind.task, source, target)
    # Literal comparisons, not IN (...): an expanding IN cannot run in executemany().
    return sa.or_(*(tasks.c.state == str(s) for s in sources))
