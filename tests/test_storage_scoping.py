"""Tasks get storage scoped to their job; blob containers work on any endpoint (Azurite).

docs/security.md, "Scoped credentials" / "Storage"; docs/azure-compat.md, resource
and output files. Everything here runs against a real Azurite with real SAS
tokens signed by azure-storage-blob: a refused request is refused by the blob
service, not by a check of ours.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage import blob

from hpcbatch import LocalBatch
from hpcbatch.execution import transfer
from hpcbatch.storage.conventions import (
    TaskOutputKind,
    TaskOutputStorage,
    job_output_container_name,
)
from hpcbatch.storage.fs import (
    ENV_STORAGE_CONTAINERS,
    StorageAccessError,
    open_storage,
    open_storage_from_environment,
)
from hpcbatch.storage.scoped import ENV_JOB_CONTAINER_URL, JobStorageCredentials
from tests.azurite import ACCOUNT_KEY, ACCOUNT_NAME

# A task that tries, with the storage variables it was given, to reach outside its job.
PROBE = r'''
import json, os, stat
from pathlib import Path
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerClient
from hpcbatch.conventions import TaskOutputKind, TaskOutputStorage

def attempt(fn):
    try:
        fn()
        return "allowed"
    except HttpResponseError as exc:
        return exc.status_code

env = os.environ
report = {"secrets": sorted(k for k, v in env.items() if "AccountKey=" in v or v == KEY)}
out = TaskOutputStorage.from_environment()
out.save_text(TaskOutputKind.TaskOutput, "hello", "hello.txt")
with out.save_tracked(TaskOutputKind.TaskLog, "progress.log", interval_s=0.05):
    Path("progress.log").write_text("step 1\n")
report["listed"] = [o.path for o in out.list_outputs(TaskOutputKind.TaskOutput)]
endpoint, sas = env["HPCBATCH_JOB_CONTAINER_URL"].split("?", 1)
endpoint = endpoint.rsplit("/", 1)[0]
other = ContainerClient.from_container_url(f"{endpoint}/job-other?{sas}")
report["read_other"] = attempt(lambda: other.download_blob("secret.txt").readall())
report["list_other"] = attempt(lambda: list(other.list_blobs()))
report["write_other"] = attempt(lambda: other.upload_blob("evil.txt", b"x"))
account = BlobServiceClient(endpoint, credential=sas)
report["list_account"] = attempt(lambda: list(account.list_containers()))
report["create_container"] = attempt(lambda: account.create_container("job-mine-too"))
report["resource_mode"] = oct(stat.S_IMODE(os.stat("data/a.txt").st_mode))
Path("out").mkdir()
Path("out/r.txt").write_text("result")
print(json.dumps(report))
'''.replace("KEY", repr(ACCOUNT_KEY))


def _sas(container: str, **permissions: bool) -> str:
    now = datetime.now(UTC)
    return blob.generate_container_sas(
        ACCOUNT_NAME, container, account_key=ACCOUNT_KEY,
        permission=blob.ContainerSasPermissions(**permissions),
        start=now - timedelta(minutes=5), expiry=now + timedelta(hours=1))


def _blob_url(endpoint: str, container: str, name: str) -> str:
    sas = blob.generate_blob_sas(ACCOUNT_NAME, container, name, account_key=ACCOUNT_KEY,
                                 permission=blob.BlobSasPermissions(read=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    return f"{endpoint}/{container}/{name}?{sas}"


@pytest.fixture(scope="module")
def azurite_account() -> Iterator[tuple[str, object]]:
    """A running Azurite: (connection string, BlobServiceClient with the account key)."""
    from tests.azurite import azurite

    with azurite() as connection_string:
        yield connection_string, blob.BlobServiceClient.from_connection_string(connection_string)


def test_a_task_reaches_its_job_container_only_and_sas_containers_work(azurite_account, tmp_path):
    """End to end: scoped task storage, SAS resource files (both kinds), SAS output container,
    and resource files that run directly (0770) in a start task."""
    connection_string, svc = azurite_account
    endpoint = svc.url.rstrip("/")  # path-style: http://127.0.0.1:port/devstoreaccount1
    inputs = svc.create_container("inputs")
    inputs.upload_blob("start.sh", b"#!/bin/sh\necho started > started.txt\n")
    inputs.upload_blob("data/a.txt", b"A")
    inputs.upload_blob("probe.py", PROBE.encode())
    svc.create_container("results")
    svc.create_container("job-other").upload_blob("secret.txt", b"other job's data")
    with LocalBatch(nodes=1, state_dir=tmp_path / "state", storage_url="az://",
                    storage_options={"connection_string": connection_string}) as client:
        client.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 1, "startTask": {
            "commandLine": "./start.sh", "waitForSuccess": True, "resourceFiles": [
                {"httpUrl": _blob_url(endpoint, "inputs", "start.sh"), "filePath": "start.sh"}]}})
        nodes = client.wait_for_pool("p", timeout_s=120)
        assert [n.state for n in nodes] == ["idle"], [(n.start_task_info, n.errors) for n in nodes]
        client.create_job({"id": "scoped", "poolInfo": {"poolId": "p"}})
        client.create_task("scoped", {
            "id": "t1", "commandLine": f"{sys.executable} probe.py",
            "resourceFiles": [
                {"storageContainerUrl": f"{endpoint}/inputs?{_sas('inputs', read=True, list=True)}",
                 "blobPrefix": "data/"},
                {"httpUrl": _blob_url(endpoint, "inputs", "probe.py"), "filePath": "probe.py"}],
            "outputFiles": [{"filePattern": "out/*.txt", "destination": {"container": {
                "containerUrl": f"{endpoint}/results?{_sas('results', write=True)}",
                "path": "scoped"}}, "uploadOptions": {"uploadCondition": "taskCompletion"}}]})
        assert client.wait_for_tasks("scoped", timeout_s=180)["succeeded"] == 1, \
            client.download_task_file("scoped", "t1", "stderr.txt")
        report = json.loads(client.download_task_file("scoped", "t1", "stdout.txt").decode())
    assert report["secrets"] == []  # no account key anywhere in the task's environment
    assert report["listed"] == ["hello.txt"]
    # refused by the blob service itself (403), whatever the task does with its SAS
    for attempt in ("read_other", "list_other", "write_other", "list_account", "create_container"):
        assert report[attempt] == 403, (attempt, report)
    assert report["resource_mode"] == "0o770"
    assert svc.get_container_client("results").download_blob("scoped/r.txt").readall() == b"result"
    names = {b.name for b in svc.get_container_client("job-scoped").list_blobs()}
    assert {"t1/$TaskOutput/hello.txt", "t1/$TaskLog/progress.log", "t1/$TaskLog/stdout.txt"} <= names
    assert "evil.txt" not in {b.name for b in svc.get_container_client("job-other").list_blobs()}
    assert not svc.get_container_client("job-mine-too").exists()


def test_scoped_credentials_sign_a_container_sas_that_conventions_use(azurite_account):
    connection_string, svc = azurite_account
    svc.get_container_client(job_output_container_name("JobA")).create_container()
    creds = JobStorageCredentials("az://", {"connection_string": connection_string})
    assert creds.kind == "sas" and creds.limitation is None
    now = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    env = creds.environment("JobA", valid_for=timedelta(hours=2), now=now)
    assert env[ENV_STORAGE_CONTAINERS] == "job-joba"
    assert ACCOUNT_KEY not in json.dumps(env) and "AccountKey" not in json.dumps(env)
    sas = blob.ContainerClient.from_container_url(env[ENV_JOB_CONTAINER_URL])
    assert sas.container_name == "job-joba"
    # valid from 15 min before, until the limit + 1 h, rounded up to the hour
    assert "st=2026-01-02T02%3A49%3A00Z&se=2026-01-02T07%3A00%3A00Z" in env[ENV_JOB_CONTAINER_URL]
    # the same SAS for tasks launched within the hour (one signature per job and hour)
    assert creds.environment("JobA", valid_for=timedelta(hours=2), now=now + timedelta(minutes=5)) == env
    live = creds.environment("JobA")
    task = TaskOutputStorage.from_environment(
        {**live, "AZ_BATCH_JOB_ID": "JobA", "AZ_BATCH_TASK_ID": "t1"})
    task.save_text(TaskOutputKind.TaskOutput, "x", "x.txt")
    assert [o.path for o in task.list_outputs(TaskOutputKind.TaskOutput)] == ["x.txt"]
    storage = open_storage_from_environment(live)
    with pytest.raises(StorageAccessError, match="job-joba"):
        storage.list("job-jobb/")
    assert [o.key for o in storage.list("")] == ["job-joba/t1/$TaskOutput/x.txt"]
    # the task's SAS itself is refused outside the container by the service
    other = blob.ContainerClient.from_container_url(
        live[ENV_JOB_CONTAINER_URL].replace("/job-joba?", "/job-jobb?"))
    with pytest.raises(HttpResponseError) as refused:
        other.upload_blob("x", b"x")
    assert refused.value.status_code == 403


def test_storage_without_a_key_or_inside_one_container_gives_tasks_no_credential(tmp_path):
    key = {"account_name": "acct", "account_key": "a2V5"}
    sas_only = JobStorageCredentials("az://", {"account_name": "acct", "sas_token": "sv=1&sig=x"})
    assert sas_only.kind == "prefix" and "without an account key" in (sas_only.limitation or "")
    env = sas_only.environment("j")
    assert "sig=x" not in json.dumps(env) and "AZURE_STORAGE_SAS_TOKEN" not in env
    shared = JobStorageCredentials("az://everything/prefix", key)
    assert "inside one blob container" in (shared.limitation or "")
    assert "a2V5" not in json.dumps(shared.environment("j"))
    s3 = JobStorageCredentials("s3://bucket", {"key": "AKIA", "secret": "s3cr3t",
                                               "endpoint_url": "http://127.0.0.1:9000"})
    env = s3.environment("j")
    assert "STS" in (s3.limitation or "") and "s3cr3t" not in json.dumps(env)
    assert "AKIA" not in json.dumps(env) and "127.0.0.1:9000" in env["HPCBATCH_STORAGE_OPTIONS"]
    local = JobStorageCredentials(tmp_path / "store")
    assert "user identity" in (local.limitation or "")
    task = open_storage_from_environment(local.environment("j"))
    task.put_bytes(b"x", "job-j/t/$TaskOutput/x")
    with pytest.raises(StorageAccessError):
        task.get_bytes("job-other/t/$TaskOutput/x")
    with pytest.raises(StorageAccessError):
        task.put_bytes(b"x", "job-other/evil")


# --------------------------------------------------------------------------- container URLs


@pytest.mark.parametrize(("url", "endpoint", "container"), [
    ("https://acct.blob.core.windows.net/c1?sv=1&sig=a", "https://acct.blob.core.windows.net", "c1"),
    ("https://acct.blob.core.chinacloudapi.cn/c2?sig=a", "https://acct.blob.core.chinacloudapi.cn", "c2"),
    ("https://acct.privatelink.blob.core.windows.net/c3?sig=a",
     "https://acct.privatelink.blob.core.windows.net", "c3"),
    ("https://data.example.com/c4?sig=a", "https://data.example.com", "c4"),
    ("http://127.0.0.1:10000/devstoreaccount1/c5?sig=a", "http://127.0.0.1:10000/devstoreaccount1", "c5"),
    ("https://acct.blob.core.windows.net/public/", "https://acct.blob.core.windows.net", "public"),
])
def test_container_urls_on_any_endpoint_name_their_account_and_container(url, endpoint, container):
    storage, name = transfer.container_location(url)
    assert name == container and storage.containers == {container}
    assert storage.url_for(f"{container}/a b.txt") == f"{endpoint}/{container}/a%20b.txt"


def test_a_container_url_without_a_container_is_refused():
    with pytest.raises(transfer.TransferError, match="names no container"):
        transfer.container_location("https://acct.blob.core.windows.net/?sig=a")


@pytest.fixture
def blob_localhost(monkeypatch: pytest.MonkeyPatch) -> str:
    """Resolve ``devstoreaccount1.blob.localhost`` to loopback, as Azurite's docs assume.

    The lowest seam: name resolution of this process (aiohttp resolves through
    ``socket.getaddrinfo``); requests then reach the real Azurite, which reads
    the account from the Host header (production-style URLs).
    """
    host = f"{ACCOUNT_NAME}.blob.localhost"
    real = socket.getaddrinfo

    def getaddrinfo(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real("127.0.0.1" if name == host else name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return host


@pytest.mark.parametrize("style", ["path", "host"])
def test_resource_and_output_files_through_sas_urls_of_both_styles(azurite_account, tmp_path,
                                                                     blob_localhost, style):
    _, svc = azurite_account
    port = svc.url.split(":")[2].split("/")[0]
    base = (f"http://127.0.0.1:{port}/{ACCOUNT_NAME}" if style == "path"
            else f"http://{blob_localhost}:{port}")
    src, dst = f"in-{style}", f"out-{style}"
    svc.create_container(src).upload_blob("dir/run.sh", b"#!/bin/sh\necho ran\n")
    svc.get_container_client(src).upload_blob("single.txt", b"one")
    svc.create_container(dst)
    wd = tmp_path / "wd"
    transfer.download_resource_files([
        {"storageContainerUrl": f"{base}/{src}?{_sas(src, read=True, list=True)}"},
        {"httpUrl": _blob_url(base, src, "single.txt"), "filePath": "in/single.txt",
         "fileMode": "0640"},
    ], wd, None)
    assert (wd / "dir/run.sh").read_bytes() == b"#!/bin/sh\necho ran\n"
    assert stat.S_IMODE((wd / "dir/run.sh").stat().st_mode) == 0o770  # Batch's Linux default
    assert stat.S_IMODE((wd / "in/single.txt").stat().st_mode) == 0o640  # fileMode wins
    uploaded = transfer.upload_output_files([{
        "filePattern": "**/*", "destination": {"container": {
            "containerUrl": f"{base}/{dst}?{_sas(dst, write=True)}", "path": "from-task"}},
        "uploadOptions": {"uploadCondition": "taskCompletion"}}], wd, succeeded=True,
        job_id="j", task_id="t", storage=None)
    names = {b.name for b in svc.get_container_client(dst).list_blobs()}
    assert uploaded == 3
    assert names == {"from-task/dir/run.sh", "from-task/single.txt", "from-task/in/single.txt"}
    # a read-only SAS cannot be used to upload: the blob service refuses, the task learns why
    with pytest.raises(transfer.TransferError, match="could not be uploaded") as refused:
        transfer.upload_output_files([{"filePattern": "in/single.txt", "destination": {
            "container": {"containerUrl": f"{base}/{src}?{_sas(src, read=True, list=True)}"}},
            "uploadOptions": {"uploadCondition": "taskCompletion"}}], wd, succeeded=True,
            job_id="j", task_id="t", storage=None)
    assert refused.value.code == "FileUploadError"


def test_a_resource_file_without_file_mode_is_0770(tmp_path):
    source = tmp_path / "store" / "scripts"
    source.mkdir(parents=True)
    (source / "go.sh").write_text("#!/bin/sh\n")
    os.chmod(source / "go.sh", 0o600)
    transfer.download_resource_files([{"storageContainerUrl": source.as_uri()}], tmp_path / "wd", None)
    assert stat.S_IMODE((tmp_path / "wd" / "go.sh").stat().st_mode) == 0o770


def test_a_local_scoped_storage_still_lists_and_writes_its_own_container(tmp_path):
    open_storage(tmp_path / "s").put_bytes(b"o", "job-other/x")
    scoped = open_storage(tmp_path / "s", containers=["job-mine"])
    scoped.put_bytes(b"m", "job-mine/y")
    assert [o.key for o in scoped.list("")] == ["job-mine/y"]
    assert Path(tmp_path / "s" / "job-mine" / "y").read_bytes() == b"m"
    with pytest.raises(StorageAccessError, match="job-mine"):
        scoped.delete("job-other")
