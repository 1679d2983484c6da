"""Signed HTTP requests to a service, as an SDK sends them, and Batch error assertions."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import requests

from hpcbatch.api.http import JSON_CONTENT_TYPE
from hpcbatch.batch.replay import NONCE_HEADER
from hpcbatch.client.auth import SharedKeyAuth


class Http:
    """Signed requests to the service, as hpcbatch's SDK sends them (api-version in the
    query, a nonce header)."""

    def __init__(self, endpoint: str, account: str, key: str) -> None:
        self.endpoint = endpoint
        self.session = requests.Session()
        self.session.auth = SharedKeyAuth(account, key)

    def __call__(self, method: str, path: str, body: Any = None, *,
                 params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                 raw: bytes | None = None) -> requests.Response:
        # A fresh signed nonce per request, as hpcbatch's own client sends: two identical
        # requests in one second are two requests, not a replay (api/security.py).
        h = {"ocp-date": format_datetime(datetime.now(UTC), usegmt=True),
             NONCE_HEADER: secrets.token_hex(16), **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            h.setdefault("Content-Type", "application/json; odata=minimalmetadata")
        return self.session.request(method, self.endpoint + path, data=data, headers=h,
                                    params={"api-version": "2025-06-01", **(params or {})},
                                    timeout=60)


def batch_error(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``resp`` is Batch's error body with ``status`` and ``code``; return the body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == JSON_CONTENT_TYPE
    assert resp.headers.get("request-id")
    body = resp.json()
    assert body["code"] == code, body
    assert body["message"]["lang"] == "en-US"
    assert f"RequestId:{resp.headers['request-id']}" in body["message"]["value"]
    return body
