"""One error hierarchy for hpcbatch, rooted at :class:`HpcbatchError`.

Errors raised by the service core carry the Batch error ``code`` and the HTTP
status the Batch REST API answers with, so the REST layer turns any of them into
Batch's error body::

    {"odata.metadata": "...", "code": "PoolNotFound",
     "message": {"lang": "en-US", "value": "The specified pool does not exist."},
     "values": [{"key": "PoolId", "value": "p1"}]}

Codes follow the Batch REST API "Batch status and error codes" page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta


class HpcbatchError(Exception):
    """Base of every hpcbatch error.

    Parameters
    ----------
    message
        A sentence for people; names the field or host at fault.
    code
        Batch error code (``"InvalidPropertyValue"``, ``"PoolNotFound"``, ...).
    status
        HTTP status the REST API answers with.
    values
        Extra ``key``/``value`` details (Batch's ``values`` array), e.g.
        ``{"PropertyName": "id"}``.
    """

    code: str = "InternalError"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        values: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.values: dict[str, str] = dict(values or {})

    def to_wire(self) -> dict[str, object]:
        """Return Batch's JSON error body for this error."""
        body: dict[str, object] = {
            "odata.metadata": "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
            "code": self.code,
            "message": {"lang": "en-US", "value": self.message},
        }
        if self.values:
            body["values"] = [{"key": k, "value": v} for k, v in self.values.items()]
        return body


class BadRequestError(HpcbatchError):
    """HTTP 400: the request or one of its properties is invalid."""

    code = "InvalidRequestBody"
    status = 400


class InvalidPropertyValueError(BadRequestError):
    """A property has a value Batch does not allow (``InvalidPropertyValue``)."""

    code = "InvalidPropertyValue"

    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(
            f"The value provided for {name} is invalid: {reason}",
            values={"PropertyName": name, "PropertyValue": wire_text(value)[:256],
                    "Reason": reason},
        )
        self.property_name = name


def wire_text(value: object) -> str:
    """``value`` as the wire writes it: a duration (``timedelta``) in ISO 8601 (``P7DT1H``),
    anything else as ``str``."""
    if isinstance(value, timedelta):
        from pydantic import TypeAdapter  # lazy: clients import this module

        return str(TypeAdapter(timedelta).dump_python(value, mode="json"))
    return str(value)


class AuthenticationError(HpcbatchError):
    """HTTP 403: the SharedKey signature or account is wrong (``AuthenticationFailed``)."""

    code = "AuthenticationFailed"
    status = 403


class NotFoundError(HpcbatchError):
    """HTTP 404: the named resource does not exist."""

    code = "ResourceNotFound"
    status = 404


class ConflictError(HpcbatchError):
    """HTTP 409: the resource exists already, or its state forbids the operation."""

    code = "Conflict"
    status = 409


class NodeConnectionError(HpcbatchError):
    """A compute node's host could not be reached or commanded.

    Parameters
    ----------
    host
        Inventory name of the host.
    reason
        What failed (the SSH or process error, as a sentence).
    """

    code = "NodeConnectionFailed"
    status = 500

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host}: {reason}", values={"Host": host})
        self.host = host
        self.reason = reason


class ServiceNotRunningError(HpcbatchError):
    """No hpcbatch service answers for the given state dir or endpoint."""

    code = "ServiceUnavailable"
    status = 503


def not_found(kind: str, ident: str) -> NotFoundError:
    """Build Batch's ``{Kind}NotFound`` error (``PoolNotFound``, ``JobNotFound``, ...).

    Parameters
    ----------
    kind
        Batch resource kind: ``"Pool"``, ``"Job"``, ``"Task"``, ``"Node"``,
        ``"File"``, ``"JobSchedule"``, ``"Host"``.
    ident
        The ID the client asked for.
    """
    label = {"Node": "node", "JobSchedule": "job schedule"}.get(kind, kind.lower())
    return NotFoundError(
        f"The specified {label} does not exist.",
        code=f"{kind}NotFound",
        values={f"{kind}Id": ident},
    )


def exists(kind: str, ident: str) -> ConflictError:
    """Build Batch's ``{Kind}Exists`` error (``PoolExists``, ``JobExists``, ``TaskExists``)."""
    label = {"JobSchedule": "job schedule"}.get(kind, kind.lower())
    return ConflictError(
        f"The specified {label} already exists.",
        code=f"{kind}Exists",
        values={f"{kind}Id": ident},
    )
