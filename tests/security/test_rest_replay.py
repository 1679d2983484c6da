"""Signatures bound to bodies, no replays (docs/security.md, "REST API: transport, signatures,
replay"): each attempt is refused with Batch's code and changes nothing."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import time
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest

from hpcbatch.batch.replay import NONCE_HEADER, ReplayCache
from hpcbatch.batch.sharedkey import sign
from hpcbatch.client.sdk import BatchClient
from hpcbatch.client.state import service_connection
from tests.helpers import running_service

API = "api-version=2025-06-01"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, str, str]]:
    """A service (no nodes needed); yields the operator's client, the account and its key."""
    state = tmp_path_factory.mktemp("replay") / "state"
    with running_service(state, scheduler_host="127.0.0.1") as (client, _thread):
        conn = service_connection(state)
        yield client, conn.account, conn.key


def signed(client: BatchClient, account: str, key: str, method: str, path: str,
           body: bytes | None = None, md5: bool = False, **extra: str) -> dict[str, str]:
    """Headers as the official SDKs sign them: ocp-date, Content-Length, no nonce."""
    headers = {"ocp-date": formatdate(usegmt=True), **extra}
    if body is not None:
        headers["Content-Type"] = "application/json; odata=minimalmetadata"
        headers["Content-Length"] = str(len(body))
    elif method not in ("GET", "HEAD"):
        headers["Content-Length"] = "0"
    if md5 and body is not None:
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers["Authorization"] = sign(method, path, API, headers, account, key)
    return headers


