"""File delete and node users with the official ``azure-batch`` 15.x SDK.

Run as ``python sdk15_nodeops.py node_ops`` by tests/compat/test_sdk_nodeops.py with
the interpreter of the 15.x venv (see _harness.py). A node user added with an SSH key
logs in with the ``ssh`` client at the address Get Remote Login Settings gives.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _harness import ACCOUNT, ENDPOINT, KEY, PREFIX, VM_SIZE, main, wait_for
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError


def client() -> BatchClient:
    return BatchClient(ENDPOINT, AzureNamedKeyCredential(ACCOUNT, KEY))


def error(call: Any) -> dict[str, Any] | str:
    try:
        call()
    except HttpResponseError as exc:
        return {"status": exc.status_code, "code": exc.error.code if exc.error else None}
    return "no error"


def keypair(folder: Path, name: str) -> tuple[Path, str]:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, Path(f"{key}.pub").read_text().strip()


def ssh(key: Path, user: str, address: str, port: int, command: str) -> dict[str, Any]:
    res = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{user}@{address}", command],
        capture_output=True, text=True, timeout=60, check=False)
    return {"code": res.returncode, "out": res.stdout.strip()}


def node_ops() -> dict[str, Any]:
    c = client()
    pool_id, job_id, user = f"{PREFIX}-nops", f"{PREFIX}-nops-job", f"{PREFIX}nodeuser"
    c.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=1,
        start_task=m.BatchStartTask(command_line="/bin/sh -c 'echo started'")))
    node = wait_for(lambda: [n for n in c.list_nodes(pool_id) if n.state == "idle"], 180,
                    "an idle node")[0]
    out: dict[str, Any] = {}
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    c.create_task(job_id, m.BatchTaskCreateOptions(
        id="t", command_line="/bin/sh -c 'mkdir -p out/sub && echo x > out/sub/x.txt'"))
    wait_for(lambda: c.get_task(job_id, "t").state == m.BatchTaskState.COMPLETED, 120, "task t")

    def names() -> list[str]:
        return sorted(f.name for f in c.list_task_files(job_id, "t", recursive=True))

    out["before"] = names()
    c.delete_task_file(job_id, "t", "stdout.txt")
    out["not_empty"] = error(lambda: c.delete_task_file(job_id, "t", "wd/out", recursive=False))
    c.delete_task_file(job_id, "t", "wd/out", recursive=True)
    out["after"] = names()
    time.sleep(1.1)  # the same request again: a new date, else the service sees a replay
    out["missing"] = error(lambda: c.delete_task_file(job_id, "t", "stdout.txt"))
    out["escape"] = error(lambda: c.delete_node_file(pool_id, node.id, "../x", recursive=True))
    out["secrets"] = error(lambda: c.delete_node_file(pool_id, node.id, "secrets",
                                                      recursive=True))
    c.delete_node_file(pool_id, node.id, "startup/stdout.txt")
    out["node_files"] = sorted(f.name for f in c.list_node_files(pool_id, node.id,
                                                                 recursive=True)
                               if f.name.startswith("startup/"))
    with tempfile.TemporaryDirectory() as tmp:
        key1, pub1 = keypair(Path(tmp), "k1")
        key2, pub2 = keypair(Path(tmp), "k2")
        c.create_node_user(pool_id, node.id, m.BatchNodeUserCreateOptions(
            name=user, is_admin=False, ssh_public_key=pub1,
            expiry_time=datetime.now(UTC) + timedelta(days=2)))
        login = c.get_node_remote_login_settings(pool_id, node.id)
        address, port = login.remote_login_ip_address, login.remote_login_port
        out["login"] = {"address": address, "port": port}
        out["ssh1"] = ssh(key1, user, address, port, "id -un")
        out["exists"] = error(lambda: c.create_node_user(pool_id, node.id, m.BatchNodeUserCreateOptions(
            name=user, ssh_public_key=pub1)))
        c.replace_node_user(pool_id, node.id, user,
                            m.BatchNodeUserReplaceOptions(ssh_public_key=pub2))
        out["ssh1_after_replace"] = ssh(key1, user, address, port, "id -un")["code"]
        out["ssh2"] = ssh(key2, user, address, port, "id -un")
        c.delete_node_user(pool_id, node.id, user)
        out["ssh2_after_delete"] = ssh(key2, user, address, port, "id -un")["code"]
        time.sleep(1.1)
        out["delete_again"] = error(lambda: c.delete_node_user(pool_id, node.id, user))
    c.begin_delete_job(job_id, polling_interval=1).result()
    c.begin_delete_pool(pool_id, polling_interval=1).result()
    return out


if __name__ == "__main__":
    main({"node_ops": node_ops})
