"""Autoscale formulas: the examples of the Batch document "Create an automatic
scaling formula for scaling compute nodes in a Batch pool" (2017, and today's
version), its operations and functions tables, GetSample's percent rule, and the
errors Batch reports.

Time and metrics are constructed: ``NOW`` is the document's own evaluation time,
Thursday 2016-10-13 19:18:47.805 UTC, and sample series are 30 seconds apart.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from hpcbatch.batch.autoscale import (
    MAX_FORMULA_BYTES,
    AutoScaleResult,
    Formula,
    FormulaError,
    MetricsSnapshot,
    Sample,
    TimeInterval,
    evaluate,
    parse_formula,
)
from hpcbatch.batch.errors import BadRequestError

NOW = datetime(2016, 10, 13, 19, 18, 47, 805000, tzinfo=UTC)  # a Thursday
SECOND = timedelta(seconds=1)


def series(values, *, now=NOW, newest_age=timedelta(0), period=timedelta(seconds=30)):
    """Samples oldest first; the newest is ``newest_age`` old, each 30 s after the previous."""
    values = list(values)
    newest = now - newest_age
    return [Sample(newest - (len(values) - 1 - i) * period, float(v)) for i, v in enumerate(values)]


def snapshot(now=NOW, **kwargs) -> MetricsSnapshot:
    samples = {k: v for k, v in kwargs.items() if isinstance(v, list)}
    rest = {k: v for k, v in kwargs.items() if not isinstance(v, list)}
    return MetricsSnapshot(now=now, samples=samples, **rest)


def run(formula: str, metrics: MetricsSnapshot | None = None, **kwargs) -> AutoScaleResult:
    result = evaluate(formula, metrics or snapshot(), **kwargs)
    return result


def ok(formula: str, metrics: MetricsSnapshot | None = None, **kwargs) -> AutoScaleResult:
    result = run(formula, metrics, **kwargs)
    assert result.error is None, result.error
    return result


VEC_METRICS = {"CPUPercent": series([1, 2, 3])}  # $v below: [1, 2, 3]


def value_of(expression: str, setup: str = ""):
    result = ok(f"$v = $CPUPercent.GetSample(3);\n{setup}\n$r = {expression};", snapshot(**VEC_METRICS))
    return result.variables["$r"]


def parse_error(formula: str) -> FormulaError:
    with pytest.raises(FormulaError) as caught:
        parse_formula(formula)
    return caught.value


def eval_error(formula: str, metrics: MetricsSnapshot | None = None) -> dict:
    result = run(formula, metrics or snapshot(**VEC_METRICS))
    assert result.error is not None, result.results_text
    return result.error


def error_text(error: dict) -> str:
    (value,) = error["values"]
    assert value["name"] == "Message"
    return value["value"]


# -- the document's examples ----------------------------------------------------------


class TestDocumentExamples:
    QUICK = """$averageActiveTaskCount = avg($ActiveTasks.GetSample(TimeInterval_Minute * 15));
$TargetDedicated = min(10, $averageActiveTaskCount);"""

    @pytest.mark.parametrize(("active", "target"), [(4, 4), (4.5, 4), (20, 10), (0, 0)])
    def test_quick_example_caps_at_ten(self, active, target):
        result = ok(self.QUICK, snapshot(ActiveTasks=series([active] * 30)))
        assert result.target_dedicated_nodes == target
        assert result.variables["$averageActiveTaskCount"] == active

    def test_quick_example_averages_the_last_fifteen_minutes_only(self):
        # 30 samples of 6 in the last 15 minutes; older samples of 100 are outside the window
        samples = series([100] * 10 + [6] * 30)
        assert ok(self.QUICK, snapshot(ActiveTasks=samples)).target_dedicated_nodes == 6

    TIME_BASED = """
$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicated = $isWorkingWeekdayHour ? 20:10;
"""

    def test_time_based_results_match_the_documented_output(self):
        result = ok(self.TIME_BASED)
        # the document prints (old names): $TargetDedicated=10; $NodeDeallocationOption=requeue;
        # $curTime=2016-10-13T19:18:47.805Z; $isWeekday=1; $isWorkingWeekdayHour=0; $workHours=0
        assert result.results_text == (
            "$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
            "$curTime=2016-10-13T19:18:47.805Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0"
        )
        assert result.target_dedicated_nodes == 10
        assert result.node_deallocation_option == "requeue"
        assert result.variables["$curTime"] == NOW

    @pytest.mark.parametrize(
        ("now", "target"),
        [
            (datetime(2016, 10, 13, 10, 0, tzinfo=UTC), 20),  # Thursday 10:00
            (datetime(2016, 10, 10, 8, 0, tzinfo=UTC), 20),  # Monday 08:00
            (datetime(2016, 10, 14, 17, 59, 59, tzinfo=UTC), 20),  # Friday 17:59:59
            (datetime(2016, 10, 14, 18, 0, tzinfo=UTC), 10),  # Friday 18:00
            (datetime(2016, 10, 15, 10, 0, tzinfo=UTC), 10),  # Saturday
            (datetime(2016, 10, 16, 10, 0, tzinfo=UTC), 10),  # Sunday
            (datetime(2016, 10, 13, 7, 59, tzinfo=UTC), 10),  # Thursday 07:59
        ],
    )
    def test_time_based_adjustment(self, now, target):
        assert ok(self.TIME_BASED, snapshot(now=now)).target_dedicated_nodes == target

    MONDAYS = "$TargetDedicated = (time().weekday == 1 ? 5:1);"

    def test_five_nodes_on_mondays_one_otherwise(self):
        monday = datetime(2016, 10, 10, 12, tzinfo=UTC)
        assert ok(self.MONDAYS, snapshot(now=monday)).target_dedicated_nodes == 5
        assert ok(self.MONDAYS).target_dedicated_nodes == 1
        sunday = datetime(2016, 10, 16, 12, tzinfo=UTC)
        assert ok("$d = time().weekday;", snapshot(now=sunday)).variables["$d"] == 0

    TASK_BASED = """
