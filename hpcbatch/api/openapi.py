"""The OpenAPI 3.1 document of the REST API hpcbatch implements, generated from the code.

:func:`document` builds it from what serves requests, so it cannot drift:

* the operations are the routes of :data:`hpcbatch.api.routes.ROUTE_TABLES`
  (method and path; the operation's name is the Batch REST reference's, taken
  from the handler's docstring: ``"Pool - Add"`` gives ``operationId``
  ``Pool_Add``), plus ``GET /openapi.json`` itself;
* the request bodies are the JSON schemas of the pydantic wire models the
  service core parses them with (:mod:`hpcbatch.batch.models`,
  :mod:`hpcbatch.batch.schedules`, :class:`hpcbatch.providers.inventory.Host`;
  ``model_json_schema`` by alias), in ``components/schemas``;
* every operation takes Batch's ``api-version`` (one of
  :data:`hpcbatch.api.http.API_VERSIONS`), ``timeout`` and
  ``client-request-id``; lists take ``$filter``, ``$select``, ``$expand`` and
  ``maxresults``; a single resource's GET takes ``$select`` and ``$expand``;
* every ``4XX`` and ``5XX`` reply is Batch's error body (``BatchError``:
  ``{"odata.metadata", "code", "message": {"lang", "value"}, "values"}``,
  :func:`hpcbatch.api.http.error_reply`).

Batch operations hpcbatch answers with ``400 FeatureNotSupported``
(:mod:`hpcbatch.api.unsupported`) are not in the document.

The service serves it at ``GET /openapi.json`` (SharedKey and ``api-version``
as every Batch route; docs/api.md). ``docs/openapi.json`` is the committed
copy, which ``tests/api/test_openapi.py`` compares with :func:`document`;
regenerate it with ``python -m hpcbatch.api.openapi > docs/openapi.json``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import VERSION as PYDANTIC_VERSION
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hpcbatch.api.http import API_VERSIONS, JSON_CONTENT_TYPE, MAX_RESULTS
from hpcbatch.api.routes import ROUTE_TABLES
from hpcbatch.batch.models import (
    JobDisable,
    JobPatch,
    JobSpec,
    JobTerminate,
    NodeRemove,
    PoolEnableAutoScale,
    PoolEvaluateAutoScale,
    PoolResize,
    PoolSpec,
    TaskCollection,
    TaskConstraints,
    TaskSpec,
)
from hpcbatch.batch.schedules import JobScheduleSpec
from hpcbatch.providers.inventory import Host
from hpcbatch.version import __version__

__all__ = ["PATH", "document", "dumps", "get_openapi_document"]

PATH = "/openapi.json"
"""Where the service serves the document."""

OPENAPI_VERSION = "3.1.0"
"""3.1: its schemas are JSON Schema 2020-12, the dialect pydantic generates."""

_REF = "#/components/schemas/{model}"

_MODELS: tuple[type[BaseModel], ...] = (
    PoolSpec, PoolResize, PoolEnableAutoScale, PoolEvaluateAutoScale, NodeRemove, JobSpec,
    JobPatch, JobTerminate, JobDisable, TaskSpec, TaskCollection, TaskConstraints,
    JobScheduleSpec, Host,
)
"""The wire models whose schemas the request bodies use."""

_POOL_MUTABLE = ("startTask", "metadata", "applicationPackageReferences",
                 "targetNodeCommunicationMode", "certificateReferences")
"""What "Pool - Patch" and "Pool - Update Properties" take (core/pools.py ``update_pool``)."""


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _option(name: str, values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "properties": {name: {"type": "string", "enum": list(values)}}}


_NODE_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


def _body_schemas(schemas: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The JSON body schema of each ``(method, route path)`` that takes one."""
    pool = schemas[PoolSpec.__name__]["properties"]
    pool_patch = {"type": "object", "additionalProperties": False,
                  "properties": {k: pool[k] for k in _POOL_MUTABLE if k in pool}}
    schedule_patch = {k: v for k, v in schemas[JobScheduleSpec.__name__].items()
                      if k not in ("required", "title")}
    node = "/pools/{pool}/nodes/{node}"
    return {
        ("POST", "/pools"): _ref(PoolSpec),
        ("PATCH", "/pools/{pool}"): pool_patch,
        ("POST", "/pools/{pool}/updateproperties"): {
            **pool_patch, "required": ["applicationPackageReferences", "metadata"]},
        ("POST", "/pools/{pool}/resize"): _ref(PoolResize),
        ("POST", "/pools/{pool}/enableautoscale"): _ref(PoolEnableAutoScale),
        ("POST", "/pools/{pool}/evaluateautoscale"): _ref(PoolEvaluateAutoScale),
        ("POST", "/pools/{pool}/removenodes"): _ref(NodeRemove),
        ("POST", f"{node}/reboot"): _option("nodeRebootOption", _NODE_OPTIONS),
        ("POST", f"{node}/reimage"): _option("nodeReimageOption", _NODE_OPTIONS),
        ("POST", f"{node}/disablescheduling"): _option("nodeDisableSchedulingOption",
                                                        _NODE_OPTIONS[:3]),
        ("POST", "/jobs"): _ref(JobSpec),
        ("PATCH", "/jobs/{job}"): _ref(JobPatch),
        ("PUT", "/jobs/{job}"): {"allOf": [_ref(JobPatch)], "required": ["poolInfo"]},
        ("POST", "/jobs/{job}/terminate"): _ref(JobTerminate),
        ("POST", "/jobs/{job}/disable"): _ref(JobDisable),
        ("POST", "/jobs/{job}/tasks"): _ref(TaskSpec),
        ("POST", "/jobs/{job}/addtaskcollection"): _ref(TaskCollection),
        ("PUT", "/jobs/{job}/tasks/{task}"): {
            "type": "object", "additionalProperties": False,
            "properties": {"constraints": _ref(TaskConstraints)}},
        ("PATCH", "/applications/{app}"): {
            "type": "object", "required": ["defaultVersion"],
            "properties": {"defaultVersion": {"type": ["string", "null"]}}},
        ("POST", "/jobschedules"): _ref(JobScheduleSpec),
        ("PATCH", "/jobschedules/{schedule}"): schedule_patch,
        ("PUT", "/jobschedules/{schedule}"): _ref(JobScheduleSpec),
        ("POST", "/inventory/hosts"): {
            "type": "object", "required": ["hosts"], "additionalProperties": False,
            "properties": {"hosts": {"type": "array", "items": _ref(Host)}}},
        ("POST", "/inventory/hosts/check"): {
            "type": "object", "additionalProperties": False,
            "properties": {"poolId": {"type": "string", "minLength": 1},
                           "launcher": {"type": "string", "minLength": 1}}},
    }


