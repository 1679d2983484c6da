"""Secrets and certificates the hpcbatch service makes at its first start.

* The Batch account name and SharedKey, kept in ``{state_dir}/account.json``
  (mode 0600); clients sign with them as in the Batch document "Authenticate
  requests to the Azure Batch service" (see :mod:`hpcbatch.batch.sharedkey`).
* A private certificate authority and the service's certificate, under
  ``{state_dir}/tls/`` (:func:`hpcbatch.execution.pki.ensure_tls`, re-exported
  here). The Dask scheduler and the service's own Dask client present that
  certificate; each node gets its own certificate from the same CA
  (:func:`hpcbatch.execution.pki.issue_node_credentials`).

Every ``ensure_*`` function is idempotent: it reuses what is there, tightens
file modes that have become too loose, and holds a lock file so that two
processes starting at once do not both write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.sharedkey import decode_key, generate_account_key
from hpcbatch.batch.statedir import ACCOUNT_FILE
from hpcbatch.execution.pki import (
    ensure_tls,
    locked,
    private_dir,
    tighten,
    write_private,
)
from hpcbatch.execution.tls import TlsFiles

__all__ = [
    "AccountCredentials",
    "TlsFiles",
    "ensure_account_credentials",
    "ensure_tls",
]


@dataclass(frozen=True)
class AccountCredentials:
    """The Batch account this service answers as.

    Attributes
    ----------
    account_name
        Batch account name (the ``{account}`` of ``SharedKey {account}:...``).
    key
        Account key, base64 of 64 random bytes.
    key_file
        ``account.json`` holding both.
    """

    account_name: str
    key: str
    key_file: Path

    def __repr__(self) -> str:  # keep the key out of logs
        return f"AccountCredentials(account_name={self.account_name!r}, key_file={str(self.key_file)!r})"


# --------------------------------------------------------------------------
# account
# --------------------------------------------------------------------------


def ensure_account_credentials(state_dir: Path, account: str = "hpcbatch") -> AccountCredentials:
    """Create or read the service's Batch account name and SharedKey.

    The key is what clients sign requests with ("Authenticate requests to the
    Azure Batch service"). It lives in ``state_dir/account.json`` as
    ``{"account_name": ..., "key": ...}``, mode 0600 (re-applied if the file
    has become more open), in a directory of mode 0700.

    Parameters
    ----------
    state_dir
        The service's state directory; created if missing.
    account
        Account name used when the file is first created. An existing file
        keeps the name it holds.

    Returns
    -------
    AccountCredentials

    Raises
    ------
    HpcbatchError
        ``account.json`` exists but is not valid (bad JSON, missing fields,
        key not base64).
    """
    state_dir = private_dir(Path(state_dir))
    path = state_dir / ACCOUNT_FILE
    with locked(state_dir):
        if not path.exists():
            if not account or any(c in account for c in ": \t\r\n"):
                raise ValueError(f"invalid Batch account name {account!r}")
            doc = {"account_name": account, "key": generate_account_key()}
            write_private(path, (json.dumps(doc, indent=2) + "\n").encode())
        tighten(path)
        try:
            doc = json.loads(path.read_text())
            name, key = doc["account_name"], doc["key"]
            if not isinstance(name, str) or not name or not isinstance(key, str):
                raise TypeError("account_name and key must be non-empty strings")
            decode_key(key)
        except (ValueError, KeyError, TypeError) as exc:
            raise HpcbatchError(
                f"{path} is not a valid hpcbatch account file ({exc}); "
                "restore it, or delete it to make a new key.",
                code="InvalidAccountFile",
            ) from exc
    return AccountCredentials(account_name=name, key=key, key_file=path)


# --------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------
