"""Users on a compute node: "Compute Node - Add User / Update User / Delete User".

Runs in the node agent (called through :data:`hpcbatch.execution.nodeops.NODE_CALLS`).
A node user is a Linux account made on the node's host for remote login
(``ssh user@host -p port``, Compute Node - Get Remote Login Settings): its
``sshPublicKey`` goes to ``~/.ssh/authorized_keys``, its ``password`` through
``chpasswd``, ``isAdmin`` makes it a member of the ``sudo`` (or ``wheel``)
group, and ``expiryTime`` becomes the account's expiry date (``useradd
--expiredate``: whole days, so the account expires at the end of the UTC day
the expiry time falls in).

Only users made here can be updated or deleted: the node keeps their names in
its secrets folder (:data:`REGISTRY`), so an existing account (root, the pool's
auto-user and user accounts, any host user) is never taken over — adding one
answers ``NodeUserExists``.

Making accounts needs root: the agent runs as root on hosts logged into as root
or declared ``sudo: true`` (:mod:`hpcbatch.execution.identity`); elsewhere every
operation answers ``{"code": "UserManagementUnavailable"}`` saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hpcbatch.execution.environment import SECRETS_DIR
from hpcbatch.execution.identity import (
    ADMIN_GROUPS,
    drop_task_users_under,
    group_exists,
    run_account_tool,
    user_exists,
)

REGISTRY = "node_users.json"
"""File of the node's secrets folder naming the users made by Add User (and their details)."""

_lock = threading.Lock()
"""One user operation at a time on a node (the registry is read, changed and written)."""


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _unavailable() -> dict[str, Any] | None:
    """The reply when this process cannot make accounts (it is not root), else None."""
    if os.geteuid() == 0:
        return None
    me = pwd.getpwuid(os.geteuid()).pw_name
    return _error("UserManagementUnavailable",
                  f"the node agent runs as {me}, not root, so it cannot manage users on this "
                  "host; log into it as root or declare it sudo: true in the inventory")


def _registry_path(root_dir: str) -> Path:
    return Path(root_dir, SECRETS_DIR, REGISTRY)


def _load(root_dir: str) -> dict[str, Any]:
    path = _registry_path(root_dir)
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save(root_dir: str, users: dict[str, Any]) -> None:
    path = _registry_path(root_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(users))
    tmp.chmod(0o600)
    tmp.replace(path)


def _run(argv: list[str], stdin: bytes | None = None) -> None:
    """Run an account tool; a failure is an ``OSError`` (the agent reports it as such)."""
    run_account_tool(argv, stdin, error=OSError)


def expire_date(expiry: str) -> str:
    """The ``--expiredate`` (``YYYY-MM-DD``) of an ISO ``expiryTime``: the day after the
    UTC day it falls in (the account works until then; shadow expiry is in whole days).

    Raises
    ------
    ValueError
        ``expiry`` is not an ISO 8601 time.
    """
    when = datetime.fromisoformat(expiry)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when.astimezone(UTC).date() + timedelta(days=1)).isoformat()


