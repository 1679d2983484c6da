"""The REST API over HTTPS: our CLI and SDK and the official azure-batch 15.x SDK trust the
service's CA; a non-loopback interface without TLS is warned about (docs/security.md,
"REST API: transport, signatures, replay")."""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from hpcbatch.batch.errors import ServiceNotRunningError
from hpcbatch.batch.tokens import issue_job_token
from hpcbatch.client.cli import cli
from hpcbatch.client.sdk import BatchClient
from hpcbatch.client.state import service_connection
from tests.compat.conftest import ensure_sdk_venv

HERE = Path(__file__).resolve().parent
NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None, "HPCBATCH_STATE_DIR": None,
                  "REQUESTS_CA_BUNDLE": None}


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner(env=NO_SERVICE_ENV).invoke(cli, list(args), prog_name="hpcbatch",
                                                  catch_exceptions=False)
    assert result.exit_code == code, (f"hpcbatch {' '.join(args)} exited {result.exit_code}\n"
                                      f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A detached service started by the CLI with ``--tls``; yields its state dir and info."""
    sdir = tmp_path_factory.mktemp("tls") / "state"
    result = run("--state-dir", str(sdir), "service", "start", "--detach", "--port", "0",
                 "--scheduler-host", "127.0.0.1", "--tls", "-o", "json")
    info = json.loads(result.stdout)
    try:
        yield sdir, info
    finally:
        run("--state-dir", str(sdir), "service", "stop")


def test_cli_and_sdk_speak_https_trusting_the_state_dirs_ca(tls_service) -> None:
    sdir, info = tls_service
    assert info["endpoint"].startswith("https://127.0.0.1:")
    assert info["ca_file"] == str(sdir / "tls" / "ca.pem")
    run("--state-dir", str(sdir), "job", "create", "--id", "over-tls", "--pool-id", "nopool")
    jobs = json.loads(run("--state-dir", str(sdir), "job", "list", "-o", "json").stdout)
    assert [j["id"] for j in jobs] == ["over-tls"]
    with BatchClient.from_environment(sdir) as client:  # the SDK finds the CA by itself
        assert client.get_job("over-tls").id == "over-tls"


def test_a_client_that_does_not_trust_the_ca_cannot_connect(tls_service) -> None:
    sdir, info = tls_service
    conn = service_connection(sdir)
    with BatchClient(conn.endpoint, conn.account, conn.key) as stranger, \
            pytest.raises(ServiceNotRunningError, match="CERTIFICATE_VERIFY_FAILED"):
        stranger.list_jobs()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{info['endpoint']}/health", timeout=10)
    # the certificate is the service CA's, for the address the service is reached at
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    assert requests.get(f"{info['endpoint']}/health", timeout=10,
                        verify=info["ca_file"]).status_code == 200
    assert ctx.cert_store_stats()["x509_ca"] == 1
    # plain HTTP to the HTTPS port gets nothing
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(info["endpoint"].replace("https://", "http://") + "/health", timeout=10)


@pytest.mark.timeout(600)
def test_official_sdk_15_over_https_with_requests_ca_bundle(tls_service) -> None:
    """azure-batch 15.x: SharedKey and a job token (TokenCredential -> Bearer), over HTTPS."""
    sdir, info = tls_service
    try:
        python = ensure_sdk_venv("15")
    except RuntimeError as exc:  # no network for pip: say so rather than pass
        pytest.skip(f"the azure-batch 15.x venv cannot be built here: {exc}")
    conn = service_connection(sdir)
    # a token is bound to its job's incarnation (jobs.seq): the job first, then its token
    with BatchClient.from_environment(sdir) as client:
        client.create_job({"id": "sdk15-tls", "poolInfo": {"poolId": "nopool"}})
    with sqlite3.connect(sdir / "state.db") as db:
        [(seq,)] = db.execute("SELECT seq FROM jobs WHERE key = 'sdk15-tls'").fetchall()
    token = issue_job_token(conn.key, conn.account, "sdk15-tls", ["job"],
                            datetime.now(UTC) + timedelta(hours=1), job_seq=seq)
    env = {**os.environ, "AZ_BATCH_ENDPOINT": conn.endpoint, "AZ_BATCH_ACCOUNT": conn.account,
           "AZ_BATCH_KEY": conn.key, "REQUESTS_CA_BUNDLE": info["ca_file"],
           "JOB_ID": "sdk15-tls", "JOB_EXISTS": "1", "JOB_TOKEN": token}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(python), str(HERE / "sdk15_https.py")], env=env, cwd=HERE,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("COMPAT-RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    out = json.loads(lines[0][len("COMPAT-RESULT "):])
    assert out["job_state"] == "active"
    assert out["tasks_with_token"] == ["from-token"]
    assert out["list_pools_with_token"] == "403 AuthorizationFailure"
    assert out["other_job_with_token"] == "403 AuthorizationFailure"
    assert out["create_job_with_token"] == "403 AuthorizationFailure"
    with BatchClient.from_environment(sdir) as client:  # what the token could not do, it did not
        jobs = {j.id for j in client.list_jobs()}
        assert "sdk15-tls" in jobs and "sdk15-tls-new" not in jobs
        assert [t.id for t in client.list_tasks("sdk15-tls")] == ["from-token"]


@pytest.mark.timeout(300)
def test_non_loopback_without_tls_warns_on_stderr_and_in_the_log(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    result = run("--state-dir", str(sdir), "service", "start", "--detach", "--port", "0",
                 "--host", "0.0.0.0", "--scheduler-host", "127.0.0.1", "-o", "json")
    try:
        assert "warning: the REST API listens on 0.0.0.0" in result.stderr
        assert "--tls" in result.stderr
        assert "listens on 0.0.0.0, a non-loopback interface, over plain HTTP" in \
            (sdir / "service.log").read_text()
    finally:
        run("--state-dir", str(sdir), "service", "stop")
    quiet = run("--state-dir", str(tmp_path / "quiet"), "service", "start", "--detach",
                "--port", "0", "--scheduler-host", "127.0.0.1", "-o", "json")
    try:
        assert "warning" not in quiet.stderr
        assert "plain HTTP" not in (tmp_path / "quiet" / "service.log").read_text()
    finally:
        run("--state-dir", str(tmp_path / "quiet"), "service", "stop")


def test_local_batch_over_https() -> None:
    from hpcbatch import LocalBatch

    with LocalBatch(nodes=1, tls=True) as client:
        assert client.endpoint.startswith("https://")
        client.create_job({"id": "local-tls", "poolInfo": {"poolId": "nopool"}})
        assert [j.id for j in client.list_jobs()] == ["local-tls"]
        assert [h["name"] for h in client.list_hosts()] == ["local-1"]  # the operator's hosts
