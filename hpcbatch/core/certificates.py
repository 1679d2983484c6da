"""Certificates of the account: "Certificate - Add/List/Get/Delete/Cancel Deletion", pools'
``certificateReferences``, and their installation on the pools' nodes.

Batch deprecated certificates (api-version 2025-06-01 has no Certificate operations; the
``azure-batch`` 14.x SDK and older clients still call them). hpcbatch keeps them as the
older API-versions document:

* Add checks ``thumbprintAlgorithm`` (``sha1``), the ``thumbprint`` (40 hex digits) and
  that it is the SHA-1 of the certificate in ``data`` (base64 ``cer``: DER or PEM, or
  ``pfx`` opened with its ``password``, which a ``cer`` must not have);
* a pool may reference only an ``active`` certificate (``CertificateBeingDeleted``
  otherwise); Delete of a certificate a pool references leaves it ``deletefailed``
  with ``deleteCertificateError`` naming the pools (``CertificateStateDeleteFailed``),
  until Cancel Deletion makes it ``active`` again or the pools drop it;
* each node of a pool gets its pool's certificates in ``AZ_BATCH_CERTIFICATES_DIR``
  (``{root}/certs``) when it starts, before its start task (reboot and reimage too, as
  Batch refreshes them): ``{alg}-{thumbprint}.cer``, or ``.pfx`` and its PEM
  conversion ``.pem`` (:mod:`hpcbatch.execution.certificates`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    InvalidPropertyValueError,
    NotFoundError,
)
from hpcbatch.batch.states import CertificateState
from hpcbatch.batch.wire import iso, utcnow
from hpcbatch.core.context import ServiceContext
from hpcbatch.store.database import Store, certificates, dumps, loads, pools

if TYPE_CHECKING:
    from hpcbatch.core.node_runtime import NodeRuntime

log = logging.getLogger(__name__)

ALGORITHMS = ("sha1",)
"""``thumbprintAlgorithm`` values Batch accepts."""
FORMATS = ("pfx", "cer")
"""``certificateFormat`` values (default ``pfx``)."""
VISIBILITIES = ("starttask", "task", "remoteuser")
"""``certificateReferences[].visibility`` values."""
_THUMBPRINT = re.compile(r"[0-9a-fA-F]{40}")
MAX_DATA_BYTES = 1 << 20
"""Largest certificate accepted (decoded ``data``)."""


def certificate_key(algorithm: str, thumbprint: str) -> str:
    """The store key of a certificate: ``{algorithm}-{thumbprint}``, lower case."""
    return f"{algorithm.lower()}-{thumbprint.lower()}"


def _not_found(algorithm: str, thumbprint: str) -> NotFoundError:
    return NotFoundError(f"The certificate {algorithm}-{thumbprint} does not exist.",
                         code="CertificateNotFound",
                         values={"ThumbprintAlgorithm": algorithm, "Thumbprint": thumbprint})


def parse_certificate(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``CertificateAddParameter``; return what the store keeps.

    Parameters
    ----------
    body
        ``thumbprint``, ``thumbprintAlgorithm``, ``data`` (base64), ``certificateFormat``
        (``pfx``/``cer``, default ``pfx``), ``password`` (pfx only).

    Returns
    -------
    dict
        ``thumbprint`` (as given), ``thumbprintAlgorithm``, ``certificateFormat``,
        ``data``, ``password``, ``publicData`` (base64 DER of the certificate).

    Raises
    ------
    BadRequestError
        ``MissingRequiredProperty``/``InvalidPropertyValue`` naming the property;
        ``CertificateMismatch``: the thumbprint is not the data's certificate's.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    for name in ("thumbprint", "thumbprintAlgorithm", "data"):
        if not body.get(name):
            raise BadRequestError(f"The property {name} is required.",
                                  code="MissingRequiredProperty", values={"PropertyName": name})
    thumbprint, algorithm = body["thumbprint"], body["thumbprintAlgorithm"]
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        raise InvalidPropertyValueError("thumbprintAlgorithm", algorithm,
                                        "allowed values are " + ", ".join(ALGORITHMS))
    if not isinstance(thumbprint, str) or not _THUMBPRINT.fullmatch(thumbprint):
        raise InvalidPropertyValueError("thumbprint", thumbprint,
                                        "a SHA-1 thumbprint is 40 hexadecimal digits")
    fmt = body.get("certificateFormat") or "pfx"
    if fmt not in FORMATS:
        raise InvalidPropertyValueError("certificateFormat", fmt,
                                        "allowed values are " + ", ".join(FORMATS))
    password = body.get("password")
    if fmt == "cer" and password is not None:
        raise InvalidPropertyValueError("password", "***",
                                        "a cer certificate has no password; omit it")
    if password is not None and not isinstance(password, str):
        raise InvalidPropertyValueError("password", "***", "a string")
    try:
        data = base64.b64decode(str(body["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPropertyValueError("data", str(body["data"])[:32],
                                        "the certificate's bytes in base64") from None
    if len(data) > MAX_DATA_BYTES:
        raise InvalidPropertyValueError("data", f"{len(data)} bytes",
                                        f"at most {MAX_DATA_BYTES} bytes")
    cert: x509.Certificate | None
    try:
        if fmt == "cer":
            cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                    else x509.load_der_x509_certificate(data))
        else:
            _, cert, _ = pkcs12.load_key_and_certificates(
                data, password.encode() if password else None)
    except ValueError as exc:
        what = "password" if fmt == "pfx" and password is not None else "data"
        raise InvalidPropertyValueError(
            what, "***" if what == "password" else str(body["data"])[:32],
            f"the {fmt} data cannot be read{' with this password' if what == 'password' else ''}"
            f": {exc}") from None
    if cert is None:
        raise InvalidPropertyValueError("data", str(body["data"])[:32],
                                        "the pfx holds no certificate")
    actual = cert.fingerprint(hashes.SHA1()).hex()  # Batch's thumbprint is SHA-1
    if actual != thumbprint.lower():
        raise BadRequestError(
            f"The thumbprint {thumbprint} does not match the certificate in data "
            f"(its SHA-1 thumbprint is {actual}).", code="CertificateMismatch",
            values={"PropertyName": "thumbprint", "Thumbprint": thumbprint})
    public = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return {"thumbprint": thumbprint, "thumbprintAlgorithm": algorithm.lower(),
            "certificateFormat": fmt, "data": base64.b64encode(data).decode(),
            "password": password, "publicData": public}


def check_references(conn: Connection, refs: Iterable[Any] | None,
                     field: str = "certificateReferences") -> None:
    """Check a pool's ``certificateReferences`` against the stored certificates.

    Parameters
    ----------
    conn
        A store connection.
    refs
        The references (wire dicts: ``thumbprint``, ``thumbprintAlgorithm``,
        ``storeLocation``, ``storeName``, ``visibility``).
    field
        Wire path of the list, for errors.

    Raises
    ------
    BadRequestError
        A malformed reference, or one naming no stored certificate
        (``InvalidPropertyValue`` naming ``certificateReferences[i].thumbprint``).
    ConflictError
        ``CertificateBeingDeleted``: the certificate is deleting or deletefailed.
    """
    for i, ref in enumerate(refs or []):
        where = f"{field}[{i}]"
        if not isinstance(ref, Mapping):
            raise InvalidPropertyValueError(where, ref, "a CertificateReference object")
        thumbprint, algorithm = ref.get("thumbprint"), ref.get("thumbprintAlgorithm")
        if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
            raise InvalidPropertyValueError(f"{where}.thumbprintAlgorithm", algorithm,
                                            "allowed values are " + ", ".join(ALGORITHMS))
        if not isinstance(thumbprint, str) or not _THUMBPRINT.fullmatch(thumbprint):
            raise InvalidPropertyValueError(f"{where}.thumbprint", thumbprint,
                                            "a SHA-1 thumbprint is 40 hexadecimal digits")
        visibility = ref.get("visibility")
        if visibility is not None and (not isinstance(visibility, list) or any(
                v not in VISIBILITIES for v in visibility)):
            raise InvalidPropertyValueError(f"{where}.visibility", visibility,
                                            "a list of " + ", ".join(VISIBILITIES))
        row = Store.fetch_one(conn, certificates, key=certificate_key(algorithm, thumbprint))
        if row is None:
            raise InvalidPropertyValueError(
                f"{where}.thumbprint", thumbprint,
                f"the account has no certificate {algorithm}-{thumbprint} (Certificate - Add)")
        if row["state"] != CertificateState.active:
            raise ConflictError(
                f"The certificate {algorithm}-{thumbprint} is {row['state']}; a pool cannot "
                "reference it.", code="CertificateBeingDeleted",
                values={"Thumbprint": thumbprint, "PropertyName": f"{where}.thumbprint"})


def _referencing_pools(conn: Connection, key: str) -> list[str]:
    """IDs of the pools whose ``certificateReferences`` name the certificate ``key``."""
    out = []
    for row in conn.execute(sa.select(pools.c.id, pools.c.spec)):
        refs = loads(row.spec).get("certificateReferences") or []
        if any(isinstance(r, Mapping) and certificate_key(str(r.get("thumbprintAlgorithm")),
                                                          str(r.get("thumbprint"))) == key
               for r in refs):
            out.append(row.id)
    return out


class Certificates:
    """The account's certificates ("Certificate - ..." operations) and their installation.

    Parameters
    ----------
    ctx
        The service context.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        spec, status = loads(row["spec"]), loads(row["status"])
        alg, tp = spec["thumbprintAlgorithm"], spec["thumbprint"]
        out: dict[str, Any] = {
            "thumbprint": tp, "thumbprintAlgorithm": alg,
            "url": f"{self.ctx.base_url}/certificates(thumbprintAlgorithm={alg},"
                   f"thumbprint={tp})",
            "state": row["state"], "publicData": spec["publicData"], **status}
        return out

    def add(self, body: Mapping[str, Any]) -> str:
        """"Certificate - Add" (REST ``POST /certificates``); return its URL path.

        Raises
        ------
        BadRequestError
            See :func:`parse_certificate`.
        ConflictError
            ``CertificateExists``.
        """
        spec = parse_certificate(body)
        key = certificate_key(spec["thumbprintAlgorithm"], spec["thumbprint"])
        now = iso(utcnow())
        with self.ctx.store.begin() as conn:
            if Store.fetch_one(conn, certificates, key=key) is not None:
                raise ConflictError(f"The certificate {key} already exists.",
                                    code="CertificateExists",
                                    values={"Thumbprint": spec["thumbprint"]})
            conn.execute(certificates.insert().values(
                key=key, state=CertificateState.active, spec=dumps(spec),
                status=dumps({"stateTransitionTime": now})))
        return (f"/certificates(thumbprintAlgorithm={spec['thumbprintAlgorithm']},"
                f"thumbprint={spec['thumbprint']})")

    def list_certificates(self) -> list[dict[str, Any]]:
        """"Certificate - List": every certificate's JSON (no ``data``, no password)."""
        with self.ctx.store.read() as conn:
            rows = conn.execute(sa.select(certificates).order_by(certificates.c.key)).mappings()
            return [self._wire(dict(r)) for r in rows]

    def _row(self, conn: Connection, algorithm: str, thumbprint: str) -> Mapping[str, Any]:
        if algorithm.lower() not in ALGORITHMS:
            raise InvalidPropertyValueError("thumbprintAlgorithm", algorithm,
                                            "allowed values are " + ", ".join(ALGORITHMS))
        row = Store.fetch_one(conn, certificates, key=certificate_key(algorithm, thumbprint))
        if row is None:
            raise _not_found(algorithm, thumbprint)
        return row

    def get(self, algorithm: str, thumbprint: str) -> dict[str, Any]:
        """"Certificate - Get". Raises ``CertificateNotFound`` (404)."""
        with self.ctx.store.read() as conn:
            return self._wire(self._row(conn, algorithm, thumbprint))

    def _set_state(self, conn: Connection, row: Mapping[str, Any], state: CertificateState,
                   error: dict[str, Any] | None = None) -> None:
        status = loads(row["status"])
        now = iso(utcnow())
        status.update(previousState=row["state"],
                      previousStateTransitionTime=status.get("stateTransitionTime"),
                      stateTransitionTime=now)
        status.pop("deleteCertificateError", None)
        if error:
            status["deleteCertificateError"] = error
        Store.update(conn, certificates, {"key": row["key"]}, state=state,
                     status=dumps(status))

    def delete(self, algorithm: str, thumbprint: str) -> None:
        """"Certificate - Delete" (202): gone at once unless a pool references it; then
        ``deletefailed`` with ``deleteCertificateError`` (``CertificateStateDeleteFailed``,
        the pools in ``values``), as Batch leaves a certificate in use.

        Raises
        ------
        NotFoundError
            ``CertificateNotFound``.
        """
        with self.ctx.store.begin() as conn:
            row = self._row(conn, algorithm, thumbprint)
            users = _referencing_pools(conn, row["key"])
            if not users:
                conn.execute(certificates.delete().where(certificates.c.key == row["key"]))
                return
            self._set_state(conn, row, CertificateState.deletefailed, {
                "code": "CertificateStateDeleteFailed",
                "message": "The certificate is referenced by pools: "
                           + ", ".join(users) + ". Remove it from their "
                           "certificateReferences, then delete it again.",
                "values": [{"name": "PoolId", "value": p} for p in users]})

    def cancel_delete(self, algorithm: str, thumbprint: str) -> None:
        """"Certificate - Cancel Deletion": a ``deletefailed`` certificate becomes active.

        Raises
        ------
        ConflictError
            ``CertificateStateActive``: the certificate is active.
        NotFoundError
            ``CertificateNotFound``.
        """
        with self.ctx.store.begin() as conn:
            row = self._row(conn, algorithm, thumbprint)
            if row["state"] == CertificateState.active:
                raise ConflictError(f"The certificate {row['key']} is active; there is no "
                                    "deletion to cancel.", code="CertificateStateActive",
                                    values={"Thumbprint": thumbprint})
            self._set_state(conn, row, CertificateState.active)

    def for_node(self, refs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The node agent's arguments for a pool's references (the certificates that exist).

        Returns
        -------
        list of dict
            ``name`` (``{alg}-{thumbprint}``), ``format``, ``data`` (bytes),
            ``password``, ``visibility``.
        """
        out = []
        with self.ctx.store.read() as conn:
            for ref in refs:
                key = certificate_key(str(ref.get("thumbprintAlgorithm")),
                                      str(ref.get("thumbprint")))
                row = Store.fetch_one(conn, certificates, key=key)
                if row is None:
                    continue
                spec = loads(row["spec"])
                out.append({"name": key, "format": spec["certificateFormat"],
                            "data": base64.b64decode(spec["data"]),
                            "password": spec.get("password"),
                            "visibility": list(ref.get("visibility") or VISIBILITIES)})
        return out

    async def install_on_node(self, node: NodeRuntime) -> None:
        """Install its pool's certificates on a node that just started (before its start
        task): the hook :attr:`hpcbatch.core.pool_manager.PoolManager.before_start_task`.

        A failure is recorded on the node (``errors``: ``CertificateInstallFailed``);
        the node still starts, as its tasks may not need the certificates.
        """
        spec = self.ctx.pool_manager.specs.get(node.pool_key)
        refs = [r for r in (getattr(spec, "certificate_references", None) or [])
                if isinstance(r, Mapping)]
        try:
            certs = self.for_node(refs)
            await self.ctx.engine.call(node.worker or "", "install_certificates", certs=certs)
        except Exception as exc:  # noqa: BLE001 - reported on the node
            log.warning("node %s: certificates not installed: %s", node.node_id, exc)
            node.errors.append({"code": "CertificateInstallFailed",
                                "message": f"The pool's certificates could not be installed "
                                           f"in AZ_BATCH_CERTIFICATES_DIR: {exc}"})
