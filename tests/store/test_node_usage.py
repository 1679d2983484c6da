"""The nodes' sampled resources in the pool statistics (``node_usage``): what a sample
period adds, on SQLite and PostgreSQL. The samples are given (a node's
``node_sample()`` dict); the store, its upserts and the wire dict are real."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from hpcbatch.core.statistics import ACCOUNT, GIB, pool_statistics, record_node_samples
from hpcbatch.store.database import Store, dumps, pools
from hpcbatch.store.usage import read_node_usage

T0 = datetime(2026, 12, 3, 12, 0, 0)
GB = 10 ** 9


def _sample(memory: float, disk: float, net_in: float, net_out: float) -> dict[str, float]:
    return {"MemoryBytes": memory, "DiskBytes": disk, "NetworkInBytes": net_in,
            "NetworkOutBytes": net_out, "CPUPercent": 50.0}


def _pool(store: Store, key: str, seq: int) -> None:
    with store.begin() as conn:
        conn.execute(pools.delete().where(pools.c.key == key))
        conn.execute(pools.insert().values(key=key, id=key, seq=seq, state="active",
                                           allocation_state="steady", spec=dumps({}),
                                           status=dumps({})))


@pytest.fixture
def store(database_url: str) -> Store:
    s = Store(database_url)
    yield s  # type: ignore[misc]
    s.close()


def test_periods_add_averages_peaks_and_network_deltas(store: Store) -> None:
    _pool(store, "p", 1)
    network: dict[str, tuple[float, float]] = {}
    periods = [
        [("a", _sample(2 * GB, 10 * GB, 1000, 500)), ("b", _sample(4 * GB, 20 * GB, 7000, 9000))],
        [("a", _sample(6 * GB, 12 * GB, 1600, 800)), ("b", _sample(4 * GB, 20 * GB, 7100, 9050))],
        # b's host restarted (its counters went down): it adds nothing this period
        [("a", _sample(2 * GB, 14 * GB, 2000, 900)), ("b", _sample(2 * GB, 20 * GB, 50, 60))],
    ]
    for i, samples in enumerate(periods):
        with store.begin() as conn:
            record_node_samples(conn, "p", samples, network, T0 + timedelta(seconds=30 * i))
    with store.read() as conn:
        row = read_node_usage(conn, "pool", ["p"])["p"]
        account = read_node_usage(conn, "pools", [ACCOUNT])[ACCOUNT]
    assert row["samples"] == 6
    assert row["memory_bytes"] == 20 * GB and row["peak_memory_bytes"] == 6 * GB
    assert row["disk_bytes"] == 96 * GB and row["peak_disk_bytes"] == 20 * GB
    # a: 600 + 400 in, 300 + 100 out; b: 100 in, 50 out (its first sample and its reset add 0)
    assert (row["network_read_bytes"], row["network_write_bytes"]) == (1100, 450)
    assert network == {"a": (2000, 900), "b": (50, 60)}
    assert row["last_update_time"] == T0 + timedelta(seconds=60)
    assert account["samples"] == 6 and account["network_read_bytes"] == 1100

    stats = pool_statistics("u", "s", "t", None, 100.0, row)["resourceStats"]
    assert stats["avgMemoryGiB"] == pytest.approx(20 * GB / 6 / GIB)
    assert stats["peakMemoryGiB"] == pytest.approx(6 * GB / GIB)
    assert stats["avgDiskGiB"] == pytest.approx(16 * GB / GIB)
    assert stats["peakDiskGiB"] == pytest.approx(20 * GB / GIB)
    assert stats["networkReadGiB"] == pytest.approx(1100 / GIB)
    assert stats["networkWriteGiB"] == pytest.approx(450 / GIB)


def test_a_pool_without_samples_leaves_the_sampled_figures_out() -> None:
    stats = pool_statistics("u", "s", "t", None, 100.0, None)["resourceStats"]
    assert not {"avgMemoryGiB", "avgDiskGiB", "peakDiskGiB", "networkReadGiB",
                "networkWriteGiB"} & set(stats)
    assert stats["peakMemoryGiB"] == 0  # the task processes' (none yet)


def test_a_new_pool_of_a_reused_id_starts_again(store: Store) -> None:
    network: dict[str, tuple[float, float]] = {}
    _pool(store, "p", 1)
    with store.begin() as conn:
        record_node_samples(conn, "p", [("a", _sample(8 * GB, GB, 0, 0))], network, T0)
    _pool(store, "p", 2)  # deleted, and a pool of the same ID added
    with store.begin() as conn:
        record_node_samples(conn, "p", [("a", _sample(GB, GB, 0, 0))], network, T0)
    with store.read() as conn:
        row = read_node_usage(conn, "pool", ["p"])["p"]
        account = read_node_usage(conn, "pools", [ACCOUNT])[ACCOUNT]
    assert (row["seq"], row["samples"], row["peak_memory_bytes"]) == (2, 1, GB)
    assert (account["samples"], account["peak_memory_bytes"]) == (2, 8 * GB)  # lifetime


def test_a_deleted_pool_adds_only_to_the_account(store: Store) -> None:
    with store.begin() as conn:
        record_node_samples(conn, "gone", [("a", _sample(GB, GB, 0, 0))], {}, T0)
    with store.read() as conn:
        assert read_node_usage(conn, "pool", ["gone"]) == {}
        assert read_node_usage(conn, "pools", [ACCOUNT])[ACCOUNT]["samples"] == 1
