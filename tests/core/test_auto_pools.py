"""Auto pools (jobs and job schedules), low-priority hosts and image selection, on the
session's sshd testbed (3 hosts): Batch's ``autoPoolSpecification``, ``targetLowPriorityNodes``
and ``virtualMachineConfiguration.imageReference`` semantics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.errors import BadRequestError, InvalidPropertyValueError
from hpcbatch.batch.images import image_for, parse_os_release, serves, wanted_image
from hpcbatch.batch.models import JobSpec
from hpcbatch.batch.schedules import ManualClock
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.core.auto_pools import auto_pool_id
from hpcbatch.providers.inventory import Host, parse_inventory
from hpcbatch.testing.testbed import Testbed
from tests.helpers import running_service, wait_until

OWN_IMAGE = image_for(parse_os_release(Path("/etc/os-release").read_text()))
FOREIGN = {"publisher": "hpcbatch-test", "offer": "nowhere-os", "sku": "1", "version": "latest"}


def auto(pool: dict[str, Any], lifetime: str = "job", **extra: Any) -> dict[str, Any]:
    return {"autoPoolSpecification": {"poolLifetimeOption": lifetime, "pool": pool, **extra}}


def pool_ids(client: BatchClient) -> list[str]:
    return [p["id"] for p in client.list_pools_json()]


def gone(client: BatchClient, pool_id: str) -> bool:
    return pool_id not in pool_ids(client)


def on_loop(thread: Any, fn: Any, *args: Any) -> Any:
    async def call() -> Any:
        return fn(*args)
    return thread.call(call())


@pytest.fixture(scope="module")
def env(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[BatchClient, Any, list[dict[str, Any]]]]:
    """A service whose inventory is the testbed's hosts: the first two dedicated, the third
    low-priority."""
    tmp = tmp_path_factory.mktemp("autopool")
    hosts = [h.model_dump(mode="json") for h in testbed.hosts]
    for h in hosts:  # node roots of its own: other modules use the session hosts' roots
        h["root_dir"] = str(tmp / "roots" / h["name"])
    hosts[2]["low_priority"] = True
    with running_service(tmp / "state") as (client, thread):
        client.add_hosts(hosts)
        yield client, thread, hosts


def set_hosts(client: BatchClient, hosts: list[dict[str, Any]]) -> None:
    wait_until(lambda: all(h["poolId"] is None for h in client.list_hosts()), timeout_s=60,
               what="every host free")
    client.add_hosts(hosts)


# ------------------------------------------------------------------------ pure rules


def test_auto_pool_specification_is_validated_as_batch_does() -> None:
    def parse(pool_info: dict[str, Any]) -> JobSpec:
        spec: JobSpec = JobSpec.from_wire({"id": "j", "poolInfo": pool_info})
        return spec

    with pytest.raises(InvalidPropertyValueError, match="either poolId or autoPoolSpecification"):
        parse({})
    with pytest.raises(InvalidPropertyValueError, match="either poolId or autoPoolSpecification"):
        parse({"poolId": "p", **auto({"vmSize": "any"})})
    with pytest.raises(InvalidPropertyValueError) as bad:
        parse(auto({"vmSize": "any"}, "forever"))
    assert bad.value.values["PropertyName"] == "poolInfo.autoPoolSpecification.poolLifetimeOption"
    with pytest.raises(InvalidPropertyValueError, match="1 to 20 characters"):
        parse(auto({"vmSize": "any"}, autoPoolIdPrefix="p" * 21))
    with pytest.raises(BadRequestError) as missing:
        parse({"autoPoolSpecification": {"poolLifetimeOption": "job"}})
    assert missing.value.code == "MissingRequiredProperty"
    # the pool is a PoolSpecification: no id, and Pool - Add's rules for the rest
    with pytest.raises(BadRequestError) as has_id:
        parse(auto({"vmSize": "any", "id": "mine"}))
    assert has_id.value.values["PropertyName"] == "poolInfo.autoPoolSpecification.pool.id"
    with pytest.raises(InvalidPropertyValueError) as negative:
        parse(auto({"vmSize": "any", "targetLowPriorityNodes": -1}))
    assert negative.value.values["PropertyName"] == \
        "poolInfo.autoPoolSpecification.pool.targetLowPriorityNodes"
    ok = parse(auto({"vmSize": "any", "taskSlotsPerNode": 2}, "jobSchedule", keepAlive=True))
    assert ok.pool_info.auto_pool_specification is not None
    assert ok.pool_info.auto_pool_specification.pool_lifetime_option == "jobschedule"
    # Batch's generated ID: prefix, '_', a GUID; at most 57 characters
    pool_id = auto_pool_id("p" * 20)
    assert pool_id.startswith("p" * 20 + "_") and len(pool_id) == 57
    assert auto_pool_id(None) != auto_pool_id(None)


def test_inventory_low_priority_and_images_fields() -> None:
    hosts = parse_inventory(
        "defaults: {low_priority: true}\nhosts:\n"
        "  - {address: 10.0.0.1}\n"
        "  - {address: 10.0.0.2, low_priority: false,"
        " images: ['Canonical:0001-com-ubuntu-server-jammy:22_04-lts:latest']}\n", "inv.yaml")
    assert [h.low_priority for h in hosts] == [True, False]
    with pytest.raises(InvalidPropertyValueError, match=r"hosts\[0\]\.low_priority"):
        parse_inventory("hosts: [{address: a, low_priority: maybe}]", "inv.yaml")
    with pytest.raises(InvalidPropertyValueError, match="publisher:offer:sku"):
        parse_inventory("hosts: [{address: a, images: [ubuntu]}]", "inv.yaml")
    jammy = wanted_image({"imageReference": {"publisher": "canonical",
                                             "offer": "0001-com-ubuntu-server-jammy",
                                             "sku": "22_04-LTS", "version": "latest"}})
    assert jammy is not None
    assert serves(jammy, None, hosts[1].images) is True  # the URN, case-insensitively
    assert serves(jammy, None, ()) is None  # OS not read yet
    assert serves(jammy, {"ID": "debian", "VERSION_ID": "12"}, ()) is False
    assert serves(jammy, {"ID": "ubuntu", "VERSION_ID": "22.04"}, ()) is True
    assert wanted_image({"imageReference": {"virtualMachineImageId": "/x/y"}}) is None
    assert wanted_image(None) is None
    assert Host(name="h", address="h").low_priority is False


# --------------------------------------------------------------------------- jobs


def test_auto_pool_job_runs_tasks_and_its_pool_ends_with_the_job(env) -> None:
    client, _, _ = env
    client.create_job({"id": "aj", "onAllTasksComplete": "noaction", "poolInfo": auto(
        {"vmSize": "any", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2,
         "startTask": {"commandLine": "/bin/true", "waitForSuccess": True}},
        autoPoolIdPrefix="aj")})
    job = client.get_job_json("aj")
    pool_id = job["executionInfo"]["poolId"]
    assert pool_id.startswith("aj_") and len(pool_id) == 3 + 36
    assert "poolId" not in job["poolInfo"]  # as Batch: poolInfo keeps what was sent
    assert job["poolInfo"]["autoPoolSpecification"]["poolLifetimeOption"] == "job"
    pool = client.get_pool_json(pool_id)
    assert (pool["targetDedicatedNodes"], pool["taskSlotsPerNode"]) == (1, 2)
    client.create_tasks("aj", [{"id": f"t{i}", "commandLine": "echo hi"} for i in range(3)])
    client.wait_for_tasks("aj", timeout_s=180)
    tasks = client.list_tasks("aj")
    assert [(t.state, t.execution_info.exit_code) for t in tasks] == [("completed", 0)] * 3
    assert {t.node_info.pool_id for t in tasks} == {pool_id}
    client.terminate_job("aj")
    wait_until(lambda: client.get_job("aj").state == "completed", timeout_s=60)
    wait_until(lambda: gone(client, pool_id), timeout_s=60, what="auto pool deleted")
    assert client.get_job_json("aj")["executionInfo"]["poolId"] == pool_id  # still named


def test_keep_alive_pool_outlives_its_job(env) -> None:
    client, _, _ = env
    client.create_job({"id": "keep", "onAllTasksComplete": "terminatejob", "poolInfo": auto(
        {"vmSize": "any", "targetDedicatedNodes": 0}, keepAlive=True)})
    wait_until(lambda: client.get_job("keep").state == "completed", timeout_s=60)
    pool_id = client.get_job_json("keep")["executionInfo"]["poolId"]
    client.delete_job("keep")
    wait_until(lambda: "keep" not in [j["id"] for j in client.list_jobs_json()], timeout_s=60)
    assert pool_id in pool_ids(client)  # the user deletes it
    client.delete_pool(pool_id)
    # without keepAlive, deleting the job deletes its pool
    client.create_job({"id": "del", "poolInfo": auto({"vmSize": "any"})})
    pool_id = client.get_job_json("del")["executionInfo"]["poolId"]
    assert pool_id in pool_ids(client)
    client.delete_job("del")
    wait_until(lambda: gone(client, pool_id), timeout_s=60, what="auto pool deleted")


def test_auto_pool_errors_on_jobs(env) -> None:
    client, _, _ = env
    with pytest.raises(BatchError) as bad:  # jobschedule is for schedules only
        client.create_job({"id": "bad", "poolInfo": auto({"vmSize": "any"}, "jobschedule")})
    assert bad.value.code == "InvalidPropertyValue"
    before = pool_ids(client)
    # no inventory host has this vmSize: the job exists, with Batch's scheduling error
    client.create_job({"id": "nohost", "poolInfo": auto(
        {"vmSize": "standard_nowhere", "targetDedicatedNodes": 1})})
    job = client.get_job_json("nohost")
    error = job["executionInfo"]["schedulingError"]
    assert error["category"] == "usererror" and error["code"] == "InsufficientInventory"
    assert "standard_nowhere" in error["message"]
    assert "poolId" not in job["executionInfo"] and pool_ids(client) == before
    # a formula Pool - Add refuses
    client.create_job({"id": "badformula", "poolInfo": auto(
        {"vmSize": "any", "enableAutoScale": True, "autoScaleFormula": "$Nope = ;"})})
    error = client.get_job_json("badformula")["executionInfo"]["schedulingError"]
    assert error["category"] == "usererror" and error["code"] != "InsufficientInventory"
    assert pool_ids(client) == before
    # a property Pool - Add refuses is named by its path in the job
    client.create_job({"id": "noformula", "poolInfo": auto(
        {"vmSize": "any", "enableAutoScale": True})})
    error = client.get_job_json("noformula")["executionInfo"]["schedulingError"]
    name = "poolInfo.autoPoolSpecification.pool.autoScaleFormula"
    assert (error["code"], {"name": "PropertyName", "value": name}) == (
        "InvalidPropertyValue", error["details"][0])
    assert f"The value provided for {name} is invalid" in error["message"]
    assert pool_ids(client) == before
    for job_id in ("nohost", "badformula", "noformula"):
        client.delete_job(job_id)


# ---------------------------------------------------------------------- schedules


def test_schedule_with_a_job_schedule_pool_runs_its_jobs_on_one_pool(env) -> None:
    client, thread, _ = env
    svc = thread.runtime.service
    start = datetime.now(UTC)
    clock = ManualClock(start)
    svc.schedules.clock = clock
    on_loop(thread, svc.schedules.add, {
        "id": "sp", "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"onAllTasksComplete": "terminatejob",
                             "poolInfo": auto({"vmSize": "any"}, "jobschedule",
                                              autoPoolIdPrefix="sched")}})
    thread.call(svc.schedules.tick())
    first = client.get_job_json("sp:job-1")
    pool_id = first["executionInfo"]["poolId"]
    assert pool_id.startswith("sched_")
    wait_until(lambda: client.get_job("sp:job-1").state == "completed", timeout_s=60)
    thread.call(svc.schedules.tick())
    assert pool_id in pool_ids(client)  # lives as long as the schedule, not the job
    clock.set(start + timedelta(hours=1, seconds=1))
    thread.call(svc.schedules.tick())
    assert client.get_job_json("sp:job-2")["executionInfo"]["poolId"] == pool_id
    assert [p for p in pool_ids(client) if p.startswith("sched_")] == [pool_id]
    on_loop(thread, svc.schedules.terminate, "sp")
    wait_until(lambda: svc.schedules.get("sp")["state"] == "completed", timeout_s=60)
    wait_until(lambda: gone(client, pool_id), timeout_s=60, what="schedule's pool deleted")


def test_schedule_whose_auto_pool_fails_records_it_and_does_not_spin(
        env, caplog: pytest.LogCaptureFixture) -> None:
    _, thread, _ = env
    svc = thread.runtime.service
    start = datetime.now(UTC)
    clock = ManualClock(start)
    svc.schedules.clock = clock
    caplog.set_level(logging.WARNING, logger="hpcbatch.core.job_schedules")
    on_loop(thread, svc.schedules.add, {
        "id": "sf", "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": auto(
            {"vmSize": "standard_nowhere", "targetDedicatedNodes": 1}, "jobschedule")}})
    for _ in range(5):
        thread.call(svc.schedules.tick())
    info = svc.schedules.get("sf")["executionInfo"]
    assert info["schedulingError"]["code"] == "InsufficientInventory"
    assert "standard_nowhere" in info["schedulingError"]["message"]
    assert "recentJob" not in info and svc.schedules.jobs_of("sf") == []
    # the next try is the next recurrence, not the next tick
    assert info["nextRunTime"].startswith((start + timedelta(hours=1)).strftime("%Y-%m-%dT%H"))
    warned = [r for r in caplog.records if "sf" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    # a job-lifetime auto pool that fails: the same
    on_loop(thread, svc.schedules.add, {
        "id": "sj", "schedule": {},
        "jobSpecification": {"poolInfo": auto({"vmSize": "standard_nowhere",
                                               "targetDedicatedNodes": 1})}})
    thread.call(svc.schedules.tick())
    thread.call(svc.schedules.tick())
    got = svc.schedules.get("sj")
    assert got["executionInfo"]["schedulingError"]["code"] == "InsufficientInventory"
    assert got["state"] == "completed"  # its one chance is spent
    # a property Pool - Add refuses is named by its path in the schedule
    on_loop(thread, svc.schedules.add, {
        "id": "sn", "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": auto({"vmSize": "any", "enableAutoScale": True},
                                              "jobschedule")}})
    thread.call(svc.schedules.tick())
    error = svc.schedules.get("sn")["executionInfo"]["schedulingError"]
    assert {"name": "PropertyName", "value": "jobSpecification.poolInfo.autoPoolSpecification"
            ".pool.autoScaleFormula"} in error["details"], error
    for schedule_id in ("sf", "sj", "sn"):
        on_loop(thread, svc.schedules.delete, schedule_id)


# ---------------------------------------------------------------- low priority


def test_low_priority_targets_take_only_low_priority_hosts(env) -> None:
    client, _, hosts = env
    client.create_pool({"id": "lp", "vmSize": "any", "targetDedicatedNodes": 1,
                        "targetLowPriorityNodes": 1})
    nodes = client.wait_for_pool("lp", timeout_s=180)
    by_id = {n["id"]: n for n in client.list_nodes_json("lp")}
    assert {n.state for n in nodes} == {"idle"}, [(n.id, n.state, n.errors) for n in nodes]
    assert by_id[hosts[2]["name"]]["isDedicated"] is False
    assert [n["isDedicated"] for i, n in by_id.items() if i != hosts[2]["name"]] == [True]
    pool = client.get_pool_json("lp")
    assert (pool["currentDedicatedNodes"], pool["currentLowPriorityNodes"]) == (1, 1)
    assert (pool["targetDedicatedNodes"], pool["targetLowPriorityNodes"]) == (1, 1)
    assert [n["id"] for n in client.list_nodes_json("lp", filter="isDedicated eq false")] == \
        [hosts[2]["name"]]
    counts = {c["poolId"]: c for c in client._request("GET", "/nodecounts").json()["value"]}
    assert (counts["lp"]["dedicated"]["idle"], counts["lp"]["lowPriority"]["idle"]) == (1, 1)
    # two low-priority nodes wanted, one low-priority host: the dedicated host left is not used
    client._request("POST", "/pools/lp/resize",
                    body={"targetDedicatedNodes": 1, "targetLowPriorityNodes": 2})
    wait_until(lambda: client.get_pool_json("lp").get("resizeErrors"), timeout_s=30,
               what="a resize error")
    pool = client.get_pool_json("lp")
    assert pool["currentLowPriorityNodes"] == 1 and pool["currentDedicatedNodes"] == 1
    assert "low-priority" in pool["resizeErrors"][0]["message"]
    # Remove Nodes of a low-priority node lowers the low-priority target only
    client._request("POST", "/pools/lp/removenodes", body={"nodeList": [hosts[2]["name"]]})
    pool = client.get_pool_json("lp")
    assert (pool["targetDedicatedNodes"], pool["targetLowPriorityNodes"]) == (1, 1)
    client.wait_for_pool("lp", timeout_s=120)  # the freed low-priority host comes back
    # back to dedicated only: the low-priority node leaves, the dedicated one stays
    client._request("POST", "/pools/lp/resize",
                    body={"targetDedicatedNodes": 1, "targetLowPriorityNodes": 0})
    wait_until(lambda: [n["isDedicated"] for n in client.list_nodes_json("lp")] == [True],
               timeout_s=60, what="only the dedicated node left")
    client.delete_pool("lp")
    wait_until(lambda: gone(client, "lp"), timeout_s=60)


def test_autoscale_sets_the_low_priority_target(env) -> None:
    client, _, hosts = env
    client.create_pool({"id": "als", "vmSize": "any", "enableAutoScale": True,
                        "autoScaleFormula": "$TargetDedicatedNodes = 0; "
                                            "$TargetLowPriorityNodes = 1;"})
    wait_until(lambda: client.get_pool_json("als").get("targetLowPriorityNodes") == 1,
               timeout_s=30, what="the formula's low-priority target")
    wait_until(lambda: [(n["id"], n["state"], n["isDedicated"])
                        for n in client.list_nodes_json("als")]
               == [(hosts[2]["name"], "idle", False)], timeout_s=120, what="a low-priority node")
    pool = client.get_pool_json("als")
    assert (pool["currentDedicatedNodes"], pool["currentLowPriorityNodes"]) == (0, 1)
    assert "$TargetLowPriorityNodes=1" in pool["autoScaleRun"]["results"]
    client.create_job({"id": "onlow", "poolInfo": {"poolId": "als"}})
    client.create_task("onlow", {"id": "env", "commandLine": "printenv AZ_BATCH_NODE_IS_DEDICATED"})
    client.wait_for_tasks("onlow", timeout_s=120)
    assert client.download_task_file("onlow", "env", "stdout.txt") == b"false\n"
    client.delete_job("onlow")
    client.delete_pool("als")
    wait_until(lambda: gone(client, "als"), timeout_s=60)


def test_low_priority_target_without_low_priority_hosts_is_a_resize_error(env) -> None:
    client, _, hosts = env
    dedicated = [{**h, "low_priority": False} for h in hosts]
    set_hosts(client, dedicated)
    try:
        client.create_pool({"id": "nolp", "vmSize": "any", "targetLowPriorityNodes": 1})
        wait_until(lambda: client.get_pool_json("nolp").get("resizeErrors"), timeout_s=30,
                   what="a resize error")
        pool = client.get_pool_json("nolp")
        assert pool["currentLowPriorityNodes"] == 0 and pool["currentDedicatedNodes"] == 0
        error = pool["resizeErrors"][0]
        assert error["code"] == "InsufficientInventory"
        assert "no low-priority host" in error["message"]
        assert client.list_nodes_json("nolp") == []
        client.delete_pool("nolp")
        wait_until(lambda: gone(client, "nolp"), timeout_s=60)
    finally:
        set_hosts(client, hosts)


# ---------------------------------------------------------------------- images


def test_image_reference_selects_hosts_by_os(env) -> None:
    client, _, hosts = env
    assert OWN_IMAGE is not None
    own = OWN_IMAGE["imageReference"]
    client.create_pool({"id": "img", "vmSize": "any", "targetDedicatedNodes": 1,
                        "virtualMachineConfiguration": {
                            "imageReference": own, "nodeAgentSKUId": OWN_IMAGE["nodeAgentSKUId"]}})
    assert [n.state for n in client.wait_for_pool("img", timeout_s=180)] == ["idle"]
    # no host runs this image: a resize error naming it, no node
    client.create_pool({"id": "foreign", "vmSize": "any", "targetDedicatedNodes": 1,
                        "virtualMachineConfiguration": {"imageReference": FOREIGN,
                                                        "nodeAgentSKUId": "batch.node.x 1"}})
    urn = "hpcbatch-test:nowhere-os:1"
    wait_until(lambda: urn in str(client.get_pool_json("foreign").get("resizeErrors")),
               timeout_s=60, what="a resize error naming the image")
    assert client.list_nodes_json("foreign") == []
    client.delete_pool("foreign")
    client.delete_pool("img")
    wait_until(lambda: gone(client, "img") and gone(client, "foreign"), timeout_s=60)
    # a host that stands in for the image (inventory images) serves it
    set_hosts(client, [hosts[0], {**hosts[1], "images": [urn + ":latest"]}, hosts[2]])
    try:
        client.create_pool({"id": "foreign2", "vmSize": "any", "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {"imageReference": FOREIGN}})
        nodes = client.wait_for_pool("foreign2", timeout_s=180)
        assert [(n.id, n.state) for n in nodes] == [(hosts[1]["name"], "idle")]
        client.delete_pool("foreign2")
        wait_until(lambda: gone(client, "foreign2"), timeout_s=60)
    finally:
        set_hosts(client, hosts)
