"""Secrets and certificates the hpcbatch service makes at its first start.

* The Batch account name and SharedKey, kept in ``{state_dir}/account.json``
  (mode 0600); clients sign with them as in the Batch document "Authenticate
  requests to the Azure Batch service" (see :mod:`hpcbatch.batch.sharedkey`).
* A private certificate authority and the service's certificate, under
  ``{state_dir}/tls/`` (:func:`hpcbatch.execution.pki.ensure_tls`, re-exported
  here). The Dask scheduler and the service's own Dask client present that
  certificate; each node gets its own certificate from the same CA
  (:func:`hpcbatch.execution.pki.issue_node_credentials`).

* The operator key, ``{state_dir}/operator.key`` (mode 0600): requests that
  carry its proof are the operator's (:func:`ensure_operator_key`).
* The REST API's authentication (:func:`auth_middleware`): SharedKey or a
  job-scoped bearer token, the body bound to the signature (``Content-Length``,
  ``Content-MD5``), replays refused (docs/security.md, "REST API: transport,
  signatures, replay").

Every ``ensure_*`` function is idempotent: it reuses what is there, tightens
file modes that have become too loose, and holds a lock file so that two
processes starting at once do not both write.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hpcbatch.api import dashboard
from hpcbatch.api.dashboard.routes import SHAREDKEY_SIGNED, SIGNED_ROUTES
from hpcbatch.api.http import SERVICE, Handler
from hpcbatch.batch import sharedkey
from hpcbatch.batch.errors import AuthenticationError, HpcbatchError
from hpcbatch.batch.replay import NONCE_HEADER, ReplayCache
from hpcbatch.batch.sharedkey import decode_key, generate_account_key
from hpcbatch.batch.statedir import ACCOUNT_FILE, OPERATOR_KEY_FILE
from hpcbatch.batch.tokens import (
    OPERATOR_HEADER,
    check_job_incarnation,
    verify_job_token,
    verify_operator_proof,
)
from hpcbatch.execution.pki import (
    ensure_tls,
    locked,
    private_dir,
    tighten,
    write_private,
)
from hpcbatch.execution.tls import TlsFiles
from hpcbatch.store.database import jobs

__all__ = [
    "API_SECURITY",
    "PRINCIPAL",
    "AccountCredentials",
    "ApiSecurity",
    "Principal",
    "TlsFiles",
    "auth_middleware",
    "ensure_account_credentials",
    "ensure_operator_key",
    "ensure_tls",
    "may_add_operator_hosts",
    "principal",
]


@dataclass(frozen=True)
class AccountCredentials:
    """The Batch account this service answers as.

    Attributes
    ----------
    account_name
        Batch account name (the ``{account}`` of ``SharedKey {account}:...``).
    key
        Account key, base64 of 64 random bytes.
    key_file
        ``account.json`` holding both.
    """

    account_name: str
    key: str
    key_file: Path

    def __repr__(self) -> str:  # keep the key out of logs
        return f"AccountCredentials(account_name={self.account_name!r}, key_file={str(self.key_file)!r})"


# --------------------------------------------------------------------------
# account
# --------------------------------------------------------------------------


def ensure_account_credentials(state_dir: Path, account: str = "hpcbatch") -> AccountCredentials:
    """Create or read the service's Batch account name and SharedKey.

    The key is what clients sign requests with ("Authenticate requests to the
    Azure Batch service"). It lives in ``state_dir/account.json`` as
    ``{"account_name": ..., "key": ...}``, mode 0600 (re-applied if the file
    has become more open), in a directory of mode 0700.

    Parameters
    ----------
    state_dir
        The service's state directory; created if missing.
    account
        Account name used when the file is first created. An existing file
        keeps the name it holds.

    Returns
    -------
    AccountCredentials

    Raises
    ------
    HpcbatchError
        ``account.json`` exists but is not valid (bad JSON, missing fields,
        key not base64).
    """
    state_dir = private_dir(Path(state_dir))
    path = state_dir / ACCOUNT_FILE
    with locked(state_dir):
        if not path.exists():
            if not account or any(c in account for c in ": \t\r\n"):
                raise ValueError(f"invalid Batch account name {account!r}")
            doc = {"account_name": account, "key": generate_account_key()}
            write_private(path, (json.dumps(doc, indent=2) + "\n").encode())
        tighten(path)
        try:
            doc = json.loads(path.read_text())
            name, key = doc["account_name"], doc["key"]
            if not isinstance(name, str) or not name or not isinstance(key, str):
                raise TypeError("account_name and key must be non-empty strings")
            decode_key(key)
        except (ValueError, KeyError, TypeError) as exc:
            raise HpcbatchError(
                f"{path} is not a valid hpcbatch account file ({exc}); "
                "restore it, or delete it to make a new key.",
                code="InvalidAccountFile",
            ) from exc
    return AccountCredentials(account_name=name, key=key, key_file=path)


# --------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# operator key
# --------------------------------------------------------------------------


def ensure_operator_key(state_dir: Path) -> str:
    """Create or read the operator key: ``state_dir/operator.key`` (base64 of 32 bytes, mode 0600).

    The key marks a request as the operator's (see
    :func:`hpcbatch.batch.tokens.operator_proof`): only someone who can read the
    state dir holds it, unlike the account key, which every API caller holds.

    Parameters
    ----------
    state_dir
        The service's state directory; created if missing.

    Returns
    -------
    str
        The key, base64.

    Raises
    ------
    HpcbatchError
        ``InvalidOperatorKeyFile``: the file exists but is not base64.
    """
    state_dir = private_dir(Path(state_dir))
    path = state_dir / OPERATOR_KEY_FILE
    with locked(state_dir):
        if not path.exists():
            write_private(path, (generate_account_key() + "\n").encode())
        tighten(path)
        key = path.read_text().strip()
        try:
            decode_key(key)
        except ValueError as exc:
            raise HpcbatchError(f"{path} is not a valid operator key ({exc}); delete it to "
                                "make a new one.", code="InvalidOperatorKeyFile") from exc
    return key


# --------------------------------------------------------------------------
# REST authentication: SharedKey, job tokens, body binding, replay
# --------------------------------------------------------------------------


@dataclass
class ApiSecurity:
    """How the REST API authenticates requests (one per application).

    Attributes
    ----------
    account, key
        The account name and its SharedKey (base64).
    operator_key
        The operator key (base64); None: no request is the operator's.
    allow_api_local_hosts
        ``service start --allow-api-local-hosts``: any API caller may add
        inventory hosts that only the operator may add otherwise.
    replay
        Signatures already accepted (:class:`~hpcbatch.batch.replay.ReplayCache`).
    max_skew_s
        Largest distance between a request's date and the clock (Batch: 900 s).
    """

    account: str
    key: str
    operator_key: str | None = None
    allow_api_local_hosts: bool = False
    replay: ReplayCache = field(default_factory=ReplayCache)
    max_skew_s: float = 900.0


API_SECURITY = web.AppKey("api_security", ApiSecurity)
"""The application's :class:`ApiSecurity`."""


