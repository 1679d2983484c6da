"""The transport under :class:`hpcbatch.client.sdk.BatchClient`: signing, errors, paging.

:class:`RestClient` holds a client's endpoint and credentials and sends its
requests: each signed with SharedKey (or a job token), with ``Content-MD5``,
``api-version`` and hpcbatch's ``User-Agent``; an error reply becomes
:class:`BatchError` with Batch's code; list replies are followed through
``odata.nextLink``. The resource operations (:mod:`hpcbatch.client.operations`)
are built on it, and :class:`~hpcbatch.client.sdk.BatchClient` joins them.

Like the SDK, this module imports neither ``pydantic`` (:func:`parse_model`
builds models on a read's first use) nor ``requests``, nor anything of the service.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import quote, urlencode

from hpcbatch.batch.errors import HpcbatchError, ServiceNotRunningError
from hpcbatch.batch.sharedkey import decode_key
from hpcbatch.batch.tokens import CA_PEM_ENV, OPERATOR_HEADER, TOKEN_ENV, operator_proof
from hpcbatch.client.auth import SharedKeyAuth, authorize, content_length
from hpcbatch.client.state import service_connection
from hpcbatch.client.transport import Response, Transport
from hpcbatch.version import __version__

if TYPE_CHECKING:
    from pydantic import BaseModel

    M = TypeVar("M", bound=BaseModel)

__all__ = ["API_VERSION", "USER_AGENT", "BatchError", "Json", "RestClient", "parse_model",
           "to_wire", "wire_models"]

API_VERSION = "2025-06-01"
"""The Batch REST api-version this client speaks."""

USER_AGENT = f"hpcbatch/{__version__}"
"""The ``User-Agent`` of every request."""

Json = dict[str, Any]
"""A resource's wire JSON, as the service sent it."""


class BatchError(HpcbatchError):
    """An error answered by the service, with Batch's code and HTTP status."""