// Get pending tasks for the past 15 minutes.
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),
avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise
// half of current dedicated.
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicated/2);
// The pool size is capped at 20, if target VM value is more than that, set it
// to 20. This value should be adjusted according to your use case.
$TargetDedicated = max(0, min($targetVMs, 20));
// Set node deallocation mode - keep nodes active only until tasks finish
$NodeDeallocationOption = taskcompletion;
"""

    def test_task_based_uses_max_of_last_sample_and_average(self):
        samples = series([10] * 29 + [1])  # average 9.7, last 1
        result = ok(self.TASK_BASED, snapshot(ActiveTasks=samples))
        assert result.variables["$samples"] == 100
        assert result.variables["$tasks"] == pytest.approx(9.7)
        assert result.target_dedicated_nodes == 9
        assert result.node_deallocation_option == "taskcompletion"
        assert result.results_text.startswith(
            "$TargetDedicatedNodes=9.7;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;"
        )

    def test_task_based_uses_the_last_sample_when_under_70_percent(self):
        samples = series([50] * 5 + [7])  # 6 of 30 possible samples: 20 %
        result = ok(self.TASK_BASED, snapshot(ActiveTasks=samples))
        assert result.variables["$samples"] == 20
        assert result.variables["$tasks"] == 7
        assert result.target_dedicated_nodes == 7

    def test_task_based_halves_the_pool_without_tasks(self):
        result = ok(self.TASK_BASED, snapshot(ActiveTasks=series([0] * 30), target_dedicated_nodes=7))
        assert result.variables["$targetVMs"] == 3.5
        assert result.target_dedicated_nodes == 3

    def test_task_based_caps_at_twenty(self):
        assert ok(self.TASK_BASED, snapshot(ActiveTasks=series([400] * 30))).target_dedicated_nodes == 20

    PARALLEL = """
// Determine whether 70 percent of the samples have been recorded in the past
// 15 minutes; if not, use last sample
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max(
$ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// Set the number of nodes to add to one-fourth the number of active tasks (the
// MaxTasksPerComputeNode property on this pool is set to 4, adjust this number
// for your use case)
$cores = $TargetDedicated * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicated + $extraVMs);
// Attempt to grow the number of compute nodes to match the number of active
// tasks, with a maximum of 3
$TargetDedicated = max(0,min($targetVMs,3));
// Keep the nodes active until the tasks finish
$NodeDeallocationOption = taskcompletion;
"""

    @pytest.mark.parametrize(
        ("current_target", "tasks", "target"),
        [(1, 10, 3), (0, 1, 1), (0, 5, 2), (2, 0, 0), (1, 4, 1)],
    )
    def test_accounting_for_parallel_tasks(self, current_target, tasks, target):
        metrics = snapshot(ActiveTasks=series([tasks] * 30), target_dedicated_nodes=current_target)
        result = ok(self.PARALLEL, metrics)
        assert result.variables["$cores"] == current_target * 4
        assert result.target_dedicated_nodes == target
        assert result.node_deallocation_option == "taskcompletion"

    @staticmethod
    def initial_pool_size(created: datetime) -> str:
        # the C# string.Format of Example 4, with {0} = DateTime.UtcNow.ToString("r") and {1} = 4
        return """
    $TargetDedicated = {1};
    lifespan          = time() - time("{0}");
    span              = TimeInterval_Minute * 60;
    startup            = TimeInterval_Minute * 10;
    ratio              = 50;

    $TargetDedicated = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio),
$ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicated) : {1});
    """.replace("{0}", created.strftime("%a, %d %b %Y %H:%M:%S GMT")).replace("{1}", "4")

    def test_initial_pool_size_holds_for_ten_minutes(self):
        result = ok(self.initial_pool_size(NOW - timedelta(minutes=5)))
        assert result.target_dedicated_nodes == 4
        # RFC 1123 has no milliseconds: the pool was created at 19:13:47.000
        assert result.variables["$lifespan"] == timedelta(minutes=5, microseconds=805000)
        assert "$lifespan=00:05:00.8050000" in result.results_text

    def test_initial_pool_size_scales_to_zero_when_idle(self):
        idle = snapshot(RunningTasks=series([0] * 120), ActiveTasks=series([0] * 120))
        result = ok(self.initial_pool_size(NOW - timedelta(hours=2)), idle)
        assert result.target_dedicated_nodes == 0

    def test_initial_pool_size_keeps_the_target_while_busy(self):
        busy = snapshot(RunningTasks=series([0] * 119 + [2]), ActiveTasks=series([0] * 120))
        assert ok(self.initial_pool_size(NOW - timedelta(hours=2)), busy).target_dedicated_nodes == 4

    def test_initial_pool_size_fails_below_the_ratio(self):
        sparse = snapshot(RunningTasks=series([0] * 50), ActiveTasks=series([0] * 120), target_dedicated_nodes=2)
        result = run(self.initial_pool_size(NOW - timedelta(hours=2)), sparse)
        assert result.error["code"] == "InsufficientSampleData"
        assert "$RunningTasks wanted 50%, received 41%" in error_text(result.error)
        assert result.target_dedicated_nodes == 2  # no change is made to the pool

    CPU = """$totalNodes =
    (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
    ($CurrentDedicated * 1.1) : $CurrentDedicated;
$totalNodes =
    (avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ?
    ($CurrentDedicated * 0.9) : $totalNodes;
$TargetDedicated = min(400, $totalNodes)"""

    @pytest.mark.parametrize(
        ("cpu_hour", "current", "target"),
        [
            ([0.5] * 100 + [0.8] * 20, 10, 11),  # busy for the last 10 minutes: +10 %
            ([0.1] * 120, 10, 9),  # idle for an hour: -10 %
            ([0.5] * 120, 10, 10),
            ([0.9] * 120, 400, 400),  # capped at 400
        ],
    )
    def test_cpu_formula(self, cpu_hour, current, target):
        metrics = snapshot(CPUPercent=series(cpu_hour), current_dedicated_nodes=current)
        assert ok(self.CPU, metrics).target_dedicated_nodes == target

    def test_cpu_formula_with_todays_names(self):
        formula = self.CPU.replace("$CurrentDedicated", "$CurrentDedicatedNodes").replace(
            "$TargetDedicated", "$TargetDedicatedNodes"
        )
        metrics = snapshot(CPUPercent=series([0.9] * 120), current_dedicated_nodes=20)
        assert ok(formula, metrics).target_dedicated_nodes == 22

    PENDING = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;"""  # noqa: E501 - the formula as Batch's autoscale doc prints it

    def test_pending_tasks_sample_formula(self):
        assert ok(self.PENDING).target_dedicated_nodes == 1  # no samples yet: starting size
        busy = snapshot(PendingTasks=series([12, 14, 16, 18, 20, 22]))
        result = ok(self.PENDING, busy)
        assert result.target_dedicated_nodes == 17
        assert result.variables["$pendingTaskSamplePercent"] == 100
        assert ok(self.PENDING, snapshot(PendingTasks=series([90] * 6))).target_dedicated_nodes == 25

    PREEMPTED = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""

    def test_preempted_nodes_sample_formula(self):
        result = ok(self.PREEMPTED, snapshot(PreemptedNodeCount=series([3, 3, 4, 4, 5, 5])))
        assert (result.target_dedicated_nodes, result.target_low_priority_nodes) == (3, 22)
        assert result.results_text == (
            "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=22;$NodeDeallocationOption=taskcompletion;"
            "$maxNumberofVMs=25"
        )

    def test_running_tasks_sample_range_matches_the_document(self):
        metrics = snapshot(RunningTasks=series([1] * 20))
        result = ok(
            "$runningTasksSample = $RunningTasks.GetSample(1 * TimeInterval_Minute, 6 * TimeInterval_Minute);",
            metrics,
        )
        assert result.results_text.endswith(";$runningTasksSample=[1,1,1,1,1,1,1,1,1,1]")
        assert result.variables["$runningTasksSample"] == [1.0] * 10

    def test_sample_range_with_start_before_end(self):
        metrics = snapshot(CPUPercent=series(range(40)))  # newest (39) now, one every 30 s
        formula = "$s = $CPUPercent.GetSample((TimeInterval_Minute * 10), (TimeInterval_Minute * 5));"
        assert ok(formula, metrics).variables["$s"] == [float(v) for v in range(20, 30)]

    def test_range_with_percent_requirement(self):
        formula = "$s = $RunningTasks.GetSample(60 * TimeInterval_Second, 120 * TimeInterval_Second, 75);"
        assert ok(formula, snapshot(RunningTasks=series([2] * 10))).variables["$s"] == [2.0, 2.0]
        error = eval_error(formula, snapshot(RunningTasks=series([2, 2], newest_age=timedelta(seconds=90))))
        assert error_text(error) == (
            "Line 1, Col 20: Insufficient data from data set: $RunningTasks wanted 75%, received 50%"
        )

    def test_five_minutes_of_cpu(self):
        result = ok("$c = $CPUPercent.GetSample(TimeInterval_Minute * 5);", snapshot(CPUPercent=series(range(30))))
        assert result.variables["$c"] == [float(v) for v in range(20, 30)]

    def test_formula_is_reusable(self):
        formula = parse_formula(self.QUICK)
        assert isinstance(formula, Formula) and str(formula) == self.QUICK
        assert evaluate(formula, snapshot(ActiveTasks=series([3] * 30))).target_dedicated_nodes == 3
        assert evaluate(formula, snapshot(ActiveTasks=series([8] * 30))).target_dedicated_nodes == 8


# -- GetSample and the other metric methods -------------------------------------------


class TestSamples:
    # ten minutes of history with the last minute missing: 18 of 20 samples (90 %)
    LATE = snapshot(CPUPercent=series(range(30), newest_age=timedelta(minutes=1)))

    def test_interval_without_percent_returns_what_is_available(self):
        assert len(ok("$s = $CPUPercent.GetSample(TimeInterval_Minute * 10);", self.LATE).variables["$s"]) == 18

    def test_percent_not_met_fails(self):
        result = run("$s = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95);", self.LATE)
        assert result.error == {
            "code": "InsufficientSampleData",
            "message": "Autoscale evaluation failed due to insufficient sample data",
            "values": [
                {
                    "name": "Message",
                    "value": "Line 1, Col 18: Insufficient data from data set: $CPUPercent wanted 95%, received 90%",
                }
            ],
        }
        assert "$s" not in result.variables

    def test_percent_met_succeeds(self):
        assert len(ok("$s = $CPUPercent.GetSample(TimeInterval_Minute * 10, 80);", self.LATE).variables["$s"]) == 18
        assert len(ok("$s = $CPUPercent.GetSample(TimeInterval_Minute * 10, 90);", self.LATE).variables["$s"]) == 18

    def test_get_sample_percent(self):
        assert ok("$p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10);", self.LATE).variables["$p"] == 90
        formula = "$p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 2, TimeInterval_Minute * 12);"
        assert ok(formula, self.LATE).variables["$p"] == 100
        assert ok("$p = $FailedTasks.GetSamplePercent(TimeInterval_Hour);").variables["$p"] == 0

    def test_count_takes_the_most_recent(self):
        result = ok("$s = $CPUPercent.GetSample(3); $one = $CPUPercent.GetSample(1);", self.LATE)
        assert result.variables["$s"] == [27.0, 28.0, 29.0]
        assert result.variables["$one"] == [29.0]

    def test_count_not_available_fails(self):
        error = eval_error("$x = 1;\n$s = max($ActiveTasks.GetSample(1));", snapshot())
        assert error["code"] == "InsufficientSampleData"
        assert error_text(error) == (
            "Line 2, Col 23: Insufficient data from data set: $ActiveTasks wanted 100%, received 0%"
        )
        error = eval_error("$s = $CPUPercent.GetSample(4);", snapshot(CPUPercent=series([1, 2])))
        assert error_text(error).endswith("$CPUPercent wanted 100%, received 50%")

    def test_timestamp_window(self):
        # windows are (start, end]: the sample taken exactly at 19:16:47.805 is outside
        formula = '$s = $CPUPercent.GetSample(time("2016-10-13T19:16:47.805Z"));'
        assert ok(formula, self.LATE).variables["$s"] == [28.0, 29.0]
        formula = '$s = $CPUPercent.GetSample(time() + -TimeInterval_Minute * 3, TimeInterval_Minute * 2, 100);'
        assert ok(formula, self.LATE).variables["$s"] == [26.0, 27.0]

    def test_future_samples_are_ignored(self):
        metrics = snapshot(CPUPercent=[*series([1, 2, 3]), Sample(NOW + SECOND, 99.0)])
        assert ok("$s = $CPUPercent.GetSample(1);", metrics).variables["$s"] == [3.0]

    def test_unordered_and_naive_samples(self):
        naive = [Sample(NOW.replace(tzinfo=None) - 30 * SECOND, 5.0), Sample(NOW.replace(tzinfo=None), 6.0)]
        metrics = snapshot(now=NOW.replace(tzinfo=None), CPUPercent=list(reversed(naive)))
        assert ok("$s = $CPUPercent.GetSample(2);", metrics).variables["$s"] == [5.0, 6.0]

    def test_count_history_begin_time_and_period(self):
        result = ok(
            "$n = $CPUPercent.Count(); $b = $CPUPercent.HistoryBeginTime(); $p = $CPUPercent.GetSamplePeriod();"
            "$q = $CPUPercent.GetSamplePeriod(TimeInterval_Minute * 5); $z = $WallClockSeconds.GetSamplePeriod();",
            self.LATE,
        )
        assert result.variables["$n"] == 30
        assert result.variables["$b"] == NOW - timedelta(minutes=1) - 29 * 30 * SECOND
        assert result.variables["$p"] == result.variables["$q"] == result.variables["$z"] == timedelta(seconds=30)
        assert "$p=00:00:30" in result.results_text

    def test_history_begin_time_without_samples(self):
        error = eval_error("$b = $DiskBytes.HistoryBeginTime();", snapshot())
        assert error["code"] == "InsufficientSampleData"

    def test_every_metric_variable_is_sampled(self):
        names = [
            "CPUPercent", "WallClockSeconds", "MemoryBytes", "DiskBytes", "DiskReadBytes", "DiskWriteBytes",
            "DiskReadOps", "DiskWriteOps", "NetworkInBytes", "NetworkOutBytes", "SampleNodeCount", "ActiveTasks",
            "RunningTasks", "PendingTasks", "SucceededTasks", "FailedTasks", "UsableNodeCount", "PreemptedNodeCount",
        ]
        metrics = snapshot(**{name: series([i]) for i, name in enumerate(names)})
        formula = ";\n".join(f"$m{i} = ${name}.GetSample(1)" for i, name in enumerate(names))
        result = ok(formula, metrics)
        assert [result.variables[f"$m{i}"] for i in range(len(names))] == [[float(i)] for i in range(len(names))]

    def test_plain_service_values(self):
        metrics = snapshot(current_dedicated_nodes=3, current_low_priority_nodes=5, task_slots_per_node=4)
        result = ok(
            "$a = $CurrentDedicatedNodes; $b = $CurrentDedicated; $c = $CurrentLowPriorityNodes;"
            "$d = $TaskSlotsPerNode;",
            metrics,
        )
        assert [result.variables[k] for k in ("$a", "$b", "$c", "$d")] == [3, 3, 5, 4]

    @pytest.mark.parametrize(
        ("formula", "message"),
        [
            ("$s = $CPUPercent.GetSample(0);", "sample count of at least 1"),
            ("$s = $CPUPercent.GetSample(TimeInterval_Minute, 101);", "samplePercent between 0 and 100"),
        ],
    )
    def test_bad_sample_arguments(self, formula, message):
        error = eval_error(formula)
        assert error["code"] == "FormulaEvaluationError"
        assert message in error_text(error)


# -- the operations table -------------------------------------------------------------

TI = TimeInterval


class TestOperations:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            # double op double: + - * /
            ("7 + 2", 9), ("7 - 2", 5), ("7 * 2", 14), ("7 / 2", 3.5), ("0.1 + 0.2", 0.1 + 0.2), ("1e3", 1000),
            (".5", 0.5),
            # double * timeinterval
            ("2 * TimeInterval_Minute", timedelta(minutes=2)),
            # doubleVec op double
            ("$v + 1", [2, 3, 4]), ("$v - 1", [0, 1, 2]), ("$v * 2", [2, 4, 6]), ("$v / 2", [0.5, 1, 1.5]),
            # doubleVec op doubleVec
            ("$v + $v", [2, 4, 6]), ("$v - $v", [0, 0, 0]), ("$v * $v", [1, 4, 9]), ("$v / $v", [1, 1, 1]),
            # timeinterval op double
            ("TimeInterval_Hour * 2", timedelta(hours=2)), ("TimeInterval_Hour / 4", timedelta(minutes=15)),
            # timeinterval op timeinterval
            ("TimeInterval_Hour + TimeInterval_Minute", timedelta(minutes=61)),
            ("TimeInterval_Hour - TimeInterval_Minute", timedelta(minutes=59)),
            # timeinterval + timestamp, timestamp + timeinterval, timestamp - timestamp
            ('TimeInterval_Day + time("2016-10-13T00:00:00Z")', datetime(2016, 10, 14, tzinfo=UTC)),
            ('time("2016-10-13T00:00:00Z") + TimeInterval_Week', datetime(2016, 10, 20, tzinfo=UTC)),
            ('time("2016-10-13T01:00:00Z") - time("2016-10-13")', timedelta(hours=1)),
            # unary
            ("-5", -5), ("--5", 5), ("!0", 1), ("!5", 0), ("!!7", 1), ("-TimeInterval_Second", timedelta(seconds=-1)),
            # comparisons: double, string, timestamp, timeinterval
            ("1 < 2", 1), ("2 < 1", 0), ("2 <= 2", 1), ("3 <= 2", 0), ("2 == 2", 1), ("2 == 3", 0),
            ("2 >= 2", 1), ("1 >= 2", 0), ("3 > 2", 1), ("2 > 2", 0), ("2 != 3", 1), ("2 != 2", 0),
            ('"abc" < "abd"', 1), ('"b" <= "a"', 0), ('"a" == "a"', 1), ('"B" >= "a"', 0), ('"b" > "a"', 1),
            ('"a" != "a"', 0),
            ('time("2016-10-13") < time("2016-10-14")', 1), ("time() == time()", 1), ('time() <= time("2000")', 0),
            ("TimeInterval_Hour > TimeInterval_Minute * 59", 1), ("TimeInterval_Minute * 60 == TimeInterval_Hour", 1),
            ("TimeInterval_Week != TimeInterval_Day * 7", 0), ("TimeInterval_Zero >= TimeInterval_100ns", 0),
            # logical
            ("1 && 1", 1), ("1 && 0", 0), ("0 && 1", 0), ("0.5 && 2", 1), ("0 || 0", 0), ("0 || 3", 1), ("3 || 0", 1),
            # ternary: nonzero is true
            ("1 ? 2 : 3", 2), ("0 ? 2 : 3", 3), ("-0.5 ? 2 : 3", 2), ("0 ? 1 : 0 ? 2 : 3", 3), ("1 ? 0 ? 4 : 5 : 6", 5),
            ('1 ? "x" : "y"', "x"),
            # precedence and associativity
            ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("10 - 2 - 3", 5), ("8 / 2 / 2", 2), ("-2 * 3", -6),
            ("1 < 2 == 1", 1), ("!0 && 0 || 1", 1), ("1 || 0 && 0", 1), ("2 > 1 ? 10 : 20", 10),
            ("1 + 1 == 2 && 3 > 2", 1), ("-(2 + 3)", -5),
            # IEEE division, as .NET doubles
            ("1 / 0", math.inf), ("-1 / 0", -math.inf),
        ],
    )
    def test_operation(self, expression, expected):
        assert value_of(expression) == expected

    def test_zero_divided_by_zero_is_nan(self):
        assert math.isnan(value_of("0 / 0"))

    def test_time_interval_constants(self):
        expected = {
            "Zero": TI(0), "100ns": TI(1), "Microsecond": TI(10), "Millisecond": TI(10_000),
            "Second": TI(10**7), "Minute": TI(6 * 10**8), "Hour": TI(36 * 10**9), "Day": TI(864 * 10**9),
            "Week": TI(7 * 864 * 10**9), "Year": TI(365 * 864 * 10**9),
        }
        formula = ";".join(f"$t{name} = TimeInterval_{name}" for name in expected)
        result = ok(formula)
        for name, interval in expected.items():
            assert result.variables[f"$t{name}"] == interval.to_timedelta()
        assert "$t100ns=00:00:00.0000001" in result.results_text
        assert "$tWeek=7.00:00:00" in result.results_text
        assert value_of("TimeInterval_100ns * 5 == TimeInterval_Microsecond / 2") == 1

    def test_timestamp_members(self):
        result = ok('$t = time("2016-10-13T19:18:47Z"); $y = $t.year; $mo = $t.month; $d = $t.day; '
                    "$w = $t.weekday; $h = $t.hour; $mi = $t.minute; $s = $t.second;")
        got = {k: result.variables[k] for k in ("$y", "$mo", "$d", "$w", "$h", "$mi", "$s")}
        assert got == {"$y": 2016, "$mo": 10, "$d": 13, "$w": 4, "$h": 19, "$mi": 18, "$s": 47}

    def test_short_circuit_and_ternary_skip_unneeded_samples(self):
        formula = (
            "$a = 0 && max($ActiveTasks.GetSample(1));\n"
            "$b = 1 || max($ActiveTasks.GetSample(1));\n"
            "$c = 1 ? 5 : max($ActiveTasks.GetSample(1));"
        )
        result = ok(formula, snapshot())
        assert (result.variables["$a"], result.variables["$b"], result.variables["$c"]) == (0, 1, 5)

    @pytest.mark.parametrize(
        ("expression", "column", "message"),
        [
            ('"a" + 1', 10, "operator '+' cannot be applied to string and double"),
            ("time() + 1", 13, "operator '+' cannot be applied to timestamp and double"),
            ("TimeInterval_Minute + 1", 26, "timeinterval and double"),
            ("1 - TimeInterval_Minute", 8, "operator '-' cannot be applied to double and timeinterval"),
            ("TimeInterval_Minute * TimeInterval_Minute", 26, "timeinterval and timeinterval"),
            ("1 / TimeInterval_Minute", 8, "double and timeinterval"),
            ("time() - TimeInterval_Hour", 13, "timestamp and timeinterval"),
            ("time() + time()", 13, "timestamp and timestamp"),
            ("2 + $v", 8, "double and doubleVec"),
            ("$v < 1", 9, "operator '<' cannot be applied to doubleVec and double"),
            ("$v == $v", 9, "doubleVec and doubleVec"),
            ('"a" && 1', 10, "operator '&&' cannot be applied to string and double"),
            ('1 < "a"', 8, "double and string"),
            ("time() < TimeInterval_Zero", 13, "timestamp and timeinterval"),
            ('-"a"', 6, "operator '-' cannot be applied to a string"),
            ("!TimeInterval_Minute", 6, "operator '!' cannot be applied to a timeinterval"),
            ("-time()", 6, "a timestamp"),
            ("-$v", 6, "a doubleVec"),
            ('"x" ? 1 : 2', 6, "the condition of '?:' must be a double, not a string"),
            ("(1).hour", 10, "a double has no member 'hour'"),
            ("time().millisecond", 13, "unknown timestamp member 'millisecond'"),
        ],
    )
    def test_type_errors_are_formula_errors(self, expression, column, message):
        error = parse_error(f"$v = $CPUPercent.GetSample(3);\n$r = {expression};")
        assert (error.line, error.column) == (2, column)
        assert message in error.message

    def test_runtime_type_error_when_types_depend_on_data(self):
        formula = "$x = $CPUPercent.Count() > 0 ? \"a\" : 2;\n$y = $x + 1;"
        result = run(formula, snapshot(CPUPercent=series([1])))
        assert result.error["code"] == "FormulaEvaluationError"
        assert error_text(result.error) == "Line 2, Col 9: operator '+' cannot be applied to string and double"
        assert result.variables["$x"] == "a"  # evaluated before the error
        assert ok(formula, snapshot()).variables["$y"] == 3

    def test_vector_length_mismatch(self):
        error = eval_error("$v = $CPUPercent.GetSample(3); $w = $CPUPercent.GetSample(2);\n$r = $v + $w;")
        assert error["code"] == "FormulaEvaluationError"
        assert error_text(error) == "Line 2, Col 9: doubleVec + doubleVec needs vectors of equal length, not 3 and 2"

    def test_interval_divided_by_zero(self):
        assert "not finite" in error_text(eval_error("$r = TimeInterval_Hour / 0;"))