@dataclass(frozen=True)
class Principal:
    """Who sent a request that passed authentication.

    Attributes
    ----------
    job_id
        None: the account key signed it (SharedKey). Otherwise the job a bearer
        token (``authenticationTokenSettings``) is scoped to.
    operator
        The request carried a valid operator proof (``hpcbatch-operator``).
    """

    job_id: str | None = None
    operator: bool = False


PRINCIPAL: Any = (web.RequestKey("hpcbatch_principal", Principal)
                  if hasattr(web, "RequestKey") else "hpcbatch_principal")
"""Where :func:`auth_middleware` puts the request's :class:`Principal` (a typed key where
aiohttp has them, 3.12 on; a plain one before)."""

REPLAY_EXEMPT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Reads whose identical repeats are accepted (unless they carry the nonce header)."""

REQUEST_ID_HEADERS = ("client-request-id", "x-ms-client-request-id")
"""The request ID headers of the official Batch SDKs (a new UUID every call: 14.x by
msrestazure's ``generate_client_request_id``, 15.x by azure-core's ``RequestIdPolicy``);
unsigned, part of the replay key of a request without the nonce header."""


def principal(request: web.Request) -> Principal:
    """The :class:`Principal` of an authenticated request (``/health``: an anonymous account one)."""
    found = request.get(PRINCIPAL)
    return found if isinstance(found, Principal) else Principal()


def may_add_operator_hosts(request: web.Request) -> bool:
    """Whether the request may add hosts only the operator may add (see ``core/inventory``).

    True for a request with a valid operator proof, or for any caller when the
    service started with ``--allow-api-local-hosts``.
    """
    return principal(request).operator or request.app[API_SECURITY].allow_api_local_hosts


def _header_error(name: str, value: str, message: str, code: str = "InvalidHeaderValue",
                  status: int = 400) -> HpcbatchError:
    return HpcbatchError(message, code=code, status=status,
                         values={"HeaderName": name, "HeaderValue": value[:128]})


def _check_framing(request: web.Request) -> None:
    """Refuse a body without a ``Content-Length`` (chunked): the signature covers only the length."""
    if request.body_exists and request.content_length is None:
        raise HpcbatchError(
            "A request with a body must send Content-Length (chunked transfer encoding is "
            "not accepted): the SharedKey signature covers the body's length, so a body "
            "without one could ride on another request's signature.",
            code="MissingContentLengthHeader", status=411,
            values={"HeaderName": "Content-Length"})


async def _check_body(request: web.Request) -> bytes:
    """Read the body; check it against ``Content-Length`` and, when sent, ``Content-MD5``.

    Returns the body (``b""`` for none).

    Raises
    ------
    HpcbatchError
        ``400 InvalidHeaderValue`` (body shorter than ``Content-Length``, or a
        ``Content-MD5`` that is not base64 of 16 bytes); ``400 Md5Mismatch``.
    """
    md5 = request.headers.get("Content-MD5")
    if not request.body_exists and md5 is None:
        return b""
    length = request.content_length
    try:
        body = await request.read()
    except (HttpProcessingError, ConnectionError):  # ended before Content-Length bytes came
        body = None
    if body is None or (length is not None and len(body) != length):
        raise _header_error("Content-Length", str(length),
                            f"The request body is not the {length} bytes its Content-Length "
                            "says; it was refused.")
    if md5 is None:
        return body
    try:
        wanted = base64.b64decode(md5.strip(), validate=True)
    except (binascii.Error, ValueError):
        wanted = b""
    if len(wanted) != 16:
        raise _header_error("Content-MD5", md5, "The Content-MD5 header must be the base64 "
                            "of the body's 128-bit MD5 digest.")
    if not hmac.compare_digest(hashlib.md5(body, usedforsecurity=False).digest(), wanted):
        raise _header_error("Content-MD5", md5, "The MD5 value specified in the request did "
                            "not match the MD5 value calculated by the server; the request "
                            "was refused and changed nothing.", code="Md5Mismatch")
    return body


def _check_scope(request: web.Request, job_id: str) -> None:
    """Refuse a job-token request outside its job (``403 AuthorizationFailure``)."""
    info = request.match_info
    resource = info.route.resource
    route = resource.canonical if resource is not None else ""
    target = info.get("job") or info.get("jobId")
    if target is None or not route.startswith("/jobs/{") or target.lower() != job_id.lower():
        raise HpcbatchError(
            f"This request is not authorized to perform this operation: the "
            f"authentication token is scoped to job {job_id!r} (authenticationTokenSettings "
            f"access 'job') and allows only operations on that job, not {request.method} "
            f"{request.path}.", code="AuthorizationFailure", status=403,
            values={"AuthorizationErrorDetail": f"token scoped to job {job_id}"})


def _job_incarnation(request: web.Request, job_id: str) -> int | None:
    """The incarnation (``jobs.seq``) of the job now stored under ``job_id``; None: no such job."""
    store = request.app[SERVICE].ctx.store
    with store.read() as conn:
        seq = conn.execute(sa.select(jobs.c.seq).where(jobs.c.key == job_id.lower())
                           ).scalar_one_or_none()
    return None if seq is None else int(seq)


def _authenticate(request: web.Request,
                  sec: ApiSecurity) -> tuple[Principal, sharedkey.Verified | None]:
    """Check the ``Authorization`` header (SharedKey or bearer token); say who sent the request.

    A bearer token must be used on its own job, and that job must be the one it
    was minted for: a token of a deleted job, or of a job since re-created under
    the same ID, is refused like an expired one
    (:func:`~hpcbatch.batch.tokens.check_job_incarnation`).

    Returns the principal, and the verified SharedKey signature (None for a token).
    """
    auth = request.headers.get("Authorization", "")
    scheme, _, credential = auth.strip().partition(" ")
    if scheme.lower() == "bearer":
        claims = verify_job_token(credential, sec.key, sec.account)
        _check_scope(request, claims.job_id)
        check_job_incarnation(claims, _job_incarnation(request, claims.job_id))
        return Principal(job_id=claims.job_id), None
    verified = sharedkey.verify(request.method, request.raw_path, None, request.headers,
                                sec.account, sec.key,
                                max_skew=_dt.timedelta(seconds=sec.max_skew_s))
    proof = request.headers.get(OPERATOR_HEADER)
    if proof is None:
        return Principal(), verified
    if sec.operator_key is None or not verify_operator_proof(sec.operator_key, auth, proof):
        raise AuthenticationError(
            f"The {OPERATOR_HEADER} header does not match this service's operator key "
            "(operator.key in the state dir); leave it out, or sign with that key.",
            values={"AuthenticationErrorDetail": f"wrong {OPERATOR_HEADER} proof"})
    return Principal(operator=True), verified


def _check_replay(request: web.Request, sec: ApiSecurity, verified: sharedkey.Verified,
                  body: bytes) -> None:
    """Accept a request once, unless it is a read without the nonce header.

    The key is the signature and, for a request with a body, the body's
    SHA-256: a SharedKey signature does not cover the body's bytes, and the
    official SDKs sign two different bodies of one length sent to one path in
    one second identically (adding tasks in a loop), so the signature alone
    would refuse legitimate requests. A body swapped under a used signature is
    refused by ``Content-MD5`` (signed) when the client sends it. Without the
    nonce header, the key also holds the client's request ID
    (:data:`REQUEST_ID_HEADERS`): the official SDKs send a new one with every
    call but sign no per-call value, so two calls of one body-less operation on
    one resource within one second (a job schedule disabled twice) would sign
    identically. Not for the dashboard's signed routes (minting a sign-in token):
    an unsigned header must never make a captured request new. See docs/security.md.
    """
    if request.method.upper() in REPLAY_EXEMPT_METHODS and NONCE_HEADER not in request.headers:
        return
    key = verified.signature
    if body:
        key = hashlib.sha256(key + hashlib.sha256(body).digest()).digest()
    if NONCE_HEADER not in request.headers and not dashboard.owns(request):
        ids = [request.headers.get(h, "") for h in REQUEST_ID_HEADERS]
        if any(ids):
            key = hashlib.sha256(key + "\n".join(ids).encode()).digest()
    why = sec.replay.admit(key, verified.issued_at.timestamp(), time.time())
    if why is not None:
        raise AuthenticationError(
            f"The request was refused as a replay: {why}.",
            values={"AuthenticationErrorDetail": "replayed request"})


def _exempt(request: web.Request) -> bool:
    """``/health``, and the dashboard's routes that check its sessions instead of SharedKey.

    The dashboard's SharedKey-signed routes (:data:`SIGNED_ROUTES`: minting a
    sign-in token) are not exempt: they pass every check below, the replay and
    clock-skew rules included, exactly as a REST request.
    """
    if request.path == "/health":
        return True
    return dashboard.owns(request) and request.match_info.route.name not in SIGNED_ROUTES


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every request but ``/health`` and the dashboard's session routes; bind
    its body to its signature.

    In order: a body must come with ``Content-Length`` (``411
    MissingContentLengthHeader``); the ``Authorization`` header must hold a
    valid SharedKey signature (:func:`hpcbatch.batch.sharedkey.verify`) or a
    bearer job token (:func:`hpcbatch.batch.tokens.verify_job_token`) used on
    its own job (``403 AuthorizationFailure`` elsewhere); the body must be as
    long as its ``Content-Length`` and match its ``Content-MD5`` when sent
    (``400``); a SharedKey request other than a read (or any carrying
    ``ocp-hpcbatch-nonce``) is accepted once, signature and body
    (``403 AuthenticationFailed`` for a replay). The request's :class:`Principal` is then under
    :data:`PRINCIPAL`.

    Raises
    ------
    HpcbatchError
        As above; answered in Batch's error format by ``errors_middleware``.
    """
    if _exempt(request):
        # The dashboard's session routes (and only they: decided by the router, not by
        # the path's spelling) check their own sessions instead.
        return await handler(request)
    sec = request.app[API_SECURITY]
    _check_framing(request)
    who, verified = _authenticate(request, sec)
    body = await _check_body(request)
    if verified is not None:  # only a request that passed every check uses up its signature
        _check_replay(request, sec, verified, body)
    request[PRINCIPAL] = who
    if verified is not None and dashboard.owns(request):
        request[SHAREDKEY_SIGNED] = True  # what the dashboard's signed routes look for
    return await handler(request)
