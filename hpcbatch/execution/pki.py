"""The cluster's private certificate authority and the identities it issues.

The service makes a private CA at its first start (``{state_dir}/tls/``,
mode 0700). The CA signs two kinds of certificate, told apart by their
organisational unit (the *role*):

* the **service** certificate (``OU=hpcbatch-service``), presented by the Dask
  scheduler and by the service's own Dask client; its key and the CA key never
  leave the service machine;
* one **node** certificate per node incarnation (``OU=hpcbatch-node``), issued
  when the pool manager provisions the node, naming the pool and the node's
  Dask worker in a URI subject alternative name
  (``urn:hpcbatch:node:{pool}:{worker}``, both percent-encoded). A node holds
  the CA certificate, its own certificate and its own key, nothing else.

:func:`peer_identity` (:mod:`hpcbatch.execution.peers`, re-exported here) reads a
TLS peer's certificate back into a :class:`PeerIdentity`; :mod:`hpcbatch.execution.guard` decides from it what a
peer may do. A certificate without exactly one known role (such as the single
certificate every node held before per-node identities) is nobody.

Every ``ensure_*`` function is idempotent: it reuses what is there, tightens
file modes that have become too loose, and holds a lock file so that two
processes starting at once do not both write.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import ipaddress
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hpcbatch.execution.peers import (  # re-exported: pki's names since before peers.py
    NODE_ROLE,
    SERVICE_ROLE,
    PeerIdentity,
    node_uri,
    peer_identity,
)
from hpcbatch.execution.tls import TlsFiles

__all__ = [
    "NODE_ROLE",
    "SERVICE_ROLE",
    "NodeCredentials",
    "PeerIdentity",
    "ensure_tls",
    "issue_node_credentials",
    "locked",
    "node_uri",
    "peer_identity",
    "private_dir",
    "tighten",
    "write_private",
]

TLS_DIR = "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CERT = "cert.pem"
KEY = "key.pem"


#: Names the service certificate carries besides the caller's hostnames.
DEFAULT_SANS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1", "hpcbatch")

_VALIDITY = _dt.timedelta(days=3650)
_NODE_VALIDITY = _dt.timedelta(days=365)
_RENEW_BEFORE = _dt.timedelta(days=30)
_BACKDATE = _dt.timedelta(hours=1)  # tolerate clocks a little behind across hosts


# --------------------------------------------------------------------------
# private files
# --------------------------------------------------------------------------


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or tighten it to 0700 if others may enter it; return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def tighten(path: Path, mode: int = 0o600) -> None:
    """Take away permission bits of ``path`` beyond ``mode``."""
    if stat.S_IMODE(path.stat().st_mode) & ~mode & 0o777:
        os.chmod(path, mode)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
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
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.lock`` (between processes)."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --------------------------------------------------------------------------
# certificates
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


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _dt.datetime.now(_dt.UTC)
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
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, role: str,
    sans: list[x509.GeneralName], validity: _dt.timedelta = _VALIDITY,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue a certificate for ``role`` (its OU) with these subject alternative names."""
    key = _new_key()
    now = _dt.datetime.now(_dt.UTC)
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpcbatch"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, role),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@functools.lru_cache(maxsize=8)
def _load_pair_as_of(cert_path: Path, key_path: Path,
                     stamps: tuple[tuple[int, int, int], ...]) -> tuple[x509.Certificate, Any] | None:
    """:func:`_load_pair` for files last changed as ``stamps`` say (inode, mtime, size each)."""
    return _load_pair(cert_path, key_path)


def _ca_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Any] | None:
    """The CA and its key, read again only when either file changed (a pool's nodes are
    issued certificates together: 1,000 of them read and parse the CA once)."""
    try:
        stamps = tuple((st.st_ino, st.st_mtime_ns, st.st_size)
                       for st in (cert_path.stat(), key_path.stat()))
    except OSError:
        return None
    return _load_pair_as_of(cert_path, key_path, stamps)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Any] | None:
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


def _roles(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)]


