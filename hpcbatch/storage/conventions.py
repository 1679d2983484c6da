"""Batch File Conventions: persist and find job and task outputs by job ID, task ID and kind.

A port of the .NET library ``Microsoft.Azure.Batch.Conventions.Files`` (Azure
SDK for .NET, ``sdk/batch/Microsoft.Azure.Batch.Conventions.Files``; reference:
azure-batch-docs-2017.txt, "Persist job and task data to Azure Storage with the
Batch File Conventions library"), on :class:`hpcbatch.storage.fs.Storage` instead of
an Azure ``CloudStorageAccount``, so the same layout works on local folders, Azure
blob storage (identical to what the .NET library writes) and S3.

The conventions (the library's README, section "Conventions"):

* All outputs of a job, task outputs included, live in one container, named by
  :func:`job_output_container_name` (``job-{jobid}`` when that is valid).
* Job outputs are stored as ``${kind}/{path}`` -- ``$JobOutput/out/mergeresults.txt``.
* Task outputs are stored as ``{taskId}/${kind}/{path}`` -- ``analysis-309/$TaskLog/analytics.log``.

In a task::

    from hpcbatch.storage.conventions import TaskOutputStorage, TaskOutputKind

    outputs = TaskOutputStorage.from_environment()   # AZ_BATCH_JOB_ID, AZ_BATCH_TASK_ID, HPCBATCH_STORAGE_URL
    with outputs.save_tracked(TaskOutputKind.TaskLog, "../stdout.txt", interval_s=15):
        ...                                           # the task's work
    outputs.save(TaskOutputKind.TaskOutput, "frame_full_res.jpg")
    outputs.save(TaskOutputKind.TaskPreview, "frame_low_res.jpg")

In a client that knows only the IDs::

    outputs = TaskOutputStorage(open_storage(url), "myjob", "task-7")
    for f in outputs.list_outputs(TaskOutputKind.TaskOutput):
        outputs.download(TaskOutputKind.TaskOutput, f.path, f"downloads/{f.path}")

Where this port deliberately differs from the .NET code (each a fix of a .NET
defect, not a change to the naming conventions):

* Listing uses the prefix ``{taskId}/${kind}/`` (with the slash); .NET lists
  ``{taskId}/${kind}`` and so also returns outputs of a kind whose name
  merely starts with the asked kind's (``TaskOutput`` would list ``TaskOutputX``).
* Leading ``../`` parts are all stripped from an inferred destination; .NET's
  loop re-reads the original string and never ends on ``../../x``. A
  destination that still climbs out of its kind's folder is refused
  (:class:`~hpcbatch.storage.fs.StorageKeyError`) -- .NET lets Azure reject it.
* A tracked file uploads exactly the bytes it measured (.NET can send bytes
  written during an upload twice), and a tracked save replaces an existing
  blob of that name instead of appending the whole file after it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import posixpath
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Generic, Self, TypeVar

from hpcbatch.storage.fs import (
    Storage,
    StorageConfigurationError,
    StorageKeyError,
    StorageNotFoundError,
    open_storage_from_environment,
)

__all__ = [
    "JobOutputKind",
    "JobOutputStorage",
    "OutputFile",
    "TaskOutputKind",
    "TaskOutputStorage",
    "TrackedFile",
    "destination_path",
    "job_output_container_name",
    "job_output_prefix",
    "prepare_output_storage",
    "task_output_prefix",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- container names
# Port of ContainerNameUtils.cs (Microsoft.Azure.Batch.Conventions.Files/src/Utilities).

_PERMITTED_CONTAINER_NAME = re.compile(r"[a-z0-9][-a-z0-9]*")  # .NET: ^[a-z0-9][-a-z0-9]*$
_INVALID_CONTAINER_CHARACTERS = re.compile(r"[:_-]+")
_CONTAINER_PREFIX = "job-"
_MAX_USABLE_JOB_ID_LENGTH = 63 - len(_CONTAINER_PREFIX)  # 59
_MAX_JOB_ID_LENGTH_IN_MUNGED_CONTAINER_NAME = 15  # <= 63 - len("job-") - 1 - 40 (SHA-1 hex)


@functools.lru_cache(maxsize=1024)  # a node asks for every run of the job: $TaskLog
def job_output_container_name(job_id: str) -> str:
    """Return the name of the container that holds all outputs of a job.

    An exact port of ``ContainerNameUtils.GetSafeContainerName`` (Azure SDK for
    .NET, ``sdk/batch/Microsoft.Azure.Batch.Conventions.Files/src/Utilities/ContainerNameUtils.cs``),
    the rule the Azure portal uses to find saved outputs:

    1. Lower-case the job ID (safe: Batch IDs cannot differ only by case).
    2. If it is at most 59 characters, matches ``^[a-z0-9][-a-z0-9]*$``, does
       not end with ``-`` and contains no ``--``, the name is ``job-{id}``.
    3. Otherwise the name is ``job-{safe}-{sha1}``, where ``sha1`` is the
       40-digit lower-case hex SHA-1 of the UTF-8 lower-cased ID, and ``safe``
       is the lower-cased ID with every run of ``:``, ``_`` and ``-`` replaced
       by one ``-``, stripped of leading and trailing ``-``; if longer than 15
       characters it is cut to 15 and stripped of ``-`` again; if empty it is
       ``job``.

    So the name is always 3-63 characters of ``a-z0-9-`` for any Batch ID
    (letters, digits, ``-``, ``_``, and ``:`` in IDs made by job schedules).

    Parameters
    ----------
    job_id
        The Batch job ID.

    Returns
    -------
    str
        ``"job-myterrificjob"`` for ``"MyTerrificJob"``;
        ``"job-my-even-more-te-68b05a7d8aa6aa65b9a6892c667a6c406a16ad65"`` for
        ``"my-_EVEN_MORE_-terrific-job"``.

    Raises
    ------
    StorageKeyError
        ``job_id`` is empty.

    Notes
    -----
    Characters other than the ones above are, as in .NET, neither replaced nor
    refused. The pattern is matched against the whole ID (.NET's ``$`` would
    also accept one trailing newline, which no Batch ID has).
    """
    if not isinstance(job_id, str) or not job_id:
        raise StorageKeyError(f"job ID must be a non-empty string, not {job_id!r}")
    return _CONTAINER_PREFIX + _unprefixed_safe_container_name(job_id)


def _unprefixed_safe_container_name(job_id: str) -> str:
    job_id = job_id.lower()
    if len(job_id) > _MAX_USABLE_JOB_ID_LENGTH:
        return _transform_to_container_name(job_id)
    if not _PERMITTED_CONTAINER_NAME.fullmatch(job_id):
        return _transform_to_container_name(job_id)
    if job_id.endswith("-") or "--" in job_id:
        return _transform_to_container_name(job_id)
    return job_id


def _transform_to_container_name(text: str) -> str:
    hash_text = hashlib.sha1(text.encode("utf-8")).hexdigest()
    safe = _INVALID_CONTAINER_CHARACTERS.sub("-", text).strip("-")
    if len(safe) > _MAX_JOB_ID_LENGTH_IN_MUNGED_CONTAINER_NAME:
        # strip again: truncation may have unleashed a trailing dash
        safe = safe[:_MAX_JOB_ID_LENGTH_IN_MUNGED_CONTAINER_NAME].strip("-")
    elif not safe:
        safe = "job"
    return f"{safe}-{hash_text}"


# --------------------------------------------------------------------------- kinds
# Ports of TaskOutputKind.cs and JobOutputKind.cs.

_K = TypeVar("_K", bound="_OutputKind")
_KindT = TypeVar("_KindT", "TaskOutputKind", "JobOutputKind")


class _OutputKind:
    """A category of outputs; compared by exact (case-sensitive) text, like .NET."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text:
            raise StorageKeyError(f"an output kind must be a non-empty string, not {text!r}")
        if "/" in text or "\\" in text:
            raise StorageKeyError(f"output kind {text!r} must not contain '/' or '\\'")
        self._text = text

    @classmethod
    def custom(cls, text: str) -> Self:
        """Return a custom kind named ``text`` (``Custom`` in .NET).

        Parameters
        ----------
        text
            Non-empty name, case preserved; stored as the folder ``${text}``.
        """
        return cls(text)

    @property
    def text(self) -> str:
        """The kind's name, as stored in paths after ``$``."""
        return self._text

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._text == self._text

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._text))