def send(client: BatchClient, method: str, path: str, headers: dict[str, str],
         body: bytes | None = None, chunked: bool = False) -> tuple[int, dict]:
    url = urlsplit(client.endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, f"{path}?{API}", body=iter([body]) if chunked else body,
                     headers=headers, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        conn.close()


def job_body(job_id: str) -> bytes:
    return json.dumps({"id": job_id, "poolInfo": {"poolId": "nopool"}}).encode()


def job_ids(client: BatchClient) -> set[str]:
    return {j.id for j in client.list_jobs()}


def test_a_replayed_request_is_refused_and_changes_nothing(svc) -> None:
    client, account, key = svc
    body = job_body("replayed-job")
    headers = signed(client, account, key, "POST", "/jobs", body)
    assert send(client, "POST", "/jobs", headers, body)[0] == 201
    client.delete_job("replayed-job")
    # the captured creation, sent again within the 15-minute window, would bring it back
    status, err = send(client, "POST", "/jobs", headers, body)
    assert status == 403 and err["code"] == "AuthenticationFailed"
    assert "replay" in err["message"]["value"] and "already used" in err["message"]["value"]
    assert {j.id: j.state for j in client.list_jobs()}.get("replayed-job") in (None, "deleting")


def test_a_body_swapped_under_a_used_signature_fails_its_content_md5(svc) -> None:
    """Our client signs Content-MD5: the captured signature does not fit another body."""
    client, account, key = svc
    first, second = job_body("swap-aaa"), job_body("swap-bbb")
    assert len(first) == len(second)
    headers = signed(client, account, key, "POST", "/jobs", first, md5=True)
    assert send(client, "POST", "/jobs", headers, first)[0] == 201
    status, err = send(client, "POST", "/jobs", headers, second)  # same signature, other body
    assert (status, err["code"]) == (400, "Md5Mismatch")
    status, err = send(client, "POST", "/jobs", headers, first)  # and the original is used up
    assert (status, err["code"]) == (403, "AuthenticationFailed")
    assert "swap-bbb" not in job_ids(client)


def test_same_length_bodies_in_one_second_from_an_official_sdk_are_not_replays(svc) -> None:
    """Without Content-MD5 (the official SDKs), two tasks of one length added in one second
    carry one signature: legitimate, so the replay key includes the body (docs/security.md)."""
    client, account, key = svc
    client.create_job({"id": "loop", "poolInfo": {"poolId": "nopool"}})
    bodies = [json.dumps({"id": f"t{i}", "commandLine": "/bin/true"}).encode() for i in range(5)]
    date = formatdate(usegmt=True)
    sent = [signed(client, account, key, "POST", "/jobs/loop/tasks", b, **{"ocp-date": date})
            for b in bodies]
    assert len({h["Authorization"] for h in sent}) == 1
    assert [send(client, "POST", "/jobs/loop/tasks", h, b)[0] for h, b in zip(sent, bodies)] \
        == [201] * 5
    status, err = send(client, "POST", "/jobs/loop/tasks", sent[0], bodies[0])  # a true replay
    assert (status, err["code"]) == (403, "AuthenticationFailed")
    assert sorted(t.id for t in client.list_tasks("loop")) == [f"t{i}" for i in range(5)]


def test_a_body_swapped_before_the_original_is_sent_fails_its_content_md5(svc) -> None:
    """What our own client sends: Content-MD5 binds the body even over plain HTTP."""
    client, account, key = svc
    first, second = job_body("md5-aaa"), job_body("md5-bbb")
    headers = signed(client, account, key, "POST", "/jobs", first, md5=True)
    status, err = send(client, "POST", "/jobs", headers, second)
    assert (status, err["code"]) == (400, "Md5Mismatch")
    assert {"key": "HeaderName", "value": "Content-MD5"} in err["values"]
    assert not {"md5-aaa", "md5-bbb"} & job_ids(client)
    # the refused attempt did not use up the signature: the genuine request still goes through
    assert send(client, "POST", "/jobs", headers, first)[0] == 201
    assert "md5-aaa" in job_ids(client)


def test_a_malformed_content_md5_is_refused(svc) -> None:
    client, account, key = svc
    body = job_body("md5-bad")
    headers = signed(client, account, key, "POST", "/jobs", body, **{"Content-MD5": "nope"})
    status, err = send(client, "POST", "/jobs", headers, body)
    assert (status, err["code"]) == (400, "InvalidHeaderValue")
    assert "md5-bad" not in job_ids(client)


def test_a_chunked_body_cannot_ride_on_an_empty_bodys_signature(svc) -> None:
    client, account, key = svc
    # signed as a body-less POST (Content-Length 0 or absent), sent with a chunked body
    headers = signed(client, account, key, "POST", "/jobs")
    del headers["Content-Length"]
    headers["Authorization"] = sign("POST", "/jobs", API, headers, account, key)
    status, err = send(client, "POST", "/jobs", headers, job_body("chunky"), chunked=True)
    assert (status, err["code"]) == (411, "MissingContentLengthHeader")
    assert "chunky" not in job_ids(client)


def raw_exchange(client: BatchClient, data: bytes, half_close: bool = True) -> bytes:
    """Send ``data`` on a new connection (then close our side), return everything answered
    until the service closes the connection."""
    url = urlsplit(client.endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def request_bytes(headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /jobs?{API} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body


def test_a_body_shorter_than_its_content_length_is_never_processed(svc) -> None:
    client, account, key = svc
    body = job_body("short-body")
    headers = signed(client, account, key, "POST", "/jobs", body + b" " * 40)
    reply = raw_exchange(client, request_bytes(headers, body))  # 40 bytes short
    # the connection ends before the body does: no reply can be sent, nothing is done
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert "short-body" not in job_ids(client)


def test_bytes_beyond_content_length_are_not_part_of_the_signed_request(svc) -> None:
    client, account, key = svc
    body = job_body("cl-first")
    tail = job_body("smuggled-job")
    headers = signed(client, account, key, "POST", "/jobs", body)
    reply = raw_exchange(client, request_bytes(headers, body + tail), half_close=False)
    # the tail is parsed as a next request, a malformed one: the connection is refused with
    # 400 (the signed request may or may not have been served before); the tail never is
    assert b" 400 Bad Request" in reply, reply[:300]
    assert "smuggled-job" not in job_ids(client)


def test_identical_reads_may_repeat_but_not_with_a_nonce(svc) -> None:
    """An SDK polling a GET twice in one second signs it identically; that is allowed.
    A read carrying the nonce header (what hpcbatch's clients send) is one-time."""
    client, account, key = svc
    headers = signed(client, account, key, "GET", "/jobs")
    assert [send(client, "GET", "/jobs", headers)[0] for _ in range(3)] == [200, 200, 200]
    once = signed(client, account, key, "GET", "/jobs", **{NONCE_HEADER: "n-1"})
    assert send(client, "GET", "/jobs", once)[0] == 200
    status, err = send(client, "GET", "/jobs", once)
    assert (status, err["code"]) == (403, "AuthenticationFailed")


def test_our_client_never_trips_the_replay_check(svc) -> None:
    """The SDK signs each request with a new nonce: identical calls in one second all pass."""
    client, _, _ = svc
    client.create_job({"id": "same-second", "poolInfo": {"poolId": "nopool"}})
    started = time.monotonic()
    for _ in range(20):
        client.update_job("same-second", {"priority": 5})  # identical PATCH, same second
    assert time.monotonic() - started < 60
    assert client.get_job("same-second").priority == 5


# ------------------------------------------------------------------ the cache itself


def test_replay_cache_is_bounded_and_never_accepts_an_evicted_signature() -> None:
    cache = ReplayCache(window_s=10_000, capacity=1000)
    now = 1_000_000.0
    for i in range(5000):
        assert cache.admit(i.to_bytes(16, "big"), now - 5000 + i, now) is None
        assert len(cache) <= 1000
    # signatures evicted under pressure are refused by the floor, never accepted again
    assert cache.floor == now - 5000 + 3999
    assert cache.admit((0).to_bytes(16, "big"), now - 5000, now) is not None
    assert cache.admit((3999).to_bytes(16, "big"), now - 5000 + 3999, now) is not None
    # a remembered one is a replay; a new, current one is fine
    assert "already used" in (cache.admit((4999).to_bytes(16, "big"), now - 1, now) or "")
    assert cache.admit(b"fresh-signature!", now, now) is None


def test_replay_cache_forgets_what_left_the_date_window() -> None:
    cache = ReplayCache(window_s=900, capacity=10)
    cache.admit(b"a" * 16, 0.0, 0.0)
    cache.admit(b"b" * 16, 10.0, 10.0)
    assert len(cache) == 2
    cache.admit(b"c" * 16, 905.0, 905.0)  # "a" is now more than 900 s (+1) old
    assert len(cache) == 2 and cache.floor == float("-inf")


def test_replay_cache_stays_at_its_capacity_under_load() -> None:
    """O(1) per request: 300,000 admissions into a 100,000-entry cache."""
    cache = ReplayCache(window_s=900, capacity=100_000)
    for i in range(300_000):
        cache.admit(hashlib.sha256(i.to_bytes(8, "big")).digest(), 1000.0 + i / 1000, 1300.0)
    assert len(cache) == 100_000


def test_one_bodyless_call_twice_in_one_second_from_an_official_sdk_is_not_a_replay(svc
                                                                                     ) -> None:
    """The official SDKs sign no per-call value, but send a new ``client-request-id`` with
    every call: a job schedule disabled twice (or enabled, disabled) within one second gets
    Batch's answers, not a replay refusal; the same call sent again still is one."""
    client, account, key = svc
    client.create_job_schedule({"id": "twice", "schedule": {"recurrenceInterval": "P1D"},
                                "jobSpecification": {"poolInfo": {"poolId": "nopool"}}})
    path = "/jobschedules/twice/disable"
    date = formatdate(usegmt=True)
    sent = [signed(client, account, key, "POST", path, **{"ocp-date": date,
                                                          "client-request-id": str(uuid.uuid1())})
            for _ in range(2)]
    assert sent[0]["Authorization"] == sent[1]["Authorization"]
    assert send(client, "POST", path, sent[0])[0] == 204
    status, err = send(client, "POST", path, sent[1])
    assert status != 403, err
    assert client.get_job_schedule("twice")["state"] == "disabled"
    status, err = send(client, "POST", path, sent[0])  # the first call, captured and resent
    assert (status, err["code"]) == (403, "AuthenticationFailed")


def test_an_official_sdk_request_with_a_body_and_its_request_id_is_refused_when_resent(svc
                                                                                      ) -> None:
    """The request ID is in the replay key of a request with a body too: the captured
    request, sent again as it was (request IDs included), is still a replay and adds
    nothing, after the job it made was deleted."""
    client, account, key = svc
    body = job_body("rid-job")
    ids = {"client-request-id": str(uuid.uuid4()), "x-ms-client-request-id": str(uuid.uuid4())}
    headers = signed(client, account, key, "POST", "/jobs", body, **ids)
    assert send(client, "POST", "/jobs", headers, body)[0] == 201
    client.delete_job("rid-job")
    status, err = send(client, "POST", "/jobs", headers, body)
    assert (status, err["code"]) == (403, "AuthenticationFailed"), err
    assert "replay" in err["message"]["value"]
    assert {j.id: j.state for j in client.list_jobs()}.get("rid-job") in (None, "deleting")
