"""``hpcbatch service``: start, stop and inspect the service of the state dir.

``service start`` in the foreground is the one command here that imports the
server (:mod:`hpcbatch.api.server`); ``--detach`` runs it in a new process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.statedir import SERVICE_FILE, SERVICE_LOG_FILE
from hpcbatch.client.cli.common import emit, note, output_option, state, status
from hpcbatch.client.state import read_service_info

START_TIMEOUT_S = 120.0
"""Seconds ``service start --detach`` waits for the service to answer."""
STOP_TIMEOUT_S = 60.0
"""Seconds ``service stop`` waits after SIGTERM before sending SIGKILL."""
HEALTH_TIMEOUT_S = 2.0
"""Seconds a look at ``/health`` waits for the answer."""


@click.group()
def service() -> None:
    """Start, stop and inspect the hpcbatch service of the state dir."""


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _healthy(endpoint: str, ca_file: str | None = None) -> bool:
    """Whether the service at ``endpoint`` answers ``GET /health`` with 200 (HTTPS: trusting
    ``ca_file``, the service's CA)."""
    import http.client

    from hpcbatch.client.transport import Transport

    transport = Transport(HEALTH_TIMEOUT_S, ca_file=ca_file)
    try:
        return transport.request("GET", f"{endpoint}/health", {}).status == 200
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        transport.close()


def _running(state_dir: Path) -> dict[str, Any] | None:
    info = read_service_info(state_dir)
    return info if info and isinstance(info.get("pid"), int) and _alive(info["pid"]) else None


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@service.command("start")
@click.option("--detach", is_flag=True,
              help="Run in the background; log to {state-dir}/service.log.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="REST API port (default 8600; 0: any free port).")
@click.option("--host", default=None, help="Interface of the REST API (default 127.0.0.1).")
@click.option("--database-url", default=None,
              help="SQLAlchemy URL of the store (default: the store this state dir's service "
                   "last used, else SQLite in the state dir).")
@click.option("--scheduler-host", default=None,
              help="Interface of the Dask scheduler (default 0.0.0.0; 127.0.0.1 for local nodes).")
@click.option("--tls", is_flag=True,
              help="Serve the REST API over HTTPS with a certificate from the service's CA "
                   "({state-dir}/tls/ca.pem; the CLI and SDK trust it).")
@click.option("--allow-api-local-hosts", is_flag=True,
              help="Let any API caller add inventory hosts with provider local, local key or "
                   "config paths, or host-key checking off (default: only the operator, "
                   "i.e. this CLI on the service machine, may).")
@output_option
def service_start(detach: bool, port: int | None, host: str | None, database_url: str | None,
                  scheduler_host: str | None, tls: bool, allow_api_local_hosts: bool) -> None:
    """Start the service (in the foreground unless --detach).

    With --detach, wait until it answers, then print its endpoint, account and key file.
    Binding --host to a non-loopback interface without --tls prints a warning.
    """
    sdir = state().service_dir
    running = _running(sdir)
    if running:
        raise HpcbatchError(f"a service already runs for {sdir}: {running.get('endpoint')} "
                            f"(pid {running['pid']})", code="ServiceAlreadyRunning")
    argv = ["--state-dir", str(sdir)]
    for flag, value in (("--port", port), ("--host", host), ("--database-url", database_url),
                        ("--scheduler-host", scheduler_host)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--tls"] * tls + ["--allow-api-local-hosts"] * allow_api_local_hosts
    if not tls and host is not None:
        from hpcbatch.api.server import PLAIN_HTTP_WARNING, is_loopback

        if not is_loopback(host):
            click.echo(f"warning: {PLAIN_HTTP_WARNING.format(host=host)}", err=True)
    if not detach:
        from hpcbatch.api import server

        click.get_current_context().exit(server.main(argv))
    import subprocess

    sdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = sdir / SERVICE_LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hpcbatch.api.server", *argv],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    info: dict[str, Any] | None = None
    with status(f"Starting the hpcbatch service (pid {proc.pid}) ..."):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            info = read_service_info(sdir)
            if info and info.get("pid") == proc.pid and _healthy(str(info.get("endpoint")),
                                                                 info.get("ca_file")):
                break
            info = None
            time.sleep(0.2)
    if info is None:
        if proc.poll() is None:
            proc.terminate()
            why = f"did not answer within {START_TIMEOUT_S:g} s"
        else:
            why = f"exited with status {proc.returncode}"
        click.echo(f"error: ServiceStartFailed: the service {why}; the end of {log_path}:\n"
                   f"{_log_tail(log_path)}", err=True)
        click.get_current_context().exit(1)
    assert info is not None
    emit({"endpoint": info["endpoint"], "account": info["account"],
          "key_file": info["key_file"], "pid": info["pid"], "state_dir": str(sdir),
          "database": info.get("database"), "ca_file": info.get("ca_file")})


def _is_service_process(pid: int) -> bool:
    import psutil

    try:
        args = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    if pid == os.getpid():
        return False
    return "hpcbatch.api.server" in args or (
        any(Path(a).name == "hpcbatch" for a in args[:2]) and "service" in args)


@service.command("stop")
def service_stop() -> None:
    """Stop the service: SIGTERM, then SIGKILL after 60 s."""
    import signal

    import psutil

    sdir = state().service_dir
    info = _running(sdir)
    if info is None:
        note(f"no hpcbatch service is running for {sdir}")
        return
    pid = info["pid"]
    if not _is_service_process(pid):
        raise HpcbatchError(f"pid {pid} of {sdir / SERVICE_FILE} is not a standalone hpcbatch "
                            "service (an embedded LocalBatch?); stop it from its own program.",
                            code="ServiceNotStoppable")
    proc = psutil.Process(pid)
    with status(f"Stopping the hpcbatch service (pid {pid}) ..."):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            note(f"pid {pid} still runs after {STOP_TIMEOUT_S:g} s; sending SIGKILL")
            proc.kill()
            proc.wait(10)
        except psutil.NoSuchProcess:
            pass
    if (read_service_info(sdir) or {}).get("pid") == pid:
        (sdir / SERVICE_FILE).unlink(missing_ok=True)
    note(f"stopped the hpcbatch service (pid {pid})")


@service.command("status")
@output_option
def service_status() -> None:
    """Show whether the service runs, its endpoint and pid (exit 1 when not running)."""
    sdir = state().service_dir
    info = _running(sdir) or {}
    up = bool(info) and _healthy(str(info.get("endpoint")), info.get("ca_file"))
    emit({"running": up, "endpoint": info.get("endpoint"), "account": info.get("account"),
          "pid": info.get("pid"), "state_dir": str(sdir), "database": info.get("database")})
    if not up:
        click.get_current_context().exit(1)