class TaskOutputKind(_OutputKind):
    """A category of task outputs (``TaskOutputKind``).

    Predefined: ``TaskOutput`` (the main output), ``TaskPreview``, ``TaskLog``
    (shown by the portal under "Saved logs") and ``TaskIntermediate`` (for
    diagnostics or checkpoints); others with ``TaskOutputKind.custom("Name")``.
    """

    __slots__ = ()
    TaskOutput: ClassVar[TaskOutputKind]
    TaskPreview: ClassVar[TaskOutputKind]
    TaskLog: ClassVar[TaskOutputKind]
    TaskIntermediate: ClassVar[TaskOutputKind]


TaskOutputKind.TaskOutput = TaskOutputKind("TaskOutput")
TaskOutputKind.TaskPreview = TaskOutputKind("TaskPreview")
TaskOutputKind.TaskLog = TaskOutputKind("TaskLog")
TaskOutputKind.TaskIntermediate = TaskOutputKind("TaskIntermediate")


class JobOutputKind(_OutputKind):
    """A category of job outputs (``JobOutputKind``).

    Predefined: ``JobOutput`` and ``JobPreview``; others with
    ``JobOutputKind.custom("Name")``.
    """

    __slots__ = ()
    JobOutput: ClassVar[JobOutputKind]
    JobPreview: ClassVar[JobOutputKind]


