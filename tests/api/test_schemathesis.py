"""Schemathesis fuzzes every operation of the OpenAPI document against a real service, signed.

One service (real store, real Dask, no hosts) serves the run. Before it, the
test creates two sets of a pool, a job, a task and a job schedule: half of the
positive examples are aimed at ``fz-*`` and half of the negative ones at
``guard-*`` (their ids put in the path), the rest carry the ids Schemathesis
generates. For every operation of
:func:`hpcbatch.api.openapi.document`, Schemathesis generates a bounded number
of positive and negative examples (``MAX_EXAMPLES``; derandomized, so CI runs
the same requests), each sent SharedKey-signed with a fresh
``ocp-hpcbatch-nonce`` (the replay check: hpcbatch/batch/replay.py). Checked:

* no reply is a 5xx;
* no request hangs (each has ``REQUEST_TIMEOUT_S``; a timeout fails the test);
* every 4xx reply (but to HEAD, which has no body) is Batch's error body:
  JSON ``{"code", "message": {"lang", "value"}}`` with a non-empty code;
* a rejected (4xx) write on one of these objects' paths, below it or above it
  (a task's job) leaves the object as it was (its GET JSON, eTag and
  lastModified included; read after every such request). An accepted update
  (PATCH, PUT, Update Properties) makes the object's state after it the one to
  keep; any other accepted write on it (a delete, a terminate: it changes until
  it settles) ends its checks.
* a request aiohttp's HTTP parser refuses before any route (a header with a
  control character) is a 4xx like any other: Batch's error body
  (``hpcbatch/api/protocol.py``; ``tests/api/test_parser_errors.py``).

It prints the counts (requests, operations, statuses, 5xx = 0).
"""

from __future__ import annotations

import collections
import json
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from hpcbatch.api import openapi
from hpcbatch.api.server import ServiceThread
from hpcbatch.batch.replay import NONCE_HEADER
from hpcbatch.client.auth import SharedKeyAuth
from tests.api.wire import Http, batch_error
from tests.helpers import running_service

MAX_EXAMPLES = 15
"""Examples per operation and generation mode (negative, then positive): ~2,100 requests."""

REQUEST_TIMEOUT_S = 20.0
"""A request without a reply by then counts as a hang."""

PREFIXES = {GenerationMode.POSITIVE: "fz", GenerationMode.NEGATIVE: "guard"}
"""Positive examples are aimed at the ``fz-*`` objects, negative ones at ``guard-*``."""


def _targets(prefix: str) -> dict[str, str]:
    """The objects created before the run, by path parameter."""
    return {"pool": f"{prefix}-pool", "job": f"{prefix}-job", "task": f"{prefix}-task",
            "schedule": f"{prefix}-sched"}


OBJECT_PATHS = {
    f"{p}-{kind}": path.format(p=p)
    for p in PREFIXES.values()
    for kind, path in [("pool", "/pools/{p}-pool"), ("job", "/jobs/{p}-job"),
                       ("task", "/jobs/{p}-job/tasks/{p}-task"),
                       ("sched", "/jobschedules/{p}-sched")]}
"""Each object's path. A write on a path above one (the task's job) reaches it too."""

READS = ("GET", "HEAD")


