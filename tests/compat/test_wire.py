"""Wire details of the REST API the SDK scenarios do not reach, checked over plain HTTP.

A service without hosts (pools of 0 nodes, jobs on them) is enough: these are
status codes, headers, paging, conditional requests and error bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from hpcbatch.api.http import MAX_TASK_COLLECTION_BYTES
from tests.api.wire import Http
from tests.api.wire import batch_error as _error
from tests.helpers import running_service


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    with running_service(tmp_path_factory.mktemp("wire")) as (_client, thread):
        creds = thread.runtime.credentials
        assert creds is not None
        http = Http(thread.runtime.endpoint, creds.account_name, creds.key)
        for i in range(5):
            assert http("POST", "/pools", {"id": f"w{i}", "vmSize": "any",
                                           "targetDedicatedNodes": 0}).status_code == 201
        assert http("POST", "/jobs", {"id": "wj", "poolInfo": {"poolId": "w0"}}).status_code == 201
        yield http


def test_unknown_path_and_verb(http):
    _error(http("GET", "/nothing/here"), 400, "InvalidUri")
    _error(http("PUT", "/pools"), 405, "UnsupportedHttpVerb")


def test_created_has_batch_headers(http):
    resp = http("POST", "/pools", {"id": "hdr", "vmSize": "any", "targetDedicatedNodes": 0},
                headers={"client-request-id": "11111111-2222-3333-4444-555555555555"})
    assert resp.status_code == 201 and resp.content == b""
    for name in ("Location", "DataServiceId", "ETag", "Last-Modified", "request-id"):
        assert resp.headers.get(name), name
    assert resp.headers["Location"].endswith("/pools/hdr")
    assert resp.headers["client-request-id"] == "11111111-2222-3333-4444-555555555555"
    got = http("GET", "/pools/hdr")
    assert got.headers["ETag"] == got.json()["eTag"] == resp.headers["ETag"]
    assert got.json()["odata.metadata"].endswith("$metadata#pools/@Element")
    deleted = http("DELETE", "/pools/hdr")
    assert deleted.status_code == 202 and deleted.content == b""
    assert deleted.headers["DataServiceId"].endswith("/pools/hdr")


def test_list_paging_with_maxresults_and_nextlink(http):
    ids, pages = [], 0
    resp = http("GET", "/pools", params={"maxresults": 2, "$filter": "startswith(id, 'w')"})
    while True:
        pages += 1
        assert resp.status_code == 200
        body = resp.json()
        assert len(body["value"]) <= 2
        ids += [p["id"] for p in body["value"]]
        link = body.get("odata.nextLink")
        if not link:
            break
        resp = http.session.get(link, headers={
            "ocp-date": format_datetime(datetime.now(UTC), usegmt=True)}, timeout=60)
    assert ids == [f"w{i}" for i in range(5)] and pages == 3


@pytest.mark.parametrize("value", [0, 1001, "x"])
def test_maxresults_out_of_range(http, value):
    body = _error(http("GET", "/pools", params={"maxresults": value}), 400,
                  "OutOfRangeQueryParameterValue" if value != "x" else
                  "InvalidQueryParameterValue")
    assert {"key": "QueryParameterName", "value": "maxresults"} in body["values"]


def test_expand_select_and_timeout(http):
    assert http("GET", "/pools", params={"$expand": "stats", "timeOut": 30}).status_code == 200
    _error(http("GET", "/pools", params={"$expand": "everything"}), 400,
           "InvalidQueryParameterValue")
    one = http("GET", "/pools/w1", params={"$select": "id,state"}).json()
    assert set(one) == {"odata.metadata", "id", "state"}
    listed = http("GET", "/pools", params={"$select": "id", "$filter": "id eq 'w2'"}).json()
    assert listed["value"] == [{"id": "w2"}]
    _error(http("GET", "/pools", params={"$select": "nosuch"}), 400, "InvalidQueryParameterValue")


def test_conditional_get(http):
    first = http("GET", "/pools/w0")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    same = http("GET", "/pools/w0", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    assert http("GET", "/pools/w0", headers={"If-None-Match": '"0xOTHER"'}).status_code == 200
    assert http("GET", "/pools/w0", headers={"If-Modified-Since": modified}).status_code == 304
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert http("GET", "/pools/w0", headers={"If-Modified-Since": earlier}).status_code == 200
    _error(http("GET", "/pools/w0", headers={"If-Match": '"0xOTHER"'}), 412, "ConditionNotMet")


def test_conditional_write(http):
    etag = http("GET", "/jobs/wj").headers["ETag"]
    _error(http("PATCH", "/jobs/wj", {"priority": 3}, headers={"If-Match": '"0xSTALE"'}),
           412, "ConditionNotMet")
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    _error(http("PATCH", "/jobs/wj", {"priority": 3}, headers={"If-Unmodified-Since": earlier}),
           412, "ConditionNotMet")
    ok = http("PATCH", "/jobs/wj", {"priority": 3}, headers={"If-Match": f'"{etag}"'})
    assert ok.status_code == 200
    assert ok.headers["ETag"] != etag  # the update's new ETag
    assert http("GET", "/jobs/wj").json()["priority"] == 3


def test_task_collection_over_one_megabyte_is_request_body_too_large(http):
    big = "x" * (MAX_TASK_COLLECTION_BYTES // 50)
    tasks = [{"id": f"b{i}", "commandLine": "/bin/true",
              "environmentSettings": [{"name": "BIG", "value": big}]} for i in range(60)]
    body = _error(http("POST", "/jobs/wj/addtaskcollection", {"value": tasks}), 413,
                  "RequestBodyTooLarge")
    assert "fewer tasks" in body["message"]["value"]
    ok = http("POST", "/jobs/wj/addtaskcollection", {"value": tasks[:30]})
    assert ok.status_code == 200
    assert [r["status"] for r in ok.json()["value"]] == ["success"] * 30


def test_node_filter(http):
    assert http("GET", "/pools/w0/nodes", params={"$filter": "state eq 'idle'"}).json()[
        "value"] == []
    _error(http("GET", "/pools/w0/nodes", params={"$filter": "colour eq 'red'"}), 400,
           "InvalidQueryParameterValue")


@pytest.mark.parametrize("method,path", [
    ("GET", "/pools/w0/nodes/n1/rdp"),
    ("POST", "/pools/w0/nodes/n1/start"),
    ("POST", "/pools/w0/nodes/n1/uploadbatchservicelogs"),
    ("POST", "/pools/w0/nodes/n1/deallocate"),
])
def test_unsupported_operations_say_so(http, method, path):
    body = _error(http(method, path, {} if method == "POST" else None), 400,
                  "FeatureNotSupported")
    assert "not supported by hpcbatch" in body["message"]["value"]
    assert body["values"][0]["key"] == "Operation"


def test_node_counts_and_empty_extension_list(http):
    counts = http("GET", "/nodecounts").json()["value"]
    assert {c["poolId"] for c in counts} >= {f"w{i}" for i in range(5)}
    assert all(c["dedicated"]["total"] == 0 and c["lowPriority"]["total"] == 0 for c in counts)