JobOutputKind.JobOutput = JobOutputKind("JobOutput")
JobOutputKind.JobPreview = JobOutputKind("JobPreview")


def _as_kind(kind: object, cls: type[_K]) -> _K:
    if isinstance(kind, cls):
        return kind
    if isinstance(kind, str):
        return cls(kind)
    raise TypeError(f"kind must be a {cls.__name__} (or its name), not {kind!r}")


# --------------------------------------------------------------------------- paths
# Port of StoragePath.cs.


def task_output_prefix(task_id: str, kind: TaskOutputKind | str) -> str:
    """Return the folder of a task's outputs of one kind: ``{taskId}/${kind}``.

    ``TaskStoragePath.BlobNamePrefixImpl`` / ``TaskOutputStorage.GetOutputStoragePath``.
    """
    return f"{_check_task_id(task_id)}/${_as_kind(kind, TaskOutputKind).text}"


def job_output_prefix(kind: JobOutputKind | str) -> str:
    """Return the folder of a job's outputs of one kind: ``${kind}``.

    ``JobStoragePath.BlobNamePrefixImpl`` / ``CloudJob.GetOutputStoragePath``.
    """
    return f"${_as_kind(kind, JobOutputKind).text}"


def destination_path(relative_source_path: str) -> str:
    """Return the stored path of a file saved by its path relative to the working dir.

    ``StoragePath.GetDestinationBlobPath``: ``\\`` becomes ``/``, and leading
    ``../`` parts are removed, so ``..\\stdout.txt`` (a task's ``stdout.txt``,
    one level above its working directory) is stored as ``stdout.txt``. The
    result is then normalised (``a/./b`` -> ``a/b``).

    Raises
    ------
    StorageKeyError
        The path is empty, absolute, or still climbs out (``a/../../x``).
    """
    if not relative_source_path:
        raise StorageKeyError("an output path must not be empty")
    dest = relative_source_path.replace("\\", "/")
    while dest.startswith("../"):
        dest = dest[3:]
    return _check_output_path(dest, original=relative_source_path)


def _check_output_path(path: str, *, original: str | None = None) -> str:
    shown = original if original is not None else path
    if not isinstance(path, str) or not path:
        raise StorageKeyError(f"an output path must be a non-empty string, not {shown!r}")
    path = path.replace("\\", "/")
    if path.startswith("/"):
        raise StorageKeyError(f"output path {shown!r} must be relative (it names a blob under its kind)")
    normal = posixpath.normpath(path)
    if normal in (".", "..") or normal.startswith("../") or path.endswith("/"):
        raise StorageKeyError(
            f"output path {shown!r} does not name a file inside its kind's folder"
        )
    return normal


