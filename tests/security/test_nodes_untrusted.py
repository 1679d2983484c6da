"""Nodes are untrusted peers of the service (docs/security.md, "Nodes").

A service over a 2-host SSH testbed (127.0.41.1-2: real sshd, real Dask, real TLS) runs a
2-node pool. A task reads everything it can under its node root, takes the node's TLS
material and tries to run code on the service machine (through the scheduler) and on the
other node (through its worker); none of it runs, and the service keeps running tasks.
The node files API never serves the node's secrets, and no Dask HTTP server listens on
8787 or on a non-loopback address.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID

from hpcbatch.execution.pki import NODE_ROLE, node_uri
from tests.api.wire import Http, batch_error
from tests.helpers import account_key, service_on_testbed

POOL = "untrusted"
ATTACK = Path(__file__).with_name("attack_node.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """A service with a 2-node pool on two testbed hosts, ready."""
    tmp = tmp_path_factory.mktemp("untrusted")
    with service_on_testbed(tmp, 2, "127.0.41.1") as (client, bed, thread):
        client.create_pool({"id": POOL, "vmSize": "testbed", "targetDedicatedNodes": 2,
                            "taskSlotsPerNode": 2})
        nodes = client.wait_for_pool(POOL, timeout_s=120)
        assert [n.state for n in nodes] == ["idle", "idle"], [(n.id, n.errors) for n in nodes]
        http = Http(thread.runtime.endpoint, "hpcbatch", account_key(tmp / "state"))
        yield client, bed, thread, tmp, http


def runtime_nodes(thread: Any) -> list[Any]:
    return list(thread.runtime.service.pool_manager.nodes_of(POOL))


def run_job(client: Any, job_id: str, tasks: list[dict[str, Any]]) -> dict[str, int]:
    client.create_job({"id": job_id, "poolInfo": {"poolId": POOL}})
    client.create_tasks(job_id, tasks)
    return client.wait_for_tasks(job_id, timeout_s=180)


# ---------------------------------------------------------------------------
# identities
# ---------------------------------------------------------------------------


def test_each_node_holds_its_own_certificate_and_no_service_key(env) -> None:
    _, _, thread, tmp, _ = env
    service_key = (tmp / "state" / "tls" / "key.pem").read_bytes()
    ca_key = (tmp / "state" / "tls" / "ca-key.pem").read_bytes()
    certs = set()
    for node in runtime_nodes(thread):
        root = Path(node.root_dir)
        secrets = root / "secrets"
        assert oct(secrets.stat().st_mode & 0o777) == "0o700"
        assert oct((secrets / "tls").stat().st_mode & 0o777) == "0o700"
        assert oct((secrets / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
        assert sorted(p.name for p in (secrets / "tls").iterdir()) == \
            ["ca.pem", "cert.pem", "key.pem"]
        everything = b"".join(p.read_bytes() for p in root.rglob("*")
                              if p.is_file() and not p.is_symlink())
        assert service_key not in everything and ca_key not in everything
        assert not (root / "tls").exists()  # the old shared-certificate folder
        cert = (secrets / "tls" / "cert.pem").read_bytes()
        certs.add(cert)
        parsed = x509.load_pem_x509_certificate(cert)
        ous = parsed.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        assert [a.value for a in ous] == [NODE_ROLE]
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == \
            [node_uri(POOL, node.worker_name)]
    assert len(certs) == 2


# ---------------------------------------------------------------------------
# a hostile task
# ---------------------------------------------------------------------------


def test_a_task_with_everything_on_its_node_runs_nothing_elsewhere(env, tmp_path) -> None:
    client, _, thread, _, _ = env
    markers = tmp_path / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    nodes = runtime_nodes(thread)
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({n.node_id: [n.worker, n.worker_name] for n in nodes}))
    targets.chmod(0o644)
    command = shlex.join([sys.executable, str(ATTACK), str(markers), str(targets)])
    counts = run_job(client, "attack", [{"id": "attack", "commandLine": command}])
    assert counts["completed"] == 1, counts
    task = client.get_task("attack", "attack")
    out = client.download_task_file("attack", "attack", "stdout.txt")
    err = client.download_task_file("attack", "attack", "stderr.txt")
    assert task.execution_info.exit_code == 0, err.decode()[-3000:]
    reports = [json.loads(out)]
    if reports[0]["tls"] != ["ca", "cert", "key"]:
        # The task could not read the node's TLS files (it runs as another user than
        # the agent): assume the worst anyway and attack with them from outside.
        node = next(n for n in nodes if n.node_id == task.node_info.node_id)
        proc = subprocess.run(
            [sys.executable, str(ATTACK), str(markers), str(targets)], capture_output=True,
            text=True, timeout=600, check=True,
            env={**os.environ, "AZ_BATCH_NODE_ROOT_DIR": node.root_dir,
                 "AZ_BATCH_NODE_ID": node.node_id})
        reports.append(json.loads(proc.stdout))
    report = reports[-1]
    assert report["tls"] == ["ca", "cert", "key"]
    attempts = report["attempts"]
    expected = {"client", "scheduler run_function", "scheduler broadcast",
                "scheduler register-client", "scheduler register_scheduler_plugin",
                "scheduler register_worker_plugin", "scheduler proxy",
                "scheduler retire_workers", "scheduler restart", "scheduler terminate",
                "scheduler identity", "register-worker as another node",
                "pickle to the scheduler"}
    for label in ("other node", "own node"):
        expected |= {f"{label} {op}" for op in ("run", "hpcbatch_call", "hpcbatch_exchange",
                                                 "plugin-add", "get_data", "terminate")}
    assert set(attempts) == expected
    assert report["controls"]["heartbeat of its own worker"].startswith("ACCEPTED"), report
    accepted = {k: v for k, v in attempts.items() if not v.startswith("refused")}
    assert accepted == {}
    time.sleep(2)  # anything that slipped through has run by now
    assert sorted(p.name for p in markers.iterdir()) == []

    # Nothing changed: both nodes are still there and the service runs tasks on them.
    assert len(client.list_nodes(POOL)) == 2
    counts = run_job(client, "after-attack", [
        {"id": f"t{i}", "commandLine": "/bin/sh -c 'echo $AZ_BATCH_NODE_ID'"} for i in range(6)])
    assert counts["succeeded"] == 6, counts
    ran_on = {client.get_task("after-attack", f"t{i}").node_info.node_id for i in range(6)}
    assert ran_on <= {n.node_id for n in nodes}
    assert {n.state for n in client.list_nodes(POOL)} <= {"idle", "running"}


# ---------------------------------------------------------------------------
# node secrets are not node files
# ---------------------------------------------------------------------------


def test_node_secrets_are_never_served(env) -> None:
    client, _, thread, _, http = env
    node = runtime_nodes(thread)[0]
    root = Path(node.root_dir)
    # What a task could leave in the node root to reach the secrets through the API.
    (root / "shared" / "key-link").unlink(missing_ok=True)
    (root / "shared" / "key-link").symlink_to(root / "secrets" / "tls" / "key.pem")
    (root / "shared" / "secrets-link").unlink(missing_ok=True)
    (root / "shared" / "secrets-link").symlink_to(root / "secrets")
    base = f"/pools/{POOL}/nodes/{node.node_id}/files"
    for path in ("secrets/tls/key.pem", "secrets/tls/cert.pem", "secrets/tls",
                 "shared/../secrets/tls/key.pem", "shared/%2E%2E/secrets/tls/key.pem",
                 "./secrets/tls/key.pem", "secrets%2Ftls%2Fkey.pem", "shared/key-link",
                 "shared/secrets-link/tls/key.pem", "shared/secrets-link/../secrets/tls/key.pem",
                 "workitems/%2E%2E/secrets/tls/key.pem"):
        for method in ("GET", "HEAD"):
            resp = http(method, f"{base}/{path}")
            assert resp.status_code == 404, (method, path, resp.status_code)
            if method == "GET":
                batch_error(resp, 404, "FileNotFound")
    listed = {f.name for f in client.list_node_files(POOL, node.node_id, recursive=True)}
    assert "shared" in listed and "startup" in listed  # the listing works
    assert not any(n == "secrets" or n.startswith("secrets/") or "key-link" in n
                   or "secrets-link" in n for n in listed), sorted(listed)
    shallow = {f.name for f in client.list_node_files(POOL, node.node_id)}
    assert "secrets" not in shallow
    # A plain node file still downloads (the refusal is about secrets only).
    (root / "shared" / "plain.txt").write_bytes(b"plain")
    assert client.download_node_file(POOL, node.node_id, "shared/plain.txt") == b"plain"


# ---------------------------------------------------------------------------
# Dask HTTP servers
# ---------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def test_no_dask_http_server_on_8787_or_off_loopback(env) -> None:
    _, _, thread, _, _ = env
    engine = thread.runtime.engine
    processes = _tree(engine.proc.pid)
    comm_ports = {engine.port}
    for node in runtime_nodes(thread):
        pid = int((Path(node.root_dir) / "node.pid").read_text())
        processes += _tree(pid)
        comm_ports.add(int(node.worker.rsplit(":", 1)[1]))
    pids = {p.pid for p in processes}
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "found no listening socket of the scheduler and nodes"
    assert all(c.laddr.port != 8787 for c in listening), listening
    others = [c for c in listening if c.laddr.port not in comm_ports]
    assert len(others) >= 3  # one HTTP server each: the scheduler and the two workers
    assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in others), others
    # The HTTP servers answer the health route only (no dashboard, info pages or proxy).
    for c in others:
        url = f"http://127.0.0.1:{c.laddr.port}"
        assert requests.get(f"{url}/health", timeout=10).text == "ok"
        for path in ("/info/main/workers.html", "/json/identity.json", "/proxy/8786/127.0.0.1/",
                     "/status", "/metrics"):
            assert requests.get(url + path, timeout=10).status_code == 404, path
