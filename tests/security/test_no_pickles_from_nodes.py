"""The service and the scheduler never unpickle what a node sends (docs/security.md, "Nodes").

A real service engine (its Dask scheduler process with the guard preloaded, its client
and node comms, real TLS) talks to a fake node: a Dask server in this process holding a
node certificate issued by the service's CA. The fake node answers calls and streams
outcomes with pickled payloads whose unpickling would create a marker file; the fake node
(and a holder of the certificate every node had before node identities) also sends the
scheduler pickled payloads. No marker appears, and the same paths carry plain answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from distributed import Security
from distributed.comm import connect
from distributed.comm.core import CommClosedError
from distributed.core import Server
from distributed.protocol import Serialize, pickle
from distributed.protocol.serialize import ToPickle

from hpcbatch.execution import agent
from hpcbatch.execution.engine import DaskEngine, NodeCallError
from hpcbatch.execution.pki import ensure_tls, issue_node_credentials
from hpcbatch.execution.tls import TlsFiles
from tests.security.certs import roleless_certificate

WORKER_NAME = "fake-node@0001"


class Touch:
    """Unpickling this runs ``touch PATH`` (in whichever process unpickles it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _write_tls(folder: Path, ca: bytes, cert: bytes, key: bytes) -> Security:
    folder.mkdir(parents=True)
    for name, data in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
        (folder / name).write_bytes(data)
    ca_f, cert_f, key_f = (str(folder / n) for n in ("ca.pem", "cert.pem", "key.pem"))
    return Security(require_encryption=True, tls_ca_file=ca_f, tls_client_cert=cert_f,
                    tls_client_key=key_f, tls_worker_cert=cert_f, tls_worker_key=key_f)


def _legacy_security(tls: TlsFiles, folder: Path) -> Security:
    """The certificate every node held before node identities: CA-signed, no role."""
    cert, key = roleless_certificate(tls)
    return _write_tls(folder, tls.ca_file.read_bytes(), cert, key)


def _outcome(key: str, failure: Any = None) -> dict[str, Any]:
    return {"key": key, "exit_code": 0, "start": time.time(), "end": time.time(),
            "failure": failure, "task_root_dir": "/x", "node_id": "fake-node"}


class FakeNode:
    """A Dask server with a node's certificate and the agent's handler names, hostile."""

    def __init__(self, markers: Path, silent: bool = False) -> None:
        self.markers = markers
        self.silent = silent
        self.reply: Any = None
        self.streams = 0
        self.server = Server({agent.CALL_HANDLER: self.call,
                              agent.EXCHANGE_HANDLER: self.exchange,
                              agent.OUTCOME_STREAM_HANDLER: self.outcomes})
        self.keys: list[str] = []

    def call(self, operation: str, args: Any = None) -> Any:
        return self.reply

    def exchange(self, launches: bytes) -> None:
        self.keys += [launch.key for launch in pickle.loads(launches)]

    async def outcomes(self, comm: Any) -> None:
        self.streams += 1
        if self.silent:
            await asyncio.sleep(60)
            return
        key = self.keys[0]
        if self.streams == 1:  # a pickled failure info: refused, the stream breaks
            await comm.write([_outcome(key, ToPickle(Touch(self.markers / "outcome-pickled")))])
        elif self.streams == 2:  # a serialized one: refused too
            await comm.write([_outcome(key, Serialize(Touch(self.markers / "outcome-serial")))])
        else:  # then an outcome for another node's run (ignored) and its own (taken),
            # packed as an agent packs them (bytes the service unpacks with msgpack alone)
            await comm.write(msgpack.packb([_outcome("other-node-run"), _outcome(key)]))
        await asyncio.sleep(30)


def test_the_service_and_scheduler_never_unpickle_what_a_node_sends(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    tls = ensure_tls(tmp_path / "state")
    creds = issue_node_credentials(tls, "pool", WORKER_NAME)
    node_sec = _write_tls(tmp_path / "node", creds.ca_pem, creds.cert_pem, creds.key_pem)
    legacy_sec = _legacy_security(tls, tmp_path / "legacy")

    async def main() -> None:
        engine = DaskEngine(tmp_path / "run", tls, "127.0.0.1")
        await engine.start()
        fake, other = FakeNode(markers), FakeNode(markers, silent=True)
        try:
            for node in (fake, other):
                await node.server
                await node.server.listen("tls://127.0.0.1:0",
                                         **node_sec.get_listen_args("worker"))
            addr = fake.server.listeners[0].contact_address
            await _calls(engine, fake, addr, markers)
            await _outcome_stream(engine, fake, addr,
                                  other.server.listeners[0].contact_address)
            await _to_the_scheduler(engine, node_sec, legacy_sec, markers)
        finally:
            await fake.server.close()
            await other.server.close()
            await engine.close()

    asyncio.run(main())
    time.sleep(1)  # anything unpickled in the scheduler process has run by now
    assert sorted(p.name for p in markers.iterdir()) == []


async def _calls(engine: DaskEngine, fake: FakeNode, addr: str, markers: Path) -> None:
    fake.reply = {"status": "OK", "result": {"node_id": "fake-node"}}  # control: plain
    assert await engine.call(addr, "node_info") == {"node_id": "fake-node"}
    fake.reply = {"status": "OK", "result": ToPickle(Touch(markers / "call-pickled"))}
    with pytest.raises(CommClosedError, match="refused"):
        await engine.call(addr, "node_info")
    fake.reply = {"status": "OK", "result": Serialize(Touch(markers / "call-serialized"))}
    with pytest.raises(CommClosedError, match="refused"):
        await engine.call(addr, "node_info")
    # Plain bytes that Dask's own error path would unpickle (distributed.core.clean_exception).
    fake.reply = {"status": "uncaught-error", "exception_text": "boom", "traceback_text": "",
                  "exception": pickle.dumps(Touch(markers / "call-exception")),
                  "traceback": pickle.dumps(Touch(markers / "call-traceback"))}
    with pytest.raises(Exception, match="boom"):
        await engine.call(addr, "node_info")
    fake.reply = {"status": "error", "message": "no such file"}
    with pytest.raises(NodeCallError, match="no such file"):
        await engine.call(addr, "read_file", rel_path="x")


async def _outcome_stream(engine: DaskEngine, fake: FakeNode, addr: str,
                          other_addr: str) -> None:
    # A run the service sent another (silent) node.
    other = agent.Launch(key="other-node-run", task_dir="workitems/j/job-1/o",
                         command_line="true")
    ended: list[str] = []
    engine.post(other_addr, [other], sink=lambda key, _: ended.append(key))
    launch = agent.Launch(key="run-1", task_dir="workitems/j/job-1/t", command_line="true")
    outcome = await asyncio.wait_for(engine.run_launch(addr, launch), 60)
    assert fake.streams == 3  # two refused streams, then the plain outcome
    assert outcome.exit_code == 0 and outcome.failure_info is None
    assert ended == []  # the fake node cannot end another node's run
    engine.forget(other.key)


async def _to_the_scheduler(engine: DaskEngine, node_sec: Security, legacy_sec: Security,
                            markers: Path) -> None:
    async def send(sec: Security, msg: dict[str, Any]) -> Any:
        comm = await connect(engine.address, **sec.get_connection_args("client"))
        try:
            await comm.write(msg)
            return await asyncio.wait_for(comm.read(), 30)
        finally:
            comm.abort()

    register = {"op": "register-worker", "address": "tls://127.0.0.1:1", "status": "running",
                "server_id": "x", "nthreads": 1, "name": WORKER_NAME, "now": 0.0,
                "resources": {}, "memory_limit": 0, "metrics": {}, "pid": 1, "services": {},
                "local_directory": "/tmp", "versions": {}, "nanny": None,
                "extra": ToPickle(Touch(markers / "scheduler-pickled")), "stimulus_id": "x",
                "reply": True}
    with pytest.raises(CommClosedError):
        await send(node_sec, register)
    heartbeat = {"op": "heartbeat_worker", "address": "tls://127.0.0.1:1", "now": 0.0,
                 "metrics": {}, "reply": True}
    assert (await send(node_sec, heartbeat))["status"] == "missing"  # control: a node op
    for msg in (heartbeat, {"op": "identity", "reply": True}):  # the old shared certificate
        with pytest.raises(CommClosedError):
            await send(legacy_sec, msg)
    assert engine.client is not None
    assert (await engine.client.scheduler.identity())["type"] == "Scheduler"  # still up
