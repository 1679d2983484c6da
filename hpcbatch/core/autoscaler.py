"""Autoscale: sampling pools' metrics and applying their formulas.

Implements the operations of "Create an automatic scaling formula for scaling
compute nodes in a Batch pool": enable (formula and
``autoScaleEvaluationInterval``), disable, evaluate without applying; the
pool's ``autoScaleRun`` (timestamp, results, error). Every sample period the
pools' metrics are recorded (:mod:`hpcbatch.execution.metrics`); every evaluation
interval each autoscaled pool's formula is evaluated (:mod:`hpcbatch.batch.autoscale`)
and its result becomes the pool's target, shrinking with the formula's
``$NodeDeallocationOption``.

Batch bounds ``autoScaleEvaluationInterval`` to 5 minutes .. 168 hours;
``min_interval_s`` (``ServiceConfig.min_autoscale_interval_s``,
``HPCBATCH_MIN_AUTOSCALE_INTERVAL_S``) lowers the lower bound for tests and demos.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import autoscale, events
from hpcbatch.batch.errors import ConflictError, InvalidPropertyValueError, wire_text
from hpcbatch.batch.models import PoolEnableAutoScale, PoolSpec
from hpcbatch.batch.states import JOB_LIVE, PoolState
from hpcbatch.core import statistics
from hpcbatch.core.pools import check_steady
from hpcbatch.core.rows import check_not_deleting, pool_row
from hpcbatch.execution import metrics
from hpcbatch.store import task_counts
from hpcbatch.store.database import Store, dumps, jobs, loads, mappings, pools

if TYPE_CHECKING:
    from hpcbatch.core.context import ServiceContext

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(minutes=15)
MAX_INTERVAL = timedelta(hours=168)


def _now() -> datetime:
    return datetime.now(UTC)


def _naive_utc(at: datetime) -> datetime:
    """``at`` as the store keeps times: naive UTC (a naive ``at`` is UTC already)."""
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


class Autoscaler:
    """Metrics sampling and autoscale evaluation for a service's pools.

    Parameters
    ----------
    ctx
        The service context (store, pool manager, engine).
    sample_interval_s
        Seconds between metric samples (Batch: 30).
    min_interval_s
        Smallest ``autoScaleEvaluationInterval`` accepted, in seconds (Batch: 300).
    """

    def __init__(self, ctx: ServiceContext, *, sample_interval_s: float = 30.0,
                 min_interval_s: float | None = None) -> None:
        self.ctx = ctx
        self.sample_interval_s = sample_interval_s
        env_min = os.environ.get("HPCBATCH_MIN_AUTOSCALE_INTERVAL_S")
        self.min_interval = timedelta(seconds=min_interval_s if min_interval_s is not None
                                      else float(env_min) if env_min else 300.0)
        self.history = metrics.MetricsHistory()
        self.clock = _now
        self._next_eval: dict[str, datetime] = {}
        self._network: dict[str, dict[str, tuple[float, float]]] = {}
        """Each pool's nodes' network counters at their last sample (``record_node_samples``)."""
        self.resize: Callable[[str, int, int, str | None], None] | None = None
        """``resize(pool_key, dedicated, low_priority, nodeDeallocationOption)``: makes a
        result the pool's targets, as "Pool - Resize" does (its resize events included):
        :meth:`hpcbatch.core.pools.Pools.resize_to`, set by the pools."""

    # ------------------------------------------------------------- operations

    def _interval(self, value: timedelta | None) -> timedelta:
        interval = DEFAULT_INTERVAL if value is None else value
        if not self.min_interval <= interval <= MAX_INTERVAL:
            raise InvalidPropertyValueError(
                "autoScaleEvaluationInterval", interval,
                f"must be between {wire_text(self.min_interval)} and {wire_text(MAX_INTERVAL)}")
        return interval

    def check(self, spec: PoolSpec) -> None:
        """Validate a new pool's autoscale settings (formula parses, interval in bounds)."""
        if spec.enable_auto_scale:
            if not spec.auto_scale_formula:
                raise InvalidPropertyValueError("autoScaleFormula", None,
                                                "required when enableAutoScale is true")
            autoscale.parse_formula(spec.auto_scale_formula)
            self._interval(spec.auto_scale_evaluation_interval)

    def enable(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """Enable autoscale on a pool ("Pool - Enable Auto Scale"); evaluates at once.

        On a pool that autoscales already, a formula or an interval left out keeps
        its current value (Batch: "If you omit either the autoscale formula or
        evaluation interval, the Batch service continues to use the current value of
        that setting"); on one that does not, a formula is required and the interval
        defaults to 15 minutes.

        Parameters
        ----------
        pool_id
            The pool's ID.
        body
            ``PoolEnableAutoScaleParameter`` wire JSON (``autoScaleFormula``,
            ``autoScaleEvaluationInterval``).

        Raises
        ------
        FormulaError
            ``InvalidAutoScaleFormula`` naming line, column and token.
        InvalidPropertyValueError
            An interval outside Batch's bounds.
        ConflictError
            ``PoolBeingResized`` (409): autoscale is off and a resize is in progress
            (the pool's allocation state is not ``steady``).
        """
        spec_patch = PoolEnableAutoScale.from_wire(body, what="enable autoscale")
        formula = spec_patch.auto_scale_formula
        with self.ctx.store.begin() as conn:
            row = pool_row(conn, pool_id)
            check_not_deleting(row)
            spec = loads(row["spec"])
            if not spec.get("enableAutoScale"):
                # "You cannot enable automatic scaling on a Pool if a resize operation is
                # in progress on the Pool" (REST Pool - Enable Auto Scale)
                check_steady(self.ctx.pool_manager, row)
            if not formula:
                formula = spec.get("autoScaleFormula")
            if not formula:
                raise InvalidPropertyValueError("autoScaleFormula", None, "a formula is required")
            autoscale.parse_formula(formula)
            requested = spec_patch.auto_scale_evaluation_interval
            if requested is None and spec.get("enableAutoScale"):
                # Batch: on a pool that autoscales, an interval left out keeps the current one
                requested = PoolSpec.model_validate(spec).auto_scale_evaluation_interval
            interval = self._interval(requested)
            spec.update(enableAutoScale=True, autoScaleFormula=formula,
                        autoScaleEvaluationInterval=PoolSpec.model_validate(
                            {"id": "x", "vmSize": "x", "autoScaleEvaluationInterval": interval}
                        ).to_wire()["autoScaleEvaluationInterval"])
            Store.update(conn, pools, {"key": row["key"]}, spec=dumps(spec))
        self.ctx.pool_manager.update_spec(row["key"], PoolSpec.model_validate(spec))
        self._next_eval[row["key"]] = self.clock()
        self.ctx.background(self.evaluate_due())

    def disable(self, pool_id: str) -> None:
        """Disable autoscale ("Pool - Disable Auto Scale"); the target stays where it is."""
        with self.ctx.store.begin() as conn:
            row = pool_row(conn, pool_id)
            check_not_deleting(row)
            spec = loads(row["spec"])
            spec["enableAutoScale"] = False
            for k in ("autoScaleFormula", "autoScaleEvaluationInterval"):
                spec.pop(k, None)
            Store.update(conn, pools, {"key": row["key"]}, spec=dumps(spec))
        self.ctx.pool_manager.update_spec(row["key"], PoolSpec.model_validate(spec))
        self._next_eval.pop(row["key"], None)

    def evaluate(self, pool_id: str, formula: str | None) -> dict[str, Any]:
        """Evaluate a formula on a pool without applying it ("Pool - Evaluate Auto Scale").

        Returns
        -------
        dict
            Batch's ``AutoScaleRun``: ``timestamp``, ``results``, ``error``.
        """
        with self.ctx.store.read() as conn:
            row = pool_row(conn, pool_id)
        if not formula:
            raise InvalidPropertyValueError("autoScaleFormula", None, "a formula is required")
        if not loads(row["spec"]).get("enableAutoScale"):
            raise ConflictError("Autoscale is not enabled on this pool; enable it first.",
                                code="AutoScaleNotEnabled")
        return self._run(row, autoscale.parse_formula(formula)).to_wire()

    # --------------------------------------------------------------- the loops

    def _snapshot(self, row: Mapping[str, Any]) -> autoscale.MetricsSnapshot:
        key = row["key"]
        nodes = self.ctx.pool_manager.nodes_of(key)
        spec = PoolSpec.model_validate(loads(row["spec"]))
        status = loads(row["status"])
        low = sum(1 for n in nodes if n.host.low_priority)
        return self.history.snapshot(
            key, self.clock(), current_dedicated_nodes=len(nodes) - low,
            current_low_priority_nodes=low, target_dedicated_nodes=status["target"],
            target_low_priority_nodes=status.get("targetLowPriority", 0),
            task_slots_per_node=spec.slots)

    def _run(self, row: Mapping[str, Any], formula: autoscale.Formula) -> autoscale.AutoScaleResult:
        return autoscale.evaluate(formula, self._snapshot(row))

    async def sample_loop(self) -> None:
        """Record every pool's metrics once per sample interval."""
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("metrics sampling failed")
            await asyncio.sleep(self.sample_interval_s)

    async def sample(self) -> None:
        """Record one sample period for every pool: the formulas' metrics history, and
        the nodes' memory, disk and network use in the pool statistics
        (:func:`hpcbatch.core.statistics.record_node_samples`)."""
        at = self.clock()
        svc = self.ctx
        for key in svc.pool_manager.pool_keys():
            counts = self._task_counts(key)
            workers = [n.worker for n in svc.pool_manager.nodes_of(key) if n.worker]
            results = await asyncio.gather(
                *(svc.engine.node_sample(w) for w in workers),
                return_exceptions=True)
            answered = [(w, r) for w, r in zip(workers, results, strict=True)
                        if isinstance(r, dict)]
            self.history.record(key, at, counts, [r for _, r in answered])
            network = self._network.setdefault(key, {})
            for gone in network.keys() - set(workers):  # nodes that left: forget them
                del network[gone]
            if answered:  # a pool with no node answering adds nothing: no transaction
                with svc.store.begin() as conn:
                    statistics.record_node_samples(conn, key, answered, network,
                                                   _naive_utc(at))

    def _task_counts(self, pool_key: str) -> dict[str, float]:
        with self.ctx.store.read() as conn:
            job_keys = conn.execute(sa.select(jobs.c.key).where(
                jobs.c.pool_key == pool_key, jobs.c.state.in_(sorted(JOB_LIVE))
            )).scalars().all()
            counters = task_counts.read(conn, job_keys).values()
        counts: dict[str, float] = {
            f"{bucket.capitalize()}Tasks": float(sum(c[bucket] for c in counters))
            for bucket in task_counts.BUCKETS}
        counts["PendingTasks"] = counts["ActiveTasks"] + counts["RunningTasks"]
        return counts

    async def eval_loop(self) -> None:
        """Evaluate due formulas, once a second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.evaluate_due()
            except Exception:
                log.exception("autoscale evaluation failed")

    async def evaluate_due(self) -> None:
        """Evaluate and apply the formula of every autoscaled pool whose interval elapsed."""
        now = self.clock()
        with self.ctx.store.read() as conn:
            rows = mappings(conn.execute(sa.select(pools).where(pools.c.state == PoolState.active)))
        for row in rows:
            spec = PoolSpec.model_validate(loads(row["spec"]))
            if not spec.enable_auto_scale or not spec.auto_scale_formula:
                continue
            due = self._next_eval.setdefault(row["key"], now)
            if due > now:
                continue
            self._next_eval[row["key"]] = now + (spec.auto_scale_evaluation_interval
                                                 or DEFAULT_INTERVAL)
            result = self._run(row, autoscale.parse_formula(spec.auto_scale_formula))
            self.apply(row["key"], result)

    def apply(self, pool_key: str, result: autoscale.AutoScaleResult) -> None:
        """Record ``autoScaleRun`` and, without error, make its result the pool's target."""
        with self.ctx.store.begin() as conn:
            row = Store.fetch_one(conn, pools, key=pool_key)
            if row is None:
                return
            status = loads(row["status"])
            status["autoScaleRun"] = result.to_wire()
            formula = loads(row["spec"]).get("autoScaleFormula")
            if result.error is None:
                status["target"] = result.target_dedicated_nodes
                status["targetLowPriority"] = result.target_low_priority_nodes or 0
            Store.update(conn, pools, {"key": pool_key}, status=dumps(status))
        self.ctx.emit("PoolAutoscaleEvent", events.pool_autoscale_event(
            {"id": row["id"], "autoScaleFormula": formula}, status["autoScaleRun"]))
        if result.error is None and self.resize is not None:
            self.resize(pool_key, result.target_dedicated_nodes or 0,
                        result.target_low_priority_nodes or 0, result.node_deallocation_option)

    def forget(self, pool_key: str) -> None:
        """Drop a deleted pool's samples and schedule."""
        self.history.forget(pool_key)
        self._network.pop(pool_key, None)
        self._next_eval.pop(pool_key, None)
