"""Task inputs and outputs: File Conventions, output files, resource files, application packages."""

from __future__ import annotations

import io
import shutil
import sys
import time
import zipfile

import pytest

from hpcbatch import LocalBatch
from hpcbatch.client.sdk import BatchError
from hpcbatch.storage.conventions import (
    TaskOutputKind,
    TaskOutputStorage,
    job_output_container_name,
)
from hpcbatch.storage.fs import open_storage

SAVE_EVERY_KIND = (
    "from pathlib import Path\n"
    "from hpcbatch.conventions import TaskOutputStorage, TaskOutputKind as K\n"
    "out = TaskOutputStorage.from_environment()\n"
    "for kind in (K.TaskOutput, K.TaskPreview, K.TaskLog, K.TaskIntermediate, K.custom('Extra')):\n"
    "    Path(f'{kind}.txt').write_text(f'{kind} data')\n"
    "    out.save(kind, f'{kind}.txt')\n"
)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    """A local service with 2 nodes whose storage lives outside its state dir."""
    root = tmp_path_factory.mktemp("io")
    storage_url = f"file://{root / 'storage'}"
    lb = LocalBatch(nodes=2, state_dir=root / "state", storage_url=storage_url)
    client = lb.__enter__()
    client.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 2,
                        "taskSlotsPerNode": 2})
    client.wait_for_pool("p", timeout_s=120)
    yield client, lb, storage_url, root
    lb.__exit__(None, None, None)


def test_outputs_of_every_kind_outlive_job_pool_and_state_dir(tmp_path):
    storage_url = f"file://{tmp_path / 'storage'}"
    state = tmp_path / "state"
    with LocalBatch(nodes=1, state_dir=state, storage_url=storage_url) as client:
        client.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "Job_Outputs", "poolInfo": {"poolId": "p"}})
        client.create_task("Job_Outputs", {"id": "t7", "commandLine":
                                           f"{sys.executable} -c \"{SAVE_EVERY_KIND}\""})
        assert client.wait_for_tasks("Job_Outputs", timeout_s=120)["succeeded"] == 1
        client.delete_job("Job_Outputs")
        client.delete_pool("p")
    shutil.rmtree(state)
    outputs = TaskOutputStorage(open_storage(storage_url), "Job_Outputs", "t7")
    for kind in ("TaskOutput", "TaskPreview", "TaskIntermediate", "Extra"):
        listed = outputs.list_outputs(kind if kind != "Extra" else TaskOutputKind.custom("Extra"))
        assert [o.path for o in listed] == [f"{kind}.txt"]
        assert outputs.get_bytes(kind, f"{kind}.txt") == f"{kind} data".encode()
    logs = {o.path for o in outputs.list_outputs(TaskOutputKind.TaskLog)}
    assert logs == {"TaskLog.txt", "stdout.txt", "stderr.txt"}
    container = job_output_container_name("Job_Outputs")
    assert container.startswith("job-job-outputs-") and len(container) <= 63


def test_output_files_glob_and_upload_conditions(batch):
    client, _, storage_url, root = batch
    make = ("/bin/sh -c 'mkdir -p a/b && echo 1 > a/x.csv && echo 2 > a/b/y.csv "
            "&& echo 3 > z.csv && echo no > a/n.txt; exit {code}'")
    dest = {"container": {"containerUrl": f"file://{root / 'results'}", "path": "{task}"}}

    def task(tid: str, code: int) -> dict:
        return {"id": tid, "commandLine": make.format(code=code), "outputFiles": [
            {"filePattern": "**/*.csv", "destination": {"container": {**dest["container"],
                                                                      "path": f"{tid}/csv"}},
             "uploadOptions": {"uploadCondition": "taskCompletion"}},
            {"filePattern": "a/n.txt", "destination": {"container": {**dest["container"],
                                                                     "path": f"{tid}/ok.txt"}},
             "uploadOptions": {"uploadCondition": "taskSuccess"}},
            {"filePattern": "../std*.txt", "destination": {"container": {**dest["container"],
                                                                         "path": f"{tid}/fail"}},
             "uploadOptions": {"uploadCondition": "taskFailure"}},
            {"filePattern": "z.csv", "destination": {"container": {"path": f"{tid}/$TaskOutput/z.csv"}},
             "uploadOptions": {"uploadCondition": "taskCompletion"}},
        ]}

    client.create_job({"id": "outfiles", "poolInfo": {"poolId": "p"}})
    client.create_tasks("outfiles", [task("good", 0), task("bad", 4)])
    client.wait_for_tasks("outfiles", timeout_s=120)
    results = root / "results"
    files = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
    assert files == sorted([
        "good/csv/a/x.csv", "good/csv/a/b/y.csv", "good/csv/z.csv", "good/ok.txt",
        "bad/csv/a/x.csv", "bad/csv/a/b/y.csv", "bad/csv/z.csv",
        "bad/fail/stdout.txt", "bad/fail/stderr.txt"])
    assert (results / "good/csv/a/b/y.csv").read_text() == "2\n"
    # No containerUrl: the job's conventions container in the service storage.
    conv = TaskOutputStorage(open_storage(storage_url), "outfiles", "good")
    assert [o.path for o in conv.list_outputs(TaskOutputKind.TaskOutput)] == ["z.csv"]
    assert client.get_task("outfiles", "bad").execution_info.exit_code == 4


