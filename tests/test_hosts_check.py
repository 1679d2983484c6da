"""``hpcbatch hosts check`` on the SSH testbed: broken hosts are named with their cause and fix."""

from __future__ import annotations

import json
import os
import pwd
import site
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import distributed
import pytest
from click.testing import CliRunner

import hpcbatch
from hpcbatch.client.cli import cli
from hpcbatch.providers import preflight
from hpcbatch.providers.inventory import Host
from tests.helpers import service_on_testbed, wait_until

NO_SERVICE_ENV = {"AZURE_BATCH_ENDPOINT": None, "AZURE_BATCH_ACCOUNT": None,
                  "AZURE_BATCH_ACCESS_KEY": None}


def make_venv(path: Path, *, inherit: bool) -> str:
    """A virtual environment's python; with ``inherit``, it sees this interpreter's packages.

    Its bin directory holds no MPI launcher either way (no mpich wheel installed there).
    """
    venv.create(path, with_pip=False, symlinks=True)
    if inherit:
        [site_dir] = path.glob("lib/python*/site-packages")
        dirs = [str(Path(hpcbatch.__file__).parents[1]), *site.getsitepackages()]
        (site_dir / "_parent.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    return str(path / "bin" / "python")


def hosts_check(state_dir: Path, *args: str, code: int) -> Any:
    result = CliRunner(env={**NO_SERVICE_ENV, "HPCBATCH_STATE_DIR": str(state_dir)}).invoke(
        cli, ["hosts", "check", *args], prog_name="hpcbatch", catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory):
    """5 testbed hosts: 2 healthy ("good"), then sshd stopped, a python without hpcbatch,
    no MPI launcher on the task PATH."""
    tmp = tmp_path_factory.mktemp("hostcheck")
    with service_on_testbed(tmp, 5, "127.0.14.1") as (client, bed, _):
        good1, good2, down, nopkg, nompi = bed.hosts
        bare = make_venv(tmp / "bare-venv", inherit=False)
        inheriting = make_venv(tmp / "nompi-venv", inherit=True)
        empty = tmp / "empty-bin"
        empty.mkdir()
        client.add_hosts([
            {**good1.model_dump(mode="json"), "labels": ["testbed", "good"]},
            {**good2.model_dump(mode="json"), "labels": ["testbed", "good"]},
            {**nopkg.model_dump(mode="json"), "python": bare},
            {**nompi.model_dump(mode="json"), "python": inheriting, "env": {"PATH": str(empty)}},
        ])
        bed.kill(down.name)
        yield client, tmp / "state", bed


def test_hosts_check_names_each_broken_host_its_cause_and_fix(checked) -> None:
    _, state_dir, bed = checked
    good1, good2, down, nopkg, nompi = (h.name for h in bed.hosts)
    result = json.loads(hosts_check(state_dir, "-o", "json", code=1).stdout)
    by = {(c["host"], c["check"]): c for c in result["value"]}
    assert result["failed"] == [down, nopkg, nompi]
    for host in (good1, good2):
        for check in ("ssh", "python", "versions", "disk", "launcher"):
            assert by[host, check]["status"] == "pass", by[host, check]
    assert by[good1, "launcher"]["detail"].startswith(f"{good1}: mpiexec is /")
    assert by[good1, "versions"]["detail"] == (
        f"{good1}: hpcbatch {result['service']['hpcbatch']}, distributed "
        f"{result['service']['distributed']} (as the service)")

    ssh = by[down, "ssh"]
    assert ssh["status"] == "fail"
    assert down in ssh["detail"] and "Connection refused" in ssh["detail"]
    assert f"start sshd on {down}" in ssh["fix"]
    assert {by[down, c]["status"] for c in ("python", "versions", "disk", "launcher")} == {"skip"}

    py = by[nopkg, "python"]
    assert py["status"] == "fail"
    assert nopkg in py["detail"] and "cannot import hpcbatch (ModuleNotFoundError" in py["detail"]
    assert "pip install hpcbatch==" in py["fix"]
    assert by[nopkg, "ssh"]["status"] == "pass"

    mpi = by[nompi, "launcher"]
    assert mpi["status"] == "fail"
    task_path = str(Path(checked[1]).parent / "nompi-venv" / "bin") + ":" + str(
        Path(checked[1]).parent / "empty-bin")
    assert mpi["detail"] == f"{nompi}: MPI launcher mpiexec not found on the task PATH {task_path}"
    assert "pip install mpich" in mpi["fix"] and "inventory env" in mpi["fix"]
    assert {by[nompi, c]["status"] for c in ("ssh", "python", "versions", "disk")} == {"pass"}

    # The login shell's start is measured where the probe ran (a warning at most: this
    # machine's own ~/.bashrc decides which), and skipped where it could not run.
    for host in (good1, good2, nopkg, nompi):
        assert by[host, "shell"]["status"] in ("pass", "warn"), by[host, "shell"]
        assert by[host, "shell"]["detail"].startswith(f"{host}: the login shell /")
    assert by[down, "shell"]["status"] == "skip"

    # Plain output: one line per host and check, failures with their fix; exit 1.
    text = hosts_check(state_dir, code=1)
    lines = text.stdout.splitlines()
    assert len(lines) == len(result["value"]) == 5 * 6
    assert any(ln.startswith(f"{down}\tssh\tfail\t") and "\tfix: start sshd" in ln for ln in lines)
    assert f"3 host(s) failed: {down}, {nopkg}, {nompi}" in text.stderr


def test_hosts_check_of_a_pool_passes_and_sshes_between_its_nodes(checked) -> None:
    client, state_dir, bed = checked
    good1, good2 = bed.hosts[0].name, bed.hosts[1].name
    hosts_check(state_dir, "--pool-id", "nope", code=1)  # PoolNotFound: an error, not a check
    client.create_pool({"id": "pair", "vmSize": "good", "targetDedicatedNodes": 2,
                        "enableInterNodeCommunication": True})
    wait_until(lambda: [n.state for n in client.list_nodes("pair")] == ["idle"] * 2,
               timeout_s=120, what="pool pair idle")
    result = json.loads(hosts_check(state_dir, "--pool-id", "pair", "-o", "json", code=0).stdout)
    checks = {(c["host"], c["check"]): c["status"] for c in result["value"]}
    assert {h for h, _ in checks} == {good1, good2}
    assert checks[good1, f"ssh-to {good2}"] == checks[good2, f"ssh-to {good1}"] == "pass"
    assert {s for (_, c), s in checks.items() if c != "shell"} == {"pass"}
    assert result["failed"] == []


def test_hosts_check_of_a_container_pool_looks_for_its_runtime(checked) -> None:
    """A pool with containerConfiguration adds the ``runtime`` check: a docker or podman on
    each host's task PATH (where the node pulls the pool's images); other checks have none."""
    client, state_dir, bed = checked
    _, _, down, nopkg, nompi = (h.name for h in bed.hosts)
    client.create_pool({"id": "boxes", "vmSize": "testbed", "targetDedicatedNodes": 0,
                        "virtualMachineConfiguration": {"containerConfiguration": {
                            "type": "dockerCompatible"}}})
    result = json.loads(hosts_check(state_dir, "--pool-id", "boxes", "-o", "json",
                                    code=1).stdout)
    by = {(c["host"], c["check"]): c for c in result["value"]}
    runtime = by[nompi, "runtime"]  # its task PATH is an empty folder (and its venv's bin)
    assert runtime["status"] == "fail"
    assert runtime["detail"].startswith(f"{nompi}: no container runtime (docker, podman) on "
                                        "the task PATH ")
    assert "install one of docker, podman" in runtime["fix"] and "inventory env" in runtime["fix"]
    assert by[nopkg, "runtime"]["status"] == by[down, "runtime"]["status"] == "skip"
    plain = json.loads(hosts_check(state_dir, "-o", "json", code=1).stdout)
    assert not [c for c in plain["value"] if c["check"] == "runtime"]


def test_the_runtime_check_finds_a_runtime_on_the_task_path(tmp_path: Path) -> None:
    """The probe itself, on this machine (local transport): the runtime found is the one
    on the host's site PATH, after the python's own bin directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "podman").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "podman").chmod(0o755)
    host = Host(name="here", address="127.0.0.1", provider="local", python=sys.executable,
                root_dir=str(tmp_path / "root"), env={"PATH": f"{bindir}:/usr/bin:/bin"})
    expected = preflight.Expected(hpcbatch=hpcbatch.__version__,
                                  distributed=distributed.__version__,
                                  runtimes=("docker", "podman"))
    checks = {c.check: c for c in preflight.check_host(host, expected)}
    assert checks["runtime"].status == "pass", checks["runtime"]
    assert checks["runtime"].detail == f"here: container runtime {bindir}/podman on the task PATH"


def test_a_wrong_key_fix_names_its_public_key_and_the_hosts_authorized_keys(checked,
                                                                            tmp_path: Path
                                                                            ) -> None:
    """The fix of a refused key: the .pub to authorise, in the file sshd reads for the user
    (the host's ``authorized_keys``, ``%u`` filled in), not the private key and the default."""
    _, _, bed = checked
    good = bed.hosts[0]
    wrong = tmp_path / "wrongkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    host = good.model_copy(update={"identity_file": str(wrong)})
    [ssh, *_] = preflight.check_host(host, preflight.Expected("x", "y"))
    assert ssh.status == "fail" and "authentication" in ssh.detail.lower(), ssh
    user = host.user
    assert user and good.authorized_keys and "%u" in good.authorized_keys
    assert ssh.fix == (f"authorise this service's key ({wrong}.pub) in "
                       f"{good.authorized_keys.replace('%u', user)} of {user} on {host.address}")
    default = host.model_copy(update={"authorized_keys": None})
    assert f"in ~{user}/.ssh/authorized_keys of {user}" in preflight._ssh_fix(
        default, ssh.detail)


def test_an_ssh_config_alias_reports_its_hostname_and_port(tmp_path: Path) -> None:
    """A host reached through an ssh config alias with ``Port 2222``: hosts list, hosts
    check, the node's ipAddress and its remote login settings give where ssh really goes."""
    from hpcbatch.testing import testbed as tb
    from tests.helpers import running_service

    with (tb.up(1, tmp_path / "testbed", base_address="127.0.14.31", port=2222) as bed,
          running_service(tmp_path / "state") as (client, _)):
        [real] = bed.hosts
        config = tmp_path / "ssh_config"
        config.write_text(f"Host tbport\n    HostName {real.address}\n    Port 2222\n")
        alias = {**real.model_dump(mode="json"), "name": "tbport", "address": "tbport",
                 "port": 22, "ssh_config": str(config)}
        [added] = client.add_hosts([alias])  # hosts add shows what hosts list shows
        [listed] = client.list_hosts()
        assert (listed["address"], listed["port"]) == ("tbport", 2222)
        assert (added["address"], added["port"]) == ("tbport", 2222)
        result = json.loads(hosts_check(tmp_path / "state", "-o", "json", code=0).stdout)
        ssh = next(c for c in result["value"] if c["check"] == "ssh")
        assert ssh["status"] == "pass", ssh
        assert ssh["detail"] == f"tbport: reached tbport ({real.address}:2222) (ssh)"
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        [node] = client.wait_for_pool("p", timeout_s=120)
        assert node.state == "idle" and node.ip_address == real.address
        login = client.get_remote_login_settings("p", "tbport")
        assert (login["remoteLoginIPAddress"], login["remoteLoginPort"]) == (real.address, 2222)


def test_a_pool_of_ssh_config_aliases_runs_mpi_between_its_nodes(tmp_path: Path) -> None:
    """Hosts named only by ssh config aliases (``HostName``, ``Port 2222``): the pool's
    nodes reach each other at the aliases' HostName and Port, which only this machine's
    ssh config knows. ``hosts check --pool-id`` sshes between them, and an MPI program
    runs across both with ``AZ_BATCH_HOST_LIST`` holding their addresses (as ipAddress)."""
    from hpcbatch.testing import testbed as tb
    from tests.helpers import running_service

    with (tb.up(2, tmp_path / "testbed", base_address="127.0.14.61", port=2222) as bed,
          running_service(tmp_path / "state") as (client, _)):
        config = tmp_path / "ssh_config"
        config.write_text("".join(f"Host tbalias{i}\n    HostName {h.address}\n    Port 2222\n"
                                  for i, h in enumerate(bed.hosts)))
        client.add_hosts([{**h.model_dump(mode="json"), "name": f"tbalias{i}",
                           "address": f"tbalias{i}", "port": 22, "ssh_config": str(config)}
                          for i, h in enumerate(bed.hosts)])
        client.create_pool({"id": "alias", "vmSize": "any", "targetDedicatedNodes": 2,
                            "enableInterNodeCommunication": True})
        nodes = client.wait_for_pool("alias", timeout_s=120)
        assert [n.state for n in nodes] == ["idle", "idle"], [(n.id, n.errors) for n in nodes]
        result = json.loads(hosts_check(tmp_path / "state", "--pool-id", "alias", "-o", "json",
                                        code=0).stdout)
        peers = {(c["host"], c["check"]): c for c in result["value"]
                 if c["check"].startswith("ssh-to")}
        assert set(peers) == {("tbalias0", "ssh-to tbalias1"), ("tbalias1", "ssh-to tbalias0")}
        assert {c["status"] for c in peers.values()} == {"pass"}, peers
        assert peers["tbalias0", "ssh-to tbalias1"]["detail"] == (
            f"tbalias0 reaches tbalias1 ({bed.hosts[1].address}) with pool alias's key")

        client.create_job({"id": "j", "poolInfo": {"poolId": "alias"}})
        client.create_task("j", {
            "id": "mpi", "multiInstanceSettings": {"numberOfInstances": 2},
            "commandLine": "/bin/sh -c 'echo hosts=$AZ_BATCH_HOST_LIST; mpiexec -hosts "
                           f"$AZ_BATCH_HOST_LIST -n 2 {sys.executable} -m hpcbatch.mpihello'"})
        counts = client.wait_for_tasks("j", timeout_s=120)
        out = client.download_task_file("j", "mpi", "stdout.txt").decode()
        err = client.download_task_file("j", "mpi", "stderr.txt").decode()
        assert counts["succeeded"] == 1, (counts, out, err)
        master = client.get_task("j", "mpi").node_info.node_id
        addresses = {n.id: n.ip_address for n in nodes}
        other = next(a for n, a in addresses.items() if n != master)
        assert f"hosts={addresses[master]},{other}\n" in out
        ranks = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert sorted(r["address"] for r in ranks) == sorted(h.address for h in bed.hosts)


def test_a_slow_login_shell_warns_with_its_cost_and_fix(tmp_path: Path) -> None:
    """A host whose ~/.bashrc does start-up work for every command sshd runs (as a
    ``pyenv init`` or ``conda init`` there does): ``shell`` warns, naming the time, what pays
    it and the guard that avoids it; the host still passes. The same check of a host without
    that work passes. The threshold is raised above this machine's own login shell."""
    from hpcbatch.testing import testbed as tb

    if Path(pwd.getpwuid(os.getuid()).pw_shell).name != "bash":
        pytest.skip("the testbed's login user has no bash: its start-up files differ")
    home = tmp_path / "slowhome"
    home.mkdir()
    (home / ".bashrc").write_text("sleep 2.5\n")
    with tb.up(2, tmp_path / "testbed", base_address="127.0.14.41") as bed:
        fast, slow = bed.hosts
        bed.start(slow.name, session_env={"HOME": str(home)})
        expected = preflight.Expected(hpcbatch=hpcbatch.__version__,
                                      distributed=distributed.__version__, slow_shell_s=2.0)
        checks = {h.name: {c.check: c for c in preflight.check_host(h, expected)}
                  for h in (fast, slow)}
    shell = checks[slow.name]["shell"]
    assert shell.status == "warn", shell
    ms = int(shell.detail.split(" takes ")[1].split(" ms")[0])
    assert 2500 <= ms < 10000, shell
    assert shell.detail == (f"{slow.name}: the login shell /bin/bash takes {ms} ms to start a "
                            "command (median of 3): every node start and every MPI launch "
                            "over SSH on this host pays it")
    assert shell.fix.startswith(f"make ~/.bashrc of {slow.user} on {slow.name} return at once "
                                "for a non-interactive shell: put `case $- in *i*) ;; *) "
                                "return;; esac` first")
    assert {c.status for c in checks[slow.name].values()} == {"pass", "warn"}
    assert checks[fast.name]["shell"].status == "pass", checks[fast.name]["shell"]
    assert {c.status for c in checks[fast.name].values()} == {"pass"}
