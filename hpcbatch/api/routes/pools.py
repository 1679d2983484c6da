"""Pool routes: "Pool - Add/List/Get/Exists/Delete/Patch/Update Properties/Resize/Stop Resize/
Enable, Disable, Evaluate AutoScale/Remove Nodes"."""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.filters import POOL_FILTER, filter_listed
from hpcbatch.api.http import (
    Collection,
    json_reply,
    metadata_url,
    param,
    read_json,
    require,
    service,
)
from hpcbatch.batch import odata
from hpcbatch.batch.models import PoolEvaluateAutoScale

routes = web.RouteTableDef()

POOL_SELECTABLE = (
    "id", "displayName", "url", "eTag", "lastModified", "creationTime", "state",
    "stateTransitionTime", "allocationState", "allocationStateTransitionTime", "vmSize",
    "virtualMachineConfiguration", "cloudServiceConfiguration", "resizeTimeout", "resizeErrors",
    "currentDedicatedNodes", "currentLowPriorityNodes", "targetDedicatedNodes",
    "targetLowPriorityNodes", "enableAutoScale", "autoScaleFormula",
    "autoScaleEvaluationInterval", "autoScaleRun", "enableInterNodeCommunication",
    "networkConfiguration", "startTask", "certificateReferences", "applicationPackageReferences",
    "applicationLicenses", "taskSlotsPerNode", "maxTasksPerNode", "taskSchedulingPolicy",
    "userAccounts", "metadata", "stats", "mountConfiguration", "identity",
    "targetNodeCommunicationMode", "currentNodeCommunicationMode", "upgradePolicy",
    "resourceTags",
)
"""Properties a pool's ``$select`` may name (Batch REST api-version 2025-06-01)."""


POOLS = Collection("/pools", "pool", "pools", lambda svc, p: svc.pools.get_pool(p["pool"]),
                   POOL_SELECTABLE, lambda svc, items: svc.statistics.expand_pools(items))
"""The pools: ``/pools/{pool}``."""


@routes.post("/pools")
async def add_pool(request: web.Request) -> web.Response:
    """"Pool - Add"."""
    return POOLS.created(request, service(request).pools.add_pool(await read_json(request)))


@routes.get("/pools")
async def list_pools(request: web.Request) -> web.Response:
    """"Pool - List" (``$filter`` in the store, or on the JSON: :func:`~hpcbatch.api.filters.filter_listed`)."""
    return POOLS.page(request, filter_listed(request.query.get("$filter"), odata.POOL_PROPERTIES,
                                      service(request).pools.list_pools, POOL_FILTER),
                      expand=True)


@routes.get("/pools/{pool}")
async def get_pool(request: web.Request) -> web.Response:
    """"Pool - Get", and "Pool - Exists" (``HEAD``)."""
    return POOLS.entity(request)


@routes.delete("/pools/{pool}")
@POOLS.change(202, etag=False)
async def delete_pool(request: web.Request) -> None:
    """"Pool - Delete": the pool answers ``state: deleting`` until it is gone."""
    service(request).pools.delete_pool(param(request, "pool"))


@routes.patch("/pools/{pool}")
@POOLS.change(200)
async def patch_pool(request: web.Request) -> None:
    """"Pool - Patch": change the properties the body names."""
    service(request).pools.update_pool(param(request, "pool"), await read_json(request))


@routes.post("/pools/{pool}/updateproperties")
@POOLS.change(204)
async def update_pool_properties(request: web.Request) -> None:
    """"Pool - Update Properties": replace the mutable properties."""
    body = await read_json(request)
    # PoolUpdatePropertiesParameter; certificateReferences too before today's API version
    require(body, "applicationPackageReferences", "metadata")
    service(request).pools.replace_pool_properties(param(request, "pool"), body)


@routes.post("/pools/{pool}/resize")
@POOLS.change(202)
async def resize_pool(request: web.Request) -> None:
    """"Pool - Resize"."""
    service(request).pools.resize_pool(param(request, "pool"), await read_json(request))


@routes.post("/pools/{pool}/stopresize")
@POOLS.change(202)
async def stop_resize_pool(request: web.Request) -> None:
    """"Pool - Stop Resize": the pool keeps the nodes it has now."""
    service(request).pools.stop_resize_pool(param(request, "pool"))


@routes.post("/pools/{pool}/enableautoscale")
@POOLS.change(200)
async def enable_autoscale(request: web.Request) -> None:
    """"Pool - Enable AutoScale" (409 ``PoolBeingDeleted`` for a deleting pool)."""
    svc, pool_id = service(request), param(request, "pool")
    body = await read_json(request)
    svc.autoscaler.enable(pool_id, body)


@routes.post("/pools/{pool}/disableautoscale")
@POOLS.change(200, guard=False)
async def disable_autoscale(request: web.Request) -> None:
    """"Pool - Disable AutoScale" (409 ``PoolBeingDeleted`` for a deleting pool)."""
    svc, pool_id = service(request), param(request, "pool")
    svc.autoscaler.disable(pool_id)


@routes.post("/pools/{pool}/evaluateautoscale")
async def evaluate_autoscale(request: web.Request) -> web.Response:
    """"Pool - Evaluate AutoScale": the formula's ``AutoScaleRun``, nothing changed."""
    body = PoolEvaluateAutoScale.from_wire(await read_json(request), what="evaluate autoscale")
    run = service(request).autoscaler.evaluate(param(request, "pool"), body.auto_scale_formula)
    entity = "Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun"
    return json_reply({"odata.metadata": metadata_url(request, entity), **run},
                      headers={"DataServiceId": POOLS.target(request).url})


@routes.post("/pools/{pool}/removenodes")
@POOLS.change(202)
async def remove_nodes(request: web.Request) -> None:
    """"Pool - Remove Nodes"."""
    service(request).nodes.remove_nodes(param(request, "pool"), await read_json(request))
