"""Credentials derived from the service's secrets: job-scoped tokens and the operator's proof.

Pure (standard library only, no I/O); the service mints and checks, the
clients present.

**Job tokens** implement Batch's ``authenticationTokenSettings`` (REST API
``AuthenticationTokenSettings``, ``access: ["job"]``): a task that asks for
it gets ``AZ_BATCH_AUTHENTICATION_TOKEN``, which authenticates REST requests
as ``Authorization: Bearer <token>`` and allows every operation on the task's
own job (its tasks, their files, terminate it) and nothing else. Format::

    hbt2.<base64url(JSON claims)>.<base64url(HMAC-SHA256(token key, "hbt2." + claims part))>

with claims ``{"acct": account, "job": job id, "seq": the job's incarnation,
"access": ["job"], "exp": unix seconds, "jti": random}``. The incarnation is
the job's creation sequence number (``jobs.seq``, new for every job created,
also one re-created under a deleted job's ID): the service accepts a token only
while that very job exists (:func:`check_job_incarnation`), so a token does not
outlive its job. ``hbt1.`` tokens (no ``seq``) are refused.

The token key is derived from the account key
(HMAC-SHA256 of a fixed label), so regenerating the account key revokes every
token, and no further secret file is kept. Holding the account key already
allows everything a token allows, so the derivation gives an API caller
nothing new.

**The operator's proof** marks a request as the operator's (the person on
the service machine): ``hpcbatch-operator: base64(HMAC-SHA256(operator key,
"hpcbatch-operator\\n" + SharedKey signature bytes))``. The operator key lives
only in the state dir (``operator.key``, mode 0600); the proof is bound to
one signed request (its signature covers the verb, path, date, body length
and ``Content-MD5``) and so cannot be moved to another request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hpcbatch.batch.errors import AuthenticationError
from hpcbatch.batch.sharedkey import decode_key

__all__ = [
    "ACCESS_SCOPES",
    "CA_PEM_ENV",
    "OPERATOR_HEADER",
    "TOKEN_ENV",
    "TokenClaims",
    "check_job_incarnation",
    "issue_job_token",
    "operator_proof",
    "verify_job_token",
    "verify_operator_proof",
]

ACCESS_SCOPES: tuple[str, ...] = ("job",)
"""Batch's ``AccessScope`` values: ``job`` grants every operation on the task's job."""

TOKEN_ENV = "AZ_BATCH_AUTHENTICATION_TOKEN"
"""The variable a task with ``authenticationTokenSettings`` finds its token in (Batch's name)."""

CA_PEM_ENV = "HPCBATCH_CA_PEM"
"""The variable holding the service's CA certificate (PEM) for a task with a token, when the
service serves HTTPS: the task's client trusts it (a public certificate, not a secret)."""

OPERATOR_HEADER = "hpcbatch-operator"
"""The request header carrying :func:`operator_proof` (not ``ocp-``: it is not itself signed)."""

_PREFIX = "hbt2"
_OLD_PREFIXES = frozenset({"hbt1"})
_TOKEN_LABEL = b"hpcbatch job token key v1"
_OPERATOR_LABEL = b"hpcbatch-operator\n"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_key(account_key_b64: str) -> bytes:
    return hmac.new(decode_key(account_key_b64), _TOKEN_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class TokenClaims:
    """What a verified job token grants.

    Attributes
    ----------
    account
        The account the token was issued for.
    job_id
        The job it is scoped to (Batch IDs compare case-insensitively).
    job_seq
        That job's incarnation: its creation sequence number (``jobs.seq``),
        which a job re-created under the same ID does not share.
    access
        Its access scopes (``("job",)``).
    expires_at
        When it stops being accepted (aware, UTC).
    """

    account: str
    job_id: str
    job_seq: int
    access: tuple[str, ...]
    expires_at: datetime

    def allows_job(self, job_id: str) -> bool:
        """Whether the token may operate on job ``job_id`` (``job`` scope, same ID ignoring case)."""
        return "job" in self.access and job_id.lower() == self.job_id.lower()


def issue_job_token(account_key_b64: str, account: str, job_id: str,
                    access: Sequence[str], expires_at: datetime, *, job_seq: int) -> str:
    """Mint a token for ``authenticationTokenSettings`` (``AZ_BATCH_AUTHENTICATION_TOKEN``).

    Parameters
    ----------
    account_key_b64
        The service's account key (base64); the token key is derived from it.
    account
        The account name.
    job_id
        The job the token is scoped to.
    access
        Access scopes, each one of :data:`ACCESS_SCOPES`.
    expires_at
        Expiry (aware; naive means UTC); whole seconds.
    job_seq
        The job's incarnation (its ``jobs.seq``): the token is accepted only while
        the job with this ID is that incarnation (:func:`check_job_incarnation`).

    Returns
    -------
    str
        ``hbt2.<claims>.<mac>``, URL-safe, no padding.

    Raises
    ------
    ValueError
        An unknown scope, or a key that is not base64.
    """
    unknown = sorted(set(access) - set(ACCESS_SCOPES))
    if unknown:
        raise ValueError(f"unknown access scope(s) {unknown}; allowed: {list(ACCESS_SCOPES)}")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    claims = {"acct": account, "job": job_id, "seq": int(job_seq), "access": sorted(set(access)),
              "exp": int(expires_at.timestamp()), "jti": secrets.token_hex(8)}
    body = f"{_PREFIX}.{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    mac = hmac.new(_token_key(account_key_b64), body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64url(mac)}"


def _refuse(detail: str) -> AuthenticationError:
    return AuthenticationError(
        f"The bearer token is not valid: {detail}. Tokens come from a task's "
        "authenticationTokenSettings (AZ_BATCH_AUTHENTICATION_TOKEN).",
        values={"AuthenticationErrorDetail": detail})


def verify_job_token(token: str, account_key_b64: str, account: str, *,
                     now: datetime | None = None) -> TokenClaims:
    """Check a bearer token's MAC, account and expiry; return its claims.

    Parameters
    ----------
    token
        The text after ``Bearer``.
    account_key_b64
        The service's account key (base64).
    account
        The service's account name (compared case-insensitively).
    now
        Current time (aware; naive means UTC); default the clock.

    Returns
    -------
    TokenClaims

    Raises
    ------
    AuthenticationError
        ``403 AuthenticationFailed``: malformed, forged, another account's, or expired.
    """
    prefix, _, rest = token.strip().partition(".")
    claims_part, _, mac_part = rest.partition(".")
    if prefix in _OLD_PREFIXES:
        raise _refuse(f"it is an {prefix} token, which names its job by ID only and is no "
                      "longer accepted (a new run of the task gets a new one)")
    if prefix != _PREFIX or not claims_part or not mac_part:
        raise _refuse("it is not an hpcbatch job token")
    body = f"{_PREFIX}.{claims_part}"
    try:
        given = _unb64url(mac_part)
        claims = json.loads(_unb64url(claims_part))
    except (binascii.Error, ValueError):
        raise _refuse("it is not an hpcbatch job token") from None
    wanted = hmac.new(_token_key(account_key_b64), body.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(wanted, given):
        raise _refuse("its signature does not match this service's key")
    try:
        acct, job_id, access = str(claims["acct"]), str(claims["job"]), tuple(claims["access"])
        job_seq = claims["seq"]
        if not isinstance(job_seq, int) or isinstance(job_seq, bool):
            raise TypeError("seq is not an integer")
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (KeyError, TypeError, ValueError):
        raise _refuse("its claims are incomplete") from None
    if acct.lower() != account.lower():
        raise _refuse(f"it was issued for account {acct!r}, not {account!r}")
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    if current >= expires_at:
        raise _refuse(f"it expired at {expires_at:%Y-%m-%dT%H:%M:%SZ}")
    return TokenClaims(acct, job_id, job_seq, access, expires_at)


def check_job_incarnation(claims: TokenClaims, current_seq: int | None) -> None:
    """Refuse a token whose job is gone: deleted, or deleted and re-created under its ID.

    Parameters
    ----------
    claims
        A verified token's claims (:func:`verify_job_token`).
    current_seq
        The incarnation (``jobs.seq``) of the job now stored under ``claims.job_id``;
        None when there is none.

    Raises
    ------
    AuthenticationError
        ``403 AuthenticationFailed``, as for an expired token.
    """
    if current_seq is None:
        raise _refuse(f"its job {claims.job_id!r} no longer exists")
    if current_seq != claims.job_seq:
        raise _refuse(f"its job {claims.job_id!r} was deleted; the job now under that ID "
                      "is another one")


def operator_proof(operator_key_b64: str, authorization: str) -> str:
    """The :data:`OPERATOR_HEADER` value for a request signed with ``authorization``.

    Parameters
    ----------
    operator_key_b64
        The operator key (base64) from the state dir's ``operator.key``.
    authorization
        The request's ``Authorization`` value, ``SharedKey {account}:{signature}``.

    Returns
    -------
    str
        base64 of HMAC-SHA256(operator key, ``"hpcbatch-operator\\n"`` + signature bytes).

    Raises
    ------
    ValueError
        The key is not base64, or ``authorization`` holds no base64 SharedKey signature.
    """
    signature = authorization.rpartition(":")[2].strip()
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Authorization header holds no base64 SharedKey signature") from None
    mac = hmac.new(decode_key(operator_key_b64), _OPERATOR_LABEL + sig, hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def verify_operator_proof(operator_key_b64: str, authorization: str, proof: str) -> bool:
    """Whether ``proof`` is :func:`operator_proof` of ``authorization`` (constant time).

    Parameters
    ----------
    operator_key_b64, authorization
        As for :func:`operator_proof`; ``authorization`` already verified.
    proof
        The :data:`OPERATOR_HEADER` value received.

    Returns
    -------
    bool
    """
    try:
        wanted = operator_proof(operator_key_b64, authorization)
    except ValueError:
        return False
    return hmac.compare_digest(wanted.encode("ascii"), proof.strip().encode("ascii", "replace"))
