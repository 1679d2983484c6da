"""Auto pools: the pools the service creates for a job or a job schedule and deletes after.

Batch's ``poolInfo.autoPoolSpecification`` (REST ``AutoPoolSpecification``): instead of
naming a pool, a job (Job - Add) or a job schedule's ``jobSpecification`` (Job Schedule
- Add) describes one, and the service creates it from the inventory:

* ``poolLifetimeOption: job`` -- a pool per job, created with the job and deleted when
  the job completes (terminated, all tasks complete, wall clock) or is deleted; on a
  schedule, each job the schedule creates gets its own pool.
* ``poolLifetimeOption: jobschedule`` -- one pool for a schedule, created with its
  first job and deleted when the schedule completes or is deleted ("You may apply this
  option only to Job Schedules, not to Jobs").
* ``keepAlive: true`` -- the pool is left when its lifetime ends (the user deletes it).
* ``autoPoolIdPrefix`` -- the pool's ID is the prefix, ``_`` and a GUID (without a
  prefix, the GUID): at most 20 + 1 + 36 = 57 characters, inside Batch's 64.

The ``pool`` is a ``PoolSpecification`` validated as Pool - Add validates it (it goes
through :meth:`hpcbatch.core.pools.Pools.add_pool`). A pool that cannot be created
(an autoscale formula that does not parse, no inventory host that could ever serve
it, the pool quota) is a Batch ``JobSchedulingError``: the job's
``executionInfo.schedulingError`` (:func:`scheduling_error`).

The owner keeps what it created under :data:`AUTO_POOL` in its status (not on the
wire): ``{"poolId", "lifetime", "keepAlive"}``; :meth:`AutoPools.release` ends it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.models import AutoPoolSpecification, PoolSpec
from hpcbatch.batch.states import PoolState
from hpcbatch.core.context import ServiceContext
from hpcbatch.core.rows import pool_row

if TYPE_CHECKING:
    from hpcbatch.core.pools import Pools

log = logging.getLogger(__name__)

AUTO_POOL = "autoPool"
"""Key, in a job's or job schedule's stored status, of the auto pool it owns."""


def auto_pool_id(prefix: str | None) -> str:
    """A new auto pool ID: ``{prefix}_{GUID}``, or the GUID without a prefix.

    Parameters
    ----------
    prefix
        ``autoPoolIdPrefix`` (validated: at most 20 ID characters), or None.

    Returns
    -------
    str
        At most 57 characters, unique.
    """
    suffix = str(uuid.uuid4())
    return f"{prefix}_{suffix}" if prefix else suffix


class AutoPoolError(HpcbatchError):
    """An auto pool could not be created; code, status and values are its cause's.

    Parameters
    ----------
    cause
        Pool - Add's error.
    where
        The path of the auto pool's ``pool`` in the request (e.g.
        ``poolInfo.autoPoolSpecification.pool``): a property the cause names
        (``PropertyName``, and in the message) is named by its full path.
    """

    def __init__(self, cause: HpcbatchError, where: str = "") -> None:
        message, values = cause.message, dict(cause.values)
        name = values.get("PropertyName")
        if where and isinstance(name, str) and name:
            values["PropertyName"] = f"{where}.{name}"
            message = message.replace(f"for {name} ", f"for {where}.{name} ", 1)
        super().__init__(f"The auto pool could not be created: {message}",
                         code=cause.code, status=cause.status, values=values)


def scheduling_error(exc: HpcbatchError) -> dict[str, Any]:
    """Batch's ``JobSchedulingError`` for a job (or a schedule's job) that cannot be
    scheduled: its auto pool could not be created, or the schedule could not create it.

    Parameters
    ----------
    exc
        Why (an :class:`AutoPoolError` for an auto pool).

    Returns
    -------
    dict
        ``{"category": "usererror"|"servererror", "code", "message", "details":
        [{"name", "value"}]}``: a 4xx cause is the user's, a 5xx the service's.
    """
    return {"category": "usererror" if exc.status < 500 else "servererror",
            "code": exc.code, "message": exc.message,
            "details": [{"name": k, "value": str(v)} for k, v in exc.values.items()]}


def owned(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The auto pool a job or schedule owns, from its stored status (None: none)."""
    info = status.get(AUTO_POOL)
    return dict(info) if isinstance(info, Mapping) else None


