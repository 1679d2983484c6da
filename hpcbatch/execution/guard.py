"""Who may say what over the cluster's Dask comms: nodes are untrusted peers.

Every Dask comm of the cluster is mutual TLS with certificates from the
service's CA (:mod:`hpcbatch.execution.pki`), so each end knows the other's
role from its certificate. This module enforces what each role may do:

**Reading from anyone but the service** (:func:`install`). Dask decodes a
message with msgpack and then unpickles any ``__Pickled__`` (and, on comms
that deserialize, ``__Serialized__``) part of it while reading, before any
handler sees it; some of its handlers also unpickle plain bytes
(``clean_exception``). So in every hpcbatch process (service, scheduler,
node) a comm whose peer is not the service is read with msgpack only:
a pickled or serialized part, or a Dask enum, aborts the comm unread. The
service opens its comms to nodes with ``deserialize=False`` as well.

**Scheduler** (:func:`guard_scheduler`, installed by ``--preload
hpcbatch.execution.scheduler_guard``). A comm from a node identity may carry
only what a worker sends: the requests in :data:`NODE_REQUESTS`
(``register-worker`` under the worker name its certificate names,
``heartbeat_worker`` for its own worker) and, on its worker stream, the
messages in :data:`NODE_STREAM_OPS` (:data:`NODE_STREAM_DROPPED` ones are
dropped). Anything else
(``register-client``, ``run_function``, ``broadcast``, ``update-graph``,
plugin registration, ``proxy``, ``retire_workers``, ``restart``,
``terminate``, ...) aborts the comm before a handler runs. A certificate
that is neither the service's nor a node's (such as the one certificate all
nodes held before node identities) is refused at once.

**Node workers** (:func:`guard_worker`). A worker accepts comms from the
service identity only (the scheduler and the service's client); a comm from
a node identity, or any other, is aborted before its first message is read:
another node gets no ``run``, ``get_data``, ``plugin-add``, ``terminate`` or
hpcbatch handler.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgpack

from hpcbatch.execution.peers import PeerIdentity, peer_identity

log = logging.getLogger(__name__)

NODE_REQUESTS = frozenset({"register-worker", "heartbeat_worker", "close"})
"""Requests a node identity may send the scheduler: what a worker sends (the ops
logged from the workers of real pools that ran tasks, grew and shrank)."""

NODE_STREAM_OPS = frozenset({"keep-alive", "worker-status-change", "close-stream"})
"""Messages a node identity may send on its worker's stream to the scheduler.

None of the task ones (``task-finished``, ``task-erred``, ``add-keys``, ...):
hpcbatch submits no Dask tasks, its runs go to the node agent directly."""

NODE_STREAM_DROPPED = frozenset({"log-event"})
"""Stream messages a worker sends (a closing worker logs that it closes) that are
dropped unread: the scheduler would forward them to clients subscribed to the
topic, and the service's client prints the ``print`` topic and warns the ``warn`` one."""

_ADDRESSED = frozenset({"heartbeat_worker"})
"""Node requests about one worker, named by its ``address``: it must be the node's own."""

_STRICT: contextvars.ContextVar[bool] = contextvars.ContextVar("hpcbatch_strict_read",
                                                              default=False)
_PEER_ATTR = "_hpcbatch_peer"
_MISSING = object()


class RefusedMessage(Exception):
    """A peer sent something its identity may not send (the comm is aborted)."""


# --------------------------------------------------------------------------
# peers and strict reads
# --------------------------------------------------------------------------


def comm_peer(comm: Any) -> PeerIdentity | None:
    """Return the identity of a TLS comm's peer (from its verified certificate), or None.

    Parameters
    ----------
    comm
        A Dask comm; only TLS comms carry a certificate (``extra_info["peercert"]``).
    """
    peer = getattr(comm, _PEER_ATTR, _MISSING)
    if peer is _MISSING:
        extra = getattr(comm, "extra_info", None) or {}
        peer = peer_identity(extra.get("peercert"))
        try:
            setattr(comm, _PEER_ATTR, peer)
        except AttributeError:  # pragma: no cover - a comm class with __slots__
            pass
    return peer  # type: ignore[return-value]


