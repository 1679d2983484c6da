"""Compute node routes: "Compute Node - List/Get/Reboot/Reimage/Disable Scheduling/
Enable Scheduling/Get Remote Login Settings/Add User/Update User/Delete User",
"Compute Node Extension - List/Get"."""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.filters import NODE_FILTER
from hpcbatch.api.http import (
    Collection,
    empty_reply,
    json_reply,
    metadata_url,
    page_reply,
    param,
    read_object,
    service,
)
from hpcbatch.api.unsupported import feature_not_supported
from hpcbatch.batch.errors import NotFoundError
from hpcbatch.core.nodes import node_user_request
from hpcbatch.providers.inventory import Host, ssh_target

routes = web.RouteTableDef()

NODE_SELECTABLE = (
    "id", "url", "state", "schedulingState", "stateTransitionTime", "lastBootTime",
    "allocationTime", "ipAddress", "ipv6Address", "affinityId", "vmSize", "totalTasksRun",
    "runningTasksCount", "runningTaskSlotsCount", "totalTasksSucceeded", "recentTasks",
    "startTask", "startTaskInfo", "certificateReferences", "errors", "isDedicated",
    "endpointConfiguration", "nodeAgentInfo", "virtualMachineInfo",
)
"""Properties a compute node's ``$select`` may name (Batch REST api-version 2025-06-01)."""


NODES = Collection("/pools/{pool}/nodes", "node", "nodes",
                   lambda svc, p: svc.nodes.get_node(p["pool"], p["node"]), NODE_SELECTABLE)
"""A pool's compute nodes: ``/pools/{pool}/nodes/{node}``."""


@routes.get("/pools/{pool}/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """"Compute Node - List" (``$filter`` evaluated on the nodes' JSON)."""
    nodes = service(request).nodes.list_nodes(param(request, "pool"))
    if request.query.get("$filter"):
        nodes = NODE_FILTER.apply(nodes, request.query["$filter"])
    return NODES.page(request, nodes)


@routes.get("/pools/{pool}/nodes/{node}")
async def get_node(request: web.Request) -> web.Response:
    """"Compute Node - Get"."""
    return NODES.entity(request)


@routes.post("/pools/{pool}/nodes/{node}/reboot")
@NODES.change(202, guard=False, etag=False)
async def reboot_node(request: web.Request) -> None:
    """"Compute Node - Reboot" (``nodeRebootOption``)."""
    body = await read_object(request)
    service(request).nodes.reboot_node(param(request, "pool"), param(request, "node"),
                                       body.get("nodeRebootOption"))


@routes.post("/pools/{pool}/nodes/{node}/reimage")
@NODES.change(202, guard=False, etag=False)
async def reimage_node(request: web.Request) -> None:
    """"Compute Node - Reimage" (``nodeReimageOption``): the node's root dir wiped, then a
    restart."""
    body = await read_object(request)
    service(request).nodes.reboot_node(param(request, "pool"), param(request, "node"),
                                       body.get("nodeReimageOption"), reimage=True)


@routes.post("/pools/{pool}/nodes/{node}/disablescheduling")
@NODES.change(200, guard=False, etag=False)
async def disable_scheduling(request: web.Request) -> None:
    """"Compute Node - Disable Scheduling" (``nodeDisableSchedulingOption``)."""
    body = await read_object(request)
    service(request).nodes.set_node_scheduling(param(request, "pool"), param(request, "node"),
                                               False, body.get("nodeDisableSchedulingOption"))


@routes.post("/pools/{pool}/nodes/{node}/enablescheduling")
@NODES.change(200, guard=False, etag=False)
async def enable_scheduling(request: web.Request) -> None:
    """"Compute Node - Enable Scheduling"."""
    service(request).nodes.set_node_scheduling(param(request, "pool"), param(request, "node"),
                                               True)


@routes.get("/pools/{pool}/nodes/{node}/remoteloginsettings")
async def remote_login_settings(request: web.Request) -> web.Response:
    """"Compute Node - Get Remote Login Settings": the SSH address of the node's inventory host.

    Raises
    ------
    HpcbatchError
        ``400 FeatureNotSupported`` for a node whose host offers no SSH login (a
        process of the local provider, on the service's machine).
    """
    svc = service(request)
    node = NODES.target(request).fetch()
    host = next((h for h in svc.inventory.stored_hosts()
                 if str(h.get("name")).lower() == str(node["id"]).lower()), None)
    if host is None or not svc.pool_manager.remote_login(host):
        raise feature_not_supported("Compute Node - Get Remote Login Settings",
                                    f"node {node['id']} is a process on the service's own "
                                    "machine, not an SSH host.")
    # Where ssh really goes: an ssh config alias's HostName and Port.
    target = ssh_target(Host.model_validate({k: v for k, v in host.items() if k != "poolId"}))
    return json_reply({"odata.metadata": metadata_url(request, "remoteloginsettings/@Element"),
                       "remoteLoginIPAddress": target.address,
                       "remoteLoginPort": target.port})


@routes.post("/pools/{pool}/nodes/{node}/users")
async def add_user(request: web.Request) -> web.Response:
    """"Compute Node - Add User" (``ComputeNodeUser``): 201."""
    args = node_user_request(await read_object(request))
    await service(request).nodes.node_user_call(param(request, "pool"), param(request, "node"),
                                                "add_user", args)
    return empty_reply(201, {"DataServiceId": f"{request.url.with_query(None)}/{args['name']}"})


@routes.put("/pools/{pool}/nodes/{node}/users/{user}")
async def update_user(request: web.Request) -> web.Response:
    """"Compute Node - Update User" (``NodeUpdateUserParameter``): password, key and expiry
    replaced (one left out is removed or reset to its default)."""
    args = node_user_request(await read_object(request), name=param(request, "user"))
    args.pop("is_admin")
    await service(request).nodes.node_user_call(param(request, "pool"), param(request, "node"),
                                                "update_user", args)
    return empty_reply(200)


@routes.delete("/pools/{pool}/nodes/{node}/users/{user}")
async def delete_user(request: web.Request) -> web.Response:
    """"Compute Node - Delete User"."""
    await service(request).nodes.node_user_call(param(request, "pool"), param(request, "node"),
                                                "delete_user", {"name": param(request, "user")})
    return empty_reply(200)


@routes.get("/pools/{pool}/nodes/{node}/extensions")
async def list_node_extensions(request: web.Request) -> web.Response:
    """"Compute Node Extension - List": empty (hosts have no VM extensions)."""
    NODES.target(request).fetch()
    return page_reply(request, "extensions", [])


@routes.get("/pools/{pool}/nodes/{node}/extensions/{name}")
async def get_node_extension(request: web.Request) -> web.Response:
    """"Compute Node Extension - Get": ``404 ResourceNotFound`` for a node that exists.

    Raises
    ------
    NotFoundError
        Always: the node's ``NodeNotFound``, or ``ResourceNotFound``.
    """
    NODES.target(request).fetch()
    raise NotFoundError("hpcbatch nodes have no VM extensions.", code="ResourceNotFound",
                        values={"ExtensionName": param(request, "name")})