class AutoPools:
    """Creates and ends auto pools through the account's pools.

    Parameters
    ----------
    ctx
        The service context.
    pools
        Pool - Add and Pool - Delete.
    """

    def __init__(self, ctx: ServiceContext, pools: Pools) -> None:
        self.ctx = ctx
        self.pools = pools

    @staticmethod
    def parse(wire: Mapping[str, Any] | None) -> AutoPoolSpecification | None:
        """The ``autoPoolSpecification`` of a stored job specification, parsed (None: none)."""
        if not wire:
            return None
        spec: AutoPoolSpecification = AutoPoolSpecification.model_validate(wire)
        return spec

    @staticmethod
    def pool_spec(auto: AutoPoolSpecification, pool_id: str) -> PoolSpec:
        """The ``PoolAddParameter`` of an auto pool: its ``pool`` with ``pool_id``."""
        spec: PoolSpec = PoolSpec.from_wire({**auto.pool.to_wire(), "id": pool_id},
                                            what="autoPoolSpecification.pool")
        return spec

    def create(self, auto: AutoPoolSpecification, pool_id: str | None = None, *,
               where: str = "poolInfo.autoPoolSpecification.pool") -> dict[str, Any]:
        """Create the pool an ``autoPoolSpecification`` describes.

        Parameters
        ----------
        auto
            The validated specification.
        pool_id
            The ID to give it (:func:`auto_pool_id`); None: a new one.
        where
            The path of ``auto.pool`` in its owner, for the property an error names.

        Returns
        -------
        dict
            What the owner keeps (:data:`AUTO_POOL`): ``{"poolId", "lifetime",
            "keepAlive"}``.

        Raises
        ------
        AutoPoolError
            The pool cannot be created, with the code Pool - Add would answer (bad formula,
            unknown application package, pool quota), or ``InsufficientInventory``
            when no inventory host could ever serve it
            (:meth:`~hpcbatch.core.pools.Pools.add_pool` with ``auto_pool``).
        """
        pool_id = pool_id or auto_pool_id(auto.auto_pool_id_prefix)
        try:
            self.pools.add_pool({**auto.pool.to_wire(), "id": pool_id}, auto_pool=True)
        except HpcbatchError as exc:
            raise AutoPoolError(exc, where) from exc
        log.info("auto pool %s created (lifetime %s)", pool_id, auto.pool_lifetime_option)
        return {"poolId": pool_id, "lifetime": auto.pool_lifetime_option,
                "keepAlive": bool(auto.keep_alive)}

    def exists(self, info: Mapping[str, Any] | None) -> bool:
        """Whether an owned auto pool is still there and active (not deleted by its user)."""
        if not info or not info.get("poolId"):
            return False
        try:
            with self.ctx.store.read() as conn:
                return bool(pool_row(conn, str(info["poolId"]))["state"] == PoolState.active)
        except HpcbatchError:
            return False

    def release(self, info: Mapping[str, Any] | None) -> None:
        """End an auto pool's lifetime: delete it, unless ``keepAlive`` (or it is gone).

        Parameters
        ----------
        info
            What the owner kept (:data:`AUTO_POOL`), or None (nothing to do).
        """
        if not info or info.get("keepAlive") or not self.exists(info):
            return
        try:
            self.pools.delete_pool(str(info["poolId"]))
            log.info("auto pool %s deleted: its lifetime ended", info["poolId"])
        except HpcbatchError as exc:  # deleted meanwhile by its user
            log.info("auto pool %s: %s", info["poolId"], exc.message)
