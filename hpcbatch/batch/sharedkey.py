"""SharedKey authentication, as in the Batch document "Authenticate requests to
the Azure Batch service".

A Batch client signs each request with the account key::

    Authorization: SharedKey {account}:{base64(HMAC-SHA256(base64decode(key), UTF-8 StringToSign))}

and the service recomputes the signature from what it received (:func:`verify`).
This module is pure (no HTTP library); :mod:`hpcbatch.client.auth` signs
outgoing requests with it. The string to sign is::

    VERB\\n
    Content-Encoding\\n Content-Language\\n Content-Length\\n Content-MD5\\n
    Content-Type\\n Date\\n If-Modified-Since\\n If-Match\\n If-None-Match\\n
    If-Unmodified-Since\\n Range\\n
    CanonicalizedHeaders        every ``ocp-*`` header: ``name:value\\n``
    CanonicalizedResource       ``/{account}{path}`` + ``\\n{name}:{value}`` per query parameter

The details below were checked against the signing code of the official SDKs
(Python ``azure-batch`` 14.2.0 ``batch_auth.SharedKeyAuth`` and 15.x
``_patch.BatchSharedKeyAuthPolicy``; .NET ``BatchSharedKeyCredential``; Java
``BatchSharedKeyCredentialsPolicy``; JavaScript ``BatchSharedKeyCredentials``):

* ``Content-Length`` is the header's value as sent, ``""`` only when the header
  is absent. Every SDK signs ``"0"`` for an empty POST (Storage's "empty when
  zero" rule is *not* Batch's); :func:`verify` accepts ``""`` and ``"0"`` alike
  for an empty body.
* ``Date`` is signed empty when ``ocp-date`` is present (the document's rule;
  the SDKs set ``ocp-date`` and no ``Date``).
* Canonicalized headers: names starting with ``ocp-`` (any case), lower-cased,
  sorted; each CR and LF in a value becomes a space (as the .NET and Java SDKs
  do), values are trimmed; headers with
  an empty value are left out (as the Python and JavaScript SDKs do).
* The path is the percent-encoded path as sent on the wire (no decoding).
* Query parameter names are lower-cased and sorted, values URL-decoded
  (``+`` is a space), repeated names joined by ``,`` in order of appearance
  (.NET ``ParseQueryString``). The Python SDK keeps the name's case and leaves
  out empty values; :func:`verify` also accepts that form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

from hpcbatch.batch.errors import AuthenticationError

__all__ = [
    "SIGNED_HEADERS",
    "Verified",
    "generate_account_key",
    "sign",
    "string_to_sign",
    "verify",
]

#: The standard headers whose values (not names) are signed, in signing order.
SIGNED_HEADERS: tuple[str, ...] = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)

Query = Mapping[str, object] | Sequence[tuple[str, str]] | str | None

_AUTH_FAILED = (
    "Server failed to authenticate the request. Make sure the value of "
    "Authorization header is formed correctly including the signature."
)


# --------------------------------------------------------------------------
# canonicalization
# --------------------------------------------------------------------------


def _lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Lower-case header names; the first value of a repeated header wins."""
    out: dict[str, str] = {}
    if headers is None:
        return out
    for name, value in headers.items():
        out.setdefault(str(name).lower(), "" if value is None else str(value))
    return out


def _query_pairs(query: Query) -> list[tuple[str, str]]:
    """Decoded ``(name, value)`` pairs, in order, from any accepted query form."""
    if query is None:
        return []
    if isinstance(query, str):
        return parse_qsl(query.lstrip("?"), keep_blank_values=True)
    items: Iterable[tuple[str, object]] = query.items() if isinstance(query, Mapping) else query
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        if isinstance(value, (list, tuple)):
            pairs.extend((str(name), "" if v is None else str(v)) for v in value)
        else:
            pairs.append((str(name), "" if value is None else str(value)))
    return pairs


def _split_path(path: str, query: Query) -> tuple[str, list[tuple[str, str]]]:
    """Split a ``raw_path`` that still carries ``?query``; ensure a leading ``/``."""
    pairs = _query_pairs(query)
    if "?" in path:
        path, _, raw_query = path.partition("?")
        pairs = parse_qsl(raw_query, keep_blank_values=True) + pairs
    if not path.startswith("/"):
        path = "/" + path
    return path, pairs


def _canonical_headers(h: Mapping[str, str]) -> str:
    lines = []
    for name in sorted(n for n in h if n.startswith("ocp-")):
        value = h[name].replace("\r", " ").replace("\n", " ").strip()
        if value:
            lines.append(f"{name}:{value}\n")
    return "".join(lines)


def _canonical_query(pairs: Sequence[tuple[str, str]], style: str) -> str:
    if style == "python-sdk":
        # azure-batch 14.x/15.x: parse_qs(url.query) -> first value, empty
        # values dropped, names as sent, sorted case-sensitively.
        first: dict[str, str] = {}
        for name, value in pairs:
            first.setdefault(name, value)
        return "".join(f"\n{n}:{first[n]}" for n in sorted(first) if first[n])
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return "".join(f"\n{n}:{','.join(grouped[n])}" for n in sorted(grouped))


