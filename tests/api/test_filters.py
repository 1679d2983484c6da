"""``$filter`` over wire dicts (hpcbatch.api.filters): the results the store's SQL gives.

Pure tests on node-like dicts, then the same filters run through SQLite (the
store's compiler, :func:`hpcbatch.store.filters.compile_filter`) as the oracle.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlalchemy as sa

from hpcbatch.api.filters import (
    JOB_SCHEDULE_FILTER,
    NODE_FILTER,
    ListFilter,
    wire_value,
)
from hpcbatch.batch import odata
from hpcbatch.store.filters import FilterColumn, compile_filter

NODES: list[dict[str, Any]] = [
    {"id": "Node1", "state": "idle", "schedulingState": "enabled", "isDedicated": True,
     "totalTasksRun": 0, "stateTransitionTime": "2025-01-01T10:00:00.1234567Z",
     "ipAddress": "10.0.0.1", "startTaskInfo": {"state": "completed", "exitCode": 0}},
    {"id": "node2", "state": "running", "schedulingState": "enabled", "isDedicated": True,
     "totalTasksRun": 5, "stateTransitionTime": "2025-01-02T00:00:00Z",
     "ipAddress": "10.0.0.2", "startTaskInfo": {"state": "completed", "exitCode": 1}},
    {"id": "o'brien", "state": "starttaskfailed", "schedulingState": "disabled",
     "isDedicated": False, "totalTasksRun": 2, "startTaskInfo": {"state": "running"}},
    {"id": "n4", "state": "creating"},
]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


@pytest.mark.parametrize("text,expected", [
    ("state eq 'idle'", ["Node1"]),
    ("state eq 'IDLE'", ["Node1"]),                       # enum literals: any case
    ("id eq 'NODE2'", ["node2"]),                         # strings: case-insensitive
    ("startswith(id, 'NODE')", ["Node1", "node2"]),
    ("startswith(id, 'O''B')", ["o'brien"]),              # '' is a quote
    ("id gt 'node1'", ["node2", "o'brien"]),
    ("'node1' lt id", ["node2", "o'brien"]),             # literal first: operator swapped
    ("isDedicated eq true", ["Node1", "node2"]),
    ("isDedicated ne true", ["o'brien"]),                 # absent: no comparison matches
    ("not (isDedicated eq true)", ["o'brien", "n4"]),    # not: the exact complement
    ("totalTasksRun ge 2", ["node2", "o'brien"]),
    ("startTaskInfo/exitCode ne 0", ["node2"]),
    ("startTaskInfo/exitCode eq null", ["o'brien", "n4"]),
    ("startTaskInfo/exitCode ne null", ["Node1", "node2"]),
    ("startTaskInfo/state eq 'Running'", ["o'brien"]),
    ("stateTransitionTime gt DateTime'2025-01-01T10:00:00.123456Z'", ["node2"]),
    ("stateTransitionTime le DateTime'Wed, 01 Jan 2025 12:00:00 GMT'", ["Node1"]),
    ("schedulingState eq 'disabled' or state eq 'creating'", ["o'brien", "n4"]),
    ("(state eq 'idle' or state eq 'running') and totalTasksRun gt 0", ["node2"]),
    ("   ", ["Node1", "node2", "o'brien", "n4"]),
])
def test_node_filter(text, expected):
    assert ids(NODE_FILTER.apply(NODES, text)) == expected


@pytest.mark.parametrize("text,reason", [
    ("colour eq 'red'", "unknown property 'colour' in $filter at column 1"),
    ("State eq 'idle'", "did you mean 'state'?"),
    ("state eq 'sleeping'", "invalid value 'sleeping' for property 'state'"),
    ("state gt 'idle'", "operator 'gt' is not valid for property 'state'"),
    ("totalTasksRun eq '5'", "property 'totalTasksRun' (kind int) cannot be compared"),
    ("state eq", "syntax error in $filter at column 9: unexpected end of $filter"),
    ("stateTransitionTime gt DateTime'soon'", "invalid DateTime literal 'soon'"),
])
def test_errors_are_the_stores(text, reason):
    with pytest.raises(odata.InvalidQueryParameterError) as info:
        NODE_FILTER.apply(NODES, text)
    err = info.value
    assert reason in err.message
    assert (err.code, err.status) == ("InvalidQueryParameterValue", 400)
    assert err.values["QueryParameterName"] == "$filter"


def test_job_schedule_filter():
    schedules = [{"id": "Nightly", "state": "active", "displayName": "Nightly build"},
                 {"id": "weekly", "state": "disabled"}]
    assert ids(JOB_SCHEDULE_FILTER.apply(schedules, "id eq 'nightly'")) == ["Nightly"]
    assert ids(JOB_SCHEDULE_FILTER.apply(schedules, "displayName eq null")) == ["weekly"]
    assert ids(JOB_SCHEDULE_FILTER.apply(schedules, "state ne 'active'")) == ["weekly"]


# --------------------------------------------------- the store's SQL as the oracle

_SQL_TYPES = {"string": sa.String, "enum": sa.String, "int": sa.Integer,
              "datetime": sa.DateTime, "bool": sa.Boolean}


def _sql_ids(flt: ListFilter, items: list[dict[str, Any]], text: str) -> list[str]:
    """Run ``text`` through the store's compile_filter on SQLite rows holding ``items``' values."""
    props = list(flt.properties.values())
    table = sa.Table("items", sa.MetaData(), sa.Column("seq", sa.Integer, primary_key=True),
                     *[sa.Column(f"c{i}", _SQL_TYPES[p.kind]()) for i, p in enumerate(props)])
    columns = {p.wire_name: FilterColumn(p, table.c[f"c{i}"]) for i, p in enumerate(props)}
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"seq": n, **{f"c{i}": wire_value(item, p)
                                                    for i, p in enumerate(props)}}
                                      for n, item in enumerate(items)])
        keep = set(conn.execute(sa.select(table.c.seq).where(
            compile_filter(text, columns))).scalars())
    engine.dispose()
    return [item["id"] for n, item in enumerate(items) if n in keep]


_ATOMS = ["state eq 'idle'", "id eq 'NODE1'", "startswith(id, 'node')", "id lt 'n4'",
          "isDedicated eq false", "totalTasksRun gt 1", "startTaskInfo/exitCode ne 0",
          "startTaskInfo/exitCode eq null", "ipAddress ne null",
          "stateTransitionTime ge DateTime'2025-01-01T10:00:00.1234567Z'"]


@pytest.mark.parametrize("text", _ATOMS + [
    f"{a} {op} {b}" for (a, b), op in zip(itertools.combinations(_ATOMS, 2),
                                          itertools.cycle(["and", "or"]))
] + [f"not ({a})" for a in _ATOMS])
def test_same_results_as_the_stores_sql(text):
    assert ids(NODE_FILTER.apply(NODES, text)) == _sql_ids(NODE_FILTER, NODES, text)