def ensure_tls(state_dir: Path, hostnames: Sequence[str] = ()) -> TlsFiles:
    """Create or reuse the cluster's private CA and the service's certificate.

    Under ``state_dir/tls/`` (mode 0700): ``ca.pem`` / ``ca-key.pem`` (an EC
    P-256 CA valid 10 years) and ``cert.pem`` / ``key.pem`` (EC P-256, signed by
    that CA, role ``OU=hpcbatch-service``, for both server and client
    authentication). Key files are 0600.

    The certificate's subject alternative names are ``localhost``,
    ``127.0.0.1``, ``::1``, ``hpcbatch`` and ``hostnames`` (DNS names or IP
    addresses). Existing files are reused; the certificate alone is re-issued
    from the same CA, with a new key (keeping its old names) when a requested
    name is missing, when it expires within 30 days, when it does not match the
    CA or its key, or when it lacks the service role (a certificate made before
    node identities existed, which every node held). A missing or unreadable
    CA makes a new CA and certificate.

    Parameters
    ----------
    state_dir
        The service's state directory.
    hostnames
        Further DNS names / IP addresses the scheduler is reached by.

    Returns
    -------
    TlsFiles
        With :attr:`TlsFiles.ca_key_file` set (the CA key issues node certificates).
    """
    tls_dir = private_dir(private_dir(Path(state_dir)) / TLS_DIR)
    files = TlsFiles(ca_file=tls_dir / CA_CERT, cert_file=tls_dir / CERT, key_file=tls_dir / KEY,
                     ca_key_file=tls_dir / CA_KEY)
    ca_key_file = tls_dir / CA_KEY
    wanted = {_normal(n) for n in (*DEFAULT_SANS, *hostnames) if n.strip()}
    with locked(tls_dir):
        ca = _load_pair(files.ca_file, ca_key_file)
        if ca is None:
            ca_cert, ca_key = _make_ca()
            write_private(ca_key_file, _key_pem(ca_key))
            write_private(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
            leaf = None
        else:
            ca_cert, ca_key = ca
            leaf = _load_pair(files.cert_file, files.key_file)

        reissue = leaf is None
        if leaf is not None:
            cert = leaf[0]
            have = _san_strings(cert)
            soon = _dt.datetime.now(_dt.UTC) + _RENEW_BEFORE
            reissue = (
                not wanted <= have
                or cert.not_valid_after_utc < soon
                or not _issued_by(cert, ca_cert)
                or _roles(cert) != [SERVICE_ROLE]
            )
            wanted |= have
        if reissue:
            ordered = [*DEFAULT_SANS, *hostnames, *sorted(wanted)]
            cert, key = _make_leaf(ca_cert, ca_key, role=SERVICE_ROLE,
                                   sans=_san_entries(ordered))
            write_private(files.key_file, _key_pem(key))
            write_private(files.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        for private in (ca_key_file, files.key_file):
            tighten(private)
    return files


@dataclass(frozen=True)
class NodeCredentials:
    """The TLS material one node incarnation holds (PEM bytes).

    Attributes
    ----------
    ca_pem
        The CA's certificate (the only one the node trusts).
    cert_pem
        The node's certificate (role ``OU=hpcbatch-node``).
    key_pem
        Its private key.
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # keep the key out of logs
        return "NodeCredentials(...)"


def issue_node_credentials(tls: TlsFiles, pool_id: str, worker_name: str) -> NodeCredentials:
    """Issue a node's own certificate and key, signed by the service's CA.

    The certificate (EC P-256, valid one year) carries role ``OU=hpcbatch-node``
    and the URI ``urn:hpcbatch:node:{pool}:{worker}``: its holder may register
    a Dask worker named ``worker_name`` and do what a worker does, nothing
    else (:mod:`hpcbatch.execution.guard`). The key is made here and given to
    the node only.

    Parameters
    ----------
    tls
        The service's files from :func:`ensure_tls` (``ca_key_file`` set).
    pool_id
        The node's pool.
    worker_name
        The name its Dask worker registers under (``{node id}@{token}``, new for
        every incarnation of the node).

    Returns
    -------
    NodeCredentials

    Raises
    ------
    ValueError
        ``tls`` has no CA key, or the CA files are not a certificate and its key.
    """
    if tls.ca_key_file is None:
        raise ValueError("these TLS files have no CA key: node certificates cannot be issued")
    ca = _ca_pair(tls.ca_file, tls.ca_key_file)
    if ca is None:
        raise ValueError(f"{tls.ca_file} and {tls.ca_key_file} are not a CA and its key")
    ca_cert, ca_key = ca
    cert, key = _make_leaf(ca_cert, ca_key, role=NODE_ROLE,
                           sans=[x509.UniformResourceIdentifier(node_uri(pool_id, worker_name))],
                           validity=_NODE_VALIDITY)
    return NodeCredentials(ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
                           cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                           key_pem=_key_pem(key))
