"""Statistics routes: "Pool - List Usage Metrics", and "Job - Get All Lifetime Statistics" and
"Pool - Get All Lifetime Statistics" of the api-versions that have them.

``$expand=stats`` on jobs and pools is answered by their collections
(:mod:`hpcbatch.api.routes.jobs`, :mod:`hpcbatch.api.routes.pools`); the numbers come
from :mod:`hpcbatch.core.statistics`.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from hpcbatch.api.filters import ListFilter
from hpcbatch.api.http import json_reply, metadata_url, page_reply, service
from hpcbatch.batch import odata
from hpcbatch.batch.errors import HpcbatchError

routes = web.RouteTableDef()

LIFETIME_REMOVED_IN = "2023-05-01.17.0"
"""The first api-version without "Job/Pool - Get All Lifetime Statistics": Batch retired
them (announced for 30 April 2023) and removed them from the REST API in this version
(azure-batch for JavaScript 11.0.0: "Job/Pool lifetime statistics removal"); the
``azure-batch`` 14.x and 15.x SDKs have no call for them."""

USAGE_METRICS_FILTER = ListFilter([
    ("poolId", "string", ()), ("startTime", "datetime", ()), ("endTime", "datetime", ()),
])
"""Filterable properties of "Pool - List Usage Metrics"."""


def _lifetime_removed(request: web.Request) -> bool:
    """Whether the request's api-version no longer has the lifetime statistics operations
    (versions compare by their date, ``YYYY-MM-DD``)."""
    version = request.query.get("api-version", "")
    return version[:10] >= LIFETIME_REMOVED_IN[:10]


def _no_such_operation(request: web.Request, operation: str) -> HpcbatchError:
    """What a Batch api-version without ``operation`` answers: the URI names no resource."""
    return HpcbatchError(
        f"The requested URI {request.path} does not represent any resource on the server: "
        f"'{operation}' was removed from the Batch REST API in api-version "
        f"{LIFETIME_REMOVED_IN}; use an earlier api-version, or $expand=stats on "
        "Job - Get/List and Pool - Get/List.", code="InvalidUri", status=400,
        values={"RequestUri": request.path})


@routes.get("/lifetimejobstats")
async def lifetime_job_stats(request: web.Request) -> web.Response:
    """"Job - Get All Lifetime Statistics" (api-versions before 2023-05-01.17.0):
    ``JobStatistics`` of every task run of the account."""
    if _lifetime_removed(request):
        raise _no_such_operation(request, "Job - Get All Lifetime Statistics")
    stats = service(request).statistics.lifetime_jobs()
    return json_reply({"odata.metadata": metadata_url(request, "jobstats/@Element"), **stats})


@routes.get("/lifetimepoolstats")
async def lifetime_pool_stats(request: web.Request) -> web.Response:
    """"Pool - Get All Lifetime Statistics" (api-versions before 2023-05-01.17.0):
    ``PoolStatistics`` of every pool of the account."""
    if _lifetime_removed(request):
        raise _no_such_operation(request, "Pool - Get All Lifetime Statistics")
    stats = service(request).statistics.lifetime_pools()
    return json_reply({"odata.metadata": metadata_url(request, "poolstats/@Element"), **stats})


def _time_query(request: web.Request, name: str) -> datetime | None:
    """The query parameter ``name`` (any case: api-version 2025-06-01 names it
    ``startTime``, earlier ones ``starttime``) as a naive UTC time (None when absent)."""
    text = next((v for k, v in request.query.items() if k.lower() == name), None)
    if text is None:
        return None
    try:
        return odata.parse_datetime(text)
    except ValueError:
        raise odata.InvalidQueryParameterError(
            name, text[:128], f"{name} must be an ISO 8601 time such as "
            "2026-01-02T03:00:00Z.") from None


@routes.get("/poolusagemetrics")
async def list_pool_usage_metrics(request: web.Request) -> web.Response:
    """"Pool - List Usage Metrics": core hours per pool per 30-minute interval overlapping
    ``starttime``..``endtime`` (default: the last interval that has ended), ``$filter`` on
    ``poolId``, ``startTime``, ``endTime``."""
    start, end = _time_query(request, "starttime"), _time_query(request, "endtime")
    if start is not None and end is not None and end <= start:
        raise odata.InvalidQueryParameterError(
            "endtime", end.isoformat(), "endtime must be later than starttime.")
    items = service(request).statistics.usage_metrics(start, end)
    if request.query.get("$filter"):
        items = USAGE_METRICS_FILTER.apply(items, request.query["$filter"])
    return page_reply(request, "poolusagemetrics", items)
