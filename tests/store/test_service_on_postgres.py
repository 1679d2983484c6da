"""The service end to end on a real PostgreSQL server: a job runs, and several clients
adding tasks at once lose nothing."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
