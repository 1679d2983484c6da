"""Pool allocation states and operations against the Batch documents: Resize and Remove
Nodes while resizing (M13), a deleting pool's allocation state (M14), operations on a
deleting pool (M16).

A real service on local nodes. Where a state lasts only as long as a background
operation, the test calls the service's operations in one coroutine on the service
loop, so the background work has not run yet when the next operation is tried
(docs/architecture.md, "States", audit M13, M14, M16).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hpcbatch.api.server import ServiceThread
from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.client.sdk import BatchClient
from tests.helpers import running_service, wait_until


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, ServiceThread]]:
    tmp = tmp_path_factory.mktemp("audit2pools")
    with running_service(tmp / "state", scheduler_host="127.0.0.1") as (client, thread):
        client.add_hosts([{"name": f"h{i}", "address": f"127.0.0.{181 + i}", "provider": "local",
                           "root_dir": str(tmp / f"h{i}"), "python": sys.executable}
                          for i in range(2)])
        yield client, thread


def on_loop(thread: ServiceThread, *steps: Callable[[], Any]) -> list[Any]:
    """Run ``steps`` one after the other in one coroutine on the service loop (no await
    between them); each result is the step's return value or the Batch error it raised."""
    async def run() -> list[Any]:
        out: list[Any] = []
        for step in steps:
            try:
                out.append(step())
            except HpcbatchError as exc:
                out.append(exc)
        return out
    return thread.call(run())  # type: ignore[no-any-return]


def code(result: Any) -> tuple[int, str] | Any:
    return (result.status, result.code) if isinstance(result, HpcbatchError) else result


def test_m13_resize_and_remove_nodes_need_a_steady_pool(env: tuple[BatchClient, ServiceThread]
                                                        ) -> None:
    # "You can only resize a Pool when its allocation state is steady. If the Pool is
    # already resizing, the request fails with status code 409" (REST Pool - Resize);
    # "This operation can only run when the allocation state of the Pool is steady"
    # (REST Pool - Remove Nodes). Batch's code: PoolBeingResized.
    client, thread = env
    pools, nodes = thread.runtime.service.pools, thread.runtime.service.nodes
    out = on_loop(
        thread,
        lambda: pools.add_pool({"id": "r", "vmSize": "any", "targetDedicatedNodes": 1}),
        lambda: pools.get_pool("r")["allocationState"],
        lambda: pools.resize_pool("r", {"targetDedicatedNodes": 2}),
        lambda: nodes.remove_nodes("r", {"nodeList": ["h0"]}),
        lambda: pools.get_pool("r")["targetDedicatedNodes"],
    )
    assert [code(r) for r in out] == ["r", "resizing", (409, "PoolBeingResized"),
                                      (409, "PoolBeingResized"), 1]
    client.wait_for_pool("r", timeout_s=120)
    # Pool - Stop Resize stays allowed while resizing: resizing -> stopping -> steady.
    out = on_loop(
        thread,
        lambda: pools.resize_pool("r", {"targetDedicatedNodes": 2}),
        lambda: pools.get_pool("r")["allocationState"],
        lambda: pools.stop_resize_pool("r"),
        lambda: pools.get_pool("r")["allocationState"],
        lambda: [p["id"] for p in pools.list_pools("allocationState eq 'stopping'")],
    )
    assert [code(r) for r in out] == [None, "resizing", None, "stopping", ["r"]]
    wait_until(lambda: client.get_pool("r").allocation_state == "steady", timeout_s=120,
               what="the stop completed")
    wait_until(lambda: [p.id for p in client.list_pools(filter="allocationState eq 'steady'")]
               == ["r"], timeout_s=10, what="steady stored")
    # Steady again: both operations are accepted.
    client.remove_nodes("r", ["h1"])
    wait_until(lambda: client.get_pool("r").allocation_state == "steady", timeout_s=60,
               what="the node left")
    client.resize_pool("r", 0)
    wait_until(lambda: client.get_pool("r").current_dedicated_nodes == 0, timeout_s=60,
               what="pool empty")
    client.delete_pool("r")
    wait_until(lambda: not client.list_pools(), timeout_s=60, what="pool r gone")



