"""Account key file, private CA and the cluster's mutual TLS (real crypto, real Dask)."""

from __future__ import annotations

import asyncio
import base64
import gc
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from hpcbatch.api.security import (
    AccountCredentials,
    ensure_account_credentials,
    ensure_tls,
)
from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.execution.tls import TlsFiles, dask_security, dask_tls_cli_args


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------
# account.json
# ---------------------------------------------------------------------------


def test_account_credentials_created_private(tmp_path):
    state = tmp_path / "state"
    creds = ensure_account_credentials(state)
    assert isinstance(creds, AccountCredentials)
    assert creds.account_name == "hpcbatch"
    assert creds.key_file == state / "account.json"
    assert len(base64.b64decode(creds.key, validate=True)) == 64
    assert _mode(state) == 0o700
    assert _mode(creds.key_file) == 0o600
    assert json.loads(creds.key_file.read_text()) == {"account_name": "hpcbatch", "key": creds.key}
    assert creds.key not in repr(creds)


def test_account_credentials_reused_and_retightened(tmp_path):
    first = ensure_account_credentials(tmp_path, "acct1")
    os.chmod(first.key_file, 0o644)
    os.chmod(tmp_path, 0o755)
    again = ensure_account_credentials(tmp_path, "ignored-existing-file-wins")
    assert again == first
    assert _mode(first.key_file) == 0o600
    assert _mode(tmp_path) == 0o700


def test_account_credentials_bad_file(tmp_path):
    (tmp_path / "account.json").write_text('{"account_name": "a"}')
    with pytest.raises(HpcbatchError, match="not a valid hpcbatch account file"):
        ensure_account_credentials(tmp_path)


def test_account_credentials_concurrent_first_start(tmp_path):
    results: list[AccountCredentials] = []

    def start():
        results.append(ensure_account_credentials(tmp_path / "s"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.key for r in results}) == 1


# ---------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------


def _load(tls: TlsFiles):
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    key = load_pem_private_key(tls.key_file.read_bytes(), password=None)
    return ca, cert, key


def _sans(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), set(ext.get_values_for_type(x509.IPAddress))


def test_tls_files(tmp_path):
    tls = ensure_tls(tmp_path, ["node1.cluster", "10.1.2.3"])
    assert tls.ca_file.parent == tmp_path / "tls"
    assert _mode(tmp_path / "tls") == 0o700
    assert _mode(tls.key_file) == 0o600
    assert _mode(tmp_path / "tls" / "ca-key.pem") == 0o600
    ca, cert, key = _load(tls)

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca)
    dns, ips = _sans(cert)
    assert {"localhost", "hpcbatch", "node1.cluster"} <= dns
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")} <= ips
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)


def test_tls_idempotent_and_reissues_for_new_names(tmp_path):
    tls = ensure_tls(tmp_path, ["a.example"])
    before = {p: p.read_bytes() for p in (tls.ca_file, tls.cert_file, tls.key_file)}
    again = ensure_tls(tmp_path, ["a.example"])
    assert again == tls
    assert {p: p.read_bytes() for p in before} == before
    assert ensure_tls(tmp_path) == tls  # fewer names: still reused
    assert tls.cert_file.read_bytes() == before[tls.cert_file]

    os.chmod(tls.key_file, 0o644)
    ensure_tls(tmp_path, ["b.example"])
    assert _mode(tls.key_file) == 0o600
    assert tls.ca_file.read_bytes() == before[tls.ca_file]  # same CA
    ca, cert, _ = _load(tls)
    cert.verify_directly_issued_by(ca)
    dns, _ = _sans(cert)
    assert {"a.example", "b.example", "hpcbatch"} <= dns


def test_tls_handshake_strict_with_hostnames(tmp_path):
    """A strict X.509 handshake (hostname checked) between two holders of the certificate."""
    tls = ensure_tls(tmp_path)

    def ctx(purpose):
        c = ssl.create_default_context(purpose, cafile=str(tls.ca_file))
        c.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        c.verify_mode = ssl.CERT_REQUIRED
        c.verify_flags |= ssl.VERIFY_X509_STRICT
        return c

    for hostname in ("localhost", "hpcbatch", "127.0.0.1"):
        a, b = socket.socketpair()
        server_ctx, client_ctx = ctx(ssl.Purpose.CLIENT_AUTH), ctx(ssl.Purpose.SERVER_AUTH)
        errors = []

        def serve(sock=a, sctx=server_ctx, errors=errors):
            try:
                with sctx.wrap_socket(sock, server_side=True) as s:
                    s.sendall(s.recv(5))
            except Exception as exc:  # noqa: BLE001 - reported below  # pragma: no cover
                errors.append(exc)

        t = threading.Thread(target=serve)
        t.start()
        with client_ctx.wrap_socket(b, server_hostname=hostname) as c:
            c.sendall(b"hello")
            assert c.recv(5) == b"hello"
            assert c.getpeercert()["subject"]
        t.join(10)
        assert not errors