def _check_task_id(task_id: str) -> str:
    if not isinstance(task_id, str) or not task_id:
        raise StorageKeyError(f"task ID must be a non-empty string, not {task_id!r}")
    if "/" in task_id or "\\" in task_id or task_id in (".", ".."):
        raise StorageKeyError(f"task ID {task_id!r} cannot name a folder")
    return task_id


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class OutputFile:
    """A persisted job or task output (``OutputFileReference``).

    Attributes
    ----------
    path
        The path it was stored under, below its kind (``FilePath``):
        ``"stdout.txt"``, ``"pointclouds/pointcloud_0001.txt"``.
    size_bytes
        Its size, in bytes.
    url
        Its URL in storage (``Uri``); see :meth:`Storage.url_for`.
    key
        Its full storage key: ``{container}/{taskId}/${kind}/{path}``.
    last_modified
        When it was last written (UTC), if the store says.
    """

    path: str
    size_bytes: int
    url: str
    key: str
    last_modified: datetime | None = None


def prepare_output_storage(storage: Storage, job_id: str) -> str:
    """Create the job's output container if it does not exist (``PrepareOutputStorageAsync``).

    Optional here -- every save creates the container on demand -- but lets a
    client fail early on bad storage credentials.

    Returns
    -------
    str
        The container name (:func:`job_output_container_name`).
    """
    container = job_output_container_name(job_id)
    storage.ensure_container(container)
    return container


