"""Account routes: "Account - List Pool Node Counts", "Account - List Supported Images",
"Account - List Node Agent SKUs", and hpcbatch's ``/health``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hpcbatch.api.filters import ListFilter
from hpcbatch.api.http import ACCOUNT, json_reply, page_reply, service
from hpcbatch.batch import images
from hpcbatch.batch.errors import NotFoundError
from hpcbatch.batch.states import ComputeNodeState

routes = web.RouteTableDef()

_N = ComputeNodeState
_NODE_COUNT_STATES: dict[str, str] = {
    _N.creating: "creating", _N.idle: "idle", _N.offline: "offline", _N.preempted: "preempted",
    _N.rebooting: "rebooting", _N.reimaging: "reimaging", _N.running: "running",
    _N.starting: "starting", _N.starttaskfailed: "startTaskFailed",
    _N.leavingpool: "leavingPool", _N.unknown: "unknown", _N.unusable: "unusable",
    _N.waitingforstarttask: "waitingForStartTask", _N.deallocated: "deallocated",
    _N.deallocating: "deallocating", _N.upgradingos: "upgradingOS",
}
"""A node state's name in ``NodeCounts`` (camelCase)."""


def node_counts(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Batch's ``NodeCounts`` of some nodes' wire JSON: a count per state, and ``total``.

    A state Batch does not count is counted as ``unknown``.
    """
    counts = dict.fromkeys(_NODE_COUNT_STATES.values(), 0)
    for n in nodes:
        counts[_NODE_COUNT_STATES.get(str(n.get("state")), "unknown")] += 1
    counts["total"] = len(nodes)
    return counts


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """hpcbatch's health check (no authentication): ``{"status": "ok", "account"}``."""
    return json_reply({"status": "ok", "account": request.app[ACCOUNT][0]})


@routes.get("/nodecounts")
async def list_pool_node_counts(request: web.Request) -> web.Response:
    """"Account - List Pool Node Counts": node counts by state, per pool (``$filter`` on pools)."""
    svc = service(request)
    items = []
    for pool in svc.pools.list_pools(request.query.get("$filter")):
        try:
            nodes = svc.nodes.list_nodes(pool["id"])
        except NotFoundError:
            continue
        items.append({"poolId": pool["id"],
                      "dedicated": node_counts([n for n in nodes if n.get("isDedicated", True)]),
                      "lowPriority": node_counts([n for n in nodes
                                                  if not n.get("isDedicated", True)])})
    return page_reply(request, "poolnodecounts", items)


IMAGE_FILTER = ListFilter([
    ("nodeAgentSKUId", "string", ()), ("osType", "enum", ("linux", "windows")),
    ("verificationType", "enum", ("verified", "unverified")),
    ("imageReference/publisher", "string", ()), ("imageReference/offer", "string", ()),
    ("imageReference/sku", "string", ()),
])
"""Filterable properties of "Account - List Supported Images"."""


@routes.get("/supportedimages")
async def list_supported_images(request: web.Request) -> web.Response:
    """"Account - List Supported Images": the operating systems the inventory's hosts run,
    in Batch's ``ImageInformation`` shape (:mod:`hpcbatch.batch.images`), ``$filter``-able."""
    items = await service(request).inventory.supported_images()
    if request.query.get("$filter"):
        items = IMAGE_FILTER.apply(items, request.query["$filter"])
    return page_reply(request, "supportedimages", items)


@routes.get("/nodeagentskus")
async def list_node_agent_skus(request: web.Request) -> web.Response:
    """"Account - List Node Agent SKUs" (older api-versions): the same, by node agent SKU."""
    items = await service(request).inventory.supported_images()
    return page_reply(request, "nodeagentskus", images.node_agent_skus(items))
