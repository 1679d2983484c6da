"""TLS files for the Dask cluster and the Dask security objects built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Security


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the cluster's mutual TLS.

    Attributes
    ----------
    ca_file
        The private CA's certificate, the only one trusted.
    cert_file
        The certificate (signed by the CA) that scheduler, workers and clients present.
    key_file
        Its private key (mode 0600).
    ca_key_file
        The CA's private key: set for the service's own files (it issues node
        certificates, :func:`hpcbatch.execution.pki.issue_node_credentials`),
        None on a node, which never holds it.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    ca_key_file: Path | None = None


def dask_security(tls: TlsFiles) -> Security:
    """Build the :class:`distributed.Security` for scheduler, workers and clients.

    Scheduler and client present ``tls``'s certificate (the service's, or on a
    node the node's own) and trust only the private CA; ``require_encryption=True``
    refuses plain ``tcp://`` addresses.

    Parameters
    ----------
    tls
        Files from :func:`hpcbatch.execution.pki.ensure_tls`.

    Returns
    -------
    distributed.Security
    """
    from distributed import Security

    ca, cert, key = str(tls.ca_file), str(tls.cert_file), str(tls.key_file)
    return Security(
        require_encryption=True,
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def dask_tls_cli_args(tls: TlsFiles) -> list[str]:
    """Command-line options giving ``dask scheduler`` / ``dask worker`` the TLS files.

    Parameters
    ----------
    tls
        Files from :func:`hpcbatch.execution.pki.ensure_tls` (as paths valid on the host that runs the command).

    Returns
    -------
    list of str
        ``["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]``.
    """
    return [
        "--tls-ca-file",
        str(tls.ca_file),
        "--tls-cert",
        str(tls.cert_file),
        "--tls-key",
        str(tls.key_file),
    ]