class _OutputStorage(Generic[_KindT]):
    """What job and task output storage share (``StoragePath``)."""

    _kind_type: ClassVar[type[_OutputKind]]  # the _KindT of the subclass

    def __init__(self, storage: Storage, job_id: str) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(f"storage must be an hpcbatch.storage.fs.Storage, not {storage!r}")
        self.storage = storage
        self.job_id = job_id
        self.container_name = job_output_container_name(job_id)

    # -- naming

    def _prefix(self, kind: _OutputKind) -> str:
        raise NotImplementedError

    def _kind(self, kind: object) -> _KindT:
        return _as_kind(kind, self._kind_type)  # type: ignore[return-value]

    def get_output_storage_path(self, kind: _KindT | str) -> str:
        """Return the folder, inside the job container, of outputs of ``kind``.

        ``GetOutputStoragePath``: ``"{taskId}/$TaskLog"`` or ``"$JobOutput"``.
        """
        return self._prefix(self._kind(kind))

    def key_for(self, kind: _KindT | str, path: str) -> str:
        """Return the storage key of output ``path`` of ``kind``: ``{container}/{prefix}/{path}``."""
        return f"{self.container_name}/{self._prefix(self._kind(kind))}/{_check_output_path(path)}"

    def _output_file(self, kind: _OutputKind, key: str, size_bytes: int,
                     last_modified: datetime | None) -> OutputFile:
        folder = f"{self.container_name}/{self._prefix(kind)}/"
        return OutputFile(path=key[len(folder):], size_bytes=size_bytes,
                          url=self.storage.url_for(key), key=key, last_modified=last_modified)

    # -- saving

    def save(self, kind: _KindT | str, path: str | os.PathLike[str],
             dest: str | None = None) -> OutputFile:
        """Save a file to storage as an output of ``kind`` (``SaveAsync``).

        Parameters
        ----------
        kind
            The category, for example ``TaskOutputKind.TaskOutput``.
        path
            The file. Without ``dest`` it must be relative to the current
            directory (a task's working directory) and its relative path is
            kept: ``"out/frame1.png"`` is stored as ``out/frame1.png``; leading
            ``../`` parts are dropped (``"../stdout.txt"`` -> ``stdout.txt``).
            With ``dest`` it may be any path.
        dest
            The path to store it under, below its kind (``destinationRelativePath``),
            for example ``"pointclouds/pointcloud_0001.txt"``.

        Returns
        -------
        OutputFile
            The stored output.

        Raises
        ------
        StorageKeyError
            ``path`` is absolute (or empty) and no ``dest`` is given, or the
            destination is not a relative path inside the kind's folder.
        StorageNotFoundError
            The file does not exist.
        StorageError
            The upload failed.
        """
        kind_ = self._kind(kind)
        source = os.fspath(path)
        if not source:
            raise StorageKeyError("the path of the file to save must not be empty")
        if dest is None:
            if os.path.isabs(source):
                raise StorageKeyError(
                    f"{source!r} must be a path relative to the current directory, or give dest "
                    "(the path to store it under)"
                )
            target = destination_path(source)
            source = os.path.join(os.getcwd(), source)
        else:
            target = _check_output_path(dest)
        key = self.key_for(kind_, target)
        self.storage.put_file(source, key)
        return self._output_file(kind_, key, os.path.getsize(source), None)

    def save_text(self, kind: _KindT | str, text: str, dest: str) -> OutputFile:
        """Save ``text`` (UTF-8) as an output of ``kind`` without a local file (``SaveTextAsync``).

        Parameters
        ----------
        kind
            The category.
        text
            The content.
        dest
            The path to store it under, below its kind, e.g. ``"records/widget42.json"``.
        """
        kind_ = self._kind(kind)
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        data = text.encode("utf-8")
        key = self.key_for(kind_, dest)
        self.storage.put_bytes(data, key)
        return self._output_file(kind_, key, len(data), None)

    # -- finding and reading

    def list_outputs(self, kind: _KindT | str) -> list[OutputFile]:
        """List the outputs of ``kind`` (``ListOutputs``), sorted by path.

        Only outputs of exactly that kind are returned (see the module notes).
        """
        kind_ = self._kind(kind)
        folder = f"{self.container_name}/{self._prefix(kind_)}/"
        return [self._output_file(kind_, o.key, o.size_bytes, o.last_modified)
                for o in self.storage.list(folder)]

    def get_output(self, kind: _KindT | str, path: str) -> OutputFile:
        """Return the output of ``kind`` stored as ``path`` (``GetOutputAsync``).

        Raises
        ------
        StorageNotFoundError
            There is no such output.
        """
        kind_ = self._kind(kind)
        key = self.key_for(kind_, path)
        for info in self.storage.list(key):
            if info.key == key:
                return self._output_file(kind_, key, info.size_bytes, info.last_modified)
        raise StorageNotFoundError(
            f"{self._describe()} has no {kind_.text} output {path!r} (looked for {self.storage.url_for(key)})",
            values={"Key": key},
        )

    def get_bytes(self, kind: _KindT | str, path: str) -> bytes:
        """Return the content of output ``path`` of ``kind``.

        Raises
        ------
        StorageNotFoundError
            There is no such output.
        """
        return self.storage.get_bytes(self.key_for(kind, path))

    def download(self, kind: _KindT | str, path: str,
                 local_path: str | os.PathLike[str]) -> None:
        """Download output ``path`` of ``kind`` to ``local_path`` (``DownloadToFileAsync``).

        Parent folders of ``local_path`` are created; an existing file is replaced.

        Raises
        ------
        StorageNotFoundError
            There is no such output.
        StorageError
            Code ``InvalidLocalPath``: ``local_path`` is a folder, not a file.
        """
        self.storage.get_file(self.key_for(kind, path), local_path)

    def delete(self, kind: _KindT | str, path: str) -> bool:
        """Delete output ``path`` of ``kind`` (``OutputFileReference.DeleteAsync``).

        Returns
        -------
        bool
            True if it existed.
        """
        key = self.key_for(kind, path)
        if not self.storage.exists(key):
            return False
        self.storage.delete(key)
        return True

    def _describe(self) -> str:
        raise NotImplementedError


class JobOutputStorage(_OutputStorage[JobOutputKind]):
    """Persistent storage for the outputs of a job (``JobOutputStorage``).

    Job outputs belong to the job as a whole (the movie that a merge task made
    of all frames), so a client can find them without knowing which task
    produced them. They are stored as ``{container}/${kind}/{path}``.

    Parameters
    ----------
    storage
        The storage (:func:`hpcbatch.storage.fs.open_storage`).
    job_id
        The Batch job ID.
    """

    _kind_type = JobOutputKind

    def __init__(self, storage: Storage, job_id: str) -> None:
        super().__init__(storage, job_id)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> JobOutputStorage:
        """Open the storage of the current task's job: ``AZ_BATCH_JOB_ID`` and the storage variables.

        Raises
        ------
        StorageConfigurationError
            ``AZ_BATCH_JOB_ID`` or ``HPCBATCH_STORAGE_URL`` is not set.
        """
        env = os.environ if env is None else env
        return cls(open_storage_from_environment(env), _required(env, "AZ_BATCH_JOB_ID"))

    def _prefix(self, kind: _OutputKind) -> str:
        return job_output_prefix(kind)  # type: ignore[arg-type]

    def _describe(self) -> str:
        return f"job {self.job_id!r} (container {self.container_name} in {self.storage.url})"

    def __repr__(self) -> str:
        return f"JobOutputStorage({self.storage.url!r}, job_id={self.job_id!r})"


