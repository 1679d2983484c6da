"""User switching on a compute node: the accounts tasks run as, and their credentials.

When the node agent runs as root, every task runs as the user its
``userIdentity`` names (:mod:`hpcbatch.batch.identity`): the pool's non-admin
auto-user ``_azbatch`` by default, ``root`` for ``elevationLevel: admin``, a
user made for the run for ``autoUser.scope: task``, or one of the pool's
``userAccounts``. This module

* prepares a node before its agent starts (:func:`setup_node`, run by the
  node provider as ``python -m hpcbatch.execution.identity - ROOT``
  on the host): checks that user switching can work, creates the pool's
  auto-user and ``userAccounts`` and sets the node directories' modes;
* gives the agent a task user's credentials (:class:`Switcher`), creating and
  removing task-scope users.

When the agent cannot switch users (it does not run as root, or a task user
could not reach the node root or the node's Python), :func:`setup_node` says
why and tasks share the agent's identity; the service shows that on the pool.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcbatch.batch.identity import POOL_AUTO_USER, TASK_USER_PREFIX, RunAs

__all__ = ["Credentials", "Switcher", "UserSwitchError", "drop_task_users_under", "group_exists",
           "kill_uid", "main", "remove_task_user", "run_account_tool", "setup_node",
           "sweep_ended_task_users", "user_exists"]

log = logging.getLogger(__name__)

NODE_CONFIG = "node.json"
"""The node process's config file, in the node root (only the agent's user reads it)."""
SECRETS_DIR = "secrets"
"""Folder of the node root holding the node's secrets (mode 0700, the agent's user)."""
ADMIN_GROUPS = ("sudo", "wheel")
"""Groups that make a pool user account with ``elevationLevel: admin`` an administrator
(the first that exists on the host)."""

_DIR_MODES = {"shared": 0o1777, "secrets": 0o700, "ssh": 0o711, "dask": 0o700,
              "startup": 0o755, "workitems": 0o755, "applications": 0o755}
"""Modes of the node root's folders under user switching: ``shared`` is writable by
every task (sticky, as ``/tmp``); the agent's own folders are closed."""


ENDED_COMMENT = "hpcbatch task user, run ended"
"""The comment (GECOS) of a task-scope user whose run has ended: an account still marked so
could not be removed yet, and any agent on the host removes it
(:func:`sweep_ended_task_users`). A running task's user never carries it."""
KILL_TIMEOUT_S = 10.0
"""How long :func:`kill_uid` waits for a user's processes to be gone."""


class UserSwitchError(Exception):
    """A task user cannot be created or found on this node."""


