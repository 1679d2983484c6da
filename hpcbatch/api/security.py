"""Secrets and certificates the hpcbatch service makes at its first start.

* The Batch account name and SharedKey, kept in ``{state_dir}/account.json``
  (mode 0600); clients sign with them as in the Batch document "Authenticate
  requests to the Azure Batch service" (see :mod:`hpcbatch.batch.sharedkey`).
* A private certificate authority and one certificate signed by it, under
  ``{state_dir}/tls/``. The Dask scheduler, the workers and the service's own
  Dask client all present that certificate and trust only that CA: mutual TLS,
  so nothing without the state dir's key can join or command the cluster.

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
import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hpcbatch.api.http import Handler
from hpcbatch.batch import sharedkey
from hpcbatch.batch.errors import AuthenticationError, HpcbatchError
from hpcbatch.batch.replay import NONCE_HEADER, ReplayCache
from hpcbatch.batch.sharedkey import decode_key, generate_account_key
from hpcbatch.batch.statedir import ACCOUNT_FILE, OPERATOR_KEY_FILE
from hpcbatch.batch.tokens import (
    OPERATOR_HEADER,
    verify_job_token,
    verify_operator_proof,
)
from hpcbatch.execution.tls import TlsFiles

if TYPE_CHECKING:
    pass

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

TLS_DIR = "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CERT = "cert.pem"
KEY = "key.pem"

#: Names every certificate carries besides the caller's hostnames.
DEFAULT_SANS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1", "hpcbatch")

_VALIDITY = _dt.timedelta(days=3650)
_RENEW_BEFORE = _dt.timedelta(days=30)
_BACKDATE = _dt.timedelta(hours=1)  # tolerate clocks a little behind across hosts


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
# files
# --------------------------------------------------------------------------


def _private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or tighten it to 0700 if others may enter it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def _tighten(path: Path, mode: int = 0o600) -> None:
    if stat.S_IMODE(path.stat().st_mode) & ~mode & 0o777:
        os.chmod(path, mode)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` atomically into a new file created with ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # in case the umask took bits away we wanted (e.g. 0644 certs)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
    state_dir = _private_dir(Path(state_dir))
    path = state_dir / ACCOUNT_FILE
    with _locked(state_dir):
        if not path.exists():
            if not account or any(c in account for c in ": \t\r\n"):
                raise ValueError(f"invalid Batch account name {account!r}")
            doc = {"account_name": account, "key": generate_account_key()}
            _write_private(path, (json.dumps(doc, indent=2) + "\n").encode())
        _tighten(path)
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
# TLS
# --------------------------------------------------------------------------


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = _normal(raw)
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _san_strings(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {n.lower() for n in ext.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return names


def _normal(name: str) -> str:
    name = name.strip().lower().strip("[]")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpcbatch"),
            # unique per CA, so chains never mix up two clusters' CAs
            x509.NameAttribute(NameOID.COMMON_NAME, f"hpcbatch CA {secrets.token_hex(4)}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, sans: Sequence[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _dt.datetime.now(_dt.timezone.utc)
    not_after = min(now + _VALIDITY, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpcbatch"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "hpcbatch"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_san_entries(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, object] | None:
    """Load a certificate and its key; ``None`` if missing, unreadable or not a pair."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if cert.public_key() != key.public_key():
        return None
    return cert, key


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def ensure_tls(state_dir: Path, hostnames: Sequence[str] = ()) -> TlsFiles:
    """Create or reuse the cluster's private CA and its one certificate.

    Under ``state_dir/tls/`` (mode 0700): ``ca.pem`` / ``ca-key.pem`` (an EC
    P-256 CA valid 10 years) and ``cert.pem`` / ``key.pem`` (EC P-256, signed by
    that CA, for both server and client authentication). Key files are 0600.

    The certificate's subject alternative names are ``localhost``,
    ``127.0.0.1``, ``::1``, ``hpcbatch`` and ``hostnames`` (DNS names or IP
    addresses). Existing files are reused; the certificate alone is re-issued
    from the same CA (keeping its old names) when a requested name is missing,
    when it expires within 30 days, or when it does not match the CA or its key.
    A missing or unreadable CA makes a new CA and certificate.

    Parameters
    ----------
    state_dir
        The service's state directory.
    hostnames
        Further DNS names / IP addresses the scheduler is reached by.

    Returns
    -------
    TlsFiles
    """
    tls_dir = _private_dir(_private_dir(Path(state_dir)) / TLS_DIR)
    files = TlsFiles(ca_file=tls_dir / CA_CERT, cert_file=tls_dir / CERT, key_file=tls_dir / KEY)
    ca_key_file = tls_dir / CA_KEY
    wanted = {_normal(n) for n in (*DEFAULT_SANS, *hostnames) if n.strip()}
    with _locked(tls_dir):
        ca = _load_pair(files.ca_file, ca_key_file)
        if ca is None:
            ca_cert, ca_key = _make_ca()
            _write_private(ca_key_file, _key_pem(ca_key))
            _write_private(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
            leaf = None
        else:
            ca_cert, ca_key = ca  # type: ignore[assignment]
            leaf = _load_pair(files.cert_file, files.key_file)

        reissue = leaf is None
        if leaf is not None:
            cert = leaf[0]
            have = _san_strings(cert)
            soon = _dt.datetime.now(_dt.timezone.utc) + _RENEW_BEFORE
            reissue = (
                not wanted <= have
                or cert.not_valid_after_utc < soon
                or not _issued_by(cert, ca_cert)
            )
            wanted |= have
        if reissue:
            ordered = [*DEFAULT_SANS, *hostnames, *sorted(wanted)]
            cert, key = _make_leaf(ca_cert, ca_key, ordered)
            _write_private(files.key_file, _key_pem(key))
            _write_private(files.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        for private in (ca_key_file, files.key_file):
            _tighten(private)
    return files


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
    state_dir = _private_dir(Path(state_dir))
    path = state_dir / OPERATOR_KEY_FILE
    with _locked(state_dir):
        if not path.exists():
            _write_private(path, (generate_account_key() + "\n").encode())
        _tighten(path)
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


def _authenticate(request: web.Request,
                  sec: ApiSecurity) -> tuple[Principal, sharedkey.Verified | None]:
    """Check the ``Authorization`` header (SharedKey or bearer token); say who sent the request.

    Returns the principal, and the verified SharedKey signature (None for a token).
    """
    auth = request.headers.get("Authorization", "")
    scheme, _, credential = auth.strip().partition(" ")
    if scheme.lower() == "bearer":
        claims = verify_job_token(credential, sec.key, sec.account)
        _check_scope(request, claims.job_id)
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
    refused by ``Content-MD5`` (signed) when the client sends it; see
    docs/security.md.
    """
    if request.method.upper() in REPLAY_EXEMPT_METHODS and NONCE_HEADER not in request.headers:
        return
    key = verified.signature
    if body:
        key = hashlib.sha256(key + hashlib.sha256(body).digest()).digest()
    why = sec.replay.admit(key, verified.issued_at.timestamp(), time.time())
    if why is not None:
        raise AuthenticationError(
            f"The request was refused as a replay: {why}.",
            values={"AuthenticationErrorDetail": "replayed request"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every request but ``/health``; bind its body to its signature.

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
    if request.path == "/health":
        return await handler(request)
    sec = request.app[API_SECURITY]
    _check_framing(request)
    who, verified = _authenticate(request, sec)
    body = await _check_body(request)
    if verified is not None:  # only a request that passed every check uses up its signature
        _check_replay(request, sec, verified, body)
    request[PRINCIPAL] = who
    return await handler(request)
