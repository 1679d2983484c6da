"""The compute node process: ``python -m hpcbatch.node CONFIG``.

A provider (ssh or local) uploads a JSON config to the host and starts this
module detached. It creates the node directory layout, ends whatever an earlier
incarnation of the node left running (its worker and task processes), sets the
agent's node identity and runs one Dask worker, connected over TLS to the
service's scheduler, until the scheduler goes away.

Config keys: ``node_id``, ``pool_id``, ``root_dir``, ``scheduler_address``,
``nthreads``, ``account_name``, ``account_url``, ``tls`` (``ca_file``,
``cert_file``, ``key_file``), ``death_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import psutil

from hpcbatch.execution import agent
from hpcbatch.execution.environment import NODE_DIRS, NodeIdentity

PID_FILE = "node.pid"


def prepare_root(root: Path) -> None:
    """Create the node directory layout under ``root`` (idempotent)."""
    for name in NODE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)


def end_previous_incarnation(root: Path) -> None:
    """Kill the node process recorded in ``root/node.pid`` and its whole tree.

    A node restarted by the service (after a crash, a reboot request or a lost
    connection) must not leave task processes of its earlier life running.
    """
    pid_file = root / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if pid == os.getpid():
        return
    try:
        proc = psutil.Process(pid)
        if "hpcbatch.node" not in " ".join(proc.cmdline()):
            return
    except psutil.Error:
        return
    agent.kill_process_tree(proc)
    try:
        proc.wait(timeout=10)
    except psutil.Error:
        pass


async def serve(config: dict[str, Any]) -> None:
    """Run the node's Dask worker until it closes."""
    import dask
    from distributed import Security, Worker

    root = Path(os.path.expanduser(config["root_dir"])).resolve()
    prepare_root(root)
    end_previous_incarnation(root)
    (root / PID_FILE).write_text(str(os.getpid()))
    agent.NODE = NodeIdentity(
        node_id=config["node_id"],
        pool_id=config["pool_id"],
        root_dir=str(root),
        account_name=config["account_name"],
        account_url=config["account_url"],
    )
    agent.freeze_base_environment()
    tls = config["tls"]
    security = Security(
        tls_ca_file=tls["ca_file"],
        tls_worker_cert=tls["cert_file"],
        tls_worker_key=tls["key_file"],
        tls_client_cert=tls["cert_file"],
        tls_client_key=tls["key_file"],
        require_encryption=True,
    )
    # Nothing reads a node worker's statistical profile (no dashboard): sampling
    # its threads every 10 ms, and checking the loop every 20 ms, only costs CPU
    # that the node's tasks need.
    dask.config.set({"distributed.worker.profile.enabled": False,
                     "distributed.admin.tick.interval": "500ms"})
    # One line per out-of-band call would fill node.log: keep warnings only.
    logging.getLogger("distributed.worker").setLevel(logging.WARNING)
    worker = Worker(
        config["scheduler_address"],
        name=config.get("worker_name") or config["node_id"],
        nthreads=int(config["nthreads"]),
        security=security,
        memory_limit=0,
        local_directory=str(root / "dask"),
        death_timeout=config.get("death_timeout_s", 60),
        dashboard=False,
        host=config.get("listen_host"),
    )
    agent.serve_exchanges(worker)
    try:
        await worker
        await worker.finished()
    finally:
        agent.kill_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m hpcbatch.node CONFIG_JSON_PATH``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpcbatch.node CONFIG_JSON", file=sys.stderr)
        return 2
    config = json.loads(Path(args[0]).read_text())
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
