"""hpcbatch.testing.testbed (own testbeds on 127.0.6.x) and hpcbatch.providers.inventory."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hpcbatch.batch.errors import (
    BadRequestError,
    HpcbatchError,
    InvalidPropertyValueError,
    NodeConnectionError,
)
from hpcbatch.providers.inventory import dump_inventory, load_inventory, parse_inventory
from hpcbatch.providers.ssh import SshTransport
from hpcbatch.testing import testbed as tb


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tb.Testbed]:
    """Two nodes on 127.0.6.1-2, torn down with this module."""
    folder = tmp_path_factory.mktemp("pair")
    with tb.up(2, folder, base_address="127.0.6.1", cores=4, labels=("a", "b")) as bed:
        yield bed


# --- testbed ---------------------------------------------------------------


def test_up_writes_inventory_config_and_state(pair: tb.Testbed) -> None:
    d = pair.directory
    assert [h.name for h in pair.hosts] == ["127.0.6.1", "127.0.6.2"]
    assert load_inventory(pair.inventory_path) == pair.hosts
    assert stat.S_IMODE(pair.inventory_path.stat().st_mode) == 0o644
    for host in pair.hosts:
        assert host.port == 22  # root, and 22 was free on these addresses
        assert host.identity_file == str(d / "id_ed25519")
        assert host.known_hosts == str(d / "known_hosts")
        assert host.root_dir == str(d / "nodes" / host.name) and Path(host.root_dir).is_dir()
        assert (host.cores, host.labels, host.matches("B")) == (4, ["a", "b"], True)
    state = json.loads((d / "testbed.json").read_text())
    assert {n["address"]: n["pid"] for n in state["nodes"]} == pair.pids
    assert all(psutil.pid_exists(pid) for pid in pair.pids.values())


def test_openssh_client_uses_the_generated_ssh_config(pair: tb.Testbed) -> None:
    out = subprocess.run(
        ["ssh", "-F", str(pair.ssh_config_path), "-o", "BatchMode=yes", "127.0.6.2", "echo", "hi"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr


def test_kill_and_start_a_node(pair: tb.Testbed) -> None:
    host = pair.hosts[1]
    live = SshTransport(host)
    assert live.run(["true"]).exit_code == 0
    pair.kill(host.name)
    with pytest.raises(NodeConnectionError, match="refused"):
        SshTransport(host).run(["true"])
    with pytest.raises(NodeConnectionError):  # its sessions died with it
        live.run(["true"])
    pair.start(host.name)
    state = json.loads((pair.directory / "testbed.json").read_text())
    assert state["nodes"][1]["pid"] == pair.pids[host.name]
    assert live.run(["echo", "back"]).stdout == "back\n"  # reconnects after the drop
    live.close()


def test_second_testbed_on_a_taken_address_picks_a_free_port(pair: tb.Testbed, tmp_path: Path) -> None:
    with tb.up(1, tmp_path, base_address="127.0.6.1") as other:
        (host,) = other.hosts
        assert host.port != 22
        assert f"[127.0.6.1]:{host.port} ssh-ed25519 " in (tmp_path / "known_hosts").read_text()
        with SshTransport(host) as transport:
            assert transport.run(["echo", "ok"]).stdout == "ok\n"


def test_down_stops_every_sshd_and_tolerates_dead_ones(tmp_path: Path) -> None:
    bed = tb.up(2, tmp_path, base_address="127.0.6.5", port=2202)
    assert [h.port for h in bed.hosts] == [2202, 2202]
    bed.kill("127.0.6.6")
    tb.down(tmp_path)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in bed.pids.values())
    assert not (tmp_path / "testbed.json").exists()
    tb.down(tmp_path)  # already down: nothing to do


def test_up_reports_sshd_failure(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: sshd cannot bind it.
    with pytest.raises(HpcbatchError, match=r"sshd for 192\.0\.2\.1:2222 exited: .*Cannot assign"):
        tb.up(1, tmp_path, base_address="192.0.2.1", port=2222)
    assert not (tmp_path / "testbed.json").exists()


# --- inventory -------------------------------------------------------------


def test_inventory_defaults_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "inv").mkdir()
    file = tmp_path / "inv" / "hosts.yaml"
    file.write_text(
        "defaults:\n  user: batch\n  cores: 8\n  identity_file: keys/id\n  labels: [std]\n"
        "hosts:\n"
        "  - address: 10.0.0.1\n"
        "  - {name: gpu1, address: 10.0.0.2, port: 2222, labels: [GPU], known_hosts: /abs/kh,"
        " ssh_config: ~/cfg}\n"
    )
    a, b = load_inventory(file)
    assert (a.name, a.user, a.cores, a.port, a.labels) == ("10.0.0.1", "batch", 8, 22, ["std"])
    assert a.identity_file == str(tmp_path / "inv" / "keys" / "id")
    assert (b.name, b.port, b.labels) == ("gpu1", 2222, ["GPU"])
    assert (b.known_hosts, b.ssh_config) == ("/abs/kh", "~/cfg")  # absolute and ~ paths kept
    assert a.matches("any") and a.matches("ANY") and a.matches("Std") and not a.matches("gpu")
    assert b.matches("gpu") and not b.matches("std")


def test_inventory_bare_list_and_round_trip(tmp_path: Path) -> None:
    hosts = parse_inventory("- {address: h1}\n- {address: h2, provider: local, memory_gb: 2.5}\n", "<text>")
    assert [h.name for h in hosts] == ["h1", "h2"] and hosts[1].provider == "local"
    dump_inventory(hosts, tmp_path / "out.yaml")
    assert load_inventory(tmp_path / "out.yaml") == hosts
    assert parse_inventory("", "<empty>") == []


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("hosts: [{address: a}, {address: b, prot: 3}]", InvalidPropertyValueError,
         "hosts[1].prot is invalid: unknown field; valid fields are: name, address, port"),
        ("hosts: [{address: a}, {address: b}, {address: c, port: x}]", InvalidPropertyValueError,
         "hosts[2].port is invalid: Input should be a valid integer"),
        ("defaults: {cores: 0}\nhosts: [{address: a}]", InvalidPropertyValueError,
         "defaults.cores is invalid: Input should be greater than or equal to 1 (host a, in inv.yaml)"),
        ("hosts: [{name: n1}]", InvalidPropertyValueError, "hosts[0].address is invalid: Field required"),
        ("hosts: [{address: 'a b'}]", InvalidPropertyValueError, "hosts[0].name is invalid"),
        ("hosts: [{address: a, provider: k8s}]", InvalidPropertyValueError, "hosts[0].provider"),
        ("hosts: [{name: Node1, address: a}, {name: node1, address: b}]", BadRequestError,
         "duplicate host name 'node1' (hosts[0] and hosts[1])"),
        ("defaults: {address: x}\nhosts: []", InvalidPropertyValueError, "defaults.address"),
        ("hosts: [a: b: c]", BadRequestError, "not valid YAML"),
        ("pools: []", BadRequestError, "must be a mapping with the keys"),
    ],
)
def test_inventory_errors_name_the_field(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        parse_inventory(text, "inv.yaml")
    assert message in str(info.value)