def _set_credentials(name: str, password: str | None, ssh_public_key: str | None,
                     expiry: str) -> None:
    """Replace a node user's password (none: ``*``), key (none: no key) and expiry date."""
    entry = pwd.getpwnam(name)
    if password:
        _run(["chpasswd"], stdin=f"{name}:{password}\n".encode())
    else:  # "*": no password login, but not locked (key logins still work)
        _run(["usermod", "--password", "*", "--", name])
    _run(["usermod", "--expiredate", expire_date(expiry), "--", name])
    ssh = Path(entry.pw_dir, ".ssh")
    ssh.mkdir(mode=0o700, exist_ok=True)
    auth = ssh / "authorized_keys"
    auth.write_text(f"{ssh_public_key.strip()}\n" if ssh_public_key else "")
    auth.chmod(0o600)
    for path in (ssh, auth):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def add_user(root_dir: str, name: str, is_admin: bool, expiry: str,
             password: str | None = None, ssh_public_key: str | None = None) -> dict[str, Any]:
    """Make a node user ("Compute Node - Add User").

    Parameters
    ----------
    root_dir
        The node root (the registry lives in its secrets folder).
    name
        The account name (validated by the service).
    is_admin
        Member of the host's ``sudo``/``wheel`` group.
    expiry
        ISO 8601 ``expiryTime``.
    password, ssh_public_key
        Credentials (either may be None).

    Returns
    -------
    dict
        ``{}`` when made; ``{"code", "message"}``: ``NodeUserExists`` (an
        account of that name exists on the host), ``UserManagementUnavailable``
        (the agent is not root), ``UserAdminUnavailable`` (no admin group).
    """
    if (why := _unavailable()) is not None:
        return why
    with _lock:
        users = _load(root_dir)
        if name in users or user_exists(name):
            return _error("NodeUserExists", f"an account named {name} already exists on the node")
        admin_group = next((g for g in ADMIN_GROUPS if group_exists(g)), None)
        if is_admin and admin_group is None:
            return _error("UserAdminUnavailable",
                          f"isAdmin needs a {' or '.join(ADMIN_GROUPS)} group on the node's host")
        argv = ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh",
                "--comment", "hpcbatch node user"]
        if is_admin and admin_group is not None:
            argv += ["--groups", admin_group]
        _run([*argv, "--", name])
        try:
            _set_credentials(name, password, ssh_public_key, expiry)
        except Exception:
            subprocess.run(["userdel", "--remove", "--", name], capture_output=True, check=False)
            raise
        users[name] = {"isAdmin": is_admin, "expiryTime": expiry}
        _save(root_dir, users)
    return {}


def update_user(root_dir: str, name: str, expiry: str, password: str | None = None,
                ssh_public_key: str | None = None) -> dict[str, Any]:
    """Replace a node user's password, key and expiry ("Compute Node - Update User").

    As Batch does, every updatable property is replaced: one left out is
    removed (no password, no key) or reset (``expiry``: the service's default).

    Returns
    -------
    dict
        ``{}``; or ``{"code", "message"}``: ``NodeUserNotFound`` (no user made by
        Add User of that name), ``UserManagementUnavailable``.
    """
    if (why := _unavailable()) is not None:
        return why
    with _lock:
        users = _load(root_dir)
        if name not in users or not user_exists(name):
            return _error("NodeUserNotFound", f"the node has no user named {name}")
        _set_credentials(name, password, ssh_public_key, expiry)
        users[name]["expiryTime"] = expiry
        _save(root_dir, users)
    return {}


def delete_user(root_dir: str, name: str) -> dict[str, Any]:
    """Delete a node user, its home and its processes ("Compute Node - Delete User").

    Returns
    -------
    dict
        ``{}``; or ``{"code", "message"}``: ``NodeUserNotFound``,
        ``UserManagementUnavailable``.
    """
    if (why := _unavailable()) is not None:
        return why
    with _lock:
        users = _load(root_dir)
        if name not in users:
            return _error("NodeUserNotFound", f"the node has no user named {name}")
        if user_exists(name):
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, check=False)
            _run(["userdel", "--force", "--remove", "--", name])
        del users[name]
        _save(root_dir, users)
    return {}


def delete_all(root_dir: str) -> int:
    """Delete every node user of this node (the node leaves its pool or is reimaged), and
    every task-scope user whose task directory is in this node's root, with all their
    processes (:func:`hpcbatch.execution.identity.drop_task_users_under`: killed by uid,
    so a process that left the run's tree and cleared its environment goes too).

    Returns
    -------
    int
        How many node users were deleted.
    """
    if _unavailable() is not None:
        return 0
    drop_task_users_under(root_dir)
    names = list(_load(root_dir))
    return sum(1 for n in names if not delete_user(root_dir, n))
