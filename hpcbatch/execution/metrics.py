"""Pool metrics for autoscale formulas: a bounded sample history per pool.

Every sample period (Batch's is 30 s) the service records, per pool, each
node's resource metrics (sampled on the node with psutil, see
:func:`node_sample`) and the pool's task counts. Formulas read them through
``$CPUPercent.GetSample(...)`` and friends (:mod:`hpcbatch.batch.autoscale`). The
history is bounded in time, so memory does not grow with the service's age.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from hpcbatch.batch.autoscale import MetricsSnapshot, Sample

NODE_METRICS = ("CPUPercent", "WallClockSeconds", "MemoryBytes", "DiskBytes", "DiskReadBytes",
                "DiskWriteBytes", "DiskReadOps", "DiskWriteOps", "NetworkInBytes",
                "NetworkOutBytes")
"""Per-node metric variables (one sample per node per period)."""

TASK_METRICS = ("ActiveTasks", "RunningTasks", "PendingTasks", "SucceededTasks", "FailedTasks")
"""Per-pool task metric variables (one sample per period)."""

HISTORY = timedelta(hours=24)
"""How long samples are kept (formulas look back at most this far)."""


def node_sample() -> dict[str, float]:
    """Read this machine's resource metrics (runs on a node, inside its worker).

    Returns
    -------
    dict
        ``CPUPercent`` (0-100), ``WallClockSeconds`` (uptime, s), ``MemoryBytes``
        (used), ``DiskBytes`` (used, root file system), cumulative disk and
        network counters (bytes and operations).
    """
    import psutil

    disk = psutil.disk_io_counters()
    net = psutil.net_io_counters()
    return {
        "CPUPercent": psutil.cpu_percent(interval=None),
        "WallClockSeconds": time.time() - psutil.boot_time(),
        "MemoryBytes": float(psutil.virtual_memory().used),
        "DiskBytes": float(psutil.disk_usage("/").used),
        "DiskReadBytes": float(disk.read_bytes if disk else 0),
        "DiskWriteBytes": float(disk.write_bytes if disk else 0),
        "DiskReadOps": float(disk.read_count if disk else 0),
        "DiskWriteOps": float(disk.write_count if disk else 0),
        "NetworkInBytes": float(net.bytes_recv),
        "NetworkOutBytes": float(net.bytes_sent),
    }


class MetricsHistory:
    """Bounded per-pool history of metric samples.

    Parameters
    ----------
    keep
        Age after which samples are dropped.
    """

    def __init__(self, keep: timedelta = HISTORY) -> None:
        self.keep = keep
        self._pools: dict[str, dict[str, deque[Sample]]] = {}

    def record(self, pool_key: str, at: datetime, task_counts: Mapping[str, float],
               node_samples: Sequence[Mapping[str, float]]) -> None:
        """Add one period's samples of a pool.

        Parameters
        ----------
        at
            Sample time (naive UTC or aware).
        task_counts
            Values of :data:`TASK_METRICS` for the pool.
        node_samples
            One :func:`node_sample` per node that answered.
        """
        series = self._pools.setdefault(pool_key, {})
        for name in TASK_METRICS:
            series.setdefault(name, deque()).append(Sample(at, float(task_counts.get(name, 0))))
        for name in NODE_METRICS:
            q = series.setdefault(name, deque())
            for sample in node_samples:
                if name in sample:
                    q.append(Sample(at, float(sample[name])))
        series.setdefault("SampleNodeCount", deque()).append(Sample(at, float(len(node_samples))))
        cutoff = at - self.keep
        for q in series.values():
            while q and q[0].timestamp < cutoff:
                q.popleft()

    def snapshot(self, pool_key: str, now: datetime, **pool: Any) -> MetricsSnapshot:
        """Return the samples of a pool for one formula evaluation.

        Parameters
        ----------
        pool
            ``current_dedicated_nodes``, ``target_dedicated_nodes``,
            ``task_slots_per_node`` ... (fields of :class:`MetricsSnapshot`).
        """
        series = self._pools.get(pool_key, {})
        return MetricsSnapshot(now=now, samples={k: list(v) for k, v in series.items()}, **pool)

    def forget(self, pool_key: str) -> None:
        """Drop a deleted pool's history."""
        self._pools.pop(pool_key, None)