def _refuse_extensions(obj: dict[Any, Any]) -> Any:
    if "__Pickled__" in obj or "__Serialized__" in obj or "__Enum__" in obj:
        raise RefusedMessage("a pickled or serialized payload from a peer that is not the "
                             "service")
    if "__Set__" in obj:
        return set(obj.get("as-list", ()))
    return obj


def strict_loads(frames: list[Any]) -> Any:
    """Decode a Dask message with msgpack only (what :func:`install` reads untrusted peers with).

    Parameters
    ----------
    frames
        The message's frames as Dask's comm read them.

    Returns
    -------
    Any
        Plain values: dicts, tuples, str, bytes, numbers, bool, None (and sets).

    Raises
    ------
    RefusedMessage
        The message has out-of-band frames, or a pickled, serialized or enum part.
    """
    if len(frames) != 1:
        raise RefusedMessage(f"a message of {len(frames)} frames from a peer that is not "
                             "the service (out-of-band frames carry pickles)")
    from distributed.protocol.utils import msgpack_opts

    return msgpack.loads(frames[0], object_hook=_refuse_extensions, use_list=False,
                         **msgpack_opts)


def install() -> None:
    """Make every TLS comm of this process read peers other than the service with msgpack only.

    Patches ``distributed.comm.tcp`` (its ``TLS.read`` and the ``from_frames``
    it calls) once per process. A message refused by :func:`strict_loads`
    aborts its comm; the reader gets ``CommClosedError``. Comms whose peer
    presented the service's certificate decode as Dask always does.
    """
    from distributed.comm import tcp
    from distributed.comm.core import CommClosedError

    if getattr(tcp.TLS.read, "_hpcbatch_guarded", False):
        return
    dask_read = tcp.TLS.read
    dask_from_frames = tcp.from_frames

    async def read(self: Any, deserializers: Any = None) -> Any:
        peer = comm_peer(self)
        if peer is not None and peer.is_service:
            return await dask_read(self, deserializers)
        token = _STRICT.set(True)
        try:
            return await dask_read(self, deserializers)
        except RefusedMessage as exc:
            self.abort()
            log.warning("refused a message from %s (%s): %s", self.peer_address,
                        _describe(peer), exc)
            raise CommClosedError(f"refused: {exc}") from None
        finally:
            _STRICT.reset(token)

    async def from_frames(frames: list[Any], deserialize: bool = True,
                          deserializers: Any = None, allow_offload: bool = True) -> Any:
        if _STRICT.get():
            return strict_loads(frames)
        return await dask_from_frames(frames, deserialize=deserialize,
                                      deserializers=deserializers, allow_offload=allow_offload)

    read._hpcbatch_guarded = True  # type: ignore[attr-defined]
    tcp.TLS.read = read  # type: ignore[method-assign]
    tcp.from_frames = from_frames


def _describe(peer: PeerIdentity | None) -> str:
    if peer is None:
        return "no hpcbatch identity"
    if peer.is_service:
        return "the service"
    return f"node {peer.worker_name} of pool {peer.pool_id}"


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------


def _wrap_handle_comm(server: Any, admit: Callable[[Any, PeerIdentity | None], bool]) -> None:
    """Run ``admit(comm, peer)`` on each new comm of ``server`` before Dask reads it."""
    dask_handle: Callable[[Any], Awaitable[None]] = server._handle_comm

    async def handle_comm(comm: Any) -> None:
        peer = comm_peer(comm)
        if not admit(comm, peer):
            log.warning("refused a connection from %s (%s) to the %s", comm.peer_address,
                        _describe(peer), type(server).__name__)
            comm.abort()
            return
        await dask_handle(comm)

    server._handle_comm = handle_comm