@dataclass(frozen=True)
class Credentials:
    """What a process needs to run as a user.

    Attributes
    ----------
    name, uid, gid
        The user and its primary group.
    groups
        Supplementary group ids.
    home
        Home directory (``HOME`` of the task).
    """

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def env(self) -> dict[str, str]:
        """Return ``HOME``, ``USER``, ``LOGNAME`` for a process of this user."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


SETPRIV = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
"""util-linux ``setpriv``: switches user between ``exec``s, so that a task's process can be
started with ``vfork`` (``subprocess`` falls back to ``fork`` of the whole node process when
it must change the user itself). None when the host lacks it."""


def setpriv_argv(creds: Credentials, argv: list[str]) -> list[str]:
    """Return ``argv`` run by :data:`SETPRIV` as ``creds``'s user, group and groups.

    Parameters
    ----------
    creds
        The user.
    argv
        The command (its program found on the ``PATH`` of the environment it gets).

    Returns
    -------
    list of str
        ``[setpriv, --reuid=U, --regid=G, --groups=...|--clear-groups, --, *argv]``.

    Raises
    ------
    UserSwitchError
        The host has no ``setpriv``.
    """
    if SETPRIV is None:
        raise UserSwitchError("setpriv (util-linux) is not installed on this node")
    groups = (f"--groups={','.join(str(g) for g in creds.groups)}" if creds.groups
              else "--clear-groups")
    return [SETPRIV, f"--reuid={creds.uid}", f"--regid={creds.gid}", groups, "--", *argv]


def program_missing(program: str, path: str | None, cwd: str | os.PathLike[str]) -> bool:
    """Tell whether ``program`` cannot be found as ``exec`` would look for it.

    Parameters
    ----------
    program
        ``argv[0]``: a path (with ``/``; relative to ``cwd``) or a name looked up on ``path``.
    path
        The ``PATH`` the program gets.
    cwd
        Its working directory.
    """
    if "/" in program:
        return not os.path.exists(os.path.join(cwd, program))
    return shutil.which(program, path=path or os.defpath) is None


def _credentials(name: str) -> Credentials:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserSwitchError(f"user {name!r} does not exist on this node") from None
    groups = tuple(g for g in os.getgrouplist(name, entry.pw_gid) if g != entry.pw_gid)
    return Credentials(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def run_account_tool(argv: list[str], stdin: bytes | None = None, *,
                     error: type[Exception] = UserSwitchError) -> None:
    """Run an account tool (``useradd``, ``usermod``, ``chpasswd``...) and check it succeeded.

    Parameters
    ----------
    argv
        The command (no shell: user strings stay single arguments).
    stdin
        Bytes fed to its standard input (``chpasswd``'s ``name:password`` line), or None.
    error
        The exception class raised on failure: :class:`UserSwitchError` for task users
        (the default), ``OSError`` for node users (:mod:`hpcbatch.execution.node_users`).

    Raises
    ------
    Exception
        ``error("TOOL failed (exit code N): STDERR")`` when the tool exits non-zero.
    """
    res = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if res.returncode != 0:
        raise error(f"{argv[0]} failed (exit code {res.returncode}): "
                    f"{res.stderr.decode(errors='replace').strip()}")


def _found(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def user_exists(name: str) -> bool:
    """Tell whether the host has a user named ``name`` (``getpwnam``)."""
    return _found(pwd.getpwnam, name)


def group_exists(name: str) -> bool:
    """Tell whether the host has a group named ``name`` (``getgrnam``)."""
    return _found(grp.getgrnam, name)


def unreachable(path: str | os.PathLike[str], *, execute: bool = False) -> str | None:
    """Return why a user who is neither owner nor in the group cannot reach ``path``, or None.

    Parameters
    ----------
    path
        A folder (every ancestor needs others' execute bit) or, with
        ``execute``, a program (also needs it itself, after symlinks).

    Returns
    -------
    str or None
        ``"/root is mode 0700"``-style reason, or None when reachable.
    """
    target = Path(os.path.realpath(path))
    chain = list(reversed(target.parents)) + ([target] if execute or target.is_dir() else [])
    for p in chain:
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            return f"{p}: {exc.strerror}"
        if not mode & stat.S_IXOTH:
            return f"{p} is mode {stat.S_IMODE(mode):04o}"
    return None


def _ensure_user(name: str, *, uid: int | None = None, gid: int | None = None,
                 home: str | None = None) -> None:
    """Create a user with its own group (or group ``gid``) unless it exists."""
    if user_exists(name):
        entry = pwd.getpwnam(name)
        if uid is not None and (entry.pw_uid, entry.pw_gid) != (uid, gid):
            raise UserSwitchError(f"user {name!r} exists with uid {entry.pw_uid} and gid "
                                  f"{entry.pw_gid}, not {uid} and {gid}")
        return
    # Password "*": no password login, but not a locked account (sshd without PAM refuses
    # key logins to locked accounts, and the pool's auto-user logs in with the pool key).
    argv = ["useradd", "--shell", "/bin/sh", "--password", "*"]
    argv += ["--home-dir", home, "--no-create-home"] if home else ["--create-home"]
    if gid is not None:
        try:
            grp.getgrgid(gid)
        except KeyError:
            run_account_tool(["groupadd", "--gid", str(gid), name])
        argv += ["--gid", str(gid)]
    else:
        argv += ["--user-group"]
    if uid is not None:
        argv += ["--uid", str(uid)]
    run_account_tool([*argv, "--", name])


def _install_user_key(creds: Credentials, private_key: str) -> None:
    """Put an account's ``sshPrivateKey`` pair in its ``~/.ssh``
    (Batch's ``LinuxUserConfiguration``)."""
    from cryptography.hazmat.primitives import serialization

    data = private_key.encode()
    try:
        key = (serialization.load_ssh_private_key(data, None) if b"OPENSSH" in data
               else serialization.load_pem_private_key(data, None))
    except (ValueError, TypeError) as exc:
        raise UserSwitchError(f"user {creds.name}: sshPrivateKey is not an unencrypted "
                              f"private key: {exc}") from exc
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    name = "id_ed25519" if public.startswith("ssh-ed25519") else "id_rsa"
    # Written by a process of the user itself, never by root: the home and its ``.ssh``
    # are the user's, so a link its tasks planted there reaches only what the user may write.
    res = subprocess.run(
        [sys.executable, "-c", _USER_KEY_SCRIPT], input=json.dumps({
            "ssh": str(Path(creds.home, ".ssh")), "name": name, "public": public,
            "private": private_key.rstrip("\n") + "\n"}).encode(),
        user=creds.uid, group=creds.gid, extra_groups=list(creds.groups), umask=0o077,
        env={"PATH": "/usr/bin:/bin", **creds.env()}, cwd="/", capture_output=True,
        check=False)
    if res.returncode != 0:
        raise UserSwitchError(f"user {creds.name}: cannot write its ~/.ssh key pair: "
                              f"{res.stderr.decode(errors='replace').strip()[-500:]}")


_USER_KEY_SCRIPT = """
import json, os, sys
a = json.load(sys.stdin)
ssh = a["ssh"]
if os.path.islink(ssh) or (os.path.lexists(ssh) and not os.path.isdir(ssh)):
    os.unlink(ssh)  # the account's own entry of its home: a link or a file is replaced
os.makedirs(ssh, mode=0o700, exist_ok=True)
auth = os.path.join(ssh, "authorized_keys")
try:  # a link (or a file the account cannot read) is replaced, not read through
    with os.fdopen(os.open(auth, os.O_RDONLY | os.O_NOFOLLOW)) as f:
        lines = f.read().splitlines()
except OSError:
    lines = []
files = {a["name"]: (a["private"], 0o600), a["name"] + ".pub": (a["public"] + "\\n", 0o644)}
if a["public"] not in lines:
    files["authorized_keys"] = ("".join(x + "\\n" for x in [*lines, a["public"]]), 0o600)
for fname, (text, mode) in files.items():
    path = os.path.join(ssh, fname)
    tmp = path + ".hpcbatch-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
"""
"""Writes a pool account's key pair and its ``authorized_keys`` line, run as that account
(:func:`_install_user_key`): temporary file, then rename, so no link at a final name is
followed."""


def setup_node(root: str | os.PathLike[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare a node for user switching; say whether tasks can run as their own users.

    Creates the pool's non-admin auto-user (:data:`~hpcbatch.batch.identity.POOL_AUTO_USER`)
    and the pool's ``userAccounts`` (``elevationLevel: admin`` ones join the
    ``sudo`` or ``wheel`` group; ``linuxUserConfiguration`` ``uid``/``gid`` and,
    on a pool with inter-node communication, ``sshPrivateKey`` honoured as
    Batch documents), and gives the node root's folders their modes.

    Parameters
    ----------
    root
        The node root (created if missing).
    spec
        ``{"accounts": [UserAccount wire dicts], "inter_node": bool}``.

    Returns
    -------
    dict
        ``{"switching": true}``, or ``{"switching": false, "reason": str}``
        when tasks will share the agent's identity (not root; the node root
        or the node's Python unreachable by a task user).

    Raises
    ------
    UserSwitchError
        An account cannot be created (the message says which and why).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return {"switching": False,
                "reason": f"the node agent runs as {me}, not root, so it cannot switch users"}
    for what, path, execute in (("the node root", root, False),
                                ("the node's Python", sys.executable, True)):
        why = unreachable(path, execute=execute)
        if why is not None:
            return {"switching": False,
                    "reason": f"task users cannot reach {what} ({why})"}
    _ensure_user(POOL_AUTO_USER)
    admin_group = next((g for g in ADMIN_GROUPS if group_exists(g)), None)
    for account in spec.get("accounts") or []:
        linux = account.get("linuxUserConfiguration") or {}
        name = account["name"]
        _ensure_user(name, uid=linux.get("uid"), gid=linux.get("gid"))
        if account.get("elevationLevel") == "admin":
            if admin_group is None:
                raise UserSwitchError(f"user account {name}: elevationLevel admin needs a "
                                      f"{' or '.join(ADMIN_GROUPS)} group on the node")
            run_account_tool(["usermod", "--append", "--groups", admin_group, "--", name])
        run_account_tool(["chpasswd"], stdin=f"{name}:{account['password']}\n".encode())
        if spec.get("inter_node") and linux.get("sshPrivateKey"):
            _install_user_key(_credentials(name), linux["sshPrivateKey"])
    root.chmod(0o755)
    for name, mode in _DIR_MODES.items():
        path = root / name
        path.mkdir(exist_ok=True)
        path.chmod(mode)
    login_uid, login_gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if login_uid and login_gid:
        # Run through ``sudo -n`` (``Host.sudo``): the login user writes the node's
        # TLS files and config before it starts the node process (as root, through
        # sudo), so it keeps the node root and owns the closed ``secrets`` folder.
        for path in (root, root / "secrets"):
            os.chown(path, int(login_uid), int(login_gid))
    for name in ("tls", NODE_CONFIG, "node.log"):  # the agent's own files, where present
        path = root / name
        if path.exists():
            path.chmod(0o700 if path.is_dir() else 0o600)
    return {"switching": True}


class Switcher:
    """Credentials of the users a node's tasks run as (the agent runs as root).

    Pool users (auto-user, accounts, root) are looked up once and cached;
    task-scope users are made by :meth:`make_task_user` and removed by
    :meth:`drop_task_user`. Making one (an agent starts) removes the task users of
    ended runs an earlier agent could not (:func:`sweep_ended_task_users`). Thread-safe.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Credentials] = {}
        self._lock = threading.Lock()
        if os.geteuid() == 0:
            # A new agent: task users an earlier one could not remove go now.
            try:
                sweep_ended_task_users()
            except OSError as exc:
                log.warning("cannot remove the task users of ended runs: %s", exc)

    def credentials(self, run_as: RunAs) -> Credentials:
        """Return the credentials of a pool-scope user, root or a pool account.

        Raises
        ------
        UserSwitchError
            The user does not exist on this node.
        """
        creds = self._cache.get(run_as.user)
        if creds is None:
            creds = _credentials(run_as.user)
            with self._lock:
                self._cache[run_as.user] = creds
        return creds

    def make_task_user(self, run_as: RunAs, home: str) -> Credentials:
        """Create the user of a task-scope run (its home: the task directory).

        Raises
        ------
        UserSwitchError
            ``useradd`` failed, or the name is not a task-scope user's.
        """
        if not run_as.user.startswith(TASK_USER_PREFIX):
            raise UserSwitchError(f"{run_as.user!r} is not a task-scope user name")
        _ensure_user(run_as.user, home=home)
        return _credentials(run_as.user)

    def drop_task_user(self, name: str, task_dir: str | os.PathLike[str]) -> bool:
        """Remove a task-scope user (:func:`remove_task_user`), then the ended task users
        earlier removals left (:func:`sweep_ended_task_users`).

        Returns
        -------
        bool
            True when the user is gone (False: it could not be removed, which is logged;
            the next removal or the next agent on the host retries it).
        """
        if not name.startswith(TASK_USER_PREFIX):
            return False
        gone = remove_task_user(name, task_dir)
        sweep_ended_task_users(skip=name)
        return gone


def kill_uid(uid: int, timeout_s: float = KILL_TIMEOUT_S) -> int:
    """SIGKILL every process whose real, effective or saved uid is ``uid``; wait until none
    is left.

    For a task-scope user only (its uid belongs to one run): a task's process cannot hide
    from it by leaving the process tree or clearing its environment. A zombie is not
    waited for (it runs nothing; its parent reaps it).

    Returns
    -------
    int
        How many processes were killed.

    Raises
    ------
    UserSwitchError
        ``uid`` is root's, or processes of it are still alive after ``timeout_s``.
    """
    import psutil  # the node's setup (this module's main) does without it

    if uid == 0:
        raise UserSwitchError("refusing to kill every process of root")
    me = os.getpid()
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in psutil.process_iter(["uids", "status"]):
            uids = p.info["uids"]
            if (p.pid == me or uids is None or uid not in tuple(uids)
                    or p.info["status"] == psutil.STATUS_ZOMBIE):
                continue
            alive.append(p)
            try:
                p.kill()
                killed.add(p.pid)
            except psutil.Error:
                pass
        if not alive:
            return len(killed)
        if time.monotonic() > deadline:
            raise UserSwitchError(f"{len(alive)} process(es) of uid {uid} still alive after "
                                  f"{timeout_s:g} s: pids {sorted(p.pid for p in alive)}")
        time.sleep(0.02)


def _userdel(name: str) -> str | None:
    """``userdel`` a task-scope user whose processes were killed; return why it failed, or
    None when the account is gone. Zombies of the user (dead, not yet reaped) make plain
    ``userdel`` refuse: then ``--force``, as nothing of the user runs any more."""
    why = None
    for argv in (["userdel", "--", name], ["userdel", "--force", "--", name]):
        res = subprocess.run(argv, capture_output=True, check=False)
        if res.returncode == 0 or not user_exists(name):
            return None
        why = (f"{argv[0]} failed (exit code {res.returncode}): "
               f"{res.stderr.decode(errors='replace').strip()}")
    return why


def remove_task_user(name: str, task_dir: str | os.PathLike[str] | None = None) -> bool:
    """Remove a task-scope user: hand its task directory to root, mark it ended, kill every
    process of its uid (:func:`kill_uid`: tags can be cleared, a uid cannot), then delete
    the account.

    Removing a user frees its uid for the next task-scope user, so the task directory is
    handed to root (mode 0700) first: the next user with that uid cannot enter it.

    Parameters
    ----------
    name
        The user (:data:`~hpcbatch.batch.identity.TASK_USER_PREFIX` names only).
    task_dir
        Its task directory (None: its home, which is the task directory).

    Returns
    -------
    bool
        True when the account is gone. False when it could not be removed: logged with the
        reason; it stays marked :data:`ENDED_COMMENT` and is retried by
        :func:`sweep_ended_task_users`.
    """
    if not name.startswith(TASK_USER_PREFIX):
        return False
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return True
    if entry.pw_uid == 0:
        log.warning("task user %s has uid 0: not removed", name)
        return False
    with contextlib.suppress(OSError):
        folder = task_dir if task_dir is not None else entry.pw_dir
        os.chown(folder, 0, 0)
        os.chmod(folder, 0o700)
    if entry.pw_gecos != ENDED_COMMENT:
        subprocess.run(["usermod", "--comment", ENDED_COMMENT, "--", name],
                       capture_output=True, check=False)
    try:
        kill_uid(entry.pw_uid)
    except UserSwitchError as exc:
        log.warning("task user %s cannot be removed yet (retried later): %s", name, exc)
        return False
    why = _userdel(name)
    if why is not None:
        log.warning("task user %s cannot be removed yet (retried later): %s", name, why)
        return False
    return True


def _task_users(match: Callable[[pwd.struct_passwd], bool]) -> list[str]:
    return [e.pw_name for e in pwd.getpwall()
            if e.pw_name.startswith(TASK_USER_PREFIX) and match(e)]


def sweep_ended_task_users(skip: str | None = None) -> int:
    """Remove the task-scope users of ended runs that earlier removals left on this host
    (marked :data:`ENDED_COMMENT`), whichever agent made them.

    Called after each removal and when an agent starts (:class:`Switcher`): no task
    account leaks past the next attempt.

    Returns
    -------
    int
        How many were removed.
    """
    names = _task_users(lambda e: e.pw_gecos == ENDED_COMMENT and e.pw_name != skip)
    return sum(1 for n in names if remove_task_user(n))


def drop_task_users_under(root_dir: str | os.PathLike[str]) -> int:
    """Remove every task-scope user whose home (its task directory) is under ``root_dir``,
    running or not: the node of that root leaves its pool, is reimaged or stops.

    Returns
    -------
    int
        How many were removed (failures are logged and retried as for
        :func:`remove_task_user`).
    """
    top = os.path.realpath(root_dir).rstrip("/") + "/"
    names = _task_users(lambda e: os.path.realpath(e.pw_dir).startswith(top))
    return sum(1 for n in names if remove_task_user(n))


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcbatch.execution.identity SPEC_JSON ROOT``: :func:`setup_node`, JSON out.

    ``SPEC_JSON`` is a file, or ``-`` for stdin (the providers' way: the spec
    holds account passwords). Exit code 0 with the result on stdout; 1 with
    the error on stderr.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hpcbatch.execution.identity SPEC_JSON ROOT", file=sys.stderr)
        return 2
    try:
        spec = json.loads(sys.stdin.read() if args[0] == "-" else Path(args[0]).read_text())
        print(json.dumps(setup_node(os.path.expanduser(args[1]), spec)))
    except (UserSwitchError, OSError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
