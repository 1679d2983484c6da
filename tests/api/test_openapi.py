"""The OpenAPI document: generated from the routes and wire models, committed, served signed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp import web
from openapi_spec_validator import validate

from hpcbatch.api import openapi, unsupported
from hpcbatch.api.routes import ROUTE_TABLES
from hpcbatch.batch.models import PoolSpec
from tests.api.wire import Http, batch_error

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_document_is_what_the_generator_produces():
    """docs/openapi.json is today's; regenerate: python -m hpcbatch.api.openapi > docs/openapi.json

    Byte for byte under the pydantic release that wrote it; under another one (whose JSON
    Schema may spell constraints differently) the same operations, parameters and bodies.
    """
    committed, generated = json.loads(COMMITTED.read_text()), openapi.document()
    stale = "docs/openapi.json is stale: python -m hpcbatch.api.openapi > docs/openapi.json"
    if committed["info"]["x-generated-with"] == generated["info"]["x-generated-with"]:
        assert COMMITTED.read_text() == openapi.dumps(generated), stale
        return

    def shape(doc: dict) -> dict:
        def params(op: dict) -> list[str]:
            return sorted(p.get("name") or p.get("$ref", "") for p in op.get("parameters", []))

        return {(path, method): (op.get("operationId"), params(op),
                                 sorted((op.get("requestBody") or {}).get("content", {})))
                for path, ops in doc["paths"].items() for method, op in ops.items()}

    assert shape(committed) == shape(generated), stale
    assert sorted(committed["components"]["schemas"]) == \
        sorted(generated["components"]["schemas"]), stale


def test_document_is_valid_openapi_and_covers_every_route():
    doc = openapi.document()
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    routed = {(r.method.lower(), re.sub(r"{(\w+):[^}]+}", r"{\1}", r.path))
              for t in ROUTE_TABLES for r in t if isinstance(r, web.RouteDef)}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == routed | {("get", "/openapi.json")}
    # what hpcbatch does not carry out is not documented as an operation it has
    for op in unsupported.UNSUPPORTED:
        assert (op.method.lower(), op.path) not in documented
    ids = [o["operationId"] for ops in doc["paths"].values() for o in ops.values()]
    assert len(ids) == len(set(ids))
    assert {"Pool_Add", "Task_AddCollection", "File_GetFromTask",
            "File_GetFromComputeNode"} <= set(ids)


def test_bodies_come_from_the_wire_models_and_errors_are_batch_errors():
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    add_pool = doc["paths"]["/pools"]["post"]
    assert add_pool["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/PoolSpec"}
    # the wire names (aliases), as the model's own schema has them
    assert schemas["PoolSpec"]["properties"].keys() == \
        PoolSpec.model_json_schema(by_alias=True)["properties"].keys()
    assert {"targetDedicatedNodes", "taskSlotsPerNode"} <= schemas["PoolSpec"]["properties"].keys()
    params = {p["$ref"].rsplit("/", 1)[1] for p in doc["paths"]["/pools"]["get"]["parameters"]}
    assert {"api_version", "timeout", "filter", "select", "expand", "maxresults"} <= params
    api_version = doc["components"]["parameters"]["api_version"]
    assert api_version["required"] and "2025-06-01" in api_version["schema"]["enum"]
    for ops in doc["paths"].values():
        for op in ops.values():
            for status in ("4XX", "5XX"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]
                assert ref == {"$ref": "#/components/schemas/BatchError"}
    assert schemas["BatchError"]["required"] == ["code", "message"]
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert doc["security"] == [{"SharedKey": []}]


def test_served_signed_and_equal_to_the_generated(http: Http):
    resp = http("GET", "/openapi.json")
    assert resp.status_code == 200, resp.text
    assert resp.json() == json.loads(openapi.dumps(openapi.document()))
    # like every Batch route: no signature, no document
    unsigned = http.session.get(http.endpoint + "/openapi.json",
                                params={"api-version": "2025-06-01"}, auth=lambda r: r)
    batch_error(unsigned, 403, "AuthenticationFailed")
    batch_error(http("GET", "/openapi.json", params={"api-version": None}), 400,
                "MissingRequiredQueryParameter")
