"""Running the service: state dir, credentials, TLS, store, Dask, REST server.

``hpcbatch service start`` runs :func:`main` (in the foreground, or detached);
:class:`hpcbatch.LocalBatch` runs :class:`ServiceRuntime` in a thread of the
calling process. A running service writes ``{state_dir}/service.json``
(endpoint, account, key file, pid), by which the CLI and SDK find it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from hpcbatch.api.protocol import BatchAppRunner
from hpcbatch.api.rest import make_app
from hpcbatch.api.security import (
    AccountCredentials,
    TlsFiles,
    ensure_account_credentials,
    ensure_operator_key,
    ensure_tls,
)
from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.statedir import EVENTS_FILE, SERVICE_FILE, STORE_FILE, default_state_dir
from hpcbatch.core.service import BatchService, Quotas
from hpcbatch.core.simulated import SimulatedEngine
from hpcbatch.execution.engine import DaskEngine
from hpcbatch.execution.transfer import StorageRef
from hpcbatch.storage.fs import default_storage_url
from hpcbatch.store.database import Store, sqlite_url
from hpcbatch.store.events import EventLog

DEFAULT_PORT = 8600
"""Default port of the REST API."""

log = logging.getLogger("hpcbatch")


@dataclass
class ServiceConfig:
    """How to run a service.

    Attributes
    ----------
    state_dir
        Folder of the database, credentials, certificates and logs.
    host, port
        Where the REST API listens (port 0: any free port).
    database_url
        SQLAlchemy URL; default the one the state dir's service last started with
        (:func:`database_url_for`), else a SQLite file ``{state_dir}/state.db``.
    scheduler_host
        Interface the Dask scheduler listens on (``0.0.0.0`` so remote SSH
        hosts reach it; ``127.0.0.1`` when every node is on this machine).
    account
        Account name used at first start.
    storage_url, storage_options
        The service's storage (fsspec URL and driver options) for resource
        files, application packages and task outputs; default
        ``file://{state_dir}/storage``.
    metrics_interval_s, min_autoscale_interval_s
        Autoscale's metric sample period (Batch: 30 s) and the smallest
        ``autoScaleEvaluationInterval`` accepted (Batch: 300 s; lower it for
        tests and demos; also ``HPCBATCH_MIN_AUTOSCALE_INTERVAL_S``).
    quotas
        Account limits (:class:`hpcbatch.core.service.Quotas`); Batch's defaults when None.
    tls
        Serve the REST API over HTTPS with a certificate from the service's CA
        (``{state_dir}/tls/ca.pem``, which clients of the state dir trust).
    allow_api_local_hosts
        Let any API caller add inventory hosts with ``provider: local``, local
        key or config paths, or host-key checking off (otherwise only the
        operator, whose requests carry the state dir's operator key, may).
    dask_dashboard_url
        The Dask dashboard's URL when the operator enabled it; the web dashboard
        (``/dashboard/``) links to it. None: no link.
    """

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database_url: str | None = None
    scheduler_host: str = "0.0.0.0"
    account: str = "hpcbatch"
    storage_url: str | None = None
    storage_options: dict[str, Any] | None = None
    metrics_interval_s: float = 30.0
    min_autoscale_interval_s: float | None = None
    quotas: Quotas | None = None
    tls: bool = False
    allow_api_local_hosts: bool = False
    dask_dashboard_url: str | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an interface to bind) is a loopback address or ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


PLAIN_HTTP_WARNING = (
    "the REST API listens on {host}, a non-loopback interface, over plain HTTP: anyone on "
    "the network can read its traffic (task command lines, outputs, job tokens) and "
    "tamper with bodies sent without Content-MD5. Start it with --tls.")
"""Logged (and printed by ``service start``) when the API is exposed without TLS."""


def _api_names(host: str) -> list[str]:
    """Names and addresses a client may reach the API at: the certificate's extra SANs."""
    names = [socket.gethostname(), socket.getfqdn()]
    if host in ("", "0.0.0.0", "::"):
        import psutil

        names += [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values()
                  for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]
    else:
        names.append(host)
    return [n for n in names if n]


def _api_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """The REST API's server TLS context: the service's certificate, TLS 1.2 or later."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def database_url_for(state_dir: Path, database_url: str | None) -> str:
    """The store a service of ``state_dir`` starts with.

    A service restarted without ``--database-url`` (after a crash, a reboot, by another
    operator) uses the store it last ran on (:func:`remember_database_url`), not a new,
    empty SQLite file that would show no pools, jobs or hosts while the real store sits
    unused.

    Parameters
    ----------
    state_dir
        The service's state dir.
    database_url
        The URL asked for, or None.

    Returns
    -------
    str
        ``database_url`` when given; else the URL in ``{state_dir}/store.json``
        (:data:`~hpcbatch.batch.statedir.STORE_FILE`); else the SQLite file
        ``{state_dir}/state.db``.

    Raises
    ------
    HpcbatchError
        ``InvalidStoreFile``: ``store.json`` does not name a store.
    """
    path = state_dir / STORE_FILE
    if database_url is not None or not path.exists():
        return database_url or sqlite_url(state_dir / "state.db")
    try:
        remembered = json.loads(path.read_text())["database_url"]
    except (OSError, ValueError, KeyError, TypeError):
        remembered = None
    if not isinstance(remembered, str) or not remembered:
        raise HpcbatchError(f"{path} does not name the store; give the service --database-url, "
                            "or delete the file to use SQLite in the state dir.",
                            code="InvalidStoreFile")
    log.info("store: %s (the one this state dir's service last used, from %s)",
             url_without_password(remembered), path)
    return remembered


def remember_database_url(state_dir: Path, database_url: str) -> None:
    """Write ``database_url``, the store a service just opened, to ``{state_dir}/store.json``
    (mode 0600: the URL may hold a password), for :func:`database_url_for`."""
    fd = os.open(state_dir / STORE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({"database_url": database_url}) + "\n")


def url_without_password(url: str) -> str:
    """``url`` (a SQLAlchemy URL) with its password as ``***``, to print or log."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@", 1)[-1]


