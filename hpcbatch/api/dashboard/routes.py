"""The dashboard's HTTP routes: sign-in, pages, JSON views, live streams and actions.

Every route but sign-in (``/dashboard/signin``, its stylesheet) and token
minting (``/dashboard/tokens``, SharedKey-signed) needs a session
(:mod:`hpcbatch.api.dashboard.sessions`): without one a page redirects to
the sign-in page and anything else answers ``401`` with no data. Token
minting is authenticated by the REST API's own ``auth_middleware``
(:data:`SIGNED_ROUTES`), replay and clock-skew rules included. Every action
is a ``POST`` that must carry the session's CSRF token (``X-CSRF-Token``) and,
when the browser sends ``Origin``, come from the dashboard's own origin; its
body is checked by the same wire models as its REST operation's and it runs
through the same core operation (:data:`ACTIONS`), and it is recorded in
the diagnostic event log as a ``DashboardActionEvent`` (who, what, outcome).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import web

from hpcbatch.api.dashboard import live, views
from hpcbatch.api.dashboard.sessions import SESSION_TTL_S, Session, Sessions
from hpcbatch.api.http import read_json
from hpcbatch.batch.errors import AuthenticationError, BadRequestError, HpcbatchError
from hpcbatch.batch.models import JobTerminate
from hpcbatch.core.service import BatchService

routes = web.RouteTableDef()

COOKIE = "hpcbatch-dashboard"
"""The session cookie's name (``HttpOnly; SameSite=Strict; Path=/dashboard``, ``Secure`` over HTTPS)."""

CSRF_HEADER = "X-CSRF-Token"
"""The header an action carries its session's CSRF token in."""

ACTION_EVENT = "DashboardActionEvent"
"""The diagnostic event every dashboard action records (hpcbatch's own, not Batch's)."""

PUBLIC = frozenset({"signin-page", "signin-form", "signin-css", "tokens"})
"""Routes that answer without a session."""

SIGNED_ROUTES = frozenset({"tokens"})
"""Routes the REST API's ``auth_middleware`` authenticates as it does every REST request
(SharedKey, body binding, replay and clock-skew rules: one code path) instead of a session."""

SHAREDKEY_SIGNED: Any = (web.RequestKey("hpcbatch_dashboard_signed", bool)
                         if hasattr(web, "RequestKey") else "hpcbatch_dashboard_signed")
"""Set (True) by ``auth_middleware`` on a dashboard request it authenticated with SharedKey;
a :data:`SIGNED_ROUTES` handler refuses a request without it."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""Headers on every dashboard reply: nothing but the dashboard's own files runs or loads."""


@dataclass
class Dashboard:
    """What the dashboard's routes share (the sub-application's ``DASHBOARD`` key).

    Attributes
    ----------
    service
        The service core.
    account, key
        The account name and base64 key (the key signs in; ``/dashboard/tokens``
        is SharedKey-checked by the REST API's ``auth_middleware``).
    sessions
        Sign-in tokens and sessions.
    changes
        Node state changes for the live heat maps.
    dask_dashboard_url
        The Dask dashboard's URL when the operator enabled it, else None.
    shared
        What the open live streams share (one count query per job per interval).
    closing
        Set when the service shuts down: the live streams end.
    """

    service: BatchService
    account: str
    key: str
    sessions: Sessions
    changes: live.NodeChanges
    dask_dashboard_url: str | None = None
    shared: live.Shared = field(default_factory=lambda: live.Shared(time.monotonic))
    closing: asyncio.Event = field(default_factory=asyncio.Event)


DASHBOARD = web.AppKey("dashboard", Dashboard)
"""The sub-application's :class:`Dashboard`."""

def dash(request: web.Request) -> Dashboard:
    """The :class:`Dashboard` serving ``request``."""
    return request.app[DASHBOARD]


def session_of(request: web.Request) -> Session:
    """The session of a request the middleware admitted.

    Raises
    ------
    web.HTTPUnauthorized
        The session ended meanwhile.
    """
    session = dash(request).sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise web.HTTPUnauthorized()
    return session


def _static(name: str) -> bytes:
    return resources.files("hpcbatch.api.dashboard").joinpath("static", name).read_bytes()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":"), default=str).encode(),
                        status=status, content_type="application/json")


def _refused(status: int, message: str) -> web.Response:
    return _json({"code": "DashboardSignInRequired" if status == 401 else "Forbidden",
                  "message": message}, status)


