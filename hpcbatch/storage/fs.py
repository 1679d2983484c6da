"""Storage on fsspec: where resource files, application packages and task outputs live.

Layer 6 of the design (DESIGN.md, "Storage"): one URL names the storage of a
service, and one small interface, :class:`Storage`, reads and writes it:

==========================================  ===========================================
URL                                         storage
==========================================  ===========================================
``file:///srv/hpcbatch/storage``, a path    folders on a file system (the default: a
                                            folder under the service state dir, see
                                            :func:`default_storage_url`)
``az://`` / ``abfs://`` (adlfs)             an Azure Storage account's blob service;
                                            ``az://container/prefix`` keeps everything
                                            under one blob container instead
``s3://`` / ``s3://bucket/prefix`` (s3fs)   S3 or an S3-compatible object store
``memory://``                               fsspec's in-process memory file system (tests)
==========================================  ===========================================

Keys
----
Every object is named by a key ``container/path/inside/container``: the first
segment is the *container* (Azure's blob container; a folder on local storage;
an S3 bucket when the URL names no bucket), the rest is the blob name. Keys use
``/``; no segment may be empty, ``.`` or ``..``. Containers are created on
demand by the first write into them (Batch's ``PrepareOutputStorageAsync``
step is therefore optional here).

Credentials
-----------
Azure: ``options`` ``connection_string`` or ``account_name`` with
``account_key`` / ``sas_token`` (any other adlfs argument passes through); when
none is given, ``AZURE_STORAGE_CONNECTION_STRING`` (then adlfs's own
``AZURE_STORAGE_*`` variables). S3: s3fs arguments (``key``, ``secret``,
``token``, ``endpoint_url``, ``client_kwargs``...), else botocore's usual
``AWS_*`` variables and files.

A task reaches the same storage through its environment, scoped to its job's
container: :mod:`hpcbatch.storage.scoped` builds the variables the service puts
in a task's environment (a container SAS on Azure, never the account key), and
:func:`open_storage_from_environment` opens the storage from them inside the
task (``hpcbatch.storage.conventions.TaskOutputStorage.from_environment`` uses
it). :func:`storage_environment` gives the full credential, for trusted
processes only. A ``file://`` storage is only reachable from a task on another host if
that path is on a file system the host shares.

Errors are :class:`StorageError` and subclasses (all :class:`~hpcbatch.batch.errors.HpcbatchError`),
with messages naming the storage URL and key.
"""

from __future__ import annotations

import builtins
import errno
import functools
import json
import os
import posixpath
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from hpcbatch.batch.errors import HpcbatchError

__all__ = [
    "ENV_STORAGE_CONTAINERS",
    "ENV_STORAGE_OPTIONS",
    "ENV_STORAGE_URL",
    "ObjectInfo",
    "Storage",
    "StorageAccessError",
    "StorageConfigurationError",
    "StorageError",
    "StorageKeyError",
    "StorageNotFoundError",
    "default_storage_url",
    "open_storage",
    "open_storage_from_environment",
    "storage_environment",
]

ENV_STORAGE_URL = "HPCBATCH_STORAGE_URL"
"""Variable holding the storage URL in a task's environment."""

ENV_STORAGE_OPTIONS = "HPCBATCH_STORAGE_OPTIONS"
"""Variable holding the non-secret storage options (JSON object) in a task's environment."""

ENV_STORAGE_CONTAINERS = "HPCBATCH_STORAGE_CONTAINERS"
"""Variable naming (comma-separated) the only containers a task's storage reaches."""

_AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
_S3_PROTOCOLS = frozenset({"s3", "s3a"})

# option name -> environment variable, per storage family; these carry credentials
_AZURE_ENV = {
    "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "account_name": "AZURE_STORAGE_ACCOUNT_NAME",
    "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
    "sas_token": "AZURE_STORAGE_SAS_TOKEN",
}
_S3_ENV = {
    "key": "AWS_ACCESS_KEY_ID",
    "secret": "AWS_SECRET_ACCESS_KEY",
    "token": "AWS_SESSION_TOKEN",
}

# local writes go to a hidden temporary file first, then are renamed into place
_TEMP_MARK = ".hpcbatch-tmp-"
_TEMP_NAME = re.compile(r"(^|/)\.[^/]*\.hpcbatch-tmp-\d+-\d+$")

# Azure's blob container naming rule (Naming and Referencing Containers, Blobs, and Metadata)
_AZURE_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


# --------------------------------------------------------------------------- errors


class StorageError(HpcbatchError):
    """Storage could not be read or written; the message names the URL and key."""

    code = "StorageError"
    status = 500


class StorageNotFoundError(StorageError):
    """The object (or local file) asked for does not exist."""

    code = "BlobNotFound"
    status = 404


