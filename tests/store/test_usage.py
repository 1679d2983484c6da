"""The statistics counters in the store (SQLite and PostgreSQL): upserts that add, keep
peaks, and start again for a new resource of the same ID; pool usage per interval."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hpcbatch.batch.wire import utcnow
from hpcbatch.store.database import Store
from hpcbatch.store.usage import (
    SUMS,
    add_pool_usage,
    add_usage,
    read_pool_usage,
    read_usage,
)


def test_counters_add_up_in_the_store_and_reset_for_a_new_resource(database_url: str) -> None:
    store = Store(database_url)
    now = utcnow()

    def row(seq: int, **values: float) -> dict[str, Any]:
        counters = dict.fromkeys((*SUMS, "peak_rss_bytes"), 0.0)
        counters.update(values)
        return {"scope": "job", "key": "j", "seq": seq, "now": now, **counters}

    with store.begin() as conn:
        add_usage(conn, [row(1, wall_clock_s=2, succeeded=1, peak_rss_bytes=10)])
        add_usage(conn, [row(1, wall_clock_s=3, failed=1, peak_rss_bytes=5)])
    with store.read() as conn:
        got = read_usage(conn, "job", ["j", "other"])
    assert list(got) == ["j"]
    assert (got["j"]["wall_clock_s"], got["j"]["succeeded"], got["j"]["failed"]) == (5, 1, 1)
    assert got["j"]["peak_rss_bytes"] == 10
    with store.begin() as conn:  # job j deleted and added again: seq 2 starts from zero
        add_usage(conn, [row(2, wall_clock_s=1)])
    with store.read() as conn:
        got = read_usage(conn, "job", ["j"])
    assert (got["j"]["wall_clock_s"], got["j"]["succeeded"], got["j"]["seq"]) == (1, 0, 2)
    store.close()


def test_pool_usage_adds_per_pool_interval_and_vm_size(database_url: str) -> None:
    store = Store(database_url)
    at, later = datetime(2026, 1, 1, 10, 0), datetime(2026, 1, 1, 10, 30)
    with store.begin() as conn:
        add_pool_usage(conn, [{"pool_id": "P", "interval_start": at, "vm_size": "s",
                               "core_s": 60.0},
                              {"pool_id": "q", "interval_start": later, "vm_size": "s",
                               "core_s": 5.0}])
        add_pool_usage(conn, [{"pool_id": "P", "interval_start": at, "vm_size": "s",
                               "core_s": 30.0}])
    with store.read() as conn:
        rows = read_pool_usage(conn, at, later)
        assert [(r["pool_id"], r["core_s"]) for r in rows] == [("P", 90.0)]
        assert [r["pool_id"] for r in read_pool_usage(conn, at, datetime(2026, 1, 2), {"p"})] \
            == ["P"]
    store.close()
