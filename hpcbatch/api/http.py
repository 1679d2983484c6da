"""HTTP plumbing every resource's routes share: Batch's replies, errors, paging and conditions.

One place for the wire rules of the Batch REST API (api-version 2025-06-01)
that do not depend on the resource:

* JSON replies (:func:`json_reply`) carry ``Content-Type:
  application/json;odata=minimalmetadata`` and ``odata.metadata``; a resource's
  reply (:func:`entity_reply`) carries ``ETag``, ``Last-Modified`` and
  ``DataServiceId`` (:func:`entity_headers`); a create answers ``201`` with
  ``Location`` (:func:`created_reply`); an accepted change answers its status
  with the resource's new ``ETag`` (:meth:`Target.done`).
* Lists (:func:`page_reply`) answer ``{"odata.metadata", "value",
  "odata.nextLink"}``, one page of ``maxresults`` (1..1000) after
  ``$skiptoken``, with ``$select`` applied and ``$expand`` checked.
* Conditional headers (``If-Match``, ``If-None-Match``, ``If-Modified-Since``,
  ``If-Unmodified-Since``) are evaluated against a resource's ``eTag`` and
  ``lastModified`` (:func:`conditions`, :meth:`Target.guard`).
* Errors answer Batch's ``{"code", "message": {"lang", "value"}, "values"}``
  body (:func:`error_reply`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from hpcbatch.batch import odata, odata_select
from hpcbatch.batch.errors import BadRequestError, HpcbatchError
from hpcbatch.batch.wire import utcnow
from hpcbatch.core.service import BatchService
from hpcbatch.core.tasks import DEFAULT_MAX_RESULTS

SERVICE = web.AppKey("service", BatchService)
"""The application's service core."""

ACCOUNT = web.AppKey("account", tuple)
"""The application's ``(account name, base64 key)``."""

JSON_CONTENT_TYPE = "application/json;odata=minimalmetadata"
"""The ``Content-Type`` of Batch's JSON replies."""

MAX_TASK_COLLECTION_BYTES = 1024 * 1024
"""Batch: "The total serialized size of this collection must be less than 1MB"."""

MAX_RESULTS = 1000
"""Batch's largest ``maxresults``."""

MAX_JSON_BODY_BYTES = 4 * 1024 * 1024
"""The largest JSON request body (bytes, exclusive); larger answers ``413
RequestBodyTooLarge``. Batch caps a task collection at 1 MB; hpcbatch allows
other JSON bodies (a pool, a job schedule, an inventory) up to 4 MiB."""

MAX_JSON_DEPTH = 64
"""How deep a JSON request body may nest arrays and objects: 64, the default
``MaxDepth`` of the .NET JSON readers (Json.NET, System.Text.Json) behind Batch.
The deepest Batch body (a job schedule's auto pool) nests about 10 levels."""

API_VERSIONS = frozenset({
    "2017-01-01.4.0", "2017-05-01.5.0", "2017-06-01.5.1", "2017-09-01.6.0",
    "2018-03-01.6.1", "2018-08-01.7.0", "2018-12-01.8.0", "2019-06-01.9.0",
    "2019-08-01.10.0", "2020-03-01.11.0", "2020-09-01.12.0", "2021-06-01.14.0",
    "2022-01-01.15.0", "2022-10-01.16.0", "2023-05-01.17.0", "2023-11-01.18.0",
    "2024-02-01.19.0", "2024-07-01.20.0", "2025-06-01",
})
"""The Batch REST api-versions accepted: every version published ("Batch Service REST
API Versioning") since 2017-01-01.4.0, the version of the oldest SDK of major version 6
(Microsoft.Azure.Batch 6.0 for .NET; the Python ``azure-batch`` 6.0 speaks 2018-12-01.8.0,
14.x 2024-02-01.19.0, 15.x 2025-06-01). hpcbatch answers every one with the wire of
2025-06-01, which keeps the older properties it implements."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler."""