class NonceSharedKeyAuth(SharedKeyAuth):
    """SharedKey signing with a fresh signed ``ocp-hpcbatch-nonce`` per request, as
    hpcbatch's own client sends (two equal fuzzed requests are two requests, not a replay)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers[NONCE_HEADER] = secrets.token_hex(16)
        request.headers.pop("ocp-date", None)  # signed fresh
        return super().__call__(request)


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    """A service of its own: the fuzzer creates and deletes many objects."""
    with running_service(tmp_path_factory.mktemp("fuzz")) as (_client, thread):
        yield thread


def _get(http: Http, path: str) -> tuple[int, Any, str | None]:
    """An object as a client sees it: status, JSON (eTag, lastModified ...), ``ETag``."""
    resp = http("GET", path)
    body = resp.json() if resp.content else None
    if isinstance(body, dict) and resp.status_code >= 400:
        body = {k: v for k, v in body.items() if k != "message"}  # request id, time
    return resp.status_code, body, resp.headers.get("ETag")


def _create_targets(http: Http, prefix: str) -> None:
    for path, body in [
        ("/pools", {"id": f"{prefix}-pool", "vmSize": "standard_d2s_v3",
                    "targetDedicatedNodes": 0, "metadata": [{"name": "k", "value": "v"}]}),
        ("/jobs", {"id": f"{prefix}-job", "poolInfo": {"poolId": f"{prefix}-pool"},
                   "priority": 5}),
        (f"/jobs/{prefix}-job/tasks", {"id": f"{prefix}-task", "commandLine": "/bin/true"}),
        ("/jobschedules", {"id": f"{prefix}-sched",
                           "schedule": {"doNotRunUntil": "2999-01-01T00:00:00Z"},
                           "jobSpecification": {"poolInfo": {"poolId": f"{prefix}-pool"}}}),
    ]:
        resp = http("POST", path, body)
        assert resp.status_code == 201, resp.text


def _batch_error_problem(resp: requests.Response) -> str | None:
    """Why ``resp`` (a 4xx) is not Batch's error body; None when it is."""
    try:
        body = resp.json()
    except ValueError:
        return f"not JSON: {resp.text[:200]!r}"
    if not isinstance(body, dict):
        return f"not an object: {resp.text[:200]!r}"
    code, message = body.get("code"), body.get("message")
    if not (isinstance(code, str) and re.fullmatch(r"[A-Z][A-Za-z]+", code)):
        return f"no Batch code: {body!r}"[:300]
    if not (isinstance(message, dict) and message.get("lang") == "en-US"
            and isinstance(message.get("value"), str)):
        return f"no Batch message: {body!r}"[:300]
    return None


