"""A node's start in one command: ``NodeProvider.launch`` (``python -m hpcbatch.node --launch``).

Against the session testbed (real sshd) and this machine (local provider): the
probe, identity set-up, pool trust, files and node process happen in one
command on the host; each failure names the host and its cause.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from hpcbatch.batch.errors import NodeConnectionError
from hpcbatch.execution.pki import ensure_tls, issue_node_credentials
from hpcbatch.providers.base import (
    ROOT_MARKER,
    CommandResult,
    LaunchSpec,
    NodeLaunchError,
    NodeProvider,
    PoolTrust,
    TransportProvider,
    TrustSpec,
)
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.registry import provider_for
from hpcbatch.providers.trust import pool_ssh_key
from hpcbatch.testing.testbed import Testbed

# A config the node process cannot serve (no node_id): once launched, it logs a KeyError
# and exits, which shows that the forked child became the node process.
CONFIG = {"tls": {"ca_file": "secrets/tls/ca.pem"}, "env": {}}
FILES = {"secrets/tls/ca.pem": b"ca-bytes"}
IDENTITY = {"accounts": [], "inter_node": True}


def beside(root_dir: str, sub: str) -> Path:
    """A folder next to a testbed host's node root, never inside it: later tests on the
    session testbed use that root, which must hold only what hpcbatch put there."""
    root = Path(root_dir)
    return root.parent / f"{root.name}-{sub}"


def ssh_host(testbed: Testbed, index: int, sub: str, **update: typing.Any) -> Host:
    base = testbed.hosts[index]
    return base.model_copy(update={"root_dir": str(beside(base.root_dir, sub)), **update})


def count_commands(provider: TransportProvider) -> list[list[str]]:
    """Record every command the provider runs on its host."""
    seen: list[list[str]] = []
    transport = provider.transport
    run = transport.run

    def counting(argv: Sequence[str], **kwargs: typing.Any) -> CommandResult:
        seen.append(list(argv))
        return run(argv, **kwargs)

    transport.run = counting  # type: ignore[method-assign]
    return seen


def wait_for_log(root: str, text: str) -> str:
    log = Path(root) / "node.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            break
        time.sleep(0.1)
    return log.read_text() if log.exists() else ""


def test_ssh_launch_does_everything_in_one_command(testbed: Testbed) -> None:
    host = ssh_host(testbed, 2, "launch-ok")
    provider = provider_for(host)
    assert isinstance(provider, TransportProvider)
    private, public = pool_ssh_key("launch-test")
    user = host.user or os.environ.get("USER") or "root"
    authorized = Path((host.authorized_keys or "%h/.ssh/authorized_keys")
                      .replace("%h", os.path.expanduser("~")).replace("%u", user))
    try:
        commands = count_commands(provider)
        launched = provider.launch(LaunchSpec(CONFIG, FILES, IDENTITY, TrustSpec(
            private, public, (host.address, "10.9.9.9"), "_azbatch")))
        assert len(commands) == 1 and commands[0][1:] == ["-m", "hpcbatch.node", "--launch"]
        root = launched.root_dir
        assert root == host.root_dir and (Path(root) / ROOT_MARKER).exists()
        # The testbed's roots are in pytest's 0700 folders: tasks share the agent's identity.
        assert launched.identity["switching"] is False and "reason" in launched.identity
        assert launched.trust_user is None
        ca = Path(root, "secrets", "tls", "ca.pem")
        assert ca.read_bytes() == b"ca-bytes" and stat.S_IMODE(ca.stat().st_mode) == 0o600
        config = json.loads(Path(root, "node.json").read_text())
        assert stat.S_IMODE(Path(root, "node.json").stat().st_mode) == 0o600
        assert config["root_dir"] == root and config["user_switching"] is False
        assert config["tls"] == {"ca_file": f"{root}/secrets/tls/ca.pem"}
        # The pool key: private copy 0600, public key authorised restrict,from= the pool.
        assert isinstance(launched.trust, PoolTrust)
        assert launched.trust.key_path == f"{root}/ssh/id_pool" and launched.trust.user == user
        assert Path(launched.trust.key_path).read_text() == private
        assert stat.S_IMODE(Path(launched.trust.key_path).stat().st_mode) == 0o600
        name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        assert launched.trust.host_key and launched.trust.host_key.startswith(f"{name} ssh-")
        assert authorized.read_text().splitlines().count(
            f'restrict,from="10.9.9.9,{host.address}" {public}') == 1
        # The node process is the launch's own forked child, detached, logging to node.log.
        assert "KeyError" in wait_for_log(root, "KeyError")
    finally:
        provider.revoke_trust(public, root_dir=host.root_dir)
        provider.close()
    assert public.split()[1] not in authorized.read_text()


@pytest.mark.parametrize("way", ["one command", "step by step"])
def test_local_launch_starts_a_node_process_that_check_and_stop_find(way: str,
                                                                     tmp_path: Path) -> None:
    # A node with its own certificate: it keeps trying the (absent) scheduler. "step by step"
    # is NodeProvider.launch's default (prepare, setup_identity, start), for other providers.
    host = Host(name="here", address="127.0.0.1", provider="local", python=sys.executable,
                root_dir=str(tmp_path / "root"))
    provider = provider_for(host)
    creds = issue_node_credentials(ensure_tls(tmp_path / "state"), "p", "n@1")
    files = {f"secrets/tls/{name}": data for name, data in (
        ("ca.pem", creds.ca_pem), ("node.pem", creds.cert_pem), ("node.key", creds.key_pem))}
    config = {"node_id": "n", "worker_name": "n@1", "pool_id": "p", "account_name": "a",
              "account_url": "u", "scheduler_address": "tls://127.0.0.1:9", "nthreads": 1,
              "death_timeout_s": 60, "tls": {"ca_file": "secrets/tls/ca.pem",
                                             "cert_file": "secrets/tls/node.pem",
                                             "key_file": "secrets/tls/node.key"}}
    spec = LaunchSpec(config, files, IDENTITY)
    launched = (provider.launch(spec) if way == "one command"
                else NodeProvider.launch(provider, spec))
    root = launched.root_dir
    try:
        assert launched.trust is None  # the local provider has no SSH trust
        config = json.loads(Path(root, "node.json").read_text())
        assert config["root_dir"] == root and config["user_switching"] is False
        assert config["tls"]["cert_file"] == f"{root}/secrets/tls/node.pem"
        deadline = time.monotonic() + 30
        while not provider.check(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert provider.check(root) is True
        proc = psutil.Process(int(Path(root, "node.pid").read_text()))
        assert "hpcbatch.node" in " ".join(proc.cmdline())
        assert proc.pid == os.getsid(proc.pid)  # its own session, out of the launch's
    finally:
        assert provider.stop(root) is True
    assert provider.check(root) is False


def test_launch_failures_name_the_host_and_the_cause(testbed: Testbed, tmp_path: Path) -> None:
    # No interpreter there.
    host = ssh_host(testbed, 2, "launch-nopython", python="/no/python3")
    with pytest.raises(NodeConnectionError, match=rf"host {host.name}: /no/python3 cannot run "
                                                  r"hpcbatch on this host \(exit code 127\)"):
        provider_for(host).launch(LaunchSpec(CONFIG, FILES, IDENTITY))
    # A node root that is somebody else's folder.
    foreign = beside(testbed.hosts[2].root_dir, "launch-foreign")
    foreign.mkdir(parents=True, exist_ok=True)
    (foreign / "thesis.tex").write_text("x")
    host = ssh_host(testbed, 2, "launch-foreign")
    with pytest.raises(NodeConnectionError, match=rf"host {host.name}: .*root_dir {foreign} "
                                                  r"holds files hpcbatch did not put there"):
        provider_for(host).launch(LaunchSpec(CONFIG, FILES, IDENTITY))
    assert not (foreign / "node.json").exists()
    # A keys file that cannot be written: the trust step fails after the root was made.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    host = ssh_host(testbed, 2, "launch-badkeys", authorized_keys=str(blocker / "keys"))
    private, public = pool_ssh_key("launch-bad")
    with pytest.raises(NodeLaunchError, match=rf"host {host.name}: cannot authorise the pool's "
                                              rf"SSH key in {blocker}/keys: .+") as info:
        provider_for(host).launch(LaunchSpec(CONFIG, FILES, IDENTITY, TrustSpec(
            private, public, (host.address,), "_azbatch")))
    assert info.value.root_dir == host.root_dir
    assert not Path(host.root_dir, "node.json").exists()  # nothing started
