"""Pool trust follows membership (docs/security.md, "Pool trust follows membership").

On the sshd testbed (each node reads its own authorized keys file,
:func:`hpcbatch.testing.testbed.keys_file`): the pool key is installed as a
``restrict,from="<the pool's node addresses>"`` line; a node that leaves the
pool (resize down, remove, pool delete) loses the line and its private key
copy, and the remaining nodes stop accepting it. A lost node is dropped from the
others' lists until it is provisioned again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.identity import POOL_AUTO_USER
from hpcbatch.client.sdk import BatchClient
from hpcbatch.core.pool_keys import source_addresses
from hpcbatch.providers.trust import authorize_argv, authorized_line, revoke_argv
from hpcbatch.testing.testbed import keys_file
from tests.helpers import reachable_dir, service_on_testbed, wait_until

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0,
                               reason="user switching needs root (the testbed runs as root)")


def _keys(bed: Any, address: str, user: str = POOL_AUTO_USER) -> list[str]:
    path = Path(keys_file(bed.directory, address).replace("%u", user))
    return path.read_text().splitlines() if path.exists() else []


def _pool_lines(bed: Any, address: str, pool_id: str) -> list[str]:
    return [line for line in _keys(bed, address) if line.endswith(f"hpcbatch-pool-{pool_id}")]


def _from(line: str) -> set[str]:
    match = re.match(r'restrict,from="([^"]*)" ssh-ed25519 ', line)
    assert match, line
    return set(match.group(1).split(","))


def _key_copy(bed: Any, address: str) -> Path:
    return bed.directory / "nodes" / address / "ssh" / "id_pool"


@pytest.fixture(scope="module")
def bed() -> Iterator[tuple[BatchClient, Any]]:
    if os.geteuid() != 0:
        pytest.skip("user switching needs root (the testbed runs as root)")
    with reachable_dir() as tmp, service_on_testbed(tmp, 3, "127.0.42.1") as (client, tb, th):
        # These tests watch a lost node until a reboot: no restart by itself meanwhile.
        th.runtime.service.pool_manager.health.auto_recover = False
        yield client, tb


def test_authorized_line_is_restricted_to_the_pools_addresses() -> None:
    line = authorized_line("ssh-ed25519 AAAA hpcbatch-pool-p", ["10.0.0.2", "10.0.0.1", "10.0.0.1"])
    assert line == 'restrict,from="10.0.0.1,10.0.0.2" ssh-ed25519 AAAA hpcbatch-pool-p'
    for bad in ([], ['10.0.0.1" ssh-rsa EVIL'], ["a,b"], ["a b"]):
        with pytest.raises(ValueError):
            authorized_line("ssh-ed25519 AAAA c", bad)
    # A file in the user's home is written by the user itself, never by root.
    assert authorize_argv("ssh-ed25519 AAAA c", ["h"], user="_azbatch")[:4] == [
        "runuser", "-u", "_azbatch", "--"]
    assert revoke_argv("ssh-ed25519 AAAA c", user="u", keys_file="/etc/keys/%u")[:2] == [
        "sh", "-c"]


@ROOT_ONLY
def test_shrinking_a_pool_takes_the_key_from_the_node_that_left(bed) -> None:
    client, tb = bed
    client.create_pool({"id": "trust", "vmSize": "testbed", "targetDedicatedNodes": 3,
                        "enableInterNodeCommunication": True})
    nodes = client.wait_for_pool("trust", timeout_s=120)
    addresses = {n.ip_address for n in nodes}
    assert len(addresses) == 3 and all(n.state == "idle" for n in nodes)
    for address in addresses:
        (line,) = _pool_lines(tb, address, "trust")
        assert _from(line) == addresses  # restrict,from= the pool's nodes
        assert _key_copy(tb, address).exists()

    client.resize_pool("trust", 2)
    wait_until(lambda: len(client.list_nodes("trust")) == 2, what="the pool to shrink")
    remaining = {n.ip_address for n in client.list_nodes("trust")}
    (gone,) = addresses - remaining
    assert _pool_lines(tb, gone, "trust") == []  # no longer accepted on the node that left
    assert not _key_copy(tb, gone).exists()  # and its copy of the private key is gone
    for address in remaining:
        (line,) = wait_until(lambda a=address: [ln for ln in _pool_lines(tb, a, "trust")
                                                if _from(ln) == remaining],
                             what=f"the from= list on {address} to drop {gone}")
        assert line.startswith('restrict,from="')
        assert _key_copy(tb, address).exists()

    # Grow again: the joining node is added to every node's from= list.
    client.resize_pool("trust", 3)
    client.wait_for_pool("trust", timeout_s=120)
    for address in addresses:
        wait_until(lambda a=address: [ln for ln in _pool_lines(tb, a, "trust")
                                      if _from(ln) == addresses],
                   what=f"the from= list on {address} to name every node")

    node = min(remaining)
    client.remove_nodes("trust", [node])  # "Pool - Remove Nodes"
    wait_until(lambda: node not in {n.ip_address for n in client.list_nodes("trust")},
               what="the node to leave")
    assert _pool_lines(tb, node, "trust") == [] and not _key_copy(tb, node).exists()

    client.delete_pool("trust")
    wait_until(lambda: all(not _pool_lines(tb, a, "trust") for a in addresses),
               what="the pool key to be gone from every node")
    assert not any(_key_copy(tb, a).exists() for a in addresses)


@ROOT_ONLY
def test_a_lost_node_is_no_longer_accepted_and_loses_the_key(bed) -> None:
    client, tb = bed
    client.create_pool({"id": "lossy", "vmSize": "testbed", "targetDedicatedNodes": 2,
                        "enableInterNodeCommunication": True})
    nodes = client.wait_for_pool("lossy", timeout_s=120)
    lost, kept = sorted(n.ip_address for n in nodes)
    root = tb.directory / "nodes" / lost
    stop = subprocess.run([sys.executable, "-m", "hpcbatch.node", "--stop", str(root)],
                          capture_output=True, check=False)
    assert stop.returncode == 0, stop.stderr  # its worker disappears: the node is lost
    wait_until(lambda: next(n for n in client.list_nodes("lossy") if n.id == lost).state
               == "unusable", what="the node to be lost")
    wait_until(lambda: [ln for ln in _pool_lines(tb, kept, "lossy") if _from(ln) == {kept}],
               what=f"{kept} to stop accepting {lost}")
    wait_until(lambda: not _pool_lines(tb, lost, "lossy") and not _key_copy(tb, lost).exists(),
               what=f"{lost} to lose the pool key")
    client.reboot_node("lossy", lost)  # back in the pool: trusted again
    client.wait_for_pool("lossy", timeout_s=120)
    for address in (lost, kept):
        wait_until(lambda a=address: [ln for ln in _pool_lines(tb, a, "lossy")
                                      if _from(ln) == {lost, kept}],
                   what=f"{address} to accept both nodes again")
    client.delete_pool("lossy")


def test_source_addresses_add_what_a_host_name_resolves_to() -> None:
    assert source_addresses("10.1.2.3") == ("10.1.2.3",)
    assert source_addresses("localhost")[0] == "localhost"
    assert "127.0.0.1" in source_addresses("localhost")
    assert source_addresses("no-such-host.invalid") == ("no-such-host.invalid",)
