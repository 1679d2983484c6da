"""containerSettings on the testbed: a task runs through the container runtime on its node's
task PATH, fails clearly when there is none, and is refused on a pool without containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcbatch.client.sdk import BatchError
from tests.helpers import service_on_testbed

IMAGE = "hpcbatch-test-image"

# The lowest seam: a runtime that records its argv, then runs what follows the image.
FAKE_RUNTIME = f"""#!/bin/sh
printf '%s\\n' "$@" > "$AZ_BATCH_TASK_DIR/runtime-argv.txt"
while [ "$#" -gt 0 ] && [ "$1" != "{IMAGE}" ]; do shift; done
shift
exec "$@"
"""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):
    """Three testbed hosts: a pool with containerConfiguration, one without, one spare."""
    with service_on_testbed(tmp_path_factory.mktemp("svc"), 3, "127.0.5.1") as env:
        client = env[0]
        client.create_pool({"id": "boxes", "vmSize": "testbed", "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {"containerConfiguration": {
                                "type": "dockerCompatible", "containerImageNames": [IMAGE]}}})
        client.create_pool({"id": "plain", "vmSize": "testbed", "targetDedicatedNodes": 1})
        for pool in ("boxes", "plain"):
            nodes = client.wait_for_pool(pool, timeout_s=120)
            assert [n.state for n in nodes] == ["idle"], [(n.id, n.state, n.errors) for n in nodes]
        yield env


def test_task_without_runtime_on_its_path_fails_naming_node_and_runtimes(svc, tmp_path: Path):
    client, _, _ = svc
    empty = tmp_path / "no-runtime"
    empty.mkdir()
    client.create_job({"id": "noruntime", "poolInfo": {"poolId": "boxes"}})
    client.create_task("noruntime", {
        "id": "t", "commandLine": f"/bin/sh -c 'touch {tmp_path}/ran-on-host'",
        "environmentSettings": [{"name": "PATH", "value": str(empty)}],
        "containerSettings": {"imageName": IMAGE}})
    client.wait_for_tasks("noruntime", timeout_s=120)
    task = client.get_task("noruntime", "t")
    info = task.execution_info
    assert info.result == "failure" and info.exit_code is None
    assert info.failure_info.category == "usererror"
    assert info.failure_info.code == "ContainerRuntimeNotFound"
    msg = info.failure_info.message
    assert task.node_info.node_id in msg and "docker, podman" in msg and str(empty) in msg
    assert not (tmp_path / "ran-on-host").exists()  # never run on the host instead


def test_task_runs_through_the_runtime_with_mounts_workdir_and_variables(svc, tmp_path: Path):
    client, _, _ = svc
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "podman").write_text(FAKE_RUNTIME)
    (bindir / "podman").chmod(0o755)
    tmp_path.chmod(0o755)
    client.create_job({"id": "boxed", "poolInfo": {"poolId": "boxes"}})
    client.create_task("boxed", {
        "id": "t", "commandLine": "/bin/sh -c 'echo \"$GREETING\" from $AZ_BATCH_TASK_ID'",
        "environmentSettings": [{"name": "PATH", "value": f"{bindir}:/usr/bin:/bin"},
                                {"name": "GREETING", "value": "hello; rm -rf /"}],
        "containerSettings": {"imageName": IMAGE, "containerRunOptions": "--label 'a b'"}})
    counts = client.wait_for_tasks("boxed", timeout_s=120)
    task = client.get_task("boxed", "t")
    assert counts["succeeded"] == 1, task.execution_info
    assert client.download_task_file("boxed", "t", "stdout.txt") == b"hello; rm -rf / from t\n"
    argv = client.download_task_file("boxed", "t", "runtime-argv.txt").decode().splitlines()
    at = argv.index("-v")
    node_root = argv[at + 1].split(":")[0]
    assert argv[:at] == ["run", "--rm", "--network", "host", "--init"]
    assert argv[at + 1] == f"{node_root}:{node_root}"
    assert argv[at + 2] == "-w" and argv[at + 3].startswith(node_root + "/")
    assert argv[at + 3].endswith("/workitems/boxed/job-1/t/wd")
    assert "GREETING" in argv and "AZ_BATCH_TASK_ID" in argv and "hello; rm -rf /" not in argv
    assert argv[-6:] == ["--label", "a b", IMAGE, "/bin/sh", "-c",
                         'echo "$GREETING" from $AZ_BATCH_TASK_ID']


def test_container_task_on_a_pool_without_containers_is_refused(svc):
    client, _, _ = svc
    client.create_job({"id": "nocontainers", "poolInfo": {"poolId": "plain"}})
    with pytest.raises(BatchError) as info:
        client.create_task("nocontainers", {"id": "t", "commandLine": "true",
                                            "containerSettings": {"imageName": IMAGE}})
    assert (info.value.status, info.value.code) == (400, "InvalidPropertyValue")
    assert "containerConfiguration" in info.value.message and "plain" in info.value.message


def test_container_task_added_before_its_pool_exists_fails_if_the_pool_has_no_containers(
        svc, tmp_path: Path):
    client, _, _ = svc
    client.create_job({"id": "early", "poolInfo": {"poolId": "later"}})
    client.create_task("early", {  # the pool is not known yet: accepted
        "id": "t", "commandLine": f"/bin/sh -c 'touch {tmp_path}/ran-on-host'",
        "containerSettings": {"imageName": IMAGE}})
    client.create_pool({"id": "later", "vmSize": "testbed", "targetDedicatedNodes": 1})
    client.wait_for_tasks("early", timeout_s=120)
    info = client.get_task("early", "t").execution_info
    assert info.result == "failure" and info.exit_code is None
    assert (info.failure_info.category, info.failure_info.code) == (
        "usererror", "ContainerConfigurationMissing")
    assert "containerConfiguration" in info.failure_info.message
    assert not (tmp_path / "ran-on-host").exists()
