"""The host inventory (hpcbatch's ``/inventory`` extension): hosts a pool may take."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError

from hpcbatch.batch.errors import (
    ConflictError,
    not_found,
)
from hpcbatch.batch.models import (
    wire_error,
)
from hpcbatch.core.context import ServiceContext
from hpcbatch.providers.inventory import Host
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


class Inventory:
    """Add, list and remove inventory hosts.

    Parameters
    ----------
    ctx
        The service context.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def add_hosts(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add or replace inventory hosts (hpcbatch extension: ``POST /inventory/hosts``).

        Parameters
        ----------
        items
            Host dicts as :class:`hpcbatch.providers.inventory.Host` fields.

        Raises
        ------
        InvalidPropertyValueError, BadRequestError
            A host is invalid (the message names it and the field).
        ConflictError
            A host being replaced belongs to a pool (code ``HostInUse``).
        """
        parsed: list[Host] = []
        for i, item in enumerate(items):
            try:
                parsed.append(Host.model_validate(item))
            except ValidationError as exc:
                err = wire_error(exc)
                err.message = f"hosts[{i}]: {err.message}"
                raise err from None
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
