"""Finding a running service through its state dir, as the CLI and the SDK do.

A running service writes ``{state_dir}/service.json`` (endpoint, account, the
path of its key file, pid, storage URL); the key itself is in that key file
(``account.json``). The file names and the default state dir are in
:mod:`hpcbatch.batch.statedir`, which the service uses too. Nothing here
imports the server stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcbatch.batch.errors import ServiceNotRunningError
from hpcbatch.batch.statedir import OPERATOR_KEY_FILE, SERVICE_FILE, default_state_dir

__all__ = ["ServiceConnection", "operator_key", "read_service_info", "service_connection",
           "state_dir_path"]


def state_dir_path(state_dir: Path | str | None = None) -> Path:
    """The state dir: ``state_dir``, else ``$HPCBATCH_STATE_DIR``, else ``~/.hpcbatch``; ``~`` expanded."""
    return Path(state_dir or default_state_dir()).expanduser()


def read_service_info(state_dir: Path) -> dict[str, Any] | None:
    """Return the ``service.json`` of a state dir, or None when it is missing or not a JSON object.

    Parameters
    ----------
    state_dir
        The service's state dir.

    Returns
    -------
    dict or None
        ``endpoint``, ``account``, ``key_file``, ``pid``, ``state_dir``,
        ``storage_url``, ``ca_file`` (HTTPS; else None), ``allow_api_local_hosts``,
        as the service wrote them. The service may have
        stopped since: the pid says whether it still runs.
    """
    try:
        info = json.loads((state_dir / SERVICE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def operator_key(state_dir: Path) -> str | None:
    """The operator key of a state dir (``operator.key``), or None when missing or unreadable.

    Parameters
    ----------
    state_dir
        The service's state dir.

    Returns
    -------
    str or None
        The key, base64; only someone who can read the state dir gets it.
    """
    try:
        return (state_dir / OPERATOR_KEY_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ServiceConnection:
    """What a client needs to reach a service: its endpoint and account credentials.

    Attributes
    ----------
    endpoint, account, key
        The service's URL, account name and account key.
    ca_file
        The service's CA certificate (PEM) when it serves HTTPS; None for HTTP.
    operator_key
        The operator key (``operator.key`` in the state dir), when readable.
    """

    endpoint: str
    account: str
    key: str
    ca_file: str | None = None
    operator_key: str | None = None

    def __repr__(self) -> str:  # keep the key out of logs
        return f"ServiceConnection(endpoint={self.endpoint!r}, account={self.account!r})"


def service_connection(state_dir: Path | str | None = None) -> ServiceConnection:
    """Read the endpoint, account and key of the service of a state dir.

    Parameters
    ----------
    state_dir
        The service's state dir; default ``$HPCBATCH_STATE_DIR`` or ``~/.hpcbatch``.

    Returns
    -------
    ServiceConnection
        From ``service.json`` and the key file it names.

    Raises
    ------
    ServiceNotRunningError
        ``ServiceUnavailable``: no readable ``service.json``, or its key file is
        missing or malformed.
    """
    sdir = state_dir_path(state_dir)
    info = read_service_info(sdir)
    try:
        if info is None:
            raise KeyError(SERVICE_FILE)
        key = json.loads(Path(info["key_file"]).read_text())["key"]
        ca_file = info.get("ca_file")
        return ServiceConnection(str(info["endpoint"]), str(info["account"]), str(key),
                                 str(ca_file) if ca_file else None, operator_key(sdir))
    except (OSError, ValueError, KeyError, TypeError):
        raise ServiceNotRunningError(
            f"No hpcbatch service is running for state dir {sdir} (no {sdir / SERVICE_FILE}). "
            "Start one with 'hpcbatch service start', or set AZURE_BATCH_ENDPOINT, "
            "AZURE_BATCH_ACCOUNT and AZURE_BATCH_ACCESS_KEY.") from None