CONDITION_HEADERS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
"""The conditional request headers Batch evaluates."""


# ---------------------------------------------------------------- the request


def service(request: web.Request) -> BatchService:
    """The service core serving ``request``."""
    return request.app[SERVICE]


def param(request: web.Request, name: str) -> str:
    """The path parameter ``name`` of ``request`` (``/pools/{pool}`` -> ``param(r, "pool")``)."""
    return request.match_info[name]


def base_url(request: web.Request) -> str:
    """``scheme://host[:port]`` of ``request``: the prefix of every resource URL in a reply."""
    return f"{request.scheme}://{request.host}"


def metadata_url(request: web.Request, entity: str) -> str:
    """The ``odata.metadata`` value of a reply about ``entity`` (``"pools/@Element"``)."""
    return f"{base_url(request)}/$metadata#{entity}"


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded JSON) nests arrays and objects deeper than ``limit``;
    iterative, so any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_json(raw: bytes) -> Any:
    """Decode a JSON request body: UTF-8, at most :data:`MAX_JSON_BODY_BYTES` bytes, arrays
    and objects nested at most :data:`MAX_JSON_DEPTH` deep.

    Raises
    ------
    BadRequestError
        An empty body, one that is not UTF-8, not JSON or nested too deep
        (``InvalidRequestBody``, naming the line and column of a syntax error).
    HpcbatchError
        ``413 RequestBodyTooLarge``: a body of :data:`MAX_JSON_BODY_BYTES` or more.
    """
    if not raw:
        raise BadRequestError("The request body is empty; a JSON object is required.")
    if len(raw) >= MAX_JSON_BODY_BYTES:
        raise HpcbatchError(
            f"The request body is too large: a JSON body must be less than "
            f"{MAX_JSON_BODY_BYTES} bytes.", code="RequestBodyTooLarge", status=413,
            values={"MaxLimit": str(MAX_JSON_BODY_BYTES)})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(
            f"The request body is not UTF-8 text: byte {exc.start} cannot be decoded.",
            code="InvalidRequestBody") from None
    value: Any = None
    try:
        value = json.loads(text)
        # Counting brackets is cheap; only a body with many of them is walked.
        too_deep = (raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
                    and isinstance(value, dict | list) and _too_deep(value, MAX_JSON_DEPTH))
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}.",
            code="InvalidRequestBody",
        ) from None
    except RecursionError:  # deeper than the decoder's own limit (about 1,000 levels)
        too_deep = True
    if too_deep:
        raise BadRequestError(
            f"The request body nests JSON arrays and objects deeper than {MAX_JSON_DEPTH} "
            "levels.", code="InvalidRequestBody", values={"MaxDepth": str(MAX_JSON_DEPTH)})
    return value


async def read_json(request: web.Request) -> Any:
    """Return the request's JSON body (:func:`parse_json`).

    Raises
    ------
    BadRequestError
        An empty body or one that is not UTF-8 JSON nested at most
        :data:`MAX_JSON_DEPTH` deep (``InvalidRequestBody``).
    HpcbatchError
        ``413 RequestBodyTooLarge``.
    """
    return parse_json(await request.read())


def require(body: Any, *names: str) -> None:
    """Check that a request body names every property an operation requires.

    Parameters
    ----------
    body
        The parsed JSON body (a non-object is left to the operation's own parse).
    names
        The required top-level properties, in the order they are checked.

    Raises
    ------
    BadRequestError
        ``400 MissingRequiredProperty`` naming the first one missing.
    """
    if not isinstance(body, dict):
        return
    for name in names:
        if name not in body:
            raise BadRequestError(f"The required property {name} is missing.",
                                  code="MissingRequiredProperty", values={"PropertyName": name})


async def read_object(request: web.Request) -> dict[str, Any]:
    """Return the request's JSON object body (an action's options); ``{}`` when empty.

    Raises
    ------
    BadRequestError
        A body that is not JSON or not an object (``InvalidRequestBody``).
    """
    if not await request.read():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return body


