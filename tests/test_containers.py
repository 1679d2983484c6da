"""containerSettings on the testbed: a task runs through the container runtime on its node's
task PATH, fails clearly when there is none, and is refused on a pool without containers; a
pool's containerImageNames are pulled on each node before its start task, once logged in to its
containerRegistries, and a node whose image cannot be pulled (or that has no runtime, or cannot
log in) becomes unusable saying why; a task's registry is logged in to before it runs. No
password is ever returned, logged or put in an argv."""

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


PASSWORD = "pa55; word $(touch /tmp/pwned)"  # the fake registry's password
POOL_REGISTRY = "registry.example:5000"
TASK_REGISTRY = "tasks.example"

# The runtime the hosts' site PATH names (inventory ``env``). Every call is recorded beside it
# (calls.txt). ``login`` reads the password from stdin, records user, server and whether a
# password came on stdin, and fails (a registry's words, and the password it got, on stderr)
# for a wrong one; ``pull`` records the image (pulled.txt) and fails for an image named
# missing-*; ``run`` runs what follows the image.
PULLING_RUNTIME = f"""#!/bin/sh
here="$(dirname "$0")"
printf '%s\\n' "$*" >> "$here/calls.txt"
case "$1" in
  login)
    pw=""; IFS= read -r pw
    stdin=no; [ -n "$pw" ] && stdin=yes
    echo "login user=$3 server=$6 stdin=$stdin" >> "$here/logins.txt"
    [ "$pw" = '{PASSWORD}' ] && exit 0
    echo "Error response from daemon: unauthorized: incorrect username or password ($pw)" >&2
    exit 1 ;;
  pull)
    shift; [ "$1" = -- ] && shift
    case "$1" in
      missing-*) echo "Error response from daemon: pull access denied for $1" >&2; exit 1 ;;
    esac
    echo "$1" >> "$here/pulled.txt"
    exit 0 ;;
  run)
    while [ "$#" -gt 0 ] && [ "$1" != "{IMAGE}" ]; do shift; done
    shift
    exec "$@" ;;
esac
exit 64
"""

REGISTRY = {"registryServer": POOL_REGISTRY, "userName": "batch", "password": PASSWORD}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):
    """Six testbed hosts: a pool with containerConfiguration (and a private registry), one
    without, one spare (their site PATH has a runtime that logs in and pulls), and three
    labelled ``badimage``, ``badlogin`` (same runtime) and ``noruntime`` (no runtime on its
    PATH) for pools whose nodes cannot pull."""
    tmp = tmp_path_factory.mktemp("svc")
    with reachable_dir() as shared, tb.up(6, tmp / "testbed", base_address="127.0.5.1") as bed, \
            running_service(tmp / "state") as (client, thread):
        bindir = shared / "runtime"
        bindir.mkdir()
        (bindir / "docker").write_text(PULLING_RUNTIME)
        (bindir / "docker").chmod(0o755)
        empty = shared / "empty"
        empty.mkdir()
        paths = [f"{bindir}:/usr/bin:/bin"] * 5 + [f"{empty}:/usr/bin:/bin"]
        labels = [["testbed"]] * 3 + [["badimage"], ["badlogin"], ["noruntime"]]
        client.add_hosts([{**h.model_dump(mode="json"), "env": {"PATH": path}, "labels": lab}
                          for h, path, lab in zip(bed.hosts, paths, labels, strict=True)])
        client.create_pool({"id": "boxes", "vmSize": "testbed", "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {"containerConfiguration": {
                                "type": "dockerCompatible", "containerImageNames": [IMAGE],
                                "containerRegistries": [REGISTRY]}}})
        client.create_pool({"id": "plain", "vmSize": "testbed", "targetDedicatedNodes": 1})
        for pool in ("boxes", "plain"):
            nodes = client.wait_for_pool(pool, timeout_s=120)
            assert [n.state for n in nodes] == ["idle"], [(n.id, n.state, n.errors) for n in nodes]
        pulled = (bindir / "pulled.txt").read_text().splitlines()  # once boxes is idle
        calls = (bindir / "calls.txt").read_text().splitlines()
        yield client, bed, thread, pulled, calls, bindir, tmp / "state"


