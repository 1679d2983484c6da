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
  body. A Batch operation hpcbatch does not support answers ``400
  FeatureNotSupported`` naming the operation and why (docs/azure-compat.md).

hpcbatch's own additions live under ``/inventory`` (the host inventory) and
``/health``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, ClassVar, cast
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from aiohttp import web

from hpcbatch.batch import sharedkey as auth
from hpcbatch.batch.errors import (
    BadRequestError,
    HpcbatchError,
    NotFoundError,
    not_found,
)
from hpcbatch.batch.wire import utcnow
from hpcbatch.core.service import BatchService
from hpcbatch.core.tasks import DEFAULT_MAX_RESULTS
from hpcbatch.store import odata

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE = web.AppKey("service", BatchService)
ACCOUNT = web.AppKey("account", tuple)

JSON_CONTENT_TYPE = "application/json;odata=minimalmetadata"
"""The ``Content-Type`` of Batch's JSON replies."""

MAX_TASK_COLLECTION_BYTES = 1024 * 1024
"""Batch: "The total serialized size of this collection must be less than 1MB"."""

MAX_RESULTS = 1000
"""Batch's largest ``maxresults``."""

FILE_MODE = "0o100644"
"""``ocp-batch-file-mode`` of a regular file on a Linux node, as Batch reports it."""

# Properties a $select may name, per resource (Batch REST api-version 2025-06-01).
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
JOB_SELECTABLE = (
    "id", "displayName", "usesTaskDependencies", "url", "eTag", "lastModified", "creationTime",
    "state", "stateTransitionTime", "previousState", "previousStateTransitionTime", "priority",
    "allowTaskPreemption", "maxParallelTasks", "constraints", "jobManagerTask",
    "jobPreparationTask", "jobReleaseTask", "commonEnvironmentSettings", "poolInfo",
    "onAllTasksComplete", "onTaskFailure", "networkConfiguration", "metadata", "executionInfo",
    "stats",
)
NODE_SELECTABLE = (
    "id", "url", "state", "schedulingState", "stateTransitionTime", "lastBootTime",
    "allocationTime", "ipAddress", "ipv6Address", "affinityId", "vmSize", "totalTasksRun",
    "runningTasksCount", "runningTaskSlotsCount", "totalTasksSucceeded", "recentTasks",
    "startTask", "startTaskInfo", "certificateReferences", "errors", "isDedicated",
    "endpointConfiguration", "nodeAgentInfo", "virtualMachineInfo",
)
SCHEDULE_SELECTABLE = (
    "id", "displayName", "url", "eTag", "lastModified", "creationTime", "state",
    "stateTransitionTime", "previousState", "previousStateTransitionTime", "schedule",
    "jobSpecification", "executionInfo", "metadata", "stats",
)
PREP_RELEASE_SELECTABLE = (
    "poolId", "nodeId", "nodeUrl", "jobPreparationTaskExecutionInfo",
    "jobReleaseTaskExecutionInfo",
)


# ------------------------------------------------------------------ helpers


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _metadata(request: web.Request, entity: str) -> str:
    return f"{_base(request)}/$metadata#{entity}"


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    out = {"Content-Type": JSON_CONTENT_TYPE}
    out.update(headers or {})
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        headers=out)


def _empty(status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    out = dict(headers or {})
    if status != 204:
        out["Content-Length"] = "0"
    return web.Response(status=status, headers=out)


def _http_date(when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return format_datetime(when.astimezone(UTC), usegmt=True)


def _parse_iso(text: Any) -> datetime | None:
    """Parse a wire time (``2025-01-01T10:00:00.123456Z``) into an aware UTC datetime."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return odata.parse_datetime(text).replace(tzinfo=UTC)
    except ValueError:
        return None


def _iso_now() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _entity_headers(data: Mapping[str, Any], url: str | None = None) -> dict[str, str]:
    """``ETag``, ``Last-Modified`` and ``DataServiceId`` of a resource's wire JSON."""
    headers: dict[str, str] = {}
    if data.get("eTag"):
        headers["ETag"] = str(data["eTag"])
    modified = _parse_iso(data.get("lastModified"))
    if modified is not None:
        headers["Last-Modified"] = _http_date(modified)
    if url or data.get("url"):
        headers["DataServiceId"] = url or str(data["url"])
    return headers


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise BadRequestError("The request body is empty; a JSON object is required.")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}.",
            code="InvalidRequestBody",
        ) from None


async def _optional_body(request: web.Request) -> dict[str, Any]:
    if not await request.read():
        return {}
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return body


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequestError(f"The query parameter {name} must be an integer, not {raw!r}.",
                              code="InvalidQueryParameterValue",
                              values={"QueryParameterName": name,
                                      "QueryParameterValue": raw}) from None


def _max_results(request: web.Request) -> int:
    value = _int_query(request, "maxresults", DEFAULT_MAX_RESULTS)
    if not 1 <= value <= MAX_RESULTS:
        raise BadRequestError(
            f"maxresults must be between 1 and {MAX_RESULTS}, not {value}.",
            code="OutOfRangeQueryParameterValue",
            values={"QueryParameterName": "maxresults", "QueryParameterValue": str(value)})
    return value


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise BadRequestError(f"The query parameter {name} must be true or false, not {raw!r}.",
                              code="InvalidQueryParameterValue",
                              values={"QueryParameterName": name, "QueryParameterValue": raw})
    return raw == "true"


def _next_link(request: web.Request, token: Any) -> str:
    query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
    query["$skiptoken"] = str(token)
    return f"{_base(request)}{request.path}?{urlencode(query)}"


def _list(request: web.Request, entity: str, items: list[dict[str, Any]],
          next_token: Any = None) -> web.Response:
    body: dict[str, Any] = {"odata.metadata": _metadata(request, entity), "value": items}
    if next_token is not None:
        body["odata.nextLink"] = _next_link(request, next_token)
    return _json(body)


def _page(request: web.Request, entity: str, items: list[dict[str, Any]],
          selectable: Iterable[str] | None = None, *, expand: bool = False) -> web.Response:
    """Answer a list: ``$select`` applied, one page of ``maxresults`` after ``$skiptoken``."""
    size = _max_results(request)
    if expand:
        odata.parse_expand(request.query.get("$expand", ""))
    select = request.query.get("$select")
    sel = odata.parse_select(select, selectable) if select and selectable else None
    token = request.query.get("$skiptoken", "")
    start = int(token) if token.isdigit() else 0
    page = items[start:start + size]
    if sel:
        page = [odata.apply_select(i, sel) for i in page]
    nxt = start + size if len(items) > start + size else None
    return _list(request, entity, page, nxt)


