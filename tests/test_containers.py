"""containerSettings on the testbed: a task runs through the container runtime on its node's
task PATH, fails clearly when there is none, and is refused on a pool without containers; a
pool's containerImageNames are pulled on each node before its start task, and a node whose
image cannot be pulled (or that has no runtime) becomes unusable saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcbatch.client.sdk import BatchError
from hpcbatch.testing import testbed as tb
from tests.helpers import reachable_dir, running_service, wait_until

IMAGE = "hpcbatch-test-image"

# The lowest seam: a runtime that records its argv, then runs what follows the image.
FAKE_RUNTIME = f"""#!/bin/sh
printf '%s\\n' "$@" > "$AZ_BATCH_TASK_DIR/runtime-argv.txt"
while [ "$#" -gt 0 ] && [ "$1" != "{IMAGE}" ]; do shift; done
shift
exec "$@"
"""


# The runtime the hosts' site PATH names (inventory ``env``): ``pull`` records the image
# beside itself, and fails (exit 1, a registry's words on stderr) for an image named missing-*.
PULLING_RUNTIME = """#!/bin/sh
if [ "$1" = pull ]; then
  shift; [ "$1" = -- ] && shift
  case "$1" in
    missing-*) echo "Error response from daemon: pull access denied for $1" >&2; exit 1 ;;
  esac
  echo "$1" >> "$(dirname "$0")/pulled.txt"
  exit 0
fi
exit 64
"""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):
    """Five testbed hosts: a pool with containerConfiguration, one without, one spare (their
    site PATH has a runtime that pulls), and two labelled ``badimage`` (same runtime) and
    ``noruntime`` (no runtime on its PATH) for pools whose nodes cannot pull."""
    tmp = tmp_path_factory.mktemp("svc")
    with reachable_dir() as shared, tb.up(5, tmp / "testbed", base_address="127.0.5.1") as bed, \
            running_service(tmp / "state") as (client, thread):
        bindir = shared / "runtime"
        bindir.mkdir()
        (bindir / "docker").write_text(PULLING_RUNTIME)
        (bindir / "docker").chmod(0o755)
        empty = shared / "empty"
        empty.mkdir()
        paths = [f"{bindir}:/usr/bin:/bin"] * 4 + [f"{empty}:/usr/bin:/bin"]
        labels = [["testbed"]] * 3 + [["badimage"], ["noruntime"]]
        client.add_hosts([{**h.model_dump(mode="json"), "env": {"PATH": path}, "labels": lab}
                          for h, path, lab in zip(bed.hosts, paths, labels, strict=True)])
        client.create_pool({"id": "boxes", "vmSize": "testbed", "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {"containerConfiguration": {
                                "type": "dockerCompatible", "containerImageNames": [IMAGE]}}})
        client.create_pool({"id": "plain", "vmSize": "testbed", "targetDedicatedNodes": 1})
        for pool in ("boxes", "plain"):
            nodes = client.wait_for_pool(pool, timeout_s=120)
            assert [n.state for n in nodes] == ["idle"], [(n.id, n.state, n.errors) for n in nodes]
        pulled = (bindir / "pulled.txt").read_text().splitlines()  # once boxes is idle
        yield client, bed, thread, pulled


def test_a_pools_images_are_pulled_on_its_node_before_it_is_idle(svc):
    *_, pulled = svc
    assert pulled == [IMAGE]  # one node, one pull; none for the pool without containers


@pytest.mark.parametrize(("pool", "vm_size", "code", "words"), [
    ("badboxes", "badimage", "ContainerInvalidImage", "pull access denied for missing-image"),
    ("noboxes", "noruntime", "ContainerRuntimeNotFound", "looked for docker, podman"),
])
def test_a_node_that_cannot_pull_its_pools_image_is_unusable_and_runs_no_start_task(
        svc, tmp_path: Path, pool: str, vm_size: str, code: str, words: str):
    client = svc[0]
    tmp_path.chmod(0o755)
    marker = tmp_path / "start-task-ran"
    client.create_pool({
        "id": pool, "vmSize": vm_size, "targetDedicatedNodes": 1,
        "virtualMachineConfiguration": {"containerConfiguration": {
            "type": "dockerCompatible", "containerImageNames": [IMAGE, "missing-image"]}},
        "startTask": {"commandLine": f"/bin/sh -c 'touch {marker}'"}})
    node = wait_until(lambda: next((n for n in client.list_nodes(pool)
                                    if n.state in ("unusable", "idle")), None),
                      timeout_s=120, what=f"a node of {pool} to start or fail")
    assert node.state == "unusable", node
    [error] = node.errors
    assert error.code == code
    details = {d["name"]: d["value"] for d in error.error_details}
    assert words in details["Message"] and "Host" in details
    if code == "ContainerInvalidImage":
        assert error.message.startswith("One or more container images specified are invalid")
        assert details["ContainerImage"] == "missing-image"  # the first image was pulled
    else:
        assert "ContainerImage" not in details
    assert not marker.exists()
    client.delete_pool(pool)


def test_task_without_runtime_on_its_path_fails_naming_node_and_runtimes(svc, tmp_path: Path):
    client = svc[0]
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
    client = svc[0]
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
    client = svc[0]
    client.create_job({"id": "nocontainers", "poolInfo": {"poolId": "plain"}})
    with pytest.raises(BatchError) as info:
        client.create_task("nocontainers", {"id": "t", "commandLine": "true",
                                            "containerSettings": {"imageName": IMAGE}})
    assert (info.value.status, info.value.code) == (400, "InvalidPropertyValue")
    assert "containerConfiguration" in info.value.message and "plain" in info.value.message


def test_container_task_added_before_its_pool_exists_fails_if_the_pool_has_no_containers(
        svc, tmp_path: Path):
    client = svc[0]
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
