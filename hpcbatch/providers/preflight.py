"""Preflight checks of inventory hosts (``hpcbatch hosts check``), run through their transports.

For each host, in order (a check that cannot run because an earlier one
failed is skipped):

``ssh``
    The host answers over its transport and its host key is known (for an
    ``ssh`` host: :class:`~hpcbatch.providers.ssh.SshTransport` with the
    inventory's known_hosts rules).
``python``
    The inventory's ``python`` runs and imports ``hpcbatch`` and ``distributed``.
``versions``
    Those versions equal the service's (a Dask worker must match its scheduler).
``disk``
    Free space under ``root_dir`` (or its nearest existing parent).
``launcher``
    The MPI launcher is found on the *task* ``PATH``: the host's own
    :func:`hpcbatch.execution.agent.base_environment` with the inventory ``env``
    computes it, so the check sees what a task sees.
``runtime``
    For a pool with a ``containerConfiguration`` only: a container runtime of
    its type (``docker``, ``podman``, ...) is found on the task ``PATH``, where
    the node finds the one that pulls the pool's images and runs its tasks'
    containers.
``shell``
    For an ``ssh`` host: how long its login shell takes to start a command
    (sshd runs every command as ``SHELL -c COMMAND``; bash then reads
    ``~/.bashrc`` even for a non-interactive command, zsh ``~/.zshenv``).
    Every node start and every MPI launch over SSH pays it; a set-up such as
    ``pyenv init`` or ``conda init`` there costs 0.1-0.5 s each time. Above
    :data:`SLOW_SHELL_S` the check warns (``warn``: the host still passes).
``ssh-to <peer>``
    For a pool with inter-node communication: the host reaches each other node
    of the pool with the pool's key, as its MPI launchers do.

Each failed check says what is wrong on which host and how to fix it; a
warning says what it costs and how to avoid it.
Hosts are checked in parallel (:func:`hpcbatch.providers.base.run_parallel`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.providers.base import CommandResult, run_parallel
from hpcbatch.providers.inventory import Host, ssh_target
from hpcbatch.providers.registry import open_transport

__all__ = ["CHECK_DIR", "MIN_FREE_BYTES", "SLOW_SHELL_S", "Check", "Expected", "check_hosts",
           "check_peers", "read_os_releases"]

MIN_FREE_BYTES = 1 << 30
"""Free bytes under a host's ``root_dir`` below which the ``disk`` check fails (1 GiB)."""

SLOW_SHELL_S = 0.1
"""Seconds a host's login shell may take to start a command before the ``shell`` check
warns (a bash without start-up work takes a few milliseconds)."""

SHELL_TIMEOUT_S = 10.0
"""Seconds one start of the login shell may take in the probe (a ``~/.bashrc`` that
waits for input never ends)."""

CHECK_DIR = ".hostcheck"
"""Folder of the node root where the pair check writes its ssh config."""

PROBE_TIMEOUT_S = 120.0
"""Seconds the probe may take on a host (it imports Dask, as a node does)."""

Status = Literal["pass", "warn", "fail", "skip"]