class StorageKeyError(StorageError):
    """A key or output path is not of the allowed form (empty, absolute, ``..``...)."""

    code = "InvalidStorageKey"
    status = 400


class StorageAccessError(StorageError):
    """The key is outside the containers this storage is scoped to (a task's job container)."""

    code = "AuthorizationPermissionMismatch"
    status = 403


class StorageConfigurationError(StorageError):
    """The storage URL, its options, credentials or its fsspec driver are wrong or missing."""

    code = "StorageConfigurationError"
    status = 400


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, as listed by :meth:`Storage.list`.

    Attributes
    ----------
    key
        ``container/path`` of the object.
    size_bytes
        Its size, in bytes.
    last_modified
        When it was last written (timezone-aware UTC), or None when the store
        does not say.
    """

    key: str
    size_bytes: int
    last_modified: datetime | None


# --------------------------------------------------------------------------- keys


def _check_key(key: str, *, what: str = "key") -> str:
    """Return ``key`` if it is a valid ``container/path`` key; raise StorageKeyError otherwise."""
    if not isinstance(key, str) or not key:
        raise StorageKeyError(f"storage {what} must be a non-empty 'container/path' string, not {key!r}")
    if key.startswith("/") or "\\" in key:
        raise StorageKeyError(f"storage {what} {key!r} must be relative and use '/' separators")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise StorageKeyError(
                f"storage {what} {key!r} has an empty, '.' or '..' segment; "
                "keys are 'container/path' with plain segments"
            )
    return key


def _check_prefix(prefix: str) -> str:
    """Return a listing prefix (a key, or the start of one; may end in '/'; may be empty)."""
    if prefix == "":
        return prefix
    body = prefix.removesuffix("/")
    if not body:
        raise StorageKeyError("storage prefix '/' is not allowed; use '' for everything")
    # the last segment may be partial, but still not '.'/'..' or empty
    _check_key(body, what="prefix")
    return prefix


def _to_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _last_modified(info: Mapping[str, Any]) -> datetime | None:
    for field in ("last_modified", "LastModified", "mtime", "modified", "created"):
        if field in info and info[field] is not None:
            return _to_datetime(info[field])
    return None


# --------------------------------------------------------------------------- storage


class Storage:
    """A storage account: an fsspec file system and a root inside it, addressed by keys.

    Build one with :func:`open_storage`. Methods are thread-safe as far as the
    underlying fsspec file system is (local, memory, adlfs and s3fs are).

    Parameters
    ----------
    fs
        The fsspec file system.
    root
        Root path inside ``fs`` (already stripped of its protocol); keys are
        relative to it. ``""`` is the account root of an object store, where
        the first key segment is a blob container / bucket.
    url
        The canonical storage URL (absolute for local storage); used in messages
        and by :func:`storage_environment`.
    options
        The options the storage was opened with (credentials included).
    containers
        The only containers this storage may reach (a task's job container,
        a container SAS URL's container), or None for all. They are taken to
        exist already: a container-scoped credential (a container SAS) cannot
        create or even look up a container. Keys outside them raise
        :class:`StorageAccessError` before any request is made.
    """

    def __init__(self, fs: Any, root: str, *, url: str, options: Mapping[str, Any] | None = None,
                 containers: Iterable[str] | None = None) -> None:
        self.fs = fs
        self.containers: frozenset[str] | None = (
            None if containers is None else frozenset(containers))
        self.root = root.rstrip("/") if root not in ("", "/") else root
        self.url = url
        self.options: dict[str, Any] = dict(options or {})
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol: str = "file" if protocol in ("file", "local") else protocol
        self._containers: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # -- kind of storage

    @property
    def is_local(self) -> bool:
        """True for folders on a file system (``file://`` URLs and plain paths)."""
        return self.protocol == "file"

    @property
    def is_azure(self) -> bool:
        """True for Azure blob storage (adlfs)."""
        return self.protocol in _AZURE_PROTOCOLS

    @property
    def _at_account_root(self) -> bool:
        return not self.is_local and self.root.strip("/") == ""

    def _in_scope(self, key: str, action: str) -> str:
        """Return ``key`` if its container is one this storage may reach; raise otherwise."""
        if self.containers is not None and key.split("/", 1)[0] not in self.containers:
            raise StorageAccessError(
                f"storage {self.url}: cannot {action} {key!r}: this storage reaches only "
                f"container(s) {', '.join(sorted(self.containers)) or '(none)'}",
                values={"StorageUrl": self.url, "Key": key})
        return key

    # -- paths

    def _path(self, key: str) -> str:
        if not self.root:
            return key
        if self.root == "/":
            return "/" + key
        return f"{self.root}/{key}"

    def _key_of(self, path: str) -> str:
        root = self.root
        if root in ("", "/"):
            return path.lstrip("/")
        if path.startswith(root + "/"):
            return path[len(root) + 1:]
        # some file systems return the root without its leading '/'
        bare = root.lstrip("/")
        if path.startswith(bare + "/"):
            return path[len(bare) + 1:]
        return path

    def url_for(self, key: str) -> str:
        """Return a URL of the object named ``key``.

        Parameters
        ----------
        key
            ``container/path``.

        Returns
        -------
        str
            ``file:///...`` for local storage, the blob's ``https://`` (or
            Azurite ``http://``) URL for Azure, ``s3://bucket/key`` for S3,
            ``memory://...`` for memory storage. No credentials or SAS are added.
        """
        _check_key(key)
        path = self._path(key)
        if self.is_local:
            folder, _, name = path.rpartition("/")
            return f"{_folder_uri(folder)}/{quote(name)}"
        if self.is_azure:
            service = getattr(self.fs, "service_client", None)
            if service is not None:
                container, _, blob = path.partition("/")
                base = service.url.split("?", 1)[0].rstrip("/")
                return f"{base}/{container}/{quote(blob, safe='/~')}"
        return str(self.fs.unstrip_protocol(path))

    # -- error translation

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except HpcbatchError:
            raise
        except FileNotFoundError as exc:
            raise StorageNotFoundError(
                f"storage {self.url}: cannot {action} {key!r}: it does not exist",
                values={"StorageUrl": self.url, "Key": key},
            ) from exc
        except Exception as exc:  # driver errors: azure.core, botocore, OSError...
            if _error_code(exc) in ("BlobNotFound", "ContainerNotFound", "NoSuchKey", "NoSuchBucket"):
                raise StorageNotFoundError(
                    f"storage {self.url}: cannot {action} {key!r}: it does not exist ({_error_code(exc)})",
                    values={"StorageUrl": self.url, "Key": key},
                ) from exc
            raise StorageError(
                f"storage {self.url}: cannot {action} {key!r}: {type(exc).__name__}: {_first_line(exc)}",
                values={"StorageUrl": self.url, "Key": key},
            ) from exc

    # -- containers

    def ensure_container(self, container: str) -> None:
        """Create the container (blob container, bucket or folder) if it does not exist.

        Parameters
        ----------
        container
            A container name (one key segment). On an Azure account root it
            must be a valid blob container name (3-63 of ``a-z0-9-``, no
            leading, trailing or doubled ``-``).

        Raises
        ------
        StorageKeyError
            The name is not a valid container name for this storage.
        StorageError
            The container could not be created.
        """
        _check_key(container, what="container")
        if "/" in container:
            raise StorageKeyError(f"storage container {container!r} must be a single key segment")
        if self.is_azure and self._at_account_root and not _AZURE_CONTAINER_NAME.fullmatch(container):
            raise StorageKeyError(
                f"storage {self.url}: {container!r} is not a valid Azure blob container name "
                "(3-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit, "
                "no '--')",
                values={"StorageUrl": self.url, "Container": container},
            )
        self._in_scope(container, "use container")
        with self._lock:
            if container in self._containers:
                return
        path = self._path(container)
        if self.containers is not None and not (self.is_local or self.protocol == "memory"):
            with self._lock:  # made by whoever scoped this storage; a SAS cannot look it up
                self._containers.add(container)
            return
        with self._errors("create container", container):
            if self.is_local or self.protocol == "memory":
                self.fs.makedirs(path, exist_ok=True)
            elif self._at_account_root:
                self._create_top_level(path)
            else:
                # inside one blob container / bucket: create that; object stores have no folders
                self._create_top_level(self.root.strip("/").split("/", 1)[0])
        with self._lock:
            self._containers.add(container)

    def _create_top_level(self, name: str) -> None:
        """Create blob container / bucket ``name`` at the account root if missing."""
        self.fs.invalidate_cache(name)
        if self.fs.exists(name):
            return
        try:
            self.fs.mkdir(name)
        except FileExistsError:
            pass
        except Exception as exc:  # another writer created it first
            if _error_code(exc) not in ("ContainerAlreadyExists", "BucketAlreadyOwnedByYou",
                                        "BucketAlreadyExists"):
                raise

    def _fresh(self, path: str = "") -> None:
        """Forget cached listings: other processes (tasks, clients) write the same store."""
        if not self.is_local:
            self.fs.invalidate_cache(path or None)

    def _write(self, action: str, key: str, write: Callable[[str], None]) -> None:
        """Run ``write(path)`` for ``key``; once more if its container vanished meanwhile."""
        with self._errors(action, key):
            path = self._prepare_write(key)
            try:
                write(path)
            except Exception as exc:
                if _error_code(exc) not in ("ContainerNotFound", "NoSuchBucket"):
                    raise
                with self._lock:  # deleted by someone else since we created it
                    self._containers.discard(key.split("/", 1)[0])
                write(self._prepare_write(key))

    def _prepare_write(self, key: str) -> str:
        _check_key(key)
        self._in_scope(key, "write")
        container = key.split("/", 1)[0]
        if "/" not in key:
            raise StorageKeyError(
                f"storage key {key!r} names only a container; objects are 'container/path'"
            )
        self.ensure_container(container)
        path = self._path(key)
        if self.protocol == "memory":  # local writes create their folder on demand
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return path

    # -- writes

    def put_file(self, local_path: str | os.PathLike[str], key: str, *,
                 link: bool = False) -> None:
        """Upload a local file as ``key``, replacing any object of that name.

        Parameters
        ----------
        local_path
            The file to upload.
        key
            ``container/path`` to store it under.
        link
            On local storage, store the object as a hard link to ``local_path``
            (no copy, whatever the size) when both are on one file system;
            the caller then replaces ``local_path`` instead of rewriting it.
            Elsewhere the file is copied as usual.

        Raises
        ------
        StorageNotFoundError
            ``local_path`` does not exist.
        StorageKeyError, StorageError
        """
        source = os.fspath(local_path)
        if not os.path.isfile(source):
            raise StorageNotFoundError(
                f"cannot upload {source!r} to {self.url} as {key!r}: no such local file",
                values={"StorageUrl": self.url, "Key": key, "LocalPath": source},
            )

        def write(path: str) -> None:
            if self.is_local:
                _put_local(source, path, link)
            else:
                self.fs.put_file(source, path)

        self._write("upload", key, write)

    def put_files(self, files: Sequence[tuple[str | os.PathLike[str], str]], *,
                  link: bool = False, missing_ok: bool = False) -> int:
        """Upload several local files, each as its key (one :meth:`put_file` each).

        On local storage the keys and their containers are checked once for
        the whole list, and each folder is made once, before its files, one
        ``mkdir`` a missing level: what a node pays for its runs' ``$TaskLog``
        outputs (:func:`hpcbatch.execution.transfer.persist_task_logs`).

        Parameters
        ----------
        files
            ``(local path, "container/path" key)`` pairs.
        link
            As in :meth:`put_file`: hard links on local storage when possible.
        missing_ok
            Skip a local file that does not exist instead of raising.

        Returns
        -------
        int
            How many files were stored.

        Raises
        ------
        StorageNotFoundError
            A local file does not exist (and ``missing_ok`` is false).
        StorageKeyError, StorageAccessError, StorageError
        """
        if not self.is_local:
            stored = 0
            for source, key in files:
                try:
                    self.put_file(source, key, link=link)
                except StorageNotFoundError:
                    if missing_ok and not os.path.exists(source):
                        continue
                    raise
                stored += 1
            return stored
        for _, key in files:
            _check_key(key)
            self._in_scope(key, "upload")
            if "/" not in key:
                raise StorageKeyError(
                    f"storage key {key!r} names only a container; objects are 'container/path'")
        for container in {key.split("/", 1)[0] for _, key in files}:
            self.ensure_container(container)
        paths = [self._path(key) for _, key in files]
        for folder in dict.fromkeys(os.path.dirname(path) for path in paths):
            with self._errors("upload", folder):
                _make_folder(folder)
        stored = 0
        for (source_path, key), path in zip(files, paths, strict=True):
            source = os.fspath(source_path)
            with self._errors("upload", key):
                try:
                    _put_local(source, path, link)
                except FileNotFoundError:
                    if os.path.exists(source):
                        raise
                    if missing_ok:
                        continue
                    raise StorageNotFoundError(
                        f"cannot upload {source!r} to {self.url} as {key!r}: no such local file",
                        values={"StorageUrl": self.url, "Key": key, "LocalPath": source},
                    ) from None
            stored += 1
        return stored

    def put_bytes(self, data: bytes, key: str) -> None:
        """Store ``data`` as ``key``, replacing any object of that name.

        Parameters
        ----------
        data
            The object's content.
        key
            ``container/path``.
        """
        data = bytes(data)

        def write(path: str) -> None:
            if self.is_local:
                _atomic_write(path, data)
            else:
                self.fs.pipe_file(path, data)

        self._write("write", key, write)

    def append_bytes(self, data: bytes, key: str, *, replace: bool = False) -> None:
        """Append ``data`` to the object ``key``, creating it (empty, then ``data``) if missing.

        Used for tracked logs (``SaveTrackedAsync``). Local and memory storage
        append to the file; Azure appends to an *append blob* (as the .NET
        File Conventions library does) and converts an existing block blob to
        an append blob once; stores that cannot append (S3) rewrite the whole
        object. Appends to one key must come from one writer at a time.

        Parameters
        ----------
        data
            Bytes to add at the end (may be empty: only ensures the object exists).
        key
            ``container/path``.
        replace
            Start over: the object then holds only ``data`` (still appendable),
            whatever it held before. On Azure the blob never disappears meanwhile.
        """
        data = bytes(data)

        def write(path: str) -> None:
            if self.is_local:
                if replace:
                    _atomic_write(path, data)
                else:
                    with open(path, "ab") as f:
                        f.write(data)
            elif self.is_azure:
                if replace:
                    self._azure_put_append_blob(path, data)
                    return
                try:
                    with self.fs.open(path, "ab") as f:
                        f.write(data)
                except Exception as exc:
                    if _error_code(exc) != "InvalidBlobType":
                        raise
                    # a block blob (written by put_bytes/put_file): rewrite it as an append blob
                    self._azure_put_append_blob(path, bytes(self.fs.cat_file(path)) + data)
            elif self.protocol == "memory" and not replace:
                with self.fs.open(path, "ab") as f:
                    f.write(data)
            else:
                old = b"" if replace or not self.fs.exists(path) else bytes(self.fs.cat_file(path))
                self.fs.pipe_file(path, old + data)

        self._write("append to", key, write)

    def _azure_put_append_blob(self, path: str, data: bytes) -> None:
        """Replace blob ``path`` by an append blob holding ``data`` (Put Blob, then Append Block)."""
        from fsspec.asyn import sync

        container, _, blob = path.partition("/")
        fs = self.fs
        block_bytes = 4 * 1024 * 1024  # the Append Block size every service version accepts

        async def put() -> None:
            async with fs.service_client.get_blob_client(container, blob) as client:
                await client.create_append_blob()  # replaces a blob of any type
                for start in range(0, len(data), block_bytes):
                    await client.append_block(data[start:start + block_bytes])

        sync(fs.loop, put)
        fs.invalidate_cache(path)

    # -- reads

    def get_bytes(self, key: str) -> bytes:
        """Return the content of ``key``.

        Raises
        ------
        StorageNotFoundError
            No object has that key.
        """
        _check_key(key)
        self._in_scope(key, "read")
        with self._errors("read", key):
            return bytes(self.fs.cat_file(self._path(key)))

    def get_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Download ``key`` to ``local_path`` (parent folders are created; the file is replaced).

        Raises
        ------
        StorageNotFoundError
            No object has that key.
        StorageError
            Code ``InvalidLocalPath``: ``local_path`` is a folder (or ends with ``/``),
            not the file to write.
        """
        _check_key(key)
        self._in_scope(key, "download")
        target = os.fspath(local_path)
        if target.endswith(("/", os.sep)) or os.path.isdir(target):
            raise StorageError(
                f"cannot download {key!r} to {target!r}: it is a folder; give the path of "
                "the file to write", code="InvalidLocalPath", status=400,
                values={"LocalPath": target, "Key": key})
        with self._errors("download", key):
            parent = os.path.dirname(os.path.abspath(target))
            os.makedirs(parent, exist_ok=True)
            tmp = f"{target}.part-{os.getpid()}-{threading.get_ident()}"
            try:
                self.fs.get_file(self._path(key), tmp)
                if not os.path.exists(tmp):  # some drivers write nothing for an empty object
                    open(tmp, "wb").close()
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def exists(self, key: str) -> bool:
        """Return True if an object (not merely a folder or container) is named ``key``."""
        _check_key(key)
        self._in_scope(key, "look up")
        with self._errors("look up", key):
            path = self._path(key)
            self._fresh()
            if not self.fs.exists(path):
                return False
            try:
                return bool(self.fs.isfile(path))
            except FileNotFoundError:
                return False

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """List the objects whose key starts with ``prefix`` (like a blob listing).

        Parameters
        ----------
        prefix
            A string prefix of keys: ``""`` (everything), ``"job-1/"`` (one
            container), ``"job-1/t1/$TaskOutput/"`` or a partial name such as
            ``"job-1/t1/$TaskOutput/frame_"``.

        Returns
        -------
        list of ObjectInfo
            Sorted by key. A prefix under a missing container gives ``[]``.
        """
        _check_prefix(prefix)
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if folder:
            self._in_scope(folder, "list")
        with self._errors("list", prefix or "(all)"):
            self._fresh()
            if folder:
                bases: builtins.list[str] = [self._path(folder)]
            elif self.containers is not None:  # a scoped credential cannot list the account
                bases = [self._path(c) for c in sorted(self.containers) if c.startswith(prefix)]
            else:
                # no folder in the prefix: walk the containers whose names match
                # (adlfs cannot 'find' across a whole account)
                top = self.root or ("/" if self.protocol == "memory" else "")
                try:
                    entries = self.fs.ls(top, detail=False)
                except FileNotFoundError:
                    entries = []
                bases = [e for e in entries if self._key_of(e.rstrip("/")).startswith(prefix)]
            found: dict[str, Any] = {}
            result: builtins.list[ObjectInfo] = []
            for base in bases:
                try:
                    found.update(self.fs.find(base, detail=True))
                except FileNotFoundError:
                    continue
            for path, info in found.items():
                if info.get("type", "file") != "file":
                    continue
                key = self._key_of(path)
                if not key.startswith(prefix) or key == "" or _TEMP_NAME.search(key):
                    continue
                result.append(ObjectInfo(key=key, size_bytes=int(info.get("size") or 0),
                                         last_modified=_last_modified(info)))
        result.sort(key=lambda o: o.key)
        return result

    # -- deletes

    def delete(self, prefix: str) -> int:
        """Delete the object ``prefix`` and every object under ``prefix/``.

        Unlike :meth:`list`, the prefix is matched on whole segments: deleting
        ``"job-1"`` removes everything in container ``job-1`` and the container
        itself, never anything of ``job-10``. Empty local folders left behind
        are removed too.

        Parameters
        ----------
        prefix
            A key, a ``container/folder`` or a container name; a trailing ``/``
            is ignored.

        Returns
        -------
        int
            The number of objects deleted (0 when nothing matched).
        """
        body = prefix.removesuffix("/")
        _check_key(body, what="prefix")
        self._in_scope(body, "delete")
        keys = [o.key for o in self.list(body) if o.key == body or o.key.startswith(body + "/")]
        with self._errors("delete", body):
            if keys:
                self.fs.rm([self._path(k) for k in keys])
            if "/" not in body:  # a whole container
                path = self._path(body)
                if self.fs.exists(path):
                    self.fs.rm(path, recursive=True)
                with self._lock:
                    self._containers.discard(body)
            elif self.is_local:
                _prune_empty_dirs(self._path(body), stop=self._path(body.split("/", 1)[0]))
        return len(keys)


# --------------------------------------------------------------------------- helpers


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        err = response.get("Error")
        if isinstance(err, Mapping) and err.get("Code"):
            return str(err["Code"])
    text = str(exc)
    for code in ("InvalidBlobType", "BlobNotFound", "ContainerNotFound", "ContainerAlreadyExists"):
        if code in text:
            return code
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return _error_code(cause)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}{_TEMP_MARK}{os.getpid()}-{threading.get_ident()}")


def _atomic_write(path: str, data: bytes) -> None:
    _replace_via_temp(path, lambda tmp: Path(tmp).write_bytes(data))


def _put_local(source: str, path: str, link: bool) -> None:
    """Store ``source`` at ``path`` on local storage: a hard link when ``link`` and possible,
    else a copy (:meth:`Storage.put_files`). ``FileNotFoundError``: ``source`` is missing."""
    if link:
        try:
            _link(source, path)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    _atomic_copy(source, path)


def _make_folder(folder: str) -> None:
    """Create ``folder`` and its missing parents, one ``mkdir`` each (no ``stat`` first)."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        _make_folder(os.path.dirname(folder))
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass


def _atomic_copy(source: str, path: str) -> None:
    _replace_via_temp(path, lambda tmp: shutil.copyfile(source, tmp))  # copies in the kernel


def _link(source: str, path: str) -> None:
    """Make ``path`` a hard link to ``source``, replacing an existing ``path`` atomically."""
    try:
        os.link(source, path)  # one metadata operation: the usual case
    except FileNotFoundError:
        if not os.path.exists(source):
            raise
        _make_folder(os.path.dirname(path))
        os.link(source, path)
    except FileExistsError:
        _replace_via_temp(path, lambda tmp: os.link(source, tmp))


def _replace_via_temp(path: str, write: Callable[[str], Any]) -> None:
    """Write ``path`` through a temporary file renamed into place (readers never see half a file).

    The parent folder is created only when the first attempt finds it missing.
    """
    tmp = _temp_name(path)
    try:
        try:
            write(tmp)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=4096)
def _folder_uri(folder: str) -> str:
    """``file://`` URI of a local folder (cached: formatting a URI is costly per file)."""
    return Path(folder or "/").as_uri().rstrip("/")


def _prune_empty_dirs(path: str, *, stop: str) -> None:
    """Remove empty folders at and below ``path``, then its empty parents below ``stop``."""
    if os.path.isdir(path):
        for dirpath, _dirs, _files in os.walk(path, topdown=False):
            try:
                os.rmdir(dirpath)  # fails, harmlessly, on a non-empty folder
            except OSError:
                pass
    current = os.path.dirname(path)
    while current.startswith(stop + "/"):
        try:
            os.rmdir(current)
        except OSError:
            return
        current = os.path.dirname(current)


# --------------------------------------------------------------------------- opening


def default_storage_url(state_dir: str | os.PathLike[str]) -> str:
    """Return the default storage URL of a service: ``file://{state_dir}/storage``.

    Parameters
    ----------
    state_dir
        The service state dir (``hpcbatch.batch.statedir.default_state_dir()``).
    """
    return Path(os.path.abspath(os.fspath(state_dir)), "storage").as_uri()


def _protocol_of(url: str) -> str:
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def _local_path(url: str) -> str:
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StorageConfigurationError(
                f"storage URL {url!r} names host {parts.netloc!r}; file:// storage must be "
                "file:///absolute/path on this machine"
            )
        path = unquote(parts.path)
        if not path:
            raise StorageConfigurationError(f"storage URL {url!r} names no folder")
    elif url.startswith("file:"):
        raise StorageConfigurationError(f"storage URL {url!r}: write file:///absolute/path")
    else:
        path = url
    return os.path.abspath(os.path.expanduser(path))


def _canonical_url(url: str) -> str:
    """Return ``url`` with a local path made absolute (``file:///abs``)."""
    if _protocol_of(url) == "file":
        return Path(_local_path(url)).as_uri()
    return url


def _azure_options(options: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    opts = dict(options)
    if not any(opts.get(k) for k in ("connection_string", "account_name", "credential")):
        cs = env.get("AZURE_STORAGE_CONNECTION_STRING")
        if cs:
            opts["connection_string"] = cs
        elif env.get("AZURE_STORAGE_ACCOUNT_NAME"):
            opts["account_name"] = env["AZURE_STORAGE_ACCOUNT_NAME"]
            for option in ("account_key", "sas_token"):
                var = _AZURE_ENV[option]
                if env.get(var) and option not in opts:
                    opts[option] = env[var]
    return opts


def _s3_options(options: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    opts = dict(options)
    if not opts.get("key") and not opts.get("anon") and env.get("AWS_ACCESS_KEY_ID"):
        for option, var in _S3_ENV.items():
            if env.get(var):
                opts.setdefault(option, env[var])
    return opts


def _open(url: str | os.PathLike[str], options: Mapping[str, Any] | None,
          env: Mapping[str, str], containers: Iterable[str] | None = None) -> Storage:
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise StorageConfigurationError(f"storage URL must be a non-empty string, not {url!r}")
    url = url.strip()
    options = dict(options or {})
    protocol = _protocol_of(url)

    if protocol == "file":
        from fsspec.implementations.local import LocalFileSystem

        root = _local_path(url)
        if os.path.exists(root) and not os.path.isdir(root):
            raise StorageConfigurationError(f"storage URL {url!r}: {root} exists and is not a folder")
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise StorageConfigurationError(f"storage URL {url!r}: cannot create folder {root}: {exc}") from exc
        return Storage(LocalFileSystem(), root, url=Path(root).as_uri(), options=options,
                       containers=containers)

    if protocol in _AZURE_PROTOCOLS:
        driver, extra = "adlfs", "azure"
        options = _azure_options(options, env)
    elif protocol in _S3_PROTOCOLS:
        driver, extra = "s3fs", "s3"
        options = _s3_options(options, env)
    elif protocol == "memory":
        driver, extra = "fsspec", ""
    else:
        raise StorageConfigurationError(
            f"storage URL {url!r}: unsupported scheme {protocol!r}; use file:///path, a path, "
            "az:// (or abfs://), s3:// or memory://"
        )

    import fsspec.core

    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        hint = f" (pip install 'hpcbatch[{extra}]')" if extra else ""
        raise StorageConfigurationError(
            f"storage URL {url!r} needs the {driver} package{hint}: {exc}"
        ) from exc
    except ValueError as exc:
        more = ""
        if protocol in _AZURE_PROTOCOLS:
            more = (" Give options connection_string, or account_name with account_key/sas_token, "
                    "or set AZURE_STORAGE_CONNECTION_STRING.")
        raise StorageConfigurationError(f"storage URL {url!r}: {_first_line(exc)}.{more}") from exc
    except Exception as exc:
        raise StorageConfigurationError(
            f"storage URL {url!r}: cannot open: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return Storage(fs, root, url=url, options=options, containers=containers)


def open_storage(url: str | os.PathLike[str], options: Mapping[str, Any] | None = None, *,
                 containers: Iterable[str] | None = None) -> Storage:
    """Open the storage named by ``url``.

    Parameters
    ----------
    url
        ``file:///abs/folder`` or a plain path (relative paths are made
        absolute), ``az://`` / ``abfs://`` (account root; ``az://container/prefix``
        to stay inside one blob container; ``abfs://container@account.dfs.core.windows.net/``
        also names the account), ``s3://`` / ``s3://bucket/prefix``, or
        ``memory://name`` (tests).
    options
        Driver arguments: for Azure ``connection_string``, ``account_name``,
        ``account_key``, ``sas_token`` ... (adlfs); for S3 ``key``, ``secret``,
        ``endpoint_url`` ... (s3fs). Azure falls back to
        ``AZURE_STORAGE_CONNECTION_STRING`` from the process environment.
    containers
        Scope the storage to these containers (see :class:`Storage`), for a
        credential that reaches only them (a container SAS); None: all.

    Returns
    -------
    Storage

    Raises
    ------
    StorageConfigurationError
        Unsupported scheme, missing driver package (adlfs, s3fs), missing
        credentials, or a local path that cannot be a folder.
    """
    return _open(url, options, os.environ, containers)


def storage_environment(url: str | os.PathLike[str],
                        options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Return the environment variables that give a process the storage's full credential.

    Tasks get :func:`hpcbatch.storage.scoped.JobStorageCredentials.environment`
    instead (their job's container only); this is for trusted processes.

    Parameters
    ----------
    url, options
        As for :func:`open_storage`.

    Returns
    -------
    dict of str to str
        ``HPCBATCH_STORAGE_URL`` (canonical: local paths absolute); for Azure
        ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT_NAME`` /
        ``AZURE_STORAGE_ACCOUNT_KEY`` / ``AZURE_STORAGE_SAS_TOKEN`` (from
        ``options``, else from this process's ``AZURE_STORAGE_CONNECTION_STRING``);
        for S3 ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
        ``AWS_SESSION_TOKEN`` when given as options; any other options as a
        JSON object in ``HPCBATCH_STORAGE_OPTIONS``.

    Raises
    ------
    StorageConfigurationError
        An option cannot be written as JSON (for example a credential object).
    """
    canonical = _canonical_url(os.fspath(url))
    protocol = _protocol_of(canonical)
    opts = dict(options or {})
    env: dict[str, str] = {ENV_STORAGE_URL: canonical}
    mapping: dict[str, str] = {}
    if protocol in _AZURE_PROTOCOLS:
        opts = _azure_options(opts, os.environ)
        mapping = _AZURE_ENV
    elif protocol in _S3_PROTOCOLS:
        mapping = _S3_ENV
    for option, var in mapping.items():
        value = opts.pop(option, None)
        if value is not None and value != "":
            env[var] = str(value)
    if opts:
        try:
            env[ENV_STORAGE_OPTIONS] = json.dumps(opts, sort_keys=True)
        except TypeError as exc:
            raise StorageConfigurationError(
                f"storage {canonical}: options {sorted(opts)} cannot be passed to a task in its "
                f"environment (not JSON): {exc}"
            ) from exc
    return env


def open_storage_from_environment(env: Mapping[str, str] | None = None) -> Storage:
    """Open the storage a task was given (the inverse of :func:`storage_environment`).

    Parameters
    ----------
    env
        The environment to read; ``os.environ`` when None. Credentials are
        taken from this mapping (``AZURE_STORAGE_CONNECTION_STRING``,
        ``AZURE_STORAGE_ACCOUNT_NAME``/``_KEY``/``SAS_TOKEN``, ``AWS_*``);
        ``HPCBATCH_STORAGE_CONTAINERS`` (comma-separated), when set, scopes
        the storage to those containers (a task's job container; see
        :mod:`hpcbatch.storage.scoped`).

    Raises
    ------
    StorageConfigurationError
        ``HPCBATCH_STORAGE_URL`` is not set, or ``HPCBATCH_STORAGE_OPTIONS`` is
        not a JSON object.
    """
    env = os.environ if env is None else env
    url = env.get(ENV_STORAGE_URL)
    if not url:
        raise StorageConfigurationError(
            f"{ENV_STORAGE_URL} is not set: this process was not given a storage "
            "(the service sets it in every task's environment when it has one)"
        )
    raw = env.get(ENV_STORAGE_OPTIONS) or "{}"
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageConfigurationError(f"{ENV_STORAGE_OPTIONS} is not valid JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise StorageConfigurationError(f"{ENV_STORAGE_OPTIONS} must be a JSON object, not {raw!r}")
    scope = env.get(ENV_STORAGE_CONTAINERS)
    containers = None if scope is None else [c for c in scope.split(",") if c]
    return _open(url, options, env, containers)
