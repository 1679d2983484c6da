"""The service end to end on a real PostgreSQL server: a job runs, several clients
adding tasks at once lose nothing, and a restart without --database-url finds the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpcbatch.client.sdk import BatchClient
from tests import postgres
from tests.helpers import running_service


def test_a_job_on_postgresql_with_concurrent_clients(tmp_path: Path,
                                                      postgres_admin_url: str) -> None:
    url = postgres.new_database(postgres_admin_url)
    with running_service(tmp_path / "state", database_url=url,
                         scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{90 + i}", "provider": "local",
                           "root_dir": str(tmp_path / f"n{i}"), "python": sys.executable}
                          for i in range(2)])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2,
                            "taskSlotsPerNode": 2})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})

        def add(worker: int) -> None:  # 4 clients, 100 tasks each, in chunks of 25
            for chunk in range(4):
                client.create_tasks("j", [
                    {"id": f"w{worker}-{chunk}-{i}", "commandLine": f"echo {worker}-{chunk}-{i}"}
                    for i in range(25)])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, range(4)))
        counts = client.wait_for_tasks("j", timeout_s=300)
        assert counts["succeeded"] == 400 and counts["failed"] == 0
        assert len({t.id for t in client.list_tasks("j")}) == 400
        assert client.download_task_file("j", "w3-2-7", "stdout.txt").strip() == b"3-2-7"


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcbatch.client.cli", "--state-dir", str(state),
                           *args], check=False, capture_output=True, text=True, timeout=180)


def test_a_restart_without_database_url_uses_the_store_of_the_last_start(
        tmp_path: Path, postgres_admin_url: str) -> None:
    # The operator starts the service on PostgreSQL, it dies (kill -9), and they start it
    # again as the README's first line does: without --database-url. It must come back
    # on the same store, not on a new, empty SQLite file showing no pools.
    url = postgres.new_database(postgres_admin_url)
    state = tmp_path / "state"
    started = _cli(state, "-o", "json", "service", "start", "--detach", "--port", "0",
                   "--database-url", url)
    assert started.returncode == 0, started.stderr
    try:
        with BatchClient.from_environment(state) as client:
            client.create_pool({"id": "kept", "vmSize": "any", "targetDedicatedNodes": 0})
        os.kill(json.loads(started.stdout)["pid"], signal.SIGKILL)
        restarted = _cli(state, "-o", "json", "service", "start", "--detach", "--port", "0")
        assert restarted.returncode == 0, restarted.stderr
        with BatchClient.from_environment(state) as client:
            assert [p.id for p in client.list_pools()] == ["kept"]
        assert json.loads(started.stdout)["database"] == url  # no password in this URL
        status = _cli(state, "-o", "json", "service", "status")
        assert status.returncode == 0 and json.loads(status.stdout)["database"] == url
        assert not (state / "state.db").exists()
        assert (state / "store.json").stat().st_mode & 0o077 == 0
    finally:
        _cli(state, "service", "stop")
    assert _cli(state, "service", "status").returncode == 1


def test_the_remembered_store_url_hides_its_password() -> None:
    from hpcbatch.api.server import url_without_password

    assert url_without_password("postgresql+psycopg://u:s3cret@db:5432/x") == \
        "postgresql+psycopg://u:***@db:5432/x"
