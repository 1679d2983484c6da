"""SharedKey authentication of outgoing requests: the client half of the Batch
document "Authenticate requests to the Azure Batch service".

:func:`authorize` signs a request's headers (the SDK's transport uses it);
:class:`SharedKeyAuth` does the same for a :mod:`requests` session. The string
to sign and the signature are :mod:`hpcbatch.batch.sharedkey`'s. This module
imports nothing beyond the standard library (``requests`` only to measure a
streamed body).
"""

from __future__ import annotations

import secrets
from collections.abc import MutableMapping
from email.utils import formatdate
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from hpcbatch.batch.replay import NONCE_HEADER
from hpcbatch.batch.sharedkey import sign

if TYPE_CHECKING:
    import requests

__all__ = ["SharedKeyAuth", "authorize", "content_length"]

_NO_BODY_METHODS = ("GET", "HEAD")


def content_length(method: str, body_length: int | None) -> str | None:
    """The ``Content-Length`` a Batch client sends (and signs) for a body of ``body_length`` bytes.

    As the official SDKs do: the byte count; ``"0"`` for a request without a
    body other than GET and HEAD (Storage's "empty when zero" rule is not
    Batch's); no header (None) for a GET or HEAD without a body.

    Parameters
    ----------
    method
        HTTP verb, any case.
    body_length
        The body's size in bytes; None when there is no body.

    Returns
    -------
    str or None
        The header's value, or None when the header is not sent.
    """
    if method.upper() in _NO_BODY_METHODS and not body_length:
        return None
    return str(body_length or 0)


def authorize(method: str, url: str, headers: MutableMapping[str, str], account: str,
              key_b64: str, *, nonce: bool = False) -> None:
    """Sign a request in place: set ``ocp-date`` (unless present) and ``Authorization``.

    ``headers`` must already hold every header that will be sent, the
    ``Content-Length`` among them (see :func:`content_length`). With
    ``nonce``, ``ocp-hpcbatch-nonce`` (16 random bytes, signed like every
    ``ocp-`` header; new on every call) makes the signature unique, so the
    service's replay check never refuses a legitimate repeat sent in the same
    second, and makes the request one-time even when it is a read (see
    docs/security.md).

    Parameters
    ----------
    method
        HTTP verb.
    url
        The request URL (absolute, or a path with its query), percent-encoded as sent.
    headers
        The request headers; changed in place.
    account
        Batch account name.
    key_b64
        Account key, base64.
    nonce
        Add a new signed nonce header (what :class:`hpcbatch.BatchClient` does).

    Raises
    ------
    ValueError
        ``key_b64`` is not base64.
    """
    if not headers.get("ocp-date"):
        headers["ocp-date"] = formatdate(usegmt=True)
    if nonce:
        headers[NONCE_HEADER] = secrets.token_hex(16)
    parts = urlsplit(url or "/")
    headers["Authorization"] = sign(method.upper(), parts.path or "/", parts.query, headers,
                                    account, key_b64)


class SharedKeyAuth:
    """Sign :mod:`requests` requests with Batch SharedKey authentication.

    A ``requests`` auth callable (``session.auth = SharedKeyAuth(...)``), as
    azure-batch 14.x's ``SharedKeyAuth`` does it: sets ``ocp-date`` (RFC 1123,
    UTC) unless present, sends a text body as UTF-8 and makes sure
    ``Content-Length`` is the body's byte count, then sets ``Authorization:
    SharedKey {account}:{signature}``. It is a plain callable rather than a
    ``requests.auth.AuthBase`` (which ``requests`` does not require), so that
    importing it does not import ``requests``.

    Parameters
    ----------
    account, key_b64
        As for :func:`authorize`; a key that is not base64 raises ``ValueError``.

    Examples
    --------
    >>> session = requests.Session()                   # doctest: +SKIP
    >>> session.auth = SharedKeyAuth("hpcbatch", key)  # doctest: +SKIP
    """

    def __init__(self, account: str, key_b64: str) -> None:
        sign("GET", "/", None, {}, account, key_b64)  # fail early on a bad key
        self.account = account
        self._key_b64 = key_b64

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        headers = request.headers
        method = (request.method or "GET").upper()
        if isinstance(request.body, str):
            # send the bytes that were counted (http.client would use Latin-1)
            request.body = request.body.encode("utf-8")
        if "Transfer-Encoding" not in headers:
            length = _body_length(request.body)
            if length is not None or request.body is None:
                value = content_length(method, length)
                if value is not None:
                    headers["Content-Length"] = value
        authorize(method, request.url or "/", cast("MutableMapping[str, str]", headers),
                  self.account, self._key_b64)
        return request

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SharedKeyAuth)
            and other.account == self.account
            and other._key_b64 == self._key_b64
        )

    def __hash__(self) -> int:
        return hash((SharedKeyAuth, self.account))

    def __repr__(self) -> str:  # never show the key
        return f"SharedKeyAuth(account={self.account!r})"


def _body_length(body: object) -> int | None:
    """Byte length of a prepared body; ``None`` when unknown or absent."""
    if body is None:
        return None
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    from requests.utils import super_len

    length = super_len(body)
    return length or None
