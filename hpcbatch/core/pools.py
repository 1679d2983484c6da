"""Pools: "Pool - Add/Get/List/Patch/Update Properties/Resize/Delete" and resize events."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpcbatch.batch import events, images
from hpcbatch.batch.errors import (
    BadRequestError,
    ConflictError,
    InvalidPropertyValueError,
    exists,
)
from hpcbatch.batch.models import (
    PoolResize,
    PoolSpec,
)
from hpcbatch.batch.states import (
    ALLOCATION,
    NODE_JOINING,
    AllocationState,
    Kind,
    PoolState,
)
from hpcbatch.batch.wire import iso, new_etag, utcnow
from hpcbatch.core.certificates import check_references as check_certificate_references
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.rows import check_not_deleting, pool_row, returned_spec
from hpcbatch.core.transitions import check
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.trust import pool_ssh_key
from hpcbatch.store import filters
from hpcbatch.store.database import (
    Store,
    dumps,
    hosts,
    loads,
    mappings,
    pools,
)

if TYPE_CHECKING:
    from hpcbatch.core.applications import Applications
    from hpcbatch.core.autoscaler import Autoscaler
    from hpcbatch.core.inventory import Inventory
    from hpcbatch.core.node_runtime import NodeRuntime
    from hpcbatch.core.pool_manager import PoolManager

log = logging.getLogger(__name__)



def check_steady(pool_manager: PoolManager, row: Mapping[str, Any]) -> None:
    """Refuse a change of a pool's size unless its allocation state is steady.

    Pool - Resize and Pool - Remove Nodes: "You can only resize a Pool when its
    allocation state is steady" (REST Pool - Resize); "This operation can only
    run when the allocation state of the Pool is steady" (REST Pool - Remove Nodes).

    Parameters
    ----------
    pool_manager
        Knows the pool's allocation state.
    row
        The pool's record (``key``, ``id``).

    Raises
    ------
    ConflictError
        ``PoolBeingResized`` (409) when the pool is ``resizing`` or ``stopping``.
    """
    state = pool_manager.allocation_state(row["key"])
    if state != AllocationState.steady:
        raise ConflictError(f"The specified pool is being resized (allocationState {state}).",
                            code="PoolBeingResized",
                            values={"PoolId": row["id"], "AllocationState": state})


def deleting_allocation_state(nodes_: Sequence[NodeRuntime]) -> AllocationState:
    """The allocation state of a deleting pool: ``resizing`` while it has nodes, else ``steady``.

    "any ongoing resize operation on the Pool are stopped; the Batch service
    starts resizing the Pool to zero Compute Nodes" (REST Pool - Delete).

    Parameters
    ----------
    nodes_
        The pool's nodes (leaving ones included).
    """
    return AllocationState.resizing if nodes_ else AllocationState.steady


def allocation_change(current: str, new: AllocationState) -> str:
    """Check a change of a pool's stored ``allocationState``; return the new state.

    The store records the state at a resize's start and end and once a second,
    so it can miss a ``steady`` between two records: a Stop Resize that
    completed just before a new resize, or before Pool - Delete started
    resizing the pool to zero. Such a change (``stopping`` -> ``resizing``) is
    checked as the two it stands for, through ``steady``.

    Parameters
    ----------
    current, new
        ``AllocationState`` values (stored, computed).

    Raises
    ------
    hpcbatch.batch.states.IllegalStateTransition
        A change the allocation table does not allow, even through ``steady``.
    """
    if (current != new and current != AllocationState.steady
            and new not in ALLOCATION.allowed(current)):
        current = check(Kind.allocation, current, AllocationState.steady)
    return check(Kind.allocation, current, new)


WARNINGS_PROPERTY = "hpcbatchWarnings"
"""Pool property (not Batch's; Batch clients ignore it) listing conditions the user should
know, e.g. nodes whose tasks share the node agent's identity."""


def identity_warnings(nodes_: Iterable[NodeRuntime]) -> list[dict[str, Any]]:
    """Return the pool warning for nodes that cannot run tasks as their own users, if any.

    Parameters
    ----------
    nodes_
        The pool's nodes.

    Returns
    -------
    list of dict
        ``[{"code": "TasksShareNodeAgentIdentity", "message", "values": [{"name":
        "NodeId", "value"}, ...]}]`` or ``[]``: Batch's error shape.
    """
    shared = [n for n in nodes_ if n.user_switching is False]
    if not shared:
        return []
    reasons = sorted({n.switching_note or "" for n in shared})
    return [{"code": "TasksShareNodeAgentIdentity",
             "message": ("Tasks on these nodes share the node agent's identity: userIdentity is "
                         "not enforced, and tasks can read the node's secrets and each other's "
                         "files (" + "; ".join(reasons) + ")."),
             "values": [{"name": "NodeId", "value": n.node_id} for n in shared]}]


class Pools:
    """The account's pools.

    Parameters
    ----------
    ctx
        The service context.
    applications
        Resolves ``applicationPackageReferences``.
    autoscaler
        Checks and evaluates autoscale formulas.
    inventory
        Reads the hosts' operating systems for pools with an ``imageReference``.
    """

    def __init__(self, ctx: ServiceContext, applications: Applications,
                 autoscaler: Autoscaler, inventory: Inventory) -> None:
        self.ctx = ctx
        self.applications = applications
        self.autoscaler = autoscaler
        self.inventory = inventory
        self.resizing: dict[str, tuple[datetime, str, tuple[int, int]]] = {}
        """Pools being resized: the time the resize started, the ``nodeDeallocationOption``
        its PoolResizeStartEvent gave and its (dedicated, low-priority) targets (for its
        PoolResizeCompleteEvent)."""
        self._allocation: dict[str, str] = {}
        """Per pool: the ``allocationState`` last written to the store."""
        # An autoscale result resizes the pool as Pool - Resize does.
        autoscaler.resize = lambda key, target, low, option: self.resize_to(
            key, target, low, option, autoscale=True)

    def add_pool(self, body: Mapping[str, Any], *, auto_pool: bool = False) -> str:
        """Add a pool (``POST /pools``, "Pool - Add").

        ``targetDedicatedNodes`` are served by the inventory's dedicated hosts,
        ``targetLowPriorityNodes`` by its hosts marked ``low_priority``; an
        ``imageReference`` takes only hosts whose OS is that image.

        Parameters
        ----------
        body
            ``PoolAddParameter`` JSON.
        auto_pool
            The pool is a job's or job schedule's auto pool
            (:mod:`hpcbatch.core.auto_pools`): its create event says so, and a pool
            no inventory host could ever serve is refused (``InsufficientInventory``)
            rather than created to wait forever.

        Returns
        -------
        str
            The pool ID.

        Raises
        ------
        BadRequestError
            Invalid or unknown properties (the message names them).
        ConflictError
            ``PoolExists``; for an auto pool, ``InsufficientInventory``.
        """
        spec = PoolSpec.from_wire(body, what="pool")
        self.autoscaler.check(spec)
        for name, value in (("targetDedicatedNodes", spec.target_dedicated_nodes),
                            ("targetLowPriorityNodes", spec.target_low_priority_nodes)):
            if spec.enable_auto_scale and value is not None:
                raise InvalidPropertyValueError(
                    name, value, f"{name} must not be given when enableAutoScale is true")
        for name, setting in (("autoScaleFormula", spec.auto_scale_formula),
                              ("autoScaleEvaluationInterval", spec.auto_scale_evaluation_interval)):
            # Batch: "This property must not be specified if enableAutoScale is set to false"
            if not spec.enable_auto_scale and setting is not None:
                raise InvalidPropertyValueError(
                    name, setting, f"{name} must not be given unless enableAutoScale is true")
        target = spec.target_dedicated_nodes or 0
        low_target = spec.target_low_priority_nodes or 0
        if auto_pool and (target or low_target or spec.enable_auto_scale):
            missing = self.unservable(spec, dedicated=bool(target or spec.enable_auto_scale),
                                      low_priority=bool(low_target))
            if missing:
                raise ConflictError(missing, code="InsufficientInventory",
                                    values={"VmSize": spec.vm_size})
        self.applications.resolve_packages([r.to_wire() for r in spec.application_package_references or []],
                              "applicationPackageReferences")
        now = utcnow()
        with self.ctx.store.begin() as conn:
            if Store.fetch_one(conn, pools, key=spec.id.lower()) is not None:
                raise exists("Pool", spec.id)
            check_certificate_references(conn, spec.certificate_references)
            count = conn.execute(sa.select(sa.func.count()).select_from(pools)).scalar() or 0
            if count >= self.ctx.quotas.pools:
                raise ConflictError(
                    f"The account has reached its pool quota of {self.ctx.quotas.pools}.",
                    code="PoolQuotaReached", values={"Quota": str(self.ctx.quotas.pools)})
            status = {"creationTime": iso(now), "stateTransitionTime": iso(now),
                      "allocationStateTransitionTime": iso(now), "lastModified": iso(now),
                      "eTag": new_etag(), "target": target, "targetLowPriority": low_target}
            ssh_key = pool_ssh_key(spec.id) if spec.enable_inter_node_communication else None
            if ssh_key is not None:
                status["sshKey"] = list(ssh_key)
            seq = self.ctx.store.next_seq(conn, "pool")
            conn.execute(pools.insert().values(
                key=spec.id.lower(), id=spec.id, seq=seq,
                state=PoolState.active, allocation_state=AllocationState.resizing,
                spec=dumps(spec.to_wire()), status=dumps(status)))
        key = ssh_key
        self.ctx.pool_manager.low_priority_targets[spec.id.lower()] = low_target
        self.ctx.pool_manager.set_pool(spec.id.lower(), spec, target, key, seq=seq)
        if spec.enable_auto_scale:
            self.ctx.background(self.autoscaler.evaluate_due())
        if images.wanted_image(spec.virtual_machine_configuration) is not None:
            self.inventory.learn_soon()
        pool_json = self.get_pool(spec.id)
        self.ctx.emit("PoolCreateEvent", events.pool_create_event(pool_json,
                                                                  is_auto_pool=auto_pool))
        if not spec.enable_auto_scale:  # an autoscale pool's first resize is its formula's
            self._start_resize(spec.id.lower(), pool_json, current=(0, 0))
        return spec.id

    def pool_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        spec = loads(row["spec"])
        status = loads(row["status"])
        key = row["key"]
        nodes_ = self.ctx.pool_manager.nodes_of(key)
        out = dict(returned_spec(row, spec))
        out.update({
            "url": f"{self.ctx.base_url}/pools/{row['id']}",
            "eTag": status["eTag"], "lastModified": status["lastModified"],
            "creationTime": status["creationTime"], "state": row["state"],
            "stateTransitionTime": status["stateTransitionTime"],
            "allocationState": self.ctx.pool_manager.allocation_state(key)
            if row["state"] == PoolState.active else deleting_allocation_state(nodes_),
            "allocationStateTransitionTime": status["allocationStateTransitionTime"],
            "targetDedicatedNodes": status["target"],
            # leaving nodes count until they are gone
            "currentDedicatedNodes": sum(1 for n in nodes_ if not n.host.low_priority),
            "currentLowPriorityNodes": sum(1 for n in nodes_ if n.host.low_priority),
            "targetLowPriorityNodes": status.get("targetLowPriority", 0),
            "taskSlotsPerNode": PoolSpec.model_validate(spec).slots,
        })
        if "autoScaleRun" in status:
            out["autoScaleRun"] = status["autoScaleRun"]
        warnings = identity_warnings(nodes_)
        if warnings:
            out[WARNINGS_PROPERTY] = warnings
        short = status["target"] - out["currentDedicatedNodes"]
        low_short = out["targetLowPriorityNodes"] - out["currentLowPriorityNodes"]
        if (row["state"] == PoolState.active and (short > 0 or low_short > 0)
                and not self.ctx.pool_manager.can_grow(key)
                and not any(n.state in NODE_JOINING for n in nodes_)):
            errors = self.shortage_errors(PoolSpec.model_validate(spec), short, low_short)
            if errors:
                out["resizeErrors"] = errors
        if row["state"] == PoolState.active and short > 0 and self.ctx.pool_manager.is_quota_blocked(key):
            out["resizeErrors"] = [{
                "code": "AccountCoreQuotaReached",
                "message": f"The account's dedicated core quota ({self.ctx.quotas.dedicated_cores}) "
                           f"leaves no room for {short} more node(s).",
            }]
        return out

    def _inventory_hosts(self) -> list[Host]:
        with self.ctx.store.read() as conn:
            texts = conn.execute(sa.select(hosts.c.spec)).scalars().all()
        return [Host.model_validate(loads(t)) for t in texts]

    def unservable(self, spec: PoolSpec, *, dedicated: bool, low_priority: bool) -> str | None:
        """Why no inventory host could ever serve a pool (taken or free), or None.

        Parameters
        ----------
        spec
            The pool: ``vmSize`` and ``imageReference`` select hosts.
        dedicated, low_priority
            Which kinds of node it wants.

        Returns
        -------
        str or None
            A sentence naming the ``vmSize``, image or kind nothing in the inventory
            offers; None when some host of each wanted kind fits (or its OS is not
            known yet).
        """
        pm = self.ctx.pool_manager
        fits = [h for h in self._inventory_hosts() if pm.host_misfit(spec, h) in (None, "unread")]
        for wanted, low, kind in ((dedicated, False, "dedicated"),
                                  (low_priority, True, "low-priority")):
            if wanted and not any(h.low_priority is low for h in fits):
                return self._no_host_message(spec, kind)
        return None

    def _no_host_message(self, spec: PoolSpec, kind: str) -> str:
        image = images.wanted_image(spec.virtual_machine_configuration)
        what = f"vmSize '{spec.vm_size}'"
        if image is not None:
            what += f" and image {images.describe(image)}"
        if kind == "low-priority":
            return (f"The inventory has no low-priority host (low_priority: true) matching "
                    f"{what}: targetLowPriorityNodes cannot be served.")
        return f"The inventory has no dedicated host matching {what}."

    def shortage_errors(self, spec: PoolSpec, short: int, low_short: int) -> list[dict[str, Any]]:
        """The ``resizeErrors`` of a pool that cannot grow to its targets.

        Parameters
        ----------
        spec
            The pool's specification.
        short, low_short
            Dedicated and low-priority nodes it lacks.

        Returns
        -------
        list of dict
            ``InsufficientInventory`` per kind it lacks, naming the ``vmSize``, the
            image when the pool has one (no host runs it) and the kind.
        """
        pm = self.ctx.pool_manager
        all_hosts = self._inventory_hosts()
        errors = []
        for count, low in ((short, False), (low_short, True)):
            if count <= 0:
                continue
            kind = "low-priority" if low else "dedicated"
            of_kind = [h for h in all_hosts if h.low_priority is low]
            misfits = [pm.host_misfit(spec, h) for h in of_kind]
            if not of_kind or (all(m is not None for m in misfits) and "unread" not in misfits):
                message = self._no_host_message(spec, kind)
            elif "unread" in misfits and None not in misfits:
                continue  # the hosts' OS is being read: the pool may grow yet
            else:
                message = (f"The inventory has no free {kind} host matching vmSize "
                           f"'{spec.vm_size}' for {count} more node(s).")
            errors.append({"code": "InsufficientInventory", "message": message})
        return errors

    def get_pool(self, pool_id: str) -> dict[str, Any]:
        """Return a pool's ``CloudPool`` JSON ("Pool - Get"). Raises ``PoolNotFound``."""
        with self.ctx.store.read() as conn:
            return self.pool_wire(pool_row(conn, pool_id))

    def list_pools(self, filter_: str | None = None) -> list[dict[str, Any]]:
        """Return every pool's JSON ("Pool - List"), optionally OData-filtered."""
        stmt = sa.select(pools).order_by(pools.c.seq)
        if filter_:
            stmt = stmt.where(filters.compile_filter(filter_, filters.POOL_COLUMNS))
        with self.ctx.store.read() as conn:
            return [self.pool_wire(r) for r in mappings(conn.execute(stmt))]

    def update_pool(self, pool_id: str, body: Mapping[str, Any], replace: bool = False) -> None:
        """Update a pool's mutable properties ("Pool - Patch"; with ``replace``,
        "Pool - Update Properties", which clears what the body leaves out).

        Mutable: ``startTask``, ``metadata``, ``applicationPackageReferences``,
        ``targetNodeCommunicationMode``. A new start task runs on nodes that join
        or restart from now on, as in Batch.

        Raises
        ------
        BadRequestError
            Another property, or an invalid value (named).
        ConflictError
            ``PoolBeingDeleted``.
        """
        mutable = {"startTask", "metadata", "applicationPackageReferences",
                   "targetNodeCommunicationMode"}
        if not isinstance(body, Mapping):
            raise BadRequestError("The request body must be a JSON object.")
        mutable.add("certificateReferences")  # checked against the account's certificates
        extra = set(body) - mutable
        if extra:
            name = min(extra)
            raise BadRequestError(f"The property {name} cannot be updated on a pool; updatable: "
                                  + ", ".join(sorted(mutable)) + ".",
                                  code="InvalidRequestBody", values={"PropertyName": name})
        with self.ctx.store.begin() as conn:
            row = pool_row(conn, pool_id)
            check_not_deleting(row)
            spec = loads(row["spec"])
            if replace:
                for k in mutable - {"targetNodeCommunicationMode"}:
                    spec.pop(k, None)
            spec.update({k: v for k, v in body.items() if v is not None})
            check_certificate_references(conn, spec.get("certificateReferences"))
            parsed = PoolSpec.from_wire(spec, what="pool")
            self.applications.resolve_packages([r.to_wire() for r in parsed.application_package_references
                                   or []], "applicationPackageReferences")
            status = loads(row["status"])
            status.update(lastModified=iso(utcnow()), eTag=new_etag())
            Store.update(conn, pools, {"key": row["key"]}, spec=dumps(parsed.to_wire()),
                         status=dumps(status))
        self.ctx.pool_manager.update_spec(row["key"], parsed)

    def replace_pool_properties(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """"Pool - Update Properties": replace the mutable properties; see :meth:`update_pool`."""
        self.update_pool(pool_id, body, replace=True)

    def resize_pool(self, pool_id: str, body: Mapping[str, Any]) -> None:
        """Resize a pool ("Pool - Resize"): take or give back inventory hosts.

        Raises
        ------
        NotFoundError
            ``PoolNotFound``.
        ConflictError
            ``PoolBeingDeleted``; ``AutoScaleEnabled``; ``PoolBeingResized`` when
            the pool's allocation state is not steady: "You can only resize a
            Pool when its allocation state is steady. If the Pool is already
            resizing, the request fails with status code 409" (REST Pool - Resize).
        """
        resize = PoolResize.from_wire(body, what="resize")
        with self.ctx.store.begin() as conn:
            row = pool_row(conn, pool_id)
            check_not_deleting(row)
            if loads(row["spec"]).get("enableAutoScale"):
                raise ConflictError("The pool has autoscale enabled; disable it to resize by hand.",
                                    code="AutoScaleEnabled")
            check_steady(self.ctx.pool_manager, row)
            status = loads(row["status"])
            status["target"] = resize.target_dedicated_nodes or 0
            status["targetLowPriority"] = resize.target_low_priority_nodes or 0
            status["lastModified"] = iso(utcnow())
            status["eTag"] = new_etag()
            Store.update(conn, pools, {"key": row["key"]}, status=dumps(status))
        self.resize_to(row["key"], status["target"], status["targetLowPriority"],
                       resize.node_deallocation_option)

    def resize_to(self, pool_key: str, target: int, low_target: int,
                  option: str | None = None, *, autoscale: bool = False) -> None:
        """Resize a pool to new targets: the one path of "Pool - Resize" and of autoscale
        results (in Batch both are resizes and log ``PoolResizeStartEvent``, then
        ``PoolResizeCompleteEvent``).

        The pool's stored targets are the caller's. An autoscale result equal to the
        pool's targets is no resize (no event).

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        target, low_target
            ``targetDedicatedNodes`` and ``targetLowPriorityNodes``.
        option
            ``nodeDeallocationOption`` as given for the nodes the pool gives up. None:
            ``requeue`` for Pool - Resize; the pool's last one for autoscale
            (:meth:`~hpcbatch.core.pool_manager.PoolManager.set_target`).
        autoscale
            The targets are an autoscale result (``$NodeDeallocationOption``).
        """
        pm = self.ctx.pool_manager
        spec = pm.spec(pool_key)
        if spec is None:
            return
        used = option if autoscale else option or "requeue"
        if autoscale and (pm.targets.get(pool_key, 0),
                          pm.low_priority_targets.get(pool_key, 0)) == (target, low_target):
            pm.set_target(pool_key, target, used)  # no resize: the option, a reconcile
            return
        current = self._current_nodes(pool_key)  # before the pool takes or gives back hosts
        pm.low_priority_targets[pool_key] = low_target
        pm.set_target(pool_key, target, used)
        shrinking = target < current[0] or low_target < current[1]
        # The events give the option the shrink uses (a grow without one: "invalid").
        self._start_resize(pool_key, self.get_pool(spec.id),
                           option or (pm.deallocation.get(pool_key, "requeue") if shrinking
                                      else None), current=current)

    def _current_nodes(self, pool_key: str) -> tuple[int, int]:
        """The pool's dedicated and low-priority nodes now (``currentDedicatedNodes``,
        ``currentLowPriorityNodes``: leaving nodes count until they are gone)."""
        nodes_ = self.ctx.pool_manager.nodes_of(pool_key)
        low = sum(1 for n in nodes_ if n.host.low_priority)
        return len(nodes_) - low, low

    def stop_resize_pool(self, pool_id: str) -> None:
        """Stop a pool's resize ("Pool - Stop Resize"); a steady pool is left as it is.

        The pool keeps the nodes it has (the nodes joining or leaving finish);
        its target becomes their number and its allocation state goes
        ``resizing`` -> ``stopping`` -> ``steady`` (REST Pool - Stop Resize).

        Raises
        ------
        NotFoundError
            ``PoolNotFound``.
        ConflictError
            ``PoolBeingDeleted``.
        """
        pm = self.ctx.pool_manager
        with self.ctx.store.read() as conn:
            row = pool_row(conn, pool_id)
        check_not_deleting(row)
        key = row["key"]
        if pm.allocation_state(key) != AllocationState.resizing:
            return
        self.sync_allocation_states([key])  # stored resizing before stopping
        pm.stop_resize(key)
        with self.ctx.store.begin() as conn:
            status = loads(pool_row(conn, pool_id)["status"])
            status.update(target=pm.targets.get(key, 0),
                          targetLowPriority=pm.low_priority_targets.get(key, 0),
                          lastModified=iso(utcnow()),
                          eTag=new_etag())
            Store.update(conn, pools, {"key": key}, status=dumps(status))
        self.sync_allocation_states([key])

    def _start_resize(self, pool_key: str, pool_json: dict[str, Any],
                      option: str | None = None, *, current: tuple[int, int]) -> None:
        """Emit PoolResizeStartEvent; PoolResizeCompleteEvent follows once allocation is steady.

        ``current`` is the pool's (dedicated, low-priority) node count as the resize
        starts: ``pool_json`` is read after the pool took its new hosts. The complete
        event gives the start event's ``nodeDeallocationOption``. A resize still under
        way (an autoscale result changed the targets again) completes first: each start
        event has its complete event.
        """
        earlier = self.resizing.pop(pool_key, None)
        if earlier is not None:  # it ends with the nodes the pool has now, toward its targets
            started, earlier_option, targets = earlier
            self.ctx.emit("PoolResizeCompleteEvent", events.pool_resize_complete_event(
                {**{k: v for k, v in pool_json.items() if k != "resizeErrors"},
                 "currentDedicatedNodes": current[0], "currentLowPriorityNodes": current[1],
                 "targetDedicatedNodes": targets[0], "targetLowPriorityNodes": targets[1]},
                start_time=started, end_time=utcnow(), node_deallocation_option=earlier_option))
        body = events.pool_resize_start_event(
            {**pool_json, "currentDedicatedNodes": current[0],
             "currentLowPriorityNodes": current[1]}, node_deallocation_option=option)
        self.resizing[pool_key] = (utcnow(), body["nodeDeallocationOption"],
                                   (body["targetDedicatedNodes"], body["targetLowPriorityNodes"]))
        self.sync_allocation_states([pool_key])
        self.ctx.emit("PoolResizeStartEvent", body)

    def sync_allocation_states(self, pool_keys: Iterable[str] | None = None) -> None:
        """Record pools' ``allocationState`` (and its transition time) where it changed.

        The pool manager knows the live state (``resizing`` while nodes are
        created or leave, ``steady`` once the pool holds its target); the store
        keeps it for ``$filter=allocationState eq '...'``. Called when a resize
        starts or completes, and once a second by housekeeping (autoscale, node loss).

        Parameters
        ----------
        pool_keys
            The pools to check (lower-cased IDs); None: every active pool.
        """
        pm = self.ctx.pool_manager
        changed = {}
        for key in (pm.pool_keys() if pool_keys is None else pool_keys):
            if pm.spec(key) is None:
                continue
            state = pm.allocation_state(key)
            if self._allocation.get(key) != state:
                changed[key] = state
        if not changed:
            return
        now = iso(utcnow())
        with self.ctx.store.begin() as conn:
            for key, state in changed.items():
                row = Store.fetch_one(conn, pools, key=key)
                if row is None or row["state"] != PoolState.active:
                    continue
                if row["allocation_state"] != state:
                    status = loads(row["status"])
                    status["allocationStateTransitionTime"] = now
                    Store.update(conn, pools, {"key": key},
                                 allocation_state=allocation_change(row["allocation_state"],
                                                                    state),
                                 status=dumps(status))
        self._allocation.update(changed)

    def finish_resizes(self) -> None:
        """Emit PoolResizeCompleteEvent for the resizes whose allocation became steady."""
        if self.resizing:
            self.sync_allocation_states(list(self.resizing))
        for key, (started, option, _targets) in list(self.resizing.items()):
            spec = self.ctx.pool_manager.spec(key)
            if spec is None:
                self.resizing.pop(key)
            elif self.ctx.pool_manager.allocation_state(key) == AllocationState.steady:
                self.resizing.pop(key)
                pool = self.get_pool(spec.id)
                self.ctx.emit("PoolResizeCompleteEvent", events.pool_resize_complete_event(
                    pool, start_time=started, end_time=utcnow(),
                    node_deallocation_option=option))

    def delete_pool(self, pool_id: str) -> None:
        """Delete a pool ("Pool - Delete"): stop its nodes, give their hosts back.

        The pool is ``deleting`` (a new ``eTag`` and ``lastModified``) until its
        nodes are gone.

        Raises
        ------
        NotFoundError
            ``PoolNotFound``.
        ConflictError
            ``PoolBeingDeleted`` when the pool is deleting already (REST Pool - Delete).
        """
        with self.ctx.store.begin() as conn:
            row = pool_row(conn, pool_id)
            check_not_deleting(row)
            status = loads(row["status"])
            now = iso(utcnow())
            status.update(stateTransitionTime=now, lastModified=now, eTag=new_etag())
            allocation = allocation_change(
                row["allocation_state"],
                deleting_allocation_state(self.ctx.pool_manager.nodes_of(row["key"])))
            if allocation != row["allocation_state"]:
                status["allocationStateTransitionTime"] = now
            Store.update(conn, pools, {"key": row["key"]},
                         state=check(Kind.pool, row["state"], PoolState.deleting),
                         allocation_state=allocation, status=dumps(status))
        self.ctx.emit("PoolDeleteStartEvent", events.pool_delete_start_event(row["id"]))
        self.ctx.background(self.finish_delete(row["key"]))

    async def finish_delete(self, key: str) -> None:
        started = utcnow()
        await self.ctx.pool_manager.delete_pool(key)
        self.autoscaler.forget(key)
        with self.ctx.store.read() as conn:
            row = Store.fetch_one(conn, pools, key=key)
        if row is not None:
            self.ctx.emit("PoolDeleteCompleteEvent", events.pool_delete_complete_event(
                row["id"], start_time=started, end_time=utcnow()))
        with self.ctx.store.begin() as conn:
            conn.execute(pools.delete().where(pools.c.key == key))
            conn.execute(hosts.update().where(hosts.c.pool_key == key).values(pool_key=None))
