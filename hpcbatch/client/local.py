""":class:`LocalBatch`: an hpcbatch service in this process on local nodes, and its client.

The one client-side entry point that runs the service: it imports the server
stack (``hpcbatch.api.server``: aiohttp, SQLAlchemy, Dask) when entered, not
when imported.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcbatch.client.sdk import BatchClient

__all__ = ["LocalBatch"]


class LocalBatch:
    """Run an hpcbatch service in this process on local nodes, and yield its client.

    The embedded default: SQLite, local storage, and ``nodes`` local compute
    nodes (processes on this machine, each with its own root dir) in the
    inventory, labelled ``local``. Create a pool with ``vmSize`` ``any`` or
    ``local`` to use them.

    Parameters
    ----------
    nodes
        Number of local hosts to put in the inventory. Node ``local-i`` has the
        loopback address ``127.0.0.{10+i}``, so MPI launchers see distinct hosts;
        multi-instance tasks reach them through :mod:`hpcbatch.providers.locallaunch`.
    state_dir
        Where to keep state; default a new temporary folder, removed on exit.
    cores_per_node
        ``cores`` of each local host (default: this machine's CPU count).
    storage_url, storage_options
        The service's storage (default: ``storage/`` in the state dir).
    tls
        Serve the REST API over HTTPS with the service's CA; the yielded client trusts it.
    """

    def __init__(self, nodes: int = 3, *, state_dir: Path | str | None = None,
                 cores_per_node: int | None = None, storage_url: str | None = None,
                 storage_options: Mapping[str, Any] | None = None, tls: bool = False) -> None:
        self.nodes = nodes
        self.tls = tls
        self.storage_url = storage_url
        self.storage_options = dict(storage_options or {})
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="hpcbatch-"))
        self.cores_per_node = cores_per_node or os.cpu_count() or 1
        self._thread: Any = None
        self.client: BatchClient | None = None

    def __enter__(self) -> BatchClient:
        from hpcbatch.api.server import ServiceConfig, ServiceThread

        self._thread = ServiceThread(ServiceConfig(
            state_dir=self.state_dir, port=0, scheduler_host="127.0.0.1",
            storage_url=self.storage_url, storage_options=self.storage_options, tls=self.tls))
        runtime = self._thread.start()
        # the operator's client: the state dir's key, CA and operator key (local hosts)
        self.client = BatchClient.from_environment(runtime.state_dir)
        self.client.add_hosts([
            {"name": f"local-{i + 1}", "address": f"127.0.0.{11 + i}", "provider": "local",
             "root_dir": str(self.state_dir / "nodes" / f"local-{i + 1}"),
             "python": sys.executable, "cores": self.cores_per_node, "labels": ["local"]}
            for i in range(self.nodes)
        ])
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self._thread is not None:
            self._thread.stop()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.state_dir, ignore_errors=True)
