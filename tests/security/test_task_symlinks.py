"""A task cannot make the root node agent act on its behalf through symbolic links
(docs/security.md, "Tasks: least identity" and "Node files and cleanup").

On the sshd testbed (its nodes run as root, so the node agent switches users) a
task running as ``_azbatch`` (or a task-scope user) plants links in its own task
directory, and the agent, which runs as root, must not follow them: not when it
prepares the directory of a retry (chown), not when it uploads ``outputFiles``
or saves ``$TaskLog``, and not when Task - Get File / List Files serve the
task's files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient, BatchError
from tests.helpers import reachable_dir, service_on_testbed

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="user switching needs root (the testbed runs as root)")

POOL = "links"
SECRET = b"root-only-s3cret-7f2a"


@pytest.fixture(scope="module")
def bed() -> Iterator[tuple[BatchClient, Path]]:
    """A 1-node pool on a testbed in a reachable folder; yields the client and that folder."""
    with reachable_dir() as tmp, service_on_testbed(tmp, 1, "127.0.61.1") as (client, _, _t):
        client.create_pool({"id": POOL, "vmSize": "testbed", "targetDedicatedNodes": 1})
        nodes = client.wait_for_pool(POOL, timeout_s=120)
        assert all(n.state == "idle" for n in nodes), [(n.id, n.errors) for n in nodes]
        assert "hpcbatchWarnings" not in client.get_pool_json(POOL)  # users are switched
        yield client, tmp


def _root_only(tmp: Path, name: str) -> Path:
    """A root-owned 0700 folder holding a 0600 ``secret`` file (what a task must not reach)."""
    folder = tmp / name
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    (folder / "secret").write_bytes(SECRET)
    (folder / "secret").chmod(0o600)
    return folder


def _run(client: BatchClient, job: str, task: dict[str, Any]) -> Any:
    client.create_job({"id": job, "poolInfo": {"poolId": POOL}})
    client.create_task(job, task)
    client.wait_for_tasks(job, timeout_s=180)
    return client.get_task(job, task["id"])


def _files_holding_secret(top: Path) -> list[str]:
    """Every regular file under ``top`` (links not followed) whose bytes hold :data:`SECRET`."""
    found = []
    for folder, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    if os.path.islink(path) and SECRET in Path(path).read_bytes():
                        found.append(path)  # a stored link that leads to the secret
                    continue
                if SECRET in Path(path).read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def test_a_retry_does_not_chown_a_directory_the_task_linked_as_its_wd(bed) -> None:
    client, tmp = bed
    target = _root_only(tmp, "retry-target")
    before = os.stat(target)
    # First run: replace wd by a link to the root-only folder and fail, asking for a retry.
    # The retry finds wd.old and reports whether it can read the folder.
    script = (f"cd \"$AZ_BATCH_TASK_DIR\"; if [ -e wd.old ]; then cat {target}/secret "
              "&& echo READ; ls -ld wd; exit 0; fi; mv wd wd.old && ln -s "
              f"{target} wd && exit 1; exit 3")
    task = _run(client, "retry-chown", {
        "id": "t", "commandLine": f"/bin/sh -c '{script}'",
        "constraints": {"maxTaskRetryCount": 1}})
    assert task.execution_info.retry_count == 1
    after = os.stat(target)
    assert (after.st_uid, after.st_gid) == (0, 0), "the root-only folder was given away"
    assert stat.S_IMODE(after.st_mode) == 0o700 and after.st_ino == before.st_ino
    assert (target / "secret").read_bytes() == SECRET
    assert sorted(os.listdir(target)) == ["secret"]
    assert os.stat(target / "secret").st_uid == 0
    out = client.download_task_file("retry-chown", "t", "stdout.txt")
    assert b"READ" not in out and SECRET not in out
    assert out.startswith(b"d"), out  # the retry ran in a real folder the agent made


def test_output_files_do_not_follow_links_the_task_planted(bed) -> None:
    client, tmp = bed
    target = _root_only(tmp, "output-target")
    store = tmp / "out-store"
    (store / "out").mkdir(parents=True)
    script = (f"ln -s {target}/secret acct; mkdir -p sub; ln -s {target}/secret sub/leak.txt; "
              f"ln -s {target} dirlink; echo fine > sub/ok.txt; "
              "rm -f ../stdout.txt; ln -s " + f"{target}/secret ../stdout.txt")
    destination = {"container": {"containerUrl": f"file://{store}/out"}}
    task = _run(client, "outputs", {
        "id": "t", "commandLine": f"/bin/sh -c '{script}'",
        "outputFiles": [
            {"filePattern": "acct", "destination": destination,
             "uploadOptions": {"uploadCondition": "taskCompletion"}},
            {"filePattern": "**/*.txt", "destination": destination,
             "uploadOptions": {"uploadCondition": "taskCompletion"}},
            {"filePattern": "dirlink/*", "destination": destination,
             "uploadOptions": {"uploadCondition": "taskCompletion"}}]})
    assert task.execution_info.exit_code == 0
    # Neither the output container nor the service's storage ($TaskLog) holds the secret.
    assert _files_holding_secret(tmp / "state") == []
    assert _files_holding_secret(store) == []
    # The refusal is an upload error naming the file; the task's own files still upload.
    failure = task.execution_info.failure_info
    assert failure is not None and failure.code == "FileUploadError", failure
    assert "acct" in failure.message and "sub/leak.txt" in failure.message, failure.message
    assert (store / "out" / "sub" / "ok.txt").read_bytes() == b"fine\n"
    assert os.stat(target).st_uid == 0 and (target / "secret").read_bytes() == SECRET


def test_output_files_do_not_follow_a_wd_the_task_replaced_with_a_link(bed) -> None:
    # The task swaps its whole working directory for a link to a root-only folder; the
    # patterns then match inside that folder.
    client, tmp = bed
    target = _root_only(tmp, "wd-link-target")
    store = tmp / "wd-link-store"
    (store / "out").mkdir(parents=True)
    destination = {"container": {"containerUrl": f"file://{store}/out"}}
    task = _run(client, "wdlink", {
        "id": "t", "commandLine": f"/bin/sh -c 'cd ..; mv wd wd.old; ln -s {target} wd'",
        "outputFiles": [
            {"filePattern": pattern, "destination": destination,
             "uploadOptions": {"uploadCondition": "taskCompletion"}}
            for pattern in ("secret", "*", "**/*")]})
    assert task.execution_info.exit_code == 0
    assert _files_holding_secret(store) == []
    failure = task.execution_info.failure_info
    assert failure is not None and failure.code == "FileUploadError", failure
    assert "secret" in failure.message, failure.message
    assert os.stat(target).st_uid == 0 and (target / "secret").read_bytes() == SECRET


def test_task_file_api_does_not_follow_links_out_of_the_task_dir(bed) -> None:
    client, _tmp = bed
    victim = _run(client, "victim", {
        "id": "v", "commandLine": "/bin/sh -c 'echo victim-s3cret > secret.txt'"})
    assert victim.execution_info.exit_code == 0
    victim_dir = victim.node_info.task_root_directory
    script = (f"ln -s $AZ_BATCH_NODE_ROOT_DIR/{victim_dir}/wd/secret.txt s1; "
              "ln -s $AZ_BATCH_NODE_ROOT_DIR/node.log s2; "
              "ln -s $AZ_BATCH_NODE_ROOT_DIR/node.json s3; "
              "ln -s $AZ_BATCH_NODE_ROOT_DIR/workitems/victim s4; "
              "echo mine > mine.txt; ln -s mine.txt inner")
    task = _run(client, "attacker", {
        "id": "t", "commandLine": f"/bin/sh -c '{script}'",
        "userIdentity": {"autoUser": {"scope": "task"}}})
    assert task.execution_info.exit_code == 0
    for name in ("wd/s1", "wd/s2", "wd/s3", "wd/s4/job-1/v/wd/secret.txt"):
        with pytest.raises(BatchError) as err:
            client.download_task_file("attacker", "t", name)
        assert err.value.code == "FileNotFound", (name, err.value)
    listed = {f.name for f in client.list_task_files("attacker", "t", recursive=True)}
    assert "wd/mine.txt" in listed and "wd/inner" in listed  # the task's own files and links
    assert not {"wd/s1", "wd/s2", "wd/s3", "wd/s4"} & listed, sorted(listed)
    assert client.download_task_file("attacker", "t", "wd/inner") == b"mine\n"
    # Node - Get File keeps the node-root rule, but a link never serves the agent's files.
    node = task.node_info.node_id
    rel = task.node_info.task_root_directory
    for name in ("wd/s2", "wd/s3"):
        with pytest.raises(BatchError) as err:
            client.download_node_file(POOL, node, f"{rel}/{name}")
        assert err.value.code == "FileNotFound", (name, err.value)
