"""Scheduler preload: ``dask scheduler --preload hpcbatch.execution.scheduler_guard``.

Distributed imports a preload module while it makes the scheduler, before the
scheduler listens, and calls :func:`dask_setup` only once it has started
(after it listens and wrote its scheduler file). The guard
(:func:`hpcbatch.execution.guard.guard_scheduler`) must be in place before the
first comm arrives, so importing this module hooks the ``Scheduler`` class's
``listen``: a scheduler is guarded just before it opens its listeners.
:func:`dask_setup` checks that the running scheduler is guarded.

It also gives the scheduler a lifeline to the service (:func:`watch_service`):
the service names itself in ``HPCBATCH_SERVICE_PID``
(:data:`hpcbatch.execution.engine.SERVICE_PID_ENV`) and the scheduler closes,
then exits, within about :data:`LIFELINE_INTERVAL_S` of the service going away
(a SIGKILL included). Closing tells every worker to close; a node's process
then ends its agent's task processes and exits, so no part of an old
incarnation lingers until the next service start.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from distributed.scheduler import Scheduler

from hpcbatch.execution import guard
from hpcbatch.execution.engine import SERVICE_PID_ENV

log = logging.getLogger(__name__)

LIFELINE_INTERVAL_S = 1.0
"""Seconds between two checks that the service still runs."""

CLOSE_TIMEOUT_S = 10.0
"""Most seconds the scheduler takes to close its workers before it exits anyway."""

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
    service = os.environ.get(SERVICE_PID_ENV)
    if service and service.isdigit():
        pid = int(service)
        scheduler._hpcbatch_lifeline = asyncio.get_running_loop().create_task(
            watch_service(scheduler, lambda: os.getppid() == pid))
    log.info("hpcbatch scheduler guard: node identities may send %s and, on their stream, %s",
             sorted(guard.NODE_REQUESTS), sorted(guard.NODE_STREAM_OPS))


async def watch_service(scheduler: Any, alive: Callable[[], bool],
                        interval_s: float = LIFELINE_INTERVAL_S,
                        exit_process: Callable[[int], Any] = os._exit) -> None:
    """Close the scheduler, then end this process, once the service is gone.

    Parameters
    ----------
    scheduler
        The ``distributed.Scheduler``.
    alive
        Tells whether the service still runs: the scheduler's parent is the
        service process, so its parent pid changes when the service dies (no
        pid reuse can fool it).
    interval_s
        Seconds between two checks.
    exit_process
        Called with exit code 0 after the scheduler closed (or did not within
        :data:`CLOSE_TIMEOUT_S`); ``os._exit`` in the scheduler process.
    """
    while alive():  # noqa: ASYNC110 - polls another process: no event to wait on
        await asyncio.sleep(interval_s)
    log.warning("the hpcbatch service is gone: closing the scheduler and its workers")
    try:
        await asyncio.wait_for(scheduler.close(reason="hpcbatch-service-gone"),
                               CLOSE_TIMEOUT_S)
    except Exception:  # exit all the same: nothing else would end this process
        log.exception("closing the scheduler failed")
    finally:
        exit_process(0)
