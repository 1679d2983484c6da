"""Application packages: naming rules (pure) and installation on a node.

Implements "Deploy applications to compute nodes with Batch application
packages": a package version is a zip in the service storage; a node extracts
it once, under ``applications/``, and tasks see ``AZ_BATCH_APP_PACKAGE_{app}_{version}``
(today's Linux rule: characters other than letters and digits become ``_``,
all lower-case) and, for the application's default version,
``AZ_BATCH_APP_PACKAGE_{app}``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
INSTALL_LOG = "installs.log"
"""File under ``applications/`` with one line per extraction (to show each happens once)."""
EXTRACT_MODE_MASK = 0o1777
"""Mode bits a zip entry keeps when extracted: read/write/execute and sticky, never
setuid or setgid (a package file must not run with its owner's identity)."""


@dataclass(frozen=True)
class PackageRef:
    """A package version a task needs, resolved by the service.

    Attributes
    ----------
    application_id, version
        The application and the version (the default one when the reference named none).
    storage_key
        Where the zip is in the service storage.
    is_default
        The reference named no version: ``AZ_BATCH_APP_PACKAGE_{app}`` is set too.
    """

    application_id: str
    version: str
    storage_key: str
    is_default: bool = False


def _flat(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).lower()


def variable_name(application_id: str, version: str | None = None) -> str:
    """Return the package's variable: ``AZ_BATCH_APP_PACKAGE_{app}[_{version}]`` (Linux rule)."""
    suffix = _flat(application_id) + (f"_{_flat(version)}" if version is not None else "")
    return f"AZ_BATCH_APP_PACKAGE_{suffix}"


def directory_name(application_id: str, version: str) -> str:
    """Return the folder a package version is extracted to, under the node's ``applications/``."""
    return f"{_flat(application_id)}_{_flat(version)}"


def install(root: Path, ref: PackageRef, fetch: Callable[[str, Path], None]) -> Path:
    """Extract a package version under ``root/applications`` unless it is there already.

    Parameters
    ----------
    root
        The node root directory.
    ref
        The package version.
    fetch
        ``fetch(storage_key, local_path)`` downloads the zip.

    Returns
    -------
    Path
        The package's folder.
    """
    apps = root / "applications"
    target = apps / directory_name(ref.application_id, ref.version)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(target), threading.Lock())
    with lock:
        if (target / ".hpcbatch-installed").exists():
            return target
        apps.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=apps, prefix=".install-") as tmp:
            archive = Path(tmp, "package.zip")
            fetch(ref.storage_key, archive)
            staging = Path(tmp, "contents")
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    dest = (staging / member.filename).resolve()
                    if not dest.is_relative_to(staging.resolve()):
                        raise ValueError(f"zip member {member.filename!r} leaves the package folder")
                zf.extractall(staging)
                for member in zf.infolist():  # keep permission bits, never setuid/setgid
                    mode = member.external_attr >> 16
                    if mode:
                        (staging / member.filename).chmod(mode & EXTRACT_MODE_MASK)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        (target / ".hpcbatch-installed").touch()
        with open(apps / INSTALL_LOG, "a") as log:
            log.write(f"{ref.application_id} {ref.version}\n")
        return target
