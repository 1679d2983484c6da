"""Every 4xx and 5xx reply is logged: request id, request, route, status, Batch error code."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hpcbatch.api import rest
from tests.api.wire import Http, batch_error

LOGGER = rest.log.name


def _logged(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and request_id in r.getMessage()]


@pytest.mark.parametrize("method,path,status,code,route", [
    ("GET", "/pools/nosuch", 404, "PoolNotFound", "/pools/{pool}"),
    ("POST", "/pools/p1/nodes/n1/deallocate", 400, "FeatureNotSupported",
     "/pools/{poolId}/nodes/{nodeId}/deallocate"),
    ("GET", "/jobs", 400, "InvalidQueryParameterValue", "/jobs"),
    ("PUT", "/pools", 405, "UnsupportedHttpVerb", "-"),
    ("GET", "/no/such/path", 400, "InvalidUri", "-"),
])
def test_error_replies_are_logged(http: Http, caplog: pytest.LogCaptureFixture, method: str,
                                  path: str, status: int, code: str, route: str):
    caplog.set_level(logging.INFO, logger=LOGGER)
    params = {"$filter": "colour eq 'red'"} if path == "/jobs" else None
    resp = http(method, path, {} if method in ("POST", "PUT") else None, params=params)
    batch_error(resp, status, code)
    [record] = _logged(caplog, resp.headers["request-id"])
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert f"{method} {path}" in message
    assert f"(route {route}) answered {status} {code}" in message


def test_a_success_is_not_logged(http: Http, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=LOGGER)
    resp = http("GET", "/pools")
    assert resp.status_code == 200
    assert _logged(caplog, resp.headers["request-id"]) == []


def test_an_unexpected_error_answers_500_internal_error_and_is_logged(
        caplog: pytest.LogCaptureFixture):
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def call() -> tuple[int, dict[str, Any], str]:
        app = web.Application(middlewares=[rest.errors_middleware])
        app.router.add_get("/broken", broken)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/broken")
            return resp.status, await resp.json(), resp.headers["request-id"]

    status, body, request_id = asyncio.run(call())
    assert (status, body["code"]) == (500, "InternalError")
    assert f"RequestId:{request_id}" in body["message"]["value"]
    records = _logged(caplog, request_id)
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    assert records[0].exc_info is not None and "a bug" in str(records[0].exc_info[1])
    assert "GET /broken (route /broken) answered 500 InternalError" in records[1].getMessage()