def to_wire(obj: Any) -> Any:
    """Batch JSON of a wire model (any pydantic model), or ``obj`` itself."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True, exclude_none=True)
    return obj


@functools.cache
def _partial(model: type[M]) -> type[M]:
    """A subclass of ``model`` whose every field is optional: what a ``$select`` reply holds."""
    from pydantic import Field, create_model

    def optional(annotation: Any) -> Any:
        return annotation | None

    fields: dict[str, Any] = {name: (optional(f.annotation), Field(None, alias=f.alias))
                              for name, f in model.model_fields.items()}
    return create_model(f"Partial{model.__name__}", __base__=model, **fields)


def parse_model(model: type[M], data: Mapping[str, Any], partial: bool = False) -> M:
    """Build a model from wire JSON; ``partial``: a ``$select`` reply, fields may be missing."""
    cls = _partial(model) if partial else model
    return cls.model_validate({k: v for k, v in data.items() if k != "odata.metadata"})


def wire_models() -> Any:
    """:mod:`hpcbatch.batch.models`, imported on first use (building it takes ~0.2 s)."""
    from hpcbatch.batch import models

    return models


class RestClient:
    """The endpoint, credentials and signed requests of a Batch client.

    Parameters are :class:`~hpcbatch.client.sdk.BatchClient`'s (that class documents them).

    Raises
    ------
    ValueError
        ``key`` or ``operator_key`` is not base64, or neither ``key`` nor ``token`` is given.
    """

    def __init__(self, endpoint: str, account: str, key: str | None = None, *,
                 timeout_s: float = 120.0, token: str | None = None, ca_file: str | None = None,
                 ca_pem: str | None = None, operator_key: str | None = None) -> None:
        if not key and not token:
            raise ValueError("BatchClient needs an account key or an authentication token")
        self.endpoint = endpoint.rstrip("/")
        self.account = account
        self.timeout_s = timeout_s
        self._key = key or ""
        self._token = token
        # fails early on a bad key; signs raw requests (requests.Session auth)
        self._auth = SharedKeyAuth(account, key) if key else None
        if operator_key:
            decode_key(operator_key)  # fail early on a bad key
        self._operator_key = operator_key
        self._transport = Transport(timeout_s, ca_file=ca_file, ca_pem=ca_pem)

    # ----------------------------------------------------------- construction

    @classmethod
    def from_environment(cls, state_dir: Path | str | None = None) -> Self:
        """Find a service: the ``AZURE_BATCH_*`` variables, a task's token, else a state dir.

        In order: ``state_dir`` when given (the service's ``service.json``, key
        file, CA and operator key); ``AZURE_BATCH_ENDPOINT`` with
        ``AZURE_BATCH_ACCOUNT`` and ``AZURE_BATCH_ACCESS_KEY`` (or
        ``AZ_BATCH_AUTHENTICATION_TOKEN``); inside a task that asked for a token
        (``authenticationTokenSettings``), ``AZ_BATCH_ACCOUNT_URL``,
        ``AZ_BATCH_ACCOUNT_NAME`` and ``AZ_BATCH_AUTHENTICATION_TOKEN``; else the
        service of ``$HPCBATCH_STATE_DIR`` or ``~/.hpcbatch``. With the
        variables, ``REQUESTS_CA_BUNDLE`` names the CA file to trust (as for the
        official SDK), or ``HPCBATCH_CA_PEM`` holds it (what an HTTPS service
        gives a task that has a token).

        Parameters
        ----------
        state_dir
            The service's state dir; default ``$HPCBATCH_STATE_DIR`` or ``~/.hpcbatch``.
            When given, the variables are not looked at.

        Raises
        ------
        ServiceNotRunningError
            When neither the variables nor a running service's ``service.json`` is found.
        HpcbatchError
            ``InvalidAccountKey``: the key found is not base64.
        """
        env = os.environ
        token = env.get(TOKEN_ENV) or None
        ca_file = env.get("REQUESTS_CA_BUNDLE") or None
        ca_pem = env.get(CA_PEM_ENV) or None
        operator_key = None
        if state_dir is None and env.get("AZURE_BATCH_ENDPOINT"):
            missing = [v for v in ("AZURE_BATCH_ACCOUNT",) if not env.get(v)]
            if not env.get("AZURE_BATCH_ACCESS_KEY") and not token:
                missing.append(f"AZURE_BATCH_ACCESS_KEY (or {TOKEN_ENV})")
            if missing:
                raise ServiceNotRunningError(
                    f"AZURE_BATCH_ENDPOINT is set but {', '.join(missing)} is not.")
            endpoint, account = env["AZURE_BATCH_ENDPOINT"], env["AZURE_BATCH_ACCOUNT"]
            key = env.get("AZURE_BATCH_ACCESS_KEY") or None
            token = None if key else token
            source = "AZURE_BATCH_ACCESS_KEY"
        elif state_dir is None and token and env.get("AZ_BATCH_ACCOUNT_URL"):
            endpoint, account, key = (env["AZ_BATCH_ACCOUNT_URL"],
                                      env.get("AZ_BATCH_ACCOUNT_NAME", ""), None)
            source = TOKEN_ENV
        else:
            conn = service_connection(state_dir)
            endpoint, account, key, token = conn.endpoint, conn.account, conn.key, None
            ca_file, ca_pem, operator_key = conn.ca_file, None, conn.operator_key
            source = "the service's key file"
        try:
            return cls(endpoint, account, key, token=token, ca_file=ca_file, ca_pem=ca_pem,
                       operator_key=operator_key)
        except ValueError as exc:
            raise HpcbatchError(f"{source} is not a valid account key: {exc}",
                                code="InvalidAccountKey", status=400) from None

    def close(self) -> None:
        """Close the client's connections."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- transport

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 body: Any = None, headers: Mapping[str, str] | None = None,
                 raw: bytes | None = None) -> Response:
        """Send a signed request; a path is under the endpoint (with ``api-version``), a URL as is.

        Raises
        ------
        BatchError
            The service answered with an error (its Batch code and status).
        ServiceNotRunningError
            The endpoint cannot be reached.
        TimeoutError
            No answer within ``timeout_s``.
        """
        if path.startswith("http"):
            url = path
        else:
            query = {"api-version": API_VERSION,
                     **{k: v for k, v in (params or {}).items() if v is not None}}
            url = f"{self.endpoint}{path}?{urlencode(query, doseq=True)}"
        data = raw
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if raw is not None:
            hdrs["Content-Type"] = "application/octet-stream"
        if body is not None:
            data = json.dumps(to_wire(body), separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json; odata=minimalmetadata"
        length = content_length(method, None if data is None else len(data))
        if length is not None:
            hdrs["Content-Length"] = length
        if data is not None:  # binds the body to the signature, even over plain HTTP
            hdrs["Content-MD5"] = base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")

        def signed() -> dict[str, str]:
            out = dict(hdrs)
            if self._token:
                out["Authorization"] = f"Bearer {self._token}"
                return out
            authorize(method, url, out, self.account, self._key, nonce=True)
            if self._operator_key:
                out[OPERATOR_HEADER] = operator_proof(self._operator_key, out["Authorization"])
            return out

        try:
            resp = self._transport.request(method, url, signed, data)
        except TimeoutError:
            raise TimeoutError(f"the hpcbatch service at {self.endpoint} did not answer "
                               f"within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceNotRunningError(f"cannot reach the hpcbatch service at "
                                         f"{self.endpoint}: {exc}") from None
        if resp.status >= 400:
            try:
                err = resp.json()
                msg = err.get("message", {}).get("value", resp.text).split("\nRequestId:")[0]
                values = {v["key"]: v["value"] for v in err.get("values", [])}
            except (ValueError, AttributeError, KeyError, TypeError):
                raise BatchError(resp.text or resp.reason, code="Unknown",
                                 status=resp.status) from None
            raise BatchError(msg, code=err.get("code", "Unknown"), status=resp.status,
                             values=values)
        return resp

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Json:
        """GET one resource's wire JSON (without ``odata.metadata``)."""
        data: Json = self._request("GET", path, params=params).json()
        data.pop("odata.metadata", None)
        return data

    def _list(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Json]:
        resp = self._request("GET", path, params=params)
        while True:
            body = resp.json()
            yield from body.get("value", [])
            nxt = body.get("odata.nextLink")
            if not nxt:
                return
            resp = self._request("GET", nxt)

    @staticmethod
    def _q(value: str) -> str:
        return quote(value, safe="")

    def _download(self, path: str, destination: str | Path | None,
                  headers: Mapping[str, str] | None = None) -> bytes:
        """GET a file's bytes; also write them to ``destination`` when given (its missing
        folders are made)."""
        data = self._request("GET", path, headers=headers).content
        if destination is not None:
            Path(destination).parent.mkdir(parents=True, exist_ok=True)
            Path(destination).write_bytes(data)
        return data