def test_a_pools_images_are_pulled_on_its_node_before_it_is_idle(svc):
    pulled, calls, bindir = svc[3:6]
    assert pulled == [IMAGE]  # one node, one pull; none for the pool without containers
    # logged in first (password on stdin, never in the argv), then pulled
    assert calls == [f"login --username batch --password-stdin -- {POOL_REGISTRY}",
                     f"pull -- {IMAGE}"]
    assert (bindir / "logins.txt").read_text().splitlines()[0] == (
        f"login user=batch server={POOL_REGISTRY} stdin=yes")
    assert not Path("/tmp/pwned").exists()


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


WRONG = "not-the-password-4711"


def test_a_node_that_cannot_log_in_to_its_pools_registry_is_unusable_and_pulls_nothing(
        svc, tmp_path: Path):
    client, bindir = svc[0], svc[5]
    tmp_path.chmod(0o755)
    marker = tmp_path / "start-task-ran"
    client.create_pool({
        "id": "lockedout", "vmSize": "badlogin", "targetDedicatedNodes": 1,
        "virtualMachineConfiguration": {"containerConfiguration": {
            "type": "dockerCompatible", "containerImageNames": ["locked-image"],
            "containerRegistries": [{**REGISTRY, "password": WRONG}]}},
        "startTask": {"commandLine": f"/bin/sh -c 'touch {marker}'"}})
    node = wait_until(lambda: next((n for n in client.list_nodes_json("lockedout")
                                    if n["state"] in ("unusable", "idle")), None),
                      timeout_s=120, what="the node of lockedout to start or fail")
    assert node["state"] == "unusable", node
    [error] = node["errors"]
    assert error["code"] == "ContainerRegistryLoginFailed"
    assert POOL_REGISTRY in error["message"] and node["id"] in error["message"]
    details = {d["name"]: d["value"] for d in error["errorDetails"]}
    assert details["ContainerRegistry"] == POOL_REGISTRY and "Host" in details
    # the runtime's last words, without the password it repeated
    assert "incorrect username or password (***)" in details["Message"]
    assert WRONG not in str(node) and WRONG not in str(client.get_pool_json("lockedout"))
    assert "locked-image" not in (bindir / "pulled.txt").read_text()
    assert not marker.exists()
    client.delete_pool("lockedout")


def test_a_task_logs_in_to_its_registry_before_it_runs_or_fails_without_running(
        svc, tmp_path: Path):
    client, bindir = svc[0], svc[5]
    tmp_path.chmod(0o755)
    registry = {"registryServer": TASK_REGISTRY, "userName": "tasker", "password": PASSWORD}
    client.create_job({"id": "private", "poolInfo": {"poolId": "boxes"}})
    client.create_task("private", {"id": "ok", "commandLine": "/bin/sh -c 'echo ran'",
                                   "containerSettings": {"imageName": IMAGE,
                                                         "registry": registry}})
    client.create_task("private", {
        "id": "denied", "commandLine": f"/bin/sh -c 'touch {tmp_path}/ran'",
        "containerSettings": {"imageName": IMAGE, "registry": {**registry, "password": WRONG}}})
    client.wait_for_tasks("private", timeout_s=120)
    ok = client.get_task("private", "ok")
    assert ok.execution_info.result == "success", ok.execution_info
    assert client.download_task_file("private", "ok", "stdout.txt") == b"ran\n"
    calls = (bindir / "calls.txt").read_text().splitlines()
    logins = [i for i, c in enumerate(calls) if c.endswith(f"-- {TASK_REGISTRY}")]
    assert len(logins) == 2, calls  # each task's node logged in, in the agent's environment
    good = logins[0] if calls[logins[0] + 1] == f"pull -- {IMAGE}" else logins[1]
    assert calls[good] == f"login --username tasker --password-stdin -- {TASK_REGISTRY}"
    assert calls[good + 1] == f"pull -- {IMAGE}" and calls[good + 2].startswith("run --rm")
    assert f"login user=tasker server={TASK_REGISTRY} stdin=yes" in (
        bindir / "logins.txt").read_text()

    denied = client.get_task("private", "denied")
    info = denied.execution_info
    assert info.result == "failure" and info.exit_code is None
    assert (info.failure_info.category, info.failure_info.code) == (
        "usererror", "ContainerRegistryLoginFailed")
    msg = info.failure_info.message
    assert denied.node_info.node_id in msg and TASK_REGISTRY in msg and WRONG not in msg
    assert not (tmp_path / "ran").exists()  # never run
    for task_id in ("ok", "denied"):
        got = client.get_task_json("private", task_id)["containerSettings"]["registry"]
        assert got == {"registryServer": TASK_REGISTRY, "userName": "tasker"}  # no password


