"""The providers' transports against real sshd daemons (the session ``testbed`` on 127.0.5.x).

:mod:`hpcbatch.providers.ssh`, :mod:`hpcbatch.providers.local`, and the
registry's :func:`~hpcbatch.providers.registry.open_transport`.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from hpcbatch.batch.errors import NodeConnectionError
from hpcbatch.providers.base import CommandResult, Transport, run_parallel
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.local import LocalTransport
from hpcbatch.providers.registry import open_transport
from hpcbatch.providers.ssh import SshTransport
from hpcbatch.testing.testbed import Testbed


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def wait_for_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout_s} s")


@pytest.fixture
def ssh(testbed: Testbed) -> SshTransport:
    with SshTransport(testbed.hosts[0]) as transport:
        yield transport


# --- run -------------------------------------------------------------------


def test_run_passes_argv_verbatim(ssh: SshTransport) -> None:
    assert ssh.run(["echo", "a b;c"]) == CommandResult(0, "a b;c\n", "")
    tricky = ["$HOME", "`id`", "'q'", '"d"', "*", "a\nb", ""]
    result = ssh.run(["printf", "%s|", *tricky])
    assert result.stdout == "|".join(tricky) + "|"


def test_exit_code_and_stderr(ssh: SshTransport) -> None:
    result = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert result == CommandResult(7, "out\n", "err\n")
    assert ssh.run(["no-such-program-hpcbatch"]).exit_code == 127


def test_stdin_and_large_output(ssh: SshTransport) -> None:
    assert ssh.run(["cat"], stdin=b"hello\n").stdout == "hello\n"
    assert ssh.run(["cat"]).stdout == ""  # stdin closed: no hang
    big = os.urandom(3_000_000).hex().encode()  # 6 MB in and out at once
    result = ssh.run(["cat"], stdin=big, timeout_s=60)
    assert result.exit_code == 0 and result.stdout.encode() == big


def test_run_timeout(ssh: SshTransport) -> None:
    started = time.monotonic()
    with pytest.raises(NodeConnectionError, match=r"did not finish within 0\.5 s"):
        ssh.run(["sleep", "5"], timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert ssh.run(["true"]).exit_code == 0  # the connection is still usable


def test_one_connection_for_many_commands_and_threads(ssh: SshTransport) -> None:
    ssh.run(["true"])
    first = ssh.connection.transport
    for i in range(10):
        assert ssh.run(["echo", str(i)]).stdout == f"{i}\n"
    results: list[CommandResult] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(ssh.run(["echo", str(i)])))
        for i in range(24)  # more than MAX_SESSIONS at once
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(r.stdout) for r in results) == list(range(24))
    assert ssh.connection.transport is first


# --- put_bytes / spawn_detached -------------------------------------------


def test_put_bytes(ssh: SshTransport, testbed: Testbed) -> None:
    target = Path(testbed.hosts[0].root_dir) / "put" / "deep" / "file.bin"
    data = bytes(range(256)) * 10
    ssh.put_bytes(data, str(target), mode=0o640)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    ssh.put_bytes(b"new", str(target))
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_put_bytes_expands_tilde_on_the_host(ssh: SshTransport) -> None:
    folder = f".cache/hpcbatch-test-{uuid.uuid4().hex}"
    home = ssh.run(["sh", "-c", 'echo "$HOME"']).stdout.strip()
    try:
        ssh.put_bytes(b"x", f"~/{folder}/f.txt")
        assert Path(home, folder, "f.txt").read_bytes() == b"x"
    finally:
        subprocess.run(["rm", "-rf", str(Path(home, folder))], check=True)


@pytest.mark.parametrize("provider", ["ssh", "local"])
def test_spawn_detached_survives_close(testbed: Testbed, provider: str) -> None:
    host = testbed.hosts[1].model_copy(update={"provider": provider})
    root = Path(host.root_dir) / f"spawn-{provider}"
    pid_file, log = root / "pid", root / "logs" / "out.log"
    script = f'echo started "$1"; echo $$ > {pid_file}; exec sleep 60'
    with open_transport(host) as transport:
        transport.spawn_detached(["sh", "-c", script, "sh", "a b;c"], log_path=str(log))
    pid = int(wait_for_file(pid_file))
    try:
        time.sleep(0.5)  # the connection is closed: the process must live on
        proc = psutil.Process(pid)
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        assert os.getsid(pid) != os.getsid(0)
        assert wait_for_file(log) == "started a b;c\n"
    finally:
        psutil.Process(pid).kill()


# --- failures --------------------------------------------------------------


def test_refused_port(testbed: Testbed) -> None:
    port = free_port("127.0.5.1")
    host = testbed.hosts[0].model_copy(update={"name": "wrong-port", "port": port})
    with pytest.raises(NodeConnectionError) as info:
        SshTransport(host).run(["true"])
    assert info.value.host == "wrong-port"
    assert f"cannot connect to 127.0.5.1:{port}: Connection refused" in str(info.value)
    assert str(info.value).startswith("host wrong-port:")


def known_name(host: Host) -> str:
    """The host's name in known_hosts: ``addr``, or ``[addr]:port`` off port 22 (the
    session testbed's sshd takes another port when 22 is taken, e.g. by a second
    pytest worker's testbed on the same addresses)."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def test_unknown_host_key(testbed: Testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = testbed.hosts[0].model_copy(update={"known_hosts": str(empty)})
    with pytest.raises(NodeConnectionError) as info:
        SshTransport(host).run(["true"])
    assert f"host key for {known_name(host)} (ssh-ed25519) is not in {empty}" in info.value.reason
    lax = host.model_copy(update={"strict_host_key_checking": False})
    with SshTransport(lax) as transport:
        assert transport.run(["echo", "ok"]).stdout == "ok\n"