# Runs under the host's python; prints one JSON line. Argv: site env (JSON), root_dir, launcher,
# container runtimes to look for (JSON list, in order), seconds one login shell start may take.
# The login shell starts as sshd starts it for a command: ``SHELL -c``, in the home folder, with
# the session's variables but no SHLVL (bash reads ~/.bashrc when it is a top-level shell that
# sshd started: SSH_CLIENT set); the median of 3 starts.
_PROBE = r"""
import json, os, pwd, shutil, subprocess, sys, time
site, root, launcher = json.loads(sys.argv[1]), os.path.expanduser(sys.argv[2]), sys.argv[3]
runtimes, shell_timeout = json.loads(sys.argv[4]), float(sys.argv[5])
out = {"executable": sys.executable, "python": sys.version.split()[0], "versions": {},
       "errors": {}}
for name in ("hpcbatch", "distributed"):
    try:
        out["versions"][name] = str(getattr(__import__(name), "__version__", "unknown"))
    except Exception as exc:
        out["errors"][name] = f"{type(exc).__name__}: {exc}"
p = root
while not os.path.exists(p) and os.path.dirname(p) != p:
    p = os.path.dirname(p)
st = os.statvfs(p)
out["disk"] = {"path": p, "free_bytes": st.f_bavail * st.f_frsize}
try:
    from hpcbatch.execution.agent import base_environment
    path = os.fsdecode(base_environment(site).get(b"PATH", b""))
    out["path"] = path
    out["launcher"] = shutil.which(launcher, path=path)
    out["runtime"] = next(filter(None, (shutil.which(r, path=path) for r in runtimes)), None)
except Exception as exc:
    out["errors"]["path"] = f"{type(exc).__name__}: {exc}"
shell = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
env = {k: v for k, v in os.environ.items() if k != "SHLVL"}
env.setdefault("SSH_CLIENT", "127.0.0.1 22 22")
took = []
try:
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([shell, "-c", "true"], env=env, cwd=os.path.expanduser("~"),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=shell_timeout)
        took.append(time.perf_counter() - t0)
    out["shell"] = {"path": shell, "seconds": sorted(took)[1]}
except subprocess.TimeoutExpired:
    out["shell"] = {"path": shell, "seconds": None}
except OSError as exc:
    out["errors"]["shell"] = f"{shell}: {exc.strerror or exc}"
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Check:
    """The result of one check on one host.

    Attributes
    ----------
    host
        Inventory name of the host.
    check
        ``ssh``, ``python``, ``versions``, ``disk``, ``launcher``, ``runtime``,
        ``shell`` or ``ssh-to <peer>``.
    status
        ``pass``, ``warn`` (the host works, at a cost the detail names),
        ``fail``, or ``skip`` (an earlier check of the host failed).
    detail
        What was found (the failure's cause, naming the host).
    fix
        How to fix a failure or avoid a warning's cost ("" otherwise).
    """

    host: str
    check: str
    status: Status
    detail: str
    fix: str = ""

    def to_wire(self) -> dict[str, str]:
        """``{host, check, status, detail, fix}``."""
        return {"host": self.host, "check": self.check, "status": self.status,
                "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Expected:
    """What the service expects of every host.

    Attributes
    ----------
    hpcbatch, distributed
        The service's versions of the two packages.
    launcher
        The MPI launcher to look for on the task ``PATH`` (a name or a path).
    min_free_bytes
        Least free space under ``root_dir``, in bytes.
    runtimes
        Container runtimes of which one must be on the task ``PATH`` (the pool's
        ``containerConfiguration.type``:
        :func:`hpcbatch.execution.containers.runtime_names`); empty: no
        ``runtime`` check.
    slow_shell_s
        Seconds above which the login shell's start of a command warns.
    """

    hpcbatch: str
    distributed: str
    launcher: str = "mpiexec"
    min_free_bytes: int = MIN_FREE_BYTES
    runtimes: tuple[str, ...] = ()
    slow_shell_s: float = SLOW_SHELL_S


def check_hosts(hosts: Sequence[Host], expected: Expected) -> list[Check]:
    """Check every host in parallel (ssh, python, versions, disk, launcher, [runtime], shell).

    Parameters
    ----------
    hosts
        Inventory hosts (unique names).
    expected
        The service's versions and the launcher to look for.

    Returns
    -------
    list of Check
        Per host, in the order of ``hosts``, its checks in the order above.
    """
    results = run_parallel(hosts, lambda h: check_host(h, expected))
    out: list[Check] = []
    for host in hosts:
        res = results[host.name]
        if isinstance(res, Exception):  # a fault of the check itself: still one line
            out.append(Check(host.name, "ssh", "fail", f"{host.name}: {type(res).__name__}: {res}",
                             "report this as a bug of hpcbatch hosts check"))
        else:
            out.extend(res)
    return out


def check_host(host: Host, expected: Expected) -> list[Check]:
    """Run the checks of one host; see :func:`check_hosts`."""
    name = host.name
    checks = ["python", "versions", "disk", "launcher", *(["runtime"] if expected.runtimes else []),
              *(["shell"] if host.provider == "ssh" else [])]
    transport = open_transport(host)
    with transport:
        try:
            transport.run(["true"], timeout_s=30)
        except HpcbatchError as exc:
            return [Check(name, "ssh", "fail", _message(exc), _ssh_fix(host, _message(exc))),
                    *(_skipped(name, c, "ssh") for c in checks)]
        where = _where(host) if host.provider == "ssh" else "this machine"
        out = [Check(name, "ssh", "pass", f"{name}: reached {where} ({host.provider})")]
        try:
            res = transport.run([host.python, "-c", _PROBE, json.dumps(host.env), host.root_dir,
                                 expected.launcher, json.dumps(list(expected.runtimes)),
                                 str(SHELL_TIMEOUT_S)], timeout_s=PROBE_TIMEOUT_S)
        except HpcbatchError as exc:
            return [*out, Check(name, "python", "fail", _message(exc),
                                "check the host's load and run hosts check again"),
                    *(_skipped(name, c, "python") for c in checks[1:])]
        probe = _parse_probe(res)
        if probe is None:
            detail = _last_line(res)
            fix = (f"set the inventory's python of {name} to an interpreter that exists there "
                   "(a virtual environment's bin/python with hpcbatch installed)")
            what = "not found" if res.exit_code == 127 else f"failed (exit code {res.exit_code})"
            return [*out, Check(name, "python", "fail",
                                f"{name}: python {host.python} {what}: {detail}", fix),
                    *(_skipped(name, c, "python") for c in checks[1:])]
        return out + _judge(host, probe, expected)


def check_peers(host: Host, root_dir: str, files: Mapping[str, bytes],
                peers: Sequence[tuple[str, str]], pool_id: str) -> list[Check]:
    """From ``host``, ssh to each peer with a pool's key, as its MPI launchers would.

    Parameters
    ----------
    host
        The source host.
    root_dir
        Its node root, expanded (absolute).
    files
        ``ssh/config``, ``ssh/known_hosts`` and the ``ssh/ssh`` wrapper
        (:func:`hpcbatch.execution.multiinstance.ssh_files` for the folder
        ``{root_dir}/.hostcheck``), written there first.
    peers
        ``(node name, address)`` of every other node of the pool.
    pool_id
        The pool, for the messages.

    Returns
    -------
    list of Check
        One ``ssh-to <peer>`` check per peer.
    """
    name = host.name
    try:
        with open_transport(host) as transport:
            base = posixpath.join(root_dir, CHECK_DIR)
            for rel, data in files.items():
                transport.put_bytes(data, posixpath.join(base, rel),
                                    mode=0o700 if rel.endswith("/ssh") else 0o600)
            wrapper = posixpath.join(base, "ssh", "ssh")
            out = []
            for peer, address in peers:
                res = transport.run([wrapper, "-o", "ConnectTimeout=10", address, "true"],
                                    timeout_s=60)
                if res.exit_code == 0:
                    out.append(Check(name, f"ssh-to {peer}", "pass",
                                     f"{name} reaches {peer} ({address}) with pool {pool_id}'s key"))
                else:
                    out.append(Check(
                        name, f"ssh-to {peer}", "fail",
                        f"{name} cannot ssh to {peer} ({address}) with pool {pool_id}'s key: "
                        f"{_last_line(res)}",
                        f"let {name} reach {address} over SSH (firewall, sshd on {peer}, "
                        f"~/.ssh/authorized_keys of its user; the pool installs its key there)"))
            return out
    except HpcbatchError as exc:
        return [Check(name, f"ssh-to {p}", "fail", _message(exc),
                      _ssh_fix(host, _message(exc))) for p, _ in peers]


# ----------------------------------------------------------------- helpers


def _judge(host: Host, probe: Mapping[str, Any], expected: Expected) -> list[Check]:
    name = host.name
    versions: dict[str, str] = probe.get("versions") or {}
    errors: dict[str, str] = probe.get("errors") or {}
    exe = probe.get("executable") or host.python
    out: list[Check] = []
    missing = [m for m in ("hpcbatch", "distributed") if m in errors]
    if missing:
        out.append(Check(
            name, "python", "fail",
            f"{name}: python {host.python} ({exe}, Python {probe.get('python')}) cannot import "
            + "; ".join(f"{m} ({errors[m]})" for m in missing),
            f"pip install hpcbatch=={expected.hpcbatch} distributed=={expected.distributed} "
            f"into that environment, or set the inventory's python of {name} to the "
            "interpreter that has them"))
        out.append(_skipped(name, "versions", "python"))
    else:
        out.append(Check(name, "python", "pass",
                         f"{name}: {host.python} is {exe}, Python {probe.get('python')}"))
        wrong = [f"{m} {versions.get(m)} (service: {want})"
                 for m, want in (("hpcbatch", expected.hpcbatch),
                                 ("distributed", expected.distributed))
                 if versions.get(m) != want]
        if wrong:
            out.append(Check(name, "versions", "fail", f"{name}: " + ", ".join(wrong),
                             f"install hpcbatch=={expected.hpcbatch} distributed=="
                             f"{expected.distributed} into {exe}'s environment on {name}"))
        else:
            out.append(Check(name, "versions", "pass",
                             f"{name}: hpcbatch {versions['hpcbatch']}, "
                             f"distributed {versions['distributed']} (as the service)"))
    disk = probe.get("disk") or {}
    free = int(disk.get("free_bytes", 0))
    where = f"{disk.get('path')} (root_dir {host.root_dir})"
    if free < expected.min_free_bytes:
        out.append(Check(name, "disk", "fail",
                         f"{name}: {free / 2**30:.2f} GiB free under {where}",
                         f"free space there or set the inventory's root_dir of {name} to a "
                         f"file system with at least {expected.min_free_bytes / 2**30:g} GiB free"))
    else:
        out.append(Check(name, "disk", "pass", f"{name}: {free / 2**30:.1f} GiB free under {where}"))
    if "path" in errors:
        out.append(Check(name, "launcher", "skip",
                         f"{name}: cannot compute the task PATH with {host.python}: "
                         f"{errors['path']}"))
    elif probe.get("launcher"):
        out.append(Check(name, "launcher", "pass",
                         f"{name}: {expected.launcher} is {probe['launcher']} on the task PATH"))
    else:
        out.append(Check(
            name, "launcher", "fail",
            f"{name}: MPI launcher {expected.launcher} not found on the task PATH "
            f"{probe.get('path')}",
            f"pip install mpich into {exe}'s environment (its bin directory comes first on "
            f"the task PATH), or add the MPI installation's bin directory to PATH in the "
            f"inventory env of {name}"))
    if expected.runtimes:
        out.append(_judge_runtime(host, probe, expected, errors))
    if host.provider == "ssh":  # other providers start nodes and launchers without SSH
        out.append(_judge_shell(host, probe, expected, errors))
    return out


def _judge_shell(host: Host, probe: Mapping[str, Any], expected: Expected,
                 errors: Mapping[str, str]) -> Check:
    """The ``shell`` check: the login shell's start of one command, against
    :attr:`Expected.slow_shell_s`."""
    name = host.name
    if "shell" in errors:
        return Check(name, "shell", "skip", f"{name}: cannot start the login shell "
                                            f"{errors['shell']}")
    shell = probe.get("shell") or {}
    path, seconds = str(shell.get("path")), shell.get("seconds")
    if seconds is not None and seconds <= expected.slow_shell_s:
        return Check(name, "shell", "pass",
                     f"{name}: the login shell {path} starts a command in {seconds * 1000:.0f} ms")
    took = (f"takes {seconds * 1000:.0f} ms to start a command (median of 3)"
            if seconds is not None else f"did not start a command within {SHELL_TIMEOUT_S:g} s")
    base = posixpath.basename(path)
    files = {"bash": "~/.bashrc", "zsh": "~/.zshenv"}.get(base)
    user = ssh_target(host).user or "the login user"
    if files is None:
        fix = (f"make the start-up files of {path} for {user} on {name} do no work for a "
               "non-interactive shell")
    else:
        guard = ("case $- in *i*) ;; *) return;; esac" if base == "bash"
                 else "[[ -o interactive ]] || return")
        fix = (f"make {files} of {user} on {name} return at once for a non-interactive shell: "
               f"put `{guard}` first, and move set-up such as `pyenv init` or `conda init` "
               f"after it ({base} reads {files} for every command sshd runs)")
    return Check(name, "shell", "warn",
                 f"{name}: the login shell {path} {took}: every node start and every MPI "
                 "launch over SSH on this host pays it", fix)


def _judge_runtime(host: Host, probe: Mapping[str, Any], expected: Expected,
                   errors: Mapping[str, str]) -> Check:
    name = host.name
    names = ", ".join(expected.runtimes)
    if "path" in errors:
        return Check(name, "runtime", "skip", f"{name}: cannot compute the task PATH with "
                                              f"{host.python}: {errors['path']}")
    if probe.get("runtime"):
        return Check(name, "runtime", "pass",
                     f"{name}: container runtime {probe['runtime']} on the task PATH")
    return Check(name, "runtime", "fail",
                 f"{name}: no container runtime ({names}) on the task PATH {probe.get('path')}",
                 f"install one of {names} on {name}, or add its bin directory to PATH in the "
                 f"inventory env of {name}")


def _parse_probe(res: CommandResult) -> dict[str, Any] | None:
    if res.exit_code != 0:
        return None
    for line in reversed(res.stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _skipped(host: str, check: str, after: str) -> Check:
    return Check(host, check, "skip", f"{host}: not checked: the {after} check failed")


def _message(exc: HpcbatchError) -> str:
    return exc.message


def _last_line(res: CommandResult) -> str:
    lines = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()
    return lines[-1][:500]


def _where(host: Host) -> str:
    """``address:port`` where SSH goes for the host; an ssh config alias with its target."""
    target = ssh_target(host)
    if target.address != host.address:
        return f"{host.address} ({target.address}:{target.port})"
    return f"{host.address}:{target.port}"


def _keys_file(keys_file: str | None, user: str | None) -> str:
    """The ``authorized_keys`` file of ``user`` (None: the login user) as sshd finds it:
    the host's ``authorized_keys`` (sshd's ``AuthorizedKeysFile``, ``%h`` and ``%u``) or
    ``~/.ssh/authorized_keys``."""
    path = keys_file or "%h/.ssh/authorized_keys"
    if user is not None:
        path = path.replace("%u", user)
    if path.startswith("%h/"):
        path = f"~{user or ''}/{path[3:]}"
    return path


def _ssh_fix(host: Host, message: str) -> str:
    text = message.lower()
    target = ssh_target(host)
    if "host key" in text:
        return (f"add {target.address}'s host key to {host.known_hosts or '~/.ssh/known_hosts'} "
                f"(ssh-keyscan -p {target.port} {target.address}), after checking its "
                "fingerprint")
    if "authentication" in text:
        key = (f"{target.identity_file}.pub" if target.identity_file
               else "your default public key, ~/.ssh/id_*.pub")
        return (f"authorise this service's key ({key}) in "
                f"{_keys_file(host.authorized_keys, target.user)} of "
                f"{target.user or 'the login user'} on {host.address}")
    if "resolve" in text:
        return f"fix the inventory address of {host.name} ({host.address}) or your DNS"
    return (f"start sshd on {target.address} port {target.port} (or fix the inventory's "
            f"address and port of {host.name}), and let this machine reach it")


def read_os_releases(hosts: Sequence[Host]) -> dict[str, str | Exception]:
    """Read ``/etc/os-release`` on every host, in parallel ("Account - List Supported Images").

    Parameters
    ----------
    hosts
        Inventory hosts.

    Returns
    -------
    dict
        Host name to the file's text, or to the error that kept it from being read
        (an unreachable host is a result, not an error).
    """
    def read(host: Host) -> str:
        with open_transport(host) as transport:
            res = transport.run(["cat", "/etc/os-release"], timeout_s=30)
        if res.exit_code != 0:
            raise HpcbatchError(f"{host.name}: cannot read /etc/os-release: "
                                f"{res.stderr.strip() or res.exit_code}")
        return res.stdout

    return run_parallel(hosts, read)
