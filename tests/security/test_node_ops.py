"""File delete and node users, through the REST API on a real sshd testbed.

A service over 2 testbed hosts (127.0.93.1-2, logged into as root, so the node agent
runs as root and may manage accounts). File delete keeps the confinement of file
reads (docs/security.md, "Nodes"): nothing outside the node root, nor the node's
secrets, is deleted, whichever way the path is written. A node user added with an SSH
key logs in with a real ``ssh`` client at the address and port Get Remote Login
Settings gives; existing host accounts are never taken over.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.api.wire import Http, batch_error
from tests.helpers import account_key, service_on_testbed, wait_until

POOL = "nodeops"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="node users need a root node agent")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("nodeops")
    with service_on_testbed(tmp, 2, "127.0.93.1") as (client, _bed, thread):
        client.create_pool({"id": POOL, "vmSize": "testbed", "targetDedicatedNodes": 1})
        nodes = client.wait_for_pool(POOL, timeout_s=120)
        assert [n.state for n in nodes] == ["idle"], [(n.id, n.errors) for n in nodes]
        http = Http(thread.runtime.endpoint, "hpcbatch", account_key(tmp / "state"))
        node = next(iter(thread.runtime.service.pool_manager.nodes_of(POOL)))
        yield client, http, node, tmp


# ---------------------------------------------------------------------------
# file delete
# ---------------------------------------------------------------------------


def test_node_file_delete_files_and_directories(env) -> None:
    _, http, node, _ = env
    root = Path(node.root_dir)
    base = f"/pools/{POOL}/nodes/{node.node_id}/files"
    (root / "shared" / "a.txt").write_text("a")
    (root / "shared" / "d" / "e").mkdir(parents=True, exist_ok=True)
    (root / "shared" / "d" / "e" / "f.txt").write_text("f")
    (root / "shared" / "empty").mkdir(exist_ok=True)
    resp = http("DELETE", f"{base}/shared/a.txt")
    assert resp.status_code == 200, resp.text
    assert not (root / "shared" / "a.txt").exists()
    batch_error(http("DELETE", f"{base}/shared/a.txt"), 404, "FileNotFound")
    err = batch_error(http("DELETE", f"{base}/shared/d"), 409, "DirectoryNotEmpty")
    assert "recursive" in err["message"]["value"]
    assert (root / "shared" / "d" / "e" / "f.txt").exists()
    assert http("DELETE", f"{base}/shared/empty").status_code == 200
    assert not (root / "shared" / "empty").exists()
    assert http("DELETE", f"{base}/shared/d", params={"recursive": "true"}).status_code == 200
    assert not (root / "shared" / "d").exists()
    assert (root / "shared").is_dir()


def test_node_file_delete_never_leaves_the_root_nor_touches_secrets(env, tmp_path) -> None:
    _, http, node, _ = env
    root = Path(node.root_dir)
    base = f"/pools/{POOL}/nodes/{node.node_id}/files"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep")
    shared = root / "shared"
    for name, target in (("out-link", outside), ("victim-link", outside / "victim.txt"),
                         ("secrets-link", root / "secrets"),
                         ("key-link", root / "secrets" / "tls" / "key.pem")):
        (shared / name).unlink(missing_ok=True)
        (shared / name).symlink_to(target)
    secrets_before = sorted(p.name for p in (root / "secrets").rglob("*"))
    assert "key.pem" in secrets_before
    rel_outside = os.path.relpath(outside, root)
    for path in ("secrets", "secrets/tls", "secrets/tls/key.pem", "shared/../secrets/tls",
                 "shared/%2E%2E/secrets", "./secrets/tls/key.pem", "secrets%2Ftls%2Fkey.pem",
                 "shared/secrets-link/tls/key.pem", "shared/secrets-link", "shared/key-link",
                 "shared/out-link/victim.txt", "shared/out-link", "shared/victim-link",
                 f"{rel_outside}/victim.txt", "../outside/victim.txt", "shared/../..", ".",
                 "%2E%2E"):
        for recursive in ("false", "true"):
            resp = http("DELETE", f"{base}/{path}", params={"recursive": recursive})
            assert resp.status_code in (404, 400), (path, resp.status_code, resp.text)
    assert sorted(p.name for p in (root / "secrets").rglob("*")) == secrets_before
    assert (outside / "victim.txt").read_text() == "keep"
    assert (shared / "out-link").is_symlink() and (shared / "key-link").is_symlink()
    assert root.is_dir() and (root / "startup").is_dir()


def test_task_file_delete(env) -> None:
    client, http, node, _ = env
    client.create_job({"id": "fdel", "poolInfo": {"poolId": POOL}})
    client.create_task("fdel", {"id": "t", "commandLine": "/bin/sh -c 'mkdir -p out/sub && "
                                                         "echo x > out/sub/x.txt && echo hi'"})
    client.wait_for_tasks("fdel", timeout_s=120)
    base = "/jobs/fdel/tasks/t/files"
    names = {f.name for f in client.list_task_files("fdel", "t", recursive=True)}
    assert {"stdout.txt", "wd/out/sub/x.txt"} <= names, names
    assert http("DELETE", f"{base}/stdout.txt").status_code == 200
    batch_error(http("DELETE", f"{base}/wd/out"), 409, "DirectoryNotEmpty")
    assert http("DELETE", f"{base}/wd/out", params={"recursive": "true"}).status_code == 200
    names = {f.name for f in client.list_task_files("fdel", "t", recursive=True)}
    assert "stdout.txt" not in names and not any(n.startswith("wd/out") for n in names)
    assert "stderr.txt" in names
    # nothing beyond the task's directory: its job's other folders, the node's startup dir
    for path in ("../../../../startup/stdout.txt", "wd/../../../../../startup",
                 "%2E%2E/%2E%2E", "../t"):
        resp = http("DELETE", f"{base}/{path}", params={"recursive": "true"})
        assert resp.status_code in (400, 404), (path, resp.text)
    assert (Path(node.root_dir) / "startup").is_dir()
    assert {"stderr.txt"} <= {f.name for f in client.list_task_files("fdel", "t")}


# ---------------------------------------------------------------------------
# node users
# ---------------------------------------------------------------------------


def _keypair(folder: Path, name: str) -> tuple[Path, str]:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, capture_output=True)
    return key, (folder / f"{name}.pub").read_text().strip()


def _ssh(key: Path, user: str, address: str, port: int, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{user}@{address}", command],
        capture_output=True, text=True, timeout=60, check=False)


def _remove_user(name: str) -> None:
    subprocess.run(["userdel", "--force", "--remove", name], capture_output=True, check=False)


def test_a_node_user_logs_in_with_ssh_at_the_remote_login_address(env, tmp_path) -> None:
    _, http, node, _ = env
    name = "nodeopsuser"
    _remove_user(name)
    key, public = _keypair(tmp_path, "k1")
    key2, public2 = _keypair(tmp_path, "k2")
    users = f"/pools/{POOL}/nodes/{node.node_id}/users"
    expiry = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    try:
        resp = http("POST", users, {"name": name, "isAdmin": True, "sshPublicKey": public,
                                    "expiryTime": expiry})
        assert resp.status_code == 201, resp.text
        entry = pwd.getpwnam(name)
        login = http("GET", f"/pools/{POOL}/nodes/{node.node_id}/remoteloginsettings").json()
        address, port = login["remoteLoginIPAddress"], login["remoteLoginPort"]
        out = _ssh(key, name, address, port, "id -un; id -Gn")
        assert out.returncode == 0, out.stderr
        who, groups = out.stdout.split("\n", 1)
        assert who == name and "sudo" in groups.split()
        # its expiry date: the day after the expiry time's UTC day
        chage = subprocess.run(["chage", "-l", name], capture_output=True, text=True,
                               check=True, env={**os.environ, "LC_ALL": "C"}).stdout
        expires = (datetime.now(UTC) + timedelta(days=4)).strftime("%b %d, %Y")
        assert expires.replace(" 0", " ") in chage.replace(" 0", " "), chage
        batch_error(http("POST", users, {"name": name, "sshPublicKey": public}), 409,
                    "NodeUserExists")
        # Update User replaces the key: the old one no longer logs in, the new one does
        resp = http("PUT", f"{users}/{name}", {"sshPublicKey": public2})
        assert resp.status_code == 200, resp.text
        assert _ssh(key, name, address, port, "true").returncode != 0
        assert _ssh(key2, name, address, port, "id -un").stdout.strip() == name
        assert Path(entry.pw_dir).is_dir()
        assert http("DELETE", f"{users}/{name}").status_code == 200
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
        assert not Path(entry.pw_dir).exists()
        assert _ssh(key2, name, address, port, "true").returncode != 0
        batch_error(http("DELETE", f"{users}/{name}"), 404, "NodeUserNotFound")
        batch_error(http("PUT", f"{users}/{name}", {"sshPublicKey": public2}), 404,
                    "NodeUserNotFound")
    finally:
        _remove_user(name)


def test_node_users_never_take_over_host_accounts(env) -> None:
    _, http, node, _ = env
    users = f"/pools/{POOL}/nodes/{node.node_id}/users"
    _, public = _keypair(Path(node.root_dir) / "shared", "attacker")
    before = Path("/etc/passwd").read_text()
    for name in ("root", "daemon", "nobody"):  # existing accounts: 409, never changed
        batch_error(http("POST", users, {"name": name, "sshPublicKey": public}), 409,
                    "NodeUserExists")
        batch_error(http("PUT", f"{users}/{name}", {"sshPublicKey": public}), 404,
                    "NodeUserNotFound")
        batch_error(http("DELETE", f"{users}/{name}"), 404, "NodeUserNotFound")
    assert Path("/etc/passwd").read_text() == before
    assert not Path("/root/.ssh/authorized_keys").exists() or \
        public not in Path("/root/.ssh/authorized_keys").read_text()
    for name in ("_azbatch", "_azbatcht0123", "Bad", "a b", "../x", "x" * 33, ""):
        err = batch_error(http("POST", users, {"name": name, "sshPublicKey": public}), 400,
                          "MissingRequiredProperty" if name == "" else "InvalidPropertyValue")
        assert "name" in str(err["values"])
    for body, field in (({"name": "okname", "sshPublicKey": "not a key"}, "sshPublicKey"),
                        ({"name": "okname", "isAdmin": "yes"}, "isAdmin"),
                        ({"name": "okname", "expiryTime": "2001-01-01T00:00:00Z"}, "expiryTime"),
                        ({"name": "okname", "password": "a\nroot:x"}, "password")):
        err = batch_error(http("POST", users, body), 400, "InvalidPropertyValue")
        assert {"key": "PropertyName", "value": field} in err["values"], err
    with pytest.raises(KeyError):
        pwd.getpwnam("okname")


def test_without_root_the_node_says_why_it_cannot_manage_users(env) -> None:
    """A node agent that is not root answers FeatureNotSupported naming why (the check runs
    on the node, in :mod:`hpcbatch.execution.node_users`, run here as another user)."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    code = ("import json; from hpcbatch.execution import node_users as u; "
            "print(json.dumps(u.add_user('/nonexistent', 'x', False, '2099-01-01T00:00:00Z')))")
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                          sys.executable, "-c", code],
                         capture_output=True, text=True, check=False,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr
    assert '"UserManagementUnavailable"' in out.stdout and "runs as nobody, not root" in out.stdout


