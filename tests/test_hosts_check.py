"""``hpcbatch hosts check`` on the SSH testbed: broken hosts are named with their cause and fix."""

from __future__ import annotations

import json
import site
import venv
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hpcbatch
from hpcbatch.client.cli import cli
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

    # Plain output: one line per host and check, failures with their fix; exit 1.
    text = hosts_check(state_dir, code=1)
    lines = text.stdout.splitlines()
    assert len(lines) == len(result["value"]) == 5 * 5
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
    assert set(checks.values()) == {"pass"}
    assert result["failed"] == []