def _entity(request: web.Request, data: dict[str, Any], entity: str,
            selectable: Iterable[str] | None = None) -> web.Response:
    """Answer one resource (``GET``/``HEAD``), honouring conditional headers and ``$select``."""
    not_modified = _conditions(request, data)
    if not_modified is not None:
        return not_modified
    headers = _entity_headers(data)
    select = request.query.get("$select")
    if select and selectable:
        data = odata.apply_select(data, odata.parse_select(select, selectable))
    if "$expand" in request.query:
        odata.parse_expand(request.query["$expand"])
    return _json({"odata.metadata": _metadata(request, entity), **data}, headers=headers)


def _created(request: web.Request, location: str, data: Mapping[str, Any] | None) -> web.Response:
    headers = {"Location": location, "DataServiceId": location}
    headers.update(_entity_headers(data or {}, location))
    headers.setdefault("Last-Modified", _http_date())
    return _empty(201, headers)


def _done(request: web.Request, status: int, fetch: Callable[[], dict[str, Any]] | None = None,
          url: str | None = None) -> web.Response:
    """Answer an accepted change: ``DataServiceId`` plus the resource's new ``ETag``."""
    headers: dict[str, str] = {}
    if fetch is not None:
        try:
            headers = _entity_headers(fetch(), url)
        except HpcbatchError:
            headers = {}
    if url:
        headers["DataServiceId"] = url
    return _empty(status, headers)


# --------------------------------------------------------- conditional requests


def _etags(value: str) -> list[str]:
    return [v.strip().removeprefix("W/").strip('"') for v in value.split(",") if v.strip()]


def _header_date(request: web.Request, name: str) -> datetime | None:
    raw = request.headers.get(name)
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        raise BadRequestError(f"The {name} header is not an RFC 1123 date: {raw!r}.",
                              code="InvalidHeaderValue", values={"HeaderName": name}) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_CONDITION_HEADERS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


def _conditions(request: web.Request, data: Mapping[str, Any]) -> web.Response | None:
    """Evaluate conditional headers against a resource's ``eTag``/``lastModified``.

    ``If-Match`` and ``If-Unmodified-Since`` that fail answer ``412
    ConditionNotMet``; ``If-None-Match`` and ``If-Modified-Since`` that fail
    answer ``304`` (no body) for a read and ``412`` for a write. Returns the
    ``304`` reply, or None when the request may proceed.
    """
    if not any(h in request.headers for h in _CONDITION_HEADERS):
        return None
    read = request.method in ("GET", "HEAD")
    etag = str(data.get("eTag") or "")
    modified = _parse_iso(data.get("lastModified"))
    if modified is not None:
        modified = modified.replace(microsecond=0)

    def precondition_failed(reason: str) -> HpcbatchError:
        return HpcbatchError(f"The condition specified using HTTP conditional header(s) is not "
                             f"met: {reason}.", code="ConditionNotMet", status=412,
                             values={"ETag": etag})

    if_match = request.headers.get("If-Match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in tags:
            raise precondition_failed(f"If-Match {if_match} does not match the ETag {etag}")
    since = _header_date(request, "If-Unmodified-Since")
    if since is not None and modified is not None and modified > since:
        raise precondition_failed("the resource was modified after If-Unmodified-Since")
    not_modified = None
    if_none = request.headers.get("If-None-Match")
    if if_none is not None:
        tags = _etags(if_none)
        if "*" in tags or etag in tags:
            not_modified = f"If-None-Match {if_none} matches the ETag {etag}"
    since = _header_date(request, "If-Modified-Since")
    if since is not None and modified is not None and modified <= since:
        not_modified = "the resource was not modified since If-Modified-Since"
    if not_modified is None:
        return None
    if read:
        return _empty(304, _entity_headers(data))
    raise precondition_failed(not_modified)


def _guard(request: web.Request, fetch: Callable[[], dict[str, Any]]) -> None:
    """Check a write's conditional headers (fetching the resource only when there are any)."""
    if any(h in request.headers for h in _CONDITION_HEADERS):
        _conditions(request, fetch())


# ------------------------------------------------------------------ middleware


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error in Batch's format, with request-id headers on every reply."""
    request_id = str(uuid.uuid4())
    try:
        resp = await handler(request)
    except HpcbatchError as exc:
        resp = _error(request, exc, request_id)
    except web.HTTPException as exc:
        if exc.status == 404:
            err = HpcbatchError(f"The requested URI {request.path} does not represent any "
                                "resource on the server.", code="InvalidUri", status=400,
                                values={"RequestUri": request.path})
        elif exc.status == 405:
            err = HpcbatchError(f"The resource {request.path} does not support the HTTP verb "
                                f"{request.method}.", code="UnsupportedHttpVerb", status=405)
        elif exc.status == 413:
            err = HpcbatchError("The request body is too large.", code="RequestBodyTooLarge",
                                status=413)
        else:
            raise
        resp = _error(request, err, request_id)
    resp.headers["request-id"] = request_id
    resp.headers.setdefault("DataServiceVersion", "3.0")
    if "client-request-id" in request.headers:
        resp.headers["client-request-id"] = request.headers["client-request-id"]
    return resp


def _error(request: web.Request, exc: HpcbatchError, request_id: str) -> web.Response:
    body = exc.to_wire()
    body["odata.metadata"] = _metadata(
        request, "Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element")
    body["message"] = {"lang": "en-US",
                       "value": f"{exc.message}\nRequestId:{request_id}\nTime:{_iso_now()}"}
    return _json(body, status=exc.status)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the SharedKey signature of every request but ``/health``."""
    if request.path != "/health":
        account, key = request.app[ACCOUNT]
        auth.verify(request.method, request.raw_path, None, request.headers, account, key)
    return await handler(request)


# ------------------------------------------------------------------- handlers

routes = web.RouteTableDef()


def svc(request: web.Request) -> BatchService:
    return request.app[SERVICE]


def _m(request: web.Request, name: str) -> str:
    return request.match_info[name]


def unsupported(operation: str, why: str) -> HpcbatchError:
    """The error for a Batch operation hpcbatch does not implement (400 FeatureNotSupported)."""
    return HpcbatchError(f"The Batch operation '{operation}' is not supported by hpcbatch: {why}",
                         code="FeatureNotSupported", status=400,
                         values={"Operation": operation})


_COMPONENT = {"update_pool": "pools", "replace_pool_properties": "pools", "update_task": "tasks",
              "delete_task_file": "files", "delete_node_file": "files"}
"""The part of the service core (``service.pools`` ...) holding each operation's method."""


def _core(request: web.Request, method: str, operation: str) -> Callable[..., Any]:
    """The service method implementing ``operation``, or ``FeatureNotSupported``."""
    fn = getattr(getattr(svc(request), _COMPONENT[method]), method, None)
    if fn is None:
        raise unsupported(operation, "this hpcbatch service does not implement it yet.")
    return fn  # type: ignore[no-any-return]


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "account": request.app[ACCOUNT][0]})