class TaskOutputStorage(_OutputStorage[TaskOutputKind]):
    """Persistent storage for the outputs of a task (``TaskOutputStorage``).

    Stored as ``{container}/{taskId}/${kind}/{path}``, where ``container`` is
    :func:`job_output_container_name` of the job.

    Parameters
    ----------
    storage
        The storage (:func:`hpcbatch.storage.fs.open_storage`).
    job_id, task_id
        The Batch job and task IDs. A client needs nothing else to find a
        task's outputs.
    """

    _kind_type = TaskOutputKind

    def __init__(self, storage: Storage, job_id: str, task_id: str) -> None:
        super().__init__(storage, job_id)
        self.task_id = _check_task_id(task_id)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> TaskOutputStorage:
        """Open the current task's output storage, as task code does.

        Job and task IDs come from ``AZ_BATCH_JOB_ID`` / ``AZ_BATCH_TASK_ID``,
        the storage from :func:`hpcbatch.storage.fs.open_storage_from_environment`.

        Parameters
        ----------
        env
            The environment; ``os.environ`` when None.

        Raises
        ------
        StorageConfigurationError
            A variable is missing.
        """
        env = os.environ if env is None else env
        job_id = _required(env, "AZ_BATCH_JOB_ID")
        task_id = _required(env, "AZ_BATCH_TASK_ID")
        return cls(open_storage_from_environment(env), job_id, task_id)

    def _prefix(self, kind: _OutputKind) -> str:
        return task_output_prefix(self.task_id, kind)  # type: ignore[arg-type]

    def _describe(self) -> str:
        return (f"task {self.task_id!r} of job {self.job_id!r} "
                f"(container {self.container_name} in {self.storage.url})")

    def __repr__(self) -> str:
        return (f"TaskOutputStorage({self.storage.url!r}, job_id={self.job_id!r}, "
                f"task_id={self.task_id!r})")

    def save_tracked(self, kind: TaskOutputKind | str, path: str | os.PathLike[str],
                     interval_s: float = 30.0, *, dest: str | None = None,
                     on_flush_error: Callable[[BaseException], None] | None = None) -> TrackedFile:
        """Save a file that is being appended to, and keep saving its appends (``SaveTrackedAsync``).

        Use it as a context manager around the task's work. A background
        thread uploads new bytes at once and then every ``interval_s``; leaving
        the ``with`` block (normally or by an exception) stops tracking and
        uploads what remains::

            with outputs.save_tracked(TaskOutputKind.TaskLog, "../stdout.txt", interval_s=15):
                run_the_work()

        Only appends are tracked -- bytes already uploaded are never re-read --
        so use it for (non-rotating) logs such as ``stdout.txt``.

        Parameters
        ----------
        kind
            The category; ``TaskOutputKind.TaskLog`` for logs.
        path
            The file; need not exist yet. Without ``dest``, relative to the
            current directory and stored by that path (see :meth:`save`).
        interval_s
            Seconds between uploads (> 0). .NET's default is 60 s.
        dest
            The path to store it under, below its kind.
        on_flush_error
            Called with the exception when a periodic upload fails (``FlushError``);
            such errors are also kept in :attr:`TrackedFile.flush_errors`. The
            final upload at exit raises instead.

        Returns
        -------
        TrackedFile
            Already tracking; close it (or leave its ``with`` block) to finish.
        """
        kind_ = self._kind(kind)
        source = os.fspath(path)
        if not source:
            raise StorageKeyError("the path of the file to track must not be empty")
        if dest is None:
            if os.path.isabs(source):
                raise StorageKeyError(
                    f"{source!r} must be a path relative to the current directory, or give dest"
                )
            target = destination_path(source)
            source = os.path.join(os.getcwd(), source)
        else:
            target = _check_output_path(dest)
        if not interval_s > 0:
            raise StorageKeyError(f"interval_s must be a positive number of seconds, not {interval_s!r}")
        key = self.key_for(kind_, target)
        return TrackedFile(self.storage, os.path.abspath(source), key, float(interval_s),
                           on_flush_error=on_flush_error)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise StorageConfigurationError(
            f"{name} is not set: from_environment() is for code running as a Batch task"
        )
    return value


