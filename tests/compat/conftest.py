"""Fixtures of the wire-compatibility tests: the pinned official SDKs, and a service for them.

``sdk_python(version)``
    The interpreter of a venv holding the official ``azure-batch`` SDK of that
    major version (``.cache/sdk15``: 15.1.0, ``.cache/sdk14``: 14.2.0, ``.cache/sdk11``:
    11.0.0 with azure-storage-blob 12.x, ``.cache/sdk8``: 8.0.0 with the legacy
    azure-storage-blob 1.5.0; they conflict, so each has its own venv). A missing or stale venv is created
    with ``python -m venv`` and ``pip install``; set ``HPCBATCH_SDK_VENVS`` to
    another folder to keep them elsewhere.
``compat_service``
    A service (SQLite, real Dask) on a 4-host sshd testbed (127.0.11.1-4),
    whose hosts also carry the Azure VM sizes the scripts ask for as labels
    (:data:`AZURE_VM_SIZES`) and stand in for the images they ask for
    (:data:`AZURE_IMAGES`), with autoscale allowed to evaluate every second.
``azurite_storage``
    The connection string of an Azurite blob service (``tests/azurite.py``), for the
    samples that upload their inputs and download their outputs.
``run_sdk``
    Runs an SDK script in its venv against ``compat_service`` and returns what
    it printed (see ``_harness.py``).

After every test, pools and jobs left behind are deleted, so a failing
scenario does not hold the testbed's hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.client.sdk import BatchClient
from hpcbatch.testing import testbed as tb
from tests.helpers import service_on_testbed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SDK_PINS = {"15": "15.1.0", "14": "14.2.0", "11": "11.0.0", "8": "8.0.0"}
"""The newest ``azure-batch`` of each major version (``pip index versions azure-batch``)."""

SDK_EXTRAS = {"8": ["azure-storage-blob==1.5.0"], "11": ["azure-storage-blob==12.31.1"],
              "14": ["azure-storage-blob==12.31.1"], "15": ["azure-storage-blob==12.31.1"]}
"""What the older samples' venvs hold beside the SDK: the legacy ``BlockBlobService``
(azure-storage-blob 1.x, the newest: 1.5.0) for 8.x, azure-storage-blob 12.x for 11.x, 14.x
and 15.x."""

AZURE_VM_SIZES = ["standard_d2s_v3", "standard_ds1_v2"]
"""Azure VM sizes the scripts use; a pool's vmSize selects inventory hosts by label."""

AZURE_IMAGES = ["canonical:0001-com-ubuntu-server-jammy:22_04-lts",
                "canonical:0001-com-ubuntu-server-focal:20_04-lts"]
"""Marketplace images the scripts (Microsoft's quickstarts among them) ask for; the hosts
stand in for them (inventory ``images``), as a pool's imageReference selects hosts by OS."""


def _venv_root() -> Path:
    return Path(os.environ.get("HPCBATCH_SDK_VENVS") or REPO / ".cache")


def _installed(python: Path, extras: list[str] | None = None) -> str | None:
    """The venv's azure-batch version; None when missing, or when an extra is not as pinned."""
    if not python.exists():
        return None
    names = ["azure-batch", *[e.split("==")[0] for e in extras or []]]
    code = ("from importlib.metadata import version; import sys; "
            "print(' '.join(version(n) for n in sys.argv[1:]))")
    res = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        return None
    found = res.stdout.split()
    if [f"{n}=={v}" for n, v in zip(names[1:], found[1:], strict=True)] != (extras or []):
        return None
    return found[0]


def ensure_sdk_venv(major: str) -> Path:
    """Return the python of the venv with ``azure-batch`` ``SDK_PINS[major]``; create it if needed.

    Raises
    ------
    RuntimeError
        When the venv cannot be created or the SDK not installed (pip's output included).
    """
    pin, extras = SDK_PINS[major], SDK_EXTRAS.get(major, [])
    root = _venv_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"sdk{major}"
    python = venv / "bin" / "python"
    with open(root / f".sdk{major}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one creator at a time (parallel sessions)
        if _installed(python, extras) == pin:
            return python
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
                 [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  f"azure-batch=={pin}", *extras]]
        for cmd in steps:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"cannot set up the azure-batch {pin} venv: {' '.join(cmd)} "
                                   f"failed:\n{res.stdout}\n{res.stderr}")
        if _installed(python, extras) != pin:
            raise RuntimeError(f"{venv} does not hold azure-batch {pin} after pip install")
        return python


