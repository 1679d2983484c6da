"""The REST API: Batch REST paths and JSON over aiohttp, with SharedKey authentication.

Paths, status codes, headers and bodies follow the Batch REST API
(api-version 2025-06-01, and the 2024-02-01.19.0 the ``azure-batch`` 14.x SDK
speaks), so the official SDKs drive hpcbatch unchanged:

* Creates answer ``201`` with ``Location``, ``DataServiceId``, ``ETag`` and
  ``Last-Modified``; deletes and the long-running actions (resize, stop
  resize, remove nodes, job terminate/disable/enable, node reboot/reimage)
  answer ``202``; updates ``200``; task terminate/reactivate, job schedule
  disable/enable and pool property replacement ``204``.
* JSON replies carry ``Content-Type: application/json;odata=minimalmetadata``
  and ``odata.metadata``; entity replies carry ``ETag`` and ``Last-Modified``;
  every reply carries ``request-id`` and echoes ``client-request-id``.
* Lists answer ``{"odata.metadata", "value", "odata.nextLink"}``, paged by
  ``maxresults`` (1..1000, default 1000) with a ``$skiptoken`` continuation;
  ``$filter``, ``$select`` and ``$expand`` (``stats``, accepted; hpcbatch keeps
  no statistics) are honoured; ``timeOut`` is accepted.
* ``If-Match``, ``If-None-Match``, ``If-Modified-Since`` and
  ``If-Unmodified-Since`` are evaluated against the resource's ``eTag`` and
  ``lastModified``: ``412 ConditionNotMet`` for a write, ``304`` for a read.
* ``addtaskcollection`` bodies of 1 MiB or more answer ``413
  RequestBodyTooLarge``, which the SDKs' ``create_tasks`` / ``add_collection``
  handle by halving the chunk.
* Errors answer Batch's ``{"code", "message": {"lang", "value"}, "values"}``
  body, and every ``4xx``/``5xx`` reply is logged (request id, request,
  route, status, error code). A Batch operation hpcbatch does not support
  answers ``400 FeatureNotSupported`` naming the operation and why
  (:mod:`hpcbatch.api.unsupported`).

hpcbatch's own additions live under ``/inventory`` (the host inventory),
``/openapi.json`` (this API's OpenAPI document, :mod:`hpcbatch.api.openapi`),
``/health`` and ``/dashboard/`` (the web dashboard, :mod:`hpcbatch.api.dashboard`,
which signs browsers in with its own sessions instead of SharedKey).

Layout: this module builds the application (:func:`make_app`) and its
middlewares; :mod:`hpcbatch.api.routes` holds a module per resource;
:mod:`hpcbatch.api.http` the plumbing they share; :mod:`hpcbatch.api.filters`
the ``$filter`` of lists the core returns whole.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from hpcbatch.api import dashboard, openapi, routes, unsupported
from hpcbatch.api.http import (
    ACCOUNT,
    SERVICE,
    Handler,
    check_api_version,
    error_reply,
    int_query,
)
from hpcbatch.api.security import API_SECURITY, ApiSecurity, auth_middleware
from hpcbatch.batch.errors import BadRequestError, HpcbatchError
from hpcbatch.core.service import BatchService

__all__ = ["auth_middleware", "errors_middleware", "input_middleware", "make_app"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024 * 1024
"""The largest request body accepted (an application package upload)."""


def _http_error(request: web.Request, exc: web.HTTPException) -> HpcbatchError | None:
    """Batch's error for aiohttp's own 404, 405 and 413; None for any other."""
    if exc.status == 404:
        return HpcbatchError(f"The requested URI {request.path} does not represent any "
                             "resource on the server.", code="InvalidUri", status=400,
                             values={"RequestUri": request.path})
    if exc.status == 405:
        return HpcbatchError(f"The resource {request.path} does not support the HTTP verb "
                             f"{request.method}.", code="UnsupportedHttpVerb", status=405)
    if exc.status == 413:
        return HpcbatchError("The request body is too large.", code="RequestBodyTooLarge",
                             status=413)
    return None


def _log_reply(request: web.Request, request_id: str, status: int, code: str | None) -> None:
    """Log a 4xx (INFO) or 5xx (ERROR) reply: request id, request, route, status, error code."""
    if status < 400:
        return
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "-"
    log.log(logging.ERROR if status >= 500 else logging.INFO,
            "request %s: %s %s (route %s) answered %d %s", request_id, request.method,
            request.path_qs[:500], route, status, code or "-")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error in Batch's format and log it; ``request-id`` on every reply.

    An :class:`~hpcbatch.batch.errors.HpcbatchError` answers its status and
    code; aiohttp's 404 and 405 answer ``400 InvalidUri`` and ``405
    UnsupportedHttpVerb``; any other exception answers ``500 InternalError``
    (its traceback logged).
    """
    request_id = str(uuid.uuid4())
    code: str | None = None
    try:
        resp = await handler(request)
    except HpcbatchError as exc:
        resp, code = error_reply(request, exc, request_id), exc.code
    except web.HTTPException as exc:
        err = _http_error(request, exc)
        if err is None:
            _log_reply(request, request_id, exc.status, None)
            raise
        resp, code = error_reply(request, err, request_id), err.code
    except Exception:
        log.exception("request %s: %s %s failed", request_id, request.method, request.path)
        err = HpcbatchError("The server encountered an internal error; retry the request.",
                            code="InternalError", status=500)
        resp, code = error_reply(request, err, request_id), err.code
    _log_reply(request, request_id, resp.status, code)
    resp.headers["request-id"] = request_id
    resp.headers.setdefault("DataServiceVersion", "3.0")
    if "client-request-id" in request.headers:
        resp.headers["client-request-id"] = request.headers["client-request-id"]
    return resp


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what no route may see: a path with a NUL character (``400 InvalidUri``), on
    every path but ``/health`` and the dashboard's a missing or unknown ``api-version``
    (:func:`~hpcbatch.api.http.check_api_version`), and a ``timeout`` that is not an
    integer (``400 InvalidQueryParameterValue``)."""
    if "\x00" in request.path:
        raise BadRequestError(
            "The requested URI contains a NUL character, which no Batch resource name holds.",
            code="InvalidUri", values={"RequestUri": request.raw_path[:512]})
    if request.path != "/health" and not dashboard.owns(request):  # the page sends none
        check_api_version(request)
    if "timeout" in request.query:  # Batch: int32 seconds; a larger value means the default
        int_query(request, "timeout", 30)
    return await handler(request)


def make_app(service: BatchService, account: str, key: str, *, operator_key: str | None = None,
             allow_api_local_hosts: bool = False,
             dask_dashboard_url: str | None = None) -> web.Application:
    """Build the aiohttp application serving ``service`` for one account.

    Parameters
    ----------
    service
        The service core.
    account, key
        Account name and base64 key checked by SharedKey authentication.
    operator_key
        The operator key (base64) whose proof marks the operator's requests
        (:func:`hpcbatch.api.security.ensure_operator_key`); None: no request is.
    allow_api_local_hosts
        Let any API caller add the inventory hosts only the operator may add otherwise.
    dask_dashboard_url
        The Dask dashboard's URL when the operator enabled it (the web
        dashboard links to it); None: no link.

    Returns
    -------
    web.Application
        Every resource's routes (:mod:`hpcbatch.api.routes`) and every
        unsupported operation (:mod:`hpcbatch.api.unsupported`), behind the
        error and authentication middlewares
        (:func:`hpcbatch.api.security.auth_middleware`).
    """
    app = web.Application(middlewares=[errors_middleware, auth_middleware, input_middleware],
                          client_max_size=MAX_REQUEST_BYTES)
    app[SERVICE] = service
    app[ACCOUNT] = (account, key)
    app[API_SECURITY] = ApiSecurity(account, key, operator_key=operator_key,
                                    allow_api_local_hosts=allow_api_local_hosts)
    routes.add_routes(app)
    app.router.add_get(openapi.PATH, openapi.get_openapi_document)
    unsupported.add_routes(app)
    app.add_subapp(dashboard.PREFIX, dashboard.make_dashboard(
        service, account, key, dask_dashboard_url=dask_dashboard_url))
    return app
