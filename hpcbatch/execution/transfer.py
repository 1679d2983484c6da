"""Task inputs and outputs on the node: resource files in, output files and logs out.

Runs inside the node agent. Implements Batch's ``resourceFiles`` (``httpUrl``,
``storageContainerUrl`` with ``blobPrefix``, ``autoStorageContainerName``;
``filePath``, ``fileMode``), ``outputFiles`` (``filePattern`` with ``*`` and
``**``, ``destination.container`` ``containerUrl``/``path``,
``uploadOptions.uploadCondition``) and the persistence of ``stdout.txt`` and
``stderr.txt`` as ``$TaskLog`` outputs by the File Conventions.

Where a container lives: an fsspec URL whose last path segment is the
container (``file:///srv/store/inputs``, ``az://inputs``, ``s3://bucket``), or
an Azure blob container URL, usually with a SAS, on any blob endpoint
(:func:`container_location`). An ``outputFiles`` destination without
``containerUrl`` goes to the service's own storage, in the job's conventions
container, as ``{taskId}/$TaskOutput/{name}`` unless ``path`` names one.

Downloaded resource files get ``fileMode`` when given, else 0770: Batch's
default for files downloaded to Linux nodes ("If this property is not
specified for a Linux Compute Node, then a default value of 0770 is applied to
the file", REST ``ResourceFile.fileMode``), so a downloaded script runs directly.

The node agent runs this as root, in a task directory its task could change:
files are opened and their modes set without following a final link, and for a
task that does not run as root (``confine``) an output reached through a link
that leads out of its task directory is not uploaded.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import posixpath
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.storage.conventions import job_output_container_name
from hpcbatch.storage.fs import Storage, open_storage

_CACHE: dict[str, Storage] = {}
_CACHE_LOCK = threading.Lock()
_LAST: tuple[str, dict[str, Any] | None, list[str] | None, Storage] | None = None
"""The storage :func:`_storage` returned last, with what named it (one tuple: replaced whole)."""
DEFAULT_FILE_MODE = 0o770
"""Mode of a downloaded resource file without ``fileMode`` (Batch's Linux default)."""

log = logging.getLogger(__name__)


class TransferError(HpcbatchError):
    """A resource file could not be downloaded or an output file uploaded.

    ``code`` is ``ResourceFileDownloadFailed`` or ``FileUploadError``; the
    message names the file and the storage.
    """


@dataclass(frozen=True)
class StorageRef:
    """The service's storage, as a node reaches it."""

    url: str
    options: Mapping[str, Any]


def _storage(url: str, options: Mapping[str, Any] | None = None,
             containers: Sequence[str] | None = None) -> Storage:
    # Every run of a node names the same storage: compare with the last one first
    # (a few equality tests) before building the cache key.
    last = _LAST
    if last is not None and last[0] == url and last[1] == options and last[2] == containers:
        return last[3]
    key = json.dumps([url, dict(options or {}), containers], sort_keys=True, default=str)
    with _CACHE_LOCK:
        st = _CACHE.get(key)
        if st is None:
            st = _CACHE[key] = open_storage(url, options, containers=containers)
    _remember(url, options, containers, st)
    return st


def _remember(url: str, options: Mapping[str, Any] | None, containers: Sequence[str] | None,
              st: Storage) -> None:
    global _LAST  # noqa: PLW0603 - a one-entry cache: the tuple is swapped whole
    _LAST = (url, dict(options) if options is not None else None,
             list(containers) if containers is not None else None, st)


def container_location(url: str, default: StorageRef | None = None) -> tuple[Storage, str]:
    """Return the storage and the container name a container URL names.

    Parameters
    ----------
    url
        An Azure blob container URL, ``http`` or ``https``, on any endpoint,
        with its SAS (or none, for a public container): the account in the
        host name (``https://acct.blob.core.windows.net/c?sv=...``, sovereign
        clouds such as ``.blob.core.chinacloudapi.cn``, private endpoints,
        custom domains) or in the path before the container (Azurite's
        ``http://127.0.0.1:10000/devstoreaccount1/c?sv=...``). As in
        azure-storage-blob's ``ContainerClient.from_container_url``, the last
        path segment is the container and what comes before it is the
        account's endpoint. Any other scheme: an fsspec URL whose last path
        segment is the container.
    default
        The service storage, whose options (credentials) apply to ``az://``
        URLs that bring none.

    Returns
    -------
    tuple of (Storage, str)
        The storage and the container name. A blob container URL gives a
        storage scoped to its container, taken to exist (a container SAS can
        neither create nor look up a container; Batch requires it to exist).

    Raises
    ------
    TransferError
        A URL that names no container.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() in ("http", "https"):
        segments = parts.path.strip("/").split("/")
        container = unquote(segments[-1])
        if not container or not parts.netloc:
            raise TransferError(f"the blob container URL {url.split('?', 1)[0]!r} names no "
                                "container", code="ResourceFileDownloadFailed")
        account = "/".join(segments[:-1])
        endpoint = f"{parts.scheme}://{parts.netloc}" + (f"/{account}" if account else "")
        connection = f"BlobEndpoint={endpoint};"
        if parts.query:
            connection += f"SharedAccessSignature={parts.query}"
        return _storage("az://", {"connection_string": connection}, [container]), container
    base, _, container = url.split("?", 1)[0].rstrip("/").rpartition("/")
    if not container or base.endswith(":/"):
        base += "/"
    if not container:
        raise TransferError(f"the container URL {url!r} names no container",
                            code="ResourceFileDownloadFailed")
    opts = dict(default.options) if default and urlsplit(base).scheme == urlsplit(
        default.url).scheme else {}
    return _storage(base if "://" in base else base or "/", opts), container


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""How a file to upload is opened: never through a final link (nor blocking on a FIFO)."""


def _open_checked(path: Path) -> int | None:
    """Open the regular file at ``path`` (links resolved already) to read it; None if it is
    not one, or if what was opened is not at ``path`` (a link swapped in since the check)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode) and _fd_path(fd) in (None, str(path)):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _fd_path(fd: int) -> str | None:
    """Where the file open as ``fd`` is (Linux's ``/proc``), or None when unknown."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _fd_source(fd: int, path: Path) -> str:
    """A path that reads exactly the file open as ``fd`` (``/proc/self/fd/N``), to hand to
    the storage; ``path`` itself where there is no ``/proc``."""
    return f"/proc/self/fd/{fd}" if _fd_path(fd) is not None else os.fspath(path)


def _chmod_nofollow(path: Path, mode: int) -> None:
    """Set a downloaded file's mode; a link found there instead is left alone."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _inside(base: Path, rel: str) -> Path:
    path = (base / rel).resolve()
    if not path.is_relative_to(base.resolve()):
        raise TransferError(f"{rel!r} leaves the working directory", code="ResourceFileDownloadFailed")
    return path


def download_resource_files(files: Sequence[Mapping[str, Any]], dest: Path,
                            storage: StorageRef | None) -> None:
    """Download a task's resource files into ``dest`` (its working or shared directory).

    Parameters
    ----------
    files
        ``ResourceFile`` wire dicts.
    dest
        Folder the ``filePath`` values are relative to.
    storage
        The service storage (for ``autoStorageContainerName``).

    Raises
    ------
    TransferError
        Code ``ResourceFileDownloadFailed``; the message names the file and source.
    """
    for rf in files:
        source = rf.get("httpUrl") or rf.get("storageContainerUrl") or rf.get(
            "autoStorageContainerName") or "?"
        try:
            written = _download_one(rf, dest, storage)
        except TransferError:
            raise
        except Exception as exc:  # noqa: BLE001 - fsspec and drivers raise many kinds
            target = rf.get("filePath") or "(container contents)"
            raise TransferError(
                f"The resource file {target} could not be downloaded from {source}: "
                f"{type(exc).__name__}: {exc}", code="ResourceFileDownloadFailed",
                values={"FilePath": str(target), "Source": str(source)}) from None
        mode = int(rf["fileMode"], 8) if rf.get("fileMode") else DEFAULT_FILE_MODE
        for path in written:
            _chmod_nofollow(path, mode)


def _download_one(rf: Mapping[str, Any], dest: Path, storage: StorageRef | None) -> list[Path]:
    if rf.get("httpUrl"):
        if not rf.get("filePath"):
            raise TransferError(f"the resource file {rf['httpUrl']} has no filePath",
                                code="ResourceFileDownloadFailed")
        target = _inside(dest, rf["filePath"])
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            where = _fd_path(fd)
            if where is not None and not Path(where).is_relative_to(dest.resolve()):
                raise TransferError(f"{rf['filePath']!r} leaves the working directory",
                                    code="ResourceFileDownloadFailed")
            out.truncate()
            with fsspec.open(rf["httpUrl"], "rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        return [target]
    if rf.get("storageContainerUrl"):
        st, container = container_location(rf["storageContainerUrl"], storage)
    elif rf.get("autoStorageContainerName"):
        if storage is None:
            raise TransferError("autoStorageContainerName needs the service's storage",
                                code="ResourceFileDownloadFailed")
        st, container = _storage(storage.url, storage.options), rf["autoStorageContainerName"]
    else:
        raise TransferError("a resource file needs httpUrl, storageContainerUrl or "
                            "autoStorageContainerName", code="ResourceFileDownloadFailed")
    prefix = rf.get("blobPrefix") or ""
    objects = st.list(f"{container}/{prefix}")
    if not objects:
        raise TransferError(f"no blob in container {container!r}"
                            + (f" with prefix {prefix!r}" if prefix else ""),
                            code="ResourceFileDownloadFailed")
    base = _inside(dest, rf.get("filePath") or ".")
    written = []
    for obj in objects:
        name = obj.key.split("/", 1)[1]
        target = _inside(base, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        st.get_file(obj.key, target)
        written.append(target)
    return written


def _pattern_base(pattern: str) -> str:
    """The part of a glob pattern before its first wildcard segment."""
    segments = pattern.split("/")
    fixed = []
    for seg in segments:
        if any(ch in seg for ch in "*?["):
            break
        fixed.append(seg)
    return "/".join(fixed[:-1] if len(fixed) == len(segments) else fixed)


def _refused(path: Path, real: Path, confine: Path | None) -> bool:
    """Whether a matched output is refused: the run is ``confine``d to its task directory
    and ``path`` leads through a link to ``real``, outside it."""
    return (confine is not None and real != Path(os.path.normpath(path))
            and not real.is_relative_to(confine.resolve()))


def upload_output_files(specs: Sequence[Mapping[str, Any]], wd: Path, *, succeeded: bool,
                        job_id: str, task_id: str, storage: StorageRef | None,
                        confine: Path | None = None) -> int:
    """Upload a task's ``outputFiles`` whose ``uploadCondition`` holds; return files uploaded.

    Parameters
    ----------
    confine
        The task directory, when the task does not run as root: a matched file
        reached through a link whose target is outside it is not uploaded (the
        others are; the refused ones are then a ``FileUploadError`` naming them).
        Absolute patterns stay allowed (the API caller chose them); the link rule
        applies to every file they match.

    Every file is opened without following a final link, and uploaded from that
    descriptor, after checking it is the file matched.

    Raises
    ------
    TransferError
        Code ``FileUploadError``, naming the file and destination.
    """
    count = 0
    refused: list[str] = []
    for spec in specs:
        condition = (spec.get("uploadOptions") or {}).get("uploadCondition", "taskCompletion")
        condition = condition.lower()
        if (condition == "tasksuccess" and not succeeded) or (
                condition == "taskfailure" and succeeded):
            continue
        dest = (spec.get("destination") or {}).get("container") or {}
        pattern = spec["filePattern"]
        try:
            # ``path`` names the blob of a single file (a folder under a wildcard);
            # without it a file keeps its name, under the default folder if any.
            prefix = dest.get("path") or ""
            folder = ""
            if dest.get("containerUrl"):
                st, container = container_location(dest["containerUrl"], storage)
            else:
                if storage is None:
                    raise TransferError("no containerUrl, and the service has no storage",
                                        code="FileUploadError")
                st = _storage(storage.url, storage.options)
                container = job_output_container_name(job_id)
                folder = "" if prefix else f"{task_id}/$TaskOutput"
            wildcard = any(ch in pattern for ch in "*?[")
            # ``wd`` as given, not resolved: a ``wd`` the task replaced with a link is a link
            # on the way to every match, and ``confine`` judges where it leads.
            root = wd if not os.path.isabs(pattern) else Path("/")
            matches = sorted(p for p in glob.glob(pattern, root_dir=root, recursive=True)
                             if (root / p).is_file())
            base = _pattern_base(pattern)
            for rel in matches:
                real = (root / rel).resolve()
                if _refused(root / rel, real, confine):
                    refused.append(rel)
                    continue
                fd = _open_checked(real)
                if fd is None:  # gone, or swapped for a link since the match
                    refused.append(rel)
                    continue
                if wildcard:
                    name = posixpath.relpath(rel, base or ".")
                    blob = posixpath.join(prefix or folder, name)
                else:
                    blob = prefix or posixpath.join(folder, posixpath.basename(rel))
                try:
                    st.put_file(_fd_source(fd, real), f"{container}/{blob.lstrip('/')}")
                finally:
                    os.close(fd)
                count += 1
        except TransferError:
            raise
        except Exception as exc:  # noqa: BLE001 - fsspec and drivers raise many kinds
            raise TransferError(
                f"Output files matching {pattern!r} could not be uploaded: "
                f"{type(exc).__name__}: {exc}", code="FileUploadError",
                values={"FilePattern": pattern}) from None
    if refused:
        names = ", ".join(refused)
        raise TransferError(
            f"The output files {names} were not uploaded: each is a link that leads out of "
            "the task directory (or was replaced while it was uploaded).",
            code="FileUploadError", values={"FilePath": names})
    return count


def persist_task_logs(task_dir: str | os.PathLike[str], *, job_id: str, task_id: str,
                      storage: StorageRef | None, confine: Path | None = None) -> None:
    """Save ``stdout.txt`` and ``stderr.txt`` as the task's ``$TaskLog`` outputs (conventions).

    On local storage on the node's file system the outputs are hard links to
    the task's files (no copy): a later run of the task replaces its log
    files rather than rewriting them (:func:`hpcbatch.execution.agent.run_task`).

    With ``confine`` (the task does not run as root, and could replace its logs),
    a log is saved only if it is a regular file with no other link: opened
    without following a link, it is saved from that descriptor; a log that is
    a link (or a hard link to another file) is not saved and is a
    ``FileUploadError``.

    Raises
    ------
    TransferError
        Code ``FileUploadError``.
    """
    if storage is None:
        return
    st = _storage(storage.url, storage.options)
    folder = f"{job_output_container_name(job_id)}/{task_id}/$TaskLog/"
    tdir = os.fspath(task_dir)
    names = ("stdout.txt", "stderr.txt")
    files: list[tuple[str | os.PathLike[str], str]] = [
        (os.path.join(tdir, name), folder + name) for name in names]
    fds: list[int] = []
    refused: list[str] = []
    try:
        if confine is not None:
            files = []
            for name in names:
                try:
                    fd = os.open(os.path.join(tdir, name), _READ_FLAGS)
                except FileNotFoundError:
                    continue
                except OSError:  # ELOOP: a link the task put in its log's place
                    refused.append(name)
                    continue
                fds.append(fd)
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                    refused.append(name)
                    continue
                files.append((_fd_source(fd, Path(tdir, name)), folder + name))
        try:
            # A log that is missing (the run never started) has nothing to save.
            st.put_files(files, link=True, missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - fsspec and drivers raise many kinds
            raise TransferError(f"the task's logs could not be saved as TaskLog outputs: {exc}",
                                code="FileUploadError") from None
    finally:
        for fd in fds:
            os.close(fd)
    if refused:
        raise TransferError(
            f"The task's logs {', '.join(refused)} were not saved as TaskLog outputs: each "
            "is a link (or another file's hard link) the task put in its place.",
            code="FileUploadError", values={"FilePath": ", ".join(refused)})


def prepare_job_container(job_id: str, storage: StorageRef | None) -> None:
    """Create the job's conventions container, before a task of the job runs, if missing.

    A task's storage credential reaches only this container and cannot create
    it (:mod:`hpcbatch.storage.scoped`), so the agent, which holds the service
    storage, creates it first: once per job and node (the storage remembers
    the containers it made). A failure is logged, not raised: the task may not
    use its storage at all, and its own writes then report the missing container.

    Parameters
    ----------
    job_id
        The task's job.
    storage
        The service storage; None or local storage: nothing to do (a task
        creates its folder itself).
    """
    if storage is None or urlsplit(storage.url).scheme in ("", "file", "memory"):
        return
    try:
        _storage(storage.url, storage.options).ensure_container(job_output_container_name(job_id))
    except HpcbatchError as exc:  # StorageError: the driver's errors, translated
        log.warning("cannot create the output container of job %s in %s: %s",
                    job_id, storage.url, exc)


def fetcher(storage: StorageRef | None) -> Callable[[str, Path], None]:
    """Return ``fetch(key, local_path)`` that downloads one object of the service storage."""
    def fetch(key: str, local_path: Path) -> None:
        if storage is None:
            raise TransferError("the service has no storage", code="ApplicationPackageFailed")
        _storage(storage.url, storage.options).get_file(key, local_path)
    return fetch
