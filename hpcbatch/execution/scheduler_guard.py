"""Scheduler preload: ``dask scheduler --preload hpcbatch.execution.scheduler_guard``.

Distributed imports a preload module while it makes the scheduler, before the
scheduler listens, and calls :func:`dask_setup` only once it has started
(after it listens and wrote its scheduler file). The guard
(:func:`hpcbatch.execution.guard.guard_scheduler`) must be in place before the
first comm arrives, so importing this module hooks the ``Scheduler`` class's
``listen``: a scheduler is guarded just before it opens its listeners.
:func:`dask_setup` checks that the running scheduler is guarded.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.scheduler import Scheduler

from hpcbatch.execution import guard

log = logging.getLogger(__name__)

_GUARDED = "_hpcbatch_guarded"


def _hook_listen() -> None:
    dask_listen = Scheduler.listen
    if getattr(dask_listen, _GUARDED, False):
        return

    async def listen(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, _GUARDED, False):
            guard.guard_scheduler(self)
            setattr(self, _GUARDED, True)
        return await dask_listen(self, *args, **kwargs)

    setattr(listen, _GUARDED, True)
    Scheduler.listen = listen  # type: ignore[method-assign]


_hook_listen()


def dask_setup(scheduler: Any) -> None:
    """Check that the guard wraps this scheduler's comms (distributed calls it at start).

    Raises
    ------
    RuntimeError
        The scheduler listened before this module was imported (no guard).
    """
    if not getattr(scheduler, _GUARDED, False):
        raise RuntimeError("the hpcbatch scheduler guard is not installed on this scheduler")
    log.info("hpcbatch scheduler guard: node identities may send %s and, on their stream, %s",
             sorted(guard.NODE_REQUESTS), sorted(guard.NODE_STREAM_OPS))
