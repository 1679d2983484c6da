"""No Batch state written as a bare string in the service (hpcbatch/core, api, store).

Every Batch state is a member of an ``enum.StrEnum`` in :mod:`hpcbatch.batch.states`,
with named sets (``TASK_HOLDS_NODE``, ``JOB_CLOSED``, ...). A member compares
equal to its wire string, so a bare ``"completed"`` works too -- and hides from
a search for ``TaskState.completed``, and from mypy. This test walks the AST of
every module under ``hpcbatch/core``, ``hpcbatch/api`` and ``hpcbatch/store``
and fails, naming file:line, on:

* a comparison (``==``, ``!=``, ``in``, ``not in``) of an expression that
  mentions a state (a name, attribute or subscript key containing ``state``,
  e.g. ``row["state"]``, ``node.scheduling_state``, ``state``) with a str
  constant, or a tuple/list/set of str constants, equal to a value of a state
  enum;
* a call of ``set_state``/``_set_state`` with such a str constant;
* an assignment of such a str constant to a target that mentions a state
  (``node.scheduling_state = "disabled"``), a keyword argument named like a
  state (``.values(state="completed")``) or a dict entry keyed by a state
  property (``{"state": "active"}``).

SQL text inside strings is not Python and is not looked at. The client
(``hpcbatch/client``) keeps wire strings: it must not import the server's
modules at start-up.
"""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
from collections.abc import Iterator
from pathlib import Path

from hpcbatch.batch import states

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("hpcbatch/core", "hpcbatch/api", "hpcbatch/store")


def _state_values() -> frozenset[str]:
    """The values of every state enum of hpcbatch.batch.states (not :class:`states.Kind`)."""
    values: set[str] = set()
    for _, obj in inspect.getmembers(states, inspect.isclass):
        if (issubclass(obj, enum.StrEnum) and obj.__module__ == states.__name__
                and obj is not states.Kind):
            values.update(member.value for member in obj)
    return frozenset(values)


STATE_VALUES = _state_values()
SET_STATE_CALLS = frozenset({"set_state", "_set_state", "check", "transition", "allocation_change"})
"""Functions whose arguments are states: a str constant among them is a bare state."""

WORDS = ("state", "result")
"""A name, attribute or key containing one of these holds a state (or a ``TaskExecutionResult``)."""


def _named(name: str) -> bool:
    return any(word in name.lower() for word in WORDS)


def _mentions_state(node: ast.AST) -> bool:
    """Whether an expression names a state: a name, attribute, constant subscript key or
    ``.get()`` key containing ``state`` or ``result`` (``state``, ``node.state``,
    ``row["state"]``, ``t.c.state``, ``info.get("result")``)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and _named(sub.id):
            return True
        if isinstance(sub, ast.Attribute) and _named(sub.attr):
            return True
        if (isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant)
                and isinstance(sub.slice.value, str) and _named(sub.slice.value)):
            return True
        if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                and sub.func.attr == "get" and sub.args and isinstance(sub.args[0], ast.Constant)
                and isinstance(sub.args[0].value, str) and _named(sub.args[0].value)):
            return True
    return False


def _state_literals(node: ast.AST) -> list[str]:
    """The str constants in ``node`` (a constant, a tuple/list/set of them, or either
    branch of ``a if c else b``) that are state values."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in STATE_VALUES else []
    if isinstance(node, ast.IfExp):
        return _state_literals(node.body) + _state_literals(node.orelse)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for elt in node.elts for v in _state_literals(elt)
                if isinstance(elt, ast.Constant)]
    return []


def _findings(path: Path, source: str) -> Iterator[str]:
    tree = ast.parse(source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for op, (left, right) in zip(node.ops, itertools.pairwise(sides), strict=True):
                if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                    continue
                for a, b in ((left, right), (right, left)):
                    literals = _state_literals(b)
                    if literals and _mentions_state(a):
                        yield (f"{path}:{node.lineno}: compares {ast.unparse(a)} with "
                               f"{literals}")
                        break
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in SET_STATE_CALLS:
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    literals = _state_literals(arg)
                    if literals:
                        yield f"{path}:{node.lineno}: {name}() with {literals}"
            for keyword in node.keywords:
                if keyword.arg and _named(keyword.arg):
                    literals = _state_literals(keyword.value)
                    if literals:
                        yield f"{path}:{node.lineno}: {keyword.arg}={literals}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(_mentions_state(t) for t in targets):
                literals = _state_literals(node.value)
                if literals:
                    yield f"{path}:{node.lineno}: assigns {literals}"
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and isinstance(key.value, str)
                        and _named(key.value)):
                    literals = _state_literals(value)
                    if literals:
                        yield f"{path}:{node.lineno}: {key.value!r}: {literals}"


def _scan(root: Path) -> list[str]:
    out: list[str] = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            found = _findings(path.relative_to(root), path.read_text())
            out.extend(sorted(set(found), key=lambda f: int(f.split(":")[1])))
    return out


def test_no_state_literals() -> None:
    found = _scan(ROOT)
    assert not found, ("states written as bare strings; use the enum member or a named set "
                       "of hpcbatch.batch.states:\n" + "\n".join(found))


def test_scan_sees_each_form(tmp_path: Path) -> None:
    """The scanner on a throwaway module: each form it must catch, and what it must allow."""
    bad = (
        'row["state"] == "active"\n'
        '"completed" != node.state\n'
        'state in ("running", "preparing")\n'
        'x.scheduling_state not in ["enabled"]\n'
        'self.set_state(conn, row, "terminating")\n'
        'node.scheduling_state = "disabled"\n'
        'q.values(state="completed")\n'
        'd = {"state": "idle"}\n'
        'node.state = "reimaging" if wipe else "rebooting"\n'
        'ok = info.get("result") == "success"\n'
    )
    good = (
        'from hpcbatch.batch.states import JobState\n'
        'row["state"] == JobState.active\n'
        'row["name"] == "active"\n'          # not a state
        'state == "no such state"\n'          # not a state value
        'kind == "task"\n'                    # states.Kind is not a state
        'c["running"] += 1\n'                 # a count's property name
        'sql = "UPDATE jobs SET state = \'completed\'"\n'
    )
    assert len(list(_findings(Path("bad.py"), bad))) == 10
    assert list(_findings(Path("good.py"), good)) == []