def test_cli_node_users_and_file_delete(env, tmp_path) -> None:
    from tests.test_cli_more import run, run_json

    client, _http, node, tmp = env
    cli_env = {"AZURE_BATCH_ENDPOINT": client.endpoint, "AZURE_BATCH_ACCOUNT": "hpcbatch",
               "AZURE_BATCH_ACCESS_KEY": account_key(tmp / "state")}
    name = "nodeopscli"
    _remove_user(name)
    key, _ = _keypair(tmp_path, "cli")
    where = ("--pool-id", POOL, "--node-id", node.node_id)
    try:
        run(cli_env, "node", "user", "add", *where, "--name", name, "--ssh-public-key-file",
            f"{key}.pub")
        login = run_json(cli_env, "node", "login-settings", *where)
        out = _ssh(key, name, login["remoteLoginIPAddress"], login["remoteLoginPort"], "id -un")
        assert out.stdout.strip() == name, out.stderr
        err = run(cli_env, "node", "user", "add", *where, "--name", name, code=1)
        assert "NodeUserExists" in err.stderr
        run(cli_env, "node", "user", "update", *where, "--name", name, "--password", "pw1")
        assert _ssh(key, name, login["remoteLoginIPAddress"], login["remoteLoginPort"],
                    "true").returncode != 0  # the key was replaced (by none)
        run(cli_env, "node", "user", "delete", *where, "--name", name)
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    finally:
        _remove_user(name)
    shared = Path(node.root_dir) / "shared"
    (shared / "cli" / "x").mkdir(parents=True, exist_ok=True)
    err = run(cli_env, "node", "file", "delete", *where, "--file-path", "shared/cli", code=1)
    assert "DirectoryNotEmpty" in err.stderr
    run(cli_env, "node", "file", "delete", *where, "--file-path", "shared/cli", "--recursive")
    assert not (shared / "cli").exists()
    err = run(cli_env, "node", "file", "delete", *where, "--file-path", "secrets", "--recursive",
              code=1)
    assert "FileNotFound" in err.stderr and (Path(node.root_dir) / "secrets").is_dir()
    client.create_job({"id": "clidel", "poolInfo": {"poolId": POOL}})
    client.create_task("clidel", {"id": "t", "commandLine": "echo hi"})
    client.wait_for_tasks("clidel", timeout_s=120)
    run(cli_env, "task", "file", "delete", "--job-id", "clidel", "--task-id", "t",
        "--file-path", "stdout.txt")
    assert "stdout.txt" not in {f.name for f in client.list_task_files("clidel", "t")}


def test_node_users_go_when_the_node_is_reimaged_or_leaves(env, tmp_path) -> None:
    client, http, node, _ = env
    _, public = _keypair(tmp_path, "gone")
    users = f"/pools/{POOL}/nodes/{node.node_id}/users"
    for name in ("nodeopsre", "nodeopsrm"):
        _remove_user(name)
    try:
        assert http("POST", users, {"name": "nodeopsre", "sshPublicKey": public}).status_code == 201
        pwd.getpwnam("nodeopsre")
        client.reimage_node(POOL, node.node_id)
        nodes = client.wait_for_pool(POOL, timeout_s=120)
        assert [n.state for n in nodes] == ["idle"]
        with pytest.raises(KeyError):
            pwd.getpwnam("nodeopsre")
        assert http("POST", users, {"name": "nodeopsrm", "sshPublicKey": public}).status_code == 201
        pwd.getpwnam("nodeopsrm")
        client.resize_pool(POOL, 0)
        wait_until(lambda: not client.list_nodes(POOL), 120, what="the node to leave")
        with pytest.raises(KeyError):
            pwd.getpwnam("nodeopsrm")
    finally:
        for name in ("nodeopsre", "nodeopsrm"):
            _remove_user(name)