# --------------------------------------------------------------------------- tracked files
# Port of TrackedFile.cs.


class TrackedFile:
    """An append-only file mirrored to storage while it grows (``ITrackedSaveOperation``).

    Made by :meth:`TaskOutputStorage.save_tracked`. The stored object starts
    empty (replacing any earlier one); a daemon thread appends the file's new
    bytes almost at once and then every ``interval_s`` (skipping a turn while
    an upload is still running, as .NET does); :meth:`close` stops the thread
    and uploads the rest.

    Attributes
    ----------
    key
        Storage key of the stored copy.
    source_path
        Absolute path of the tracked file.
    interval_s
        Seconds between periodic uploads.
    flush_errors
        Exceptions of failed periodic uploads (the next upload retries the
        same bytes).
    """

    def __init__(self, storage: Storage, source_path: str, key: str, interval_s: float, *,
                 on_flush_error: Callable[[BaseException], None] | None = None) -> None:
        self.storage = storage
        self.source_path = source_path
        self.key = key
        self.interval_s = interval_s
        self.flush_errors: list[BaseException] = []
        self._on_flush_error = on_flush_error
        self._flushed_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        # .NET: EnsureExistsAsync on the append blob; here it also drops an earlier copy
        storage.append_bytes(b"", key, replace=True)
        self._thread = threading.Thread(
            target=self._run, name=f"hpcbatch-tracked:{os.path.basename(source_path)}", daemon=True
        )
        self._thread.start()

    @property
    def flushed_bytes(self) -> int:
        """How many bytes of the file are stored so far."""
        return self._flushed_bytes

    @property
    def url(self) -> str:
        """URL of the stored copy."""
        return self.storage.url_for(self.key)

    def _run(self) -> None:
        wait_s = 0.001  # .NET: first timer tick after 1 ms, then every interval
        while not self._stop.wait(wait_s):
            self._flush(force=False)
            wait_s = self.interval_s

    def _flush(self, *, force: bool) -> None:
        # a periodic flush gives way to one still running; the final one waits for it
        if not self._lock.acquire(blocking=force):
            return
        try:
            try:
                size = os.path.getsize(self.source_path)
            except FileNotFoundError:
                return
            if size <= self._flushed_bytes:
                return
            with open(self.source_path, "rb") as f:
                f.seek(self._flushed_bytes)
                data = f.read(size - self._flushed_bytes)
            if data:
                self.storage.append_bytes(data, self.key)
                self._flushed_bytes += len(data)
        except Exception as exc:
            if force:
                raise
            self.flush_errors.append(exc)
            log.warning("tracked file %s: upload to %s failed (will retry): %s",
                        self.source_path, self.key, exc)
            if self._on_flush_error is not None:
                try:
                    self._on_flush_error(exc)
                except Exception:  # a handler's failure must not kill tracking
                    log.exception("tracked file %s: on_flush_error handler failed", self.source_path)
        finally:
            self._lock.release()

    def flush(self) -> None:
        """Upload the bytes appended since the last upload now.

        Raises
        ------
        StorageError
            The upload failed.
        """
        self._flush(force=True)

    def close(self) -> None:
        """Stop tracking and upload the rest of the file (``Dispose``). Idempotent.

        Raises
        ------
        StorageError
            The final upload failed.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        self._flush(force=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as flush_exc:  # noqa: BLE001 - keep the task's own exception the one that propagates
            log.error("tracked file %s: final upload to %s failed: %s",
                      self.source_path, self.key, flush_exc)
            exc.add_note(f"hpcbatch: the final upload of tracked file {self.source_path} "
                         f"to {self.key} also failed: {flush_exc}")

    def __repr__(self) -> str:
        return (f"TrackedFile({self.source_path!r} -> {self.key!r}, "
                f"interval_s={self.interval_s}, flushed_bytes={self._flushed_bytes})")