@web.middleware
async def session_middleware(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
    """Admit a request with a live session (or to a public route); refuse the rest.

    A page (``GET /dashboard/``) without a session redirects to the sign-in
    page; any other route answers ``401`` with no data. A ``POST`` must carry
    the session's CSRF token and, with an ``Origin`` header, this origin.
    """
    name = request.match_info.route.name
    if name not in PUBLIC:
        session = dash(request).sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if name == "index":
                return _with_headers(_see_other("/dashboard/signin"))
            return _with_headers(_refused(401, "Sign in to the dashboard first."))
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return _with_headers(_refused(403, "Cross-origin action refused."))
            if not Sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
                return _with_headers(_refused(403, "The action lacks this session's CSRF "
                                                   "token."))
    return _with_headers(await handler(request))


def _with_headers(resp: web.StreamResponse) -> web.StreamResponse:
    if not resp.prepared:
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
    return resp


# ------------------------------------------------------------------ sign-in


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _signed_in(request: web.Request, session_id: str) -> web.Response:
    resp = _see_other("/dashboard/")
    resp.set_cookie(COOKIE, session_id, path="/dashboard", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=int(SESSION_TTL_S))
    return resp


def _signin_page(message: str = "", status: int = 200) -> web.Response:
    page = _static("signin.html").decode()
    note = f'<p class="error" role="alert">{_escape(message)}</p>' if message else ""
    return web.Response(text=page.replace("<!--message-->", note), status=status,
                        content_type="text/html")


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


@routes.get("/signin", name="signin-page")
async def signin_page(request: web.Request) -> web.Response:
    """The sign-in page; with ``?token=`` (from ``hpcbatch dashboard``) it signs in at once."""
    token = request.query.get("token")
    if token is None:
        return _signin_page()
    opened = dash(request).sessions.sign_in_with_token(token)
    if opened is None:
        return _signin_page("This sign-in link is not valid (used, expired or mistyped). "
                            "Run `hpcbatch dashboard` for a new one, or sign in with the "
                            "account key.", 401)
    return _signed_in(request, opened[0])


@routes.post("/signin", name="signin-form")
async def signin_form(request: web.Request) -> web.Response:
    """The sign-in form: the account key (``key``) opens a session."""
    form = await request.post()
    key = form.get("key")
    opened = dash(request).sessions.sign_in_with_key(key) if isinstance(key, str) else None
    if opened is None:
        return _signin_page("That is not this service's account key.", 401)
    return _signed_in(request, opened[0])


@routes.get("/signin.css", name="signin-css")
async def signin_css(request: web.Request) -> web.Response:
    """The stylesheet (the dashboard's, which holds nothing secret)."""
    return web.Response(body=_static("app.css"), content_type="text/css")


@routes.post("/tokens", name="tokens")
async def mint_token(request: web.Request) -> web.Response:
    """Mint a one-time sign-in token: a SharedKey-signed request (the account key's holder).

    The REST API's ``auth_middleware`` authenticates it like any REST request
    (:data:`SIGNED_ROUTES`): a replayed or stale request is refused before this
    runs. Returns ``{"token", "url"}``; ``url`` is the sign-in link ``hpcbatch
    dashboard`` prints.

    Raises
    ------
    AuthenticationError
        ``403 AuthenticationFailed``: not signed with the account key, replayed,
        or not authenticated by ``auth_middleware`` at all (the dashboard mounted
        without it: refused rather than open).
    """
    if request.get(SHAREDKEY_SIGNED) is not True:
        raise AuthenticationError(
            "Minting a dashboard sign-in token needs a SharedKey-signed request.",
            values={"AuthenticationErrorDetail": "not SharedKey-authenticated"})
    if request.content_length or request.body_exists:
        # No body: a signature without Content-MD5 covers only the body's length, so a
        # body would let a captured request be replayed with other bytes of that length.
        raise BadRequestError("Minting a dashboard sign-in token takes no request body.",
                              code="InvalidRequestBody")
    d = dash(request)
    token = d.sessions.mint_token()
    url = f"{request.scheme}://{request.host}/dashboard/signin?token={quote(token)}"
    return _json({"token": token, "url": url}, 201)


@routes.post("/signout", name="signout")
async def signout(request: web.Request) -> web.Response:
    """End the session (CSRF-checked like any action)."""
    dash(request).sessions.sign_out(request.cookies.get(COOKIE))
    resp = _json({"signedOut": True})
    resp.del_cookie(COOKIE, path="/dashboard")
    return resp


# -------------------------------------------------------------------- pages


@routes.get("/", name="index")
async def index(request: web.Request) -> web.Response:
    """The dashboard's single page (its views are chosen by the URL's ``#`` part)."""
    return web.Response(body=_static("index.html"), content_type="text/html")


STATIC_TYPES = {"app.js": "text/javascript", "app.css": "text/css"}


@routes.get("/static/{name}", name="static")
async def static(request: web.Request) -> web.Response:
    """The page's script and stylesheet (shipped in the package; nothing from the internet)."""
    name = request.match_info["name"]
    if name not in STATIC_TYPES:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC_TYPES[name])


