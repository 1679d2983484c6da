"""Tests of Batch's ``$filter``/``$select``/``$expand`` ("Create queries to list
Batch resources efficiently"): the pure half :mod:`hpcbatch.batch.odata` (no
database) and the SQL half :mod:`hpcbatch.store.filters`, run against a real
SQLite store.

The result tests run each ``$filter`` twice, through SQLite (``compile_filter``)
and through the pure evaluator (``parse_filter`` + ``matches``), and expect the
same tasks from both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from hpcbatch.batch import odata
from hpcbatch.batch.errors import BadRequestError
from hpcbatch.batch.odata import (
    JOB_PROPERTIES,
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    POOL_PROPERTIES,
    TASK_PROPERTIES,
    And,
    Comparison,
    InvalidQueryParameterError,
    Not,
    Or,
    Property,
    StartsWith,
    matches,
    parse_datetime,
    parse_filter,
)
from hpcbatch.batch.odata_select import apply_select, parse_expand, parse_select
from hpcbatch.store.database import Store, jobs, pools, sqlite_url, tasks
from hpcbatch.store.filters import (
    JOB_COLUMNS,
    POOL_COLUMNS,
    TASK_COLUMNS,
    FilterColumn,
    bind_columns,
    compile_filter,
)

T0 = datetime(2017, 5, 16, 2, 0, 0)


def _task(tid: str, state: str, created: datetime, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "job_key": "job-1",
        "key": tid.lower(),
        "id": tid,
        "state": state,
        "creation_time": created,
        "state_transition_time": created,
        "last_modified": created,
        "etag": "0x8D000000000000",
        "spec": "{}",
        # Every row names the same columns: an executemany takes its columns from the first row.
        "node_id": None,
        "start_time": None,
        "exit_code": None,
        "result": None,
        "previous_state": None,
        "retry_count": 0,
        "requeue_count": 0,
        "required_slots": 1,
    }
    assert set(extra) <= set(row), set(extra) - set(row)
    row.update(extra)
    return row


ROWS = [
    # never ran
    _task("task-1", "active", datetime(2017, 5, 16, 1, 0, 0)),
    _task("renderTask-1", "running", datetime(2017, 5, 16, 2, 45, 1, 500000),
          node_id="tvm-1", start_time=datetime(2017, 5, 16, 3, 0, 0)),
    _task("renderTask-2", "completed", datetime(2017, 5, 16, 3, 0, 0),
          node_id="tvm-2", exit_code=0, result="success", previous_state="running"),
    _task("RenderTask-3", "completed", datetime(2017, 5, 16, 4, 0, 0),
          node_id="tvm-1", exit_code=1, result="failure", retry_count=2,
          previous_state="running"),
    _task("other_1", "running", datetime(2017, 5, 17, 0, 0, 0), node_id="TVM-3",
          required_slots=2),
    _task("task%_x", "preparing", datetime(2017, 5, 17, 1, 0, 0),
          exit_code=-1073741510, requeue_count=1),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(sqlite_url(tmp_path / "s.db"))
    with s.begin() as conn:
        Store.insert_many(conn, tasks, ROWS)
    yield s
    s.close()


def sql_ids(store: Store, text: str) -> list[str]:
    """Run ``$filter`` text against the tasks table; return matching IDs in insert order."""
    stmt = sa.select(tasks.c.id).where(compile_filter(text, TASK_COLUMNS)).order_by(tasks.c.seq)
    with store.read() as conn:
        return list(conn.execute(stmt).scalars())


def memory_ids(text: str) -> list[str]:
    """Evaluate ``$filter`` text on ``ROWS`` with the pure evaluator (no database)."""
    expression = parse_filter(text, TASK_PROPERTIES)
    out = []
    for row in ROWS:
        def value_of(prop: Property, row: dict[str, object] = row) -> odata.Value:
            value = row.get(TASK_COLUMNS[prop.wire_name].column.name)
            assert value is None or isinstance(value, (str, int, datetime))
            return value

        if matches(expression, value_of):
            out.append(str(row["id"]))
    return out


@pytest.fixture(params=["sqlite", "memory"])
def ids(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], list[str]]]:
    """``ids(text)``: the IDs of the tasks ``text`` selects, in insert order, from the
    SQLite store (``compile_filter``) or from the pure evaluator (``matches``)."""
    if request.param == "memory":
        yield memory_ids
        return
    s = Store(sqlite_url(tmp_path / "s.db"))
    with s.begin() as conn:
        Store.insert_many(conn, tasks, ROWS)
    try:
        yield lambda text: sql_ids(s, text)
    finally:
        s.close()


IdsOf = Callable[[str], list[str]]


def error(text: str, properties: dict[str, Property] | None = None) -> InvalidQueryParameterError:
    """The error ``parse_filter`` raises for ``text`` (no database involved)."""
    with pytest.raises(InvalidQueryParameterError) as info:
        parse_filter(text, TASK_PROPERTIES if properties is None else properties)
    return info.value


ALL = [r["id"] for r in ROWS]


# ------------------------------------------------------------- the reference


def test_state_eq(ids: IdsOf) -> None:
    assert ids("state eq 'active'") == ["task-1"]
    assert ids("state eq 'completed'") == ["renderTask-2", "RenderTask-3"]


def test_reference_running_render_tasks(ids: IdsOf) -> None:
    # The document's example: only the running "render" tasks.
    assert ids("(state eq 'running') and startswith(id, 'renderTask')") == ["renderTask-1"]


def test_reference_nonzero_exit_code(ids: IdsOf) -> None:
    expected = ["RenderTask-3", "task%_x"]
    assert ids("(executionInfo/exitCode lt 0) or (executionInfo/exitCode gt 0)") == expected
    # Tasks that never ran have no exit code and match no comparison.
    assert ids("executionInfo/exitCode ne 0") == expected
    assert ids("executionInfo/exitCode eq 0") == ["renderTask-2"]


@pytest.mark.parametrize(
    "literal",
    [
        "DateTime'2017-05-16T02:45:01.5Z'",
        "DateTime'2017-05-16T04:45:01.5+02:00'",
        "DateTime'2017-05-16T02:45:01.5000000Z'",
    ],
)
def test_datetime_w3c_dtf(ids: IdsOf, literal: str) -> None:
    assert ids(f"creationTime gt {literal}") == ["renderTask-2", "RenderTask-3", "other_1", "task%_x"]
    assert ids(f"creationTime eq {literal}") == ["renderTask-1"]
    assert ids(f"creationTime le {literal}") == ["task-1", "renderTask-1"]


@pytest.mark.parametrize(
    "literal",
    ["DateTime'Tue, 16 May 2017 02:45:01 GMT'", "DateTime'tue, 16 may 2017 02:45:01 gmt'"],
)
def test_datetime_rfc_1123(ids: IdsOf, literal: str) -> None:
    # RFC 1123 has whole seconds: renderTask-1 (02:45:01.5) is after it.
    assert ids(f"creationTime gt {literal}") == ALL[1:]
    assert ids(f"creationTime lt {literal}") == ["task-1"]


def test_datetime_literal_order_swapped(ids: IdsOf) -> None:
    assert ids("DateTime'2017-05-17T00:00:00Z' le creationTime") == ["other_1", "task%_x"]


def test_datetime_date_only(ids: IdsOf) -> None:
    assert ids("creationTime ge DateTime'2017-05-17'") == ["other_1", "task%_x"]


def test_parse_datetime_forms() -> None:
    assert parse_datetime("2011-05-08T08:49:37Z") == datetime(2011, 5, 8, 8, 49, 37)
    assert parse_datetime("Sun, 08 May 2011 08:49:37 GMT") == datetime(2011, 5, 8, 8, 49, 37)
    assert parse_datetime("2011-05-08T08:49:37.1234567Z") == datetime(2011, 5, 8, 8, 49, 37, 123456)
    assert parse_datetime("2011-05-08T01:49-07:00") == datetime(2011, 5, 8, 8, 49)
    assert parse_datetime("2011-05-08T08:49:37") == datetime(2011, 5, 8, 8, 49, 37)
    for bad in ("08/05/2011", "2011-13-01T00:00:00Z", "Sun, 08 Foo 2011 08:49:37 GMT", ""):
        with pytest.raises(ValueError):
            parse_datetime(bad)


def test_not(ids: IdsOf) -> None:
    assert ids("not (state eq 'completed')") == ["task-1", "renderTask-1", "other_1", "task%_x"]
    assert ids("not state eq 'completed' and not state eq 'running'") == ["task-1", "task%_x"]
    # Two-valued logic: not is the exact complement, also on absent properties.
    assert ids("not (executionInfo/exitCode eq 0)") == [i for i in ALL if i != "renderTask-2"]


def test_and_binds_tighter_than_or(ids: IdsOf) -> None:
    text = "state eq 'active' or state eq 'running' and startswith(id, 'other')"
    assert ids(text) == ["task-1", "other_1"]
    assert ids("(state eq 'active' or state eq 'running') and startswith(id, 'other')") == ["other_1"]
    assert ids("startswith(id, 'other') and state eq 'running' or state eq 'active'") == [
        "task-1",
        "other_1",
    ]


def test_literal_on_the_left(ids: IdsOf) -> None:
    assert ids("0 lt executionInfo/exitCode") == ["RenderTask-3"]
    assert ids("'completed' eq state") == ["renderTask-2", "RenderTask-3"]


def test_negative_integer(ids: IdsOf) -> None:
    assert ids("executionInfo/exitCode eq -1073741510") == ["task%_x"]


def test_int_properties(ids: IdsOf) -> None:
    assert ids("executionInfo/retryCount ge 1") == ["RenderTask-3"]
    assert ids("executionInfo/requeueCount eq 1") == ["task%_x"]
    assert ids("requiredSlots gt 1") == ["other_1"]


def test_enum_and_nested_properties(ids: IdsOf) -> None:
    assert ids("executionInfo/result eq 'failure'") == ["RenderTask-3"]
    assert ids("executionInfo/result ne 'failure'") == ["renderTask-2"]
    assert ids("previousState eq 'running'") == ["renderTask-2", "RenderTask-3"]
    assert ids("nodeInfo/nodeId eq 'tvm-1'") == ["renderTask-1", "RenderTask-3"]
    assert ids("executionInfo/startTime ge DateTime'2017-05-16T03:00:00Z'") == ["renderTask-1"]


def test_null(ids: IdsOf) -> None:
    assert ids("executionInfo/exitCode eq null") == ["task-1", "renderTask-1", "other_1"]
    assert ids("nodeInfo/nodeId ne null and state eq 'running'") == ["renderTask-1", "other_1"]


def test_string_escapes_and_like_metacharacters(ids: IdsOf) -> None:
    # '%' and '_' in a startswith prefix are literal characters, not LIKE wildcards.
    assert ids("startswith(id, 'task%')") == ["task%_x"]
    assert ids("startswith(id, 'task_')") == []
    assert ids("id eq 'it''s'") == []


def test_empty_filter_matches_all(ids: IdsOf) -> None:
    assert ids("") == ALL
    assert ids("   ") == ALL


# ------------------------------------------------------------- case rules


def test_values_are_case_insensitive(ids: IdsOf) -> None:
    assert ids("state eq 'ACTIVE'") == ["task-1"]
    assert ids("state eq 'Completed'") == ["renderTask-2", "RenderTask-3"]
    assert ids("id eq 'TASK-1'") == ["task-1"]
    assert ids("id eq 'rendertask-3'") == ["RenderTask-3"]
    assert ids("startswith(id, 'RENDERTASK')") == ["renderTask-1", "renderTask-2", "RenderTask-3"]
    assert ids("nodeInfo/nodeId eq 'TVM-3'") == ["other_1"]
    assert ids("nodeInfo/nodeId eq 'tvm-3'") == ["other_1"]
    assert ids("executionInfo/result eq 'SUCCESS'") == ["renderTask-2"]


def test_property_names_are_case_sensitive() -> None:
    err = error("State eq 'active'")
    assert "unknown property 'State'" in err.message
    assert "at column 1" in err.message
    assert "did you mean 'state'" in err.message
    assert err.column == 1
    assert err.token == "State"
    err = error("state eq 'active' and executionInfo/ExitCode eq 0")
    assert "unknown property 'executionInfo/ExitCode'" in err.message
    assert err.column == 23


# ------------------------------------------------------------------- errors


def test_error_is_batch_invalid_query_parameter_value() -> None:
    text = "stat eq 'active'"
    err = error(text)
    assert isinstance(err, BadRequestError)
    assert err.status == 400
    assert err.code == "InvalidQueryParameterValue"
    assert err.values["QueryParameterName"] == "$filter"
    assert err.values["QueryParameterValue"] == text
    assert err.values["Reason"] == err.message
    assert err.message.startswith("unknown property 'stat' in $filter at column 1; known properties: id, state,")
    wire = err.to_wire()
    assert wire["code"] == "InvalidQueryParameterValue"
    assert {"key": "QueryParameterName", "value": "$filter"} in wire["values"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "column", "token", "fragments"),
    [
        ("state gt 'active'", 7, "gt",
         ["operator 'gt' is not valid for property 'state' (kind enum)", "column 7", "valid operators: eq, ne"]),
        ("startswith(state, 'a')", 1, "startswith",
         ["operator 'startswith' is not valid for property 'state' (kind enum)"]),
        ("eTag gt '0x1'", 6, "gt", ["operator 'gt' is not valid for property 'eTag' (kind string)"]),
        ("state eq 'active' and and", 23, "and",
         ["syntax error in $filter at column 23: unexpected token 'and'"]),
        ("state eq 'active' AND id eq 'x'", 19, "AND",
         ["unexpected token 'AND'", "column 19", "lower-case"]),
        ("state eq", 9, "", ["syntax error in $filter at column 9: unexpected end of $filter"]),
        ("(state eq 'active'", 19, "", ["unexpected end of $filter", "expected ')'"]),
        ("state eq 'active')", 18, ")", ["unexpected token ')'"]),
        ("state eq 'active' state eq 'running'", 19, "state", ["unexpected token 'state'"]),
        ("id eq 'abc", 7, "'", ["column 7", "unterminated string literal"]),
        ("state eq 'active' # x", 19, "#", ["column 19", "unexpected character '#'"]),
        ("state eq 'runing'", 10, "'runing'",
         ["invalid value 'runing' for property 'state'", "column 10",
          "allowed values: active, preparing, running, completed"]),
        ("executionInfo/exitCode eq 'x'", 27, "'x'",
         ["property 'executionInfo/exitCode' (kind int) cannot be compared with a string literal 'x'", "column 27"]),
        ("id eq 5", 7, "5", ["property 'id' (kind string) cannot be compared with an integer literal 5"]),
        ("creationTime gt '2017-05-16'", 17, "'2017-05-16'",
         ["property 'creationTime' (kind datetime)", "DateTime'...'"]),
        ("state eq true", 10, "true", ["property 'state' (kind enum) cannot be compared with a boolean literal true"]),
        ("requiredSlots eq DateTime'2017-05-16'", 18, "DateTime'2017-05-16'",
         ["property 'requiredSlots' (kind int)", "DateTime literal"]),
        ("creationTime gt DateTime'16/05/2017'", 17, "DateTime'16/05/2017'",
         ["invalid DateTime literal '16/05/2017'", "column 17"]),
        ("creationTime gt DateTime'2017-02-30T00:00:00Z'", 17, "DateTime'2017-02-30T00:00:00Z'",
         ["invalid DateTime literal"]),
        ("endswith(id, 'x')", 1, "endswith", ["unknown function 'endswith'", "supported functions: startswith"]),
        ("startswith(id)", 1, "startswith", ["function 'startswith' at column 1"]),
        ("startswith(id, 5)", 16, "5", ["property 'id' (kind string) cannot be compared with an integer literal 5"]),
        ("1 eq 1", 3, "eq", ["comparison 'eq' at column 3", "has no property"]),
        ("id eq state", 4, "eq", ["property on both sides ('id' and 'state')"]),
        ("creationTime lt null", 14, "lt", ["cannot compare property 'creationTime' with null"]),
        ("executionInfo/exitCode gt 99999999999999999999", 27, "99999999999999999999", ["out of range"]),
        ("state eq 'active' and stat eq 'x'", 23, "stat", ["unknown property 'stat' in $filter at column 23"]),
    ],
)
def test_errors_name_offender_and_column(text: str, column: int, token: str, fragments: list[str]) -> None:
    err = error(text)
    assert err.column == column, err.message
    assert err.token == token, err.message
    assert f"column {column}" in err.message
    for fragment in fragments:
        assert fragment in err.message, err.message
    assert err.values == {"QueryParameterName": "$filter", "QueryParameterValue": text, "Reason": err.message}


# ---------------------------------------------------------- SQL and indexes


def _sql(text: str, columns: dict[str, FilterColumn] = TASK_COLUMNS) -> str:
    return str(compile_filter(text, columns).compile(compile_kwargs={"literal_binds": True}))


def test_sql_uses_index_friendly_columns() -> None:
    # Enum values are canonicalised: the bare column (part of ix_tasks_queue) is compared.
    sql = _sql("state eq 'Active'")
    assert "tasks.state = 'active'" in sql
    assert "lower(" not in sql
    # IDs compare on the lower-cased key column (unique index with job_key).
    sql = _sql("id eq 'Task-1'")
    assert "tasks.key = 'task-1'" in sql
    assert "lower(" not in sql
    assert "tasks.key LIKE" in _sql("startswith(id, 'Render')")
    assert "tasks.node_id" in _sql("nodeInfo/nodeId eq 'tvm-1'")
    assert "tasks.exit_code" in _sql("executionInfo/exitCode ne 0")


def test_filter_runs_in_the_database(store: Store) -> None:
    stmt = sa.select(tasks.c.id).where(compile_filter("state eq 'running'", TASK_COLUMNS))
    sql = str(stmt.compile(store.engine))
    assert "WHERE tasks.state = ?" in sql


def test_job_and_pool_properties(tmp_path: Path) -> None:
    assert set(JOB_PROPERTIES) >= {"id", "state", "priority"}
    assert set(POOL_PROPERTIES) >= {"id", "state", "allocationState"}
    assert JOB_PROPERTIES["state"].values == (
        "active", "disabling", "disabled", "enabling", "terminating", "completed", "deleting",
    )
    s = Store(sqlite_url(tmp_path / "s.db"))
    try:
        with s.begin() as conn:
            Store.insert_many(conn, jobs, [
                {"key": "j1", "id": "J1", "seq": 1, "state": "active", "priority": 10, "spec": "{}", "status": "{}"},
                {"key": "j2", "id": "j2", "seq": 2, "state": "disabled", "priority": -5, "spec": "{}", "status": "{}"},
            ])
            Store.insert_many(conn, pools, [
                {"key": "p1", "id": "P1", "seq": 1, "state": "active", "allocation_state": "resizing",
                 "spec": "{}", "status": "{}"},
                {"key": "p2", "id": "p2", "seq": 2, "state": "deleting", "allocation_state": "steady",
                 "spec": "{}", "status": "{}"},
            ])
        with s.read() as conn:
            def run(table: sa.Table, columns: dict[str, FilterColumn], text: str) -> list[str]:
                stmt = sa.select(table.c.id).where(compile_filter(text, columns)).order_by(table.c.seq)
                return list(conn.execute(stmt).scalars())

            assert run(jobs, JOB_COLUMNS, "priority gt 0") == ["J1"]
            assert run(jobs, JOB_COLUMNS, "state eq 'Disabled' or id eq 'j1'") == ["J1", "j2"]
            assert run(pools, POOL_COLUMNS, "allocationState eq 'steady'") == ["p2"]
            assert run(pools, POOL_COLUMNS, "startswith(id, 'p') and state ne 'deleting'") == ["P1"]
    finally:
        s.close()
    err = error("allocationState eq 'stopped'", POOL_PROPERTIES)
    assert "allowed values: steady, resizing, stopping" in err.message


def test_property_validation() -> None:
    with pytest.raises(ValueError):
        Property("state", "enum")  # no values
    with pytest.raises(ValueError):
        Property("x", "int", operators=frozenset({"startswith"}))
    assert TASK_PROPERTIES["executionInfo/exitCode"].operators == frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


# ------------------------------------------------------------------- $select

TASK_WIRE_NAMES = ["id", "url", "eTag", "state", "stateTransitionTime", "commandLine", "executionInfo",
                   "nodeInfo", "stats"]


def test_parse_select_reference_example() -> None:
    assert parse_select("id, state, stateTransitionTime", TASK_WIRE_NAMES) == ["id", "state", "stateTransitionTime"]


def test_parse_select_order_dedup_whitespace_nested() -> None:
    text = " state ,id,\texecutionInfo/exitCode , id ,state"
    assert parse_select(text, TASK_WIRE_NAMES) == ["state", "id", "executionInfo/exitCode"]
    assert parse_select("nodeInfo/nodeId", ["nodeInfo/nodeId"]) == ["nodeInfo/nodeId"]
    assert parse_select("", TASK_WIRE_NAMES) == []


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("id, commandLin", 5, "unknown property 'commandLin' in $select at column 5"),
        ("id,State", 4, "did you mean 'state'"),
        ("id,,state", 4, "empty property name in $select at column 4"),
        ("id,", 4, "empty property name"),
        ("id, exec-info", 5, "invalid property name 'exec-info'"),
        ("foo/bar", 1, "unknown property 'foo/bar'"),
    ],
)
def test_parse_select_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(InvalidQueryParameterError) as info:
        parse_select(text, TASK_WIRE_NAMES)
    err = info.value
    assert err.code == "InvalidQueryParameterValue"
    assert err.status == 400
    assert err.values["QueryParameterName"] == "$select"
    assert err.values["QueryParameterValue"] == text
    assert err.column == column
    assert fragment in err.message, err.message


def test_apply_select_nested() -> None:
    task = {
        "id": "t1",
        "url": "https://x/jobs/j/tasks/t1",
        "state": "completed",
        "executionInfo": {"exitCode": 1, "retryCount": 0, "result": "failure"},
        "nodeInfo": {"nodeId": "tvm-1", "poolId": "p"},
    }
    selected = parse_select("executionInfo/exitCode, id, nodeInfo/nodeId, commandLine", TASK_WIRE_NAMES)
    out = apply_select(task, selected)
    assert out == {"id": "t1", "executionInfo": {"exitCode": 1}, "nodeInfo": {"nodeId": "tvm-1"}}
    assert list(out) == ["id", "executionInfo", "nodeInfo"]  # the item's own order
    assert task["executionInfo"] == {"exitCode": 1, "retryCount": 0, "result": "failure"}  # untouched
    # A parent selected whole wins over its children.
    assert apply_select(task, ["executionInfo/exitCode", "executionInfo"])["executionInfo"] == task["executionInfo"]
    assert apply_select(task, ["executionInfo", "executionInfo/exitCode"])["executionInfo"] == task["executionInfo"]
    # Missing properties (and parents without any selected child) are absent.
    assert apply_select({"id": "t2", "executionInfo": {}}, ["id", "executionInfo/exitCode", "stats"]) == {"id": "t2"}
    assert apply_select({"id": "t3", "nodeInfo": None}, ["nodeInfo/nodeId"]) == {}


# ------------------------------------------------------------------- $expand


def test_parse_expand() -> None:
    assert parse_expand("stats") == {"stats"}
    assert parse_expand(" stats , stats ") == {"stats"}
    assert parse_expand("") == set()
    for text, column, token in (("metadata", 1, "metadata"), ("stats,Stats", 7, "Stats"), ("stats,", 7, "")):
        with pytest.raises(InvalidQueryParameterError) as info:
            parse_expand(text)
        err = info.value
        assert err.values["QueryParameterName"] == "$expand"
        assert err.column == column
        assert err.token == token
        assert f"column {column}" in err.message
        assert "supported: stats" in err.message


# ------------------------------------------------------- the expression tree


def test_expression_is_normalised() -> None:
    state, exit_code, task_id = (TASK_PROPERTIES[n] for n in ("state", "executionInfo/exitCode", "id"))
    # Enum values take their canonical spelling; string values are lower-cased.
    assert parse_filter("state eq 'Active'", TASK_PROPERTIES) == Comparison(state, "eq", "active")
    assert parse_filter("id eq 'Task-1'", TASK_PROPERTIES) == Comparison(task_id, "eq", "task-1")
    # The property goes to the left, the operator mirrored.
    assert parse_filter("5 lt executionInfo/exitCode", TASK_PROPERTIES) == Comparison(exit_code, "gt", 5)
    assert parse_filter("executionInfo/exitCode eq null", TASK_PROPERTIES) == Comparison(exit_code, "eq", None)
    assert parse_filter("startswith(id, 'Render')", TASK_PROPERTIES) == StartsWith(task_id, "render")
    # Chains are flat; parentheses leave no node; not binds tightest, then and, then or.
    a, b, c = (Comparison(exit_code, "eq", n) for n in (1, 2, 3))
    text = "executionInfo/exitCode eq 1 or executionInfo/exitCode eq 2 or executionInfo/exitCode eq 3"
    assert parse_filter(text, TASK_PROPERTIES) == Or((a, b, c))
    text = ("not executionInfo/exitCode eq 1 and executionInfo/exitCode eq 2 or "
            "((executionInfo/exitCode eq 3))")
    assert parse_filter(text, TASK_PROPERTIES) == Or((And((Not(a), b)), c))
    assert parse_filter("  ", TASK_PROPERTIES) is None


def test_datetime_literal_is_naive_utc() -> None:
    expression = parse_filter("creationTime gt DateTime'2017-05-16T04:45:01.5+02:00'", TASK_PROPERTIES)
    assert expression == Comparison(TASK_PROPERTIES["creationTime"], "gt", datetime(2017, 5, 16, 2, 45, 1, 500000))


def test_pure_half_imports_no_database() -> None:
    import subprocess
    import sys

    code = ("import sys, hpcbatch.batch.odata as o; "
            "o.parse_filter(\"state eq 'active'\", o.TASK_PROPERTIES); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'aiohttp', 'distributed')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_catalogues_are_bound_to_columns() -> None:
    for catalogue, columns in ((TASK_PROPERTIES, TASK_COLUMNS), (JOB_PROPERTIES, JOB_COLUMNS),
                               (POOL_PROPERTIES, POOL_COLUMNS)):
        assert list(columns) == list(catalogue)
        assert all(columns[name].property is prop for name, prop in catalogue.items())
    assert TASK_COLUMNS["id"].key_column is tasks.c.key
    assert TASK_COLUMNS["executionInfo/exitCode"].column is tasks.c.exit_code
    with pytest.raises(ValueError, match="no column for filterable property 'priority'"):
        bind_columns(tasks, JOB_PROPERTIES, {"id": "id", "state": "state"})
    with pytest.raises(ValueError, match="no key column 'nokey'"):
        bind_columns(jobs, {"id": JOB_PROPERTIES["id"]}, {"id": "id"}, {"id": "nokey"})


def test_compile_filter_raises_the_parse_error() -> None:
    with pytest.raises(InvalidQueryParameterError) as info:
        compile_filter("State eq 'active'", TASK_COLUMNS)
    assert info.value.code == "InvalidQueryParameterValue"
    assert info.value.message == error("State eq 'active'").message
    assert str(compile_filter(" ", TASK_COLUMNS).compile()) == "true"


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("text", "column", "token"),
    [
        ("not " * 2000 + "id eq 'x'", 4 * MAX_FILTER_DEPTH + 1, "not"),
        ("(" * 2000 + "id eq 'x'" + ")" * 2000, MAX_FILTER_DEPTH + 1, "("),
        ("not (" * 1000 + "id eq 'x'" + ")" * 1000, 5 * (MAX_FILTER_DEPTH // 2) + 1, "not"),
        ("(" * 2000 + "id eq 'x'" + ")" * 1999, None, None),  # unbalanced: a syntax error
    ],
)
def test_deep_nesting_is_a_clear_400(text: str, column: int | None, token: str | None) -> None:
    for parse in (lambda: parse_filter(text, TASK_PROPERTIES), lambda: compile_filter(text, TASK_COLUMNS)):
        with pytest.raises(InvalidQueryParameterError) as info:
            parse()
        err = info.value
        assert err.status == 400 and err.code == "InvalidQueryParameterValue"
        assert err.values["QueryParameterName"] == "$filter"
        if column is None:
            assert "syntax error" in err.message
            continue
        assert err.message == (f"$filter nests parentheses and 'not' deeper than {MAX_FILTER_DEPTH} "
                               f"levels at column {column}")
        assert (err.column, err.token) == (column, token)


def test_too_long_is_a_clear_400() -> None:
    text = "id eq '" + "x" * MAX_FILTER_LENGTH + "'"
    err = error(text)
    assert err.message == f"$filter is {len(text)} characters long; the limit is {MAX_FILTER_LENGTH}"
    assert err.values["QueryParameterValue"] == text
    assert err.column is None


def test_deepest_and_longest_accepted_filters_run(ids: IdsOf) -> None:
    # As deep as allowed, alternating and/or: compiles and runs without exhausting the stack.
    text = "state eq 'active'"
    for depth in range(MAX_FILTER_DEPTH):
        text = f"(startswith(id, 'task') {'and' if depth % 2 else 'or'} {text})"
    assert ids(text) == ["task-1", "task%_x"]
    assert ids("not " * MAX_FILTER_DEPTH + "state eq 'active'") == ["task-1"]
    # A flat chain as long as allowed: no nesting, whatever its length.
    chain = " or ".join(f"id eq 'n{n}'" for n in range(10_000))
    chain = chain[: chain.rindex(" or ", 0, MAX_FILTER_LENGTH - 40)] + " or executionInfo/exitCode eq 1"
    assert len(chain) <= MAX_FILTER_LENGTH and chain.count(" or ") > 500
    assert ids(chain) == ["RenderTask-3"]


# ------------------------------------------------------------ the evaluator


def test_matches_semantics() -> None:
    values: dict[str, odata.Value] = {"id": "RenderTask-1", "state": "running", "executionInfo/exitCode": None,
                                      "requiredSlots": 2}

    def check(text: str) -> bool:
        return matches(parse_filter(text, TASK_PROPERTIES), lambda p: values.get(p.wire_name))

    assert check("") and check("id eq 'rendertask-1'") and check("startswith(id, 'RENDER')")
    assert check("requiredSlots ge 2") and not check("requiredSlots gt 2")
    # An absent property matches no comparison but 'eq null'; not is the exact complement.
    assert not check("executionInfo/exitCode ne 0") and not check("executionInfo/exitCode eq 0")
    assert check("executionInfo/exitCode eq null") and not check("executionInfo/exitCode ne null")
    assert check("not (executionInfo/exitCode eq 0)")
    assert not check("startswith(nodeInfo/nodeId, 'tvm')")
