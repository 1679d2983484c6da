"""File delete, node users (SDK 15.x) and certificates (SDK 14.x: 15.x has no Certificate
operations) through the official SDKs, against the compat service's sshd testbed."""

from __future__ import annotations

import json
import os

import pytest

from tests.test_certificates import make_cert, pfx_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="node users need a root node agent")


def test_sdk15_file_delete_and_node_users(run_sdk) -> None:
    run = run_sdk("15", "sdk15_nodeops.py", "node_ops", timeout_s=600)
    assert run.returncode == 0 and run.result is not None, run.describe()
    r = run.result
    assert {"stdout.txt", "wd/out/sub/x.txt"} <= set(r["before"])
    assert r["not_empty"] == {"status": 409, "code": "DirectoryNotEmpty"}
    assert "stdout.txt" not in r["after"] and "stderr.txt" in r["after"]
    assert not any(n.startswith("wd/out") for n in r["after"])
    assert r["missing"] == r["secrets"] == {"status": 404, "code": "FileNotFound"}
    # the SDK sends "../x" as is; the path the service sees no longer matches the signed one
    # (or, signed as normalised, it is not a node file): refused either way
    assert r["escape"] in ({"status": 404, "code": "FileNotFound"},
                           {"status": 403, "code": "AuthenticationFailed"}), r["escape"]
    assert "startup/stdout.txt" not in r["node_files"] and "startup/stderr.txt" in r["node_files"]
    assert r["ssh1"] == {"code": 0, "out": "sdk15nodeuser"}, r
    assert r["exists"] == {"status": 409, "code": "NodeUserExists"}
    assert r["ssh1_after_replace"] != 0
    assert r["ssh2"] == {"code": 0, "out": "sdk15nodeuser"}
    assert r["ssh2_after_delete"] != 0
    assert r["delete_again"] == {"status": 404, "code": "NodeUserNotFound"}


def test_sdk14_certificates(run_sdk, monkeypatch) -> None:
    cert, key = make_cert("sdk14")
    body = pfx_body(cert, key, "pw")
    monkeypatch.setenv("COMPAT_CERT", json.dumps(
        {"thumbprint": body["thumbprint"], "data": body["data"], "password": "pw"}))
    run = run_sdk("14", "sdk14_certificates.py", "certificates", timeout_s=600)
    assert run.returncode == 0 and run.result is not None, run.describe()
    r = run.result
    tp = body["thumbprint"].lower()
    assert r["bad_password"] == {"status": 400, "code": "InvalidPropertyValue"}
    assert r["get"] == {"thumbprint": body["thumbprint"], "state": "active"}
    assert body["thumbprint"] in r["listed"]
    assert sorted(r["task_sees"]) == [f"sha1-{tp}.pem", f"sha1-{tp}.pfx"]
    assert r["after_delete"] == {"state": "deletefailed", "error": "CertificateStateDeleteFailed"}
    assert r["after_cancel"] == "active"
    assert r["cancel_active"] == {"status": 409, "code": "CertificateStateActive"}
    assert r["gone"] == {"status": 404, "code": "CertificateNotFound"}
