"""One scheduling pass starts tasks whose specifications differ in small ways: each
run gets its own task's settings, limits and retries, not those of a look-alike
(the dispatcher shares what tasks that differ only in ``id`` have in common)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service, wait_until

SCRIPT = ("import os; open('out.txt', 'w').write(os.environ.get('AZ_BATCH_TASK_ID', '') + ':' "
          "+ os.environ.get('COLOR', '-'))")


def test_a_pass_gives_each_task_its_own_specification(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"sim{i}", "address": "127.0.0.1", "provider": "simulated",
                           "cores": 8, "labels": ["sim"],
                           "root_dir": str(tmp_path / "nodes" / f"sim{i}")} for i in range(2)])
        client.create_pool({"id": "p", "vmSize": "sim", "targetDedicatedNodes": 2,
                            "taskSlotsPerNode": 8})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.disable_job("j")  # every task is queued first: they start in the same pass
        command = f'{sys.executable} -c "{SCRIPT}"'
        tasks = [{"id": f"red{i}", "commandLine": command,
                  "environmentSettings": [{"name": "COLOR", "value": "red"}]} for i in range(3)]
        tasks += [{"id": f"blue{i}", "commandLine": command,
                   "environmentSettings": [{"name": "COLOR", "value": "blue"}]} for i in range(3)]
        tasks += [{"id": "plain", "commandLine": command}]
        tasks += [{"id": f"fail{i}", "commandLine": "exit 3",
                   "constraints": {"maxTaskRetryCount": i}} for i in range(3)]
        tasks += [{"id": "slow", "commandLine": "sleep 30",
                   "constraints": {"maxWallClockTime": "PT1S"}},
                  {"id": "quick", "commandLine": "sleep 0.1"}]
        client.create_tasks("j", tasks)
        client.enable_job("j")
        wait_until(lambda: client.get_task_counts("j")["completed"] == len(tasks), 120,
                   what="every task completed")
        for t in client.list_tasks("j"):
            info = t.execution_info
            if t.id.startswith(("red", "blue", "plain")):
                wd = (tmp_path / "nodes" / t.node_info.node_id
                      / t.node_info.task_root_directory / "wd")
                color = "-" if t.id == "plain" else t.id.rstrip("0123456789")
                assert (wd / "out.txt").read_text() == f"{t.id}:{color}", t.id
                assert info.exit_code == 0
            elif t.id.startswith("fail"):
                assert info.exit_code == 3 and info.retry_count == int(t.id[-1]), (
                    t.id, info.retry_count)
            elif t.id == "slow":
                assert info.failure_info.code == "TaskEnded", info.failure_info
            else:
                assert info.exit_code == 0 and info.failure_info is None
