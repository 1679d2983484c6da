"""Scoped credentials for tasks (docs/security.md, "Scoped credentials"): a job manager gets a
token for its own job (Batch's ``authenticationTokenSettings``), only when asked, and no task
ever gets the account key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.errors import AuthenticationError
from hpcbatch.batch.sharedkey import generate_account_key
from hpcbatch.batch.tokens import (
    TOKEN_ENV,
    check_job_incarnation,
    issue_job_token,
    verify_job_token,
)
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.client.state import service_connection
from tests.helpers import service_on_testbed, wait_until

PROBE = r'''
import json, os
from hpcbatch.client.sdk import BatchClient, BatchError

def code(call):
    try:
        call()
        return "ok"
    except BatchError as exc:
        return f"{exc.status} {exc.code}"

out = {"env": dict(os.environ), "has_token": "AZ_BATCH_AUTHENTICATION_TOKEN" in os.environ}
if out["has_token"]:
    c = BatchClient.from_environment()
    job = os.environ["AZ_BATCH_JOB_ID"]
    child = {"id": "child-" + os.environ["AZ_BATCH_TASK_ID"], "commandLine": "/bin/true"}
    out["add_own_task"] = code(lambda: c.create_task(job, child))
    out["read_own_job"] = code(lambda: c.get_job(job))
    out["list_own_tasks"] = code(lambda: c.list_tasks(job))
    out["read_other_job"] = code(lambda: c.get_job("victim"))
    out["add_other_task"] = code(lambda: c.create_task("victim", {"id": "evil", "commandLine": "/bin/true"}))
    out["terminate_other"] = code(lambda: c.terminate_job("victim"))
    out["list_jobs"] = code(lambda: c.list_jobs())
    out["create_job"] = code(lambda: c.create_job({"id": "evil-job", "poolInfo": {"poolId": "p"}}))
    out["list_pools"] = code(lambda: c.list_pools())
    out["delete_pool"] = code(lambda: c.delete_pool("p"))
    out["list_hosts"] = code(lambda: c.list_hosts())
    out["node_files"] = code(lambda: c.list_node_files("p", os.environ["AZ_BATCH_NODE_ID"]))
print("PROBE " + json.dumps(out), flush=True)
'''


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BatchClient, Path, str]]:
    tmp = tmp_path_factory.mktemp("tokens")
    with service_on_testbed(tmp, 1, "127.0.47.1") as (client, _bed, thread):
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 4})
        client.wait_for_pool("p", timeout_s=180)
        probe = tmp / "probe.py"
        probe.write_text(PROBE)
        yield client, probe, service_connection(thread.runtime.state_dir).key


def probe_of(client: BatchClient, job_id: str, task_id: str) -> dict[str, Any]:
    wait_until(lambda: client.get_task(job_id, task_id).state == "completed", timeout_s=180,
               what=f"task {task_id}")
    out = client.download_task_file(job_id, task_id, "stdout.txt").decode()
    line = next((ln for ln in out.splitlines() if ln.startswith("PROBE ")), None)
    assert line, out + client.download_task_file(job_id, task_id, "stderr.txt").decode()
    return json.loads(line[len("PROBE "):])


def test_job_manager_token_works_on_its_job_only(bed) -> None:
    client, probe, key = bed
    client.create_job({"id": "victim", "poolInfo": {"poolId": "nopool"}})
    client.create_job({"id": "own", "poolInfo": {"poolId": "p"}, "jobManagerTask": {
        "id": "jm", "commandLine": f"{sys.executable} {probe}", "killJobOnCompletion": False,
        "authenticationTokenSettings": {"access": ["job"]}}})
    out = probe_of(client, "own", "jm")
    assert out["has_token"]
    assert out["add_own_task"] == out["read_own_job"] == out["list_own_tasks"] == "ok"
    for op in ("read_other_job", "add_other_task", "terminate_other", "list_jobs", "create_job",
               "list_pools", "delete_pool", "list_hosts", "node_files"):
        assert out[op] == "403 AuthorizationFailure", (op, out[op])
    assert "AZURE_BATCH_ACCESS_KEY" not in out["env"]
    assert key not in json.dumps(out["env"])
    # what was allowed happened, what was refused did not
    assert "child-jm" in {t.id for t in client.list_tasks("own")}
    assert client.get_job("victim").state == "active" and client.list_tasks("victim") == []
    assert "evil-job" not in {j.id for j in client.list_jobs()}
    assert client.get_pool("p").state == "active"


def test_without_the_setting_no_token_and_never_the_account_key(bed) -> None:
    client, probe, key = bed
    client.create_job({"id": "notoken", "poolInfo": {"poolId": "p"}, "jobManagerTask": {
        "id": "jm", "commandLine": f"{sys.executable} {probe}", "killJobOnCompletion": False}})
    client.create_task("notoken", {"id": "plain", "commandLine": f"{sys.executable} {probe}"})
    client.create_task("notoken", {"id": "asked", "commandLine": f"{sys.executable} {probe}",
                                   "authenticationTokenSettings": {"access": ["job"]}})
    client.create_task("notoken", {"id": "empty", "commandLine": f"{sys.executable} {probe}",
                                   "authenticationTokenSettings": {"access": []}})
    outs = {t: probe_of(client, "notoken", t) for t in ("jm", "plain", "asked", "empty")}
    assert {t: o["has_token"] for t, o in outs.items()} == {
        "jm": False, "plain": False, "asked": True, "empty": False}
    assert outs["asked"]["add_own_task"] == "ok"  # a plain task may ask, as Batch allows
    assert outs["asked"]["read_other_job"] == "403 AuthorizationFailure"
    for out in outs.values():
        assert key not in json.dumps(out["env"]) and "AZURE_BATCH_ACCESS_KEY" not in out["env"]


def test_an_unknown_access_scope_is_refused(bed) -> None:
    client, _, _ = bed
    client.create_job({"id": "scopes", "poolInfo": {"poolId": "nopool"}})
    with pytest.raises(BatchError) as err:
        client.create_task("scopes", {"id": "bad", "commandLine": "/bin/true",
                                       "authenticationTokenSettings": {"access": ["pool"]}})
    assert err.value.status == 400 and "access" in err.value.message


def test_a_forged_or_expired_token_is_refused(bed) -> None:
    client, _, key = bed
    now = datetime.now(UTC)
    forged = issue_job_token(generate_account_key(), client.account, "own", ["job"],
                             now + timedelta(hours=1), job_seq=1)
    expired = issue_job_token(key, client.account, "own", ["job"], now - timedelta(seconds=1),
                              job_seq=1)
    for token, why in ((forged, "signature"), (expired, "expired"), ("garbage", "not an")):
        with BatchClient(client.endpoint, client.account, token=token) as c, \
                pytest.raises(BatchError) as err:
            c.get_job("own")
        assert (err.value.status, err.value.code) == (403, "AuthenticationFailed")
        assert why in err.value.message


def test_a_token_does_not_outlive_its_job(bed) -> None:
    """A token minted for job ``jt`` is refused once ``jt`` is deleted, and stays refused when
    a new job is created under the same ID (it would otherwise act on that new job)."""
    client, _, _ = bed
    client.create_job({"id": "jt", "poolInfo": {"poolId": "p"}})
    client.create_task("jt", {"id": "holder",
                              "commandLine": f"/bin/sh -c 'printenv {TOKEN_ENV}'",
                              "authenticationTokenSettings": {"access": ["job"]}})
    wait_until(lambda: client.get_task("jt", "holder").state == "completed", timeout_s=180,
               what="task holder")
    token = client.download_task_file("jt", "holder", "stdout.txt").decode().strip()
    assert token.startswith("hbt2."), token
    with BatchClient(client.endpoint, client.account, token=token) as holder:
        assert holder.get_job("jt").id == "jt"  # valid while its job lives
        client.delete_job("jt")
        wait_until(lambda: "jt" not in {j.id for j in client.list_jobs()}, timeout_s=120,
                   what="jt deleted")
        with pytest.raises(BatchError) as err:
            holder.get_job("jt")
        assert (err.value.status, err.value.code) == (403, "AuthenticationFailed")
        client.create_job({"id": "jt", "poolInfo": {"poolId": "nopool"}})
        for attempt in (lambda: holder.get_job("jt"),
                        lambda: holder.create_task("jt", {"id": "planted",
                                                          "commandLine": "/bin/true"}),
                        lambda: holder.terminate_job("jt")):
            with pytest.raises(BatchError) as err:
                attempt()
            assert (err.value.status, err.value.code) == (403, "AuthenticationFailed")
            assert "jt" in err.value.message
    # the new job is untouched
    assert client.list_tasks("jt") == [] and client.get_job("jt").state == "active"


# ---------------------------------------------------------------- the token format


def test_token_claims_round_trip_and_tampering() -> None:
    key = generate_account_key()
    later = datetime.now(UTC) + timedelta(minutes=5)
    token = issue_job_token(key, "acct", "Job-1", ["job"], later, job_seq=7)
    claims = verify_job_token(token, key, "ACCT")
    assert claims.allows_job("job-1") and not claims.allows_job("job-2")
    assert claims.expires_at == later.replace(microsecond=0)
    assert claims.job_seq == 7
    check_job_incarnation(claims, 7)
    for gone in (None, 8):  # the job deleted; deleted and re-created under its ID
        with pytest.raises(AuthenticationError, match="Job-1"):
            check_job_incarnation(claims, gone)
    prefix, body, mac = token.split(".")
    assert prefix == "hbt2"
    other = issue_job_token(key, "acct", "Job-2", ["job"], later, job_seq=7).split(".")[1]
    reborn = issue_job_token(key, "acct", "Job-1", ["job"], later, job_seq=8).split(".")[1]
    for bad in (f"{prefix}.{other}.{mac}", f"{prefix}.{reborn}.{mac}",
                f"{prefix}.{body}.{mac[:-2]}AA"):
        with pytest.raises(AuthenticationError):
            verify_job_token(bad, key, "acct")
    # an hbt1 token (job ID only, no incarnation), even correctly signed, is refused
    old_body = "hbt1." + base64.urlsafe_b64encode(json.dumps(
        {"acct": "acct", "job": "Job-1", "access": ["job"], "exp": int(later.timestamp()),
         "jti": "00"}).encode()).rstrip(b"=").decode()
    old_mac = hmac.new(hmac.new(base64.b64decode(key), b"hpcbatch job token key v1",
                                hashlib.sha256).digest(), old_body.encode(), hashlib.sha256)
    old = f"{old_body}.{base64.urlsafe_b64encode(old_mac.digest()).rstrip(b'=').decode()}"
    with pytest.raises(AuthenticationError, match="hbt1"):
        verify_job_token(old, key, "acct")
    with pytest.raises(AuthenticationError, match="account"):
        verify_job_token(token, key, "other")
    with pytest.raises(ValueError, match="scope"):
        issue_job_token(key, "acct", "j", ["pool"], later, job_seq=1)
    assert TOKEN_ENV == "AZ_BATCH_AUTHENTICATION_TOKEN"


def test_a_job_manager_reaches_an_https_service_with_its_token(tmp_path: Path) -> None:
    """With --tls the task gets the service's CA (HPCBATCH_CA_PEM) beside its token."""
    with service_on_testbed(tmp_path, 1, "127.0.47.5", tls=True) as (client, _bed, _thread):
        assert client.endpoint.startswith("https://")
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=180)
        probe = tmp_path / "probe.py"
        probe.write_text(PROBE)
        client.create_job({"id": "victim", "poolInfo": {"poolId": "nopool"}})
        client.create_job({"id": "tls-own", "poolInfo": {"poolId": "p"}, "jobManagerTask": {
            "id": "jm", "commandLine": f"{sys.executable} {probe}",
            "killJobOnCompletion": False, "authenticationTokenSettings": {"access": ["job"]}}})
        out = probe_of(client, "tls-own", "jm")
        assert out["env"]["AZURE_BATCH_ENDPOINT"].startswith("https://")
        assert "BEGIN CERTIFICATE" in out["env"]["HPCBATCH_CA_PEM"]
        assert out["add_own_task"] == "ok" and out["list_pools"] == "403 AuthorizationFailure"