_BINARY_BODIES = {("PUT", "/applications/{app}/versions/{version}")}
"""Operations whose body is bytes (an application package's zip)."""

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Batch's error body (Batch REST: \"Batch status and error codes\").",
    "required": ["code", "message"],
    "properties": {
        "odata.metadata": {"type": "string"},
        "code": {"type": "string", "description": "The Batch error code (PoolNotFound, ...)."},
        "message": {"type": "object", "required": ["lang", "value"],
                    "properties": {"lang": {"type": "string"}, "value": {"type": "string"}}},
        "values": {"type": "array", "items": {
            "type": "object", "required": ["key", "value"],
            "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}},
    },
}

_PARAMETERS: dict[str, dict[str, Any]] = {
    "api-version": {"name": "api-version", "in": "query", "required": True,
                    "description": "The Batch REST api-version; hpcbatch answers every one "
                                   "with the wire of 2025-06-01.",
                    "schema": {"type": "string", "enum": sorted(API_VERSIONS)}},
    "timeout": {"name": "timeout", "in": "query", "required": False,
                "description": "Seconds the server may spend on the request (int32).",
                "schema": {"type": "integer", "format": "int32"}},
    "client-request-id": {"name": "client-request-id", "in": "header", "required": False,
                          "description": "A caller-generated id (a GUID), echoed in the reply.",
                          "schema": {"type": "string"}},
    "$filter": {"name": "$filter", "in": "query", "required": False,
                "description": "An OData $filter clause (Batch's filterable properties).",
                "schema": {"type": "string"}},
    "$select": {"name": "$select", "in": "query", "required": False,
                "description": "An OData $select clause: comma-separated property names.",
                "schema": {"type": "string"}},
    "$expand": {"name": "$expand", "in": "query", "required": False,
                "description": "An OData $expand clause (stats).",
                "schema": {"type": "string"}},
    "maxresults": {"name": "maxresults", "in": "query", "required": False,
                   "description": f"The most items in one page (1..{MAX_RESULTS}).",
                   "schema": {"type": "integer", "format": "int32", "minimum": 1,
                              "maximum": MAX_RESULTS, "default": MAX_RESULTS}},
    "$skiptoken": {"name": "$skiptoken", "in": "query", "required": False,
                   "description": "The continuation of odata.nextLink.",
                   "schema": {"type": "string"}},
    "recursive": {"name": "recursive", "in": "query", "required": False,
                  "description": "List the files of subfolders too.",
                  "schema": {"type": "boolean"}},
    "ocp-range": {"name": "ocp-range", "in": "header", "required": False,
                  "description": "The byte range to read: bytes=start-end or bytes=start-.",
                  "schema": {"type": "string"}},
    "If-Match": {"name": "If-Match", "in": "header", "required": False,
                 "description": "Act only when the resource's ETag matches.",
                 "schema": {"type": "string"}},
    "If-None-Match": {"name": "If-None-Match", "in": "header", "required": False,
                      "description": "Act only when the resource's ETag does not match.",
                      "schema": {"type": "string"}},
    "If-Modified-Since": {"name": "If-Modified-Since", "in": "header", "required": False,
                          "description": "Act only when the resource changed since (RFC 1123).",
                          "schema": {"type": "string"}},
    "If-Unmodified-Since": {"name": "If-Unmodified-Since", "in": "header", "required": False,
                            "description": "Act only when the resource did not change since "
                                           "(RFC 1123).",
                            "schema": {"type": "string"}},
}

_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")

_TAGS = {"pools": "Pool", "nodes": "Compute Node", "jobs": "Job", "tasks": "Task",
         "files": "File", "applications": "Application", "jobschedules": "Job Schedule",
         "inventory": "Inventory", "nodecounts": "Account", "supportedimages": "Account",
         "nodeagentskus": "Account", "health": "Service", "openapi.json": "Service"}

_OPERATION = re.compile(r'^\s*"([A-Z][A-Za-z ]+ - [^"]+)"')


def _openapi_path(route_path: str) -> tuple[str, list[str]]:
    """``/a/{x}/files/{path:.+}`` -> (``/a/{x}/files/{path}``, ``["x", "path"]``)."""
    names = [n.split(":", 1)[0] for n in re.findall(r"{([^}]+)}", route_path)]
    return re.sub(r"{([^}:]+):[^}]+}", r"{\1}", route_path), names


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    for part in reversed(parts):
        if part in _TAGS and not (part == "nodes" and "files" in parts):
            return _TAGS[part]
    return _TAGS.get(parts[0], "Service") if parts else "Service"


def _operation_id(method: str, path: str, handler: Callable[..., Any], taken: set[str]) -> str:
    """The Batch REST reference's name from the handler's docstring, made an identifier."""
    match = _OPERATION.match(handler.__doc__ or "")
    if match:
        name = re.sub(r"\s+-\s+", "_", match.group(1).split(",")[0].split('"')[0])
        name = re.sub(r"[^A-Za-z0-9_]+", "", name.replace("/", " ").title().replace(" ", ""))
    else:
        name = handler.__name__
    if name in taken:  # the file routes share handlers; Exists is Get's HEAD
        where = "FromComputeNode" if path.startswith("/pools") else "FromTask"
        name = f"{name}{where}" if where not in name else f"{name}_{method.title()}"
    return name


def _parameters(method: str, path: str, handler: Callable[..., Any],
                names: list[str]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in names]
    common = ["api-version", "timeout", "client-request-id"]
    if path == "/health":
        common = []
    extra: list[str] = []
    is_list = method == "GET" and handler.__name__.startswith("list_")
    if is_list and path.endswith("/files"):
        extra = ["$filter", "recursive", "maxresults"]
    elif is_list:
        extra = ["$filter", "$select", "$expand", "maxresults", "$skiptoken"]
    elif method in ("GET", "HEAD") and "/files/" in path:
        extra = ["ocp-range", "If-Modified-Since", "If-Unmodified-Since"]
    elif method in ("GET", "HEAD") and names and path.split("/")[-1].startswith("{"):
        extra = ["$select", "$expand", *_CONDITIONS]
    elif method in ("PATCH", "PUT", "DELETE", "POST") and names and "/inventory/" not in path:
        extra = list(_CONDITIONS)
    return params + [{"$ref": f"#/components/parameters/{_param_key(n)}"}
                     for n in [*common, *extra]]


def _param_key(name: str) -> str:
    return name.replace("$", "").replace("-", "_")


def _responses(method: str) -> dict[str, Any]:
    error = {"description": "Batch's error body with a Batch error code.",
             "content": {JSON_CONTENT_TYPE: {"schema": {"$ref": _REF.format(model="BatchError")}},
                         "application/json": {
                             "schema": {"$ref": _REF.format(model="BatchError")}}}}
    ok: dict[str, Any] = {"description": "Success: the status, headers and body the Batch REST "
                                         "reference gives for the operation."}
    if method == "GET":
        ok["content"] = {JSON_CONTENT_TYPE: {"schema": {"type": "object"}},
                         "application/octet-stream": {"schema": {"type": "string",
                                                                 "format": "binary"}}}
    return {"2XX": ok, "304": {"description": "Not modified (a conditional read)."},
            "4XX": error, "5XX": error}


def _routes() -> list[tuple[str, str, Callable[..., Any]]]:
    out: list[tuple[str, str, Callable[..., Any]]] = []
    for table in ROUTE_TABLES:
        for route in table:
            if isinstance(route, web.RouteDef):
                out.append((route.method.upper(), route.path, route.handler))
    out.append(("GET", PATH, get_openapi_document))
    return out


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API (deterministic: same code, same document).

    Returns
    -------
    dict
        ``openapi``, ``info``, ``paths`` (every route of
        :data:`~hpcbatch.api.routes.ROUTE_TABLES` and ``/openapi.json``),
        ``components`` (request body schemas from the wire models, ``BatchError``,
        the shared parameters, the ``SharedKey`` security scheme) and a global
        ``security`` requirement (``/health`` opts out).
    """
    _, top = models_json_schema([(m, "validation") for m in _MODELS], by_alias=True,
                                ref_template=_REF)
    schemas: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    schemas["BatchError"] = _ERROR_SCHEMA
    bodies = _body_schemas(schemas)
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for method, route_path, handler in _routes():
        path, names = _openapi_path(route_path)
        op_id = _operation_id(method, path, handler, taken)
        taken.add(op_id)
        doc = (handler.__doc__ or "").strip().split("\n\n")[0]
        op: dict[str, Any] = {
            "operationId": op_id, "tags": [_tag(path)], "summary": " ".join(doc.split()),
            "parameters": _parameters(method, path, handler, names),
            "responses": _responses(method)}
        if (method, route_path) in bodies:
            op["requestBody"] = {"required": method in ("POST", "PUT") and not route_path.endswith(
                ("/reboot", "/reimage", "/disablescheduling", "/terminate",
                 "/check")),
                "content": {"application/json": {"schema": bodies[(method, route_path)]}}}
        elif (method, route_path) in _BINARY_BODIES:
            op["requestBody"] = {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
        if route_path == "/health":
            op["security"] = []
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "hpcbatch REST API",
            "version": __version__,
            "description": "The Azure Batch REST API (api-version 2025-06-01 and older) as "
                           "hpcbatch implements it, plus hpcbatch's /inventory, /health and "
                           "/openapi.json. Generated by hpcbatch.api.openapi.",
            # The request schemas are pydantic's JSON Schema, whose details (e.g. which
            # constraints it spells out) vary between pydantic releases.
            "x-generated-with": f"pydantic {PYDANTIC_VERSION}",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "parameters": {_param_key(k): v for k, v in _PARAMETERS.items()},
            "securitySchemes": {"SharedKey": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "Batch SharedKey: 'SharedKey {account}:{signature}' over the "
                               "request (Batch: \"Authenticate requests to the Azure Batch "
                               "service\"), with ocp-date; a non-read request is accepted once "
                               "(ocp-hpcbatch-nonce makes repeats distinct; docs/security.md)."}},
        },
        "security": [{"SharedKey": []}],
    }


def dumps(doc: dict[str, Any]) -> str:
    """The document as the committed ``docs/openapi.json`` holds it (sorted keys, indent 1)."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


_CACHE: dict[str, bytes] = {}


async def get_openapi_document(request: web.Request) -> web.Response:
    """Serve this document (hpcbatch; SharedKey and ``api-version`` as every Batch route)."""
    if "doc" not in _CACHE:
        _CACHE["doc"] = dumps(document()).encode()
    return web.Response(body=_CACHE["doc"], content_type="application/json")


def main() -> None:
    """``python -m hpcbatch.api.openapi``: print the document (regenerates docs/openapi.json)."""
    sys.stdout.write(dumps(document()))


if __name__ == "__main__":
    main()