# inventory (hpcbatch extension)


@routes.get("/inventory/hosts")
async def list_hosts(request: web.Request) -> web.Response:
    return _json({"value": svc(request).inventory.list_hosts()})


@routes.post("/inventory/hosts")
async def add_hosts(request: web.Request) -> web.Response:
    body = await _body(request)
    items = body.get("hosts") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise BadRequestError("The body must be {\"hosts\": [...]} or a list of hosts.")
    return _json({"value": svc(request).inventory.add_hosts(items)}, status=201)


@routes.delete("/inventory/hosts/{name}")
async def remove_host(request: web.Request) -> web.Response:
    svc(request).inventory.remove_host(_m(request, "name"))
    return web.Response(status=204)


# ------------------------------------------------------------------- pools


def _pool_url(request: web.Request) -> str:
    return f"{_base(request)}/pools/{_m(request, 'pool')}"


def _pool_fetch(request: web.Request) -> Callable[[], dict[str, Any]]:
    return lambda: svc(request).pools.get_pool(_m(request, "pool"))


@routes.post("/pools")
async def add_pool(request: web.Request) -> web.Response:
    pool_id = svc(request).pools.add_pool(await _body(request))
    return _created(request, f"{_base(request)}/pools/{pool_id}", svc(request).pools.get_pool(pool_id))


@routes.get("/pools")
async def list_pools(request: web.Request) -> web.Response:
    items = svc(request).pools.list_pools(request.query.get("$filter"))
    return _page(request, "pools", items, POOL_SELECTABLE, expand=True)


@routes.get("/pools/{pool}")
async def get_pool(request: web.Request) -> web.Response:
    return _entity(request, svc(request).pools.get_pool(_m(request, "pool")), "pools/@Element",
                   POOL_SELECTABLE)


@routes.delete("/pools/{pool}")
async def delete_pool(request: web.Request) -> web.Response:
    _guard(request, _pool_fetch(request))
    svc(request).pools.delete_pool(_m(request, "pool"))
    return _done(request, 202, url=_pool_url(request))


@routes.patch("/pools/{pool}")
async def patch_pool(request: web.Request) -> web.Response:
    _guard(request, _pool_fetch(request))
    body = await _body(request)
    _core(request, "update_pool", "Pool - Patch")(_m(request, "pool"), body)
    return _done(request, 200, _pool_fetch(request), _pool_url(request))


@routes.post("/pools/{pool}/updateproperties")
async def update_pool_properties(request: web.Request) -> web.Response:
    _guard(request, _pool_fetch(request))
    body = await _body(request)
    _core(request, "replace_pool_properties", "Pool - Update Properties")(_m(request, "pool"), body)
    return _done(request, 204, _pool_fetch(request), _pool_url(request))


@routes.post("/pools/{pool}/resize")
async def resize_pool(request: web.Request) -> web.Response:
    _guard(request, _pool_fetch(request))
    svc(request).pools.resize_pool(_m(request, "pool"), await _body(request))
    return _done(request, 202, _pool_fetch(request), _pool_url(request))


@routes.post("/pools/{pool}/stopresize")
async def stop_resize_pool(request: web.Request) -> web.Response:
    """Stop a resize: the pool keeps the nodes it has now (Batch's "Pool - Stop Resize")."""
    _guard(request, _pool_fetch(request))
    stop = getattr(svc(request).pools, "stop_resize_pool", None)
    if stop is not None:
        stop(_m(request, "pool"))
    else:
        pool = svc(request).pools.get_pool(_m(request, "pool"))
        if pool.get("allocationState") == "resizing":
            svc(request).pools.resize_pool(_m(request, "pool"),
                                     {"targetDedicatedNodes": pool["currentDedicatedNodes"]})
    return _done(request, 202, _pool_fetch(request), _pool_url(request))


@routes.post("/pools/{pool}/enableautoscale")
async def enable_autoscale(request: web.Request) -> web.Response:
    _guard(request, _pool_fetch(request))
    svc(request).autoscaler.enable(_m(request, "pool"), await _body(request))
    return _done(request, 200, _pool_fetch(request), _pool_url(request))


@routes.post("/pools/{pool}/disableautoscale")
async def disable_autoscale(request: web.Request) -> web.Response:
    svc(request).autoscaler.disable(_m(request, "pool"))
    return _done(request, 200, _pool_fetch(request), _pool_url(request))


@routes.post("/pools/{pool}/evaluateautoscale")
async def evaluate_autoscale(request: web.Request) -> web.Response:
    body = await _body(request)
    formula = body.get("autoScaleFormula") if isinstance(body, dict) else None
    run = svc(request).autoscaler.evaluate(_m(request, "pool"), formula)
    return _json({"odata.metadata": _metadata(request, "Microsoft.Azure.Batch.Protocol.Entities."
                                              "AutoScaleRun"), **run},
                 headers={"DataServiceId": _pool_url(request)})


@routes.post("/pools/{pool}/removenodes")
async def remove_nodes(request: web.Request) -> web.Response:
    _guard(request, _pool_fetch(request))
    svc(request).nodes.remove_nodes(_m(request, "pool"), await _body(request))
    return _done(request, 202, _pool_fetch(request), _pool_url(request))


@routes.get("/nodecounts")
async def list_pool_node_counts(request: web.Request) -> web.Response:
    """"Account - List Pool Node Counts": node counts by state, per pool."""
    pools = svc(request).pools.list_pools(request.query.get("$filter"))
    items = []
    for pool in pools:
        try:
            nodes = svc(request).nodes.list_nodes(pool["id"])
        except NotFoundError:
            continue
        items.append({"poolId": pool["id"], "dedicated": _node_counts(nodes),
                      "lowPriority": _node_counts([])})
    return _page(request, "poolnodecounts", items)


