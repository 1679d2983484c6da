"""End-to-end behaviour of the service on the SSH testbed: real sshd, real Dask, real SQLite."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.client.state import operator_key
from hpcbatch.providers.inventory import Host
from hpcbatch.testing import testbed as tb
from tests.helpers import account_key, running_service, service_on_testbed, wait_until

ENV_PRINT = "/bin/sh -c 'echo $AZ_BATCH_NODE_ID $AZ_BATCH_TASK_ID $AZ_BATCH_TASK_WORKING_DIR'"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):
    """A 4-host testbed (127.0.1.1-4) and a service with those hosts in its inventory."""
    with service_on_testbed(tmp_path_factory.mktemp("svc"), 4, "127.0.1.1") as env:
        yield env


@pytest.fixture(scope="module")
def pool3(svc):
    """A 3-node pool (two task slots per node) on the testbed, ready."""
    client, _, _ = svc
    client.create_pool({"id": "pool3", "vmSize": "testbed", "targetDedicatedNodes": 3,
                        "taskSlotsPerNode": 2})
    nodes = client.wait_for_pool("pool3", timeout_s=120)
    assert [n.state for n in nodes] == ["idle"] * 3, [(n.id, n.state, n.errors) for n in nodes]
    return "pool3"


def test_fifty_tasks_run_on_several_nodes_with_their_own_variables(svc, pool3):
    client, _, _ = svc
    client.create_job({"id": "fifty", "poolInfo": {"poolId": pool3}})
    client.create_tasks("fifty", [{"id": f"task-{i}", "commandLine": ENV_PRINT} for i in range(50)])
    counts = client.wait_for_tasks("fifty", timeout_s=180)
    assert counts["succeeded"] == 50 and counts["failed"] == 0
    tasks = client.list_tasks("fifty")
    assert len(tasks) == 50
    assert all(t.state == "completed" and t.execution_info.exit_code == 0 for t in tasks)
    assert all(t.execution_info.result == "success" for t in tasks)
    nodes = {t.node_info.node_id for t in tasks}
    assert len(nodes) >= 2
    for t in tasks:
        out = client.download_task_file("fifty", t.id, "stdout.txt").decode().split()
        node_id, task_id, wd = out
        assert node_id == t.node_info.node_id
        assert task_id == t.id
        assert wd.endswith(f"/workitems/fifty/job-1/{t.id}/wd")
        assert t.execution_info.start_time <= t.execution_info.end_time


def test_failures_keep_exit_code_and_explain_missing_programs(svc, pool3):
    client, _, _ = svc
    client.create_job({"id": "failing", "poolInfo": {"poolId": pool3}})
    client.create_task("failing", {"id": "exit7", "commandLine": "/bin/sh -c 'exit 7'"})
    client.create_task("failing", {"id": "missing", "commandLine": "no-such-program --flag"})
    client.create_task("failing", {"id": "retried", "commandLine": "/bin/false",
                                   "constraints": {"maxTaskRetryCount": 2}})
    client.wait_for_tasks("failing", timeout_s=120)
    exit7 = client.get_task("failing", "exit7").execution_info
    assert (exit7.result, exit7.exit_code, exit7.retry_count) == ("failure", 7, 0)
    missing = client.get_task("failing", "missing").execution_info
    assert missing.result == "failure"
    assert missing.failure_info.category == "usererror"
    assert missing.failure_info.code == "CommandProgramNotFound"
    assert "no-such-program" in missing.failure_info.message
    retried = client.get_task("failing", "retried").execution_info
    assert (retried.result, retried.exit_code, retried.retry_count) == ("failure", 1, 2)
    assert retried.last_retry_time is not None


def test_command_line_runs_without_a_shell(svc, pool3):
    client, _, _ = svc
    client.create_job({"id": "noshell", "poolInfo": {"poolId": pool3}})
    client.create_task("noshell", {"id": "t", "commandLine": "echo $AZ_BATCH_TASK_ID 'a b'"})
    client.create_task("noshell", {
        "id": "env", "commandLine": "/bin/sh -c 'echo $GREETING'",
        "environmentSettings": [{"name": "GREETING", "value": "hello there"}]})
    client.wait_for_tasks("noshell", timeout_s=60)
    assert client.download_task_file("noshell", "t", "stdout.txt") == b"$AZ_BATCH_TASK_ID a b\n"
    assert client.download_task_file("noshell", "env", "stdout.txt") == b"hello there\n"
    names = {f.name for f in client.list_task_files("noshell", "t", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd"} <= names


def test_bad_input_gets_batch_error_codes(svc, pool3):
    client, _, _ = svc

    def code(fn, *args):
        with pytest.raises(BatchError) as info:
            fn(*args)
        return info.value.status, info.value.code, info.value.message

    client.create_job({"id": "badinput", "poolInfo": {"poolId": pool3}})
    status, c, msg = code(client.create_task, "badinput", {"id": "bad id!", "commandLine": "x"})
    assert (status, c) == (400, "InvalidPropertyValue") and "id" in msg
    status, c, msg = code(client.create_task, "badinput", {"id": "a" * 65, "commandLine": "x"})
    assert (status, c) == (400, "InvalidPropertyValue")
    client.create_task("badinput", {"id": "Dup", "commandLine": "/bin/true"})
    assert code(client.create_task, "badinput", {"id": "dup", "commandLine": "x"})[:2] == (409, "TaskExists")
    assert code(client.create_job, {"id": "BADINPUT", "poolInfo": {"poolId": "x"}})[:2] == (409, "JobExists")
    assert code(client.create_pool, {"id": "POOL3", "vmSize": "any"})[:2] == (409, "PoolExists")
    assert code(client.get_pool, "nope")[:2] == (404, "PoolNotFound")
    assert code(client.get_job, "nope")[:2] == (404, "JobNotFound")
    assert code(client.get_task, "badinput", "nope")[:2] == (404, "TaskNotFound")
    assert code(client.create_task, "nojob", {"id": "t", "commandLine": "x"})[:2] == (404, "JobNotFound")
    status, c, msg = code(client.create_task, "badinput", {"id": "t2", "commandLine": "x",
                                                            "comandLine2": "typo"})
    assert (status, c) == (400, "InvalidRequestBody") and "comandLine2" in msg
    status, c, msg = code(client.create_task, "badinput", {
        "id": "t3", "commandLine": "x", "constraints": {"maxTaskRetryCount": "many"}})
    assert status == 400 and "constraints.maxTaskRetryCount" in msg
    status, c, msg = code(client.create_pool, {"id": "p2", "vmSize": "any",
                                               "targetDedicatedNodes": -1})
    assert status == 400 and "targetDedicatedNodes" in msg
    # Malformed JSON, sent raw.
    resp = requests.post(f"{client.endpoint}/jobs/badinput/tasks?api-version=2025-06-01",
                         data=b"{not json", headers={"Content-Type": "application/json"},
                         auth=client._auth, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["code"] == "InvalidRequestBody"
    assert "not valid JSON" in resp.json()["message"]["value"]
    # A collection: one good, one duplicate, one invalid; each judged on its own.
    results = client.create_tasks("badinput", [
        {"id": "c1", "commandLine": "/bin/true"}, {"id": "dup", "commandLine": "/bin/true"},
        {"id": "c 3", "commandLine": "/bin/true"}], raise_on_error=False)
    assert [r.status for r in results] == ["success", "clienterror", "clienterror"]
    assert results[1].error["code"] == "TaskExists"
    # Over 100 tasks in one request.
    resp = requests.post(f"{client.endpoint}/jobs/badinput/addtaskcollection?api-version=2025-06-01",
                         json={"value": [{"id": f"x{i}", "commandLine": "x"} for i in range(101)]},
                         auth=client._auth, timeout=10)
    assert resp.status_code == 413 and resp.json()["code"] == "RequestBodyTooLarge"


def test_wrong_key_is_refused_and_changes_nothing(svc, pool3):
    client, _, _ = svc
    wrong = base64.b64encode(b"x" * 64).decode()
    intruder = BatchClient(client.endpoint, client.account, wrong)
    with pytest.raises(BatchError) as info:
        intruder.create_job({"id": "intruder", "poolInfo": {"poolId": pool3}})
    assert (info.value.status, info.value.code) == (403, "AuthenticationFailed")
    with pytest.raises(BatchError) as info:
        client.get_job("intruder")
    assert info.value.code == "JobNotFound"
    resp = requests.get(f"{client.endpoint}/pools?api-version=2025-06-01", timeout=10)
    assert resp.status_code == 403


def test_sdk_chunks_large_collections(svc, pool3):
    client, _, _ = svc
    client.create_job({"id": "chunks", "poolInfo": {"poolId": pool3}})
    results = client.create_tasks("chunks", [{"id": f"t{i}", "commandLine": "/bin/true"}
                                             for i in range(250)])
    assert len(results) == 250 and all(r.status == "success" for r in results)
    assert client.wait_for_tasks("chunks", timeout_s=180)["succeeded"] == 250
    done = client.list_tasks("chunks", filter="state eq 'completed'", select="id,state")
    assert len(done) == 250 and {t.state for t in done} == {"completed"}
    page = client._request("GET", "/jobs/chunks/tasks", params={"maxresults": 100}).json()
    assert len(page["value"]) == 100 and "odata.nextLink" in page


def test_terminate_and_delete(svc, pool3):
    client, _, _ = svc
    client.create_job({"id": "term", "poolInfo": {"poolId": pool3}})
    client.create_task("term", {"id": "sleeper", "commandLine": "/bin/sleep 300"})
    wait_until(lambda: client.get_task("term", "sleeper").state == "running", what="running")
    client.terminate_task("term", "sleeper")
    wait_until(lambda: client.get_task("term", "sleeper").state == "completed", what="ended")
    info = client.get_task("term", "sleeper").execution_info
    assert info.failure_info.code == "TaskEnded" and info.retry_count == 0
    client.create_task("term", {"id": "sleeper2", "commandLine": "/bin/sleep 300"})
    wait_until(lambda: client.get_task("term", "sleeper2").state == "running", what="running")
    client.terminate_job("term", "enough")
    job = wait_until(lambda: (j := client.get_job("term")).state == "completed" and j,
                     what="job completed")
    assert job.execution_info.terminate_reason == "enough"
    assert client.get_task("term", "sleeper2").execution_info.failure_info.code == "TaskEnded"
    with pytest.raises(BatchError) as err:
        client.create_task("term", {"id": "late", "commandLine": "/bin/true"})
    assert err.value.code == "JobCompleted"
    client.delete_job("term")
    wait_until(lambda: "term" not in {j.id for j in client.list_jobs()}, what="job deleted")


def test_start_task_and_resize_give_hosts_back(svc, pool3):
    client, bed, _ = svc
    # pool3 holds 3 of the 4 hosts; a 1-node pool takes the last one.
    client.create_pool({"id": "starter", "vmSize": "any", "targetDedicatedNodes": 1,
                        "startTask": {"commandLine": "/bin/sh -c 'echo started > $AZ_BATCH_NODE_SHARED_DIR/mark'",
                                      "waitForSuccess": True}})
    [node] = client.wait_for_pool("starter", timeout_s=120)
    assert node.state == "idle" and node.start_task_info.exit_code == 0
    root = bed.host(node.id).root_dir
    assert Path(root, "shared", "mark").read_text() == "started\n"
    assert {h["poolId"] for h in client.list_hosts()} == {"pool3", "starter"}
    client.resize_pool("starter", 0)
    wait_until(lambda: client.get_pool("starter").current_dedicated_nodes == 0, what="shrunk")
    # A start task that fails leaves the node in starttaskfailed.
    client.create_pool({"id": "badstart", "vmSize": "any", "targetDedicatedNodes": 1,
                        "startTask": {"commandLine": "/bin/false", "waitForSuccess": True,
                                      "maxTaskRetryCount": 1}})
    [node] = client.wait_for_pool("badstart", timeout_s=120)
    assert node.state == "starttaskfailed"
    assert node.start_task_info.retry_count == 1 and node.start_task_info.exit_code == 1
    client.delete_pool("badstart")
    client.delete_pool("starter")
    wait_until(lambda: {p.id for p in client.list_pools()} == {"pool3"}, what="pools deleted")
    free = [h for h in client.list_hosts() if h["poolId"] is None]
    assert len(free) == 1


def test_unreachable_host_is_unusable_and_the_rest_works(tmp_path):
    with service_on_testbed(tmp_path, 2, "127.0.1.11") as (client, bed, _):
        broken = bed.hosts[0].model_dump(mode="json")
        broken.update(name="broken", port=1)  # nothing listens on port 1
        client.add_hosts([broken])
        client.create_pool({"id": "mixed", "vmSize": "any", "targetDedicatedNodes": 3})
        nodes = {n.id: n for n in client.wait_for_pool("mixed", timeout_s=120)}
        assert nodes["broken"].state == "unusable"
        message = nodes["broken"].errors[0].message
        assert "broken" in message and "refused" in message.lower()
        assert sorted(n.state for k, n in nodes.items() if k != "broken") == ["idle", "idle"]
        client.create_job({"id": "j", "poolInfo": {"poolId": "mixed"}})
        client.create_tasks("j", [{"id": f"t{i}", "commandLine": "/bin/true"} for i in range(6)])
        assert client.wait_for_tasks("j", timeout_s=120)["succeeded"] == 6
        assert "broken" not in {t.node_info.node_id for t in client.list_tasks("j")}


def test_client_without_certificates_cannot_join_the_scheduler(tmp_path):
    from distributed import Client

    with running_service(tmp_path / "state") as (_, thread):
        address = thread.runtime.engine.address
        assert address.startswith("tls://")
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(address.replace("tls://", "tcp://"), timeout=3)
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(address, timeout=3)


def _start_service_process(state_dir: Path, port: int) -> subprocess.Popen:
    with open(state_dir.parent / "service.log", "ab") as log:  # the service keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "hpcbatch.api.server", "--state-dir", str(state_dir),
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline()
    assert line, (state_dir.parent / "service.log").read_text()[-2000:]
    return proc


def test_service_killed_with_sigkill_loses_nothing(tmp_path):
    with tb.up(2, tmp_path / "testbed", base_address="127.0.1.21") as bed:
        state = tmp_path / "state"
        state.mkdir()
        port = _free_port()
        proc = _start_service_process(state, port)
        client = BatchClient(f"http://127.0.0.1:{port}", "hpcbatch", account_key(state),
                             operator_key=operator_key(state))
        client.add_hosts([h.model_dump(mode="json") for h in bed.hosts])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 2})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.create_tasks("j", [{"id": f"t{i}", "commandLine": "/bin/sleep 1"} for i in range(8)])
        wait_until(lambda: client.get_task_counts("j")["running"] > 0, what="tasks running")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = _start_service_process(state, port)
        try:
            assert client.get_pool("p").id == "p"
            assert client.get_job("j").id == "j"
            assert len(client.list_tasks("j")) == 8
            counts = client.wait_for_tasks("j", timeout_s=180)
            assert counts["succeeded"] == 8
            tasks = client.list_tasks("j")
            assert sum(t.execution_info.requeue_count for t in tasks) >= 1
            assert all(t.execution_info.retry_count == 0 for t in tasks)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_inventory_rejects_bad_hosts(svc):
    client, _, _ = svc
    with pytest.raises(BatchError) as info:
        client.add_hosts([{"address": "10.0.0.1", "port": "ssh"}])
    assert info.value.status == 400 and "port" in info.value.message
    with pytest.raises(BatchError) as info:
        client.add_hosts([{"address": "10.0.0.1", "colour": "blue"}])
    assert "colour" in info.value.message
    assert Host(address="a").name == "a"
