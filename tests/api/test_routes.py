"""Route behaviour the SDK scenarios do not reach, over plain HTTP on a service without hosts."""

from __future__ import annotations

from tests.api.wire import Http, batch_error


def test_stop_resize_of_a_steady_pool_changes_nothing(http: Http):
    """"Pool - Stop Resize" resizes to the nodes the pool has only while it is resizing; a
    pool without hosts to take is steady at once (with a resize error), so it keeps its target."""
    assert http("POST", "/pools", {"id": "sr", "vmSize": "any",
                                   "targetDedicatedNodes": 2}).status_code == 201
    assert http("GET", "/pools/sr").json()["allocationState"] == "steady"
    batch_error(http("POST", "/pools/sr/stopresize", headers={"If-Match": '"0xSTALE"'}),
                412, "ConditionNotMet")
    resp = http("POST", "/pools/sr/stopresize")
    assert resp.status_code == 202 and resp.content == b""
    assert resp.headers["DataServiceId"].endswith("/pools/sr")
    assert resp.headers["ETag"] == http("GET", "/pools/sr").headers["ETag"]
    assert http("GET", "/pools/sr").json()["targetDedicatedNodes"] == 2
    batch_error(http("POST", "/pools/nosuch/stopresize"), 404, "PoolNotFound")


def test_job_schedule_actions_check_conditions_and_answer_the_new_etag(http: Http):
    schedule = {"id": "js", "schedule": {"recurrenceInterval": "PT1H"},
                "jobSpecification": {"poolInfo": {"poolId": "nopool"}}}
    created = http("POST", "/jobschedules", schedule)
    assert created.status_code == 201
    etag = created.headers["ETag"]
    batch_error(http("POST", "/jobschedules/js/disable", headers={"If-Match": '"0xSTALE"'}),
                412, "ConditionNotMet")
    disabled = http("POST", "/jobschedules/js/disable", headers={"If-Match": f'"{etag}"'})
    assert disabled.status_code == 204
    assert disabled.headers["ETag"] != etag
    assert http("GET", "/jobschedules/js").json()["state"] == "disabled"
    assert http("HEAD", "/jobschedules/js").status_code == 200  # "Job Schedule - Exists"
    listed = http("GET", "/jobschedules", params={"$filter": "state eq 'Disabled'"}).json()
    assert [s["id"] for s in listed["value"]] == ["js"]
    deleted = http("DELETE", "/jobschedules/js")
    assert deleted.status_code == 202 and "ETag" not in deleted.headers
    assert http("HEAD", "/jobschedules/js").status_code == 404