class ServiceRuntime:
    """One running service: store, Dask engine, service core and REST server."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir.expanduser().resolve()
        self.credentials: AccountCredentials | None = None
        self.store: Store | None = None
        self.engine: DaskEngine | None = None
        self.service: BatchService | None = None
        self.runner: web.AppRunner | None = None
        self.endpoint = ""

    @property
    def info_file(self) -> Path:
        return self.state_dir / SERVICE_FILE

    async def start(self) -> None:
        """Start everything and write ``service.json``."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        creds = ensure_account_credentials(self.state_dir, self.config.account)
        self.credentials = creds
        operator_key = ensure_operator_key(self.state_dir)
        tls = ensure_tls(self.state_dir, _api_names(self.config.host) if self.config.tls else ())
        # Bind the REST socket first: the endpoint (and any port 0) is known, and a port in
        # use fails at once, before the store and the Dask scheduler start.
        sock = _bind_api_socket(self.config.host, self.config.port)
        port = sock.getsockname()[1]
        database_url = database_url_for(self.state_dir, self.config.database_url)
        self.store = Store(database_url)
        remember_database_url(self.state_dir, database_url)
        self.engine = SimulatedEngine(self.state_dir / "run", tls, self.config.scheduler_host)
        await self.engine.start()
        host = self.config.host if self.config.host not in ("0.0.0.0", "") else "127.0.0.1"
        scheme = "https" if self.config.tls else "http"
        self.endpoint = f"{scheme}://{host}:{port}"
        if not self.config.tls and not is_loopback(self.config.host):
            log.warning(PLAIN_HTTP_WARNING.format(host=self.config.host or "0.0.0.0"))
        storage = StorageRef(self.config.storage_url or default_storage_url(self.state_dir),
                             dict(self.config.storage_options or {}))
        self.service = BatchService(self.store, self.engine, tls, account_name=creds.account_name,
                                    account_key=creds.key, base_url=self.endpoint,
                                    storage=storage,
                                    event_log=EventLog(self.state_dir / EVENTS_FILE),
                                    quotas=self.config.quotas,
                                    metrics_interval_s=self.config.metrics_interval_s,
                                    min_autoscale_interval_s=self.config.min_autoscale_interval_s)
        app = make_app(self.service, creds.account_name, creds.key, operator_key=operator_key,
                       allow_api_local_hosts=self.config.allow_api_local_hosts,
                       dask_dashboard_url=self.config.dask_dashboard_url)
        self.runner = BatchAppRunner(app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, sock,
                           ssl_context=_api_ssl_context(tls) if self.config.tls else None).start()
        await self.service.start()
        self.info_file.write_text(json.dumps({
            "endpoint": self.endpoint, "account": creds.account_name,
            "key_file": str(creds.key_file), "pid": os.getpid(),
            "state_dir": str(self.state_dir), "storage_url": storage.url,
            "database": url_without_password(database_url),
            "ca_file": str(tls.ca_file) if self.config.tls else None,
            "allow_api_local_hosts": self.config.allow_api_local_hosts,
        }))

    async def stop(self) -> None:
        """Stop the REST server, the nodes' workers and the Dask scheduler."""
        if self.runner is not None:
            await self.runner.cleanup()
        if self.service is not None:
            await self.service.close(stop_nodes=True)
            if self.service.ctx.events is not None:
                self.service.ctx.events.close()
        if self.engine is not None:
            await self.engine.close()
        if self.store is not None:
            self.store.close()
        try:
            info = json.loads(self.info_file.read_text())
            if info.get("pid") == os.getpid():
                self.info_file.unlink()
        except (OSError, ValueError):
            pass