@pytest.fixture(scope="session")
def sdk_python() -> Callable[[str], Path]:
    """``sdk_python("15")`` / ``"14"`` / ``"11"`` / ``"8"``: the venv interpreter with that SDK."""
    cache: dict[str, Path] = {}

    def get(major: str) -> Path:
        if major not in cache:
            cache[major] = ensure_sdk_venv(major)
        return cache[major]
    return get


@pytest.fixture(scope="session")
def azurite_storage() -> Iterator[str]:
    """An Azurite blob service on loopback: its connection string."""
    from tests.azurite import azurite

    with azurite() as connection_string:
        yield connection_string


@dataclass
class CompatService:
    endpoint: str
    account: str
    key: str
    client: BatchClient
    bed: tb.Testbed


@pytest.fixture(scope="session")
def compat_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatService]:
    """A service on a 4-host sshd testbed (127.0.11.1-4); hosts labelled with Azure VM sizes."""
    tmp = tmp_path_factory.mktemp("compat")
    with service_on_testbed(tmp, 4, "127.0.11.1", min_autoscale_interval_s=1.0,
                            metrics_interval_s=1.0) as (client, bed, thread):
        client.add_hosts([{**h.model_dump(mode="json"), "labels": [*h.labels, *AZURE_VM_SIZES],
                           "images": AZURE_IMAGES} for h in bed.hosts])
        creds = thread.runtime.credentials
        assert creds is not None
        yield CompatService(thread.runtime.endpoint, creds.account_name, creds.key, client, bed)


def _clean(client: BatchClient, timeout_s: float = 180) -> None:
    for job in client.list_jobs():
        if job.state != "deleting":
            client.delete_job(job.id)
    for pool in client.list_pools():
        if pool.state != "deleting":
            client.delete_pool(pool.id)
    deadline = time.monotonic() + timeout_s
    while client.list_pools() or client.list_jobs() or any(
            h.get("poolId") for h in client.list_hosts()):
        if time.monotonic() > deadline:
            raise AssertionError("pools and jobs left by the test were not deleted in time")
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def clean_account(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete what a test left behind (only when the test used the compat service)."""
    yield
    if "compat_service" in request.fixturenames:
        _clean(request.getfixturevalue("compat_service").client)


@dataclass
class SdkRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None

    def describe(self) -> str:
        return (f"exit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n"
                f"--- stderr\n{self.stderr[-6000:]}")


def _mpiexec() -> str:
    here = Path(sys.executable).with_name("mpiexec")
    return str(here) if here.exists() else (shutil.which("mpiexec") or "mpiexec")


@pytest.fixture(scope="session")
def run_sdk(compat_service: CompatService, sdk_python: Callable[[str], Path]
            ) -> Callable[..., SdkRun]:
    """``run_sdk("15", "sdk15_scenarios.py", "wire")``: run a script in an SDK venv."""
    def run(major: str, script: str, *args: str, timeout_s: float = 900,
            prefix: str | None = None, env_extra: dict[str, str] | None = None) -> SdkRun:
        env = {**os.environ,
               "AZ_BATCH_ENDPOINT": compat_service.endpoint,
               "AZ_BATCH_ACCOUNT": compat_service.account,
               "AZ_BATCH_KEY": compat_service.key,
               "COMPAT_PREFIX": prefix or f"sdk{major}",
               "COMPAT_VM_SIZE": "STANDARD_D2S_V3",
               "COMPAT_PYTHON": sys.executable,
               "COMPAT_MPIEXEC": _mpiexec(), **(env_extra or {})}
        env.pop("PYTHONPATH", None)  # the SDK venv must not see this environment's packages
        proc = subprocess.run([str(sdk_python(major)), str(HERE / script), *args],
                              cwd=HERE, env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith("COMPAT-RESULT "):
                result = json.loads(line[len("COMPAT-RESULT "):])
        return SdkRun(proc.returncode, proc.stdout, proc.stderr, result)
    return run
