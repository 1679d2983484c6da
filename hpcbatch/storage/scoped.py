"""Storage credentials scoped to one job, for its tasks (issue 12, "Scoped credentials").

A task must not hold the service's storage credential: with the account key it
could read and overwrite every job's outputs and application packages. Batch
gives a task what Batch gives it -- its job's outputs through the File
Conventions (container ``job-{jobId}``, see
:func:`hpcbatch.storage.conventions.job_output_container_name`) -- so the
service hands each task a credential for that one container, SAS-style, and
nothing else:

=================  ==================================================================
service storage    what a task gets
=================  ==================================================================
``az://`` with an  a *container SAS* (``azure.storage.blob.generate_container_sas``)
account key        for the job's container only, permissions read, add, create,
                   write, delete and list, valid from 15 minutes ago (clock skew)
                   until the task's wall-clock limit plus one hour (7 days without a
                   limit), as the connection string
                   ``BlobEndpoint=...;SharedAccessSignature=...`` and as the container
                   SAS URL in ``HPCBATCH_JOB_CONTAINER_URL`` (what azure-storage-blob's
                   ``ContainerClient.from_container_url`` takes). No account key.
``az://`` without  nothing secret: the service cannot sign a SAS without the key (an
an account key,    account SAS or an Azure AD credential given to the service is not
or ``az://c/...``  passed on), and a storage rooted inside one container has no
                   per-job container to scope to. :attr:`JobStorageCredentials.limitation`
                   says so and the service logs it once.
``s3://``          the bucket URL and non-secret options, never the access key: S3 has
                   no per-prefix credential without STS. Tasks use the node's own AWS
                   credentials (instance profile, the task user's ``~/.aws``), if any.
``file://``        the folder URL: a folder has no credential to scope. The task's
                   storage refuses keys outside its job's container, but that is a
                   check in the task's own process, not a barrier: what a task can
                   read on the file system is what its user identity allows.
=================  ==================================================================

In every case ``HPCBATCH_STORAGE_CONTAINERS`` names the job's container, and
:func:`hpcbatch.storage.fs.open_storage_from_environment` opens a storage scoped
to it (:class:`hpcbatch.storage.fs.StorageAccessError` for any other key, before
any request). The container must exist before the task runs -- a container SAS
cannot create it -- which the node agent sees to with the service's storage
(:func:`hpcbatch.execution.transfer.prepare_job_container`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from hpcbatch.storage.conventions import job_output_container_name
from hpcbatch.storage.fs import (
    ENV_STORAGE_CONTAINERS,
    ENV_STORAGE_OPTIONS,
    ENV_STORAGE_URL,
    StorageConfigurationError,
    storage_environment,
)

__all__ = [
    "DEFAULT_LIFETIME",
    "ENV_JOB_CONTAINER_URL",
    "JobStorageCredentials",
]

ENV_JOB_CONTAINER_URL = "HPCBATCH_JOB_CONTAINER_URL"
"""Variable holding the job container's SAS URL in a task's environment (Azure only)."""

DEFAULT_LIFETIME = timedelta(days=7)
"""How long a task's SAS is valid when the task has no wall-clock limit."""

_MARGIN = timedelta(hours=1)  # uploads at the task's end, clock skew at the end
_SKEW = timedelta(minutes=15)  # node clocks behind the service's
_SECRET_VARIABLES = frozenset({
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
})
_CACHE_LIMIT = 4096


