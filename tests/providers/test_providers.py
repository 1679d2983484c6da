"""Node providers: the registry picks each one; each starts, checks, stops and wipes nodes.

The ssh provider runs against the session testbed (real sshd on 127.0.5.x); the
local provider against this machine. A "node process" here is a real process
whose command line names ``hpcbatch.node`` and whose pid is in ``node.pid``,
as :mod:`hpcbatch.execution.node` writes it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import typing
from pathlib import Path

import psutil
import pytest

from hpcbatch.batch.errors import InvalidPropertyValueError, NodeConnectionError
from hpcbatch.providers.base import ROOT_MARKER, NodeProvider, PoolTrust, Transport
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.local import LocalProvider, LocalTransport
from hpcbatch.providers.registry import (
    PROVIDERS,
    offers_remote_login,
    open_transport,
    provider_class,
    provider_for,
)
from hpcbatch.providers.ssh import SshProvider, SshTransport
from hpcbatch.providers.trust import pool_ssh_key
from hpcbatch.testing.testbed import Testbed


def local_host(root: Path, **fields: typing.Any) -> Host:
    return Host(name="here", address="127.0.0.1", provider="local", python=sys.executable,
                root_dir=str(root), **fields)


# --- the registry ------------------------------------------------------------


def test_registry_picks_the_ssh_provider(testbed: Testbed) -> None:
    provider = provider_for(testbed.hosts[0])
    assert type(provider) is SshProvider and isinstance(provider, NodeProvider)
    assert provider.host is testbed.hosts[0]
    assert isinstance(provider.transport, SshTransport)  # type: ignore[attr-defined]
    with open_transport(testbed.hosts[0]) as transport:
        assert isinstance(transport, SshTransport) and isinstance(transport, Transport)


def test_registry_picks_the_local_provider(tmp_path: Path) -> None:
    provider = provider_for(local_host(tmp_path))
    assert type(provider) is LocalProvider and isinstance(provider, NodeProvider)
    assert isinstance(provider.transport, LocalTransport)  # type: ignore[attr-defined]
    with open_transport(local_host(tmp_path)) as transport:
        assert isinstance(transport, LocalTransport)


def test_registry_covers_exactly_the_inventory_providers() -> None:
    allowed = typing.get_args(Host.model_fields["provider"].annotation)
    assert sorted(PROVIDERS) == sorted(allowed) == ["local", "simulated", "ssh"]
    assert all(cls.name == name for name, cls in PROVIDERS.items())
    with pytest.raises(InvalidPropertyValueError, match="valid providers are local, simulated, ssh"):
        provider_class("k8s")


def test_remote_login_is_the_providers_answer(tmp_path: Path) -> None:
    assert offers_remote_login(Host(address="h")) is True
    assert offers_remote_login(local_host(tmp_path)) is False
    assert offers_remote_login({"address": "h", "provider": "local"}) is False
    assert offers_remote_login({"address": "h"}) is True  # the field's default: ssh


def test_mpi_launchers_reach_local_nodes_through_locallaunch(testbed: Testbed,
                                                             tmp_path: Path) -> None:
    assert provider_for(local_host(tmp_path)).local_launch_python == sys.executable
    assert provider_for(testbed.hosts[0]).local_launch_python is None


# --- node process: prepare, check, stop, read_log, wipe ----------------------


def fake_node_process(root: Path) -> psutil.Process:
    """A detached process that looks like a node (``hpcbatch.node`` in its argv), with a
    child in its own session, recorded in ``root/node.pid``.

    Started through a shell that exits at once, as a provider starts a node, so
    that this test process is not its parent (nor left to reap it).
    """
    script = ("import subprocess, time; subprocess.Popen(['sleep', '60'], "
              "start_new_session=True); time.sleep(60)")
    out = subprocess.run(
        ["sh", "-c", 'setsid "$@" >/dev/null 2>&1 </dev/null & echo $!', "sh",
         sys.executable, "-c", script, "hpcbatch.node"],
        capture_output=True, text=True, check=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "node.pid").write_text(out.stdout.strip())
    node = psutil.Process(int(out.stdout))
    deadline = time.monotonic() + 10
    while not node.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return node


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_prepare_check_stop_read_log_wipe(kind: str, testbed: Testbed, tmp_path: Path) -> None:
    if kind == "local":
        host = local_host(tmp_path / "root")
    else:
        base = testbed.hosts[1]
        host = base.model_copy(update={"root_dir": str(Path(base.root_dir) / "provider-test")})
    provider = provider_for(host)
    try:
        root = provider.prepare()
        assert root == host.root_dir and os.path.isabs(root)
        assert provider.check(root) is False and provider.stop(root) is False  # no node yet
        node = fake_node_process(Path(root))
        child = node.children()[0]
        assert provider.check(root) is True
        assert provider.stop(root) is True
        for p in (node, child):  # the tree is gone, the child in its own session too
            p.wait(timeout=10)  # psutil.TimeoutExpired if it lives on
            assert not p.is_running()
        assert provider.check(root) is False
        (Path(root) / "node.log").write_text("".join(f"line {i}\n" for i in range(9)))
        assert provider.read_log(root, lines=2) == "line 7\nline 8\n"
        (Path(root) / "sub").mkdir()
        (Path(root) / ".hidden").write_text("x")
        provider.wipe(root)
        assert Path(root).is_dir() and [p.name for p in Path(root).iterdir()] == [ROOT_MARKER]
    finally:
        provider.close()


def test_start_writes_files_and_config_and_spawns_the_node(tmp_path: Path) -> None:
    # python -m hpcbatch.node with a config it cannot use exits at once: its
    # log then shows the provider started exactly that command, detached.
    host = local_host(tmp_path / "root")
    provider = provider_for(host)
    root = provider.prepare()
    provider.start(root, {"root_dir": root}, {"tls/ca.pem": b"ca"})
    assert (Path(root) / "tls" / "ca.pem").read_bytes() == b"ca"
    assert stat.S_IMODE((Path(root) / "tls" / "ca.pem").stat().st_mode) == 0o600
    assert (Path(root) / "node.json").read_text() == f'{{"root_dir": "{root}"}}'
    deadline = time.monotonic() + 30
    while "KeyError" not in provider.read_log(root, lines=50) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "KeyError" in provider.read_log(root, lines=50)  # the config lacks node_id


def test_prepare_names_a_missing_interpreter(testbed: Testbed, tmp_path: Path) -> None:
    for host in (local_host(tmp_path, ).model_copy(update={"python": "/no/python3"}),
                 testbed.hosts[0].model_copy(update={"python": "/no/python3"})):
        with pytest.raises(NodeConnectionError, match=r"/no/python3 cannot run hpcbatch on this "
                                                      r"host \(exit code 127\)"):
            provider_for(host).prepare()


# --- pool trust ---------------------------------------------------------------


def test_ssh_provider_installs_and_revokes_pool_trust(testbed: Testbed) -> None:
    host = testbed.hosts[2]
    provider = provider_for(host)
    private, public = pool_ssh_key("trust-test")
    root = provider.prepare()
    user = host.user or os.environ.get("USER") or "root"
    authorized = Path((host.authorized_keys or "%h/.ssh/authorized_keys")
                      .replace("%h", os.path.expanduser("~")).replace("%u", user))
    line = f'restrict,from="{host.address}" {public}'
    try:
        trust = provider.install_trust(root, private, public, allowed_from=[host.address])
        assert isinstance(trust, PoolTrust)
        assert trust.key_path == provider.pool_key_path(root) == f"{root}/ssh/id_pool"
        assert Path(trust.key_path).read_text() == private
        assert stat.S_IMODE(Path(trust.key_path).stat().st_mode) == 0o600
        name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        assert trust.host_key is not None and trust.host_key.startswith(f"{name} ssh-ed25519 ")
        assert trust.user == user
        assert authorized.read_text().splitlines().count(line) == 1
        provider.install_trust(root, private, public, allowed_from=[host.address])  # idempotent
        assert authorized.read_text().splitlines().count(line) == 1
        provider.update_trust(public, allowed_from=[host.address, "10.9.9.9"])  # membership
        assert authorized.read_text().splitlines().count(
            f'restrict,from="10.9.9.9,{host.address}" {public}') == 1
        assert public.split()[1] not in authorized.read_text().replace(
            f'restrict,from="10.9.9.9,{host.address}" {public}', "")
    finally:
        provider.revoke_trust(public, root_dir=root)
        provider.close()
    assert public.split()[1] not in authorized.read_text()
    assert not Path(root, "ssh", "id_pool").exists()


def test_local_provider_needs_no_pool_trust(tmp_path: Path) -> None:
    provider = provider_for(local_host(tmp_path))
    private, public = pool_ssh_key("local-trust")
    assert provider.install_trust(str(tmp_path), private, public, allowed_from=["x"]) is None
    assert provider.pool_key_path(str(tmp_path)) is None
    provider.revoke_trust(public)  # nothing to do, no error
    assert not (tmp_path / "ssh").exists()
