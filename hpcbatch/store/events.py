"""The diagnostic event log: JSON lines, rotated, mirrored to storage."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time as _time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Self

import orjson

if TYPE_CHECKING:
    from hpcbatch.storage.fs import Storage

from hpcbatch.batch.events import format_time

log = logging.getLogger(__name__)


class EventLog:
    """An append-only log of Batch diagnostic events: JSON lines, rotated, mirrored to storage.

    Each :meth:`emit` appends ``{"time": "2016-09-08T16:32:23.799Z", "name":
    "TaskStartEvent", "body": {...}}`` and a newline to ``path``. When the file
    would grow past ``max_bytes`` it becomes ``path.1`` (replacing the previous
    one) and a new file starts. With ``storage``, the same lines are buffered
    and appended to the object ``storage_key`` by :meth:`flush`, which the
    service calls periodically: Batch keeps its diagnostic logs in a storage
    account (Log events for diagnostic evaluation and monitoring of Batch
    solutions). Storage errors never reach the caller: they are logged as
    warnings and the lines are kept for the next flush.

    Parameters
    ----------
    path
        The local log file (its folder is created).
    storage
        Where to mirror the events (:func:`hpcbatch.storage.fs.open_storage`).
    storage_key
        ``container/path`` of the log object in ``storage``; required with it.
    max_bytes
        Size at which the local file rotates, in bytes (default 64 MiB).
    flush_interval_s
        :meth:`flush` writes to storage at most once per this many seconds,
        unless forced.
    max_buffer_bytes
        Most bytes kept for storage while it fails; the oldest lines are dropped
        beyond it (a warning says how many).

    Raises
    ------
    ValueError
        ``storage`` without ``storage_key``, or ``max_bytes`` < 1.

    Thread-safe: any thread may emit; one flushes at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage: Storage | None = None,
        storage_key: str | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        flush_interval_s: float = 10.0,
        max_buffer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if storage is not None and not storage_key:
            raise ValueError("EventLog: storage_key is required when storage is given")
        if max_bytes < 1:
            raise ValueError(f"EventLog: max_bytes must be at least 1, not {max_bytes}")
        self.path = Path(path)
        self.rotated_path = self.path.with_name(self.path.name + ".1")
        self.storage = storage
        self.storage_key = storage_key
        self.max_bytes = max_bytes
        self.flush_interval_s = flush_interval_s
        self.max_buffer_bytes = max_buffer_bytes
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._file: io.FileIO | None = None
        self._size = 0
        self._written = 0
        """Bytes of the local file that hold whole lines (what a failed write truncates back to)."""
        self._buf: list[bytes] = []
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._last_flush = float("-inf")
        self._held = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ write

    def emit(
        self, name: str, body: Mapping[str, Any], *, time: datetime | None = None
    ) -> dict[str, Any]:
        """Append one event.

        Parameters
        ----------
        name
            The event name (``"TaskStartEvent"``, see :data:`EVENT_NAMES`).
        body
            The event body (one of this module's builders).
        time
            When it happened; default now (UTC).

        Returns
        -------
        dict
            The record written: ``{"time", "name", "body"}``.

        Raises
        ------
        OSError
            The local file cannot be written (storage errors never raise).
        TypeError
            ``body`` is not JSON-serializable.
        """
        record = {"time": format_time(time or datetime.now(UTC)), "name": name, "body": dict(body)}
        # orjson: the same compact UTF-8 JSON as json.dumps(separators=(",", ":"),
        # ensure_ascii=False), several times faster (an event or two per task run).
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            if self._file is None:
                self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._buf.append(line)
            self._size += len(line)
            if not self._held:
                self._write_out()
            if self.storage is not None:
                self._pending.append(line)
                self._pending_bytes += len(line)
                self._trim_pending()
        return record

    @contextmanager
    def held(self) -> Iterator[None]:
        """Write the events emitted inside the block to the local file once, when it ends.

        For a burst of events (a scheduling pass): readers such as
        ``hpcbatch events tail --follow`` see them together, at the cost of
        one write instead of one per event.
        """
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                if not self._held:
                    self._write_out()

    def _open(self) -> None:
        # Unbuffered: this class writes whole lines itself (see _write_out).
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open across emits
        self._size = self._written = self._file.seek(0, os.SEEK_END)

    def _write_out(self) -> None:
        """Write the lines not written yet; on failure (a full disk) leave no torn line.

        The file is cut back to its last whole line and the lines are dropped
        (logged); the error is raised.
        """
        if not self._buf or self._file is None:
            return
        data, self._buf = b"".join(self._buf), []
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0:]
        except OSError as exc:
            with suppress(OSError):
                os.ftruncate(self._file.fileno(), self._written)
            self._size = self._written
            log.warning("event log %s: %d bytes of events not written: %s", self.path,
                        len(data), exc)
            raise
        self._written += len(data)

    def _rotate(self) -> None:
        if self._file is not None:
            self._write_out()
            self._file.close()
        os.replace(self.path, self.rotated_path)
        self._open()

    def _trim_pending(self) -> None:
        dropped = 0
        while self._pending_bytes > self.max_buffer_bytes and len(self._pending) > 1:
            self._pending_bytes -= len(self._pending.pop(0))
            dropped += 1
        if dropped:
            log.warning(
                "event log %s: storage buffer full, dropped %d oldest events", self.path, dropped
            )

    def flush(self, *, force: bool = False) -> int:
        """Append the buffered events to storage.

        Parameters
        ----------
        force
            Write even if the last flush was less than ``flush_interval_s`` ago.

        Returns
        -------
        int
            Events written (0 without storage, with nothing buffered, too soon,
            or when storage failed: then a warning is logged and the events
            are kept for the next flush).
        """
        if self.storage is None or self.storage_key is None:
            return 0
        with self._flush_lock:
            now = _time.monotonic()
            if not force and now - self._last_flush < self.flush_interval_s:
                return 0
            with self._lock:
                lines, self._pending, self._pending_bytes = self._pending, [], 0
            if not lines:
                self._last_flush = now
                return 0
            try:
                self.storage.append_bytes(b"".join(lines), self.storage_key)
            except Exception as exc:  # noqa: BLE001 - never raise into the service
                log.warning(
                    "event log %s: cannot append %d events to storage %s: %s",
                    self.path,
                    len(lines),
                    self.storage_key,
                    exc,
                )
                with self._lock:
                    self._pending[:0] = lines
                    self._pending_bytes += sum(len(line) for line in lines)
                    self._trim_pending()
                return 0
            self._last_flush = now
            return len(lines)

    def close(self) -> None:
        """Flush to storage (forced) and close the local file."""
        self.flush(force=True)
        with self._lock:
            if self._file is not None:
                try:
                    self._write_out()
                finally:
                    self._file.close()
                    self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------- read

    def read(self, since: int = 0) -> list[dict[str, Any]]:
        """The events kept locally, oldest first (``path.1`` then ``path``).

        Parameters
        ----------
        since
            Skip this many events (an index into what is kept now; rotation
            drops the oldest events, so indexes shift when it happens).

        Returns
        -------
        list of dict
            ``{"time", "name", "body"}`` records; unreadable lines (a write
            cut short) are skipped.
        """
        events: list[dict[str, Any]] = []
        with self._lock:
            for file in (self.rotated_path, self.path):
                try:
                    data = file.read_bytes()
                except FileNotFoundError:
                    continue
                for raw in data.splitlines():
                    record = _parse(raw)
                    if record is not None:
                        events.append(record)
        return events[since:]

    def follow(
        self,
        poll_interval_s: float = 0.5,
        *,
        from_beginning: bool = False,
        stop: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield events as they are appended, like ``tail --follow``; survives rotation.

        The file is opened (and, unless ``from_beginning``, its end noted) when
        ``follow`` is called, so every event emitted after the call is yielded.

        Parameters
        ----------
        poll_interval_s
            Seconds between looks at the file when nothing new is there.
        from_beginning
            Start with the events already in ``path`` (else only new ones).
        stop
            Set it to end the iteration (checked every ``poll_interval_s``).

        Returns
        -------
        Iterator of dict
            ``{"time", "name", "body"}`` records, in order; endless unless
            ``stop`` is set.
        """
        handle: BinaryIO | None
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by _follow
        except FileNotFoundError:
            handle = None  # events in a file created later are all new
        else:
            if not from_beginning:
                handle.seek(0, os.SEEK_END)
        return self._follow(handle, poll_interval_s, stop)

    def _follow(
        self, handle: BinaryIO | None, poll_interval_s: float, stop: threading.Event | None
    ) -> Iterator[dict[str, Any]]:
        inode = os.fstat(handle.fileno()).st_ino if handle is not None else None
        partial = b""
        try:
            while stop is None or not stop.is_set():
                if handle is None:
                    try:
                        handle = open(self.path, "rb")  # noqa: SIM115
                    except FileNotFoundError:
                        _time.sleep(poll_interval_s)
                        continue
                    inode = os.fstat(handle.fileno()).st_ino
                chunk = handle.read()
                if chunk:
                    partial += chunk
                    *lines, partial = partial.split(b"\n")
                    for raw in lines:
                        record = _parse(raw)
                        if record is not None:
                            yield record
                    continue
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                if current is not None and (
                    current.st_ino != inode or current.st_size < handle.tell()
                ):
                    # Rotated (or truncated). Rotation happens after the last write to the old
                    # file, so one more read drains it. Then open the new file; if it rotated
                    # twice meanwhile, path.1 is neither file: read it whole first.
                    yield from _records(partial + handle.read())
                    handle.close()
                    handle, partial = None, b""
                    try:
                        handle = open(self.path, "rb")  # noqa: SIM115
                    except FileNotFoundError:
                        continue
                    new_inode = os.fstat(handle.fileno()).st_ino
                    try:
                        with open(self.rotated_path, "rb") as between:
                            middle = os.fstat(between.fileno()).st_ino
                            if middle not in (inode, new_inode):
                                yield from _records(between.read())
                    except FileNotFoundError:
                        pass
                    inode = new_inode
                    continue
                _time.sleep(poll_interval_s)
        finally:
            if handle is not None:
                handle.close()


def _records(data: bytes) -> Iterator[dict[str, Any]]:
    for raw in data.split(b"\n"):
        record = _parse(raw)
        if record is not None:
            yield record


def _parse(raw: bytes) -> dict[str, Any] | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        log.warning("event log: skipping an unreadable line (%d bytes)", len(raw))
        return None
    return record if isinstance(record, dict) else None
