"""Requests aiohttp's HTTP parser refuses get Batch's error body, not aiohttp's plain text.

Each request is written byte for byte on a raw socket to a real service (no
client library could send most of them) and the reply read until the service
closes the connection. Checked: the status, Batch's JSON error body with its
code, ``request-id`` and ``RequestId`` in the message, the connection closed
after it, no 5xx, and the service still answering afterwards.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from hpcbatch.api.http import JSON_CONTENT_TYPE
from hpcbatch.api.protocol import MAX_REASON_CHARS, parser_error
from hpcbatch.api.server import ServiceThread

HEAD = b"Host: batch\r\n"

CASES = [  # (id, raw request, Batch code)
    ("control-char-in-header-value",
     b"GET /jobs?api-version=2025-06-01 HTTP/1.1\r\n" + HEAD + b"X-Name: a\x01b\r\n\r\n",
     "InvalidHeaderValue"),
    ("nul-in-header-name",
     b"GET /jobs HTTP/1.1\r\n" + HEAD + b"X-Na\x00me: v\r\n\r\n", "InvalidHeaderValue"),
    ("space-in-header-name",
     b"GET /jobs HTTP/1.1\r\n" + HEAD + b"Bad Header: v\r\n\r\n", "InvalidHeaderValue"),
    ("header-line-too-long",
     b"GET /jobs HTTP/1.1\r\n" + HEAD + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
     "InvalidHeaderValue"),
    ("bad-content-length",
     b"POST /jobs HTTP/1.1\r\n" + HEAD + b"Content-Length: zz\r\n\r\n", "InvalidHeaderValue"),
    ("unknown-method", b"G\x01T /jobs HTTP/1.1\r\n" + HEAD + b"\r\n", "InvalidHttpVerb"),
    ("control-char-in-path", b"GET /jo\x01bs HTTP/1.1\r\n" + HEAD + b"\r\n", "InvalidUri"),
    ("bad-http-version", b"GET /jobs HTTP/9.9\r\n" + HEAD + b"\r\n", "InvalidInput"),
    ("bad-chunk-size",
     b"POST /jobs HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
     "InvalidInput"),
]


def _send(endpoint: str, raw: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    """Write ``raw`` to the service; return its reply (status, headers) and body."""
    url = urlsplit(endpoint)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        sock.settimeout(30)
        rest = sock.recv(1)  # the service closed the connection after the reply
    assert rest == b""
    return resp, body


@pytest.mark.parametrize(("raw", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_request_the_parser_refuses_gets_a_batch_error(service_thread: ServiceThread,
                                                         raw: bytes, code: str) -> None:
    resp, body = _send(service_thread.runtime.endpoint, raw)
    assert resp.status == 400, body
    assert resp.getheader("Content-Type") == JSON_CONTENT_TYPE, body
    request_id = resp.getheader("request-id")
    assert request_id
    err: dict[str, Any] = json.loads(body)
    assert err["code"] == code, err
    assert err["message"]["lang"] == "en-US"
    assert err["message"]["value"].startswith("The request is not valid HTTP: ")
    assert f"RequestId:{request_id}" in err["message"]["value"]
    reason = {v["key"]: v["value"] for v in err["values"]}["Reason"]
    assert 0 < len(reason) <= MAX_REASON_CHARS
    assert err["odata.metadata"].endswith("$metadata#Microsoft.Azure.Batch.Protocol.Entities"
                                          ".Container.errors/@Element")


def test_the_service_answers_after_refused_requests(service_thread: ServiceThread) -> None:
    for _, raw, _ in CASES:
        _send(service_thread.runtime.endpoint, raw)
    resp, body = _send(service_thread.runtime.endpoint,
                       b"GET /health HTTP/1.1\r\n" + HEAD + b"Connection: close\r\n\r\n")
    assert resp.status == 200, body


def test_a_valid_request_on_a_raw_socket_reaches_the_rest_layer(
        service_thread: ServiceThread) -> None:
    """The control for the cases above: the same bytes without the fault are routed
    (an unsigned request: ``403 AuthenticationFailed`` from the REST layer, in JSON)."""
    resp, body = _send(service_thread.runtime.endpoint,
                       b"GET /jobs?api-version=2025-06-01 HTTP/1.1\r\n" + HEAD
                       + b"X-Name: ab\r\nConnection: close\r\n\r\n")
    assert resp.status == 403, body
    assert json.loads(body)["code"] == "AuthenticationFailed"


def test_a_handler_failure_is_an_internal_error() -> None:
    err = parser_error(500, RuntimeError("boom"), None)
    assert (err.status, err.code) == (500, "InternalError")
    assert "boom" not in err.message
