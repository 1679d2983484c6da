"""The REST API's routes, a module per Batch resource.

Each module holds a ``routes`` table whose handlers call the service core's
public methods (``service(request).pools.add_pool(...)``) and answer through
the shared plumbing of :mod:`hpcbatch.api.http`. What Batch has and hpcbatch
does not is in :mod:`hpcbatch.api.unsupported`.
"""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.routes import (
    account,
    applications,
    certificates,
    files,
    inventory,
    job_schedules,
    jobs,
    nodes,
    pools,
    statistics,
    tasks,
)

ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    account.routes, pools.routes, nodes.routes, jobs.routes, tasks.routes, files.routes,
    applications.routes, job_schedules.routes, inventory.routes, certificates.routes,
    statistics.routes,
)
"""Every resource's route table."""


def add_routes(app: web.Application) -> None:
    """Add every resource's routes to ``app``."""
    for table in ROUTE_TABLES:
        app.add_routes(table)