# ------------------------------------------------------------------ JSON views


def _svc(request: web.Request) -> BatchService:
    return dash(request).service


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    try:
        value = default if raw is None or raw == "" else int(raw)
    except ValueError:
        raise BadRequestError(f"{name} must be an integer, not {raw!r}.",
                              code="InvalidQueryParameterValue") from None
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be between {low} and {high}, not {value}.",
                              code="OutOfRangeQueryParameterValue")
    return value


@routes.get("/api/session", name="session")
async def session_info(request: web.Request) -> web.Response:
    """The session's CSRF token, how it signed in, and the Dask dashboard's URL."""
    session = session_of(request)
    d = dash(request)
    return _json({"csrf": session.csrf, "how": session.how, "account": d.account,
                  "daskDashboardUrl": d.dask_dashboard_url})


@routes.get("/api/pools", name="pools")
async def pools(request: web.Request) -> web.Response:
    """Every pool's summary and heat map cells (:func:`views.pools_overview`)."""
    return _json(views.pools_overview(_svc(request)))


@routes.get("/api/pools/{pool}/nodes/{node}", name="node")
async def node(request: web.Request) -> web.Response:
    """A node's page (:func:`views.node_detail`); ``?path=`` lists a folder of its files."""
    return _json(await views.node_detail(_svc(request), request.match_info["pool"],
                                         request.match_info["node"],
                                         request.query.get("path", "")))


@routes.get("/api/jobs", name="jobs")
async def jobs(request: web.Request) -> web.Response:
    """A page of the jobs list (:func:`views.jobs_page`): ``skip``, ``top``, ``filter``."""
    return _json(views.jobs_page(_svc(request), _int(request, "skip", 0, 0, 10**9),
                                 _int(request, "top", views.JOB_PAGE, 1, 1000),
                                 request.query.get("filter")))


@routes.get("/api/jobs/{job}", name="job")
async def job(request: web.Request) -> web.Response:
    """A job's page (:func:`views.job_detail`)."""
    return _json(views.job_detail(_svc(request), request.match_info["job"]))


@routes.get("/api/jobs/{job}/tasks", name="tasks")
async def job_tasks(request: web.Request) -> web.Response:
    """A page of a job's tasks (:func:`views.task_page`): ``filter`` (OData), ``after``, ``top``."""
    after = request.query.get("after")
    return _json(views.task_page(
        _svc(request), request.match_info["job"], request.query.get("filter"),
        _int(request, "after", 0, 0, 2**62) if after else None,
        _int(request, "top", views.TASK_PAGE, 1, 1000)))


@routes.get("/api/jobs/{job}/tasks/{task}", name="task")
async def task(request: web.Request) -> web.Response:
    """A task's page (:func:`views.task_detail`)."""
    return _json(await views.task_detail(_svc(request), request.match_info["job"],
                                         request.match_info["task"]))


@routes.get("/api/events", name="events")
async def events(request: web.Request) -> web.Response:
    """The latest diagnostic events, filtered by ``pool``, ``job`` and ``name``."""
    q = request.query
    return _json(views.read_events(_svc(request), pool=q.get("pool") or None,
                                   job=q.get("job") or None, name=q.get("name") or None))


# -------------------------------------------------------------------- actions


def _field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"The action needs {name} (a non-empty string).",
                              code="MissingRequiredProperty", values={"PropertyName": name})
    return value


def _no_body(body: Mapping[str, Any], operation: str) -> None:
    """Refuse properties an operation without a request body would be sent."""
    if body:
        name = min(body)[:256]
        raise BadRequestError(f"{operation} takes no request body; the property {name!r} "
                              "is not allowed.", code="InvalidRequestBody",
                              values={"PropertyName": name})


