"""Job and pool statistics and pool usage metrics, from what the service records.

Batch's operations (api-version 2025-06-01 unless noted):

* ``$expand=stats`` on "Job - Get/List" (``JobStatistics``), "Job Schedule - Get/List"
  (``JobScheduleStatistics``: every job the schedule created) and "Pool - Get/List"
  (``PoolStatistics``: ``usageStats``, ``resourceStats``);
* "Job - Get All Lifetime Statistics" (``GET /lifetimejobstats``) and "Pool - Get All
  Lifetime Statistics" (``GET /lifetimepoolstats``): the account's totals; removed from
  the REST API in api-version 2023-05-01.17.0, so served only for older api-versions
  (the route decides);
* "Pool - List Usage Metrics" (``GET /poolusagemetrics``): core hours per pool per
  30-minute aggregation interval.

Where the numbers come from:

* a task run that ends (:func:`record_ended`, called by the dispatcher in the
  transaction that records the end): wall clock time (start to end, every retry
  included), the node's ``rusage`` of the task process (``Outcome.usage``: user and
  kernel CPU seconds, read/write bytes and operations, peak resident memory; missing
  keys count 0), one retry when it is retried, one succeeded or failed task when it
  completes, and its wait time (task creation to the start of its last run);
* a node that leaves its pool (:func:`node_left`, called by the pool manager): its core
  time in the pool (cores times allocation to removal), split by aggregation interval;
* nodes still in their pool, at read time (cores times allocation to now);
* every sample period, each node of each pool (:func:`record_node_samples`, called by
  the autoscaler's sampler): its used memory and disk space, and the network bytes it
  received and sent since its last sample (``node_usage``).

Every recorded event adds to a fixed number of counter rows (per job, per pool, and the
account's), so its cost does not grow with the number of tasks, and reads never scan
tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch.models import JobStatistics, PoolStatistics, PoolUsageMetrics
from hpcbatch.batch.states import TaskExecutionResult, TaskState
from hpcbatch.batch.wire import iso, utcnow
from hpcbatch.core.context import ServiceContext
from hpcbatch.store.database import job_schedules, jobs, pools, tasks
from hpcbatch.store.usage import (
    NODE_PEAKS,
    NODE_SUMS,
    PEAKS,
    SUMS,
    add_node_usage,
    add_pool_usage,
    add_usage,
    read_node_usage,
    read_pool_usage,
    read_usage,
)

if TYPE_CHECKING:
    from hpcbatch.core.node_runtime import NodeRuntime
    from hpcbatch.core.runs import Ended

INTERVAL = timedelta(minutes=30)
"""Batch's aggregation interval of pool usage metrics (its examples' ``startTime`` and
``endTime`` are 30 minutes apart)."""

GIB = 1024 ** 3
"""Bytes in a GiB."""

ACCOUNT = ""
"""The key of the account's lifetime rows (scopes ``jobs`` and ``pools``)."""

SCHEDULE_JOB = ":job-"
"""What separates a schedule's ID from the number in the IDs of the jobs it creates."""

USAGE_KEYS = ("user_cpu_s", "kernel_cpu_s", "read_bytes", "write_bytes", "read_ops",
              "write_ops", "max_rss_bytes")
"""The keys of ``Outcome.usage`` (the task process's ``rusage``, from the node)."""


# ------------------------------------------------------------------ pure policy


def interval_start(at: datetime) -> datetime:
    """The start of the aggregation interval holding ``at`` (naive UTC, on :data:`INTERVAL`)."""
    return at.replace(minute=at.minute - at.minute % 30, second=0, microsecond=0)


