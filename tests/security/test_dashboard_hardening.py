"""The dashboard keeps the REST API's promises (docs/security.md, "Dashboard: browser sessions
instead of SharedKey"): minting a sign-in link follows the "No replays" rules of every SharedKey
request, and every dashboard action checks its input as its REST operation does ("Input
hardening"). Each attack is tried and must change nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from time import time
from typing import Any

import pytest
import requests

from hpcbatch.api.dashboard.routes import ACTION_EVENT, AUDIT_MAX_CHARS
from hpcbatch.client.auth import authorize, content_length
from hpcbatch.client.sdk import BatchClient
from hpcbatch.client.state import service_connection
from tests.helpers import running_service

API = "api-version=2025-06-01"


class Svc:
    def __init__(self, client: BatchClient, thread: Any, account: str, key: str) -> None:
        self.client, self.thread, self.account, self.key = client, thread, account, key
        self.endpoint = client.endpoint


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    """A service without nodes: what is tried here needs none."""
    state = tmp_path_factory.mktemp("dashsec") / "state"
    with running_service(state, scheduler_host="127.0.0.1") as (client, thread):
        conn = service_connection(state)
        yield Svc(client, thread, conn.account, conn.key)


def signed_like_the_cli(svc: Svc, method: str, path: str, body: bytes | None = None,
                        date: str | None = None) -> dict[str, str]:
    """Headers as ``hpcbatch dashboard`` signs its request (the client's ``authorize``)."""
    headers = {"Accept": "application/json"}
    if date is not None:
        headers["ocp-date"] = date
    length = content_length(method, None if body is None else len(body))
    if length is not None:
        headers["Content-Length"] = length
    if body is not None:
        headers["Content-Type"] = "application/json; odata=minimalmetadata"
    authorize(method, f"{svc.endpoint}{path}?{API}", headers, svc.account, svc.key, nonce=True)
    return headers


def send(svc: Svc, method: str, path: str, headers: dict[str, str],
         body: bytes | None = None) -> requests.Response:
    return requests.request(method, f"{svc.endpoint}{path}?{API}", headers=headers, data=body,
                            allow_redirects=False, timeout=30)


def first_line(err: dict[str, Any]) -> str:
    return str(err["message"]["value"]).split("\nRequestId:")[0]


# ------------------------------------------------------------ 1. sign-in link replay


def test_a_replayed_sign_in_link_request_is_refused_as_the_rest_api_refuses_a_replay(
        svc: Svc) -> None:
    headers = signed_like_the_cli(svc, "POST", "/dashboard/tokens")
    answers = [send(svc, "POST", "/dashboard/tokens", headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 403, 403]
    # the REST API's answer to a replay, for comparison
    body = json.dumps({"id": "replay-ref", "poolInfo": {"poolId": "nopool"}}).encode()
    rest = signed_like_the_cli(svc, "POST", "/jobs", body)
    assert send(svc, "POST", "/jobs", rest, body).status_code == 201
    ref = send(svc, "POST", "/jobs", rest, body)
    assert ref.status_code == 403
    for refused in answers[1:]:
        err = refused.json()
        assert err["code"] == ref.json()["code"] == "AuthenticationFailed"
        assert first_line(err) == first_line(ref.json())
        assert "replay" in first_line(err) and "token" not in refused.text
    # one working sign-in link, not three
    url = answers[0].json()["url"]
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 303


def test_a_sign_in_link_request_resent_with_another_request_id_is_refused(svc: Svc) -> None:
    """The REST API keys an official SDK's body-less call by its (unsigned) request ID too;
    minting does not: a captured request made new by that header would mint a token."""
    headers = {"ocp-date": formatdate(usegmt=True), "Content-Length": "0",
               "client-request-id": str(uuid.uuid4())}
    authorize("POST", f"{svc.endpoint}/dashboard/tokens?{API}", headers, svc.account, svc.key,
              nonce=False)
    assert send(svc, "POST", "/dashboard/tokens", headers).status_code == 201
    for name in ("client-request-id", "x-ms-client-request-id"):
        resent = send(svc, "POST", "/dashboard/tokens", {**headers, name: str(uuid.uuid4())})
        assert resent.status_code == 403 and "token" not in resent.text, resent.text
        assert resent.json()["code"] == "AuthenticationFailed"


def test_a_sign_in_link_request_with_a_body_is_refused(svc: Svc) -> None:
    # Without Content-MD5 a signature covers only a body's length: a captured request
    # resent with other bytes of that length would be a new request to the replay check.
    answers = []
    for body in (b'{"a": 1}', b'{"a": 2}'):
        headers = signed_like_the_cli(svc, "POST", "/dashboard/tokens", body)
        answers.append(send(svc, "POST", "/dashboard/tokens", headers, body))
    assert [a.status_code for a in answers] == [400, 400]
    assert all(a.json()["code"] == "InvalidRequestBody" and "token" not in a.json()
               for a in answers)


def test_sign_in_link_requests_follow_the_clock_skew_rule_and_want_the_key(svc: Svc) -> None:
    stale = formatdate(time() - 20 * 60, usegmt=True)  # outside Batch's 15 minutes
    r = send(svc, "POST", "/dashboard/tokens",
             signed_like_the_cli(svc, "POST", "/dashboard/tokens", date=stale))
    assert (r.status_code, r.json()["code"]) == (403, "AuthenticationFailed")
    assert "token" not in r.json()
    # a job token is no key: refused like any operation outside its job
    r = requests.post(f"{svc.endpoint}/dashboard/tokens?{API}", timeout=10,
                      headers={"Authorization": "Bearer hbt2.e30.AAAA", "Content-Length": "0"})
    assert r.status_code == 403 and "token" not in r.json()
    # and a fresh, signed request still mints one (the client's own way)
    assert "/dashboard/signin?token=" in svc.client.dashboard_sign_in_url()


# ---------------------------------------------------------------- 2. action inputs


@pytest.fixture(scope="module")
def browser_session(svc: Svc) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{svc.endpoint}/dashboard/signin", data={"key": svc.key}, allow_redirects=False,
               timeout=10)
    assert r.status_code == 303
    csrf = s.get(f"{svc.endpoint}/dashboard/api/session", timeout=10).json()["csrf"]
    s.headers["X-CSRF-Token"] = csrf
    return s


def act(svc: Svc, s: requests.Session, name: str, body: Any) -> requests.Response:
    return s.post(f"{svc.endpoint}/dashboard/api/actions/{name}", json=body, timeout=30)


def audits(svc: Svc) -> list[dict[str, Any]]:
    return [e["body"] for e in svc.thread.runtime.service.ctx.events.read()
            if e["name"] == ACTION_EVENT]


def test_a_100000_character_terminate_reason_is_refused_as_rest_refuses_it(
        svc: Svc, browser_session: requests.Session) -> None:
    client = svc.client
    client.create_job({"id": "long-reason", "poolInfo": {"poolId": "nopool"}})
    etag = client.get_job("long-reason").e_tag
    reason = "x" * 100_000
    body = json.dumps({"terminateReason": reason}).encode()
    via_rest = send(svc, "POST", "/jobs/long-reason/terminate",
                    signed_like_the_cli(svc, "POST", "/jobs/long-reason/terminate", body), body)
    r = act(svc, browser_session, "terminateJob", {"jobId": "long-reason",
                                                    "terminateReason": reason})
    assert via_rest.status_code == r.status_code == 400
    err = r.json()
    assert err["code"] == via_rest.json()["code"] == "InvalidPropertyValue"
    values = {v["key"]: v["value"] for v in err.get("values", [])}
    assert values.get("PropertyName") == "terminateReason", err
    job = client.get_job("long-reason")
    assert job.state == "active" and job.e_tag == etag  # nothing changed
    assert job.execution_info is None or job.execution_info.terminate_reason is None
    refused = audits(svc)[-1]
    assert refused["action"] == "terminateJob" and refused["outcome"] == "InvalidPropertyValue"
    assert len(refused["terminateReason"]) <= AUDIT_MAX_CHARS + 1  # the log does not grow by it
    # a valid reason (up to 1,024 characters, Batch's) still terminates
    r = act(svc, browser_session, "terminateJob", {"jobId": "long-reason",
                                                    "terminateReason": "y" * 1024})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(("action", "extra", "field"), [
    ("resizePool", {"targetDedicatedNodes": "3"}, "targetDedicatedNodes"),
    ("resizePool", {"targetDedicatedNodes": 2**40}, "targetDedicatedNodes"),
    ("resizePool", {"targetDedicatedNodes": 1, "resizeTimeout": "PT1M"}, "resizeTimeout"),
    ("enableAutoScale", {"autoScaleFormula": "$TargetDedicatedNodes = 0;",
                         "autoScaleEvaluationInterval": "PT0S"}, "autoScaleEvaluationInterval"),
])
def test_pool_actions_refuse_what_their_rest_operations_refuse(
        svc: Svc, browser_session: requests.Session, action: str, extra: dict[str, Any],
        field: str) -> None:
    client = svc.client
    if "dash-pool" not in {p.id for p in client.list_pools()}:
        client.create_pool({"id": "dash-pool", "vmSize": "any", "targetDedicatedNodes": 0})
    before = client.get_pool("dash-pool")
    r = act(svc, browser_session, action, {"poolId": "dash-pool", **extra})
    assert r.status_code == 400, r.text
    values = {v["key"]: v["value"] for v in r.json().get("values", [])}
    assert field in str(values.get("PropertyName", "")) or field in r.json()["message"]["value"]
    after = client.get_pool("dash-pool")
    assert after.e_tag == before.e_tag and not after.enable_auto_scale
    assert after.target_dedicated_nodes == before.target_dedicated_nodes


@pytest.mark.parametrize(("action", "body"), [
    ("terminateTask", {"jobId": "nojob", "taskId": "t", "surprise": 1}),
    ("rebootNode", {"poolId": "nopool", "nodeId": "n", "surprise": 1}),
    ("removeNode", {"poolId": "nopool", "nodeId": "n", "nodeList": ["a", "b"]}),
    ("disableAutoScale", {"poolId": "nopool", "surprise": True}),
    ("terminateJob", {"jobId": "nojob", "surprise": 1}),
])
def test_every_action_refuses_properties_its_operation_does_not_take(
        svc: Svc, browser_session: requests.Session, action: str, body: dict[str, Any]) -> None:
    r = act(svc, browser_session, action, body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] in ("InvalidRequestBody", "InvalidPropertyValue")