def test_enable_autoscale_needs_a_steady_pool(env: tuple[BatchClient, ServiceThread]) -> None:
    # "You cannot enable automatic scaling on a Pool if a resize operation is in progress
    # on the Pool" (REST Pool - Enable Auto Scale). Batch's code: PoolBeingResized.
    # Was: accepted, and the formula's first evaluation replaced the resize's target.
    client, thread = env
    pools, autoscaler = thread.runtime.service.pools, thread.runtime.service.autoscaler
    formula = {"autoScaleFormula": "$TargetDedicatedNodes = 0;"}
    out = on_loop(
        thread,
        lambda: pools.add_pool({"id": "ea", "vmSize": "any", "targetDedicatedNodes": 1}),
        lambda: pools.get_pool("ea")["allocationState"],
        lambda: autoscaler.enable("ea", formula),
        lambda: bool(pools.get_pool("ea").get("enableAutoScale")),
    )
    assert [code(r) for r in out] == ["ea", "resizing", (409, "PoolBeingResized"), False]
    client.wait_for_pool("ea", timeout_s=120)
    client.enable_pool_auto_scale("ea", formula["autoScaleFormula"])  # steady: accepted
    wait_until(lambda: client.get_pool("ea").current_dedicated_nodes == 0, timeout_s=60,
               what="the formula applied")
    client.delete_pool("ea")
    wait_until(lambda: "ea" not in [p.id for p in client.list_pools()], timeout_s=60,
               what="pool ea gone")


def new_pool(client: BatchClient, pool_id: str) -> dict[str, Any]:
    client.create_pool({"id": pool_id, "vmSize": "any", "targetDedicatedNodes": 1})
    client.wait_for_pool(pool_id, timeout_s=120)
    pool = client.get_pool_json(pool_id)
    assert pool["allocationState"] == "steady"
    return pool


def test_m14_a_deleting_pool_is_resizing_to_zero(env: tuple[BatchClient, ServiceThread]) -> None:
    # "any ongoing resize operation on the Pool are stopped; the Batch service starts
    # resizing the Pool to zero Compute Nodes" (REST Pool - Delete).
    client, thread = env
    pools = thread.runtime.service.pools
    new_pool(client, "d14")
    out = on_loop(
        thread,
        lambda: pools.delete_pool("d14"),
        lambda: pools.get_pool("d14"),
        lambda: [p["id"] for p in pools.list_pools("allocationState eq 'resizing'")],
        lambda: [p["id"] for p in pools.list_pools("allocationState eq 'stopping'")],
    )
    assert (out[1]["state"], out[1]["allocationState"]) == ("deleting", "resizing")
    assert (out[2], out[3]) == (["d14"], [])
    wait_until(lambda: not client.list_pools(), timeout_s=60, what="pool d14 gone")


def test_m16_a_deleting_pool_accepts_no_change(env: tuple[BatchClient, ServiceThread]) -> None:
    # "If you call an Update, Patch or Delete API on a Pool in the deleting state, it
    # will fail with HTTP status code 409 with error code PoolBeingDeleted" (REST Pool -
    # Delete).
    client, thread = env
    svc = thread.runtime.service
    pools = svc.pools
    before = new_pool(client, "d16")
    out = on_loop(
        thread,
        lambda: pools.delete_pool("d16"),
        lambda: pools.get_pool("d16"),
        lambda: pools.delete_pool("d16"),
        lambda: pools.update_pool("d16", {"metadata": [{"name": "a", "value": "b"}]}),
        lambda: pools.replace_pool_properties("d16", {}),
        lambda: pools.resize_pool("d16", {"targetDedicatedNodes": 2}),
        lambda: pools.stop_resize_pool("d16"),
        lambda: svc.nodes.remove_nodes("d16", {"nodeList": ["h0"]}),
        lambda: svc.autoscaler.disable("d16"),  # Pool - Disable AutoScale
        lambda: pools.get_pool("d16"),
    )
    deleting = out[1]
    assert deleting["state"] == "deleting"
    assert deleting["eTag"] != before["eTag"]
    assert deleting["lastModified"] > before["lastModified"]
    assert [code(r) for r in out[2:9]] == [(409, "PoolBeingDeleted")] * 7
    assert "metadata" not in out[9] and out[9]["eTag"] == deleting["eTag"]
    wait_until(lambda: not client.list_pools(), timeout_s=60, what="pool d16 gone")
