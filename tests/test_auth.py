"""SharedKey authentication ("Authenticate requests to the Azure Batch service")."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
import requests

from hpcbatch.batch.errors import AuthenticationError
from hpcbatch.batch.sharedkey import (
    generate_account_key,
    sign,
    string_to_sign,
    verify,
)
from hpcbatch.client.auth import SharedKeyAuth

# ---------------------------------------------------------------------------
# Known vectors from the official SDKs.
#
# The SDKs are not importable here without installing them (14.2.0 needs
# msrest, 15.x needs azure-core), so these values were derived ONCE by running
# the unmodified signing code of azure-batch 14.2.0
# (azure/batch/batch_auth.py: SharedKeyAuth.__call__ on a requests
# PreparedRequest) and azure-batch 15.1.0 (azure/batch/_patch.py:
# BatchSharedKeyAuthPolicy.on_request), with stub modules standing in only for
# their unrelated imports (msrest's Serializer/Authentication, azure-core's
# SansIOHTTPPolicy), and recording the Authorization header they produced.
# ---------------------------------------------------------------------------

ACCOUNT = "hpcbatch"
KEY = base64.b64encode(bytes(range(64))).decode()
DATE = "Tue, 04 Nov 2025 10:20:30 GMT"
AT = datetime(2025, 11, 4, 10, 20, 30, tzinfo=UTC)
BASE = "https://hpcbatch.example.test"
SDK_HEADERS = {
    "ocp-date": DATE,
    "client-request-id": "00000000-0000-0000-0000-000000000001",
    "Accept": "application/json",
}
JOB_BODY = json.dumps({"id": "job-1", "poolInfo": {"poolId": "pool-1"}}).encode()
JSON_TYPE = "application/json; odata=minimalmetadata; charset=utf-8"

# (method, url, extra headers, body, Authorization from azure-batch 14.2.0)
SDK14_VECTORS = [
    (
        "GET",
        BASE + "/jobs?api-version=2024-07-01.20.0&$filter=state%20eq%20%27active%27&maxresults=10&timeout=30",
        {},
        None,
        "SharedKey hpcbatch:EY1ZuRLCy4wA+LCcouUiUn2wdFZuUO4gPTrtiSCF4d4=",
    ),
    (
        "POST",
        BASE + "/jobs?api-version=2024-07-01.20.0",
        {"Content-Type": JSON_TYPE},
        JOB_BODY,
        "SharedKey hpcbatch:qGC/8XVvPLFN2Qkbj+VN2OoZqEgZl9eQGb3Vcmd7ssA=",
    ),
    (  # empty POST: requests sends Content-Length: 0 and the SDK signs "0"
        "POST",
        BASE + "/pools/pool-1/stopresize?api-version=2024-07-01.20.0",
        {},
        None,
        "SharedKey hpcbatch:rCWhqrVdeVZzMyxuAivSx/IJj4P0zFPTHgSXtdz+8P8=",
    ),
    (  # percent-encoded path is signed as sent; a second ocp- header
        "GET",
        BASE + "/jobs/job-1/tasks/t%201/files/wd%2Fout.txt?api-version=2024-07-01.20.0",
        {"ocp-range": "bytes=0-99"},
        None,
        "SharedKey hpcbatch:5EM0qk7w5kEKLw2aRXQ3tY59b5dgYs+h3/RtVKVs2YM=",
    ),
]

# azure-batch 15.1.0: only ocp-date set; it signs Content-Length "0" for a
# DELETE although no Content-Length header is sent.
SDK15_VECTORS = [
    ("DELETE", BASE + "/jobs/job-1?api-version=2024-07-01.20.0",
     "SharedKey hpcbatch:6KQGrtVvHbVQhgf7BlUxvBZ4590yqEjQaCTAk/rlprc="),
    ("GET", BASE + "/pools?api-version=2024-07-01.20.0&maxresults=5",
     "SharedKey hpcbatch:796mq8e5HkOxWW7swYMNNPS48tp9t5iqC9VXLOFkxow="),
]

# The string azure-batch 14.2.0 signed for SDK14_VECTORS[0] (captured from its
# _sign_string).
SDK14_GET_STRING = (
    "GET\n\n\n\n\n\n\n\n\n\n\n\n"
    "ocp-date:Tue, 04 Nov 2025 10:20:30 GMT\n"
    "/hpcbatch/jobs\n"
    "$filter:state eq 'active'\n"
    "api-version:2024-07-01.20.0\n"
    "maxresults:10\n"
    "timeout:30"
)


def _prepared(method, url, headers, body=None, auth=None):
    return requests.Request(method, url, headers=headers, data=body, auth=auth).prepare()


def _verify_prepared(req, *, key=KEY, account=ACCOUNT, now=AT, **kw):
    url = urlsplit(req.url)
    verify(req.method, url.path, url.query, req.headers, account, key, now=now, **kw)


# ---------------------------------------------------------------------------
# the SDKs' vectors
# ---------------------------------------------------------------------------


def test_string_to_sign_matches_sdk_14_2_0():
    method, url, extra, body, _ = SDK14_VECTORS[0]
    req = _prepared(method, url, {**SDK_HEADERS, **extra}, body)
    u = urlsplit(req.url)
    assert string_to_sign(method, u.path, u.query, req.headers, ACCOUNT) == SDK14_GET_STRING


@pytest.mark.parametrize("method,url,extra,body,expected", SDK14_VECTORS)
def test_sign_matches_sdk_14_2_0(method, url, extra, body, expected):
    req = _prepared(method, url, {**SDK_HEADERS, **extra}, body)
    u = urlsplit(req.url)
    assert sign(method, u.path, u.query, req.headers, ACCOUNT, KEY) == expected
    # and the service side accepts the SDK's header
    req.headers["Authorization"] = expected
    _verify_prepared(req)
    # our requests auth produces the same header as the SDK
    ours = _prepared(method, url, {**SDK_HEADERS, **extra}, body, auth=SharedKeyAuth(ACCOUNT, KEY))
    assert ours.headers["Authorization"] == expected


@pytest.mark.parametrize("method,url,expected", SDK15_VECTORS)
def test_verify_accepts_sdk_15_1_0(method, url, expected):
    u = urlsplit(url)
    # what the 15.x SDK sends over a transport that adds no Content-Length
    verify(method, u.path, u.query, {"ocp-date": DATE, "Authorization": expected}, ACCOUNT, KEY, now=AT)


def test_verify_accepts_python_sdk_query_form():
    """azure-batch keeps query names' case and drops empty values (parse_qs)."""
    headers = {"ocp-date": DATE}
    sdk_string = (
        "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:" + DATE + "\n/hpcbatch/pools\nSelect:id\napi-version:1"
    )
    mac = base64.b64encode(
        __import__("hmac").new(base64.b64decode(KEY), sdk_string.encode(), "sha256").digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{mac}"
    verify("GET", "/pools", "api-version=1&Select=id&empty=", headers, ACCOUNT, KEY, now=AT)


# ---------------------------------------------------------------------------
# canonicalization rules
# ---------------------------------------------------------------------------


def test_string_to_sign_rules():
    headers = {
        "Content-Type": "application/json",
        "Content-Length": "12",
        "Date": "Mon, 03 Nov 2025 00:00:00 GMT",  # signed empty: ocp-date present
        "If-Match": '"0x8D"',
        "OCP-Date": DATE,
        "ocp-custom": "  a\r\n b  ",
        "ocp-empty": "",
        "client-request-id": "not signed",
    }
    text = string_to_sign(
        "post", "/jobs/j%201", [("B", "2"), ("a", "x y"), ("b", "3")], headers, "acct"
    )
    assert text == (
        "POST\n"
        "\n"  # Content-Encoding
        "\n"  # Content-Language
        "12\n"  # Content-Length
        "\n"  # Content-MD5
        "application/json\n"
        "\n"  # Date (ocp-date given)
        "\n"  # If-Modified-Since
        '"0x8D"\n'
        "\n"  # If-None-Match
        "\n"  # If-Unmodified-Since
        "\n"  # Range
        "ocp-custom:a   b\n"
        f"ocp-date:{DATE}\n"
        "/acct/jobs/j%201\n"
        "a:x y\n"
        "b:2,3"
    )


def test_string_to_sign_query_forms_agree():
    headers = {"ocp-date": DATE}
    raw = string_to_sign("GET", "/jobs", "$filter=id%20eq%20%27a%2Bb%27&Timeout=30&x=", headers, "a")
    assert raw.endswith("/a/jobs\n$filter:id eq 'a+b'\ntimeout:30\nx:")
    assert raw == string_to_sign("GET", "/jobs", {"$filter": "id eq 'a+b'", "Timeout": "30", "x": ""}, headers, "a")
    assert raw == string_to_sign("GET", "/jobs?$filter=id+eq+%27a%2Bb%27&Timeout=30&x=", None, headers, "a")


def test_date_signed_when_no_ocp_date():
    text = string_to_sign("GET", "/jobs", None, {"Date": DATE}, "a")
    assert text.split("\n")[6] == DATE


# ---------------------------------------------------------------------------
# round trip through requests
# ---------------------------------------------------------------------------

ROUND_TRIPS = [
    ("GET", BASE + "/jobs?api-version=2024-07-01.20.0&$filter=state eq 'active'", None, None),
    ("POST", BASE + "/jobs?api-version=2024-07-01.20.0", JOB_BODY, JSON_TYPE),
    ("POST", BASE + "/pools/p1/stopresize?api-version=2024-07-01.20.0", None, None),
    ("PUT", BASE + "/pools/p1/updateproperties?api-version=2024-07-01.20.0", "ünïcode body",
     "text/plain; charset=utf-8"),
    ("DELETE", BASE + "/jobs/j%201?api-version=2024-07-01.20.0", None, None),
    ("HEAD", BASE + "/jobs/j1/tasks/t1/files/std%20out.txt?api-version=2024-07-01.20.0", None, None),
]


@pytest.mark.parametrize("method,url,body,ctype", ROUND_TRIPS)
def test_round_trip_prepared_request(method, url, body, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    req = _prepared(method, url, headers, body, auth=SharedKeyAuth(ACCOUNT, KEY))
    assert req.headers["Authorization"].startswith(f"SharedKey {ACCOUNT}:")
    created = datetime.strptime(req.headers["ocp-date"], "%a, %d %b %Y %H:%M:%S GMT")
    assert abs(created.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    if body is not None:
        data = body.encode() if isinstance(body, str) else body
        assert req.headers["Content-Length"] == str(len(data))
    _verify_prepared(req, now=None)


def test_shared_key_auth_keeps_given_ocp_date_and_sets_length():
    req = requests.Request("POST", BASE + "/jobs", headers={"ocp-date": DATE}).prepare()
    req.body = b"0123456789"
    del req.headers["Content-Length"]
    SharedKeyAuth(ACCOUNT, KEY)(req)
    assert req.headers["ocp-date"] == DATE
    assert req.headers["Content-Length"] == "10"
    _verify_prepared(req)
    assert KEY not in repr(SharedKeyAuth(ACCOUNT, KEY))


def test_round_trip_over_http_with_aiohttp_server():
    """Sign with requests, send over a socket, verify in an aiohttp handler."""
    from aiohttp import web

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        try:
            verify(request.method, request.raw_path, None, request.headers, ACCOUNT, KEY)
        except AuthenticationError as exc:
            seen.append(exc.code)
            return web.json_response(exc.to_wire(), status=exc.status)
        seen.append("ok")
        return web.json_response({"ok": True})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        with requests.Session() as s:
            s.auth = SharedKeyAuth(ACCOUNT, KEY)
            r1 = s.get(base + "/jobs", params={"api-version": "2024-07-01.20.0", "$filter": "state eq 'active'"},
                       timeout=10)
            r2 = s.post(base + "/jobs", params={"api-version": "1"}, json={"id": "j1"}, timeout=10)
            r3 = s.post(base + "/pools/p%201/stopresize", timeout=10)
            r4 = s.delete(base + "/jobs/j1", timeout=10)
            s.auth = SharedKeyAuth(ACCOUNT, generate_account_key())
            r5 = s.get(base + "/jobs", timeout=10)
        assert [r.status_code for r in (r1, r2, r3, r4)] == [200] * 4
        assert r5.status_code == 403
        assert r5.json()["code"] == "AuthenticationFailed"
        assert seen == ["ok"] * 4 + ["AuthenticationFailed"]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# ---------------------------------------------------------------------------
# rejections
# ---------------------------------------------------------------------------


def _signed(method="POST", url=BASE + "/jobs?api-version=2024-07-01.20.0&timeout=30", body=JOB_BODY):
    headers = {"ocp-date": DATE, "Content-Type": JSON_TYPE, "ocp-client-tag": "tag-1"}
    return _prepared(method, url, headers, body, auth=SharedKeyAuth(ACCOUNT, KEY))


def _rejects(req, match=None, **kw):
    with pytest.raises(AuthenticationError, match=match) as info:
        _verify_prepared(req, **kw)
    assert info.value.code == "AuthenticationFailed"
    assert info.value.status == 403
    return info.value


def test_untampered_request_verifies():
    _verify_prepared(_signed())


def test_tampered_content_length():
    req = _signed()
    req.headers["Content-Length"] = str(len(JOB_BODY) + 1)
    err = _rejects(req, "failed to authenticate")
    assert "Server used following string to sign" in err.values["AuthenticationErrorDetail"]


def test_tampered_empty_body_gets_length():
    req = _signed(body=None)
    _verify_prepared(req)
    req.headers["Content-Length"] = "5"
    _rejects(req)


def test_tampered_path():
    req = _signed()
    req.url = req.url.replace("/jobs", "/jobs/other")
    _rejects(req)


@pytest.mark.parametrize(
    "change",
    [
        lambda u: u.replace("timeout=30", "timeout=31"),
        lambda u: u + "&maxresults=1",
        lambda u: u.replace("&timeout=30", ""),
        lambda u: u + "&timeout=60",  # repeated name: signed as "30,60"
    ],
)
def test_tampered_query(change):
    req = _signed()
    req.url = change(req.url)
    _rejects(req)


@pytest.mark.parametrize(
    "name,value",
    [("ocp-client-tag", "tag-2"), ("ocp-extra", "1"), ("Content-Type", "application/xml"), ("If-Match", "*")],
)
def test_tampered_signed_header(name, value):
    req = _signed()
    req.headers[name] = value
    _rejects(req)


def test_removed_ocp_header():
    req = _signed()
    del req.headers["ocp-client-tag"]
    _rejects(req)


def test_tampered_method():
    req = _signed()
    req.method = "PUT"
    _rejects(req)


def test_wrong_key():
    _rejects(_signed(), key=generate_account_key())


def test_other_account():
    _rejects(_signed(), "names account 'hpcbatch'.*account 'other'", account="other")


def test_account_name_is_case_insensitive():
    req = _prepared("GET", BASE + "/jobs", {"ocp-date": DATE}, auth=SharedKeyAuth("HpcBatch", KEY))
    _verify_prepared(req)


def test_missing_authorization():
    req = _signed()
    del req.headers["Authorization"]
    _rejects(req, "no Authorization header")


@pytest.mark.parametrize(
    "value",
    ["Bearer abc", "SharedKey", "SharedKey hpcbatch", "SharedKey hpcbatch:", "SharedKey :abc",
     "SharedKey hpcbatch:not*base64"],
)
def test_malformed_authorization(value):
    req = _signed()
    req.headers["Authorization"] = value
    _rejects(req)


def test_missing_date():
    req = _prepared("GET", BASE + "/jobs", {})
    u = urlsplit(req.url)
    req.headers["Authorization"] = sign("GET", u.path, u.query, req.headers, ACCOUNT, KEY)
    _rejects(req, "neither an ocp-date nor a Date")


def test_unparsable_date():
    req = _prepared("GET", BASE + "/jobs", {"ocp-date": "yesterday"}, auth=SharedKeyAuth(ACCOUNT, KEY))
    _rejects(req, "not an RFC 1123 date")


@pytest.mark.parametrize("minutes,ok", [(14, True), (-14, True), (16, False), (-16, False)])
def test_clock_skew(minutes, ok):
    req = _signed()
    now = AT + timedelta(minutes=minutes)
    if ok:
        _verify_prepared(req, now=now)
    else:
        _rejects(req, "away from the service's clock", now=now)


def test_date_header_used_without_ocp_date():
    when = format_datetime(AT - timedelta(minutes=16), usegmt=True)
    req = _prepared("GET", BASE + "/jobs", {"Date": when})
    u = urlsplit(req.url)
    req.headers["Authorization"] = sign("GET", u.path, u.query, req.headers, ACCOUNT, KEY)
    _verify_prepared(req, now=AT - timedelta(minutes=10))
    _rejects(req, "away from the service's clock")


def test_generate_account_key():
    keys = {generate_account_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 64
