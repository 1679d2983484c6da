"""A certificate as every node held before node identities: signed by the CA, with no role."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hpcbatch.execution.tls import TlsFiles


def roleless_certificate(tls: TlsFiles) -> tuple[bytes, bytes]:
    """Issue a CA-signed certificate without an OU (the old shared one); return (cert, key) PEM."""
    assert tls.ca_key_file is not None
    ca_cert = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(tls.ca_key_file.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpcbatch"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, "hpcbatch")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
