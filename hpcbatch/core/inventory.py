"""The host inventory (hpcbatch's ``/inventory`` extension): hosts a pool may take."""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import distributed
import sqlalchemy as sa
from pydantic import ValidationError

from hpcbatch.batch import images
from hpcbatch.batch.errors import (
    ConflictError,
    HpcbatchError,
    not_found,
)
from hpcbatch.batch.models import (
    check_container_configuration,
    wire_error,
)
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.rows import pool_row
from hpcbatch.execution import containers, multiinstance
from hpcbatch.providers import preflight
from hpcbatch.providers.inventory import LOCAL_PATH_FIELDS, Host, ssh_target
from hpcbatch.store.database import (
    Store,
    dumps,
    hosts,
    loads,
    mappings,
    pools,
)
from hpcbatch.version import __version__

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

    @property
    def _os_releases(self) -> dict[str, Mapping[str, str]]:
        """Each host's ``/etc/os-release`` fields (lower-cased name), read once; kept by the
        pool manager, whose pools select hosts by ``imageReference`` with them."""
        return self.ctx.pool_manager.host_releases

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
                self._os_releases.pop(host.name.lower(), None)  # it may be another machine now
                conn.execute(hosts.insert().values(
                    key=host.name.lower(), name=host.name,
                    spec=dumps(host.model_dump(mode="json")), pool_key=None))
        for key in self.ctx.pool_manager.pool_keys():
            self.ctx.pool_manager.reconcile(key)
        self.learn_soon()
        return [self._shown(self._host_wire(h.model_dump(mode="json"), None)) for h in parsed]

    @staticmethod
    def _host_wire(spec: dict[str, Any], pool_key: str | None) -> dict[str, Any]:
        return {**spec, "poolId": pool_key}

    @staticmethod
    def _shown(h: dict[str, Any]) -> dict[str, Any]:
        """A host as ``hosts add`` and ``hosts list`` show it: an ssh host left at port 22
        shows the port SSH really uses (the ssh config's ``Port`` for its address,
        :func:`~hpcbatch.providers.inventory.ssh_target`)."""
        if h.get("provider", "ssh") == "ssh" and h.get("port", 22) == 22:
            h["port"] = ssh_target(Host.model_validate(
                {k: v for k, v in h.items() if k != "poolId"})).port
        return h

    def list_hosts(self) -> list[dict[str, Any]]:
        """Return the inventory as ``hosts list`` shows it: each host with the pool it belongs
        to (or None) and its effective SSH ``port`` (the ssh config's ``Port`` for its
        address when the inventory leaves 22: :func:`~hpcbatch.providers.inventory.ssh_target`).
        """
        return [self._shown(h) for h in self.stored_hosts()]

    def stored_hosts(self) -> list[dict[str, Any]]:
        """Return the inventory as stored: each host's fields with its ``poolId`` (or None)."""
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
                pool = Store.fetch_one(conn, pools, key=row["pool_key"])
                pool_id = pool["id"] if pool is not None else row["pool_key"]
                raise ConflictError(
                    f"Host {row['name']} belongs to pool {pool_id} (its node {row['name']}); "
                    f"remove the node first (hpcbatch node remove --pool-id {pool_id} "
                    f"--node-id {row['name']}, or shrink the pool), then the host.",
                    code="HostInUse", values={"PoolId": pool_id, "NodeId": row["name"]})
            conn.execute(hosts.delete().where(hosts.c.key == name.lower()))
        self._os_releases.pop(name.lower(), None)

    async def supported_images(self) -> list[dict[str, Any]]:
        """The images the inventory's hosts offer ("Account - List Supported Images").

        Each host's ``/etc/os-release`` is read over its transport (in parallel) the
        first time and kept for the life of the service; a host that cannot be
        reached offers nothing until it can (logged).

        Returns
        -------
        list of dict
            Batch's ``ImageInformation`` items (:func:`hpcbatch.batch.images.supported_images`).
        """
        hosts_ = await self.learn_releases()
        return images.supported_images(self._os_releases[h.name.lower()] for h in hosts_
                                       if h.name.lower() in self._os_releases)

    async def learn_releases(self) -> list[Host]:
        """Read the ``/etc/os-release`` of every inventory host not read yet (in parallel).

        A host that cannot be reached is logged and read again next time. Pools that
        select hosts by ``imageReference`` take a host once its OS is known.

        Returns
        -------
        list of Host
            The inventory's hosts.
        """
        hosts_ = [Host.model_validate({k: v for k, v in h.items() if k != "poolId"})
                  for h in self.stored_hosts()]
        unread = [h for h in hosts_ if h.name.lower() not in self._os_releases]
        if unread:
            found = await asyncio.to_thread(preflight.read_os_releases, unread)
            for name, text in found.items():
                if isinstance(text, Exception):
                    log.warning("host %s: cannot read /etc/os-release: %s", name, text)
                else:
                    self._os_releases[name.lower()] = images.parse_os_release(text)
        return hosts_

    def learn_soon(self) -> None:
        """When a pool selects hosts by ``imageReference``, read the hosts' OS in the
        background (:meth:`learn_releases`) and let every pool take what now fits."""
        pm = self.ctx.pool_manager
        specs = [s for s in map(pm.spec, pm.pool_keys())
                 if s is not None and images.wanted_image(s.virtual_machine_configuration)]
        if not specs:
            return
        hosts_ = [Host.model_validate({k: v for k, v in h.items() if k != "poolId"})
                  for h in self.stored_hosts() if h["poolId"] is None]
        if not any(pm.host_misfit(s, h) == "unread" for s in specs for h in hosts_):
            return  # every free host's fit is known (its OS, or its inventory images)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.ctx.background(self._learn_and_reconcile())

    async def _learn_and_reconcile(self) -> None:
        await self.learn_releases()
        for key in self.ctx.pool_manager.pool_keys():
            self.ctx.pool_manager.reconcile(key)

    async def check_hosts(self, pool_id: str | None = None,
                          launcher: str = "mpiexec") -> dict[str, Any]:
        """Preflight every inventory host, or a pool's (hpcbatch extension:
        ``POST /inventory/hosts/check``).

        In parallel, per host: SSH reachability and host key, the ``python`` and
        its hpcbatch/distributed versions against the service's, free disk under
        ``root_dir``, the MPI launcher on the task ``PATH``
        (:mod:`hpcbatch.providers.preflight`). For a pool with a
        ``containerConfiguration``: a container runtime of its type on the task
        ``PATH``. For a pool with inter-node communication whose nodes hold the
        pool's SSH key: ssh from each node to each other node with that key, as
        the pool's MPI launchers do.

        Parameters
        ----------
        pool_id
            Check only this pool's hosts (those it holds, else the free hosts
            its ``vmSize`` may take), and their pairs; None: every host.
        launcher
            The MPI launcher to look for (a name or a path).

        Returns
        -------
        dict
            ``{"value": [{host, check, status, detail, fix}, ...], "service":
            {"hpcbatch": version, "distributed": version}, "failed": [host, ...]}``.

        Raises
        ------
        NotFoundError
            ``PoolNotFound``.
        """
        hosts_ = [Host.model_validate({k: v for k, v in h.items() if k != "poolId"})
                  for h in self._hosts_to_check(pool_id)]  # PoolNotFound first
        expected = preflight.Expected(hpcbatch=__version__, distributed=distributed.__version__,
                                      launcher=launcher, runtimes=self._runtimes(pool_id))
        checks = await asyncio.to_thread(preflight.check_hosts, hosts_, expected)
        if pool_id is not None:
            checks += await self._check_pairs(pool_id)
        failed = list(dict.fromkeys(c.host for c in checks if c.status == "fail"))
        return {"value": [c.to_wire() for c in checks],
                "service": {"hpcbatch": expected.hpcbatch,
                            "distributed": expected.distributed},
                "failed": failed}

    def _runtimes(self, pool_id: str | None) -> tuple[str, ...]:
        """The container runtimes a pool's nodes look for (none without a pool or
        without ``containerConfiguration``)."""
        if pool_id is None:
            return ()
        with self.ctx.store.read() as conn:
            spec = self.ctx.pool_manager.spec(pool_row(conn, pool_id)["key"])
        cc = check_container_configuration(spec.virtual_machine_configuration if spec else None)
        return containers.runtime_names(cc.get("type")) if cc else ()

    def _hosts_to_check(self, pool_id: str | None) -> list[dict[str, Any]]:
        listed = self.stored_hosts()
        if pool_id is None:
            return listed
        with self.ctx.store.read() as conn:
            row = pool_row(conn, pool_id)
        held = [h for h in listed if h["poolId"] is not None
                and str(h["poolId"]).lower() == pool_id.lower()]
        if held:
            return held
        spec = self.ctx.pool_manager.spec(row["key"])
        vm_size = spec.vm_size if spec else "any"
        return [h for h in listed if h["poolId"] is None
                and Host.model_validate({k: v for k, v in h.items() if k != "poolId"})
                .matches(vm_size)]

    async def _check_pairs(self, pool_id: str) -> list[preflight.Check]:
        """ssh between each pair of the pool's nodes with its key (inter-node pools)."""
        pm = self.ctx.pool_manager
        key = pool_id.lower()
        spec = pm.spec(key)
        if spec is None or not spec.enable_inter_node_communication:
            return []
        nodes_ = [n for n in pm.nodes_of(key) if n.root_dir]
        if nodes_ and pm.mpi_local_launch(nodes_):
            return [preflight.Check(n.host.name, "ssh-to peers", "skip",
                                    f"{n.host.name}: pool {pool_id}'s nodes are local; MPI "
                                    "launchers reach them without SSH") for n in nodes_]
        keyed = [(n, pm.keys.key_path(n)) for n in nodes_]
        if len(nodes_) < 2 or any(path is None for _, path in keyed):
            return [preflight.Check(
                n.host.name, "ssh-to peers", "skip",
                f"{n.host.name}: pool {pool_id} has {len(nodes_)} node(s) holding its SSH "
                "key; run hosts check again when the pool is steady") for n in nodes_]
        gang = [n.gang_node() for n in nodes_]

        def one(i: int) -> list[preflight.Check]:
            node, key_path = keyed[i]
            assert node.root_dir is not None and key_path is not None
            files = multiinstance.ssh_files(
                gang, posixpath.join(node.root_dir, preflight.CHECK_DIR), key_path)
            peers = [(g.node_id, g.address) for j, g in enumerate(gang) if j != i]
            return preflight.check_peers(node.host, node.root_dir, files, peers, pool_id)

        per_node = await asyncio.gather(*(asyncio.to_thread(one, i) for i in range(len(gang))))
        return [c for checks in per_node for c in checks]