def test_output_file_without_destination_path_is_a_task_output_of_its_name(batch):
    """No ``containerUrl`` and no ``path``: each file is ``{taskId}/$TaskOutput/{name}``,
    a single file as a wildcard's, never a blob named ``$TaskOutput`` itself."""
    client, _, storage_url, _ = batch
    spec = {"destination": {"container": {}},
            "uploadOptions": {"uploadCondition": "taskCompletion"}}
    client.create_job({"id": "nopath", "poolInfo": {"poolId": "p"}})
    client.create_task("nopath", {
        "id": "t", "commandLine": "/bin/sh -c 'echo r > res.txt && echo l > log.csv'",
        "outputFiles": [{**spec, "filePattern": "res.txt"}, {**spec, "filePattern": "*.csv"}]})
    assert client.wait_for_tasks("nopath", timeout_s=120)["succeeded"] == 1
    assert client.get_task("nopath", "t").execution_info.failure_info is None
    outputs = TaskOutputStorage(open_storage(storage_url), "nopath", "t")
    assert sorted(o.path for o in outputs.list_outputs(TaskOutputKind.TaskOutput)) == [
        "log.csv", "res.txt"]
    assert outputs.get_bytes(TaskOutputKind.TaskOutput, "res.txt") == b"r\n"


def test_resource_files_missing_file_and_traversal(batch):
    client, _, storage_url, root = batch
    store = open_storage(storage_url)
    store.put_bytes(b"alpha", "inputs/data/a.txt")
    store.put_bytes(b"beta", "inputs/data/sub/b.txt")
    store.put_bytes(b"gamma", "inputs/other.txt")
    (root / "web").mkdir()
    client.create_job({"id": "inputs", "poolInfo": {"poolId": "p"}})
    client.create_task("inputs", {
        "id": "ok", "commandLine": "/bin/sh -c 'cat in/data/a.txt in/data/sub/b.txt c.txt other.txt'",
        "resourceFiles": [
            {"autoStorageContainerName": "inputs", "blobPrefix": "data/", "filePath": "in"},
            {"storageContainerUrl": f"{storage_url}/inputs", "blobPrefix": "other"},
            {"httpUrl": f"file://{root / 'web'}/c.txt", "filePath": "c.txt", "fileMode": "0700"},
        ]})
    (root / "web" / "c.txt").write_text("-c-")
    client.create_task("inputs", {"id": "missing", "commandLine": "/bin/true", "resourceFiles": [
        {"autoStorageContainerName": "inputs", "blobPrefix": "nothing-here/", "filePath": "x"}]})
    client.wait_for_tasks("inputs", timeout_s=120)
    assert client.download_task_file("inputs", "ok", "stdout.txt") == b"alphabeta-c-gamma"
    missing = client.get_task("inputs", "missing").execution_info
    assert missing.result == "failure" and missing.exit_code is None
    assert missing.failure_info.category == "usererror"
    assert missing.failure_info.code == "ResourceFileDownloadFailed"
    assert "nothing-here/" in missing.failure_info.message
    with pytest.raises(BatchError) as info:
        client.create_task("inputs", {"id": "evil", "commandLine": "/bin/true", "resourceFiles": [
            {"httpUrl": "http://127.0.0.1:1/x", "filePath": "../../etc/passwd"}]})
    assert info.value.status == 400 and "resourceFiles[0].filePath" in info.value.message


def test_application_package_extracted_once_per_node(batch, tmp_path):
    client, lb, _, _ = batch
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("bin/hello.sh")
        info.external_attr = 0o755 << 16
        zf.writestr(info, "#!/bin/sh\necho hello from $0\n")
    (tmp_path / "app.zip").write_bytes(buf.getvalue())
    client.create_application_package("Hello-App", "1.0.2", tmp_path / "app.zip")
    client.create_application_package("Hello-App", "2.0", tmp_path / "app.zip")
    client.set_default_application_version("Hello-App", "2.0")
    assert client.get_application("hello-app")["versions"] == ["1.0.2", "2.0"]
    client.create_job({"id": "apps", "poolInfo": {"poolId": "p"}})
    client.create_tasks("apps", [
        {"id": f"t{i}", "commandLine":
         "/bin/sh -c '$AZ_BATCH_APP_PACKAGE_hello_app_1_0_2/bin/hello.sh; "
         "test -d $AZ_BATCH_APP_PACKAGE_hello_app'",
         "applicationPackageReferences": [{"applicationId": "Hello-App", "version": "1.0.2"},
                                          {"applicationId": "hello-app"}]}
        for i in range(10)])
    assert client.wait_for_tasks("apps", timeout_s=120)["succeeded"] == 10
    assert b"hello from" in client.download_task_file("apps", "t3", "stdout.txt")
    for node in client.list_nodes("p"):
        log = lb.state_dir / "nodes" / node.id / "applications" / "installs.log"
        if log.exists():
            lines = log.read_text().splitlines()
            assert sorted(lines) == ["Hello-App 1.0.2", "Hello-App 2.0"]
    with pytest.raises(BatchError) as info:
        client.create_task("apps", {"id": "x", "commandLine": "/bin/true",
                                    "applicationPackageReferences": [{"applicationId": "nope"}]})
    assert info.value.code == "InvalidApplicationPackageReferences"


