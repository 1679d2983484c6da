"""Who is on the other end of a TLS comm: the roles and node names of :mod:`hpcbatch.execution.pki`.

The certificate authority (:mod:`hpcbatch.execution.pki`) issues the service's
certificate (``OU=hpcbatch-service``) and one certificate per node incarnation
(``OU=hpcbatch-node``, naming the pool and the Dask worker in the URI
``urn:hpcbatch:node:{pool}:{worker}``). This module reads such a certificate,
as :mod:`ssl` decodes a verified peer's, back into a :class:`PeerIdentity`, and
names a node identity (:func:`node_uri`). It imports no cryptography library:
a node process needs it (:mod:`hpcbatch.execution.guard`) before it serves,
and nothing of the CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

__all__ = ["NODE_ROLE", "NODE_URN", "SERVICE_ROLE", "PeerIdentity", "node_uri", "peer_identity"]

SERVICE_ROLE = "hpcbatch-service"
"""Organisational unit of the service's certificate (scheduler and service client)."""
NODE_ROLE = "hpcbatch-node"
"""Organisational unit of a node's certificate."""
NODE_URN = "urn:hpcbatch:node:"
"""Prefix of the URI subject alternative name of a node's certificate."""


def node_uri(pool_id: str, worker_name: str) -> str:
    """Return the URI naming a node identity: ``urn:hpcbatch:node:{pool}:{worker}``.

    Parameters
    ----------
    pool_id
        The node's pool (percent-encoded in the URI).
    worker_name
        The Dask worker name of the node's incarnation (percent-encoded).
    """
    return f"{NODE_URN}{quote(pool_id, safe='')}:{quote(worker_name, safe='')}"


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a TLS comm, from its certificate.

    Attributes
    ----------
    role
        :data:`SERVICE_ROLE` or :data:`NODE_ROLE`.
    pool_id, worker_name
        For a node: its pool and the Dask worker name its certificate was
        issued for; empty for the service.
    """

    role: str
    pool_id: str = ""
    worker_name: str = ""

    @property
    def is_service(self) -> bool:
        """Whether the peer presented the service's certificate."""
        return self.role == SERVICE_ROLE


def peer_identity(peercert: Mapping[str, Any] | None) -> PeerIdentity | None:
    """Read a verified TLS peer certificate (``ssl.SSLSocket.getpeercert()``'s dict).

    Parameters
    ----------
    peercert
        The peer's certificate as :mod:`ssl` decodes it (``subject`` and
        ``subjectAltName`` tuples); the TLS layer has checked it against the CA.

    Returns
    -------
    PeerIdentity or None
        The identity; None for a certificate that is neither the service's nor a
        well-formed node's (no role, two roles, a node without its URI, ...).
    """
    if not peercert:
        return None
    roles = [value for rdn in peercert.get("subject", ()) for key, value in rdn
             if key == "organizationalUnitName"]
    if roles == [SERVICE_ROLE]:
        return PeerIdentity(SERVICE_ROLE)
    if roles != [NODE_ROLE]:
        return None
    uris = [v for k, v in peercert.get("subjectAltName", ()) if k == "URI"]
    if len(uris) != 1 or not uris[0].startswith(NODE_URN):
        return None
    parts = uris[0][len(NODE_URN):].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return PeerIdentity(NODE_ROLE, unquote(parts[0]), unquote(parts[1]))
