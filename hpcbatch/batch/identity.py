"""Which user a task runs as: Batch's ``userIdentity`` resolved against a pool.

Pure rules (no I/O). Batch's model (REST ``UserIdentity``,
``AutoUserSpecification``, ``UserAccount``):

* no ``userIdentity``, or ``autoUser`` with the default scope and elevation:
  the pool's common non-admin auto-user (:data:`POOL_AUTO_USER`);
* ``autoUser.elevationLevel: admin``: an administrator. On a Linux node
  hpcbatch runs it as ``root`` (:data:`ADMIN_USER`), whatever the scope: an
  admin user is root-equivalent, so no separate account is pretended;
* ``autoUser.scope: task`` (non-admin): a user created on the node for that
  task and removed after it (:func:`task_user_name`), the isolation tool;
* ``username``: one of the pool's ``userAccounts``.

Where the node agent cannot switch users, every identity runs as the agent's
own user; the pool says so (see ``docs/security.md``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hpcbatch.batch.errors import InvalidPropertyValueError

if TYPE_CHECKING:  # annotations only: node processes import this module without pydantic
    from hpcbatch.batch.models import PoolSpec, UserIdentity

__all__ = ["ADMIN_USER", "POOL_AUTO_USER", "TASK_USER_PREFIX", "RunAs", "check_user_name",
           "resolve", "task_user_name"]

POOL_AUTO_USER = "_azbatch"
"""The pool's non-admin auto-user (scope ``pool``), as Batch names it on Linux nodes."""
ADMIN_USER = "root"
"""Who an ``elevationLevel: admin`` auto-user task runs as."""
TASK_USER_PREFIX = "_azbatcht"
"""Prefix of the users created for ``autoUser.scope: task`` tasks."""

Scope = Literal["pool", "task", "account"]


@dataclass(frozen=True)
class RunAs:
    """The user a run executes as on its node.

    Attributes
    ----------
    user
        Linux user name.
    scope
        ``pool`` (a pool auto-user, made with the node), ``task`` (made for
        this run and removed after it) or ``account`` (a pool ``userAccounts``
        entry, made with the node).
    admin
        The identity has ``elevationLevel: admin``.
    """

    user: str
    scope: Scope = "pool"
    admin: bool = False


def task_user_name(run_key: str) -> str:
    """Return the name of the task-scope auto-user of a run (at most 32 characters).

    Parameters
    ----------
    run_key
        The run's key (unique per run of a task).

    Returns
    -------
    str
        :data:`TASK_USER_PREFIX` and 12 hex digits of the key's SHA-256.
    """
    return TASK_USER_PREFIX + hashlib.sha256(run_key.encode()).hexdigest()[:12]


def resolve(identity: UserIdentity | None, pool: PoolSpec | None, run_key: str) -> RunAs:
    """Return the user a task, start task or job task runs as.

    Parameters
    ----------
    identity
        The task's ``userIdentity`` (None: Batch's default, the pool's
        non-admin auto-user).
    pool
        The pool the task runs on (its ``userAccounts``).
    run_key
        The run's key (names a task-scope user).

    Returns
    -------
    RunAs
        The user.

    Raises
    ------
    InvalidPropertyValueError
        ``username`` names no account of the pool.
    """
    if identity is None:
        return RunAs(POOL_AUTO_USER)
    if identity.user_name is not None:
        check_user_name(identity, pool)
        account = next(a for a in (pool.user_accounts if pool else None) or []
                       if a.name == identity.user_name)
        return RunAs(account.name, "account", account.elevation_level == "admin")
    auto = identity.auto_user
    if auto is not None and auto.elevation_level == "admin":
        return RunAs(ADMIN_USER, auto.scope or "pool", True)
    if auto is not None and auto.scope == "task":
        return RunAs(task_user_name(run_key), "task")
    return RunAs(POOL_AUTO_USER)


def check_user_name(identity: UserIdentity | None, pool: PoolSpec | None,
                    field: str = "userIdentity.username") -> None:
    """Check that a ``username`` identity names one of the pool's ``userAccounts``.

    Parameters
    ----------
    identity
        The ``userIdentity`` given (None or an auto-user: nothing to check).
    pool
        The pool, or None when it does not exist (yet): nothing can be checked.
    field
        Wire path of the property, for the error.

    Raises
    ------
    InvalidPropertyValueError
        The name is not one of the pool's accounts (the message lists them).
    """
    if identity is None or identity.user_name is None or pool is None:
        return
    names = [a.name for a in pool.user_accounts or []]
    if identity.user_name not in names:
        raise InvalidPropertyValueError(
            field, identity.user_name,
            f"pool {pool.id} has no user account {identity.user_name!r} (its userAccounts: "
            f"{', '.join(names) or 'none'})")
