"""Input limits as Batch sets them: every malformed or out-of-bounds request is a 4xx with
Batch's error body and code, never a 500, and changes nothing (docs/security.md, "Input
hardening").

Each test names the bad input it sends: the 500s and the accepted bad values of issue 17
(bodies that are not UTF-8, JSON nested 1,000 deep, ``$filter`` with 2,000 chained
``not``, a NUL in a file path, malformed or out-of-range byte ranges, a garbage or zero
``autoScaleEvaluationInterval``, ``TimeInterval_Second * 1e300``, ``targetDedicatedNodes``
2^64 or ``"3"``, ``priority: true``, ``maxTaskRetryCount`` 10^20, ``requiredSlots`` 10^6,
``elevationLevel: "god"``, 1 MB command lines and metadata values, any or no
``api-version``) and of issue 12 (IDs with a trailing newline, ``fileMode``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest
import requests

from hpcbatch.api.http import API_VERSIONS, MAX_JSON_DEPTH
from hpcbatch.batch.models import MAX_COMMAND_LINE_LENGTH, Pool
from tests.api.wire import Http, batch_error
from tests.helpers import service_on_testbed, wait_until

MB = 1024 * 1024


def _values(body: dict[str, Any]) -> dict[str, str]:
    return {v["key"]: v["value"] for v in body.get("values", [])}


def _invalid_property(resp: requests.Response, name: str) -> dict[str, str]:
    """Assert a ``400 InvalidPropertyValue`` naming property ``name``; return its values."""
    values = _values(batch_error(resp, 400, "InvalidPropertyValue"))
    assert values["PropertyName"] == name, values
    return values


@pytest.fixture(scope="module")
def pool(http: Http) -> str:
    """A pool without nodes (the service has no hosts)."""
    assert http("POST", "/pools", {"id": "limits", "vmSize": "any"}).status_code == 201
    return "limits"


@pytest.fixture(scope="module")
def job(http: Http, pool: str) -> str:
    """A job on :func:`pool`."""
    assert http("POST", "/jobs", {"id": "limits", "poolInfo": {"poolId": pool}}).status_code == 201
    return "limits"


def _absent(http: Http, path: str, code: str) -> None:
    batch_error(http("GET", path), 404, code)


# ------------------------------------------------------------------ request bodies


def test_a_body_that_is_not_utf8_is_invalid_request_body(http: Http, pool: str):
    raw = b'{"id": "notutf8", "poolInfo": {"poolId": "limits"}, "displayName": "\xff\xfe"}'
    body = batch_error(http("POST", "/jobs", raw=raw), 400, "InvalidRequestBody")
    assert "not UTF-8" in body["message"]["value"]
    _absent(http, "/jobs/notutf8", "JobNotFound")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_json_nested_too_deep_is_invalid_request_body(http: Http, pool: str, depth: int):
    nested = "[" * depth + "]" * depth
    raw = ('{"id": "deep", "poolInfo": {"poolId": "limits"}, "networkConfiguration": {"x": '
           + nested + "}}").encode()
    body = batch_error(http("POST", "/jobs", raw=raw), 400, "InvalidRequestBody")
    assert _values(body)["MaxDepth"] == str(MAX_JSON_DEPTH)
    _absent(http, "/jobs/deep", "JobNotFound")


def test_json_at_the_depth_limit_is_parsed(http: Http, pool: str):
    """64 levels (the .NET readers' default) still parse; the body is then judged by its
    properties: here an unknown one."""
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    raw = ('{"id": "deepok", "poolInfo": {"poolId": "limits"}, "bogus": ' + nested + "}").encode()
    body = batch_error(http("POST", "/jobs", raw=raw), 400, "InvalidRequestBody")
    assert _values(body)["PropertyName"] == "bogus"


def test_a_json_body_of_4_mib_is_too_large(http: Http, pool: str):
    raw = json.dumps({"id": "huge", "poolInfo": {"poolId": "limits"},
                      "displayName": "x" * (4 * MB)}).encode()
    batch_error(http("POST", "/jobs", raw=raw), 413, "RequestBodyTooLarge")
    _absent(http, "/jobs/huge", "JobNotFound")


@pytest.mark.parametrize("body, name", [
    ({"id": "snake", "vmSize": "any", "target_dedicated_nodes": 1}, "target_dedicated_nodes"),
    ({"id": "snake", "vmSize": "any", "targetDedicatedNodes": 0,
      "startTask": {"commandLine": "/bin/true", "wait_for_success": True}}, "wait_for_success"),
    ({"id": "snake", "vmSize": "any", "targetDedicatedNodes": 0,
      "virtualMachineConfiguration": {"containerConfiguration": {
          "type": "dockerCompatible", "containerRegistries": [
              {"registryServer": "r.example", "user_name": "u", "password": "p"}]}}},
     "containerRegistries[0].user_name"),
])
def test_python_attribute_names_are_unknown_properties(http: Http, body: dict[str, Any],
                                                       name: str):
    """The wire has Batch's camelCase names only: the models' snake_case attribute names
    (``target_dedicated_nodes``), at any depth, are unknown properties as in Batch."""
    err = batch_error(http("POST", "/pools", body), 400, "InvalidRequestBody")
    assert _values(err)["PropertyName"].endswith(name), err
    _absent(http, "/pools/snake", "PoolNotFound")


@pytest.mark.parametrize("output_file, name, reason", [
    ({"destination": {"container": {"container_url": "https://x.example/c"}}},
     "outputFiles[0].destination", "'container_url' is not a known property"),
    ({"destination": {"container": {}, "containr": {}}},
     "outputFiles[0].destination", "'containr' is not a known property"),
    ({"destination": {"container": {}}, "uploadOptions": {"upload_condition": "taskFailure"}},
     "outputFiles[0].uploadOptions", "'upload_condition' is not a known property"),
    ({"destination": {"container": {}}, "uploadOptions": {"uploadCondition": "never"}},
     "outputFiles[0].uploadOptions", "must be one of taskSuccess, taskFailure, taskCompletion"),
])
def test_output_file_destinations_and_upload_options_hold_batchs_properties_only(
        http: Http, job: str, output_file: dict[str, Any], name: str, reason: str):
    """An output file's ``destination`` and ``uploadOptions`` (kept as given for the node
    agent) take Batch's camelCase properties only: a misspelt or snake_case one (which the
    agent would not read: the file would go to the job's own container, or on every
    outcome) and an unknown ``uploadCondition`` are a 400 naming the property."""
    task = {"id": "outfile", "commandLine": "/bin/true",
            "outputFiles": [{"filePattern": "*.txt",
                             "uploadOptions": {"uploadCondition": "taskCompletion"},
                             **output_file}]}
    values = _invalid_property(http("POST", f"/jobs/{job}/tasks", task), name)
    assert reason in values["Reason"], values
    _absent(http, f"/jobs/{job}/tasks/outfile", "TaskNotFound")


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2", b'{"id": }', b"\x00\x01", b"\xef\xbb\xbf{}"])
def test_bodies_that_are_not_json_are_invalid_request_body(http: Http, raw: bytes):
    batch_error(http("POST", "/pools", raw=raw), 400, "InvalidRequestBody")


# ------------------------------------------------------------------ numbers and enums


@pytest.mark.parametrize("value", [2**64, 2**31, -1, "3", 3.0, True, None, [3]])
def test_target_dedicated_nodes_is_a_bounded_integer(http: Http, value: Any):
    resp = http("POST", "/pools", {"id": "badtarget", "vmSize": "any",
                                   "targetDedicatedNodes": value})
    if value is None:  # JSON null: the property is absent (Batch's default, 0)
        assert resp.status_code == 201
        assert http("DELETE", "/pools/badtarget").status_code == 202
        return
    _invalid_property(resp, "targetDedicatedNodes")
    _absent(http, "/pools/badtarget", "PoolNotFound")


@pytest.mark.parametrize("value", [2**64, "3", True])
def test_resize_to_a_bad_target_changes_nothing(http: Http, pool: str, value: Any):
    before = http("GET", f"/pools/{pool}")
    _invalid_property(http("POST", f"/pools/{pool}/resize", {"targetDedicatedNodes": value}),
                      "targetDedicatedNodes")
    after = http("GET", f"/pools/{pool}")
    assert after.headers["ETag"] == before.headers["ETag"]
    assert after.json()["targetDedicatedNodes"] == before.json()["targetDedicatedNodes"]


@pytest.mark.parametrize("value", [True, "5", 5.5, 1001, -1001])
def test_priority_is_an_integer_between_minus_1000_and_1000(http: Http, pool: str, value: Any):
    _invalid_property(http("POST", "/jobs", {"id": "badprio", "priority": value,
                                             "poolInfo": {"poolId": pool}}), "priority")
    _absent(http, "/jobs/badprio", "JobNotFound")


def test_patching_a_bad_priority_changes_nothing(http: Http, job: str):
    before = http("GET", f"/jobs/{job}")
    _invalid_property(http("PATCH", f"/jobs/{job}", {"priority": True}), "priority")
    after = http("GET", f"/jobs/{job}")
    assert after.headers["ETag"] == before.headers["ETag"]
    assert after.json().get("priority") == before.json().get("priority")


@pytest.mark.parametrize(("field", "value", "name"), [
    ("constraints", {"maxTaskRetryCount": 10**20}, "constraints.maxTaskRetryCount"),
    ("constraints", {"maxTaskRetryCount": -2}, "constraints.maxTaskRetryCount"),
    ("constraints", {"maxTaskRetryCount": "1"}, "constraints.maxTaskRetryCount"),
    ("constraints", {"maxWallClockTime": 3600}, "constraints.maxWallClockTime"),
    ("constraints", {"maxWallClockTime": "-PT1H"}, "constraints.maxWallClockTime"),
    ("constraints", {"retentionTime": "P99999999D"}, "constraints.retentionTime"),
    ("requiredSlots", 10**6, "requiredSlots"),
    ("requiredSlots", 0, "requiredSlots"),
    ("requiredSlots", True, "requiredSlots"),
    ("userIdentity", {"autoUser": {"elevationLevel": "god"}},
     "userIdentity.autoUser.elevationLevel"),
    ("userIdentity", {"autoUser": {"scope": "universe"}}, "userIdentity.autoUser.scope"),
    ("commandLine", "x" * MB, "commandLine"),
    ("commandLine", "x" * (MAX_COMMAND_LINE_LENGTH + 1), "commandLine"),
    ("commandLine", "echo a\x00b", "commandLine"),
    ("displayName", "d" * 1025, "displayName"),
    ("environmentSettings", [{"name": "A\n", "value": "1"}], "environmentSettings[0].name"),
    ("environmentSettings", [{"name": "A", "value": "v" * MB}], "environmentSettings[0].value"),
    ("exitConditions", {"exitCodes": [{"code": 2**40, "exitOptions": {}}]},
     "exitConditions.exitCodes[0].code"),
    ("multiInstanceSettings", {"numberOfInstances": "2"},
     "multiInstanceSettings.numberOfInstances"),
])
def test_task_properties_are_typed_and_bounded(http: Http, job: str, field: str, value: Any,
                                               name: str):
    resp = http("POST", f"/jobs/{job}/tasks", {"id": "badtask", "commandLine": "true",
                                               field: value})
    values = _invalid_property(resp, name)
    assert len(values["PropertyValue"]) <= 256  # a 1 MB value is not echoed back
    _absent(http, f"/jobs/{job}/tasks/badtask", "TaskNotFound")


@pytest.mark.parametrize("mode", ["rwx", "0o755", "4755", "7777", "0888", "12", "", "01234"])
def test_file_mode_is_octal_permission_bits(http: Http, job: str, mode: str):
    resp = http("POST", f"/jobs/{job}/tasks", {
        "id": "badmode", "commandLine": "true",
        "resourceFiles": [{"httpUrl": "http://127.0.0.1:9/x", "filePath": "x", "fileMode": mode}]})
    values = _invalid_property(resp, "resourceFiles[0].fileMode")
    assert "octal" in values["Reason"]
    _absent(http, f"/jobs/{job}/tasks/badmode", "TaskNotFound")


@pytest.mark.parametrize("sources", [
    {}, {"httpUrl": "http://127.0.0.1:9/x", "storageContainerUrl": "file:///srv/in"},
    {"autoStorageContainerName": "in", "httpUrl": "http://127.0.0.1:9/x"}])
def test_a_resource_file_names_exactly_one_source(http: Http, job: str,
                                                  sources: dict[str, str]):
    """Batch: autoStorageContainerName, storageContainerUrl and httpUrl are mutually
    exclusive and one of them must be specified (REST ``ResourceFile``)."""
    resp = http("POST", f"/jobs/{job}/tasks", {
        "id": "nosource", "commandLine": "true",
        "resourceFiles": [{**sources, "filePath": "x"}]})
    values = _invalid_property(resp, "resourceFiles[0]")
    assert "one of them must be specified" in values["Reason"], values
    _absent(http, f"/jobs/{job}/tasks/nosource", "TaskNotFound")


@pytest.mark.parametrize("mode", ["0770", "644", "0600"])
def test_file_mode_accepts_permission_bits(http: Http, job: str, mode: str):
    task = f"mode{mode}"
    assert http("POST", f"/jobs/{job}/tasks", {
        "id": task, "commandLine": "true",
        "resourceFiles": [{"httpUrl": "http://127.0.0.1:9/x", "filePath": "x",
                           "fileMode": mode}]}).status_code == 201
    assert http("GET", f"/jobs/{job}/tasks/{task}").json()["resourceFiles"][0]["fileMode"] == mode


def test_metadata_values_are_bounded(http: Http, pool: str):
    resp = http("POST", "/jobs", {"id": "bigmeta", "poolInfo": {"poolId": pool},
                                  "metadata": [{"name": "a", "value": "x" * MB}]})
    _invalid_property(resp, "metadata[0].value")
    resp = http("POST", "/jobs", {"id": "bigmeta", "poolInfo": {"poolId": pool},
                                  "metadata": [{"name": "a", "value": 1}]})
    _invalid_property(resp, "metadata[0].value")
    _absent(http, "/jobs/bigmeta", "JobNotFound")


@pytest.mark.parametrize(("body", "name"), [
    ({"enableAutoScale": "true", "autoScaleFormula": "$TargetDedicatedNodes=0;"},
     "enableAutoScale"),
    ({"taskSlotsPerNode": 257}, "taskSlotsPerNode"),
    ({"resizeTimeout": "PT1M"}, "resizeTimeout"),
    ({"metadata": [{"name": "", "value": "v"}]}, "metadata[0].name"),
    ({"taskSchedulingPolicy": {"nodeFillType": "random"}}, "taskSchedulingPolicy.nodeFillType"),
])
def test_pool_properties_are_typed_and_bounded(http: Http, body: dict[str, Any], name: str):
    _invalid_property(http("POST", "/pools", {"id": "badpool", "vmSize": "any", **body}), name)
    _absent(http, "/pools/badpool", "PoolNotFound")


@pytest.mark.parametrize("value", [0, -2, "2", True])
def test_max_parallel_tasks_is_minus_one_or_positive(http: Http, pool: str, value: Any):
    _invalid_property(http("POST", "/jobs", {"id": "badpar", "maxParallelTasks": value,
                                             "poolInfo": {"poolId": pool}}), "maxParallelTasks")
    _absent(http, "/jobs/badpar", "JobNotFound")


# ------------------------------------------------------------------------- IDs


@pytest.mark.parametrize("ident", ["bad\n", "bad\r\n", "\nbad", "a" * 65, "bad id", "bad\x00"])
def test_ids_are_matched_whole(http: Http, pool: str, ident: str):
    _invalid_property(http("POST", "/jobs", {"id": ident, "poolInfo": {"poolId": pool}}), "id")
    _invalid_property(http("POST", "/pools", {"id": ident, "vmSize": "any"}), "id")
    assert not any(j["id"].startswith(("bad", "\nbad")) for j in http("GET", "/jobs").json()["value"])


# --------------------------------------------------------------------- autoscale


@pytest.mark.parametrize("interval", ["garbage", "PT0S", "PT4M59S", "P8D", 300, "-PT10M"])
def test_enable_autoscale_with_a_bad_interval_changes_nothing(http: Http, pool: str,
                                                              interval: Any):
    before = http("GET", f"/pools/{pool}")
    resp = http("POST", f"/pools/{pool}/enableautoscale",
                {"autoScaleFormula": "$TargetDedicatedNodes = 0;",
                 "autoScaleEvaluationInterval": interval})
    _invalid_property(resp, "autoScaleEvaluationInterval")
    after = http("GET", f"/pools/{pool}")
    assert after.headers["ETag"] == before.headers["ETag"]
    assert not after.json().get("enableAutoScale")


@pytest.mark.parametrize("body", [[], {"autoScaleFormula": 5}, {"formula": "x"}])
def test_evaluate_autoscale_bodies_are_checked(http: Http, pool: str, body: Any):
    resp = http("POST", f"/pools/{pool}/evaluateautoscale", body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] in ("InvalidRequestBody", "InvalidPropertyValue",
                                   "MissingRequiredProperty")


@pytest.mark.parametrize("formula", [
    "$x = TimeInterval_Second * 1e300; $TargetDedicatedNodes = 1;",
    "$x = TimeInterval_Second * 1e300 + TimeInterval_Second * 1e300; $TargetDedicatedNodes = 1;",
    "$x = time() + TimeInterval_Week * 1e6; $TargetDedicatedNodes = 1;",
    "$x = $CPUPercent.GetSample(TimeInterval_Second * 1e300); $TargetDedicatedNodes = 1;",
])
def test_timespan_overflow_is_a_formula_error(http: Http, formula: str):
    """Out-of-range timeintervals fail the evaluation as Batch's do ("TimeSpan overflowed"):
    the pool records the formula error in ``autoScaleRun`` and keeps its target."""
    assert http("POST", "/pools", {"id": "overflow", "vmSize": "any", "enableAutoScale": True,
                                   "autoScaleFormula": "$TargetDedicatedNodes = 0;",
                                   "autoScaleEvaluationInterval": "PT1H"}).status_code == 201
    try:
        resp = http("POST", "/pools/overflow/evaluateautoscale", {"autoScaleFormula": formula})
        assert resp.status_code == 200, resp.text
        error = resp.json()["error"]
        assert error["code"] == "FormulaEvaluationError"
        assert "out of range" in error["values"][0]["value"] or \
            "TimeSpan overflowed" in error["values"][0]["value"]
        assert http("GET", "/pools/overflow").json()["targetDedicatedNodes"] == 0
    finally:
        http("DELETE", "/pools/overflow")


def test_a_huge_formula_target_stays_a_wire_int32(http: Http):
    """``$TargetDedicatedNodes = 1e300`` sets the largest target the wire can carry (the
    inventory then limits the pool), so the pool still reads back as a valid ``CloudPool``."""
    assert http("POST", "/pools", {"id": "huge", "vmSize": "any", "enableAutoScale": True,
                                   "autoScaleFormula": "$TargetDedicatedNodes = 1e300;",
                                   "autoScaleEvaluationInterval": "PT1H"}).status_code == 201
    try:
        run = http("POST", "/pools/huge/evaluateautoscale",
                   {"autoScaleFormula": "$TargetDedicatedNodes = 1e300;"}).json()
        assert "error" not in run
        wait_until(lambda: http("GET", "/pools/huge").json().get("autoScaleRun"),
                   what="the first evaluation")
        assert http("GET", "/pools/huge").json()["targetDedicatedNodes"] == 2**31 - 1
        Pool.model_validate(http("GET", "/pools/huge").json())
    finally:
        http("DELETE", "/pools/huge")


# ------------------------------------------------------------------ query parameters


def test_filter_with_2000_chained_not_is_invalid_query_parameter(http: Http):
    body = batch_error(http("GET", "/jobs", params={"$filter": "not " * 2000 + "id eq 'x'"}),
                       400, "InvalidQueryParameterValue")
    assert _values(body)["QueryParameterName"] == "$filter"


def test_select_nested_too_deep_is_invalid_query_parameter(http: Http, job: str):
    name = "executionInfo/" + "a/" * 1000 + "b"
    body = batch_error(http("GET", f"/jobs/{job}/tasks", params={"$select": name}), 400,
                       "InvalidQueryParameterValue")
    assert _values(body)["QueryParameterName"] == "$select"


@pytest.mark.parametrize("param", ["maxresults", "$expand", "$select", "$filter"])
def test_garbage_query_parameters_are_invalid(http: Http, param: str):
    resp = http("GET", "/pools", params={param: "\x00(,"})
    assert resp.status_code == 400
    assert resp.json()["code"] in ("InvalidQueryParameterValue", "OutOfRangeQueryParameterValue")


def test_missing_api_version_is_missing_required_query_parameter(http: Http, pool: str):
    url = http.endpoint + "/jobs"
    resp = http.session.post(url, json={"id": "noversion", "poolInfo": {"poolId": pool}},
                             headers={"ocp-date": formatdate(usegmt=True)},
                             timeout=30)
    body = batch_error(resp, 400, "MissingRequiredQueryParameter")
    assert _values(body)["QueryParameterName"] == "api-version"
    _absent(http, "/jobs/noversion", "JobNotFound")


@pytest.mark.parametrize("version", ["garbage", "2025-06-01 ", "2016-07-01.3.1", "1",
                                     "2099-01-01.99.0", ""])
def test_unknown_api_version_is_invalid_query_parameter(http: Http, pool: str, version: str):
    resp = http("POST", "/jobs", {"id": "badversion", "poolInfo": {"poolId": pool}},
                params={"api-version": version})
    values = _values(batch_error(resp, 400, "InvalidQueryParameterValue"))
    assert values["QueryParameterName"] == "api-version"
    _absent(http, "/jobs/badversion", "JobNotFound")


@pytest.mark.parametrize("version", sorted(API_VERSIONS))
def test_every_published_api_version_is_accepted(http: Http, version: str):
    assert http("GET", "/pools", params={"api-version": version}).status_code == 200


@pytest.mark.parametrize("value", ["abc", "1.5", "", "9" * 30])
def test_a_timeout_that_is_not_an_integer_is_invalid(http: Http, value: str):
    values = _values(batch_error(http("GET", "/pools", params={"timeout": value}), 400,
                                 "InvalidQueryParameterValue"))
    assert values["QueryParameterName"] == "timeout"
    assert http("GET", "/pools", params={"timeout": "3000"}).status_code == 200  # the default


def test_health_needs_no_api_version(http: Http):
    assert requests.get(http.endpoint + "/health", timeout=30).status_code == 200


# ------------------------------------------------------------------------ files


@pytest.mark.parametrize("path", [
    "/jobs/limits/tasks/t/files/stdout.txt%00.png",
    "/pools/limits/nodes/n/files/startup%00/stdout.txt",
    "/jobs/limits%00/tasks",
])
def test_a_nul_in_the_path_is_invalid_uri(http: Http, job: str, path: str):
    batch_error(http("GET", path), 400, "InvalidUri")


@pytest.mark.parametrize("header", ["ocp-range", "Range"])
@pytest.mark.parametrize("value", ["bytes=abc", "bytes=5-2", "bytes=-5", "lines=0-1",
                                   "bytes=99999999999999999999-", "bytes=0-1,4-5", ""])
def test_malformed_byte_ranges_are_invalid_header_value(http: Http, job: str, header: str,
                                                        value: str):
    resp = http("GET", f"/jobs/{job}/tasks/none/files/stdout.txt", headers={header: value})
    assert _values(batch_error(resp, 400, "InvalidHeaderValue"))["HeaderName"] == header


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, str]]:
    """A task that ran on a 1-node testbed (127.0.73.1) and wrote 6 bytes to stdout.txt."""
    with service_on_testbed(tmp_path_factory.mktemp("ranges"), 1, "127.0.73.1") as (
            client, _bed, thread):
        client.create_pool({"id": "rp", "vmSize": "testbed", "targetDedicatedNodes": 1})
        client.wait_for_pool("rp", timeout_s=120)
        client.create_job({"id": "rj", "poolInfo": {"poolId": "rp"}})
        client.create_task("rj", {"id": "t", "commandLine": "echo hello"})
        assert client.wait_for_tasks("rj", timeout_s=120)["succeeded"] == 1
        creds = thread.runtime.credentials
        assert creds is not None
        yield Http(thread.runtime.endpoint, creds.account_name, creds.key), "/jobs/rj/tasks/t"


@pytest.mark.parametrize("header", ["ocp-range", "Range"])
def test_byte_ranges_past_the_end_of_a_file_are_416(ran: tuple[Http, str], header: str):
    http, task = ran
    url = f"{task}/files/stdout.txt"
    assert http("GET", url).content == b"hello\n"
    assert http("GET", url, headers={header: "bytes=1-3"}).content == b"ell"
    assert http("GET", url, headers={header: "bytes=2-"}).content == b"llo\n"
    assert http("GET", url, headers={header: "bytes=4-999999999999999999"}).content == b"o\n"
    assert http("GET", url, headers={header: "bytes=6-"}).content == b""  # at the end
    for value in ("bytes=7-", "bytes=999999999999999999-", "bytes=100-200"):
        body = batch_error(http("GET", url, headers={header: value}), 416, "InvalidRange")
        assert _values(body)["FileSize"] == "6"
    batch_error(http("GET", url, headers={header: "bytes=99999999999999999999-"}), 400,
                "InvalidHeaderValue")
    batch_error(http("GET", f"{task}/files/stdout.txt%00"), 400, "InvalidUri")
    assert http("GET", url).content == b"hello\n"
