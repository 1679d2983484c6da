"""The Batch REST operations hpcbatch does not carry out, one entry each, and their replies.

Every operation of the Batch REST API (api-version 2025-06-01, and the older
ones the ``azure-batch`` 14.x SDK and earlier clients call) is either routed
to a handler in :mod:`hpcbatch.api.routes` or listed in :data:`UNSUPPORTED`,
whose entries answer ``400 FeatureNotSupported`` with the operation's name in
``values`` (``Operation``) and the reason in the message. 400 surfaces in both
SDKs as a plain error with ``error.code`` set (a 409 would surface in 15.x as
``ResourceExistsError``, which would mislead).

``docs/azure-compat.md`` carries :func:`markdown_table` verbatim (a test
compares them); ``python -m hpcbatch.api.unsupported`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from hpcbatch.batch.errors import HpcbatchError


def feature_not_supported(operation: str, reason: str) -> HpcbatchError:
    """The error for a Batch operation hpcbatch does not carry out.

    Parameters
    ----------
    operation
        The operation's name in the Batch REST reference (``"Compute Node - Add User"``).
    reason
        Why, and what to do instead (a sentence).

    Returns
    -------
    HpcbatchError
        ``400 FeatureNotSupported``, ``values`` ``{"Operation": operation}``.
    """
    return HpcbatchError(f"The Batch operation '{operation}' is not supported by hpcbatch: "
                         f"{reason}", code="FeatureNotSupported", status=400,
                         values={"Operation": operation})


@dataclass(frozen=True)
class UnsupportedOperation:
    """A Batch REST operation hpcbatch does not carry out.

    Attributes
    ----------
    operation
        Its name in the Batch REST reference (``"Compute Node - Add User"``).
    method
        Its HTTP method.
    path
        Its path as the reference writes it (``/pools/{poolId}/nodes/{nodeId}/users``);
        ``{filePath}`` stands for the rest of the path, slashes included.
    reason
        Why hpcbatch does not, and what to do instead.
    """

    operation: str
    method: str
    path: str
    reason: str

    @property
    def route_path(self) -> str:
        """:attr:`path` as an aiohttp route (``{filePath}`` matching across slashes)."""
        return self.path.replace("{filePath}", "{filePath:.+}")

    async def handle(self, request: web.Request) -> web.Response:
        """Answer the operation: always ``400 FeatureNotSupported``.

        Raises
        ------
        HpcbatchError
            :func:`feature_not_supported` of this operation.
        """
        raise feature_not_supported(self.operation, self.reason)


UNSUPPORTED: tuple[UnsupportedOperation, ...] = (
    # Compute node
    UnsupportedOperation(
        "Compute Node - Get Remote Desktop", "GET", "/pools/{poolId}/nodes/{nodeId}/rdp",
        "nodes are Linux SSH hosts; Compute Node - Get Remote Login Settings gives their "
        "SSH address."),
    UnsupportedOperation(
        "Compute Node - Upload Batch Service Logs", "POST",
        "/pools/{poolId}/nodes/{nodeId}/uploadbatchservicelogs",
        "the node agent's log is node.log in the node's root directory (File - Get From "
        "Compute Node)."),
    UnsupportedOperation(
        "Compute Node - Start", "POST", "/pools/{poolId}/nodes/{nodeId}/start",
        "inventory hosts are not deallocated; a node is started when it joins a pool."),
    UnsupportedOperation(
        "Compute Node - Deallocate", "POST", "/pools/{poolId}/nodes/{nodeId}/deallocate",
        "inventory hosts cannot be deallocated; remove the node or resize the pool."),
)
"""Every Batch REST operation hpcbatch answers with ``400 FeatureNotSupported``."""


def add_routes(app: web.Application) -> None:
    """Route every operation of :data:`UNSUPPORTED` on ``app`` to its ``FeatureNotSupported``."""
    for op in UNSUPPORTED:
        app.router.add_route(op.method, op.route_path, op.handle)


def markdown_table() -> str:
    """The table of :data:`UNSUPPORTED` as ``docs/azure-compat.md`` carries it.

    Returns
    -------
    str
        A Markdown table (operation, request, reason), one row per entry, with
        a final newline.
    """
    rows = ["| operation | request | why not |", "| --- | --- | --- |"]
    rows += [f"| {op.operation} | `{op.method} {op.path}` | {op.reason} |" for op in UNSUPPORTED]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
