"""Autoscale on the SSH testbed: a task-based formula grows and shrinks a pool."""

from __future__ import annotations

import pytest

from hpcbatch.client.sdk import BatchError
from tests.helpers import service_on_testbed, wait_until

FORMULA = """
// one node per pending task, at most 3
$pending = $PendingTasks.GetSample(1);
$TargetDedicatedNodes = min(3, $pending);
$NodeDeallocationOption = taskcompletion;
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    with service_on_testbed(tmp_path_factory.mktemp("autoscale"), 3, "127.0.10.1",
                            metrics_interval_s=0.5, min_autoscale_interval_s=1) as (c, _bed, th):
        yield c, th


def test_task_based_formula_grows_then_shrinks_to_zero_without_killing_tasks(env):
    client, _ = env
    client.create_pool({"id": "auto", "vmSize": "testbed", "enableAutoScale": True,
                        "autoScaleFormula": FORMULA, "autoScaleEvaluationInterval": "PT1S"})
    assert client.get_pool("auto").current_dedicated_nodes == 0
    client.create_job({"id": "work", "poolInfo": {"poolId": "auto"}})
    client.create_tasks("work", [{"id": f"t{i}", "commandLine": "/bin/sleep 4"} for i in range(6)])
    wait_until(lambda: len([n for n in client.list_nodes("auto") if n.state in
                            ("idle", "running")]) == 3, timeout_s=90, what="pool grew to 3")
    run = client._request("GET", "/pools/auto").json()["autoScaleRun"]
    assert "$TargetDedicatedNodes=3" in run["results"]
    assert "$NodeDeallocationOption=taskcompletion" in run["results"]
    counts = client.wait_for_tasks("work", timeout_s=120)
    assert counts["succeeded"] == 6
    wait_until(lambda: client.get_pool("auto").current_dedicated_nodes == 0, timeout_s=90,
               what="pool shrank to zero")
    tasks = client.list_tasks("work")
    assert all(t.execution_info.requeue_count == 0 and t.execution_info.retry_count == 0
               for t in tasks)
    assert len({t.node_info.node_id for t in tasks}) >= 2


def test_evaluate_disable_and_formula_errors(env):
    client, _ = env
    client.create_pool({"id": "manual", "vmSize": "testbed", "targetDedicatedNodes": 0})
    with pytest.raises(BatchError) as info:
        client.evaluate_pool_auto_scale("manual", "$TargetDedicatedNodes = 1;")
    assert info.value.code == "AutoScaleNotEnabled"
    client.enable_pool_auto_scale("manual", "$TargetDedicatedNodes = 0;", "PT2S")
    run = client.evaluate_pool_auto_scale("manual", "$x = 2;\n$TargetDedicatedNodes = $x * 3;")
    assert run["results"].startswith("$TargetDedicatedNodes=6;") and "$x=2" in run["results"]
    with pytest.raises(BatchError) as info:
        client.enable_pool_auto_scale("manual", "$TargetDedicatedNodes = min(1,;")
    assert info.value.status == 400 and info.value.code == "InvalidAutoScaleFormula"
    assert "line 1" in info.value.message and "column" in info.value.message
    with pytest.raises(BatchError) as info:
        client.enable_pool_auto_scale("manual", "$TargetDedicatedNodes = 1;", "P7DT1H")
    assert "autoScaleEvaluationInterval" in info.value.message
    # durations in the error as the wire writes them (ISO 8601), not Python's "7 days, 1:00:00"
    assert info.value.values["PropertyValue"] == "P7DT1H", info.value.values
    assert info.value.values["Reason"] == "must be between PT1S and P7D", info.value.values
    with pytest.raises(BatchError) as info:
        client.resize_pool("manual", 2)
    assert info.value.code == "AutoScaleEnabled"
    client.disable_pool_auto_scale("manual")
    client.resize_pool("manual", 0)
    assert client.get_pool("manual").enable_auto_scale is False