def test_a_node_logs_in_and_pulls_once_for_the_runs_of_an_image_and_registry(svc):
    client, bindir = svc[0], svc[5]
    task_registry = {"registryServer": TASK_REGISTRY, "userName": "again", "password": PASSWORD}

    def calls() -> list[str]:
        return (bindir / "calls.txt").read_text().splitlines()

    def run_all(job: str, registry: dict[str, str], count: int) -> list[str]:
        before = len(calls())
        client.create_job({"id": job, "poolInfo": {"poolId": "boxes"}})
        client.create_tasks(job, [{"id": f"t{i}", "commandLine": "/bin/sh -c 'echo ran'",
                                   "containerSettings": {"imageName": IMAGE,
                                                         "registry": registry}}
                                  for i in range(count)])
        counts = client.wait_for_tasks(job, timeout_s=120)
        assert counts["succeeded"] == count, counts
        return calls()[before:]

    made = run_all("again", task_registry, 3)  # one node: the three runs share it
    assert [c for c in made if c.startswith(("login", "pull"))] == [
        f"login --username again --password-stdin -- {TASK_REGISTRY}", f"pull -- {IMAGE}"]
    assert sum(c.startswith("run --rm") for c in made) == 3
    # the pool's registry, whose image the node prefetched as it started: nothing to do
    made = run_all("prefetched", REGISTRY, 2)
    assert [c for c in made if not c.startswith("run --rm")] == []
    # other credentials for the same server: logged in again (and the image pulled with them)
    made = run_all("other-user", {**task_registry, "userName": "someone"}, 1)
    assert [c for c in made if c.startswith(("login", "pull"))] == [
        f"login --username someone --password-stdin -- {TASK_REGISTRY}", f"pull -- {IMAGE}"]


def test_a_registry_that_cannot_log_in_is_a_400_naming_the_field(svc):
    client = svc[0]
    with pytest.raises(BatchError) as pool:
        client.create_pool({
            "id": "byidentity", "vmSize": "testbed", "targetDedicatedNodes": 0,
            "virtualMachineConfiguration": {"containerConfiguration": {
                "type": "dockerCompatible", "containerRegistries": [
                    {"registryServer": "acr.example", "identityReference": {
                        "resourceId": "/subscriptions/x/identities/y"}}]}}})
    assert (pool.value.status, pool.value.code) == (400, "InvalidPropertyValue")
    assert ("virtualMachineConfiguration.containerConfiguration.containerRegistries[0]"
            ".identityReference") in pool.value.message
    client.create_job({"id": "badregistry", "poolInfo": {"poolId": "boxes"}})
    for field, value in (("registryServer", "--config=/tmp/x"), ("userName", "a b")):
        with pytest.raises(BatchError) as task:
            client.create_task("badregistry", {
                "id": "t", "commandLine": "true", "containerSettings": {
                    "imageName": IMAGE, "registry": {**REGISTRY, field: value}}})
        assert (task.value.status, task.value.code) == (400, "InvalidPropertyValue")
        assert f"containerSettings.registry.{field}" in task.value.message
        assert PASSWORD not in str(task.value)


def test_no_registry_password_is_returned_logged_or_left_on_a_node(svc):
    """The promise of docs/security.md, "Container images": the passwords are kept in the
    service's store only; Get/List, the event log, node logs and node roots never hold one."""
    client, bed, state = svc[0], svc[1], svc[6]
    pool = client.get_pool_json("boxes")
    assert pool["virtualMachineConfiguration"]["containerConfiguration"][
        "containerRegistries"] == [{"registryServer": POOL_REGISTRY, "userName": "batch"}]
    returned = [pool, client.list_pools_json(), client.list_jobs_json()]
    returned += [client.list_tasks_json(j["id"]) for j in client.list_jobs_json()]
    secrets = (PASSWORD, WRONG)
    assert not any(s in str(r) for r in returned for s in secrets)
    # state.db (and its journal) is the store: the one place the passwords are kept
    outside = [p for p in state.rglob("*") if p.is_file() and not p.name.startswith("state.db")]
    outside += [p for h in bed.hosts for p in Path(h.root_dir).rglob("*") if p.is_file()]
    assert any(p.name == "node.log" for p in outside)
    assert any("event" in str(p).lower() for p in outside)
    for path in outside:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path