def _build(
    method: str,
    path: str,
    pairs: Sequence[tuple[str, str]],
    h: Mapping[str, str],
    account: str,
    *,
    content_length: str,
    date: str,
    query_style: str = "batch",
) -> str:
    values = []
    for name in SIGNED_HEADERS:
        if name == "content-length":
            values.append(content_length)
        elif name == "date":
            values.append(date)
        else:
            values.append(h.get(name, ""))
    return (
        method.upper()
        + "\n"
        + "\n".join(values)
        + "\n"
        + _canonical_headers(h)
        + f"/{account}{path}"
        + _canonical_query(pairs, query_style)
    )


def _canonical_date(h: Mapping[str, str]) -> str:
    return "" if h.get("ocp-date") else h.get("date", "")


def string_to_sign(
    method: str,
    path: str,
    query: Query,
    headers: Mapping[str, str],
    account: str,
) -> str:
    """Build the SharedKey string to sign for one request.

    Follows "Authenticate requests to the Azure Batch service" (Batch REST API)
    as the official SDKs implement it; see the module docstring for each rule.

    Parameters
    ----------
    method
        HTTP verb; upper-cased.
    path
        URL path as sent, percent-encoded, without the query (a ``?query``
        suffix, as in aiohttp's ``request.raw_path``, is split off and parsed).
    query
        Query parameters, already URL-decoded: a mapping (a multi-dict such as
        aiohttp's ``request.query`` gives every repeated value; list values are
        expanded), a sequence of ``(name, value)`` pairs, or a raw query string
        (decoded here). ``None`` for none.
    headers
        Request headers (any case). ``Authorization`` is ignored.
    account
        Batch account name, as the client puts it in the Authorization header.

    Returns
    -------
    str
        The exact text whose UTF-8 bytes are HMAC-SHA256-signed.
    """
    h = _lower_headers(headers)
    path, pairs = _split_path(path, query)
    return _build(
        method,
        path,
        pairs,
        h,
        account,
        content_length=h.get("content-length", ""),
        date=_canonical_date(h),
    )


def decode_key(key_b64: str) -> bytes:
    """Decode a base64 account key to its bytes.

    Raises
    ------
    ValueError
        The key is not valid base64, or is empty.
    """
    try:
        key = base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the Batch account key is not valid base64") from exc
    if not key:
        raise ValueError("the Batch account key is empty")
    return key


def _mac(key: bytes, text: str) -> bytes:
    # surrogateescape: a header the server decoded from bytes that are not UTF-8 (aiohttp
    # keeps them as surrogates) is signed as the bytes received; such a request then fails
    # verification (403) instead of the encoding (500).
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


def sign(
    method: str,
    path: str,
    query: Query,
    headers: Mapping[str, str],
    account: str,
    key_b64: str,
) -> str:
    """Return the ``Authorization`` header value for a request.

    As in "Authenticate requests to the Azure Batch service": the value is
    ``SharedKey {account}:{base64(HMAC-SHA256(base64decode(key), StringToSign))}``.

    Parameters
    ----------
    method, path, query, headers, account
        As for :func:`string_to_sign`. ``headers`` must already hold
        ``ocp-date`` (or ``Date``) and the ``Content-Length`` that will be sent.
    key_b64
        The account key, base64 as Batch shows it.

    Returns
    -------
    str
        ``"SharedKey {account}:{signature}"``.

    Raises
    ------
    ValueError
        ``key_b64`` is not base64.
    """
    text = string_to_sign(method, path, query, headers, account)
    signature = base64.b64encode(_mac(decode_key(key_b64), text)).decode("ascii")
    return f"SharedKey {account}:{signature}"