# -- functions ------------------------------------------------------------------------


class TestFunctions:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("avg($v)", 2), ("avg(1, 2, 3)", 2), ("avg($v, 7)", 3.25), ("avg(1, 2, 3, 7)", 3.25), ("avg($v, $v)", 2),
            ("len($v)", 3), ("len($v, 7)", 4), ("len()", 0), ("len(5)", 1),
            ("lg(8)", 3), ("lg($v)", [0, 1, math.log2(3)]), ("lg(2, 4)", [1, 2]),
            ("ln(1)", 0), ("ln($v)", [0, math.log(2), math.log(3)]),
            ("log(1000)", 3), ("log($v * 10)", [1, math.log10(20), math.log10(30)]), ("log(0)", -math.inf),
            ("max($v)", 3), ("max($v, 7)", 7), ("max(0, $v - 5)", 0), ("min($v)", 1), ("min(5, $v, -1)", -1),
            ("norm(3, 4)", 5), ("norm($v)", math.sqrt(14)),
            ("percentile($v, 50)", 2), ("percentile($v, 100)", 3), ("percentile($v, 0)", 1), ("percentile($v, 90)", 3),
            ("range($v)", 2), ("range($v, 10)", 9),
            ("std($v)", 1), ("std(2, 4, 4, 4, 5, 5, 7, 9)", math.sqrt(32 / 7)),
            ("sum($v)", 6), ("sum($v, $v, 1)", 13), ("sum()", 0),
            ("val($v, 0)", 1), ("val($v, 2)", 3), ("val($v, 1.9)", 2),
        ],
    )
    def test_function(self, expression, expected):
        got = value_of(expression)
        if isinstance(expected, list):
            assert got == pytest.approx(expected)
        else:
            assert got == pytest.approx(expected)

    def test_doublevec_list_flattening_is_equivalent(self):
        # "if v = [1,2,3], then calling avg(v) is equivalent to calling avg(1,2,3)"
        assert value_of("avg($v) == avg(1, 2, 3) && avg($v, 7) == avg(1, 2, 3, 7)") == 1

    def test_log_of_negative_is_nan(self):
        assert math.isnan(value_of("ln(-1)"))

    def test_rand_uses_the_injected_generator(self):
        expected = random.Random(7).random()
        assert ok("$r = rand();", rng=random.Random(7)).variables["$r"] == expected
        assert 0 <= ok("$r = rand();").variables["$r"] < 1

    @pytest.mark.parametrize(
        ("argument", "expected"),
        [
            ("", NOW),
            ('"2016-10-13T19:18:47Z"', datetime(2016, 10, 13, 19, 18, 47, tzinfo=UTC)),
            ('"2016-10-13T21:18:47.5+02:00"', datetime(2016, 10, 13, 19, 18, 47, 500000, tzinfo=UTC)),
            ('"2016-10-13"', datetime(2016, 10, 13, tzinfo=UTC)),
            ('"2016-10"', datetime(2016, 10, 1, tzinfo=UTC)),
            ('"2016"', datetime(2016, 1, 1, tzinfo=UTC)),
            ('"2016-10-13T19:18Z"', datetime(2016, 10, 13, 19, 18, tzinfo=UTC)),
            ('"Thu, 13 Oct 2016 19:18:47 GMT"', datetime(2016, 10, 13, 19, 18, 47, tzinfo=UTC)),
            ('""', NOW),
        ],
    )
    def test_time(self, argument, expected):
        assert ok(f"$t = time({argument});").variables["$t"] == expected

    def test_time_rejects_other_formats(self):
        error = eval_error('$t = time("13/10/2016");')
        assert error["code"] == "FormulaEvaluationError"
        assert error_text(error).startswith("Line 1, Col 6: time() cannot read '13/10/2016'")

    @pytest.mark.parametrize(
        ("formula", "message"),
        [
            ("$r = avg();", "avg() of an empty doubleVecList"),
            ("$r = max($FailedTasks.GetSample(TimeInterval_Hour));", "max() of an empty doubleVecList"),
            ("$r = std(1);", "std() needs at least 2 values"),
            ("$r = val($v, 3);", "index 3 is outside the doubleVec of length 3"),
            ("$r = val($v, -1);", "outside"),
            ("$r = percentile($v, 101);", "between 0 and 100"),
            ("$r = percentile($FailedTasks.GetSample(TimeInterval_Hour), 50);", "empty doubleVec"),
        ],
    )
    def test_function_evaluation_errors(self, formula, message):
        error = eval_error("$v = $CPUPercent.GetSample(3);\n" + formula)
        assert error["code"] == "FormulaEvaluationError"
        assert error_text(error).startswith("Line 2, Col 6: ")
        assert message in error_text(error)

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("avg(\"a\")", "avg() takes a doubleVecList (doubles and doubleVecs), not a string"),
            ("sum(time())", "not a timestamp"),
            ("max(TimeInterval_Minute)", "not a timeinterval"),
            ("percentile(1, 50)", "percentile() takes (doubleVec v, double p); got (double, double)"),
            ("percentile($v)", "got (doubleVec)"),
            ("val($v, \"1\")", "val() takes (doubleVec v, double i)"),
            ("rand(1)", "rand() takes no arguments"),
            ("time(1)", "time() takes (string dateTime)"),
            ("time(\"a\", \"b\")", "time() takes"),
            ("foo(1)", "unknown function 'foo'"),
            ("Avg(1)", "unknown function 'Avg'"),
        ],
    )
    def test_function_type_errors(self, expression, message):
        error = parse_error(f"$v = $CPUPercent.GetSample(3);\n$r = {expression};")
        assert (error.line, error.column) == (2, 6)
        assert message in error.message

    def test_stop_ends_the_evaluation(self):
        formula = "$TargetDedicatedNodes = 3;\n$x = 1 ? stop() : 0;\n$TargetDedicatedNodes = 5;"
        result = ok(formula)
        assert result.stopped
        assert result.target_dedicated_nodes == 3
        assert "$x" not in result.variables
        result = ok("$TargetDedicatedNodes = 2; stop(); $TargetDedicatedNodes = 9", snapshot())
        assert (result.stopped, result.target_dedicated_nodes) == (True, 2)
        assert not ok("$TargetDedicatedNodes = 0 ? stop() : 4").stopped


