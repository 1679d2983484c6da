"""Helpers shared by the service tests: a service in a thread, over a testbed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpcbatch.api.server import ServiceConfig, ServiceThread
from hpcbatch.client.sdk import BatchClient
from hpcbatch.testing import testbed as tb


@contextmanager
def running_service(state_dir: Path, **config: Any) -> Iterator[tuple[BatchClient, ServiceThread]]:
    """Run a service on its own loop in a thread; yield its client and the thread."""
    thread = ServiceThread(ServiceConfig(state_dir=state_dir, port=0, **config))
    runtime = thread.start()
    # the operator's client (state dir: key, CA, operator key), as the CLI on the service machine
    client = BatchClient.from_environment(runtime.state_dir)
    try:
        yield client, thread
    finally:
        client.close()
        thread.stop()


@contextmanager
def service_on_testbed(tmp: Path, nodes: int, base_address: str, **config: Any
                       ) -> Iterator[tuple[BatchClient, tb.Testbed, ServiceThread]]:
    """A testbed of ``nodes`` sshd hosts and a service (``ServiceConfig`` ``config``) using them."""
    with (tb.up(nodes, tmp / "testbed", base_address=base_address) as bed,
          running_service(tmp / "state", **config) as (client, thread)):
        client.add_hosts([h.model_dump(mode="json") for h in bed.hosts])
        yield client, bed, thread


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60, interval_s: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def account_key(state_dir: Path) -> str:
    """Return the account key a service stored in its state dir."""
    return json.loads((state_dir / "account.json").read_text())["key"]


@contextmanager
def reachable_dir() -> Iterator[Path]:
    """A temporary folder every user can traverse (mode 0755 up to /), for node roots.

    pytest's own temporary folders are mode 0700: a task user could not reach a
    node root there, and the node would (rightly) not switch users. Needs root.
    """
    if os.geteuid() != 0:
        raise RuntimeError("user switching needs the node agent to run as root")
    path = Path(tempfile.mkdtemp(prefix="hpcbatch-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
