"""Certificates: "Certificate - Add/List/Get/Delete/Cancel Deletion", pools'
``certificateReferences``, and their installation in ``AZ_BATCH_CERTIFICATES_DIR`` on the
nodes of a pool on a real sshd testbed (127.0.94.1)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from hpcbatch.execution.certificates import pfx_to_pem
from tests.api.wire import Http, batch_error
from tests.helpers import account_key, service_on_testbed


def make_cert(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert, key


def thumbprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def cer_body(cert: x509.Certificate) -> dict[str, Any]:
    return {"thumbprint": thumbprint(cert), "thumbprintAlgorithm": "sha1",
            "certificateFormat": "cer",
            "data": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()}


def pfx_body(cert: x509.Certificate, key: Any, password: str) -> dict[str, Any]:
    data = pkcs12.serialize_key_and_certificates(
        b"test", key, cert, None, serialization.BestAvailableEncryption(password.encode()))
    return {"thumbprint": thumbprint(cert), "thumbprintAlgorithm": "sha1",
            "certificateFormat": "pfx", "password": password,
            "data": base64.b64encode(data).decode()}


def cert_path(cert: x509.Certificate) -> str:
    return f"/certificates(thumbprintAlgorithm=sha1,thumbprint={thumbprint(cert)})"


def ref(cert: x509.Certificate, **extra: Any) -> dict[str, Any]:
    return {"thumbprint": thumbprint(cert), "thumbprintAlgorithm": "sha1", **extra}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("certs")
    with service_on_testbed(tmp, 1, "127.0.94.1") as (client, _bed, thread):
        http = Http(thread.runtime.endpoint, "hpcbatch", account_key(tmp / "state"))
        yield client, http, thread


def test_add_validates_and_get_list(env) -> None:
    _, http, _ = env
    cert, key = make_cert("a")
    other, _ = make_cert("b")
    body = cer_body(cert)
    for bad, field in (({**body, "thumbprintAlgorithm": "sha256"}, "thumbprintAlgorithm"),
                       ({**body, "thumbprint": "xyz"}, "thumbprint"),
                       ({**body, "certificateFormat": "p12"}, "certificateFormat"),
                       ({**body, "data": "not base64!"}, "data"),
                       ({**body, "password": "x"}, "password"),
                       ({**pfx_body(cert, key, "right"), "password": "wrong"}, "password")):
        err = batch_error(http("POST", "/certificates", bad), 400, "InvalidPropertyValue")
        assert {"key": "PropertyName", "value": field} in err["values"], err
    batch_error(http("POST", "/certificates", {**body, "thumbprint": thumbprint(other)}), 400,
                "CertificateMismatch")
    batch_error(http("POST", "/certificates", {k: v for k, v in body.items() if k != "data"}),
                400, "MissingRequiredProperty")
    resp = http("POST", "/certificates", body)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"].endswith(cert_path(cert))
    batch_error(http("POST", "/certificates", body), 409, "CertificateExists")
    got = http("GET", cert_path(cert)).json()
    assert got["thumbprint"] == thumbprint(cert) and got["state"] == "active"
    assert base64.b64decode(got["publicData"]) == cert.public_bytes(serialization.Encoding.DER)
    assert "data" not in got and "password" not in got
    listed = http("GET", "/certificates", params={"$filter": "state eq 'active'"}).json()
    assert thumbprint(cert) in [c["thumbprint"] for c in listed["value"]]
    batch_error(http("GET", cert_path(other)), 404, "CertificateNotFound")
    assert http("DELETE", cert_path(cert)).status_code == 202
    batch_error(http("GET", cert_path(cert)), 404, "CertificateNotFound")


def test_pool_certificates_are_installed_and_deletion_is_blocked(env) -> None:
    client, http, thread = env
    cer, _ = make_cert("cer")
    pfx, pfx_key = make_cert("pfx")
    missing, _ = make_cert("missing")
    assert http("POST", "/certificates", cer_body(cer)).status_code == 201
    assert http("POST", "/certificates", pfx_body(pfx, pfx_key, "s3cret")).status_code == 201
    pool: dict[str, Any] = {"id": "certpool", "vmSize": "testbed", "targetDedicatedNodes": 0}
    err = batch_error(http("POST", "/pools", {**pool, "certificateReferences": [ref(missing)]}),
                      400, "InvalidPropertyValue")
    assert {"key": "PropertyName", "value": "certificateReferences[0].thumbprint"} in \
        err["values"]
    resp = http("POST", "/pools", {**pool, "targetDedicatedNodes": 1, "certificateReferences": [
        ref(cer, visibility=["task"]), ref(pfx, visibility=["starttask", "task"])],
        "startTask": {"commandLine": "/bin/sh -c 'ls $AZ_BATCH_CERTIFICATES_DIR'",
                      "waitForSuccess": True}})
    assert resp.status_code == 201, resp.text
    [node] = client.wait_for_pool("certpool", timeout_s=120)
    assert node.state == "idle", node.errors
    root = Path(next(iter(thread.runtime.service.pool_manager.nodes_of("certpool"))).root_dir)
    certs = root / "certs"
    tp_cer, tp_pfx = thumbprint(cer).lower(), thumbprint(pfx).lower()
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        [f"sha1-{tp_cer}.cer", f"sha1-{tp_pfx}.pfx", f"sha1-{tp_pfx}.pem"])
    # the start task saw them in AZ_BATCH_CERTIFICATES_DIR
    listed = client.download_node_file("certpool", node.id, "startup/stdout.txt").decode()
    assert f"sha1-{tp_cer}.cer" in listed and f"sha1-{tp_pfx}.pem" in listed
    assert (certs / f"sha1-{tp_cer}.cer").read_bytes() == cer.public_bytes(
        serialization.Encoding.DER)
    pem = (certs / f"sha1-{tp_pfx}.pem").read_bytes()
    assert x509.load_pem_x509_certificate(pem) == pfx
    loaded = serialization.load_pem_private_key(pem, None)
    assert loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        pfx_key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (certs / f"sha1-{tp_pfx}.pem").stat().st_mode & 0o007 == 0  # not world-readable
    # deleting a referenced certificate is blocked: deletefailed, naming the pool
    assert http("DELETE", cert_path(cer)).status_code == 202
    got = http("GET", cert_path(cer)).json()
    assert got["state"] == "deletefailed" and got["previousState"] == "active"
    assert got["deleteCertificateError"]["code"] == "CertificateStateDeleteFailed"
    assert {"name": "PoolId", "value": "certpool"} in got["deleteCertificateError"]["values"]
    # a pool cannot reference it meanwhile
    batch_error(http("POST", "/pools", {**pool, "id": "p2", "certificateReferences": [ref(cer)]}),
                409, "CertificateBeingDeleted")
    assert http("POST", cert_path(cer) + "/canceldelete").status_code == 204
    assert http("GET", cert_path(cer)).json()["state"] == "active"
    batch_error(http("POST", cert_path(cer) + "/canceldelete"), 409, "CertificateStateActive")
    # the pool drops the certificate (Update Properties with an empty list): deletable;
    # a rebooted node gets the pool's certificates again: none left
    resp = http("POST", "/pools/certpool/updateproperties", {
        "certificateReferences": [], "applicationPackageReferences": [], "metadata": []})
    assert resp.status_code == 204, resp.text
    assert http("DELETE", cert_path(cer)).status_code == 202
    batch_error(http("GET", cert_path(cer)), 404, "CertificateNotFound")
    client.reboot_node("certpool", node.id)
    client.wait_for_pool("certpool", timeout_s=120)
    assert list(certs.iterdir()) == []
    client.delete_pool("certpool")


def test_pfx_to_pem_refuses_a_wrong_password() -> None:
    cert, key = make_cert("x")
    data = base64.b64decode(pfx_body(cert, key, "right")["data"])
    with pytest.raises(ValueError):
        pfx_to_pem(data, "wrong")
    assert b"PRIVATE KEY" in pfx_to_pem(data, "right")


def test_cli_certificates(env, tmp_path) -> None:
    from tests.test_cli_more import run, run_json

    client, _http, thread = env
    cli_env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": "hpcbatch",
               "AZURE_BATCH_ACCESS_KEY": account_key(thread.runtime.state_dir)}
    cert, key = make_cert("cli")
    pfx = tmp_path / "c.pfx"
    pfx.write_bytes(base64.b64decode(pfx_body(cert, key, "pw")["data"]))
    tp = thumbprint(cert)
    err = run(cli_env, "certificate", "create", "--certificate-file", str(pfx), "--thumbprint",
              tp, "--password", "bad", code=1)
    assert "InvalidPropertyValue" in err.stderr and "password" in err.stderr
    run(cli_env, "certificate", "create", "--certificate-file", str(pfx), "--thumbprint", tp,
        "--password", "pw")
    assert run_json(cli_env, "certificate", "show", "--thumbprint", tp)["state"] == "active"
    assert tp in [c["thumbprint"] for c in run_json(cli_env, "certificate", "list", "--filter",
                                                     "state eq 'active'")]
    err = run(cli_env, "certificate", "cancel-delete", "--thumbprint", tp, code=1)
    assert "CertificateStateActive" in err.stderr
    run(cli_env, "certificate", "delete", "--thumbprint", tp)
    err = run(cli_env, "certificate", "show", "--thumbprint", tp, code=1)
    assert "CertificateNotFound" in err.stderr