def guard_worker(worker: Any) -> None:
    """Let a node's worker accept comms from the service identity only.

    Call it after making the worker and before starting it. Also calls
    :func:`install`.

    Parameters
    ----------
    worker
        The node's ``distributed.Worker``.
    """
    install()
    _wrap_handle_comm(worker, lambda comm, peer: peer is not None and peer.is_service)


def guard_scheduler(scheduler: Any) -> None:
    """Let node identities send the scheduler only what a worker must; refuse others.

    Call it before the scheduler listens (``--preload
    hpcbatch.execution.scheduler_guard`` does, when the scheduler is made).
    Also calls :func:`install`.

    Parameters
    ----------
    scheduler
        The ``distributed.Scheduler``.
    """
    install()

    def admit(comm: Any, peer: PeerIdentity | None) -> bool:
        if peer is None:
            return False
        if not peer.is_service:
            _restrict(comm, peer, scheduler)
        return True

    _wrap_handle_comm(scheduler, admit)


def _restrict(comm: Any, peer: PeerIdentity, scheduler: Any) -> None:
    """Check every message read from a node's comm against what a worker sends."""
    from distributed.comm.core import CommClosedError

    comm_read = type(comm).read

    async def read(deserializers: Any = None) -> Any:
        msg = await comm_read(comm, deserializers)
        try:
            return check_node_message(msg, peer, scheduler.workers)
        except RefusedMessage as exc:
            log.warning("refused a message from %s (%s): %s", comm.peer_address,
                        _describe(peer), exc)
            comm.abort()
            raise CommClosedError(f"refused: {exc}") from None

    comm.read = read


def check_node_message(msg: Any, peer: PeerIdentity, workers: Mapping[str, Any]) -> Any:
    """Check one message a node identity sent the scheduler.

    Parameters
    ----------
    msg
        The decoded message: a request (a dict with ``op``) or a batch of
        stream messages (a list of dicts).
    peer
        The node identity.
    workers
        The scheduler's workers by address (``WorkerState`` with ``name``).

    Returns
    -------
    Any
        The message to hand to Dask: ``msg``, without the stream messages in
        :data:`NODE_STREAM_DROPPED`.

    Raises
    ------
    RefusedMessage
        The op is not one a worker sends, a worker is registered under another
        name than the certificate's, or a message is about another worker.
    """
    if isinstance(msg, dict):
        _check_one(msg, peer, workers, NODE_REQUESTS | NODE_STREAM_OPS)
        return msg
    if not isinstance(msg, (list, tuple)):
        raise RefusedMessage(f"a message of type {type(msg).__name__}")
    kept = []
    for item in msg:
        if not isinstance(item, dict):
            raise RefusedMessage(f"a stream message of type {type(item).__name__}")
        if item.get("op") in NODE_STREAM_DROPPED:
            continue
        _check_one(item, peer, workers, NODE_STREAM_OPS)
        kept.append(item)
    return kept


def _check_one(msg: dict[str, Any], peer: PeerIdentity, workers: Mapping[str, Any],
               allowed: frozenset[str]) -> None:
    op = msg.get("op")
    if op not in allowed:
        raise RefusedMessage(f"op {op!r} is not one a node may send")
    if "worker" in msg:  # stream handlers get the stream's own worker; none may name another
        raise RefusedMessage(f"op {op!r} names a worker")
    if "resolve_address" in msg:
        raise RefusedMessage(f"op {op!r} sets resolve_address")
    if op == "register-worker" and str(msg.get("name")) != peer.worker_name:
        raise RefusedMessage(f"register-worker under the name {msg.get('name')!r}, not "
                             f"{peer.worker_name!r}")
    if op in _ADDRESSED:
        address = msg.get("address")
        if not isinstance(address, str):
            raise RefusedMessage(f"op {op!r} without a worker address")
        from distributed.comm.addressing import normalize_address

        try:
            ws = workers.get(normalize_address(address))
        except (ValueError, TypeError) as exc:
            raise RefusedMessage(f"op {op!r} with a bad address: {exc}") from None
        if ws is not None and str(ws.name) != peer.worker_name:
            raise RefusedMessage(f"op {op!r} about worker {ws.name!r}")
