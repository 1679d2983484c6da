"""Random requests never get a 5xx: property-based fuzzing of the REST API (Hypothesis).

Bodies are random JSON, or objects whose keys are the operation's real property names
with random JSON values (so validation is exercised past the first unknown property);
headers and query parameters are random text. Every answer is below 500, and every
4xx carries Batch's error body with a code. The number of examples is bounded so the
module runs in seconds.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcbatch.api.http import JSON_CONTENT_TYPE
from tests.api.wire import Http

EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES", "30"))
"""Examples per test (each one HTTP request)."""

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
            | st.sampled_from(["PT0S", "PT5M", "P1D", "-PT1H", "0770", "admin", "god", "3",
                               "$TargetDedicatedNodes = 1;", "TimeInterval_Second * 1e300",
                               "fz", "any", "bytes=0-1", "\x00", "a\n"]))
JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
"""Any JSON value."""

POOL_KEYS = ["id", "vmSize", "displayName", "targetDedicatedNodes", "targetLowPriorityNodes",
             "enableAutoScale", "autoScaleFormula", "autoScaleEvaluationInterval",
             "resizeTimeout", "taskSlotsPerNode", "startTask", "metadata",
             "taskSchedulingPolicy", "enableInterNodeCommunication", "userAccounts",
             "applicationPackageReferences"]
JOB_KEYS = ["id", "poolInfo", "priority", "maxParallelTasks", "constraints", "metadata",
            "jobManagerTask", "jobPreparationTask", "jobReleaseTask", "onAllTasksComplete",
            "onTaskFailure", "usesTaskDependencies", "commonEnvironmentSettings", "displayName"]
TASK_KEYS = ["id", "commandLine", "constraints", "requiredSlots", "userIdentity",
             "resourceFiles", "outputFiles", "environmentSettings", "dependsOn",
             "exitConditions", "multiInstanceSettings", "affinityInfo", "displayName",
             "applicationPackageReferences"]
NESTED = {
    "poolInfo": st.fixed_dictionaries({"poolId": st.sampled_from(["fz", "none"])}),
    "constraints": st.dictionaries(st.sampled_from(
        ["maxTaskRetryCount", "maxWallClockTime", "retentionTime"]), _SCALARS, max_size=3),
    "userIdentity": st.fixed_dictionaries({"autoUser": st.dictionaries(
        st.sampled_from(["scope", "elevationLevel"]), _SCALARS, max_size=2)}),
    "resourceFiles": st.lists(st.dictionaries(st.sampled_from(
        ["httpUrl", "filePath", "fileMode", "storageContainerUrl", "blobPrefix"]), _SCALARS,
        max_size=4), max_size=2),
    "metadata": st.lists(st.dictionaries(st.sampled_from(["name", "value"]), _SCALARS,
                                         max_size=2), max_size=2),
}


def _objects(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of ``keys``, each with a random (or plausibly shaped) value."""
    value = {k: NESTED.get(k, JSON) for k in keys}
    return st.lists(st.sampled_from(keys), max_size=6, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: value[k] for k in chosen}))


def _body(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(_objects(keys), JSON)


def _check(resp: Any) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code >= 400:
        assert resp.headers["Content-Type"] == JSON_CONTENT_TYPE, resp.text[:200]
        body = resp.json()
        assert body["code"] and body["message"]["value"], body


@pytest.fixture(scope="module")
def fz(http: Http) -> str:
    """A pool ``fz`` and jobs ``fz`` and ``fz2`` on it, for the operations that address them."""
    assert http("POST", "/pools", {"id": "fz", "vmSize": "any"}).status_code == 201
    for job in ("fz", "fz2"):
        assert http("POST", "/jobs", {"id": job, "poolInfo": {"poolId": "fz"}}).status_code == 201
    return "fz"


OPERATIONS = [
    ("POST", "/pools", POOL_KEYS),
    ("PATCH", "/pools/fz", POOL_KEYS),
    ("POST", "/pools/fz/updateproperties", POOL_KEYS),
    ("POST", "/pools/fz/resize", ["targetDedicatedNodes", "targetLowPriorityNodes",
                                  "resizeTimeout", "nodeDeallocationOption"]),
    ("POST", "/pools/fz/enableautoscale", ["autoScaleFormula", "autoScaleEvaluationInterval"]),
    ("POST", "/pools/fz/evaluateautoscale", ["autoScaleFormula"]),
    ("POST", "/pools/fz/removenodes", ["nodeList", "resizeTimeout", "nodeDeallocationOption"]),
    ("POST", "/jobs", JOB_KEYS),
    ("PATCH", "/jobs/fz", JOB_KEYS),
    ("POST", "/jobs/fz/tasks", TASK_KEYS),
    ("POST", "/jobs/fz/addtaskcollection", ["value"]),
    ("POST", "/jobschedules", ["id", "schedule", "jobSpecification", "metadata",
                               "displayName"]),
    ("POST", "/jobs/fz2/disable", ["disableTasks"]),
    ("POST", "/jobs/fz2/terminate", ["terminateReason"]),
    ("PATCH", "/applications/fz", ["defaultVersion"]),
]


@pytest.mark.parametrize(("method", "path", "keys"), OPERATIONS,
                         ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_random_bodies_never_get_a_5xx(http: Http, fz: str, method: str, path: str,
                                       keys: list[str]):
    @FUZZ
    @given(body=_body(keys))
    def run(body: Any) -> None:
        _check(http(method, path, body))

    run()


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes_as_a_body_never_get_a_5xx(http: Http, fz: str, raw: bytes):
    _check(http("POST", "/jobs/fz/tasks", raw=raw))


_HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ",
                       max_size=40)
"""Header values HTTP allows (control characters: tests/api/test_parser_errors.py)."""
HEADERS = ["ocp-range", "Range", "If-Match", "If-None-Match", "If-Modified-Since",
           "If-Unmodified-Since", "client-request-id", "return-client-request-id"]


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(HEADERS), _HEADER_TEXT, max_size=3),
       path=st.sampled_from(["/pools/fz", "/jobs/fz", "/jobs/fz/tasks/none/files/stdout.txt",
                             "/pools/fz/nodes/none/files/x"]))
def test_random_headers_never_get_a_5xx(http: Http, fz: str, headers: dict[str, str],
                                        path: str):
    _check(http("GET", path, headers={k: v.strip() for k, v in headers.items()}))


@FUZZ
@given(params=st.dictionaries(
    st.sampled_from(["$filter", "$select", "$expand", "maxresults", "$skiptoken", "timeout",
                     "api-version"]),
    st.text(max_size=60) | st.sampled_from(["state eq 'active'", "id", "stats", "1000"]),
    max_size=3),
    path=st.sampled_from(["/pools", "/jobs", "/jobs/fz/tasks", "/jobschedules",
                          "/pools/fz/nodes", "/jobs/fz/tasks/none/files"]))
def test_random_query_parameters_never_get_a_5xx(http: Http, fz: str, params: dict[str, str],
                                                 path: str):
    _check(http("GET", path, params=params))
