"""Pool metrics for autoscale formulas: a bounded sample history per pool.

Every sample period (Batch's is 30 s) the service records, per pool, each
node's resource metrics (sampled on the node with psutil, see
:func:`node_sample`) and the pool's task counts. Formulas read them through
``$CPUPercent.GetSample(...)`` and friends (:mod:`hpcbatch.batch.autoscale`). The
history is bounded in time, so memory does not grow with the service's age.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
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
    """Bounded per-pool history of metric samples, stored compactly.

    Each sample period of a pool keeps one timestamp and, per metric, one
    ``array('d')`` of the values of the nodes that answered (8 bytes a value):
    about 80 KB a period for a 1,000-node pool, so 24 h of 30 s periods hold
    about 230 MB there instead of the ~3 GB that one ``Sample`` object per value
    took. :class:`Sample` objects are made only when an evaluation reads a
    metric (:meth:`snapshot`).

    Parameters
    ----------
    keep
        Age after which samples are dropped.
    """

    def __init__(self, keep: timedelta = HISTORY) -> None:
        self.keep = keep
        self._pools: dict[str, _PoolHistory] = {}

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
        values = {name: array("d", (float(task_counts.get(name, 0)),)) for name in TASK_METRICS}
        for name in NODE_METRICS:
            values[name] = array("d", (float(s[name]) for s in node_samples if name in s))
        values["SampleNodeCount"] = array("d", (float(len(node_samples)),))
        history = self._pools.setdefault(pool_key, _PoolHistory())
        history.periods.append((at, values))
        cutoff = at - self.keep
        while history.periods and history.periods[0][0] < cutoff:
            history.periods.popleft()

    def snapshot(self, pool_key: str, now: datetime, **pool: Any) -> MetricsSnapshot:
        """Return the samples of a pool for one formula evaluation.

        The periods are copied (not their values), so later :meth:`record` calls
        do not change the snapshot; a metric's :class:`Sample` list is built when
        the evaluation first reads it.

        Parameters
        ----------
        pool
            ``current_dedicated_nodes``, ``target_dedicated_nodes``,
            ``task_slots_per_node`` ... (fields of :class:`MetricsSnapshot`).
        """
        history = self._pools.get(pool_key)
        periods = tuple(history.periods) if history else ()
        return MetricsSnapshot(now=now, samples=_Samples(periods), **pool)

    def forget(self, pool_key: str) -> None:
        """Drop a deleted pool's history."""
        self._pools.pop(pool_key, None)


class _PoolHistory:
    """One pool's periods, oldest first: ``(time, {metric: values})``."""

    __slots__ = ("periods",)

    def __init__(self) -> None:
        self.periods: deque[tuple[datetime, dict[str, array[float]]]] = deque()


class _Samples(Mapping[str, Sequence[Sample]]):
    """A read-only view of periods as ``{metric: [Sample, ...]}``, built per metric on demand."""

    def __init__(self, periods: Sequence[tuple[datetime, Mapping[str, array[float]]]]) -> None:
        self._periods = periods
        self._made: dict[str, list[Sample]] = {}

    def __getitem__(self, metric: str) -> list[Sample]:
        made = self._made.get(metric)
        if made is None:
            if not any(metric in values for _, values in self._periods[-1:]):
                raise KeyError(metric)
            made = [Sample(at, value) for at, values in self._periods
                    for value in values.get(metric, ())]
            self._made[metric] = made
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._periods[-1][1] if self._periods else ())

    def __len__(self) -> int:
        return len(self._periods[-1][1]) if self._periods else 0
