"""The web dashboard: Batch Explorer for your own cluster, served by the service itself.

Mounted under ``/dashboard/`` of the REST API's application (same process,
same port, HTTPS when the service is): pools with a heat map of their nodes,
a node's page, jobs with counts and progress, a job's tasks (paged and
filtered through "Task - List"'s OData ``$filter``) and charts, a task's page
with the live tail of its ``stdout.txt``/``stderr.txt``, the diagnostic event
stream, and the actions an operator expects (terminate a task or job, resize
a pool, reboot or remove a node, enable or disable autoscale), each confirmed
in the page and audited in the event log.

The browser gets plain JavaScript and CSS shipped in this package
(``static/``; no build step, no library, charts are SVG the script draws):
nothing is fetched from the internet. Data is aggregated on the server
(:mod:`.views`) and pushed with server-sent events (:mod:`.live`).

Sign-in (:mod:`.sessions`): ``hpcbatch dashboard`` mints a one-time token with
a SharedKey-signed request and prints a sign-in URL; the sign-in page also
takes the account key. Either sets an ``HttpOnly``, ``SameSite=Strict``
session cookie. The dashboard's session routes are the only ones exempt from
SharedKey (:func:`owns`); they check the session themselves (:mod:`.routes`).
Minting a sign-in token (``POST /dashboard/tokens``) is not exempt: the REST
API's SharedKey check, with its clock-skew and replay rules, authenticates it.
"""

from __future__ import annotations

from aiohttp import web

from hpcbatch.api.dashboard import live
from hpcbatch.api.dashboard.routes import (
    DASHBOARD,
    Dashboard,
    routes,
    session_middleware,
)
from hpcbatch.api.dashboard.sessions import Sessions
from hpcbatch.core.service import BatchService

__all__ = ["PREFIX", "make_dashboard", "owns"]

PREFIX = "/dashboard"
"""Where the dashboard is mounted."""


def make_dashboard(service: BatchService, account: str, key: str, *,
                   dask_dashboard_url: str | None = None) -> web.Application:
    """Build the dashboard's sub-application (mount it at :data:`PREFIX`).

    Parameters
    ----------
    service
        The service core the pages read and the actions change.
    account, key
        The account name and base64 key: the sign-in form accepts the key
        (``/dashboard/tokens`` is authenticated by the REST API's SharedKey check).
    dask_dashboard_url
        The Dask dashboard's URL when the operator enabled it; the pages link to it.

    Returns
    -------
    web.Application
        Routes of :mod:`hpcbatch.api.dashboard.routes` behind the session middleware.
    """
    app = web.Application(middlewares=[session_middleware])
    changes = live.NodeChanges(service)
    state = Dashboard(service=service, account=account, key=key, sessions=Sessions(key),
                      changes=changes, dask_dashboard_url=dask_dashboard_url)
    app[DASHBOARD] = state

    async def on_startup(_: web.Application) -> None:
        changes.attach()

    async def on_shutdown(_: web.Application) -> None:
        state.closing.set()
        changes.detach()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.add_routes(routes)
    return app


def owns(request: web.Request) -> bool:
    """Whether ``request`` was routed to the dashboard (which checks its own sessions).

    Decided by the router, not by the path's spelling: the request's matched
    route belongs to the dashboard's sub-application. The REST API's SharedKey
    check skips these requests but for its signed routes (minting a sign-in
    token; see :mod:`hpcbatch.api.security`).
    """
    return any(DASHBOARD in app for app in request.match_info.apps)
