"""The host inventory (hpcbatch's ``/inventory`` extension): hosts a pool may take."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError

from hpcbatch.batch.errors import (
    ConflictError,
    HpcbatchError,
    not_found,
)
from hpcbatch.batch.models import (
    wire_error,
)
from hpcbatch.core.context import ServiceContext
from hpcbatch.providers.inventory import LOCAL_PATH_FIELDS, Host
from hpcbatch.store.database import (
    Store,
    dumps,
    hosts,
    loads,
    mappings,
    pools,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

OPERATOR_ONLY = ("provider: local", *(f"{f} (a path on the service machine)"
                                      for f in LOCAL_PATH_FIELDS),
                 "strict_host_key_checking: false")
"""What only the operator may put in a host (see :func:`operator_only_fields`)."""


def operator_only_fields(host: Host) -> list[tuple[str, str]]:
    """The fields of ``host`` that only the operator may set, each with why.

    A ``local`` host runs its ``python`` (and every task) on the service
    machine; ``identity_file``, ``ssh_config`` and ``known_hosts`` name files
    on the service machine (an ``ssh_config`` may hold a ``ProxyCommand``, an
    identity file is the operator's key, sent to whichever host the caller
    names); host-key checking off lets anyone on the path pose as the host.

    Parameters
    ----------
    host
        A parsed inventory host.

    Returns
    -------
    list of (field, reason)
        Empty when any API caller may add the host.
    """
    out: list[tuple[str, str]] = []
    if host.provider == "local":
        out.append(("provider", "'local' runs processes on the service machine; allowed: 'ssh'"))
    for name in LOCAL_PATH_FIELDS:
        if getattr(host, name) is not None:
            out.append((name, ("names a file on the service machine; allowed: leave it out "
                               "(the service user's ~/.ssh config and keys apply)")))
    if not host.strict_host_key_checking:
        out.append(("strict_host_key_checking", "false accepts any host key; allowed: true"))
    return out


class Inventory:
    """Add, list and remove inventory hosts.

    Parameters
    ----------
    ctx
        The service context.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def add_hosts(self, items: Sequence[Mapping[str, Any]], *,
                  operator: bool = False) -> list[dict[str, Any]]:
        """Add or replace inventory hosts (hpcbatch extension: ``POST /inventory/hosts``).

        The inventory is the operator's: a host with any of
        :func:`operator_only_fields` is refused unless ``operator``.

        Parameters
        ----------
        items
            Host dicts as :class:`hpcbatch.providers.inventory.Host` fields.
        operator
            The caller is the operator (its request carried the state dir's
            operator proof), or the service allows every caller
            (``--allow-api-local-hosts``).

        Raises
        ------
        InvalidPropertyValueError, BadRequestError
            A host is invalid (the message names it and the field).
        HpcbatchError
            ``403 AuthorizationFailure``: not ``operator`` and a host
            sets a field only the operator may (the message names host, field
            and what is allowed); nothing is added.
        ConflictError
            A host being replaced belongs to a pool (code ``HostInUse``).
        """
        parsed: list[Host] = []
        for i, item in enumerate(items):
            try:
                host = Host.model_validate(item)
            except ValidationError as exc:
                err = wire_error(exc)
                err.message = f"hosts[{i}]: {err.message}"
                raise err from None
            refused = [] if operator else operator_only_fields(host)
            if refused:
                field, why = refused[0]
                raise HpcbatchError(
                    f"This request is not authorized to add hosts[{i}] ({host.name}): "
                    f"{field} {why}. Only the operator may add such hosts: run 'hpcbatch "
                    "hosts add' on the service machine (it signs with the state dir's "
                    "operator key), or start the service with "
                    "--allow-api-local-hosts.", code="AuthorizationFailure", status=403,
                    values={"PropertyName": f"hosts[{i}].{field}",
                            "Reason": "; ".join(f"{f}: {w}" for f, w in refused)})
            parsed.append(host)
        with self.ctx.store.begin() as conn:
            for host in parsed:
                row = Store.fetch_one(conn, hosts, key=host.name.lower())
                if row is not None and row["pool_key"] is not None:
                    raise ConflictError(
                        f"Host {host.name} belongs to pool {row['pool_key']} and cannot be "
                        "replaced; remove it from the pool first.", code="HostInUse")
                if row is not None:
                    conn.execute(hosts.delete().where(hosts.c.key == host.name.lower()))
                conn.execute(hosts.insert().values(
                    key=host.name.lower(), name=host.name,
                    spec=dumps(host.model_dump(mode="json")), pool_key=None))
        for key in self.ctx.pool_manager.pool_keys():
            self.ctx.pool_manager.reconcile(key)
        return [self._host_wire(h.model_dump(mode="json"), None) for h in parsed]

    @staticmethod
    def _host_wire(spec: dict[str, Any], pool_key: str | None) -> dict[str, Any]:
        return {**spec, "poolId": pool_key}

    def list_hosts(self) -> list[dict[str, Any]]:
        """Return the inventory: each host with the pool it belongs to (or None)."""
        with self.ctx.store.read() as conn:
            rows = mappings(conn.execute(sa.select(hosts).order_by(hosts.c.key)))
            pool_ids = dict(conn.execute(sa.select(pools.c.key, pools.c.id)).all())
        return [self._host_wire(loads(r["spec"]), pool_ids.get(r["pool_key"], r["pool_key"]))
                for r in rows]

    def remove_host(self, name: str) -> None:
        """Remove a host from the inventory.

        Raises
        ------
        NotFoundError
            ``HostNotFound``.
        ConflictError
            ``HostInUse`` when the host belongs to a pool.
        """
        with self.ctx.store.begin() as conn:
            row = Store.fetch_one(conn, hosts, key=name.lower())
            if row is None:
                raise not_found("Host", name)
            if row["pool_key"] is not None:
                raise ConflictError(f"Host {name} belongs to pool {row['pool_key']}.",
                                    code="HostInUse")
            conn.execute(hosts.delete().where(hosts.c.key == name.lower()))
