"""Pool trust follows membership (docs/security.md, "Pool trust follows membership").

On the sshd testbed (each node reads its own authorized keys file,
:func:`hpcbatch.testing.testbed.keys_file`): the pool key is installed as a
``restrict,from="<the pool's node addresses>"`` line; a node that leaves the
pool (resize down, remove, pool delete) loses the line and its private key
copy, and the remaining nodes stop accepting it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.identity import POOL_AUTO_USER
from hpcbatch.client.sdk import BatchClient
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
    with reachable_dir() as tmp, service_on_testbed(tmp, 3, "127.0.42.1") as (client, tb, _):
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
