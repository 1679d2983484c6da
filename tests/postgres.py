"""A private PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a
cluster in a temporary folder, loopback only, started once per test session.

As root (CI), the server runs as the ``postgres`` system user (``initdb`` refuses
root). Without the binaries the PostgreSQL tests are skipped, unless
``HPCBATCH_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) makes that an error.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server() -> Iterator[str]:
    """Start a PostgreSQL cluster in a new folder of /tmp; yield its admin URL (database
    ``postgres``). (Not under pytest's temporary folders: those are closed to the
    ``postgres`` user.)"""
    bindir = _bin_dir()
    if bindir is None:
        if os.environ.get("HPCBATCH_REQUIRE_POSTGRES"):
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="hpcbatch-pg-"))
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "hpcbatch", "--no-sync"], check=True, capture_output=True)
    options = f"-F -k {root} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w",
                    "-l", str(root / "server.log"), "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://hpcbatch@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(admin_url: str) -> str:
    """Create an empty database on the server; return its SQLAlchemy URL."""
    import psycopg

    name = f"hb_{uuid.uuid4().hex[:12]}"
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
