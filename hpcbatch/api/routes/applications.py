"""Application routes: "Application - List/Get", and hpcbatch's package upload and removal.

Azure manages application packages through its management plane; hpcbatch
takes them here: ``PUT``/``DELETE /applications/{app}/versions/{version}``
and ``PATCH /applications/{app}`` (``defaultVersion``).
"""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.http import entity_reply, page_reply, param, read_json, service
from hpcbatch.batch.errors import BadRequestError

routes = web.RouteTableDef()


@routes.get("/applications")
async def list_applications(request: web.Request) -> web.Response:
    """"Application - List"."""
    return page_reply(request, "applications",
                      service(request).applications.list_applications())


@routes.get("/applications/{app}")
async def get_application(request: web.Request) -> web.Response:
    """"Application - Get"."""
    return entity_reply(request,
                        service(request).applications.get_application(param(request, "app")),
                        "applications/@Element")


@routes.patch("/applications/{app}")
async def update_application(request: web.Request) -> web.Response:
    """Set an application's ``defaultVersion`` (hpcbatch; Azure: the management plane)."""
    body = await read_json(request)
    if not isinstance(body, dict) or "defaultVersion" not in body or \
            not isinstance(body["defaultVersion"], str | None):
        raise BadRequestError("The body must be {\"defaultVersion\": \"...\"}.",
                              values={"PropertyName": "defaultVersion"})
    service(request).applications.set_default_version(param(request, "app"),
                                                      body["defaultVersion"])
    return web.Response(status=200)


@routes.put("/applications/{app}/versions/{version}")
async def put_package(request: web.Request) -> web.Response:
    """Upload an application package (the body is the zip; hpcbatch)."""
    service(request).applications.create_application_package(
        param(request, "app"), param(request, "version"), await request.read())
    return web.Response(status=201)


@routes.delete("/applications/{app}/versions/{version}")
async def delete_package(request: web.Request) -> web.Response:
    """Delete an application package (hpcbatch)."""
    service(request).applications.delete_application_package(param(request, "app"),
                                                             param(request, "version"))
    return web.Response(status=204)