def split_by_interval(start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """Split ``[start, end)`` into aggregation intervals.

    Returns
    -------
    list[tuple[datetime, float]]
        ``(interval start, seconds of [start, end) in it)`` in time order; empty when
        ``end <= start``.
    """
    out: list[tuple[datetime, float]] = []
    at = start
    while at < end:
        bucket = interval_start(at)
        stop = min(end, bucket + INTERVAL)
        out.append((bucket, (stop - at).total_seconds()))
        at = stop
    return out


def _number(usage: Mapping[str, Any] | None, key: str) -> float:
    value = (usage or {}).get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def zero_counters() -> dict[str, float]:
    """Every counter of ``usage_stats`` at zero."""
    return dict.fromkeys((*SUMS, *PEAKS), 0.0)


def run_counters(usage: Mapping[str, Any] | None, start: datetime | None, end: datetime,
                 *, retried: bool, result: str | None,
                 created: datetime | None) -> dict[str, float]:
    """What one ended run adds to its job's, its pool's and the account's counters.

    Parameters
    ----------
    usage
        ``Outcome.usage`` (keys of :data:`USAGE_KEYS`; None or a missing key counts 0).
    start, end
        The run's start (None when it never started) and end (naive UTC).
    retried
        The task goes back to the queue (one retry).
    result
        ``"success"`` or ``"failure"`` when the task completed; None when retried.
    created
        The task's creation time (its wait time is counted when it completes).

    Returns
    -------
    dict[str, float]
        A value for every counter of ``usage_stats``.
    """
    out = zero_counters()
    out["user_cpu_s"] = _number(usage, "user_cpu_s")
    out["kernel_cpu_s"] = _number(usage, "kernel_cpu_s")
    for key in ("read_bytes", "write_bytes", "read_ops", "write_ops"):
        out[key] = _number(usage, key)
    out["peak_rss_bytes"] = _number(usage, "max_rss_bytes")
    if start is not None:
        out["wall_clock_s"] = max(0.0, (end - start).total_seconds())
    out["retries"] = 1 if retried else 0
    out["succeeded"] = 1 if result == TaskExecutionResult.success else 0
    out["failed"] = 1 if result == TaskExecutionResult.failure else 0
    if result is not None and start is not None and created is not None:
        out["wait_s"] = max(0.0, (start - created).total_seconds())
    return out


def merge(into: dict[str, float], add: Mapping[str, float]) -> None:
    """Add ``add``'s counters to ``into`` (sums added, peaks kept at their maximum)."""
    for name in SUMS:
        into[name] += add[name]
    for name in PEAKS:
        into[name] = max(into[name], add[name])


def job_statistics(url: str, start: str, updated: str,
                   counters: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``JobStatistics`` wire dict from counters (None: nothing recorded yet, zeros)."""
    c = counters or zero_counters()
    return JobStatistics.model_validate({
        "url": url, "startTime": start, "lastUpdateTime": updated,
        "userCPUTime": timedelta(seconds=c["user_cpu_s"]),
        "kernelCPUTime": timedelta(seconds=c["kernel_cpu_s"]),
        "wallClockTime": timedelta(seconds=c["wall_clock_s"]),
        "readIOps": str(int(c["read_ops"])), "writeIOps": str(int(c["write_ops"])),
        "readIOGiB": c["read_bytes"] / GIB, "writeIOGiB": c["write_bytes"] / GIB,
        "numSucceededTasks": str(int(c["succeeded"])), "numFailedTasks": str(int(c["failed"])),
        "numTaskRetries": str(int(c["retries"])), "waitTime": timedelta(seconds=c["wait_s"]),
    }).to_wire()


def pool_statistics(url: str, start: str, updated: str, counters: Mapping[str, Any] | None,
                    core_s: float, nodes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``PoolStatistics`` wire dict.

    Parameters
    ----------
    url, start, updated
        Its ``url``, ``startTime`` and ``lastUpdateTime`` (wire times).
    counters
        The pool's task counters (None: zeros).
    core_s
        Core-seconds of the pool's nodes (those gone and those still in it).
    nodes
        The pool's ``node_usage`` row (:func:`record_node_samples`), or None.

    Notes
    -----
    ``avgCPUPercentage`` is the tasks' CPU time over the nodes' core time; disk I/O
    figures are the tasks' I/O. From the nodes' samples (one a node every sample
    period, 30 s as Batch's; :meth:`hpcbatch.core.autoscaler.Autoscaler.sample`): ``avgMemoryGiB`` and
    ``avgDiskGiB`` (used memory, used space of the node's root file system) are the
    averages over every sample, ``peakDiskGiB`` the largest, ``networkReadGiB`` and
    ``networkWriteGiB`` the bytes the nodes received and sent between samples.
    ``peakMemoryGiB`` is the largest of the nodes' samples and of the task processes'
    resident memory. A pool with no node sample yet leaves the sampled figures out
    (``docs/azure-compat.md``).
    """
    c = counters or zero_counters()
    cpu = c["user_cpu_s"] + c["kernel_cpu_s"]
    resources: dict[str, Any] = {
        "startTime": start, "lastUpdateTime": updated,
        "avgCPUPercentage": min(100.0, 100.0 * cpu / core_s) if core_s > 0 else 0.0,
        "peakMemoryGiB": c["peak_rss_bytes"] / GIB,
        "diskReadIOps": str(int(c["read_ops"])), "diskWriteIOps": str(int(c["write_ops"])),
        "diskReadGiB": c["read_bytes"] / GIB, "diskWriteGiB": c["write_bytes"] / GIB,
    }
    if nodes is not None and nodes["samples"] > 0:
        n = nodes["samples"]
        resources.update({
            "avgMemoryGiB": nodes["memory_bytes"] / n / GIB,
            "peakMemoryGiB": max(c["peak_rss_bytes"], nodes["peak_memory_bytes"]) / GIB,
            "avgDiskGiB": nodes["disk_bytes"] / n / GIB,
            "peakDiskGiB": nodes["peak_disk_bytes"] / GIB,
            "networkReadGiB": nodes["network_read_bytes"] / GIB,
            "networkWriteGiB": nodes["network_write_bytes"] / GIB,
        })
    return PoolStatistics.model_validate({
        "url": url, "startTime": start, "lastUpdateTime": updated,
        "usageStats": {"startTime": start, "lastUpdateTime": updated,
                       "dedicatedCoreTime": timedelta(seconds=core_s)},
        "resourceStats": resources,
    }).to_wire()


def record_node_samples(conn: sa.Connection, pool_key: str,
                        samples: Sequence[tuple[str, Mapping[str, float]]],
                        network: MutableMapping[str, tuple[float, float]],
                        now: datetime) -> None:
    """Add one sample period of a pool's nodes to its ``node_usage`` counters (and the
    account's), for ``resourceStats`` (:func:`pool_statistics`).

    Parameters
    ----------
    conn
        A connection in the caller's transaction.
    pool_key
        The pool (lower-cased ID); a pool deleted meanwhile adds to the account only.
    samples
        ``(node, sample)`` per node that answered: the node's worker address and its
        :func:`hpcbatch.execution.metrics.node_sample` (``MemoryBytes``,
        ``DiskBytes``, ``NetworkInBytes``, ``NetworkOutBytes``).
    network
        The network counters of each node at its last sample, ``{node: (in, out)}``,
        kept by the caller between periods; updated here. A node's first sample adds
        no network bytes (its counters count since the host booted), nor does a
        counter that went down (the host restarted).
    now
        The sample time (naive UTC).
    """
    if not samples:
        return
    sums = dict.fromkeys(NODE_SUMS, 0.0)
    peaks = dict.fromkeys(NODE_PEAKS, 0.0)
    for node, sample in samples:
        memory, disk = sample.get("MemoryBytes", 0.0), sample.get("DiskBytes", 0.0)
        sums["samples"] += 1
        sums["memory_bytes"] += memory
        sums["disk_bytes"] += disk
        peaks["peak_memory_bytes"] = max(peaks["peak_memory_bytes"], memory)
        peaks["peak_disk_bytes"] = max(peaks["peak_disk_bytes"], disk)
        now_in, now_out = sample.get("NetworkInBytes", 0.0), sample.get("NetworkOutBytes", 0.0)
        before = network.get(node)
        if before is not None:
            sums["network_read_bytes"] += max(0.0, now_in - before[0])
            sums["network_write_bytes"] += max(0.0, now_out - before[1])
        network[node] = (now_in, now_out)
    counters = {k: int(v) if k not in ("memory_bytes", "disk_bytes") else v
                for k, v in {**sums, **peaks}.items()}
    rows = [{"scope": "pools", "key": ACCOUNT, "seq": 0, "now": now, **counters}]
    seq = _seqs(conn, pools, [pool_key]).get(pool_key)
    if seq is not None:  # else deleted meanwhile: only the account's lifetime counts it
        rows.append({"scope": "pool", "key": pool_key, "seq": seq, "now": now, **counters})
    add_node_usage(conn, rows)


# ------------------------------------------------------------ recording (hooks)


_SEQS: dict[str, sa.Select[Any]] = {}
"""``select key, seq from {table} where key in (...)`` per table, built once (every pass)."""


def _seqs(conn: sa.Connection, table: sa.Table, keys: Iterable[str]) -> dict[str, int]:
    keys = list(set(keys))
    if not keys:
        return {}
    stmt = _SEQS.get(table.name)
    if stmt is None:
        stmt = _SEQS[table.name] = sa.select(table.c.key, table.c.seq).where(
            table.c.key.in_(sa.bindparam("b_keys", expanding=True)))
    return dict(conn.execute(stmt, {"b_keys": keys}).all())


def _rows(scope: str, per_key: Mapping[str, dict[str, float]], seqs: Mapping[str, int],
          now: datetime) -> list[dict[str, Any]]:
    return [{"scope": scope, "key": key, "seq": seqs[key], "now": now, **counters}
            for key, counters in per_key.items() if key in seqs]


_CREATED = sa.select(tasks.c.seq, tasks.c.creation_time).where(
    tasks.c.seq.in_(sa.bindparam("b_seqs", expanding=True)))
"""Creation times of tasks by ``seq`` (built once: :func:`record_ended` runs every pass)."""


def record_ended(conn: sa.Connection, ended: Sequence[Ended],
                 updates: Sequence[Mapping[str, Any]]) -> None:
    """Add the runs the dispatcher just recorded to the statistics counters.

    Called once per scheduling pass, in the transaction that records the runs' ends:
    the job, pool and account rows each get one upsert (one executemany). A run
    carries its task's creation time and its job's and pool's ``seq``; what a run
    lacks is read in one query per kind.

    Parameters
    ----------
    conn
        The pass's connection.
    ended
        The pass's :class:`~hpcbatch.core.runs.Ended` runs (those whose run was requeued
        meanwhile have no update and are skipped).
    updates
        The task updates the pass writes, one per recorded run: ``b_seq`` (the task's
        ``seq``), ``b_state`` (``active``: retried), ``b_result``, ``b_end`` and, when
        the run started, ``b_start``.
    """
    by_seq = {u["b_seq"]: u for u in updates}
    carried = {e.run.seq: e.run.created for e in ended if e.run.created is not None}
    created: dict[int, datetime] = {}
    missing = []
    for row in updates:
        if row["b_result"] is not None and "b_start" in row:
            value = carried.get(row["b_seq"])
            if value is None:
                missing.append(row["b_seq"])
            else:
                created[row["b_seq"]] = (value if isinstance(value, datetime)
                                         else datetime.fromisoformat(value))
    for i in range(0, len(missing), 500):
        created.update(conn.execute(_CREATED, {"b_seqs": missing[i:i + 500]}).all())
    job_seqs: dict[str, int] = {}
    pool_seqs: dict[str, int] = {}
    per_job: dict[str, dict[str, float]] = {}
    per_schedule: dict[str, dict[str, float]] = {}
    per_pool: dict[str, dict[str, float]] = {}
    total = zero_counters()
    # runs summed per (job, pool) first: one merge per run, then one per pair and scope
    per_pair: dict[tuple[str, str], dict[str, float]] = {}
    for e in ended:
        u = by_seq.get(e.run.seq)
        if u is None:
            continue
        counters = run_counters(getattr(e.outcome, "usage", None), u.get("b_start"), u["b_end"],
                                retried=u["b_state"] == TaskState.active, result=u["b_result"],
                                created=created.get(e.run.seq))
        pair = (e.run.job_key, e.run.node.pool_key)
        if e.run.job_seq is not None:
            job_seqs[e.run.job_key] = e.run.job_seq
        if e.run.pool_seq is not None:
            pool_seqs[e.run.node.pool_key] = e.run.pool_seq
        if pair in per_pair:
            merge(per_pair[pair], counters)
        else:
            per_pair[pair] = counters
    for (job_key, pool_key), counters in per_pair.items():
        merge(per_job.setdefault(job_key, zero_counters()), counters)
        schedule_key, sep, _ = job_key.partition(SCHEDULE_JOB)
        if sep:  # a job a schedule created: "{scheduleId}:job-{n}"
            merge(per_schedule.setdefault(schedule_key, zero_counters()), counters)
        merge(per_pool.setdefault(pool_key, zero_counters()), counters)
        merge(total, counters)
    if not per_job:
        return
    now = utcnow()
    job_seqs.update(_seqs(conn, jobs, [k for k in per_job if k not in job_seqs]))
    pool_seqs.update(_seqs(conn, pools, [k for k in per_pool if k not in pool_seqs]))
    add_usage(conn, [
        *_rows("job", per_job, job_seqs, now),
        *_rows("schedule", per_schedule, _seqs(conn, job_schedules, per_schedule), now),
        *_rows("pool", per_pool, pool_seqs, now),
        {"scope": "jobs", "key": ACCOUNT, "seq": 0, "now": now, **total},
    ])


def node_left(conn: sa.Connection, node: NodeRuntime, now: datetime | None = None) -> None:
    """Record the core time of a node leaving its pool (pool manager, node removal).

    Adds ``cores x (now - allocationTime)`` to the pool's ``dedicatedCoreTime``, to the
    account's pool lifetime statistics and, split by aggregation interval, to the
    pool's usage metrics.
    """
    now = now or utcnow()
    pieces = split_by_interval(node.allocation_time, now)
    if not pieces:
        return
    cores = node.host.cores
    core_s = cores * sum(s for _, s in pieces)
    counters = {**zero_counters(), "core_s": core_s}
    rows = [{"scope": "pools", "key": ACCOUNT, "seq": 0, "now": now, **counters}]
    seq = _seqs(conn, pools, [node.pool_key]).get(node.pool_key)
    if seq is not None:
        rows.append({"scope": "pool", "key": node.pool_key, "seq": seq, "now": now, **counters})
    add_usage(conn, rows)
    add_pool_usage(conn, [{"pool_id": node.pool_id, "interval_start": bucket,
                           "vm_size": node.vm_size, "core_s": cores * seconds}
                          for bucket, seconds in pieces])


# ------------------------------------------------------------------------ reads


class Statistics:
    """Reads of the statistics: ``$expand=stats``, lifetime statistics, usage metrics.

    Parameters
    ----------
    ctx
        The service context (store, pool manager for the nodes still in pools).
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _live_core_s(self, pool_key: str, now: datetime) -> float:
        return sum(n.host.cores * max(0.0, (now - n.allocation_time).total_seconds())
                   for n in self.ctx.pool_manager.nodes_of(pool_key))

    def _owned(self, scope: str, table: sa.Table, ids: Iterable[str],
               read: Callable[[sa.Connection, str, Iterable[str]],
                              dict[str, Mapping[str, Any]]] = read_usage,
               ) -> dict[str, Mapping[str, Any]]:
        """The counters (``read``: of ``usage_stats``, or ``read_node_usage``) of the
        resources ``ids`` (their current incarnation only)."""
        keys = [i.lower() for i in ids]
        with self.ctx.store.read() as conn:
            rows = read(conn, scope, keys)
            seqs = _seqs(conn, table, rows)
        return {k: r for k, r in rows.items() if seqs.get(k) == r["seq"]}

    def expand_jobs(self, items: list[dict[str, Any]]) -> None:
        """Add ``stats`` (``JobStatistics``) to jobs' wire dicts ("Job - Get/List" with
        ``$expand=stats``); one query for the lot."""
        self._expand_task_runs("job", jobs, items)

    def expand_schedules(self, items: list[dict[str, Any]]) -> None:
        """Add ``stats`` (``JobScheduleStatistics``: the task runs of every job the schedule
        created) to job schedules' wire dicts ("Job Schedule - Get/List" with ``$expand=stats``)."""
        self._expand_task_runs("schedule", job_schedules, items)

    def _expand_task_runs(self, scope: str, table: sa.Table,
                          items: list[dict[str, Any]]) -> None:
        """Add ``stats`` of task runs (:func:`job_statistics`) to jobs' or schedules' wire dicts."""
        rows = self._owned(scope, table, (i["id"] for i in items))
        for item in items:
            row = rows.get(item["id"].lower())
            updated = iso(row["last_update_time"]) if row else item["creationTime"]
            item["stats"] = job_statistics(f"{item['url']}/stats", item["creationTime"],
                                           str(updated), row)

    def expand_pools(self, items: list[dict[str, Any]]) -> None:
        """Add ``stats`` (``PoolStatistics``) to pools' wire dicts ("Pool - Get/List" with
        ``$expand=stats``); core time includes the nodes in the pool up to now."""
        rows = self._owned("pool", pools, (i["id"] for i in items))
        node_rows = self._owned("pool", pools, (i["id"] for i in items), read_node_usage)
        now = utcnow()
        for item in items:
            key = item["id"].lower()
            row = rows.get(key)
            core_s = (row["core_s"] if row else 0.0) + self._live_core_s(key, now)
            item["stats"] = pool_statistics(f"{item['url']}/stats", item["creationTime"],
                                            str(iso(now)), row, core_s, node_rows.get(key))

    def _account(self, scope: str, read: Callable[[sa.Connection, str, Iterable[str]],
                                                  dict[str, Mapping[str, Any]]] = read_usage,
                 ) -> Mapping[str, Any] | None:
        with self.ctx.store.read() as conn:
            return read(conn, scope, [ACCOUNT]).get(ACCOUNT)

    def lifetime_jobs(self) -> dict[str, Any]:
        """The account's ``JobStatistics`` ("Job - Get All Lifetime Statistics"): every task
        run of every job, deleted jobs included, since the first one."""
        row = self._account("jobs")
        now = str(iso(utcnow()))
        start = str(iso(row["start_time"])) if row else now
        updated = str(iso(row["last_update_time"])) if row else now
        return job_statistics(f"{self.ctx.base_url}/lifetimejobstats", start, updated, row)

    def lifetime_pools(self) -> dict[str, Any]:
        """The account's ``PoolStatistics`` ("Pool - Get All Lifetime Statistics"): the
        core time of every node that was in a pool, and the resources of every task run."""
        now = utcnow()
        row = self._account("pools")
        tasks_row = self._account("jobs")
        core_s = (row["core_s"] if row else 0.0) + sum(
            self._live_core_s(k, now) for k in self.ctx.pool_manager.pool_keys())
        starts = [r["start_time"] for r in (row, tasks_row) if r is not None]
        start = str(iso(min(starts) if starts else now))
        return pool_statistics(f"{self.ctx.base_url}/lifetimepoolstats", start, str(iso(now)),
                               tasks_row, core_s, self._account("pools", read_node_usage))

    def usage_metrics(self, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
        """"Pool - List Usage Metrics": ``PoolUsageMetrics`` per pool, ``vmSize`` and
        aggregation interval.

        Parameters
        ----------
        start, end
            ``starttime`` and ``endtime`` (naive UTC): the intervals overlapping
            ``[start, end)`` are listed; the interval in progress counts up to now.
            Without either, Batch's default: the last interval that has ended.

        Returns
        -------
        list[dict]
            ``{"poolId", "startTime", "endTime", "vmSize", "totalCoreHours"}`` by
            interval then pool; an interval in which a pool had no node is left out.
        """
        now = utcnow()
        current = interval_start(now)
        if start is None and end is None:
            first, stop = current - INTERVAL, current
        else:
            first = interval_start(start) if start is not None else current - INTERVAL
            stop = end if end is not None else current
        sums: dict[tuple[datetime, str, str], float] = {}
        with self.ctx.store.read() as conn:
            for r in read_pool_usage(conn, first, stop):
                k = (r["interval_start"], r["pool_id"], r["vm_size"])
                sums[k] = sums.get(k, 0.0) + r["core_s"]
        for key in self.ctx.pool_manager.pool_keys():
            for node in self.ctx.pool_manager.nodes_of(key):
                for bucket, seconds in split_by_interval(max(node.allocation_time, first),
                                                         min(now, max(stop, first))):
                    k = (bucket, node.pool_id, node.vm_size)
                    sums[k] = sums.get(k, 0.0) + node.host.cores * seconds
        return [PoolUsageMetrics.model_validate({
                    "poolId": pool_id, "startTime": iso(bucket),
                    "endTime": iso(bucket + INTERVAL), "vmSize": vm_size,
                    "totalCoreHours": core_s / 3600}).to_wire()
                for (bucket, pool_id, vm_size), core_s in sorted(sums.items())]
