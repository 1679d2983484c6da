"""A pool's allocationState is recorded as it changes, so ``$filter`` on it finds the pool."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import running_service, wait_until


def ids(client, filter_: str) -> list[str]:
    return [p.id for p in client.list_pools(filter=filter_)]


def test_allocation_state_filter_follows_resizes(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{40 + i}", "provider": "local",
                           "root_dir": str(tmp_path / f"n{i}"), "python": sys.executable}
                          for i in range(2)])
        client.create_pool({"id": "grow", "vmSize": "any", "targetDedicatedNodes": 1})
        client.create_pool({"id": "empty", "vmSize": "any", "targetDedicatedNodes": 0})
        client.wait_for_pool("grow", timeout_s=120)
        wait_until(lambda: ids(client, "allocationState eq 'steady'") == ["grow", "empty"],
                   timeout_s=10, what="both pools steady in the store")
        first = client.get_pool("grow").allocation_state_transition_time

        client.resize_pool("grow", 2)
        assert "grow" in ids(client, "allocationState eq 'resizing'")
        client.wait_for_pool("grow", timeout_s=120)
        wait_until(lambda: "grow" in ids(client, "allocationState eq 'steady'"), timeout_s=10,
                   what="grow steady again")
        pool = client.get_pool("grow")
        assert pool.current_dedicated_nodes == 2
        assert pool.allocation_state_transition_time > first

        client.delete_pool("grow")
        # A deleting pool resizes to zero nodes (REST Pool - Delete): resizing, not stopping.
        resizing = ids(client, "allocationState eq 'resizing'")
        deleting = [p.id for p in client.list_pools() if p.state == "deleting"]
        assert set(deleting) <= set(resizing)  # 'grow' while its nodes leave, then gone
        assert ids(client, "allocationState eq 'stopping'") == []
        assert "grow" not in ids(client, "allocationState eq 'steady'")
