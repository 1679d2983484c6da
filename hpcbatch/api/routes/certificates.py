"""Certificate routes: "Certificate - Add/List/Get/Delete/Cancel Deletion".

Certificates are deprecated by Batch (api-version 2025-06-01 has no Certificate
operations); the ``azure-batch`` 14.x SDK and older clients still call them, and
hpcbatch carries them out (:mod:`hpcbatch.core.certificates`).
"""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.filters import ListFilter
from hpcbatch.api.http import (
    base_url,
    created_reply,
    empty_reply,
    entity_reply,
    page_reply,
    param,
    read_object,
    service,
)
from hpcbatch.batch.states import CertificateState

routes = web.RouteTableDef()

CERTIFICATE = "/certificates(thumbprintAlgorithm={alg},thumbprint={thumbprint})"
"""One certificate's path, as Batch writes it."""

CERTIFICATE_SELECTABLE = (
    "thumbprint", "thumbprintAlgorithm", "url", "state", "stateTransitionTime", "previousState",
    "previousStateTransitionTime", "publicData", "deleteCertificateError",
)
"""Properties a certificate's ``$select`` may name."""

CERTIFICATE_FILTER = ListFilter([
    ("thumbprint", "string", ()), ("thumbprintAlgorithm", "string", ()),
    ("state", "enum", tuple(map(str, CertificateState))),
    ("stateTransitionTime", "datetime", ()),
])
"""``$filter`` of "Certificate - List"."""


@routes.post("/certificates")
async def add_certificate(request: web.Request) -> web.Response:
    """"Certificate - Add" (``CertificateAddParameter``): 201."""
    path = service(request).certificates.add(await read_object(request))
    return created_reply(f"{base_url(request)}{path}", None)


@routes.get("/certificates")
async def list_certificates(request: web.Request) -> web.Response:
    """"Certificate - List" (``$filter``, ``$select``)."""
    items = service(request).certificates.list_certificates()
    if request.query.get("$filter"):
        items = CERTIFICATE_FILTER.apply(items, request.query["$filter"])
    return page_reply(request, "certificates", items, CERTIFICATE_SELECTABLE)


@routes.get(CERTIFICATE)
async def get_certificate(request: web.Request) -> web.Response:
    """"Certificate - Get" (``$select``)."""
    data = service(request).certificates.get(param(request, "alg"), param(request, "thumbprint"))
    return entity_reply(request, data, "certificates/@Element", CERTIFICATE_SELECTABLE)


@routes.delete(CERTIFICATE)
async def delete_certificate(request: web.Request) -> web.Response:
    """"Certificate - Delete": 202 (gone, or deletefailed while pools reference it)."""
    service(request).certificates.delete(param(request, "alg"), param(request, "thumbprint"))
    return empty_reply(202)


@routes.post(CERTIFICATE + "/canceldelete")
async def cancel_delete_certificate(request: web.Request) -> web.Response:
    """"Certificate - Cancel Deletion": 204."""
    service(request).certificates.cancel_delete(param(request, "alg"),
                                                param(request, "thumbprint"))
    return empty_reply(204)
