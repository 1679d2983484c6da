"""The host inventory (an hpcbatch addition to Batch's REST API): ``/inventory/hosts``."""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.http import json_reply, param, read_json, service
from hpcbatch.api.security import may_add_operator_hosts
from hpcbatch.batch.errors import BadRequestError, InvalidPropertyValueError

routes = web.RouteTableDef()


@routes.get("/inventory/hosts")
async def list_hosts(request: web.Request) -> web.Response:
    """List the inventory's hosts: ``{"value": [host, ...]}``."""
    return json_reply({"value": service(request).inventory.list_hosts()})


@routes.post("/inventory/hosts")
async def add_hosts(request: web.Request) -> web.Response:
    """Add or replace hosts: a body ``{"hosts": [...]}`` or ``[...]``; ``201`` with the hosts.

    Hosts only the operator may add (``provider: local``, local paths, host-key
    checking off) answer ``403 AuthorizationFailure`` unless the request
    carries the operator's proof or the service allows them to every caller.
    """
    body = await read_json(request)
    items = body.get("hosts") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise BadRequestError("The body must be {\"hosts\": [...]} or a list of hosts.")
    added = service(request).inventory.add_hosts(items, operator=may_add_operator_hosts(request))
    return json_reply({"value": added}, status=201)


@routes.post("/inventory/hosts/check")
async def check_hosts(request: web.Request) -> web.Response:
    """Preflight the inventory's hosts (``hpcbatch hosts check``): ``200`` with every check.

    Body (optional): ``{"poolId": "p", "launcher": "mpiexec"}``. The reply is
    ``{"value": [{host, check, status, detail, fix}, ...], "service": {...},
    "failed": [host, ...]}``; a failing host is a result, not an error.
    """
    body = await read_json(request) if request.body_exists else {}
    if not isinstance(body, dict) or set(body) - {"poolId", "launcher"}:
        raise BadRequestError("The body must be {\"poolId\": ..., \"launcher\": ...} "
                              "(both optional).")
    for name in ("poolId", "launcher"):
        if body.get(name) is not None and not (isinstance(body[name], str) and body[name]):
            raise InvalidPropertyValueError(name, body[name], "must be a non-empty string")
    return json_reply(await service(request).inventory.check_hosts(
        body.get("poolId"), body.get("launcher") or "mpiexec"))


@routes.delete("/inventory/hosts/{name}")
async def remove_host(request: web.Request) -> web.Response:
    """Remove a host from the inventory (``204``)."""
    service(request).inventory.remove_host(param(request, "name"))
    return web.Response(status=204)