class JobStorageCredentials:
    """Mints the storage variables of a task, scoped to its job's container.

    Parameters
    ----------
    url, options
        The service's storage (as for :func:`hpcbatch.storage.fs.open_storage`).
    lifetime
        Validity of a SAS for a task without a wall-clock limit.

    Attributes
    ----------
    kind
        ``"sas"`` (a container SAS per job), ``"prefix"`` (the job's container
        named, no secret to scope: local folders, S3, Azure without a key).
    limitation
        One sentence on what scoping cannot do for this storage (None for a SAS).

    Raises
    ------
    StorageConfigurationError
        The service's Azure credential cannot be read (a malformed connection
        string).
    """

    def __init__(self, url: str | os.PathLike[str], options: Mapping[str, Any] | None = None, *,
                 lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        full = storage_environment(url, options)
        self.url = full[ENV_STORAGE_URL]
        self.lifetime = lifetime
        self._public = {k: v for k, v in full.items() if k not in _SECRET_VARIABLES}
        self._account: tuple[str, str, str] | None = None  # name, key, blob endpoint
        self._cache: dict[tuple[str, datetime], dict[str, str]] = {}
        self._lock = threading.Lock()
        scheme = urlsplit(self.url).scheme.lower()
        self.kind = "prefix"
        self.limitation: str | None = None
        if scheme in ("az", "abfs", "abfss"):
            self._public.pop(ENV_STORAGE_OPTIONS, None)  # adlfs options may carry credentials
            inside = _container_of(self.url)
            self._account = None if inside else _account_of(full)
            if inside:
                self.limitation = (f"storage {self.url} lies inside one blob container that all "
                                   "jobs share: tasks get no storage credential")
            elif self._account is None:
                self.limitation = (f"storage {self.url} was given without an account key, so no "
                                   "container SAS can be signed: tasks get no storage credential")
            else:
                self.kind = "sas"
        elif scheme in ("s3", "s3a"):
            self.limitation = ("S3 has no per-prefix credential without STS: tasks get no key, "
                               "only the node's own AWS credentials, if any")
        elif scheme == "file":
            self.limitation = ("a storage folder has no credential to scope: a task reaches "
                               "other jobs' outputs if its user identity can read the folder")

    def environment(self, job_id: str, *, valid_for: timedelta | None = None,
                    now: datetime | None = None) -> dict[str, str]:
        """Return the storage variables of a task of ``job_id``.

        Parameters
        ----------
        job_id
            The Batch job ID; the scope is its conventions container.
        valid_for
            How long the task may run (its ``maxWallClockTime``); None: unlimited
            (the SAS then lasts :attr:`lifetime`). One hour is added for the
            uploads at the task's end.
        now
            The current time (UTC); for tests.

        Returns
        -------
        dict of str to str
            ``HPCBATCH_STORAGE_URL``, ``HPCBATCH_STORAGE_CONTAINERS`` and, for a
            SAS, ``AZURE_STORAGE_CONNECTION_STRING`` and ``HPCBATCH_JOB_CONTAINER_URL``.
            Equal calls within the same hour return the same SAS.
        """
        container = job_output_container_name(job_id)
        env = {**self._public, ENV_STORAGE_CONTAINERS: container}
        if self._account is None:
            return env
        now = now or datetime.now(UTC)
        expiry = now + (valid_for + _MARGIN if valid_for is not None else self.lifetime)
        expiry = expiry.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        with self._lock:
            cached = self._cache.get((container, expiry))
        if cached is None:
            cached = self._sign(container, expiry, now)
            with self._lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[(container, expiry)] = cached
        return {**env, **cached}

    def _sign(self, container: str, expiry: datetime, now: datetime) -> dict[str, str]:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        assert self._account is not None
        name, key, endpoint = self._account
        sas = generate_container_sas(
            name, container, account_key=key,
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                               delete=True, list=True),
            expiry=expiry, start=now - _SKEW)
        return {"AZURE_STORAGE_CONNECTION_STRING":
                f"BlobEndpoint={endpoint};SharedAccessSignature={sas}",
                ENV_JOB_CONTAINER_URL: f"{endpoint}/{container}?{sas}"}


def _container_of(url: str) -> str:
    """The container an ``az://container/...`` URL is rooted in ('' at the account root)."""
    parts = urlsplit(url)
    return (parts.netloc.split("@", 1)[0] if "@" in parts.netloc else parts.netloc) or \
        parts.path.strip("/").split("/", 1)[0]


def _account_of(full: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(account name, account key, blob endpoint) of a storage's variables, if it has a key."""
    from azure.storage.blob import BlobServiceClient

    cs = full.get("AZURE_STORAGE_CONNECTION_STRING")
    try:
        if cs:
            client = BlobServiceClient.from_connection_string(cs)
        elif full.get("AZURE_STORAGE_ACCOUNT_NAME") and full.get("AZURE_STORAGE_ACCOUNT_KEY"):
            name = full["AZURE_STORAGE_ACCOUNT_NAME"]
            options = json.loads(full.get(ENV_STORAGE_OPTIONS) or "{}")
            host = options.get("account_host") or f"{name}.blob.core.windows.net"
            client = BlobServiceClient(f"https://{host}", credential={
                "account_name": name, "account_key": full["AZURE_STORAGE_ACCOUNT_KEY"]})
        else:
            return None
    except ValueError as exc:
        raise StorageConfigurationError(f"the service's Azure storage credential cannot be "
                                        f"read: {exc}") from exc
    key = getattr(client.credential, "account_key", None)
    if not key:
        return None
    endpoint = client.url.split("?", 1)[0].rstrip("/")
    return str(client.account_name), str(key), endpoint