# --------------------------------------------------------------------------
# verification (service side)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A request whose SharedKey signature :func:`verify` accepted.

    Attributes
    ----------
    signature
        The signature's bytes (HMAC-SHA256, 32 bytes).
    issued_at
        The request's date (``ocp-date``, else ``Date``), aware.
    """

    signature: bytes
    issued_at: datetime


def _request_time(h: Mapping[str, str]) -> datetime:
    raw = h.get("ocp-date") or h.get("date")
    if not raw:
        raise AuthenticationError(
            "The request has neither an ocp-date nor a Date header; SharedKey "
            "requests must carry their UTC creation time in RFC 1123 form.",
            values={"AuthenticationErrorDetail": "ocp-date or Date header is missing"},
        )
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        raise AuthenticationError(
            f"The request date {raw!r} is not an RFC 1123 date "
            "(for example 'Tue, 04 Nov 2025 10:20:30 GMT').",
            values={"AuthenticationErrorDetail": f"unparsable date {raw!r}"},
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _candidates(
    method: str,
    path: str,
    pairs: Sequence[tuple[str, str]],
    h: Mapping[str, str],
    account_names: Iterable[str],
) -> Iterator[str]:
    """Every string to sign a conforming client may have signed.

    The canonical form comes first. The variants only differ where the Batch
    document and the official SDKs disagree on the form of the same request
    data (an empty body's Content-Length, ``Date`` beside ``ocp-date``, the
    Python SDK's query form, the Java SDK's lower-cased account name).
    """
    sent_length = h.get("content-length", "")
    lengths = [sent_length]
    if sent_length in ("", "0"):
        lengths += ["0", ""]
    dates = [_canonical_date(h)]
    if h.get("ocp-date") and h.get("date"):
        dates.append(h["date"])  # Python SDK signs a Date header even beside ocp-date
    styles = ["batch"]
    if len({n for n, _ in pairs}) == len(pairs):  # no repeated names: first value == only value
        styles.append("python-sdk")
    seen: set[str] = set()
    for name, length, date, style in itertools.product(account_names, lengths, dates, styles):
        text = _build(method, path, pairs, h, name, content_length=length, date=date, query_style=style)
        if text not in seen:
            seen.add(text)
            yield text


def verify(
    method: str,
    path: str,
    query: Query,
    headers: Mapping[str, str],
    account: str,
    key_b64: str,
    *,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> Verified:
    """Check a request's SharedKey ``Authorization`` header, as the Batch service does.

    Implements the service side of "Authenticate requests to the Azure Batch
    service": the header must be ``SharedKey {account}:{signature}`` for this
    account, the request's ``ocp-date`` (or, without it, ``Date``) must lie
    within ``max_skew`` of ``now``, and the signature must equal the HMAC of the
    string to sign (compared with :func:`hmac.compare_digest`).

    Parameters
    ----------
    method, path, query, headers
        The request as received; see :func:`string_to_sign`. ``path`` must be
        the percent-encoded path as sent (aiohttp: ``request.raw_path``, which
        may keep its ``?query``; then pass ``query=None``).
    account
        This service's account name (compared case-insensitively, as Batch
        account names are lower case).
    key_b64
        This account's key, base64.
    now
        Current time (aware; naive means UTC). Defaults to the clock.
    max_skew
        Largest accepted distance between the request date and ``now``, either
        way. Batch allows 15 minutes.

    Returns
    -------
    Verified
        The signature's bytes and the request date, for a replay check
        (:mod:`hpcbatch.batch.replay`).

    Raises
    ------
    AuthenticationError
        ``AuthenticationFailed`` (HTTP 403): header missing or malformed,
        another account, date missing, unparsable or out of the window, or
        signature mismatch. ``values["AuthenticationErrorDetail"]`` says which;
        on a mismatch it holds the string the service signed, as Batch does.
    ValueError
        ``key_b64`` (the service's own key) is not base64.
    """
    h = _lower_headers(headers)
    header = h.get("authorization", "").strip()
    if not header:
        raise AuthenticationError(
            "The request has no Authorization header; expected "
            f"'SharedKey {account}:<signature>'.",
            values={"AuthenticationErrorDetail": "Authorization header is missing"},
        )
    scheme, _, credential = header.partition(" ")
    claimed, sep, signature = credential.strip().rpartition(":")
    if scheme.lower() != "sharedkey" or not sep or not claimed or not signature:
        raise AuthenticationError(
            "The Authorization header is malformed; expected "
            f"'SharedKey {account}:<base64 signature>', got scheme {scheme!r}.",
            values={"AuthenticationErrorDetail": "Authorization header is not 'SharedKey account:signature'"},
        )
    if claimed.lower() != account.lower():
        raise AuthenticationError(
            f"The Authorization header names account {claimed!r}, but this "
            f"service is account {account!r}.",
            values={"AuthenticationErrorDetail": f"unknown account {claimed!r}"},
        )
    try:
        provided = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationError(
            "The signature in the Authorization header is not base64.",
            values={"AuthenticationErrorDetail": "signature is not base64"},
        ) from None

    created = _request_time(h)
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    skew = abs(current - created)
    if skew > max_skew:
        raise AuthenticationError(
            f"The request date {created:%a, %d %b %Y %H:%M:%S} GMT is "
            f"{int(skew.total_seconds())} s away from the service's clock; "
            f"Batch accepts at most {int(max_skew.total_seconds())} s. "
            "Check the client's clock.",
            values={"AuthenticationErrorDetail": "request date outside the allowed time window"},
        )

    key = decode_key(key_b64)
    path, pairs = _split_path(path, query)
    names = dict.fromkeys([claimed, claimed.lower(), account])
    canonical = None
    for text in _candidates(method, path, pairs, h, names):
        canonical = canonical if canonical is not None else text
        if hmac.compare_digest(_mac(key, text), provided):
            return Verified(provided, created)
    raise AuthenticationError(
        _AUTH_FAILED,
        values={
            "AuthenticationErrorDetail": (
                f"The MAC signature found in the HTTP request '{signature}' is not "
                "the same as any computed signature. Server used following string "
                f"to sign: '{canonical}'."
            )
        },
    )


def generate_account_key() -> str:
    """Return a new account key: 64 random bytes, base64 (as Batch's keys are).

    Returns
    -------
    str
        88 base64 characters.
    """
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")
