"""The table of unsupported Batch operations: each answers 400 FeatureNotSupported naming
itself, none is also routed to a handler, and docs/azure-compat.md lists them all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hpcbatch.api.server import ServiceThread
from hpcbatch.api.unsupported import UNSUPPORTED, UnsupportedOperation, markdown_table
from tests.api.wire import Http, batch_error

DOC = Path(__file__).resolve().parents[2] / "docs" / "azure-compat.md"

SAMPLE_VALUES = {"thumbprintAlgorithm": "sha1", "thumbprint": "0123abcd",
                 "filePath": "wd/out/result.txt"}
"""Values for path parameters; any other parameter gets ``{name}-1``."""


def concrete(path: str) -> str:
    """``path`` with its ``{parameters}`` filled in (``{filePath}`` with slashes)."""
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_VALUES.get(m.group(1), f"{m.group(1)}-1"), path)


def _app(thread: ServiceThread) -> web.Application:
    runner = thread.runtime.runner
    assert runner is not None
    return runner.app


def _is_unsupported(handler: object) -> bool:
    return isinstance(getattr(handler, "__self__", None), UnsupportedOperation)


def _matches(resource: web.AbstractResource, path: str) -> bool:
    info = resource.get_info()
    if "pattern" in info:
        return info["pattern"].fullmatch(path) is not None
    return info.get("path") == path


def test_table_names_each_operation_and_request_once():
    names = [op.operation for op in UNSUPPORTED]
    requests = [(op.method, op.path) for op in UNSUPPORTED]
    assert len(set(names)) == len(names)
    assert len(set(requests)) == len(requests)
    for op in UNSUPPORTED:
        assert re.fullmatch(r"[A-Z][A-Za-z ]+ - [A-Z][A-Za-z ]+", op.operation), op
        assert op.method in ("GET", "POST", "PUT", "PATCH", "DELETE"), op
        assert op.reason.endswith("."), op


@pytest.mark.parametrize("op", UNSUPPORTED, ids=lambda op: op.operation)
def test_each_unsupported_operation_answers_feature_not_supported(http: Http,
                                                                  op: UnsupportedOperation):
    body: dict[str, Any] | None = None if op.method in ("GET", "DELETE") else {}
    resp = http(op.method, concrete(op.path), body)
    err = batch_error(resp, 400, "FeatureNotSupported")
    assert err["values"] == [{"key": "Operation", "value": op.operation}]
    message = err["message"]["value"]
    assert message.startswith(f"The Batch operation '{op.operation}' is not supported by "
                              f"hpcbatch: {op.reason}\nRequestId:")


def test_no_routed_operation_is_in_the_table(service_thread: ServiceThread):
    routed = [r for r in _app(service_thread).router.routes() if not _is_unsupported(r.handler)]
    table = [r for r in _app(service_thread).router.routes() if _is_unsupported(r.handler)]
    assert len(table) == len(UNSUPPORTED)
    assert len(routed) > 50
    for op in UNSUPPORTED:
        path = concrete(op.path)
        clashes = [r.resource.canonical for r in routed if r.resource is not None
                   and r.method in (op.method, "*") and _matches(r.resource, path)]
        assert not clashes, f"{op.operation} ({op.method} {op.path}) is also routed: {clashes}"


def test_a_routed_operation_is_not_answered_as_unsupported(http: Http):
    """A request the table does not name reaches its handler, even under a path with
    unsupported operations (a node's ``/rdp``, ``/deallocate``)."""
    batch_error(http("GET", "/jobs/nojob/tasks/t1/files/wd/out.txt"), 404, "JobNotFound")
    batch_error(http("GET", "/pools/nopool/nodes/n1"), 404, "PoolNotFound")


def test_docs_list_the_table():
    text = DOC.read_text()
    m = re.search(r"<!-- BEGIN unsupported operations[^\n]*-->\n(.*?)<!-- END unsupported "
                  r"operations -->", text, re.DOTALL)
    assert m, f"{DOC} has no unsupported-operations section"
    assert m.group(1) == markdown_table(), (
        "docs/azure-compat.md is stale: paste `python -m hpcbatch.api.unsupported`")
