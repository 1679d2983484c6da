"""The compute node process: ``python -m hpcbatch.node CONFIG``.

A node provider (:mod:`hpcbatch.providers`) uploads a JSON config to the host
and starts this module detached. It creates the node directory layout, ends
whatever an earlier incarnation of the node left running (its worker and task
processes), and runs one Dask worker, connected over TLS to the service's
scheduler, until the scheduler goes away. The node agent
(:class:`hpcbatch.execution.agent.NodeAgent`, holding the node's identity) is
registered on that worker as a plugin.

The worker presents the node's own certificate (issued by the service's CA
for this incarnation, in ``{root}/secrets/tls/``, a folder of mode 0700), accepts
comms from the service's identity only and reads nothing pickled from anyone
else (:func:`hpcbatch.execution.guard.guard_worker`). Its HTTP server listens
on loopback only, with the health route alone.

Config keys: ``node_id``, ``worker_name``, ``pool_id``, ``root_dir``,
``scheduler_address``, ``nthreads``, ``account_name``, ``account_url``,
``tls`` (``ca_file``, ``cert_file``, ``key_file``), ``death_timeout_s``,
``user_switching`` (true when :func:`hpcbatch.execution.identity.setup_node`
prepared the node for running tasks as their own users).

A provider starts a node with ``python -m hpcbatch.node --launch`` and a JSON
spec on stdin (:mod:`hpcbatch.execution.bootstrap`): the host's set-up and
this process in one interpreter. Dask and the node agent are imported only
once the node serves, so ``--launch``, ``--check`` and ``--stop`` start fast.

Providers also check and stop a node through this module:
``python -m hpcbatch.node --check ROOT`` exits 0 when the node process recorded
in ``ROOT/node.pid`` runs (1 when not); ``python -m hpcbatch.node --stop ROOT``
ends it and its whole process tree (exit 0; 1 when none was running).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from hpcbatch.execution.environment import (
    NODE_DIRS,
    NODE_TLS_DIR,
    SECRETS_DIR,
    NodeIdentity,
)

PID_FILE = "node.pid"

UNUSED_MODULES = ("numpy", "jinja2")
"""Optional modules Dask imports at start when installed, which the node process never
uses and does not import (a third of its imports' CPU, paid on every node start): NumPy
only allocates Dask's receive buffers (``distributed.protocol.utils`` falls back to
``bytearray``; the node receives no arrays), Jinja2 only renders notebook HTML
(``dask.widgets``). Tasks are processes of their own, with their own imports."""


def prepare_root(root: Path) -> None:
    """Create the node directory layout under ``root`` (idempotent).

    The secrets folder (``secrets/``, with ``tls/`` inside) is made, or
    tightened, to mode 0700: only the node agent's user may enter it.
    """
    for name in NODE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in (SECRETS_DIR, NODE_TLS_DIR):
        path = root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)


def node_process(root: Path) -> psutil.Process | None:
    """Return the running node process recorded in ``root/node.pid`` (not this one), or None.

    Parameters
    ----------
    root
        The node root directory.
    """
    try:
        pid = int((root / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        if "hpcbatch.node" not in " ".join(proc.cmdline()) or \
                proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return proc


def end_previous_incarnation(root: Path) -> bool:
    """Kill the node process recorded in ``root/node.pid`` and its whole tree.

    A node restarted by the service (after a crash, a reboot request or a lost
    connection) must not leave task processes of its earlier life running; a
    provider stopping a node (``--stop``) ends it the same way.

    Parameters
    ----------
    root
        The node root directory.

    Returns
    -------
    bool
        True when a node process was running (it is gone now).
    """
    proc = node_process(root)
    if proc is None:
        return False
    from hpcbatch.execution import agent  # lazy: Dask, not needed by --check

    agent.kill_process_tree(proc)
    try:
        proc.wait(timeout=10)
    except psutil.Error:
        pass
    return True


@contextmanager
def libyaml_config() -> Iterator[None]:
    """While Dask imports, read its YAML with LibYAML (PyYAML's ``CSafeLoader``).

    ``dask.config`` and ``distributed.config`` read their default config
    (``dask.yaml``, ``distributed.yaml``) and the user's config files with
    ``yaml.safe_load`` at import: PyYAML's pure-Python loader, 20 ms of CPU for
    ``distributed.yaml`` alone on a 2-core VM, against 1.7 ms for LibYAML's loader
    of the same safe subset. Every node start pays it, on every node of a pool
    at once. Inside this context ``yaml.safe_load`` uses ``CSafeLoader`` when
    PyYAML has LibYAML (else nothing changes); it is restored on exit.
    """
    import yaml

    if not getattr(yaml, "__with_libyaml__", False):
        yield
        return
    original = yaml.safe_load

    def safe_load(stream: Any) -> Any:
        return yaml.load(stream, Loader=yaml.CSafeLoader)

    yaml.safe_load = safe_load
    try:
        yield
    finally:
        yaml.safe_load = original


def trust_only_pool_ca(ca_file: str) -> None:
    """Make Tornado's default client TLS context trust the node's CA alone.

    When a TLS listener accepts a connection (the worker's listener, once the
    scheduler or the service connects), Tornado wraps the socket with the
    listener's context, then builds an ``SSLIOStream`` without options, whose
    constructor makes Tornado's default *client* context, once a process:
    ``ssl.create_default_context()``, which loads the platform's whole CA store
    (144 certificates on Debian: 30-50 ms of CPU, on every node start) for a
    context that already-wrapped socket never uses. Dask's comms pass their own
    context (:class:`distributed.Security`) everywhere. A node talks TLS to the
    service's CA only, so that default context trusts that CA alone: built from
    one certificate, and no wider trust if anything ever used it. It is replaced
    wherever Tornado holds it: ``tornado.netutil`` (where it is defined),
    ``tornado.iostream`` and ``tornado.simple_httpclient`` (which import it by
    name; the latter if already imported, else its import takes the replacement).
    Nothing changes when Tornado has no such default (another version).

    Parameters
    ----------
    ca_file
        The node's CA certificate file (PEM): the service's CA.
    """
    import ssl

    from tornado import iostream, netutil

    if not callable(getattr(netutil, "_client_ssl_defaults", None)):
        return
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if hasattr(ssl, "OP_NO_COMPRESSION"):  # as Tornado's own default
        context.options |= ssl.OP_NO_COMPRESSION

    def pool_ca_only() -> ssl.SSLContext:
        return context

    for module in (netutil, iostream, sys.modules.get("tornado.simple_httpclient")):
        if module is not None and hasattr(module, "_client_ssl_defaults"):
            module._client_ssl_defaults = pool_ca_only


def forgo_unused_modules() -> None:
    """Make :data:`UNUSED_MODULES` unimportable in this process (``import`` raises
    ``ImportError``, as if they were not installed), unless one is imported already."""
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


async def serve(config: dict[str, Any]) -> None:
    """Run the node's Dask worker until it closes."""
    forgo_unused_modules()  # before Dask: it imports them when it finds them
    # No cyclic garbage collection while Dask's imports allocate (a third of their
    # CPU, on every node of a pool at once); what they made lives as long as the
    # process, so it is frozen out of later collections too.
    gc.disable()
    try:
        with libyaml_config():
            import dask
            from distributed import Security, Worker

            from hpcbatch.execution import agent, guard, identity
    finally:
        gc.freeze()
        gc.enable()

    root = Path(os.path.expanduser(config["root_dir"])).resolve()  # noqa: ASYNC240 - once, before serving
    prepare_root(root)
    for own in ("node.log", "node.json"):  # the agent's files: not for task users
        if (root / own).exists():
            (root / own).chmod(0o600)
    end_previous_incarnation(root)
    (root / PID_FILE).write_text(str(os.getpid()))
    node_agent = agent.NodeAgent(NodeIdentity(
        node_id=config["node_id"],
        pool_id=config["pool_id"],
        is_dedicated=bool(config.get("is_dedicated", True)),
        root_dir=str(root),
        account_name=config["account_name"],
        account_url=config["account_url"],
    ), base_env=agent.base_environment(config.get("env") or {}),
        switcher=identity.Switcher() if config.get("user_switching") else None)
    tls = config["tls"]
    trust_only_pool_ca(tls["ca_file"])
    security = Security(
        tls_ca_file=tls["ca_file"],
        tls_worker_cert=tls["cert_file"],
        tls_worker_key=tls["key_file"],
        tls_client_cert=tls["cert_file"],
        tls_client_key=tls["key_file"],
        require_encryption=True,
    )
    # Nothing reads a node worker's statistical profile (no dashboard): sampling
    # its threads every 10 ms, and checking the loop every 20 ms, only costs CPU
    # that the node's tasks need.
    # Nothing but the health route on the worker's HTTP server (bound to loopback below).
    dask.config.set({"distributed.worker.profile.enabled": False,
                     "distributed.admin.tick.interval": "500ms",
                     "distributed.worker.http.routes": ["distributed.http.health"]})
    # One line per out-of-band call would fill node.log: keep warnings only.
    logging.getLogger("distributed.worker").setLevel(logging.WARNING)
    worker = Worker(
        config["scheduler_address"],
        name=config.get("worker_name") or config["node_id"],
        nthreads=int(config["nthreads"]),
        security=security,
        memory_limit=0,
        local_directory=str(root / "dask"),
        death_timeout=config.get("death_timeout_s", 60),
        dashboard=False,
        dashboard_address="127.0.0.1:0",
        host=config.get("listen_host"),
        plugins=(node_agent,),
    )
    guard.guard_worker(worker)
    try:
        await worker
        await worker.finished()
    finally:
        node_agent.kill_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m hpcbatch.node CONFIG_JSON | --launch | --check ROOT | --stop ROOT``.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0; for ``--check``/``--stop``, 1 when no node process
        runs; for ``--launch``, 1 when a start step failed; 2 on a usage error.
    """
    args = sys.argv[1:] if argv is None else argv
    if args == ["--launch"]:
        from hpcbatch.execution import bootstrap

        code, launched = bootstrap.run(sys.stdin.buffer.read())
        if launched is None:
            return code
        asyncio.run(serve(launched))
        return 0
    if len(args) == 2 and args[0] in ("--check", "--stop"):
        root = Path(os.path.expanduser(args[1])).resolve()
        if args[0] == "--check":
            return 0 if node_process(root) is not None else 1
        return 0 if end_previous_incarnation(root) else 1
    if len(args) != 1:
        print("usage: python -m hpcbatch.node CONFIG_JSON | --launch | --check ROOT | --stop ROOT",
              file=sys.stderr)
        return 2
    config = json.loads(Path(args[0]).read_text())
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
