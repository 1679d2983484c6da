"""Node identities (hpcbatch.execution.pki) and the scheduler's rules for them (guard).

No network: certificates are real (cryptography), the scheduler's message check is the
function the guard runs on every message a node identity sends.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from distributed.protocol import Serialize
from distributed.protocol import dumps as dask_dumps
from distributed.protocol.serialize import ToPickle

from hpcbatch.execution.guard import (
    NODE_REQUESTS,
    NODE_STREAM_OPS,
    RefusedMessage,
    check_node_message,
    strict_loads,
)
from hpcbatch.execution.pki import (
    NODE_ROLE,
    SERVICE_ROLE,
    PeerIdentity,
    ensure_tls,
    issue_node_credentials,
    node_uri,
    peer_identity,
)
from tests.security.certs import roleless_certificate


def _ous(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)]


def test_node_credentials_are_the_nodes_own(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    service = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    assert _ous(service) == [SERVICE_ROLE]
    a = issue_node_credentials(tls, "pool:1", "host-a@0001")
    b = issue_node_credentials(tls, "pool:1", "host-b@0002")
    cert = x509.load_pem_x509_certificate(a.cert_pem)
    cert.verify_directly_issued_by(ca)
    assert _ous(cert) == [NODE_ROLE]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == \
        [node_uri("pool:1", "host-a@0001")]
    key = serialization.load_pem_private_key(a.key_pem, password=None)
    assert key.public_key() == cert.public_key()
    assert a.ca_pem == tls.ca_file.read_bytes()
    assert a.key_pem != b.key_pem and a.cert_pem != b.cert_pem
    for secret in (tls.key_file.read_bytes(), (tmp_path / "tls" / "ca-key.pem").read_bytes()):
        assert secret not in (a.ca_pem + a.cert_pem + a.key_pem)
    assert "PRIVATE" not in repr(a)


def test_a_service_certificate_without_its_role_is_reissued_with_a_new_key(tmp_path) -> None:
    """Before node identities every node held the service's certificate and key."""
    tls = ensure_tls(tmp_path)
    old_cert, old_key = roleless_certificate(tls)
    tls.cert_file.write_bytes(old_cert)
    tls.key_file.write_bytes(old_key)
    again = ensure_tls(tmp_path)
    assert _ous(x509.load_pem_x509_certificate(again.cert_file.read_bytes())) == [SERVICE_ROLE]
    assert again.key_file.read_bytes() != old_key
    assert stat.S_IMODE(os.stat(again.key_file).st_mode) == 0o600


def test_peer_identity_reads_roles_strictly() -> None:
    def cert(*ous: str, uris: tuple[str, ...] = ()) -> dict[str, Any]:
        subject = ((("organizationName", "hpcbatch"),),
                   *((("organizationalUnitName", ou),) for ou in ous))
        return {"subject": subject, "subjectAltName": tuple(("URI", u) for u in uris)}

    assert peer_identity(cert(SERVICE_ROLE)) == PeerIdentity(SERVICE_ROLE)
    assert peer_identity(cert(NODE_ROLE, uris=(node_uri("p:x", "n@1"),))) == \
        PeerIdentity(NODE_ROLE, "p:x", "n@1")
    for bad in (cert(), cert("other"), cert(SERVICE_ROLE, NODE_ROLE), cert(NODE_ROLE),
                cert(NODE_ROLE, uris=("urn:hpcbatch:node:p",)),
                cert(NODE_ROLE, uris=(node_uri("p", "a"), node_uri("p", "b"))),
                cert(NODE_ROLE, uris=("https://example/",)), {}, None):
        assert peer_identity(bad) is None, bad


ME = PeerIdentity(NODE_ROLE, "pool", "host-a@0001")
WORKERS = {"tls://10.0.0.1:1": SimpleNamespace(name="host-a@0001"),
           "tls://10.0.0.2:1": SimpleNamespace(name="host-b@0002")}


def test_a_node_may_send_what_a_worker_sends() -> None:
    register = {"op": "register-worker", "name": "host-a@0001", "address": "tls://10.0.0.1:1"}
    assert check_node_message(register, ME, WORKERS) is register
    own = {"op": "heartbeat_worker", "address": "tls://10.0.0.1:1", "metrics": {}}
    assert check_node_message(own, ME, WORKERS) is own
    unknown = {"op": "heartbeat_worker", "address": "tls://10.0.0.9:1", "metrics": {}}
    assert check_node_message(unknown, ME, WORKERS) is unknown  # the scheduler says missing
    stream = ({"op": "keep-alive"}, {"op": "log-event", "topic": "print", "msg": "hi"},
              {"op": "worker-status-change", "status": "closing", "stimulus_id": "s"})
    assert check_node_message(stream, ME, WORKERS) == [stream[0], stream[2]]  # no log-event
    assert {"register-worker", "heartbeat_worker"} <= NODE_REQUESTS
    assert "keep-alive" in NODE_STREAM_OPS


@pytest.mark.parametrize("msg", [
    {"op": "register-worker", "name": "host-b@0002"},  # impersonation
    {"op": "register-worker", "name": "host-a@0001x"},
    {"op": "heartbeat_worker", "address": "tls://10.0.0.2:1", "metrics": {}},  # another's
    {"op": "heartbeat_worker", "metrics": {}},
    {"op": "heartbeat_worker", "address": "tls://10.0.0.1:1", "resolve_address": False},
    *({"op": op} for op in ("register-client", "run_function", "broadcast", "proxy",
                            "register_scheduler_plugin", "register_worker_plugin",
                            "register_nanny_plugin", "retire_workers", "restart",
                            "restart_workers", "terminate", "identity", "scatter", "gather",
                            "feed", "unregister", "update-graph", "dump_cluster_state_to_url")),
    [{"op": "update-graph"}],  # client ops on a worker's stream
    [{"op": "keep-alive"}, {"op": "subscribe-topic", "topic": "x"}],
    [{"op": "task-finished", "key": "x"}],
    [{"op": "worker-status-change", "status": "closed", "worker": "tls://10.0.0.2:1"}],
    ["OK"], "OK", None,
], ids=str)
def test_a_node_may_not_send_anything_else(msg: Any) -> None:
    with pytest.raises(RefusedMessage):
        check_node_message(msg, ME, WORKERS)


def test_strict_reads_take_msgpack_only(tmp_path: Path) -> None:
    plain = {"op": "heartbeat_worker", "metrics": {"cpu": 1.5}, "keys": {"a"}, "b": b"x"}
    assert strict_loads(dask_dumps(plain)) == {**plain, "keys": {"a"}}
    for payload in (ToPickle(object()), Serialize(object())):
        with pytest.raises(RefusedMessage):
            strict_loads(dask_dumps({"op": "x", "data": payload}))