class ServiceThread:
    """Run a :class:`ServiceRuntime` on its own event loop in a daemon thread."""

    def __init__(self, config: ServiceConfig) -> None:
        self.runtime = ServiceRuntime(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="hpcbatch-service", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.runtime.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    def start(self, timeout_s: float = 120) -> ServiceRuntime:
        """Start the thread and wait until the service answers; re-raise a start error."""
        self._thread.start()
        self._started.wait(timeout_s)
        if self._error is not None:
            raise self._error
        return self.runtime

    def call(self, coro: Any, timeout_s: float = 60) -> Any:
        """Run a coroutine on the service loop from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 60) -> None:
        """Stop the service and the thread."""
        if self.loop.is_running():
            try:
                self.call(self.runtime.stop(), timeout_s)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout_s)


HEAP_NOTE = """Once the service has started, its heap (modules, models, metadata, the
Dask client: some hundreds of thousands of objects) is moved to the collector's
permanent generation (``gc.freeze``), so that a full collection traverses only
what the service made since. A full collection of a started service took about
60 ms (``bench_dispatch.py`` with ``gc.callbacks``); they are rare (one in a
2,000-task run), and ``bench_scale.py`` at 100k tasks showed no difference
beyond its noise, so this bounds a rare pause rather than buying throughput.
Only the service process does this: a service in a thread (tests, benchmarks)
shares its process with others."""


def _bind_api_socket(host: str, port: int) -> socket.socket:
    """Bind the REST API's TCP socket.

    Raises
    ------
    HpcbatchError
        ``AddressInUse`` (the port is taken: another service?) or ``AddressNotAvailable``
        (no such interface), naming the address and the option that changes it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise HpcbatchError(
                f"port {port} on {host} is in use (another hpcbatch service, or another "
                "program); choose another with --port N, or --port 0 for any free port",
                code="AddressInUse") from exc
        raise HpcbatchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                            "choose the interface with --host", code="AddressNotAvailable") from exc
    return sock


async def _serve(config: ServiceConfig) -> None:
    runtime = ServiceRuntime(config)
    await runtime.start()
    gc.collect()  # see HEAP_NOTE
    gc.freeze()
    creds = runtime.credentials
    assert creds is not None
    print(json.dumps({"endpoint": runtime.endpoint, "account": creds.account_name,
                      "key_file": str(creds.key_file), "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the service in the foreground: ``python -m hpcbatch.api.server``."""
    p = argparse.ArgumentParser(prog="python -m hpcbatch.api.server")
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--database-url", default=None)
    p.add_argument("--scheduler-host", default="0.0.0.0")
    p.add_argument("--storage-url", default=None)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--allow-api-local-hosts", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServiceConfig(state_dir=args.state_dir, host=args.host, port=args.port,
                           database_url=args.database_url, scheduler_host=args.scheduler_host,
                           storage_url=args.storage_url, tls=args.tls,
                           allow_api_local_hosts=args.allow_api_local_hosts)
    try:
        asyncio.run(_serve(config))
    except HpcbatchError as exc:
        print(f"error: {exc.code}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
