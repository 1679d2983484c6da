"""The service state dir: where it is and the names of the files in it.

Shared by the service (which writes these files) and its clients (the CLI and
:meth:`hpcbatch.BatchClient.from_environment`, which read them), so both agree
without the client importing the server stack. Pure: no imports beyond the
standard library, no file access.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "HPCBATCH_STATE_DIR"
"""Environment variable naming the state dir."""

SERVICE_FILE = "service.json"
"""Written by a running service: ``endpoint``, ``account``, ``key_file``, ``pid``,
``state_dir``, ``storage_url``, ``database`` (the store's URL, password hidden)."""

ACCOUNT_FILE = "account.json"
"""The Batch account name and key: ``{"account_name": ..., "key": ...}``."""

OPERATOR_KEY_FILE = "operator.key"
"""The operator key (base64, mode 0600): proves a request comes from someone who can read
the state dir (``hpcbatch-operator`` header); API callers hold only the account key."""

EVENTS_FILE = "events.jsonl"
"""The diagnostic event log (JSON lines)."""

STORE_FILE = "store.json"
"""The store the state dir's service last started with: ``{"database_url": ...}`` (mode
0600: the URL may hold a password). A start without a database URL uses it again."""

SERVICE_LOG_FILE = "service.log"
"""Where ``hpcbatch service start --detach`` sends the service's output."""


def default_state_dir() -> Path:
    """Return the state dir: ``$HPCBATCH_STATE_DIR``, else ``~/.hpcbatch``.

    Returns
    -------
    Path
        Not expanded further (a ``~`` in the variable stays) and not checked to exist.
    """
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".hpcbatch")