# -- service variables, targets and results --------------------------------------------


class TestTargets:
    @pytest.mark.parametrize(
        ("value", "target"), [("2.9", 2), ("0.5", 0), ("-3", 0), ("7", 7), ("1e4", 10000), ("-0.5", 0)]
    )
    def test_rounded_down_and_clamped(self, value, target):
        result = ok(f"$TargetDedicatedNodes = {value}; $TargetLowPriorityNodes = {value};")
        assert result.target_dedicated_nodes == result.target_low_priority_nodes == target

    def test_results_keep_the_value_the_formula_computed(self):
        result = ok("$TargetDedicatedNodes = 2.5;")
        assert result.results_text.startswith("$TargetDedicatedNodes=2.5;")
        assert result.variables["$TargetDedicatedNodes"] == 2.5

    @pytest.mark.parametrize("value", ["1 / 0", "0 / 0", "-1 / 0"])
    def test_non_finite_targets_fail(self, value):
        result = run(f"$x = 1;\n$TargetDedicatedNodes = {value};", snapshot(target_dedicated_nodes=6))
        assert result.error["code"] == "FormulaEvaluationError"
        assert error_text(result.error).startswith("Line 2, Col 1: $TargetDedicatedNodes must be a finite number")
        assert result.target_dedicated_nodes == 6

    def test_unassigned_targets_keep_the_current_ones(self):
        result = ok("$x = 1;", snapshot(target_dedicated_nodes=4, target_low_priority_nodes=2))
        assert (result.target_dedicated_nodes, result.target_low_priority_nodes) == (4, 2)
        assert result.node_deallocation_option == "requeue"
        assert result.results_text == (
            "$TargetDedicatedNodes=4;$TargetLowPriorityNodes=2;$NodeDeallocationOption=requeue;$x=1"
        )

    @pytest.mark.parametrize("option", ["requeue", "terminate", "taskcompletion", "retaineddata"])
    def test_node_deallocation_options(self, option):
        assert ok(f"$NodeDeallocationOption = {option};").node_deallocation_option == option
        assert ok(f'$NodeDeallocationOption = "{option}";').node_deallocation_option == option

    def test_bad_node_deallocation_option(self):
        error = parse_error('$NodeDeallocationOption = "sometimes";')
        assert (error.line, error.column) == (1, 27)
        assert "must be one of requeue, terminate, taskcompletion, retaineddata" in error.message
        error = eval_error('$o = 1 > 0 ? "later" : "requeue";\n$NodeDeallocationOption = $o;', snapshot())
        assert error_text(error).startswith("Line 2, Col 1: $NodeDeallocationOption must be one of")
        assert "must be assigned a string" in parse_error("$NodeDeallocationOption = 1;").message
        assert "must be assigned a double" in parse_error("$TargetDedicatedNodes = time();").message
        assert "must be assigned a double" in parse_error("$TargetLowPriorityNodes = taskcompletion;").message

    @pytest.mark.parametrize(
        ("formula", "target"),
        [
            ("$TargetDedicated = 3;", 3),
            ("$TargetDedicatedNodes = 5; $TargetDedicated = 3;", 5),  # the full name takes precedence
            ("$TargetDedicated = 3; $TargetDedicatedNodes = 5;", 5),
            ("$TargetDedicated = 3; $x = $TargetDedicatedNodes; $TargetDedicatedNodes = $x + 1;", 4),
        ],
    )
    def test_target_dedicated_alias(self, formula, target):
        result = ok(formula)
        assert result.target_dedicated_nodes == target
        assert "$TargetDedicated=" not in result.results_text

    def test_target_low_priority_alias(self):
        result = ok("$TargetLowPriority = 6; $y = $TargetLowPriorityNodes;", snapshot(target_low_priority_nodes=1))
        assert (result.target_low_priority_nodes, result.variables["$y"]) == (6, 6)
        assert ok("$TargetLowPriorityNodes = 2; $TargetLowPriority = 6;").target_low_priority_nodes == 2

    def test_reading_targets_before_assigning(self):
        result = ok("$a = $TargetDedicated; $b = $TargetLowPriorityNodes; $c = $NodeDeallocationOption;",
                    snapshot(target_dedicated_nodes=8, target_low_priority_nodes=3))
        assert [result.variables[k] for k in ("$a", "$b", "$c")] == [8, 3, "requeue"]

    def test_results_text_formats_every_type(self):
        result = ok(
            'zeta = 1; $alpha = "text"; $Beta = $CPUPercent.GetSample(3) / 2; $gamma = TimeInterval_Minute * 90.5;'
            '$delta = time("2016-10-13T19:18:47.805Z") + TimeInterval_Day; $eps = 1 / 3;',
            snapshot(**VEC_METRICS),
        )
        assert result.results_text == (
            "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
            "$alpha=text;$Beta=[0.5,1,1.5];$delta=2016-10-14T19:18:47.805Z;$eps=0.3333333333333333;"
            "$gamma=01:30:30;$zeta=1"
        )
        assert result.variables["$Beta"] == [0.5, 1.0, 1.5]
        assert result.variables["$gamma"] == timedelta(minutes=90, seconds=30)

    def test_dollar_is_optional_for_user_variables(self):
        result = ok("x = 2;\n$y = $x + x;\n$x = 10;\nz = x;")
        assert (result.variables["$y"], result.variables["$x"], result.variables["$z"]) == (4, 10, 10)

    def test_to_wire(self):
        wire = ok("$TargetDedicatedNodes = 1;").to_wire()
        assert wire == {
            "timestamp": "2016-10-13T19:18:47.805Z",
            "results": "$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue",
        }
        failed = run("$s = $CPUPercent.GetSample(1);", snapshot()).to_wire()
        assert failed["error"]["code"] == "InsufficientSampleData"

    def test_error_leaves_targets_and_reports_earlier_variables(self):
        formula = (
            "$TargetDedicatedNodes = 9;\n$NodeDeallocationOption = terminate;\n$a = 1;\n"
            "$s = $CPUPercent.GetSample(1);"
        )
        result = run(formula, snapshot(target_dedicated_nodes=2))
        assert (result.target_dedicated_nodes, result.node_deallocation_option) == (2, "requeue")
        assert result.results_text == (
            "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$a=1"
        )
        assert error_text(result.error).startswith("Line 4, Col 18:")