_NODE_COUNT_STATES = {
    "creating": "creating", "idle": "idle", "offline": "offline", "preempted": "preempted",
    "rebooting": "rebooting", "reimaging": "reimaging", "running": "running",
    "starting": "starting", "starttaskfailed": "startTaskFailed",
    "leavingpool": "leavingPool", "unknown": "unknown", "unusable": "unusable",
    "waitingforstarttask": "waitingForStartTask", "deallocated": "deallocated",
    "deallocating": "deallocating", "upgradingos": "upgradingOS",
}


def _node_counts(nodes: list[dict[str, Any]]) -> dict[str, int]:
    counts = {wire: 0 for wire in _NODE_COUNT_STATES.values()}
    for n in nodes:
        counts[_NODE_COUNT_STATES.get(str(n.get("state")), "unknown")] += 1
    counts["total"] = len(nodes)
    return counts


# ------------------------------------------------------------------- nodes


class MemoryFilter:
    """OData ``$filter`` over wire dicts the service returns as a list (nodes, schedules).

    The filter is compiled by :func:`hpcbatch.store.odata.compile_filter` (same
    grammar, errors and operators as for tasks, jobs and pools) and evaluated
    on the items copied into an in-memory SQLite table.

    Parameters
    ----------
    properties
        ``(wire name, kind, enum values)``; a nested name (``startTaskInfo/state``)
        reads the nested value. ``id`` compares case-insensitively, as Batch IDs do.
    """

    _TYPES: ClassVar[dict[str, Any]] = {"string": sa.String, "enum": sa.String,
                                         "int": sa.Integer, "datetime": sa.DateTime,
                                         "bool": sa.Boolean}

    def __init__(self, properties: Iterable[tuple[str, str, tuple[str, ...]]]) -> None:
        properties = list(properties)
        self.names = [name for name, _, _ in properties]
        cols: list[sa.Column[Any]] = [sa.Column("seq", sa.Integer, primary_key=True),
                                      sa.Column("key", sa.String)]
        cols += [sa.Column(f"c{i}", self._TYPES[kind]()) for i, (_, kind, _) in
                 enumerate(properties)]
        self.table = sa.Table("items", sa.MetaData(), *cols)
        self.kinds = [kind for _, kind, _ in properties]
        self.properties: dict[str, odata.Property] = {}
        for i, (name, kind, values) in enumerate(properties):
            extra: dict[str, Any] = {"values": values} if kind == "enum" else {}
            if name == "id":
                extra["key_column"] = self.table.c.key
            self.properties[name] = odata.Property(name, self.table.c[f"c{i}"],
                                                   cast(odata.Kind, kind), **extra)

    def _value(self, item: Mapping[str, Any], name: str, kind: str) -> Any:
        value: Any = item
        for part in name.split("/"):
            value = value.get(part) if isinstance(value, Mapping) else None
        if kind == "datetime":
            when = _parse_iso(value)
            return when.replace(tzinfo=None) if when else None
        return value

    def apply(self, items: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
        """Return the items ``text`` selects, in their order.

        Raises
        ------
        odata.InvalidQueryParameterError
            A syntax error or an unknown property (``InvalidQueryParameterValue``).
        """
        cond = odata.compile_filter(text, self.properties)
        rows = [{"seq": i, "key": str(item.get("id", "")).lower(),
                 **{f"c{j}": self._value(item, name, kind)
                    for j, (name, kind) in enumerate(zip(self.names, self.kinds))}}
                for i, item in enumerate(items)]
        engine = sa.create_engine("sqlite://")
        try:
            with engine.begin() as conn:
                self.table.create(conn)
                if rows:
                    conn.execute(self.table.insert(), rows)
                keep = set(conn.execute(sa.select(self.table.c.seq).where(cond)).scalars())
        finally:
            engine.dispose()
        return [item for i, item in enumerate(items) if i in keep]


NODE_STATES = ("creating", "starting", "waitingforstarttask", "starttaskfailed", "idle",
               "running", "rebooting", "reimaging", "leavingpool", "offline", "unusable",
               "unknown", "preempted", "deallocated", "deallocating", "upgradingos")
NODE_FILTER = MemoryFilter([
    ("id", "string", ()), ("state", "enum", NODE_STATES),
    ("schedulingState", "enum", ("enabled", "disabled")), ("ipAddress", "string", ()),
    ("vmSize", "string", ()), ("affinityId", "string", ()), ("isDedicated", "bool", ()),
    ("totalTasksRun", "int", ()), ("totalTasksSucceeded", "int", ()),
    ("runningTasksCount", "int", ()), ("runningTaskSlotsCount", "int", ()),
    ("stateTransitionTime", "datetime", ()), ("allocationTime", "datetime", ()),
    ("lastBootTime", "datetime", ()),
    ("startTaskInfo/state", "enum", ("running", "completed")),
    ("startTaskInfo/exitCode", "int", ()),
])
"""Filterable properties of "Compute Node - List"."""

SCHEDULE_FILTER = MemoryFilter([
    ("id", "string", ()),
    ("state", "enum", ("active", "completed", "disabled", "terminating", "deleting")),
    ("creationTime", "datetime", ()), ("stateTransitionTime", "datetime", ()),
    ("lastModified", "datetime", ()), ("displayName", "string", ()),
])
"""Filterable properties of "Job Schedule - List"."""

JOB_FILTER = MemoryFilter([
    ("id", "string", ()),
    ("state", "enum", ("active", "disabling", "disabled", "enabling", "terminating",
                       "completed", "deleting")),
    ("priority", "int", ()), ("creationTime", "datetime", ()),
    ("stateTransitionTime", "datetime", ()), ("lastModified", "datetime", ()),
    ("executionInfo/startTime", "datetime", ()), ("executionInfo/endTime", "datetime", ()),
])
"""Filterable properties of "Job - List From Job Schedule"."""


def filter_nodes(nodes: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Apply an OData ``$filter`` (``state eq 'idle'``, ...) to ``ComputeNode`` JSON dicts."""
    return NODE_FILTER.apply(nodes, text)


@routes.get("/pools/{pool}/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    nodes = svc(request).nodes.list_nodes(_m(request, "pool"))
    if request.query.get("$filter"):
        nodes = filter_nodes(nodes, request.query["$filter"])
    return _page(request, "nodes", nodes, NODE_SELECTABLE)


@routes.get("/pools/{pool}/nodes/{node}")
async def get_node(request: web.Request) -> web.Response:
    node = svc(request).nodes.get_node(_m(request, "pool"), _m(request, "node"))
    return _entity(request, node, "nodes/@Element", NODE_SELECTABLE)


def _node_url(request: web.Request) -> str:
    return f"{_pool_url(request)}/nodes/{_m(request, 'node')}"


@routes.post("/pools/{pool}/nodes/{node}/reboot")
async def reboot_node(request: web.Request) -> web.Response:
    body = await _optional_body(request)
    svc(request).nodes.reboot_node(_m(request, "pool"), _m(request, "node"),
                             body.get("nodeRebootOption"))
    return _done(request, 202, url=_node_url(request))


@routes.post("/pools/{pool}/nodes/{node}/reimage")
async def reimage_node(request: web.Request) -> web.Response:
    body = await _optional_body(request)
    svc(request).nodes.reboot_node(_m(request, "pool"), _m(request, "node"),
                             body.get("nodeReimageOption"), reimage=True)
    return _done(request, 202, url=_node_url(request))


@routes.post("/pools/{pool}/nodes/{node}/disablescheduling")
async def disable_scheduling(request: web.Request) -> web.Response:
    body = await _optional_body(request)
    svc(request).nodes.set_node_scheduling(_m(request, "pool"), _m(request, "node"),
                                     False, body.get("nodeDisableSchedulingOption"))
    return _done(request, 200, url=_node_url(request))


@routes.post("/pools/{pool}/nodes/{node}/enablescheduling")
async def enable_scheduling(request: web.Request) -> web.Response:
    svc(request).nodes.set_node_scheduling(_m(request, "pool"), _m(request, "node"), True)
    return _done(request, 200, url=_node_url(request))


@routes.get("/pools/{pool}/nodes/{node}/remoteloginsettings")
async def remote_login_settings(request: web.Request) -> web.Response:
    """The SSH address of the node's inventory host ("Compute Node - Get Remote Login Settings")."""
    node = svc(request).nodes.get_node(_m(request, "pool"), _m(request, "node"))
    host = next((h for h in svc(request).inventory.list_hosts()
                 if h.get("name") == node["id"] or h.get("address") == node.get("ipAddress")),
                None)
    if host is None or not svc(request).pool_manager.remote_login(host):
        raise unsupported("Compute Node - Get Remote Login Settings",
                          f"node {node['id']} is a process on the service's own machine, "
                          "not an SSH host.")
    return _json({"odata.metadata": _metadata(request, "remoteloginsettings/@Element"),
                  "remoteLoginIPAddress": host.get("address"),
                  "remoteLoginPort": int(host.get("port") or 22)})


@routes.get("/pools/{pool}/nodes/{node}/extensions")
async def list_node_extensions(request: web.Request) -> web.Response:
    svc(request).nodes.get_node(_m(request, "pool"), _m(request, "node"))
    return _page(request, "extensions", [])


@routes.get("/pools/{pool}/nodes/{node}/extensions/{name}")
async def get_node_extension(request: web.Request) -> web.Response:
    svc(request).nodes.get_node(_m(request, "pool"), _m(request, "node"))
    raise NotFoundError("hpcbatch nodes have no VM extensions.", code="ResourceNotFound",
                        values={"ExtensionName": _m(request, "name")})


# -------------------------------------------------------------------- jobs


def _job_url(request: web.Request) -> str:
    return f"{_base(request)}/jobs/{_m(request, 'job')}"


def _job_fetch(request: web.Request) -> Callable[[], dict[str, Any]]:
    return lambda: svc(request).jobs.get_job(_m(request, "job"))


@routes.post("/jobs")
async def add_job(request: web.Request) -> web.Response:
    job_id = svc(request).jobs.add_job(await _body(request))
    return _created(request, f"{_base(request)}/jobs/{job_id}", svc(request).jobs.get_job(job_id))


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    items = svc(request).jobs.list_jobs(request.query.get("$filter"))
    return _page(request, "jobs", items, JOB_SELECTABLE, expand=True)


@routes.get("/jobs/{job}")
async def get_job(request: web.Request) -> web.Response:
    return _entity(request, svc(request).jobs.get_job(_m(request, "job")), "jobs/@Element",
                   JOB_SELECTABLE)


@routes.patch("/jobs/{job}")
async def patch_job(request: web.Request) -> web.Response:
    _guard(request, _job_fetch(request))
    svc(request).jobs.update_job(_m(request, "job"), await _body(request))
    return _done(request, 200, _job_fetch(request), _job_url(request))


JOB_REPLACE_DEFAULTS: dict[str, Any] = {
    "priority": 0, "maxParallelTasks": -1, "allowTaskPreemption": False,
    "constraints": {}, "metadata": [], "onAllTasksComplete": "noaction",
}
"""What "Job - Update" (PUT) resets a property to when the body leaves it out."""


@routes.put("/jobs/{job}")
async def replace_job(request: web.Request) -> web.Response:
    """"Job - Update" (PUT): replace the job's updatable properties; absent ones are reset."""
    _guard(request, _job_fetch(request))
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    replace = getattr(svc(request).jobs, "replace_job", None)
    if replace is not None:
        replace(_m(request, "job"), body)
    else:
        svc(request).jobs.update_job(_m(request, "job"), {**JOB_REPLACE_DEFAULTS, **body})
    return _done(request, 200, _job_fetch(request), _job_url(request))


@routes.delete("/jobs/{job}")
async def delete_job(request: web.Request) -> web.Response:
    _guard(request, _job_fetch(request))
    svc(request).jobs.delete_job(_m(request, "job"))
    return _done(request, 202, url=_job_url(request))


@routes.post("/jobs/{job}/terminate")
async def terminate_job(request: web.Request) -> web.Response:
    _guard(request, _job_fetch(request))
    body = await _optional_body(request)
    svc(request).jobs.terminate_job(_m(request, "job"), body.get("terminateReason"))
    return _done(request, 202, _job_fetch(request), _job_url(request))


@routes.post("/jobs/{job}/disable")
async def disable_job(request: web.Request) -> web.Response:
    _guard(request, _job_fetch(request))
    body = await _optional_body(request)
    svc(request).jobs.disable_job(_m(request, "job"), body.get("disableTasks", "requeue"))
    return _done(request, 202, _job_fetch(request), _job_url(request))


@routes.post("/jobs/{job}/enable")
async def enable_job(request: web.Request) -> web.Response:
    _guard(request, _job_fetch(request))
    svc(request).jobs.enable_job(_m(request, "job"))
    return _done(request, 202, _job_fetch(request), _job_url(request))


@routes.get("/jobs/{job}/jobpreparationandreleasetaskstatus")
async def prep_release_status(request: web.Request) -> web.Response:
    items = svc(request).preparation.preparation_and_release_status(_m(request, "job"))
    if request.query.get("$filter"):
        items = _filter_by_node(items, request.query["$filter"])
    return _page(request, "jobpreparationandreleasetaskstatus", items, PREP_RELEASE_SELECTABLE)


_NODE_ID_FILTER = re.compile(r"^\s*nodeId\s+eq\s+'([^']*)'\s*$")


def _filter_by_node(items: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    m = _NODE_ID_FILTER.match(text)
    if not m:
        raise odata.InvalidQueryParameterError(
            "$filter", text, "only nodeId eq '...' is supported on this list")
    return [i for i in items if i.get("nodeId") == m.group(1)]


@routes.get("/jobs/{job}/taskcounts")
async def task_counts(request: web.Request) -> web.Response:
    counts = svc(request).jobs.task_counts(_m(request, "job"))
    return _json({"odata.metadata": _metadata(request, "taskcountsresult/@Element"), **counts})


# ------------------------------------------------------------- applications


@routes.get("/applications")
async def list_applications(request: web.Request) -> web.Response:
    return _page(request, "applications", svc(request).applications.list_applications())


@routes.get("/applications/{app}")
async def get_application(request: web.Request) -> web.Response:
    return _entity(request, svc(request).applications.get_application(_m(request, "app")),
                   "applications/@Element")


@routes.patch("/applications/{app}")
async def update_application(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body, dict) or "defaultVersion" not in body:
        raise BadRequestError("The body must be {\"defaultVersion\": \"...\"}.",
                              values={"PropertyName": "defaultVersion"})
    svc(request).applications.set_default_version(_m(request, "app"), body["defaultVersion"])
    return web.Response(status=200)


@routes.put("/applications/{app}/versions/{version}")
async def put_package(request: web.Request) -> web.Response:
    svc(request).applications.create_application_package(_m(request, "app"), _m(request, "version"),
                                            await request.read())
    return web.Response(status=201)


@routes.delete("/applications/{app}/versions/{version}")
async def delete_package(request: web.Request) -> web.Response:
    svc(request).applications.delete_application_package(_m(request, "app"), _m(request, "version"))
    return web.Response(status=204)


# ------------------------------------------------------------------- tasks


def _task_url(request: web.Request) -> str:
    return f"{_job_url(request)}/tasks/{_m(request, 'task')}"


def _task_fetch(request: web.Request) -> Callable[[], dict[str, Any]]:
    return lambda: svc(request).tasks.get_task(_m(request, "job"), _m(request, "task"))


@routes.post("/jobs/{job}/tasks")
async def add_task(request: web.Request) -> web.Response:
    job = _m(request, "job")
    task_id = svc(request).tasks.add_task(job, await _body(request))
    return _created(request, f"{_base(request)}/jobs/{job}/tasks/{task_id}",
                    svc(request).tasks.get_task(job, task_id))


@routes.post("/jobs/{job}/addtaskcollection")
async def add_task_collection(request: web.Request) -> web.Response:
    if (request.content_length or 0) >= MAX_TASK_COLLECTION_BYTES or \
            len(await request.read()) >= MAX_TASK_COLLECTION_BYTES:
        raise HpcbatchError(
            "The request body is too large: the total serialized size of a task collection "
            f"must be less than 1 MB ({MAX_TASK_COLLECTION_BYTES} bytes); retry with fewer "
            "tasks.", code="RequestBodyTooLarge", status=413,
            values={"MaxLimit": str(MAX_TASK_COLLECTION_BYTES)})
    body = await _body(request)
    if not isinstance(body, dict) or set(body) - {"value"}:
        raise BadRequestError("The body must be {\"value\": [task, ...]}.",
                              values={"PropertyName": "value"})
    results = svc(request).tasks.add_tasks(_m(request, "job"), body.get("value") or [])
    return _json({"odata.metadata": _metadata(request, "taskaddresult"), "value": results})


@routes.get("/jobs/{job}/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    token = request.query.get("$skiptoken")
    if "$expand" in request.query:
        odata.parse_expand(request.query["$expand"])
    items, nxt = svc(request).tasks.list_tasks(
        _m(request, "job"), filter_=request.query.get("$filter"),
        select=request.query.get("$select"), max_results=_max_results(request),
        after_seq=int(token) if token and token.isdigit() else None,
    )
    return _list(request, "tasks", items, nxt)


@routes.get("/jobs/{job}/tasks/{task}")
async def get_task(request: web.Request) -> web.Response:
    if "$expand" in request.query:
        odata.parse_expand(request.query["$expand"])
    data = svc(request).tasks.get_task(_m(request, "job"), _m(request, "task"),
                                 request.query.get("$select"))
    not_modified = _conditions(request, data)
    if not_modified is not None:
        return not_modified
    return _json({"odata.metadata": _metadata(request, "tasks/@Element"), **data},
                 headers=_entity_headers(data))


@routes.put("/jobs/{job}/tasks/{task}")
async def replace_task(request: web.Request) -> web.Response:
    _guard(request, _task_fetch(request))
    body = await _body(request)
    _core(request, "update_task", "Task - Update")(_m(request, "job"), _m(request, "task"), body)
    return _done(request, 200, _task_fetch(request), _task_url(request))


@routes.delete("/jobs/{job}/tasks/{task}")
async def delete_task(request: web.Request) -> web.Response:
    _guard(request, _task_fetch(request))
    svc(request).tasks.delete_task(_m(request, "job"), _m(request, "task"))
    return _done(request, 200, url=_task_url(request))


@routes.post("/jobs/{job}/tasks/{task}/terminate")
async def terminate_task(request: web.Request) -> web.Response:
    _guard(request, _task_fetch(request))
    svc(request).tasks.terminate_task(_m(request, "job"), _m(request, "task"))
    return _done(request, 204, _task_fetch(request), _task_url(request))


@routes.post("/jobs/{job}/tasks/{task}/reactivate")
async def reactivate_task(request: web.Request) -> web.Response:
    _guard(request, _task_fetch(request))
    svc(request).tasks.reactivate_task(_m(request, "job"), _m(request, "task"))
    return _done(request, 204, _task_fetch(request), _task_url(request))


@routes.get("/jobs/{job}/tasks/{task}/subtasksinfo")
async def list_subtasks(request: web.Request) -> web.Response:
    items = svc(request).tasks.list_subtasks(_m(request, "job"), _m(request, "task"))
    select = request.query.get("$select")
    if select:
        sel = odata.parse_select(select, ("id", "nodeInfo", "startTime", "endTime", "exitCode",
                                          "containerInfo", "failureInfo", "state",
                                          "stateTransitionTime", "previousState",
                                          "previousStateTransitionTime", "result"))
        items = [odata.apply_select(i, sel) for i in items]
    return _list(request, "subtaskinfo", items)


# ------------------------------------------------------------------- files


def _range(request: web.Request) -> tuple[int, int | None]:
    """Parse ``ocp-range``/``Range: bytes=a-b`` into (offset, length)."""
    rng = request.headers.get("ocp-range") or request.headers.get("Range")
    if not rng or not rng.startswith("bytes="):
        return 0, None
    start, _, end = rng[6:].partition("-")
    try:
        offset = int(start or 0)
        return offset, (int(end) - offset + 1 if end else None)
    except ValueError:
        raise BadRequestError(f"The range {rng!r} is not a valid byte range.",
                              code="InvalidHeaderValue",
                              values={"HeaderName": "ocp-range"}) from None


def _file_headers(request: web.Request, entry: Mapping[str, Any] | None,
                  size_bytes: int | None) -> dict[str, str]:
    """The headers of "File - Get"/"Get Properties": url, kind, mode, times, length."""
    props = (entry or {}).get("properties") or {}
    modified = _parse_iso(props.get("lastModified")) or datetime.now(UTC)
    created = _parse_iso(props.get("creationTime")) or modified
    url = f"{_base(request)}{quote(request.path)}"
    headers = {
        "ocp-batch-file-isdirectory": "true" if (entry or {}).get("isDirectory") else "false",
        "ocp-batch-file-url": url,
        "ocp-batch-file-mode": props.get("fileMode") or FILE_MODE,
        "ocp-creation-time": _http_date(created),
        "Last-Modified": _http_date(modified),
        "Content-Type": "application/octet-stream",
    }
    if size_bytes is not None:
        headers["Content-Length"] = str(size_bytes)
    return headers


def _find_file(entries: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    name = name.strip("/")
    return next((e for e in entries if e.get("name", "").strip("/") == name), None)


async def _task_file_entry(request: web.Request) -> dict[str, Any] | None:
    entries = await svc(request).files.list_task_files(_m(request, "job"), _m(request, "task"), True)
    return _find_file(entries, _m(request, "path"))


async def _node_file_entry(request: web.Request) -> dict[str, Any] | None:
    path = _m(request, "path").strip("/")
    parent, _, _ = path.rpartition("/")
    entries = await svc(request).files.list_node_files(_m(request, "pool"), _m(request, "node"),
                                                 parent, False)
    return _find_file(entries, path)


def _file_if_modified(request: web.Request, entry: Mapping[str, Any] | None) -> bool:
    """True when ``If-Modified-Since`` says the client's copy is current (answer 304)."""
    since = _header_date(request, "If-Modified-Since")
    props = (entry or {}).get("properties") or {}
    modified = _parse_iso(props.get("lastModified"))
    return since is not None and modified is not None and modified.replace(microsecond=0) <= since


def _file_reply(request: web.Request, entry: dict[str, Any] | None, data: bytes) -> web.Response:
    headers = _file_headers(request, entry, None)
    del headers["Content-Type"]
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


def _files_filter(request: web.Request, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = request.query.get("$filter")
    if not text:
        return files
    m = re.fullmatch(r"\s*startswith\(\s*name\s*,\s*'((?:[^']|'')*)'\s*\)\s*", text)
    if not m:
        raise odata.InvalidQueryParameterError(
            "$filter", text, "only startswith(name, '...') is supported on file lists")
    prefix = m.group(1).replace("''", "'")
    return [f for f in files if f.get("name", "").startswith(prefix)]


@routes.get("/pools/{pool}/nodes/{node}/files")
async def list_node_files(request: web.Request) -> web.Response:
    files = await svc(request).files.list_node_files(_m(request, "pool"), _m(request, "node"), "",
                                               _bool_query(request, "recursive"))
    return _page(request, "files", _files_filter(request, files))


@routes.get("/pools/{pool}/nodes/{node}/files/{path:.+}", allow_head=False)
async def get_node_file(request: web.Request) -> web.Response:
    entry = await _node_file_entry(request)
    if _file_if_modified(request, entry):
        return _empty(304)
    offset, length = _range(request)
    data = await svc(request).files.get_node_file(_m(request, "pool"), _m(request, "node"),
                                            _m(request, "path"), offset, length)
    return _file_reply(request, entry, data)


@routes.head("/pools/{pool}/nodes/{node}/files/{path:.+}")
async def node_file_properties(request: web.Request) -> web.Response:
    entry = await _node_file_entry(request)
    if entry is None:
        raise not_found("File", _m(request, "path"))
    size = ((entry.get("properties") or {}).get("contentLength"))
    return web.Response(status=200, headers=_file_headers(request, entry, size or 0))


@routes.get("/jobs/{job}/tasks/{task}/files")
async def list_task_files(request: web.Request) -> web.Response:
    files = await svc(request).files.list_task_files(_m(request, "job"), _m(request, "task"),
                                               _bool_query(request, "recursive"))
    return _page(request, "files", _files_filter(request, files))


@routes.get("/jobs/{job}/tasks/{task}/files/{path:.+}", allow_head=False)
async def get_task_file(request: web.Request) -> web.Response:
    entry = await _task_file_entry(request)
    if _file_if_modified(request, entry):
        return _empty(304)
    offset, length = _range(request)
    data = await svc(request).files.get_task_file(_m(request, "job"), _m(request, "task"),
                                            _m(request, "path"), offset, length)
    return _file_reply(request, entry, data)


@routes.head("/jobs/{job}/tasks/{task}/files/{path:.+}")
async def task_file_properties(request: web.Request) -> web.Response:
    entry = await _task_file_entry(request)
    if entry is None:
        raise not_found("File", _m(request, "path"))
    size = ((entry.get("properties") or {}).get("contentLength"))
    return web.Response(status=200, headers=_file_headers(request, entry, size or 0))


@routes.delete("/jobs/{job}/tasks/{task}/files/{path:.+}")
async def delete_task_file(request: web.Request) -> web.Response:
    fn = _core(request, "delete_task_file", "File - Delete From Task")
    await fn(_m(request, "job"), _m(request, "task"), _m(request, "path"),
             _bool_query(request, "recursive"))
    return _empty(200)


@routes.delete("/pools/{pool}/nodes/{node}/files/{path:.+}")
async def delete_node_file(request: web.Request) -> web.Response:
    fn = _core(request, "delete_node_file", "File - Delete From Compute Node")
    await fn(_m(request, "pool"), _m(request, "node"), _m(request, "path"),
             _bool_query(request, "recursive"))
    return _empty(200)


# ---------------------------------------------------------- job schedules


def _schedules(request: web.Request) -> Any:
    """The service's job schedules (:class:`hpcbatch.core.job_schedules.JobSchedules`)."""
    schedules = getattr(svc(request), "schedules", None)
    if schedules is None:
        raise unsupported("Job Schedule", "this hpcbatch service has no job schedules.")
    return schedules


def _schedule_op(request: web.Request, method: str, operation: str) -> Callable[..., Any]:
    fn = getattr(_schedules(request), method, None)
    if fn is None:
        raise unsupported(operation, "this hpcbatch service does not implement it yet.")
    return fn  # type: ignore[no-any-return]


def _schedule_url(request: web.Request) -> str:
    return f"{_base(request)}/jobschedules/{_m(request, 'schedule')}"


def _schedule_fetch(request: web.Request) -> Callable[[], dict[str, Any]]:
    return lambda: _schedules(request).get(_m(request, "schedule"))


@routes.post("/jobschedules")
async def add_job_schedule(request: web.Request) -> web.Response:
    schedule_id = _schedules(request).add(await _body(request))
    return _created(request, f"{_base(request)}/jobschedules/{schedule_id}",
                    _schedules(request).get(schedule_id))


@routes.get("/jobschedules")
async def list_job_schedules(request: web.Request) -> web.Response:
    items = _schedules(request).list()
    if request.query.get("$filter"):
        items = SCHEDULE_FILTER.apply(items, request.query["$filter"])
    return _page(request, "jobschedules", items, SCHEDULE_SELECTABLE, expand=True)


@routes.get("/jobschedules/{schedule}")
async def get_job_schedule(request: web.Request) -> web.Response:
    return _entity(request, _schedule_fetch(request)(), "jobschedules/@Element",
                   SCHEDULE_SELECTABLE)


@routes.patch("/jobschedules/{schedule}")
async def patch_job_schedule(request: web.Request) -> web.Response:
    _guard(request, _schedule_fetch(request))
    body = await _body(request)
    _schedule_op(request, "update", "Job Schedule - Patch")(_m(request, "schedule"), body)
    return _done(request, 200, _schedule_fetch(request), _schedule_url(request))


@routes.put("/jobschedules/{schedule}")
async def replace_job_schedule(request: web.Request) -> web.Response:
    _guard(request, _schedule_fetch(request))
    body = await _body(request)
    _schedule_op(request, "replace", "Job Schedule - Update")(_m(request, "schedule"), body)
    return _done(request, 200, _schedule_fetch(request), _schedule_url(request))


@routes.delete("/jobschedules/{schedule}")
async def delete_job_schedule(request: web.Request) -> web.Response:
    _guard(request, _schedule_fetch(request))
    _schedules(request).delete(_m(request, "schedule"))
    return _done(request, 202, url=_schedule_url(request))


@routes.post("/jobschedules/{schedule}/{action:disable|enable|terminate}")
async def job_schedule_action(request: web.Request) -> web.Response:
    action = _m(request, "action")
    _guard(request, _schedule_fetch(request))
    getattr(_schedules(request), action)(_m(request, "schedule"))
    return _done(request, 202 if action == "terminate" else 204, _schedule_fetch(request),
                 _schedule_url(request))


@routes.get("/jobschedules/{schedule}/jobs")
async def list_jobs_from_schedule(request: web.Request) -> web.Response:
    items = _schedules(request).jobs_of(_m(request, "schedule"))
    if request.query.get("$filter"):
        items = JOB_FILTER.apply(items, request.query["$filter"])
    return _page(request, "jobs", items, JOB_SELECTABLE, expand=True)


# ------------------------------------------------------- not supported at all


UNSUPPORTED: list[tuple[str, str, str, str]] = [
    ("GET", "/supportedimages", "Account - List Supported Images",
     ("nodes are inventory hosts, not marketplace images; a pool's "
      "virtualMachineConfiguration is accepted and ignored.")),
    ("GET", "/poolusagemetrics", "Pool - List Usage Metrics", "hpcbatch keeps no usage metrics."),
    ("*", "/certificates{tail:.*}", "Certificate operations",
     "certificates are deprecated by Batch; put secrets on the hosts or in resource files."),
    ("POST", "/pools/{pool}/nodes/{node}/users", "Compute Node - Add User",
     "tasks run as the inventory host's SSH user; manage accounts on the host."),
    ("*", "/pools/{pool}/nodes/{node}/users/{user}", "Compute Node - Update/Delete User",
     "tasks run as the inventory host's SSH user; manage accounts on the host."),
    ("GET", "/pools/{pool}/nodes/{node}/rdp", "Compute Node - Get Remote Desktop",
     "nodes are Linux SSH hosts."),
    ("POST", "/pools/{pool}/nodes/{node}/uploadbatchservicelogs",
     "Compute Node - Upload Batch Service Logs",
     ("the node agent's log is node.log in the node's root directory (File - Get From "
      "Compute Node).")),
    ("POST", "/pools/{pool}/nodes/{node}/start", "Compute Node - Start",
     "inventory hosts are not deallocated; a node is started when it joins a pool."),
    ("POST", "/pools/{pool}/nodes/{node}/deallocate", "Compute Node - Deallocate",
     "inventory hosts cannot be deallocated; remove the node or resize the pool."),
]


def _unsupported_handler(operation: str, why: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        raise unsupported(operation, why)
    return handler


def make_app(service: BatchService, account: str, key: str) -> web.Application:
    """Build the aiohttp application serving ``service`` for one account.

    Parameters
    ----------
    service
        The service core.
    account, key
        Account name and base64 key checked by SharedKey authentication.
    """
    app = web.Application(middlewares=[errors_middleware, auth_middleware],
                          client_max_size=1024 * 1024 * 1024)
    app[SERVICE] = service
    app[ACCOUNT] = (account, key)
    app.add_routes(routes)
    for method, path, operation, why in UNSUPPORTED:
        app.router.add_route(method, path, _unsupported_handler(operation, why))
    return app
