"""Batch's error body for the requests aiohttp refuses before any route or middleware.

aiohttp's HTTP parser refuses a message that is not valid HTTP (a header with a
control character, a header line over 8,190 bytes, more than 128 headers, a
request line with an unknown method or a bad URL, a bad chunk size) in its
connection handler, before the application sees it, and answers with a
plain-text ``400``. :class:`BatchAppRunner` serves the application with
:class:`BatchRequestHandler`, whose :meth:`~BatchRequestHandler.handle_error`
answers those with Batch's JSON error body instead (``request-id`` header,
``RequestId``/``Time`` in the message, the connection closed after it):

* an unknown or malformed method: ``400 InvalidHttpVerb``;
* a malformed URL: ``400 InvalidUri``;
* a malformed request line or HTTP version: ``400 InvalidInput``;
* a malformed, too long or too many headers (``Content-Length`` and
  ``Transfer-Encoding`` included): ``400 InvalidHeaderValue``;
* anything else the parser refuses (a bad chunk size): ``400 InvalidInput``;
* an exception of a handler that no middleware caught: ``500 InternalError``.

aiohttp offers no public setting for this: :class:`BatchAppRunner` overrides
``AppRunner._make_server`` and re-classes the server and its connection
handlers (``tests/api/test_parser_errors.py`` fails if an aiohttp release
changes that seam).
"""

from __future__ import annotations

import uuid

from aiohttp import http_exceptions, web

from hpcbatch.api.http import error_body, json_reply
from hpcbatch.batch.errors import HpcbatchError

__all__ = ["BatchAppRunner", "BatchRequestHandler", "parser_error"]

MAX_REASON_CHARS = 256
"""The parser's reason is cut to this many characters (it may quote a whole header line)."""

_HEADER_WORDS = ("header", "content-length", "transfer-encoding")
"""Words of a parser message that say a header is at fault."""


def parser_error(status: int, exc: BaseException | None, message: str | None) -> HpcbatchError:
    """The Batch error for a request aiohttp's connection handler refused.

    Parameters
    ----------
    status
        The status aiohttp chose (400 for a parser error, 500 for a handler's failure).
    exc
        What aiohttp caught (an ``http_exceptions.HttpProcessingError`` from the
        parser), or None.
    message
        aiohttp's text for it (its first line is the reason; the rest quotes the input).

    Returns
    -------
    HpcbatchError
        Code and status as the module's table says; the reason in the message and
        as the ``Reason`` value.
    """
    if status >= 500:
        return HpcbatchError("The server encountered an internal error; retry the request.",
                             code="InternalError", status=status)
    reason = (message or str(exc or "") or "malformed request").strip().splitlines()
    first = (reason[0] if reason else "malformed request").rstrip(":").strip()
    first = first[:MAX_REASON_CHARS]
    if isinstance(exc, http_exceptions.BadHttpMethod):
        code = "InvalidHttpVerb"
    elif isinstance(exc, http_exceptions.InvalidURLError):
        code = "InvalidUri"
    elif isinstance(exc, http_exceptions.BadStatusLine):
        code = "InvalidInput"
    elif isinstance(exc, (http_exceptions.InvalidHeader, http_exceptions.LineTooLong)) \
            or any(word in first.lower() for word in _HEADER_WORDS):
        code = "InvalidHeaderValue"
    else:
        code = "InvalidInput"
    return HpcbatchError(f"The request is not valid HTTP: {first}.", code=code, status=status,
                         values={"Reason": first})


class BatchRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering the errors it handles itself in Batch's format."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Answer a request aiohttp refused (or whose handler failed) with Batch's error body.

        aiohttp's own handling runs first (it logs, and raises ``ConnectionError``
        when part of a reply was sent already); its plain-text reply is replaced.

        Parameters
        ----------
        request
            The request (for a parser error, a placeholder without headers).
        status, exc, message
            What aiohttp passes: see :func:`parser_error`.

        Returns
        -------
        aiohttp.web.StreamResponse
            The JSON error reply, closing the connection.
        """
        plain = super().handle_error(request, status, exc, message)
        err = parser_error(plain.status, exc, message)
        request_id = str(uuid.uuid4())
        resp = json_reply(error_body(self._base_url(request), err, request_id),
                          status=plain.status,
                          headers={"request-id": request_id, "DataServiceVersion": "3.0"})
        resp.force_close()
        return resp

    @staticmethod
    def _base_url(request: web.BaseRequest) -> str:
        """``scheme://address:port`` of the socket the request came to (a refused request
        has no ``Host`` header to trust)."""
        scheme = "https" if request.transport is not None and \
            request.transport.get_extra_info("sslcontext") is not None else "http"
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            host = f"[{sockname[0]}]" if ":" in str(sockname[0]) else str(sockname[0])
            return f"{scheme}://{host}:{sockname[1]}"
        return f"{scheme}://localhost"


class _BatchServer(web.Server):
    """aiohttp's server, making :class:`BatchRequestHandler` connection handlers."""

    __slots__ = ()

    def __call__(self) -> web.RequestHandler:
        handler = super().__call__()
        handler.__class__ = BatchRequestHandler
        return handler


class BatchAppRunner(web.AppRunner):
    """``aiohttp.web.AppRunner`` whose connections answer parser errors in Batch's format.

    Used as ``web.AppRunner`` is (:class:`hpcbatch.api.server.ServiceRuntime`).
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _BatchServer
        return server