def test_wrong_host_key(testbed: Testbed, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other = (tmp_path / "k.pub").read_text()
    known = tmp_path / "known_hosts"
    known.write_text(f"{known_name(testbed.hosts[0])} {other}")
    host = testbed.hosts[0].model_copy(update={"known_hosts": str(known)})
    with pytest.raises(NodeConnectionError, match="does not match"):
        SshTransport(host).run(["true"])


def test_wrong_key_fails_authentication(testbed: Testbed, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    host = testbed.hosts[0].model_copy(update={"identity_file": str(tmp_path / "k")})
    where = re.escape(f"{host.address}:{host.port}")
    with pytest.raises(NodeConnectionError, match=rf"authentication as \w+@{where} failed"):
        SshTransport(host).run(["true"])


def test_missing_ssh_config_file(testbed: Testbed, tmp_path: Path) -> None:
    host = testbed.hosts[0].model_copy(update={"ssh_config": str(tmp_path / "nope")})
    with pytest.raises(NodeConnectionError, match=r"ssh config file .*nope does not exist"):
        SshTransport(host).run(["true"])


# --- ssh config and ProxyJump ----------------------------------------------


def test_proxyjump_from_ssh_config(testbed: Testbed, tmp_path: Path) -> None:
    jump, target = testbed.hosts[1], testbed.hosts[2]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host behind-jump\n    HostName {target.address}\n    Port {target.port}\n"
        f"    ProxyJump {jump.name}\n\n"
        + testbed.ssh_config_path.read_text()
        + f"Host *\n    IdentityFile {target.identity_file}\n"
        f"    UserKnownHostsFile {target.known_hosts}\n"
    )
    # Everything but the alias comes from the ssh config file (user, key, known_hosts).
    host = Host(address="behind-jump", ssh_config=str(config))
    with SshTransport(host) as transport:
        result = transport.run(["sh", "-c", 'echo "$SSH_CONNECTION"'])
        gateway = transport.connection.gateway
        assert gateway.host == jump.address and gateway.is_connected
        client_address, client_port, server_address, server_port = result.stdout.split()
        assert (server_address, int(server_port)) == (target.address, target.port)
        # The TCP connection reaching the target belongs to the jump host's sshd.
        # Matched by its whole address pair and state: an earlier test's closed
        # connection on the same ports may linger in TIME_WAIT, owned by no process.
        owners = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED
            and c.laddr and (c.laddr.ip, c.laddr.port) == (client_address, int(client_port))
            and c.raddr and (c.raddr.ip, c.raddr.port) == (target.address, target.port)
        }
        jump_sshd = psutil.Process(testbed.pids[jump.name])
        assert owners and owners <= {p.pid for p in jump_sshd.children(recursive=True)}


def test_jump_host_failure_names_the_jump_host(testbed: Testbed, tmp_path: Path) -> None:
    target = testbed.hosts[2]
    port = free_port("127.0.5.1")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host behind-dead-jump\n    HostName {target.address}\n    ProxyJump 127.0.5.1:{port}\n"
    )
    host = target.model_copy(update={"name": "t", "address": "behind-dead-jump", "ssh_config": str(config)})
    with pytest.raises(NodeConnectionError) as info:
        SshTransport(host).run(["true"])
    assert info.value.reason == f"jump host 127.0.5.1: cannot connect to 127.0.5.1:{port}: Connection refused"


# --- local provider, open_transport, run_parallel ---------------------------


def test_local_transport(tmp_path: Path) -> None:
    host = Host(name="here", address="localhost", provider="local")
    transport = open_transport(host)
    assert isinstance(transport, LocalTransport) and isinstance(transport, Transport)
    with transport:
        assert transport.run(["echo", "a b;c"]) == CommandResult(0, "a b;c\n", "")
        assert transport.run(["cat"], stdin=b"in").stdout == "in"
        assert transport.run(["sh", "-c", "exit 4"]).exit_code == 4
        assert transport.run(["no-such-program-hpcbatch"]).exit_code == 127
        with pytest.raises(NodeConnectionError, match=r"did not finish within 0\.2 s"):
            transport.run(["sleep", "5"], timeout_s=0.2)
        transport.put_bytes(b"data", str(tmp_path / "a" / "b"), mode=0o644)
        assert (tmp_path / "a" / "b").read_bytes() == b"data"
        assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o644


def test_open_transport_picks_ssh(testbed: Testbed) -> None:
    with open_transport(testbed.hosts[0]) as transport:
        assert isinstance(transport, SshTransport) and isinstance(transport, Transport)


def test_run_parallel_mixes_results_and_errors(testbed: Testbed) -> None:
    dead = testbed.hosts[0].model_copy(update={"name": "dead", "port": free_port("127.0.5.1")})

    def hostname(host: Host) -> str:
        with open_transport(host) as transport:
            return transport.run(["sh", "-c", 'echo "$SSH_CONNECTION"']).stdout.split()[2]

    results = run_parallel([*testbed.hosts, dead], hostname)
    assert list(results) == [h.name for h in testbed.hosts] + ["dead"]
    for host in testbed.hosts:
        assert results[host.name] == host.address
    assert isinstance(results["dead"], NodeConnectionError)
    assert "refused" in str(results["dead"])
    assert run_parallel([], hostname) == {}
