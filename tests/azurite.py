"""Run a real Azurite blob service on loopback for tests.

:func:`azurite` installs Azurite 3 (``npm install --prefix .cache/azurite azurite@3``)
the first time, into ``.cache/`` of this repository, starts ``azurite-blob`` on
a free port of 127.0.0.1 with a throw-away workspace, waits until it accepts
connections, yields its connection string (the well-known ``devstoreaccount1``
development account), and stops it. Telemetry is disabled; nothing listens
beyond loopback. Needs ``node`` and ``npm`` on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / ".cache" / "azurite"

ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")
"""Azurite's published development account key (not a secret)."""

HOST = "127.0.0.1"


def connection_string(port: int, host: str = HOST) -> str:
    """Return the connection string of an Azurite blob service at ``host:port``."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};")


def install(cache_dir: Path = CACHE_DIR, timeout_s: float = 600.0) -> Path:
    """Install Azurite 3 under ``cache_dir`` unless it is there; return the ``azurite-blob`` path.

    Concurrent callers (pytest-xdist workers) take turns on a lock file.
    """
    exe = cache_dir / "node_modules" / ".bin" / "azurite-blob"
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir.parent / ".gitignore"  # keep the downloaded tools out of git
    if not ignore.exists():
        ignore.write_text("# downloaded test tools (tests/azurite.py)\n*\n")
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("Azurite needs node and npm on PATH (to run `npm install azurite@3`)")
    with open(cache_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            proc = subprocess.run(
                [npm, "install", "--prefix", str(cache_dir), "--no-audit", "--no-fund",
                 "--loglevel=error", "azurite@3"],
                check=False, capture_output=True, text=True, timeout=timeout_s,
            )
            if proc.returncode != 0 or not exe.exists():
                raise RuntimeError(
                    f"npm install azurite@3 into {cache_dir} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
                )
    return exe


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # the process group is the one started for this Azurite alone (start_new_session)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def azurite(cache_dir: Path = CACHE_DIR, *, start_timeout_s: float = 60.0,
            attempts: int = 3) -> Iterator[str]:
    """Run an Azurite blob service on a free loopback port; yield its connection string.

    Parameters
    ----------
    cache_dir
        Where Azurite is (or gets) installed.
    start_timeout_s
        Seconds to wait for it to accept connections.
    attempts
        Tries with a new port if another process took the chosen one first.

    Raises
    ------
    RuntimeError
        Azurite cannot be installed or does not start; the message has its log.
    """
    exe = install(cache_dir)
    workspace = Path(tempfile.mkdtemp(prefix="azurite-"))
    log_path = workspace / "azurite.log"
    try:
        last_error = ""
        for _ in range(attempts):
            port = _free_port(HOST)
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [str(exe), "--silent", "--location", str(workspace / "data"),
                     "--blobHost", HOST, "--blobPort", str(port),
                     "--skipApiVersionCheck", "--disableTelemetry"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                deadline = time.monotonic() + start_timeout_s
                while time.monotonic() < deadline and proc.poll() is None and not _accepts(HOST, port):
                    time.sleep(0.1)
                if proc.poll() is None and _accepts(HOST, port):
                    yield connection_string(port)
                    return
                last_error = log_path.read_text(errors="replace")[-4000:]
            finally:
                _stop(proc)
        raise RuntimeError(f"Azurite did not start on {HOST} after {attempts} attempts:\n{last_error}")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