# -- syntax: statements, comments, line breaks, malformed formulas ---------------------


class TestSyntax:
    def test_comments_and_line_breaks(self):
        formula = (
            "// leading comment\r\n"
            "$a = 1; // trailing comment\r\n"
            "/* a block\n   comment */ $b =\n  $a\n  + 2\n"
            "$c = $b * 2\n"  # a line break separates statements
            ";;\n"
            "$d = ($c\n>\n5) ?\n  1 :\n  0\n"
        )
        result = ok(formula)
        assert [result.variables[k] for k in ("$a", "$b", "$c", "$d")] == [1, 3, 6, 1]

    def test_statements_need_a_separator_on_one_line(self):
        error = parse_error("$a = 1 $b = 2")
        assert (error.line, error.column) == (1, 8)
        assert error.message == (
            "line 1, column 8: unexpected token '$b'; expected ';' or a line break between statements"
        )
        assert ok("$a = 1\n$b = 2").variables["$b"] == 2
        assert ok("$a = 1;$b = 2;").variables["$b"] == 2

    def test_last_statement_needs_no_semicolon(self):
        assert ok("$TargetDedicatedNodes = 3").target_dedicated_nodes == 3

    def test_error_is_a_400_invalid_autoscale_formula(self):
        error = parse_error("$a = 1;\n$b = min(1, );")
        assert isinstance(error, BadRequestError)
        assert (error.status, error.code) == (400, "InvalidAutoScaleFormula")
        assert error.message.startswith("line 2, column 13: unexpected token ')'; expected ")
        assert (error.line, error.column) == (2, 13)
        body = error.to_wire()
        assert body["code"] == "InvalidAutoScaleFormula"
        assert {"key": "Line", "value": "2"} in body["values"]

    @pytest.mark.parametrize(
        ("formula", "line", "column", "message"),
        [
            # missing operand
            ("$a = 1 +;", 1, 9, "unexpected token ';'"),
            ("$a = * 2;", 1, 6, "unexpected token '*'"),
            ("$a = ;", 1, 6, "unexpected token ';'"),
            ("$a = 1 +", 1, 9, "unexpected end of formula"),
            ("$a = 1;\n$b = 2 * (3 +\n)", 3, 1, "unexpected token ')'"),
            ("$a = 1 ? 2;", 1, 11, "unexpected token ';'; expected ':'"),
            ("$a = 1 2;", 1, 8, "unexpected token '2'"),
            ("$a = max(1,, 2);", 1, 12, "unexpected token ','"),
            # unbalanced parentheses
            ("$a = (1 + 2;", 1, 12, "unexpected token ';'; expected ')'"),
            ("$a = (1 + 2", 1, 12, "unexpected end of formula; expected ')'"),
            ("$a = 1 + 2);", 1, 11, "unexpected token ')'"),
            ("$a = max(1, 2;", 1, 14, "unexpected token ';'"),
            # unknown names
            ("$a = foo(1);", 1, 6, "unknown function 'foo'"),
            ("$a = 1;\n$b = $a + $c;", 2, 11, "unknown variable '$c'"),
            ("$a = b;", 1, 6, "unknown variable 'b'"),
            ("$a = $a + 1;", 1, 6, "unknown variable '$a'"),
            ("$a = TimeInterval_Fortnight;", 1, 6, "unknown variable 'TimeInterval_Fortnight'"),
            ("$a = $CPUPercent.GetSamples(1);", 1, 18, "unknown method 'GetSamples'"),
            ("$a = TargetDedicatedNodes;", 1, 6, "service-defined variables start with '$': $TargetDedicatedNodes"),
            ("TargetDedicatedNodes = 1;", 1, 1, "write $TargetDedicatedNodes"),
            # read-only and constant assignments
            ("$CPUPercent = 5;", 1, 1, "cannot assign to the read-only service-defined variable $CPUPercent"),
            ("$a = 1;\n  $CurrentDedicatedNodes = 3;", 2, 3, "read-only service-defined variable $CurrentDedicated"),
            ("$PendingTasks = 1;", 1, 1, "read-only"),
            ("$TaskSlotsPerNode = 1;", 1, 1, "read-only"),
            ("TimeInterval_Minute = 1;", 1, 1, "cannot assign to the constant TimeInterval_Minute"),
            # metrics are objects, not values
            ("$a = $CPUPercent;", 1, 6, "$CPUPercent is a metric"),
            ("$a = max($ActiveTasks);", 1, 10, "$ActiveTasks is a metric"),
            ("$a = $ActiveTasks + 1;", 1, 6, "$ActiveTasks is a metric"),
            ("$a = time().GetSample(1);", 1, 13, "GetSample() is a method of metric variables"),
            ("$x = 1; $a = $x.Count();", 1, 17, "Count() is a method of metric variables"),
            # method arguments
            ('$a = $CPUPercent.GetSample("x");', 1, 18, "GetSample takes (double count)"),
            ("$a = $CPUPercent.GetSample(1, 2);", 1, 18, "got (double, double)"),
            ("$a = $CPUPercent.GetSample();", 1, 18, "got ()"),
            ("$a = $CPUPercent.GetSamplePercent(5);", 1, 18, "GetSamplePercent takes (start [, end])"),
            ("$a = $CPUPercent.Count(1);", 1, 18, "Count takes ()"),
            # characters and statements
            ("$a = 1 @ 2;", 1, 8, "unexpected character '@'"),
            ("$a == 1;", 1, 5, "unexpected token '='"),
            ("5;", 1, 1, "unexpected token '5'"),
            ("", 1, 1, "the formula contains no statements"),
            ("// only a comment\n;;", 1, 1, "the formula contains no statements"),
        ],
    )
    def test_malformed_formula(self, formula, line, column, message):
        error = parse_error(formula)
        assert (error.line, error.column) == (line, column), error.message
        assert message in error.message
        assert error.message.startswith(f"line {line}, column {column}: ")

    def test_formula_size_limit(self):
        statement = "$a = 1;\n"
        filler = "//" + "x" * (MAX_FORMULA_BYTES - len(statement) - 2)
        exactly = statement + filler
        assert len(exactly.encode()) == MAX_FORMULA_BYTES
        assert ok(exactly).variables["$a"] == 1
        error = parse_error(exactly + "y")
        assert "a formula cannot exceed 8192 bytes (8 KB)" in error.message
        assert (error.line, error.column) == (2, len(filler) + 1)
        # bytes, not characters
        assert "cannot exceed" in parse_error(statement + "//" + "é" * (MAX_FORMULA_BYTES // 2)).message

    def test_statement_limit(self):
        hundred = "\n".join(f"$v{i} = {i};" for i in range(100))
        assert len(ok(hundred).variables) == 103
        error = parse_error(hundred + "\n$v100 = 100;")
        assert (error.line, error.column) == (101, 1)
        assert "at most 100 statements" in error.message
        # statements, not semicolons
        assert ok(hundred + ";;;\n").variables["$v99"] == 99

    def test_nesting_limit(self):
        assert ok("$a = " + " + ".join(["1"] * 100)).variables["$a"] == 100
        assert ok("$a = " + "(" * 2000 + "1" + ")" * 2000).variables["$a"] == 1  # parentheses add no level
        deep_ones = ("1 + " * 1000 + "1", "-" * 1000 + "1", "1 ? " * 500 + "1" + " : 2" * 500,
                     "max(" * 300 + "1" + ")" * 300)
        for deep in deep_ones:
            error = parse_error("$a = 1;\n$b = " + deep)
            assert "nests more than 100 levels deep" in error.message
            assert error.line == 2

    def test_non_string_formula(self):
        with pytest.raises(FormulaError):
            parse_formula(None)  # type: ignore[arg-type]

    def test_evaluate_text_raises_for_parse_errors(self):
        with pytest.raises(FormulaError, match="unknown function 'nope'"):
            evaluate("$a = nope();", snapshot())
