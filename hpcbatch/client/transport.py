"""The SDK's HTTP transport: HTTP/1.1 with kept-alive connections, on :mod:`http.client`.

The standard library's client rather than ``requests``: importing ``requests``
(with ``urllib3``, ``charset_normalizer`` and ``certifi``) takes about 100 ms,
more than everything else a CLI command does against a local service. What
the SDK needs of HTTP is small: one request at a time per connection, bodies
read whole, connections reused across requests and threads.

Connections are kept per ``(scheme, host, port)`` and reused; one found closed
by the server while idle is replaced before use, and an idempotent request
whose reused connection turns out to be closed is sent once more on a new
one (its headers made anew, so a signature is never sent twice). HTTPS uses
:func:`ssl.create_default_context`: the system's CAs, or only the CA file given
(an hpcbatch service's own CA, ``{state_dir}/tls/ca.pem``).
Proxy variables (``HTTP_PROXY`` ...) are not used: the client connects to the
endpoint directly.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Response", "Transport"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_Key = tuple[str, str, int]


class Response:
    """An HTTP response, its body read whole.

    Attributes
    ----------
    status
        HTTP status code.
    reason
        HTTP reason phrase.
    headers
        Response headers (case-insensitive lookup).
    content
        The body.
    """

    __slots__ = ("content", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage,
                 content: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        """The body as text (UTF-8; undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises
        ------
        ValueError
            The body is not JSON.
        """
        return json.loads(self.content)


class Transport:
    """Send HTTP requests over reused connections; safe to use from several threads.

    Parameters
    ----------
    timeout_s
        Seconds to wait to connect, and for each read of the response.
    max_idle
        Idle connections kept per ``(scheme, host, port)``.
    ca_file, ca_pem
        PEM file, or PEM text, of the CAs that HTTPS servers must chain to; both
        None: the system's.
    """

    def __init__(self, timeout_s: float, max_idle: int = 16,
                 ca_file: str | None = None, ca_pem: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self.ca_file = ca_file
        self.ca_pem = ca_pem
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl_context: Any = None

    def request(self, method: str, url: str,
                headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
                body: bytes | None = None) -> Response:
        """Send one request and read its whole response.

        Parameters
        ----------
        method
            HTTP verb.
        url
            Absolute ``http://`` or ``https://`` URL, percent-encoded, with its query.
        headers
            Headers to send as given (``Content-Length`` included when there is a body;
            ``Host`` is added), or a function returning them, called for each attempt
            (a signed request is signed anew when it is sent once more).
        body
            The body, or None.

        Returns
        -------
        Response
            Whatever the status.

        Raises
        ------
        OSError
            The connection failed (``ConnectionRefusedError`` ...) or timed out
            (``TimeoutError``).
        http.client.HTTPException
            The server's answer was not HTTP.
        ValueError
            ``url`` is not an http(s) URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https"
                                                             else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        while True:
            conn, reused = self._take(key)
            try:
                conn.request(method, target, body=body,
                             headers=dict(headers() if callable(headers) else headers))
                resp = conn.getresponse()
                content = resp.read()
            except (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine):
                conn.close()
                if reused and method.upper() in _IDEMPOTENT:
                    continue  # the server closed the kept-alive connection: once more, anew
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give(key, conn)
            return Response(resp.status, resp.reason, resp.headers, content)

    def close(self) -> None:
        """Close every idle connection (a connection in use closes when its request ends)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _take(self, key: _Key) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still open, else a new one; and whether it was reused."""
        while True:
            with self._lock:
                conns = self._idle.get(key)
                conn = conns.pop() if conns else None
            if conn is None:
                return self._connect(key), False
            sock = conn.sock
            # Readable while idle means the server closed it (or sent what we did not ask for).
            if sock is not None and not select.select([sock], [], [], 0)[0]:
                return conn, True
            conn.close()

    def _give(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self.max_idle:
                conns.append(conn)
                return
        conn.close()

    def _connect(self, key: _Key) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=self.timeout_s)
        if self._ssl_context is None:
            import ssl

            self._ssl_context = ssl.create_default_context(cafile=self.ca_file,
                                                           cadata=self.ca_pem)
        return http.client.HTTPSConnection(host, port, timeout=self.timeout_s,
                                           context=self._ssl_context)