def test_job_common_environment_settings_reach_every_task(batch):
    client, _, _, _ = batch
    client.create_job({"id": "common", "poolInfo": {"poolId": "p"},
                       "commonEnvironmentSettings": [{"name": "STAGE", "value": "prod"},
                                                     {"name": "LEVEL", "value": "1"}]})
    client.create_tasks("common", [
        {"id": "a", "commandLine": "/bin/sh -c 'echo $STAGE $LEVEL'"},
        {"id": "b", "commandLine": "/bin/sh -c 'echo $STAGE $LEVEL'",
         "environmentSettings": [{"name": "LEVEL", "value": "2"}]}])
    client.wait_for_tasks("common", timeout_s=60)
    assert client.download_task_file("common", "a", "stdout.txt") == b"prod 1\n"
    assert client.download_task_file("common", "b", "stdout.txt") == b"prod 2\n"


def test_service_storage_on_azurite_holds_outputs_where_azure_tools_look(tmp_path):
    from azure.storage.blob import BlobServiceClient

    from tests.azurite import azurite

    with azurite() as connection_string:
        with LocalBatch(nodes=1, state_dir=tmp_path / "state", storage_url="az://",
                        storage_options={"connection_string": connection_string}) as client:
            client.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 1})
            client.wait_for_pool("p", timeout_s=120)
            client.create_job({"id": "AzureJob", "poolInfo": {"poolId": "p"}})
            client.create_task("AzureJob", {
                "id": "t1", "commandLine": f"{sys.executable} -c \"{SAVE_EVERY_KIND}\"",
                "outputFiles": [{"filePattern": "*.txt", "destination": {"container": {
                    "path": "t1/$TaskOutput/all"}}, "uploadOptions": {
                    "uploadCondition": "taskSuccess"}}]})
            assert client.wait_for_tasks("AzureJob", timeout_s=120)["succeeded"] == 1
        blobs = BlobServiceClient.from_connection_string(connection_string)
        container = blobs.get_container_client(job_output_container_name("AzureJob"))
        names = {b.name for b in container.list_blobs()}
        assert "t1/$TaskOutput/TaskOutput.txt" in names
        assert "t1/$TaskLog/stdout.txt" in names and "t1/$TaskPreview/TaskPreview.txt" in names
        assert "t1/$TaskOutput/all/Extra.txt" in names
        data = container.download_blob("t1/$TaskOutput/TaskOutput.txt").readall()
        assert data == b"TaskOutput data"


RETRY_ONCE = (
    "import os, pathlib, sys, time\n"
    "m = pathlib.Path(os.environ['MARKER'])\n"
    "n = 2 if m.exists() else 1\n"
    "m.touch()\n"
    "print(f'attempt {n}', flush=True); print(f'err {n}', file=sys.stderr, flush=True)\n"
    "while n == 2 and not pathlib.Path(os.environ['GATE']).exists(): time.sleep(0.02)\n"
    "sys.exit(0 if n == 2 else 3)\n"
)


def test_task_logs_of_a_retried_task_are_its_last_attempt(batch):
    """Logs are stored as links to the task's files: a retry must not rewrite the stored ones."""
    client, _, storage_url, root = batch
    client.create_job({"id": "retry-logs", "poolInfo": {"poolId": "p"}})
    client.create_task("retry-logs", {
        "id": "r1", "commandLine": f"{sys.executable} -c \"{RETRY_ONCE}\"",
        "environmentSettings": [{"name": "MARKER", "value": str(root / "retry-marker")},
                                {"name": "GATE", "value": str(root / "retry-gate")}],
        "constraints": {"maxTaskRetryCount": 1}})
    outputs = TaskOutputStorage(open_storage(storage_url), "retry-logs", "r1")
    deadline = time.monotonic() + 60
    while True:  # the second attempt runs and has printed; the first one's logs stay stored
        try:
            if client.download_task_file("retry-logs", "r1", "stdout.txt") == b"attempt 2\n":
                break
        except BatchError:
            pass
        assert time.monotonic() < deadline, "the second attempt did not start"
        time.sleep(0.05)
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stdout.txt") == b"attempt 1\n"
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stderr.txt") == b"err 1\n"
    (root / "retry-gate").touch()
    assert client.wait_for_tasks("retry-logs", timeout_s=120)["succeeded"] == 1
    assert client.get_task("retry-logs", "r1").execution_info.retry_count == 1
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stdout.txt") == b"attempt 2\n"
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stderr.txt") == b"err 2\n"