async def check_task_collection_size(request: web.Request) -> None:
    """Refuse a task collection of 1 MiB or more ("Task - Add Collection").

    The SDKs' ``create_tasks``/``add_collection`` answer this error by halving
    the chunk and retrying.

    Raises
    ------
    HpcbatchError
        ``413 RequestBodyTooLarge`` (``MaxLimit``: :data:`MAX_TASK_COLLECTION_BYTES`).
    """
    if (request.content_length or 0) >= MAX_TASK_COLLECTION_BYTES or \
            len(await request.read()) >= MAX_TASK_COLLECTION_BYTES:
        raise HpcbatchError(
            "The request body is too large: the total serialized size of a task collection "
            f"must be less than 1 MB ({MAX_TASK_COLLECTION_BYTES} bytes); retry with fewer "
            "tasks.", code="RequestBodyTooLarge", status=413,
            values={"MaxLimit": str(MAX_TASK_COLLECTION_BYTES)})


def check_api_version(request: web.Request) -> None:
    """Check the request's ``api-version`` query parameter, as Batch does.

    Raises
    ------
    BadRequestError
        ``MissingRequiredQueryParameter`` without one;
        ``InvalidQueryParameterValue`` for a value not in :data:`API_VERSIONS`
        (or several different values).
    """
    values = request.query.getall("api-version", [])
    if not values:
        raise BadRequestError(
            "A query parameter that's mandatory for this request is not specified: "
            "api-version.", code="MissingRequiredQueryParameter",
            values={"QueryParameterName": "api-version"})
    for value in values:
        if value not in API_VERSIONS:
            newest = max(API_VERSIONS)
            raise _bad_query(
                "api-version", value[:64],
                f"The api-version {value[:64]!r} is not a Batch REST API version this "
                f"service accepts; use one of {', '.join(sorted(API_VERSIONS))} (newest: "
                f"{newest}).", "InvalidQueryParameterValue")
    if len(set(values)) > 1:
        raise _bad_query("api-version", ",".join(values)[:128],
                         "The api-version query parameter is given more than once with "
                         "different values.", "InvalidQueryParameterValue")


def _bad_query(name: str, raw: str, message: str, code: str) -> BadRequestError:
    return BadRequestError(message, code=code,
                           values={"QueryParameterName": name, "QueryParameterValue": raw})


def int_query(request: web.Request, name: str, default: int) -> int:
    """The integer query parameter ``name``, or ``default`` when absent.

    Raises
    ------
    BadRequestError
        ``InvalidQueryParameterValue`` when it is not a 32-bit integer in decimal digits.
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INT32.fullmatch(raw) or not -(2**31) <= int(raw) < 2**31:
        raise _bad_query(name, raw[:64], f"The query parameter {name} must be a 32-bit "
                         f"integer, not {raw[:64]!r}.", "InvalidQueryParameterValue")
    return int(raw)


_INT32 = re.compile(r"-?[0-9]{1,10}")


def bool_query(request: web.Request, name: str) -> bool:
    """The boolean query parameter ``name`` (``true``/``false``, any case); False when absent.

    Raises
    ------
    BadRequestError
        ``InvalidQueryParameterValue`` for another value.
    """
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise _bad_query(name, raw, f"The query parameter {name} must be true or false, "
                         f"not {raw!r}.", "InvalidQueryParameterValue")
    return raw == "true"


def max_results(request: web.Request) -> int:
    """The page size ``maxresults`` (1..:data:`MAX_RESULTS`, default 1000).

    Raises
    ------
    BadRequestError
        ``InvalidQueryParameterValue`` (not an integer) or
        ``OutOfRangeQueryParameterValue``.
    """
    value = int_query(request, "maxresults", DEFAULT_MAX_RESULTS)
    if not 1 <= value <= MAX_RESULTS:
        raise _bad_query("maxresults", str(value),
                         f"maxresults must be between 1 and {MAX_RESULTS}, not {value}.",
                         "OutOfRangeQueryParameterValue")
    return value


def check_expand(request: web.Request) -> set[str]:
    """Check ``$expand`` when given (only ``stats``) and return what it names.

    Returns
    -------
    set[str]
        ``{"stats"}`` or an empty set.

    Raises
    ------
    odata_select.InvalidQueryParameterError
        Another value (``InvalidQueryParameterValue``).
    """
    if "$expand" in request.query:
        return odata_select.parse_expand(request.query["$expand"])
    return set()


Expander = Callable[[list[dict[str, Any]]], None]
"""Adds ``stats`` to wire items in place (``$expand=stats``)."""


def select(request: web.Request, items: list[dict[str, Any]],
           selectable: Iterable[str] | None) -> list[dict[str, Any]]:
    """Apply the request's ``$select`` to wire items; unchanged without one or ``selectable``.

    Raises
    ------
    odata_select.InvalidQueryParameterError
        A name outside ``selectable`` (``InvalidQueryParameterValue``).
    """
    text = request.query.get("$select")
    if not text or not selectable:
        return items
    names = odata_select.parse_select(text, selectable)
    return [odata_select.apply_select(i, names) for i in items] if names else items


def prefer_wait_s(request: web.Request) -> float | None:
    """Seconds of RFC 7240's ``Prefer: wait=N``, or None when absent or malformed."""
    for part in request.headers.get("Prefer", "").replace(",", ";").split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None
            return seconds if seconds > 0 else None
    return None