def test_dask_tls_cli_args(tmp_path):
    tls = ensure_tls(tmp_path)
    assert dask_tls_cli_args(tls) == [
        "--tls-ca-file", str(tls.ca_file), "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file),
    ]


def test_dask_security_fields(tmp_path):
    tls = ensure_tls(tmp_path)
    sec = dask_security(tls)
    assert sec.require_encryption is True
    assert sec.tls_ca_file == str(tls.ca_file)
    for role in ("client", "scheduler", "worker"):
        assert getattr(sec, f"tls_{role}_cert") == str(tls.cert_file)
        assert getattr(sec, f"tls_{role}_key") == str(tls.key_file)


# ---------------------------------------------------------------------------
# a real Dask scheduler with mutual TLS
# ---------------------------------------------------------------------------

CONNECT_TIMEOUT = 5  # seconds Dask's client keeps trying
BOUND = 20  # seconds within which a rejected client must have failed


async def _rejected(make_client, expected=(OSError,)) -> BaseException:
    start = time.monotonic()
    with pytest.raises(expected) as info:
        async def attempt():
            async with make_client() as c:
                await c.scheduler.identity()
        await asyncio.wait_for(attempt(), BOUND)
    assert not isinstance(info.value, asyncio.TimeoutError), "client hung instead of failing"
    assert time.monotonic() - start < BOUND
    return info.value


# Dask's Client.__del__ leaves close() coroutines of clients that never connected
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_dask_scheduler_mutual_tls(tmp_path):
    from distributed import Client, Scheduler, Security, Worker

    tls = ensure_tls(tmp_path / "cluster")
    other = ensure_tls(tmp_path / "intruder")  # a different CA
    sec = dask_security(tls)

    async def main():
        async with Scheduler(host="127.0.0.1", port=0, protocol="tls", security=sec, dashboard_address=":0") as s:
            assert s.address.startswith("tls://127.0.0.1:")
            port = int(s.address.rsplit(":", 1)[1])

            # accepted: the cluster's certificate, and a worker that computes
            async with (Worker(s.address, security=sec, nthreads=1, dashboard=False) as w,
                        Client(s.address, security=sec, asynchronous=True, timeout=CONNECT_TIMEOUT) as c):
                info = await c.scheduler.identity()
                assert w.address in info["workers"]
                assert w.address.startswith("tls://")
                assert await c.submit(lambda x: x + 1, 41) == 42

            # rejected, concurrently so the test takes one connect timeout at most.
            # No security at all: Dask refuses a tls:// address without an SSL
            # context (TypeError) before connecting; the plain-TCP client and the
            # raw probe below show the server's own refusal.
            no_security = _rejected(
                lambda: Client(s.address, asynchronous=True, timeout=CONNECT_TIMEOUT),
                expected=(OSError, TypeError),
            )
            plain_tcp = _rejected(
                lambda: Client(f"tcp://127.0.0.1:{port}", asynchronous=True, timeout=CONNECT_TIMEOUT)
            )
            foreign_ca = _rejected(
                lambda: Client(s.address, security=dask_security(other), asynchronous=True, timeout=CONNECT_TIMEOUT)
            )
            # trusts our CA but presents another CA's certificate
            foreign_cert = _rejected(
                lambda: Client(
                    s.address,
                    security=Security(
                        require_encryption=True,
                        tls_ca_file=str(tls.ca_file),
                        tls_client_cert=str(other.cert_file),
                        tls_client_key=str(other.key_file),
                    ),
                    asynchronous=True,
                    timeout=CONNECT_TIMEOUT,
                )
            )
            await asyncio.gather(no_security, plain_tcp, foreign_ca, foreign_cert)

            # raw TLS without a client certificate: the server hangs up
            await _raw_tls_probe(port, tls, client_cert=False)
            # control: with the certificate the server answers
            await _raw_tls_probe(port, tls, client_cert=True)

    asyncio.run(main())
    gc.collect()  # let the failed clients' __del__ run under this test's warning filter


async def _raw_tls_probe(port: int, tls: TlsFiles, *, client_cert: bool) -> None:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    ctx.check_hostname = False
    if client_cert:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx), CONNECT_TIMEOUT
        )
    except (ssl.SSLError, ConnectionError) as exc:
        assert not client_cert, f"handshake with the cluster certificate failed: {exc}"
        return
    try:
        try:
            data = await asyncio.wait_for(reader.read(1), CONNECT_TIMEOUT)
        except (ssl.SSLError, ConnectionError):
            data = b""
        if client_cert:
            # accepted: the scheduler starts Dask's comm handshake
            assert data, "scheduler closed a connection that had the cluster certificate"
        else:
            # TLS 1.3: the server checks the client certificate after the
            # client's side of the handshake; its refusal arrives on first read
            assert data == b"", "scheduler talked to a client without a certificate"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass
