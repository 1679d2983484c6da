"""The dashboard's live updates: server-sent event streams, computed on the server.

Each stream sends a full ``snapshot`` first and then only what changed:

* ``/dashboard/live/pools``: every node state change at the moment it happens
  (``node`` events, from the pool manager's state listeners, so a node that
  passes through ``rebooting`` for a millisecond is still shown so), and once a
  second the pools' summaries and the heat map cells that changed (``pools``).
* ``/dashboard/live/jobs``: the first page of the jobs list when it changes.
* ``/dashboard/live/jobs/{job}``: task counts and job state every
  :data:`FAST_S` when they change, charts every :data:`SLOW_S` when counts moved.
* ``/dashboard/live/nodes/{pool}/{node}``: the node's JSON when it changes and a
  CPU/memory sample from the node every :data:`SLOW_S`.
* ``/dashboard/live/jobs/{job}/tasks/{task}``: the task page's one stream
  (:func:`task_loop`): the task when it changes, and the bytes appended to its
  ``stdout.txt`` and ``stderr.txt`` (read from the node through "File - Get
  From Task" with an offset, until the task has completed and the file stopped
  growing), events named ``task``, ``stdout-append``, ``stderr-end``, ... Every
  page holds one stream (one of the browser's six HTTP/1.1 connections to the
  service), so several dashboard tabs still leave connections for actions.
* ``/dashboard/live/events``: new diagnostic events that match the filters.

A stream ends when the browser goes away or the service shuts down.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.states import TaskState
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.core.service import BatchService

log = logging.getLogger(__name__)

FAST_S = 0.5
"""Seconds between looks at what changes often (task counts, the tail of a file)."""

SLOW_S = 2.0
"""Seconds between looks at what is costly (charts, node metrics, events)."""

HEARTBEAT_S = 15.0
"""Seconds of silence after which a stream sends a comment, so proxies keep it open."""

TAIL_START_BYTES = 64 * 1024
"""A tail starts with at most this many bytes of the end of the file."""

TAIL_CHUNK_BYTES = 256 * 1024
"""Most bytes of a file read per look."""

QUEUE_LIMIT = 10_000
"""Node changes a slow browser may have pending before its stream resends a snapshot."""


class Shared:
    """Values every open stream shares for a while: N browsers watching one 100,000-task
    job cost one count query per :data:`FAST_S`, not N.

    Parameters
    ----------
    clock
        Monotonic clock in seconds.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._values: dict[tuple[str, ...], tuple[float, Any]] = {}

    def get(self, key: tuple[str, ...], max_age_s: float, compute: Callable[[], Any]) -> Any:
        """``compute()``, or its value for ``key`` when computed less than ``max_age_s`` ago.

        Errors are not kept: the next call computes again.
        """
        now = self.clock()
        hit = self._values.get(key)
        if hit is not None and now - hit[0] < max_age_s:
            return hit[1]
        if len(self._values) > 10_000:
            self._values = {k: v for k, v in self._values.items() if now - v[0] < 60.0}
        value = compute()
        self._values[key] = (now, value)
        return value


class NodeChanges:
    """Fans out the pool manager's node state changes to the open pool streams.

    Parameters
    ----------
    svc
        The service; :meth:`attach` adds this object to its pool manager's
        ``state_listeners``.
    """

    def __init__(self, svc: BatchService) -> None:
        self.svc = svc
        self.queues: set[asyncio.Queue[list[Any] | None]] = set()

    def attach(self) -> None:
        """Start listening to node state changes."""
        self.svc.pool_manager.state_listeners.append(self.changed)

    def detach(self) -> None:
        """Stop listening, and end every open stream."""
        if self.changed in self.svc.pool_manager.state_listeners:
            self.svc.pool_manager.state_listeners.remove(self.changed)
        for q in list(self.queues):
            q.put_nowait(None)

    def changed(self, node: NodeRuntime) -> None:
        """A node's state changed: queue ``[pool, id, state, running, error]`` for each stream."""
        cell = [node.pool_id, node.node_id, node.state, len(node.running),
                (node.errors or [{}])[0].get("code", "")]
        for q in self.queues:
            if q.qsize() < QUEUE_LIMIT:
                q.put_nowait(cell)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[list[Any] | None]]:
        """A queue of node changes for one stream, while the block runs."""
        q: asyncio.Queue[list[Any] | None] = asyncio.Queue()
        self.queues.add(q)
        try:
            yield q
        finally:
            self.queues.discard(q)


class EventStream:
    """One server-sent event stream to a browser.

    Parameters
    ----------
    response
        The prepared ``text/event-stream`` response.
    closing
        Set when the service shuts down.
    """

    def __init__(self, response: web.StreamResponse, closing: asyncio.Event) -> None:
        self.response = response
        self.closing = closing
        self.bytes_sent = 0

    @classmethod
    async def open(cls, request: web.Request, closing: asyncio.Event) -> EventStream:
        """Answer ``request`` with a stream (``200 text/event-stream``, no caching)."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        return cls(resp, closing)

    async def send(self, event: str, data: Any) -> None:
        """Send one event (``data`` as compact JSON)."""
        payload = json.dumps(data, separators=(",", ":"), default=str)
        chunk = f"event: {event}\ndata: {payload}\n\n".encode()
        self.bytes_sent += len(chunk)
        await self.response.write(chunk)

    async def beat(self) -> None:
        """Send a comment line (keeps the connection open; detects a gone browser)."""
        await self.response.write(b": beat\n\n")

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; return False when the service is shutting down."""
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            return True
        return False


async def run(stream: EventStream, loop: Callable[[EventStream], Any]) -> web.StreamResponse:
    """Run a stream's loop until the browser leaves or the service shuts down."""
    try:
        await loop(stream)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return stream.response


def _changed_cells(old: list[list[Any]], new: list[list[Any]]) -> list[list[Any]] | None:
    """The cells of ``new`` that differ from ``old``; None when the node set changed."""
    if [c[0] for c in old] != [c[0] for c in new]:
        return None
    return [n for o, n in zip(old, new, strict=True) if o != n]


async def pools_loop(stream: EventStream, svc: BatchService, changes: NodeChanges,
                     overview: Callable[[], list[dict[str, Any]]]) -> None:
    """``/dashboard/live/pools``: snapshot, then node changes and summary diffs."""
    with changes.subscribe() as queue:
        last = {p["id"]: p for p in overview()}
        await stream.send("snapshot", list(last.values()))
        loop = asyncio.get_running_loop()
        next_look = loop.time() + 1.0
        idle = 0.0
        while not stream.closing.is_set():
            timeout = max(0.0, next_look - loop.time())
            try:
                cell = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                cell = None
                if not stream.closing.is_set():
                    cell = []
            if cell is None:
                return
            if cell:
                if queue.qsize() >= QUEUE_LIMIT - 1:  # the browser fell behind: resync
                    last = {p["id"]: p for p in overview()}
                    await stream.send("snapshot", list(last.values()))
                else:
                    await stream.send("node", cell)
                continue
            next_look = loop.time() + 1.0
            now = {p["id"]: p for p in overview()}
            diffs = []
            for pid, pool in now.items():
                old = last.get(pid)
                cells = _changed_cells(old["nodes"], pool["nodes"]) if old else None
                summary = {k: v for k, v in pool.items() if k != "nodes"}
                if old is None or cells is None:
                    diffs.append({**summary, "nodes": pool["nodes"]})
                elif cells or summary != {k: v for k, v in old.items() if k != "nodes"}:
                    diffs.append({**summary, "changedNodes": cells})
            gone = [pid for pid in last if pid not in now]
            last = now
            if diffs or gone:
                await stream.send("pools", {"pools": diffs, "gone": gone})
                idle = 0.0
            else:
                idle += 1.0
                if idle >= HEARTBEAT_S:
                    await stream.beat()
                    idle = 0.0


async def poll_loop(stream: EventStream, compute: Callable[[], Any], event: str,
                    interval_s: float = FAST_S) -> None:
    """Send ``compute()`` as ``event`` first and then whenever it changes."""
    last: Any = object()
    idle = 0.0
    while True:
        try:
            now = compute()
        except HpcbatchError as exc:  # deleted meanwhile
            await stream.send("gone", {"code": exc.code, "message": exc.message})
            return
        if now != last:
            await stream.send(event, now)
            last, idle = now, 0.0
        else:
            idle += interval_s
            if idle >= HEARTBEAT_S:
                await stream.beat()
                idle = 0.0
        if not await stream.sleep(interval_s):
            return


def job_status(svc: BatchService, job_id: str) -> dict[str, Any]:
    """A job's ``state`` and task ``counts`` ("Job - Get", "Job - Get Task Counts")."""
    return {"state": svc.jobs.get_job(job_id)["state"],
            "counts": svc.jobs.task_counts(job_id)["taskCounts"]}


async def job_loop(stream: EventStream, status: Callable[[], dict[str, Any]],
                   series: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """``/dashboard/live/jobs/{job}``: counts and state (``status()``, :func:`job_status`)
    when they change; charts when counts moved, at most every :data:`SLOW_S` (at once
    when no task is left to run); ``series(status)`` gives the charts at that status."""
    last_counts: Any = None
    last_series_at = 0.0
    series_due = True
    loop = asyncio.get_running_loop()
    idle = 0.0
    while True:
        try:
            now = status()
        except HpcbatchError as exc:
            await stream.send("gone", {"code": exc.code, "message": exc.message})
            return
        counts = now["counts"]
        if now != last_counts:
            await stream.send("counts", now)
            last_counts, series_due, idle = now, True, 0.0
        settled = counts["active"] == 0 and counts["running"] == 0
        if series_due and (settled or loop.time() - last_series_at >= SLOW_S):
            await stream.send("series", series(now))
            last_series_at, series_due = loop.time(), False
        idle += FAST_S
        if idle >= HEARTBEAT_S:
            await stream.beat()
            idle = 0.0
        if not await stream.sleep(FAST_S):
            return


async def node_loop(stream: EventStream, svc: BatchService, pool_id: str, node_id: str) -> None:
    """``/dashboard/live/nodes/{pool}/{node}``: the node's JSON when it changes and a
    CPU/memory sample (:func:`hpcbatch.execution.metrics.node_sample`) every :data:`SLOW_S`."""
    last: Any = None
    loop = asyncio.get_running_loop()
    next_sample = 0.0
    while True:
        try:
            node = svc.nodes.get_node(pool_id, node_id)
        except HpcbatchError as exc:
            await stream.send("gone", {"code": exc.code, "message": exc.message})
            return
        if node != last:
            await stream.send("node", node)
            last = node
        if loop.time() >= next_sample:
            next_sample = loop.time() + SLOW_S
            runtime = svc.pool_manager.node(pool_id.lower(), node_id)
            sample: dict[str, Any] | None = None
            if runtime is not None and runtime.worker:
                try:
                    sample = await svc.ctx.engine.node_sample(runtime.worker)
                except Exception as exc:  # noqa: BLE001 - a node may fail mid-call
                    log.debug("dashboard: no metrics from %s: %s", node_id, exc)
            await stream.send("metrics", {
                "time": loop.time(), "cpuPercent": (sample or {}).get("CPUPercent"),
                "memoryBytes": (sample or {}).get("MemoryBytes")})
        if not await stream.sleep(1.0):
            return


async def tail_loop(stream: EventStream, svc: BatchService, job_id: str, task_id: str,
                    name: str) -> None:
    """One task file's tail (:func:`task_loop` runs one per file): ``append`` events with
    the text added to the file, ``end`` once the task completed and the file stopped
    growing (``skipped`` first when only its last part is sent; ``gone`` when the task
    was deleted)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset: int | None = None
    quiet = 0.0
    while True:
        try:
            state = svc.tasks.get_task(job_id, task_id, "state")["state"]
        except HpcbatchError as exc:
            await stream.send("gone", {"code": exc.code, "message": exc.message})
            return
        data = b""
        try:
            if offset is None:
                whole = await svc.files.list_task_files(job_id, task_id)
                size = next((f.get("properties", {}).get("contentLength", 0) for f in whole
                             if f["name"] == name), None)
                if size is not None:
                    offset = max(0, int(size) - TAIL_START_BYTES)
                    if offset:
                        await stream.send("skipped", {"bytes": offset})
            if offset is not None:
                data = await svc.files.get_task_file(job_id, task_id, name, offset,
                                                     TAIL_CHUNK_BYTES)
        except HpcbatchError as exc:
            if state == TaskState.completed and offset is None:
                await stream.send("end", {"state": state, "message": exc.message})
                return
        except Exception as exc:  # noqa: BLE001 - the node may be gone mid-call
            log.debug("dashboard: tail of %s/%s/%s: %s", job_id, task_id, name, exc)
        if data:
            assert offset is not None
            offset += len(data)
            await stream.send("append", {"text": decoder.decode(data), "offset": offset})
            quiet = 0.0
            if len(data) >= TAIL_CHUNK_BYTES:
                continue
        elif state == TaskState.completed:
            await stream.send("end", {"state": state, "offset": offset})
            return
        else:
            quiet += FAST_S
            if quiet >= HEARTBEAT_S:
                await stream.beat()
                quiet = 0.0
        if not await stream.sleep(FAST_S):
            return


class PrefixedStream(EventStream):
    """One feed of several on a shared :class:`EventStream`: its events are named
    ``{prefix}{event}`` (``stdout-append``); beats and sleeps are the stream's."""

    def __init__(self, stream: EventStream, prefix: str) -> None:
        super().__init__(stream.response, stream.closing)
        self.prefix = prefix

    async def send(self, event: str, data: Any) -> None:
        await super().send(self.prefix + event, data)


async def task_loop(stream: EventStream, svc: BatchService, job_id: str, task_id: str) -> None:
    """``/dashboard/live/jobs/{job}/tasks/{task}``: the task (``task`` events, as
    :func:`poll_loop` sends them) and the tails of its ``stdout.txt`` and
    ``stderr.txt`` (:func:`tail_loop`, events prefixed ``stdout-`` and ``stderr-``), on
    one stream. Each feed ends on its own (a tail when the task completed); the stream
    stays open until the browser leaves."""
    try:
        async with asyncio.TaskGroup() as feeds:
            feeds.create_task(poll_loop(stream, lambda: svc.tasks.get_task(job_id, task_id),
                                        "task"))
            for name in ("stdout.txt", "stderr.txt"):
                feeds.create_task(tail_loop(PrefixedStream(stream, name.split(".")[0] + "-"),
                                            svc, job_id, task_id, name))
    except* ConnectionResetError:  # the browser left: every feed stops
        pass


async def events_loop(stream: EventStream,
                      read: Callable[[str | None], list[dict[str, Any]]]) -> None:
    """``/dashboard/live/events``: events newer than the last one sent, every :data:`SLOW_S`."""
    since: str | None = None
    first = True
    idle = 0.0
    while True:
        found = read(since)
        if found or first:
            await stream.send("events", found)
            first, idle = False, 0.0
            if found:
                since = found[-1].get("time")
        else:
            idle += SLOW_S
            if idle >= HEARTBEAT_S:
                await stream.beat()
                idle = 0.0
        if not await stream.sleep(SLOW_S):
            return