# ------------------------------------------------------------------ replies


def json_reply(data: Any, status: int = 200,
               headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON reply with Batch's ``Content-Type`` (compact separators)."""
    out = {"Content-Type": JSON_CONTENT_TYPE}
    out.update(headers or {})
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        headers=out)


def empty_reply(status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    """A reply without a body (``Content-Length: 0`` but for ``204``)."""
    out = dict(headers or {})
    if status != 204:
        out["Content-Length"] = "0"
    return web.Response(status=status, headers=out)


def http_date(when: datetime | None = None) -> str:
    """RFC 1123 date of ``when`` (naive means UTC; default now), as HTTP headers carry it."""
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return format_datetime(when.astimezone(UTC), usegmt=True)


def parse_wire_time(text: Any) -> datetime | None:
    """Parse a wire time (``2025-01-01T10:00:00.123456Z``) into an aware UTC datetime.

    Returns None for anything that is not such a string.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        return odata.parse_datetime(text).replace(tzinfo=UTC)
    except ValueError:
        return None


def wire_now() -> str:
    """Now as a wire time with Batch's seven fraction digits."""
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def entity_headers(data: Mapping[str, Any], url: str | None = None) -> dict[str, str]:
    """``ETag``, ``Last-Modified`` and ``DataServiceId`` of a resource's wire JSON."""
    headers: dict[str, str] = {}
    if data.get("eTag"):
        headers["ETag"] = str(data["eTag"])
    modified = parse_wire_time(data.get("lastModified"))
    if modified is not None:
        headers["Last-Modified"] = http_date(modified)
    if url or data.get("url"):
        headers["DataServiceId"] = url or str(data["url"])
    return headers


def entity_reply(request: web.Request, data: dict[str, Any], entity: str,
                 selectable: Iterable[str] | None = None,
                 stats: Expander | None = None) -> web.Response:
    """Answer one resource (``GET``/``HEAD``), honouring conditional headers, ``$select``
    and, with ``stats``, ``$expand=stats``.

    Parameters
    ----------
    data
        The resource's wire JSON.
    entity
        Its ``odata.metadata`` entity (``"pools/@Element"``).
    selectable
        The names ``$select`` may take; None: ``$select`` is not applied.
    """
    not_modified = conditions(request, data)
    if not_modified is not None:
        return not_modified
    headers = entity_headers(data)
    if "stats" in check_expand(request) and stats is not None:
        stats([data])
    [data] = select(request, [data], selectable)
    return json_reply({"odata.metadata": metadata_url(request, entity), **data}, headers=headers)


def created_reply(location: str, data: Mapping[str, Any] | None) -> web.Response:
    """``201`` for a create: ``Location``, ``DataServiceId``, ``ETag``, ``Last-Modified``."""
    headers = {"Location": location, "DataServiceId": location}
    headers.update(entity_headers(data or {}, location))
    headers.setdefault("Last-Modified", http_date())
    return empty_reply(201, headers)


def _next_link(request: web.Request, token: Any) -> str:
    query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
    query["$skiptoken"] = str(token)
    return f"{base_url(request)}{request.path}?{urlencode(query)}"


def list_reply(request: web.Request, entity: str, items: list[dict[str, Any]],
               next_token: Any = None) -> web.Response:
    """A list's reply: ``odata.metadata``, ``value`` and, with ``next_token``, ``odata.nextLink``
    (the request's URL with ``$skiptoken`` set to ``next_token``)."""
    body: dict[str, Any] = {"odata.metadata": metadata_url(request, entity), "value": items}
    if next_token is not None:
        body["odata.nextLink"] = _next_link(request, next_token)
    return json_reply(body)


def page_reply(request: web.Request, entity: str, items: list[dict[str, Any]],
               selectable: Iterable[str] | None = None, *, expand: bool = False,
               stats: Expander | None = None) -> web.Response:
    """Answer a whole list one page at a time: ``maxresults`` items after ``$skiptoken``
    (an offset), ``$select`` applied, ``$expand`` checked when ``expand`` (and
    ``$expand=stats`` answered on the page's items with ``stats``).

    Raises
    ------
    BadRequestError
        A bad ``maxresults``, ``$select`` or ``$expand``.
    """
    size = max_results(request)
    expanded = check_expand(request) if expand else set()
    token = request.query.get("$skiptoken", "")
    start = int(token) if token.isdigit() else 0
    page = items[start:start + size]
    if "stats" in expanded and stats is not None:
        stats(page)
    page = select(request, page, selectable)
    nxt = start + size if len(items) > start + size else None
    return list_reply(request, entity, page, nxt)


def error_body(base: str, exc: HpcbatchError, request_id: str) -> dict[str, object]:
    """Batch's JSON error body for ``exc``.

    Parameters
    ----------
    base
        ``scheme://host[:port]`` of the service (:func:`base_url`), for ``odata.metadata``.
    exc
        The error (code, message, values).
    request_id
        The reply's ``request-id``.

    Returns
    -------
    dict
        ``{"odata.metadata", "code", "message": {"lang", "value"}, "values"?}``; the
        message ends ``RequestId:...`` and ``Time:...`` as Batch's do.
    """
    body = exc.to_wire()
    body["odata.metadata"] = \
        f"{base}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
    body["message"] = {"lang": "en-US",
                       "value": f"{exc.message}\nRequestId:{request_id}\nTime:{wire_now()}"}
    return body


def error_reply(request: web.Request, exc: HpcbatchError, request_id: str) -> web.Response:
    """Batch's error reply for ``exc`` (:func:`error_body`, status ``exc.status``)."""
    return json_reply(error_body(base_url(request), exc, request_id), status=exc.status)


# --------------------------------------------------------- conditional requests


def _etags(value: str) -> list[str]:
    return [v.strip().removeprefix("W/").strip('"') for v in value.split(",") if v.strip()]


def header_date(request: web.Request, name: str) -> datetime | None:
    """The RFC 1123 date of header ``name`` (aware), or None when absent.

    Raises
    ------
    BadRequestError
        ``InvalidHeaderValue`` when it is not a date.
    """
    raw = request.headers.get(name)
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        raise BadRequestError(f"The {name} header is not an RFC 1123 date: {raw!r}.",
                              code="InvalidHeaderValue", values={"HeaderName": name}) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def conditions(request: web.Request, data: Mapping[str, Any]) -> web.Response | None:
    """Evaluate conditional headers against a resource's ``eTag``/``lastModified``.

    ``If-Match`` and ``If-Unmodified-Since`` that fail answer ``412
    ConditionNotMet``; ``If-None-Match`` and ``If-Modified-Since`` that fail
    answer ``304`` (no body) for a read and ``412`` for a write.

    Returns
    -------
    web.Response or None
        The ``304`` reply, or None when the request may proceed.

    Raises
    ------
    HpcbatchError
        ``412 ConditionNotMet``.
    BadRequestError
        ``InvalidHeaderValue``: a date header that is not a date.
    """
    reason = not_modified(request, data)
    if reason is None:
        return None
    if request.method in ("GET", "HEAD"):
        return empty_reply(304, entity_headers(data))
    raise _precondition_failed(reason, str(data.get("eTag") or ""))


def not_modified(request: web.Request, data: Mapping[str, Any]) -> str | None:
    """Why a read of ``data`` would answer ``304`` (a write ``412``), or None: the test of
    :func:`conditions` without its reply, which a long poll repeats at every commit.

    Returns
    -------
    str or None
        The ``If-None-Match``/``If-Modified-Since`` that still holds, or None.

    Raises
    ------
    HpcbatchError
        ``412 ConditionNotMet``: ``If-Match`` or ``If-Unmodified-Since`` fails.
    BadRequestError
        ``InvalidHeaderValue``: a date header that is not a date.
    """
    headers = request.headers
    if not any(h in headers for h in CONDITION_HEADERS):
        return None
    etag = str(data.get("eTag") or "")
    modified: datetime | None = None
    if "If-Unmodified-Since" in headers or "If-Modified-Since" in headers:
        modified = parse_wire_time(data.get("lastModified"))
        if modified is not None:
            modified = modified.replace(microsecond=0)
    if_match = headers.get("If-Match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in tags:
            raise _precondition_failed(f"If-Match {if_match} does not match the ETag {etag}",
                                       etag)
    since = header_date(request, "If-Unmodified-Since")
    if since is not None and modified is not None and modified > since:
        raise _precondition_failed("the resource was modified after If-Unmodified-Since", etag)
    reason = None
    if_none = headers.get("If-None-Match")
    if if_none is not None:
        tags = _etags(if_none)
        if "*" in tags or etag in tags:
            reason = f"If-None-Match {if_none} matches the ETag {etag}"
    since = header_date(request, "If-Modified-Since")
    if since is not None and modified is not None and modified <= since:
        reason = "the resource was not modified since If-Modified-Since"
    return reason


def _precondition_failed(reason: str, etag: str) -> HpcbatchError:
    return HpcbatchError(f"The condition specified using HTTP conditional header(s) is not "
                         f"met: {reason}.", code="ConditionNotMet", status=412,
                         values={"ETag": etag})


@dataclass(frozen=True)
class Target:
    """The resource a request addresses: its URL and a reader of its current wire JSON.

    :meth:`Collection.target` builds one; :meth:`Collection.change` uses it to
    check a write's conditions before the change and to answer after it.

    Attributes
    ----------
    request
        The request.
    url
        The resource's URL (``DataServiceId``).
    fetch
        Returns the resource's wire JSON (raises its ``...NotFound``).
    """

    request: web.Request
    url: str
    fetch: Callable[[], dict[str, Any]]

    def guard(self) -> Target:
        """Check a write's conditional headers (reading the resource only when there are any).

        Returns
        -------
        Target
            This target.

        Raises
        ------
        HpcbatchError
            ``412 ConditionNotMet``, or the resource's ``...NotFound``.
        """
        if any(h in self.request.headers for h in CONDITION_HEADERS):
            conditions(self.request, self.fetch())
        return self

    def done(self, status: int, *, etag: bool = True) -> web.Response:
        """Answer an accepted change: ``DataServiceId`` and, with ``etag``, the resource's
        new ``ETag``/``Last-Modified`` (none when it is already gone)."""
        headers: dict[str, str] = {}
        if etag:
            try:
                headers = entity_headers(self.fetch(), self.url)
            except HpcbatchError:
                headers = {}
        headers["DataServiceId"] = self.url
        return empty_reply(status, headers)


Params = Mapping[str, str]
"""A request's path parameters (``{"pool": "p1", "node": "n1"}``)."""

Change = Callable[[web.Request], Awaitable[None]]
"""A handler body that carries out a change and answers nothing itself."""


@dataclass(frozen=True)
class Collection:
    """A Batch resource collection (``/pools``, ``/pools/{pool}/nodes``, ...): how a route
    addresses, reads and answers one of its items.

    Attributes
    ----------
    path
        The collection's path template (``"/jobs/{job}/tasks"``).
    param
        The path parameter naming one item (``"task"``: ``/jobs/{job}/tasks/{task}``).
    entity_set
        The ``odata.metadata`` entity set (``"tasks"``).
    get
        Returns an item's wire JSON from the request's path parameters (raises
        its ``...NotFound``).
    selectable
        The names ``$select`` may take; None: the core applies ``$select``.
    stats
        ``stats(service, items)`` adds ``stats`` to items for ``$expand=stats``; None:
        the collection has no statistics.
    """

    path: str
    param: str
    entity_set: str
    get: Callable[[BatchService, Params], dict[str, Any]]
    selectable: tuple[str, ...] | None = None
    stats: Callable[[BatchService, list[dict[str, Any]]], None] | None = None

    def _stats(self, request: web.Request) -> Expander | None:
        if self.stats is None:
            return None
        expand, svc = self.stats, service(request)
        return lambda items: expand(svc, items)

    def url(self, request: web.Request, item_id: str) -> str:
        """The URL of item ``item_id`` (the other path parameters from ``request``)."""
        return f"{base_url(request)}{self.path.format_map(request.match_info)}/{item_id}"

    def target(self, request: web.Request) -> Target:
        """The item the request's path names."""
        params = dict(request.match_info)
        return Target(request, self.url(request, params[self.param]),
                      lambda: self.get(service(request), params))

    def created(self, request: web.Request, item_id: str) -> web.Response:
        """Answer the create of item ``item_id``: ``201`` (:func:`created_reply`)."""
        params = {**request.match_info, self.param: item_id}
        return created_reply(self.url(request, item_id), self.get(service(request), params))

    def entity(self, request: web.Request) -> web.Response:
        """Answer "... - Get" (and "... - Exists", ``HEAD``) of the item the path names."""
        return entity_reply(request, self.target(request).fetch(), f"{self.entity_set}/@Element",
                            self.selectable, self._stats(request))

    def page(self, request: web.Request, items: list[dict[str, Any]], *,
             expand: bool = False) -> web.Response:
        """Answer "... - List" with the whole list ``items`` (:func:`page_reply`)."""
        return page_reply(request, self.entity_set, items, self.selectable, expand=expand,
                          stats=self._stats(request))

    def change(self, status: int, *, guard: bool = True,
               etag: bool = True) -> Callable[[Change], Handler]:
        """Decorate the body of a handler that changes the item the path names.

        Before the body runs, the request's conditional headers are checked
        against the item (with ``guard``); after it, the reply is ``status``
        with ``DataServiceId`` and (with ``etag``) the item's new ``ETag`` and
        ``Last-Modified`` (:meth:`Target.done`).

        Parameters
        ----------
        status
            The operation's status code (``200``, ``202`` or ``204``).
        guard
            Whether the operation honours conditional headers.
        etag
            Whether the reply carries the item's new ``ETag``.
        """
        def decorate(body: Change) -> Handler:
            @functools.wraps(body)
            async def handler(request: web.Request) -> web.StreamResponse:
                target = self.target(request)
                if guard:
                    target.guard()
                await body(request)
                return target.done(status, etag=etag)
            return handler
        return decorate