def _terminate_task(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    _no_body(b, "Task - Terminate")
    svc.tasks.terminate_task(ids[0], ids[1])


def _terminate_job(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    body = JobTerminate.from_wire(b, what="job terminate")  # as POST /jobs/{job}/terminate
    svc.jobs.terminate_job(ids[0], body.terminate_reason)


def _resize_pool(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    if "targetDedicatedNodes" not in b:  # the one thing the page's resize sets
        raise BadRequestError("The action needs targetDedicatedNodes (an integer).",
                              code="MissingRequiredProperty",
                              values={"PropertyName": "targetDedicatedNodes"})
    svc.pools.resize_pool(ids[0], b)  # PoolResize, as POST /pools/{pool}/resize


def _reboot_node(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    option = b.pop("nodeRebootOption", None)
    _no_body(b, "Compute Node - Reboot (but nodeRebootOption)")
    svc.nodes.reboot_node(ids[0], ids[1], option)  # the option checked as for REST


def _remove_node(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    if "nodeList" in b:
        raise BadRequestError("The action removes the one node nodeId names; nodeList is not "
                              "allowed.", code="InvalidRequestBody",
                              values={"PropertyName": "nodeList"})
    # NodeRemove, as POST /pools/{pool}/removenodes (nodeId is its one nodeList entry)
    svc.nodes.remove_nodes(ids[0], {"nodeList": [_field(b, "nodeId")],
                                    **{k: v for k, v in b.items() if k != "nodeId"}})


def _enable_autoscale(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    svc.autoscaler.enable(ids[0], b)  # PoolEnableAutoScale, as POST .../enableautoscale


def _disable_autoscale(svc: BatchService, ids: Sequence[str], b: dict[str, Any]) -> None:
    _no_body(b, "Pool - Disable AutoScale")
    svc.autoscaler.disable(ids[0])


@dataclass(frozen=True)
class Action:
    """A dashboard action: the REST operation it is, in the dashboard's JSON.

    Attributes
    ----------
    ids
        The properties of the action's body that name its resource: the REST
        path's parameters (``poolId`` for ``/pools/{pool}/...``), in path order.
    run
        Runs the operation with those IDs and the rest of the body, which is
        the REST operation's request body and is checked by the same wire model
        (:mod:`hpcbatch.batch.models`) and core operation as the REST route's.
    """

    ids: tuple[str, ...]
    run: Callable[[BatchService, Sequence[str], dict[str, Any]], None]


ACTIONS: Mapping[str, Action] = {
    "terminateTask": Action(("jobId", "taskId"), _terminate_task),      # Task - Terminate
    "terminateJob": Action(("jobId",), _terminate_job),                 # Job - Terminate
    "resizePool": Action(("poolId",), _resize_pool),                    # Pool - Resize
    "rebootNode": Action(("poolId", "nodeId"), _reboot_node),           # Compute Node - Reboot
    "removeNode": Action(("poolId",), _remove_node),                    # Pool - Remove Nodes
    "enableAutoScale": Action(("poolId",), _enable_autoscale),          # Pool - Enable AutoScale
    "disableAutoScale": Action(("poolId",), _disable_autoscale),        # Pool - Disable AutoScale
}
"""The dashboard's actions and the core operation (the REST operation's) each runs."""

AUDITED_FIELDS = ("poolId", "nodeId", "jobId", "taskId", "targetDedicatedNodes",
                  "autoScaleFormula", "autoScaleEvaluationInterval", "terminateReason")

AUDIT_MAX_CHARS = 8192
"""Longest value an action's audit event records (longer ones, which the action refuses
unless it is a formula, are cut): a refused action must not grow the event log."""


def _audited(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= AUDIT_MAX_CHARS else text[:AUDIT_MAX_CHARS] + "…"


@routes.post("/api/actions/{action}", name="action")
async def action(request: web.Request) -> web.Response:
    """Run one action (:data:`ACTIONS`) and record it as a ``DashboardActionEvent``.

    The body is a JSON object naming the resource (``poolId``, ``jobId`` ...)
    beside the REST operation's own body properties (``terminateReason`` ...),
    read with the REST API's JSON limits and checked by the same wire models.
    The event records the action, those fields (cut at :data:`AUDIT_MAX_CHARS`),
    how the session signed in, the browser's address and the outcome
    (``accepted`` or the error code).

    Raises
    ------
    HpcbatchError
        The wire models' error (``400 InvalidPropertyValue`` naming the
        property ...) or the core operation's (``TaskNotFound``,
        ``PoolBeingDeleted`` ...), answered as the REST API answers it.
    """
    name = request.match_info["action"]
    act = ACTIONS.get(name)
    if act is None:
        raise BadRequestError(f"Unknown action {name!r}; one of {', '.join(ACTIONS)}.",
                              code="InvalidUri")
    body = await read_json(request)  # the REST API's limits (UTF-8, depth, size)
    if not isinstance(body, dict):
        raise BadRequestError("The action's body must be a JSON object.",
                              code="InvalidRequestBody")
    svc = _svc(request)
    audit = {"action": name, **{k: _audited(body[k]) for k in AUDITED_FIELDS if k in body},
             "signedInWith": session_of(request).how, "remoteAddress": request.remote}
    try:
        ids = [_field(body, k) for k in act.ids]
        act.run(svc, ids, {k: v for k, v in body.items() if k not in act.ids})
    except HpcbatchError as exc:
        svc.ctx.emit(ACTION_EVENT, {**audit, "outcome": exc.code})
        raise
    svc.ctx.emit(ACTION_EVENT, {**audit, "outcome": "accepted"})
    return _json({"action": name, "outcome": "accepted"}, 202)


# --------------------------------------------------------------- live streams


async def _stream(request: web.Request,
                  loop: Callable[[live.EventStream], Awaitable[None]]) -> web.StreamResponse:
    try:
        stream = await live.EventStream.open(request, dash(request).closing)
    except ConnectionResetError:  # the browser left before the stream's headers went out
        return web.Response(status=204)  # nothing to read it; aiohttp drops the connection
    return await live.run(stream, loop)


@routes.get("/live/pools", name="live-pools")
async def live_pools(request: web.Request) -> web.StreamResponse:
    """Pools and their heat maps, live (:func:`live.pools_loop`)."""
    d = dash(request)
    return await _stream(request, lambda s: live.pools_loop(
        s, d.service, d.changes,
        lambda: d.shared.get(("pools",), live.FAST_S, lambda: views.pools_overview(d.service))))


@routes.get("/live/jobs", name="live-jobs")
async def live_jobs(request: web.Request) -> web.StreamResponse:
    """The first page of the jobs list, live."""
    d, svc = dash(request), _svc(request)
    top = _int(request, "top", views.JOB_PAGE, 1, 1000)
    filter_ = request.query.get("filter") or ""
    return await _stream(request, lambda s: live.poll_loop(
        s, lambda: d.shared.get(("jobs", str(top), filter_), live.FAST_S,
                                lambda: views.jobs_page(svc, 0, top, filter_)),
        "jobs", live.SLOW_S / 2))


@routes.get("/live/jobs/{job}", name="live-job")
async def live_job(request: web.Request) -> web.StreamResponse:
    """A job's counts, state and charts, live (:func:`live.job_loop`)."""
    d, svc = dash(request), _svc(request)
    job_id = str(svc.jobs.get_job(request.match_info["job"])["id"])  # JobNotFound first
    key = job_id.lower()
    return await _stream(request, lambda s: live.job_loop(
        s, lambda: d.shared.get(("job", key), live.FAST_S / 2,
                                lambda: live.job_status(svc, job_id)),
        lambda status: d.shared.get(("series", key, json.dumps(status, sort_keys=True)),
                                    live.SLOW_S, lambda: views.job_series(svc, job_id))))


@routes.get("/live/jobs/{job}/tasks/{task}", name="live-task")
async def live_task(request: web.Request) -> web.StreamResponse:
    """A task's state and execution info, and its stdout/stderr tails, live
    (:func:`live.task_loop`: the task page's one stream)."""
    svc, job_id, task_id = _svc(request), request.match_info["job"], request.match_info["task"]
    svc.tasks.get_task(job_id, task_id)
    return await _stream(request, lambda s: live.task_loop(s, svc, job_id, task_id))


@routes.get("/live/nodes/{pool}/{node}", name="live-node")
async def live_node(request: web.Request) -> web.StreamResponse:
    """A node's JSON and CPU/memory samples, live (:func:`live.node_loop`)."""
    svc, pool_id, node_id = _svc(request), request.match_info["pool"], request.match_info["node"]
    svc.nodes.get_node(pool_id, node_id)
    return await _stream(request, lambda s: live.node_loop(s, svc, pool_id, node_id))


@routes.get("/live/events", name="live-events")
async def live_events(request: web.Request) -> web.StreamResponse:
    """New diagnostic events matching ``pool``, ``job`` and ``name``, live."""
    svc, q = _svc(request), request.query
    pool, job_, name = q.get("pool") or None, q.get("job") or None, q.get("name") or None
    return await _stream(request, lambda s: live.events_loop(
        s, lambda since: views.read_events(svc, pool=pool, job=job_, name=name, since=since)))
