"""The autoscale metric history: what formulas read, and its bounded, compact memory."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timedelta

from hpcbatch.batch import autoscale
from hpcbatch.execution.metrics import NODE_METRICS, TASK_METRICS, MetricsHistory

T0 = datetime(2026, 12, 2, 12, 0, 0)
PERIOD = timedelta(seconds=30)


def node(i: int, period: int) -> dict[str, float]:
    return {name: float(1000 * period + i) for name in NODE_METRICS}


def test_formulas_read_each_nodes_sample_per_period() -> None:
    history = MetricsHistory()
    for p in range(4):
        history.record("pool", T0 + p * PERIOD, {"ActiveTasks": 10 * p},
                       [node(i, p) for i in range(3)])
    now = T0 + 3 * PERIOD
    snap = history.snapshot("pool", now, current_dedicated_nodes=3, target_dedicated_nodes=3)
    assert [s.value for s in snap.samples["ActiveTasks"]] == [0.0, 10.0, 20.0, 30.0]
    assert [s.value for s in snap.samples["CPUPercent"]][-3:] == [3000.0, 3001.0, 3002.0]
    assert len(snap.samples["CPUPercent"]) == 12
    assert [s.value for s in snap.samples["SampleNodeCount"]] == [3.0] * 4
    assert set(snap.samples) == {*TASK_METRICS, *NODE_METRICS, "SampleNodeCount"}
    assert snap.samples.get("NoSuchMetric", ()) == ()
    result = autoscale.evaluate(autoscale.parse_formula(
        "$n = $CPUPercent.Count(); $a = avg($ActiveTasks.GetSample(TimeInterval_Minute * 1));"
        " $TargetDedicatedNodes = 1;"), snap)
    assert result.error is None, result.error
    assert result.variables["$n"] == 12.0 and result.variables["$a"] == 25.0


def test_a_snapshot_does_not_change_when_later_periods_are_recorded() -> None:
    history = MetricsHistory()
    history.record("pool", T0, {}, [node(0, 0)])
    snap = history.snapshot("pool", T0)
    history.record("pool", T0 + PERIOD, {}, [node(0, 1)])
    assert len(snap.samples["CPUPercent"]) == 1


def test_old_periods_are_dropped_and_forget_drops_the_pool() -> None:
    history = MetricsHistory(keep=timedelta(minutes=2))
    for p in range(10):
        history.record("pool", T0 + p * PERIOD, {}, [node(0, p)])
    snap = history.snapshot("pool", T0 + 9 * PERIOD)
    assert snap.samples["CPUPercent"][0].timestamp == T0 + 5 * PERIOD
    history.forget("pool")
    assert dict(history.snapshot("pool", T0).samples) == {}


def test_memory_per_node_value_is_a_packed_double() -> None:
    """An hour of a 200-node pool: about 8 bytes a value, not a Python object per value."""
    history = MetricsHistory()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    periods, nodes = 120, 200
    for p in range(periods):
        history.record("pool", T0 + p * PERIOD, {}, [node(i, p) for i in range(nodes)])
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    values = periods * nodes * len(NODE_METRICS)
    assert used / values < 12, f"{used / values:.1f} bytes a value"