@pytest.mark.timeout(900)
def test_fuzz_every_operation_signed(fuzz_service: ServiceThread,
                                     record_property: Callable[[str, object], None]) -> None:
    runtime = fuzz_service.runtime
    assert runtime.credentials is not None
    account, key = runtime.credentials.account_name, runtime.credentials.key
    http = Http(runtime.endpoint, account, key)
    for prefix in PREFIXES.values():
        _create_targets(http, prefix)
    pristine = {name: _get(http, path) for name, path in OBJECT_PATHS.items()}
    assert all(status == 200 for status, _, _ in pristine.values())

    session = requests.Session()
    session.auth = NonceSharedKeyAuth(account, key)
    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in schema.get_all_operations()]
    # deletes and terminations last: an object they reach leaves the unchanged check
    operations.sort(key=lambda op: op.method.upper() == "DELETE" or op.path.endswith(
        ("/terminate", "/disable", "/resize", "/removenodes", "/enableautoscale")))
    statuses: collections.Counter[int] = collections.Counter()
    per_operation: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    not_sent: collections.Counter[str] = collections.Counter()
    accepted_on: dict[str, str] = {}
    rejected_checked: collections.Counter[str] = collections.Counter()
    aim = iter(range(10 ** 9))
    unsatisfiable: list[str] = []
    parser_refused = 0

    def send(case: Any, *, targets: dict[str, str]) -> None:
        if next(aim) % 2 == 0:  # every other request at the objects made before the run
            for name in list(case.path_parameters or {}):
                if name in targets:
                    case.path_parameters[name] = targets[name]
        label = f"{case.method} {case.path}"
        try:
            resp = case.call(base_url=runtime.endpoint, session=session,
                             timeout=REQUEST_TIMEOUT_S)
        except requests.Timeout:
            failures.append(f"hang: {label} {case.formatted_path}")
            return
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
                UnicodeError, ValueError) as exc:  # the client could not send it
            not_sent[type(exc).__name__] += 1
            return
        statuses[resp.status_code] += 1
        per_operation[label] += 1
        where = f"{label} -> {resp.status_code} ({case.formatted_path} {case.query} " \
                f"{json.dumps(case.body, default=str)[:300] if case.body is not None else ''})"
        if resp.status_code >= 500:
            failures.append(f"5xx: {where}: {resp.text[:300]}")
        elif resp.status_code >= 400 and case.method != "HEAD":
            problem = _batch_error_problem(resp)
            if problem:
                failures.append(f"not a Batch error: {where}: {problem}")
            elif "The request is not valid HTTP: " in resp.text:
                # aiohttp's HTTP parser refused the message (a header with a control
                # character) before any route; api/protocol.py answered it
                nonlocal parser_refused
                parser_refused += 1
        if case.method in READS:
            return
        path = case.formatted_path
        related = [name for name, obj_path in OBJECT_PATHS.items()
                   if path == obj_path or path.startswith(obj_path + "/")
                   or obj_path.startswith(path + "/")]
        for name in related:
            if name not in pristine:
                continue
            if resp.status_code < 400:
                if case.method in ("PATCH", "PUT") or path.endswith("/updateproperties"):
                    pristine[name] = _get(http, OBJECT_PATHS[name])  # updated at once
                else:  # a delete, terminate, resize...: it may change until it settles
                    del pristine[name]
                    accepted_on[name] = where
                continue
            now = _get(http, OBJECT_PATHS[name])
            rejected_checked[name] += 1
            if now != pristine[name]:
                failures.append(f"{name} changed by a rejected request: {where}: "
                                f"{pristine[name]} -> {now}")
                del pristine[name]

    def aimed_at(targets: dict[str, str]) -> Callable[[Any], None]:
        def one(case: Any) -> None:
            send(case, targets=targets)
        return one

    for op in operations:
        for mode in (GenerationMode.NEGATIVE, GenerationMode.POSITIVE):
            targets = _targets(PREFIXES[mode])
            strategy = op.as_strategy(generation_mode=mode)
            run = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                           database=None, phases=[Phase.generate],
                           suppress_health_check=list(HealthCheck))(
                given(strategy)(aimed_at(targets)))
            try:
                run()
            except Unsatisfiable:  # nothing of this operation can be made invalid
                assert mode is GenerationMode.NEGATIVE, op.label
                unsatisfiable.append(op.label)

    total = sum(statuses.values())
    record_property("schemathesis", {"requests": total, "operations": len(per_operation),
                                     "server_errors": sum(n for s, n in statuses.items()
                                                          if s >= 500),
                                     "rejected_writes_checked": sum(rejected_checked.values())})
    print(f"\nschemathesis: {total} requests, {len(per_operation)} of {len(operations)} "
          f"operations, 5xx = {sum(n for s, n in statuses.items() if s >= 500)}, "
          f"statuses {dict(sorted(statuses.items()))}, not sent by the client "
          f"{dict(not_sent)}, refused by the HTTP parser {parser_refused}, operations without "
          f"negative examples {unsatisfiable}, rejected writes checked to change nothing "
          f"{sum(rejected_checked.values())} {dict(rejected_checked)}, objects first changed "
          f"by an accepted write {accepted_on}")
    assert not failures, "\n".join(failures[:40]) + f"\n({len(failures)} failures)"
    assert len(per_operation) == len(operations)  # every operation was sent
    assert total >= len(operations) * MAX_EXAMPLES  # a bounded run that did run
    assert sum(rejected_checked.values()) >= 100, "the unchanged check checked (almost) nothing"


def test_header_not_utf8_is_refused_not_a_500(fuzz_service: ServiceThread) -> None:
    """Found by the run above: a signed header whose bytes are not UTF-8 (``requests`` sends
    ``é`` as Latin-1) made the signature check raise UnicodeEncodeError (500); it is now
    checked over the bytes received and fails as any wrong signature does."""
    runtime = fuzz_service.runtime
    assert runtime.credentials is not None
    http = Http(runtime.endpoint, runtime.credentials.account_name, runtime.credentials.key)
    for method, path in [("GET", "/pools"), ("PATCH", "/jobs/nope")]:
        resp = http(method, path, {} if method == "PATCH" else None,
                    headers={"If-Match": "caf\u00e9"})
        body = batch_error(resp, 403, "AuthenticationFailed")
        assert body["values"][0]["key"] == "AuthenticationErrorDetail"
